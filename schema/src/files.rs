//! Reading and writing the contract files: atomic writes (temp file, fsync, rename) and
//! versioned JSON readers whose every error names the file.

use serde::Serialize;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::{ProbeReport, RunResult, PROBE_SCHEMA_VERSION, RUN_FILE, RUN_SCHEMA_VERSION};

/// Errors reading or writing the contract files. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a valid {what}: {source}")]
    Parse {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "{path}: schema version {found} is not supported (this build reads version {supported})"
    )]
    Version {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
}

/// Write `bytes` to `path` atomically: a temp file in the same directory, fsync, rename.
/// A reader never sees a half-written file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), SchemaError> {
    let io = |source| SchemaError::Io {
        path: path.to_path_buf(),
        source,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io)
}

/// Serialize `value` as pretty JSON and write it atomically.
pub fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> Result<(), SchemaError> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|source| SchemaError::Parse {
        path: path.to_path_buf(),
        what: "JSON value",
        source,
    })?;
    bytes.push(b'\n');
    write_atomic(path, &bytes)
}

fn read_versioned<T: serde::de::DeserializeOwned>(
    path: &Path,
    what: &'static str,
    supported: u32,
) -> Result<T, SchemaError> {
    let bytes = std::fs::read(path).map_err(|source| SchemaError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let parse = |source| SchemaError::Parse {
        path: path.to_path_buf(),
        what,
        source,
    };
    // Check the version before the shape, so a future file says "version" not "field".
    let raw: serde_json::Value = serde_json::from_slice(&bytes).map_err(parse)?;
    let found = raw
        .get("schema_version")
        .and_then(|v| v.as_u64())
        .unwrap_or(0) as u32;
    if found != supported {
        return Err(SchemaError::Version {
            path: path.to_path_buf(),
            found,
            supported,
        });
    }
    serde_json::from_value(raw).map_err(parse)
}

/// Read a `run.json` (or a run directory containing one), checking its schema version.
pub fn read_run(path: &Path) -> Result<RunResult, SchemaError> {
    let file = if path.is_dir() {
        path.join(RUN_FILE)
    } else {
        path.to_path_buf()
    };
    read_versioned(&file, "run.json", RUN_SCHEMA_VERSION)
}

/// Read a probe report written by `probe --json`, checking its schema version.
pub fn read_probe(path: &Path) -> Result<ProbeReport, SchemaError> {
    read_versioned(path, "probe report", PROBE_SCHEMA_VERSION)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::*;
    use std::collections::BTreeMap;

    fn sample_run() -> RunResult {
        RunResult {
            schema_version: RUN_SCHEMA_VERSION,
            tool: ToolInfo::new("loadgen", "0.1.0"),
            scenario: "smoke".into(),
            scenario_file: Some("scenarios/smoke.toml".into()),
            started_at: "2026-11-27T21:00:00Z".into(),
            finished_at: None,
            interrupted: true,
            plan: serde_json::json!({"rate": 100}),
            host: HostFacts::default(),
            slo: vec!["p99<50ms".into()],
            warnings: vec![],
            cells: vec![CellResult {
                id: "cpu=100m,log=off".into(),
                settings: CellSettings::default(),
                mode: LoadMode::Open,
                protocol: "http1".into(),
                duration_s: 1.0,
                requests: 10,
                ok: 9,
                achieved_rate: 10.0,
                errors: ErrorCounts {
                    http_5xx: 1,
                    ..Default::default()
                },
                status_classes: BTreeMap::new(),
                status_latency: BTreeMap::new(),
                latency: Latency::default(),
                subsets: vec![],
                hlog: Some("cell-0.hlog".into()),
                sidecar: None,
                checks: vec![CheckResult {
                    name: "canary_split".into(),
                    status: CheckStatus::Failed,
                    summary: "off".into(),
                    details: serde_json::Value::Null,
                }],
                interrupted: true,
            }],
            checks: vec![],
        }
    }

    #[test]
    fn run_round_trips_through_disk() {
        let dir = tempfile::tempdir().unwrap();
        let run = sample_run();
        write_json_atomic(&dir.path().join(RUN_FILE), &run).unwrap();
        let back = read_run(dir.path()).unwrap();
        assert_eq!(back, run);
        assert!(!back.checks_passed());
        assert_eq!(back.cells[0].errors.total(), 1);
        // no temp file left beside it
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn unknown_version_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut v = serde_json::to_value(sample_run()).unwrap();
        v["schema_version"] = 99.into();
        let p = dir.path().join(RUN_FILE);
        std::fs::write(&p, v.to_string()).unwrap();
        let err = read_run(&p).unwrap_err().to_string();
        assert!(err.contains("run.json"), "{err}");
        assert!(err.contains("schema version 99"), "{err}");
    }

    #[test]
    fn truncated_file_is_a_parse_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(RUN_FILE);
        let text = serde_json::to_string(&sample_run()).unwrap();
        std::fs::write(&p, &text[..text.len() / 2]).unwrap();
        let err = read_run(&p).unwrap_err().to_string();
        assert!(err.starts_with(&p.display().to_string()), "{err}");
    }
}
