//! The contract of meshbench: everything that one tool writes and another reads, and the
//! little languages they share.
//!
//! - [`run`]: `run.json` ([`RunResult`]) written by `loadgen`, read by `report`;
//! - [`probe`]: probe reports ([`ProbeReport`]) written by `probe --json`, read by
//!   `report fleet`;
//! - [`hlog`]: the per-cell interval logs (`.hlog`, standard HdrHistogram format, µs);
//! - [`archive`]: a run's results as log lines (`--log-results`, `report unpack`);
//! - [`files`]: atomic writes and versioned readers (each error names the file);
//! - [`units`]: durations and Kubernetes quantities, as scenarios, flags and SLOs write them;
//! - [`profile`]: open-loop rate profiles (ramp, steps) and their exact schedule;
//! - [`search`]: a cell's capacity search (steps, verdicts, capacity);
//! - [`slo`]: the SLO grammar (`p99<50ms`, `errors<0.1%`);
//! - [`text`]: `file:line:col` placement and one-line messages;
//! - [`exit`]: the exit codes of every binary.
//!
//! JSON files carry a schema version; readers refuse versions they do not know.
#![forbid(unsafe_code)]

pub mod archive;
pub mod exit;
pub mod files;
pub mod hlog;
mod probe;
pub mod profile;
pub mod run;
pub mod search;
pub mod slo;
pub mod text;
pub mod units;

pub use files::{
    read_probe, read_run, write_atomic, write_atomic_mode, write_json_atomic, SchemaError,
};
pub use hlog::{TAG_CORRECTED as HLOG_TAG_CORRECTED, TAG_UNCORRECTED as HLOG_TAG_UNCORRECTED};
pub use probe::*;
pub use run::*;
