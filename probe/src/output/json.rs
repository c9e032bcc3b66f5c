//! `--json`: exactly a serialized [`ProbeReport`], to stdout or atomically to a file.

use meshbench_schema::{write_json_atomic, ProbeReport, SchemaError};
use std::path::Path;

/// Pretty JSON text of a report (what `--json` prints on stdout).
pub fn render(report: &ProbeReport) -> String {
    let mut s =
        serde_json::to_string_pretty(report).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
    s.push('\n');
    s
}

/// Write the report atomically (temp file + fsync + rename).
pub fn write(path: &Path, report: &ProbeReport) -> Result<(), SchemaError> {
    write_json_atomic(path, report)
}
