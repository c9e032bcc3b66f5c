//! loadgen integration tests: in-process servers (`loadgen::serve`) on ephemeral loopback
//! ports, rcgen-made certificates, and the built binary for the CLI contract.
//!
//! Modules:
//! - `util`      certificates, scenario runner, binary helpers
//! - `tls`       mTLS success; missing / untrusted client cert, untrusted server CA, wrong SAN
//! - `protocols` HTTP/1.1, HTTP/2 (ALPN and h2c), closed loop, error classes (5xx, refused)
//! - `timing`    coordinated omission (analytic p90/p99) and open-loop achieved rate
//! - `faults`    misbehaving servers: never answers, garbage, truncated, 1 MB headers,
//!   resets, close after one response, killed and restarted, expired certificate, wrong
//!   hostname, HTTP/2 GOAWAY; bounded time, every failure in its class
//! - `hardening` the binary against hostile input: concurrent runs, reused and symlinked
//!   run directories, a killed run, values that validate but cannot run, FIFOs, memory
//! - `precision` send lateness recorded and reported; a late cell fails `max_send_lag`;
//!   spin / hybrid / sleep run the same schedule into the same results
//! - `capacity`  rate profiles (per-second rates, coordinated omission on a ramp) and the
//!   capacity search against an app of known capacity
//! - `cli`       bad scenarios (one line, file:line:col, exit 2), validate, --set, --json,
//!   SIGINT (interrupted run.json, exit 130), `serve` contract

mod capacity;
mod cli;
mod faults;
mod hardening;
mod precision;
mod protocols;
mod timing;
mod tls;
mod util;
