//! loadgen: an open-loop (and closed-loop) HTTP/1.1 + HTTP/2 load generator with mTLS and
//! coordinated-omission-corrected HDR latency recording.
//!
//! Flow: [`scenario`] (raw TOML + `--set`) -> [`plan`] (typed, validated, cells) ->
//! [`target`] (per-cell [`target::CellTarget`]: a URL, the built-in app, the embedded
//! mesh) -> [`run`] (the run loop) -> [`engine`] (scheduler, connections, lanes) ->
//! [`record`] (per-connection HDR recorders, interval logs) -> `run.json` through
//! `meshbench-schema`; [`checks`] judge the canary split and STRICT mTLS. [`cli`] and
//! [`output`] are the only modules that print.
#![forbid(unsafe_code)]

pub mod checks;
pub mod cli;
pub mod distributed;
pub mod driver;
pub mod engine;
pub mod output;
pub mod plan;
pub mod record;
pub mod run;
pub mod scenario;
pub mod search;
pub mod target;
