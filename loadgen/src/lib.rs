//! loadgen: an open-loop (and closed-loop) HTTP/1.1 + HTTP/2 load generator with mTLS,
//! coordinated-omission-corrected HDR latency recording, and the built-in app server.
//!
//! Flow: [`scenario`] (raw TOML + `--set`) -> [`plan`] (validated, cells) -> [`run`] (per-cell
//! [`run::CellTarget`] hook) -> [`engine`] (scheduler, connections, lanes) -> [`record`]
//! (per-worker HDR recorders, interval logs) -> `run.json` through `meshbench-schema`.
//! [`cli`] and [`output`] are the only modules that print.
#![forbid(unsafe_code)]

pub mod cli;
pub mod engine;
pub mod mesh_target;
pub mod output;
pub mod plan;
pub mod record;
pub mod run;
pub mod scenario;
pub mod serve;
pub mod tls;
pub mod units;
