//! Exit codes shared by `loadgen`, `probe` and `report`.

/// Nothing failed (warnings allowed).
pub const OK: u8 = 0;
/// A check, gate or SLO failed; every result was still written.
pub const CHECK_FAILED: u8 = 1;
/// Bad usage or input (a scenario, flag, file): nothing was measured.
pub const USAGE: u8 = 2;
/// Stopped by SIGINT/SIGTERM; what was measured up to then is kept.
pub const INTERRUPTED: u8 = 130;
