//! The checks `loadgen run` reports beside its measurements: the canary split (per cell)
//! and STRICT mTLS (once per run), for the embedded mesh and for a real one. Each is a
//! `meshbench_schema::CheckResult`; a failed check makes the run exit 1 after every
//! result is written.

pub mod canary;
pub mod strict_mtls;

pub use canary::canary_split;
pub use strict_mtls::{client_tls_config, probe_tls, strict_mtls, MtlsTarget, ProbeOutcome};

/// Name of the canary-split check in results.
pub const CANARY_SPLIT: &str = report::canary::CANARY_SPLIT;
/// Name of the STRICT mTLS check in results.
pub const STRICT_MTLS: &str = "strict_mtls";
/// Name of the per-cell check of the generator's send lateness (`[checks] max_send_lag`).
pub const SEND_LAG: &str = "send_lag";
