//! The library's error type. Every variant names the file or expression it is about, so
//! the CLI prints it as one line.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// run.json or a probe report could not be read (the schema error names the file).
    #[error(transparent)]
    Schema(#[from] meshbench_schema::SchemaError),
    /// An interval log is missing, truncated or corrupt.
    #[error("{path}: {msg}")]
    Hlog { path: PathBuf, msg: String },
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// run.json is readable but inconsistent (e.g. two cells with one id).
    #[error("{path}: {msg}")]
    Invalid { path: PathBuf, msg: String },
    /// An SLO or regression expression could not be parsed.
    #[error("{kind} '{expr}': {msg}")]
    Expr {
        kind: &'static str,
        expr: String,
        msg: String,
    },
    /// Arguments that do not fit together.
    #[error("{0}")]
    Usage(String),
    /// A chart could not be drawn.
    #[error("chart {chart}: {msg}")]
    Plot { chart: String, msg: String },
}

impl ReportError {
    pub(crate) fn hlog(path: &std::path::Path, msg: impl Into<String>) -> Self {
        ReportError::Hlog {
            path: path.to_path_buf(),
            msg: msg.into(),
        }
    }
}
