//! Integration tests of the `report` binary and library, on runs built from scratch
//! (tests/common: RunResult values + interval logs written with hdrhistogram).
//!
//! Modules:
//! - render:    report.html / summary.md / plots structure, warnings, not-drawn notes
//! - browser:   report.html in headless Chromium, networking off: charts have size, no
//!   console errors
//! - bad_input: missing / truncated / corrupt run.json and .hlog, unknown schema version,
//!   bad expressions -> one line, exit 2, no half-written report
//! - gate:      SLOs, noise-aware regression verdicts, exit codes, JUnit
//! - capacity:  capacity searches, rate profiles and sweeps: their charts, sentences,
//!   capacity column, `--slo capacity>N` and `--max-regression capacity=N%`
//! - compare:   per-cell changes, unmatched cells
//! - merge:     merged logs equal the histogram of the combined samples
//! - fleet:     probe reports side by side, chart, exit code
mod common;

#[path = "cli/bad_input.rs"]
mod bad_input;
#[path = "cli/browser.rs"]
mod browser;
#[path = "cli/capacity.rs"]
mod capacity;
#[path = "cli/compare.rs"]
mod compare;
#[path = "cli/fleet.rs"]
mod fleet;
#[path = "cli/gate.rs"]
mod gate;
#[path = "cli/merge.rs"]
mod merge;
#[path = "cli/render.rs"]
mod render;

use std::path::Path;
use std::process::{Command, Output};

/// Run the built `report` binary.
pub fn bin(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_report"))
        .args(args)
        .output()
        .expect("run report")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// A small matrix run: 2 CPU settings x 2 log modes, 10 s each.
pub fn small_matrix(dir: &Path) -> meshbench_schema::RunResult {
    let mut specs = common::matrix(&[Some(100), None], &["off", "sync"]);
    for s in &mut specs {
        s.seconds = 10;
        s.rate = 100;
    }
    common::write_run(dir, "canary", &specs)
}
