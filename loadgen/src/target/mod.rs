//! Targets: what each cell's load goes to, behind one per-cell hook, [`CellTarget`].
//!
//! - [`url`]: a fixed URL (`[target] url`), wrapped in [`checked::Checked`] for the
//!   canary split and STRICT mTLS of a real mesh (`[checks]`);
//! - [`app`]: the built-in app server, in-process, once per run;
//! - [`mesh`]: the embedded mesh, a fresh one per cell (apps + sidecar under the cell's
//!   CPU quota), its sidecar measured, its checks run;
//! - [`driven`]: a real mesh whose `[driver]` applies, verifies and restores each cell's
//!   settings, around [`checked::Checked`].
//!
//! `crate::run::run` picks the target from the plan's `TargetKind` and runs the plan
//! against it. A new kind of target is a new module here with a `CellTarget` impl, a
//! `TargetKind` variant in the plan and an arm in `run::run`.

pub mod app;
pub mod checked;
pub mod driven;
pub mod mesh;
pub mod url;

pub use crate::driver::CellFailed;
use crate::engine::ResolvedTarget;
use crate::plan::{CellPlan, Plan};
use meshbench_schema::{CellResult, RunResult};
use std::path::PathBuf;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The per-cell hook of the run loop: resolves where each cell's load goes and adds what
/// the target side observed.
#[allow(async_fn_in_trait)]
pub trait CellTarget {
    /// Before the cell: bring its settings into effect on the system measured. `Err`: the
    /// cell is recorded as failed with the reason and not measured.
    async fn apply(&mut self, _plan: &Plan, _cell: &CellPlan) -> Result<(), CellFailed> {
        Ok(())
    }

    /// A cell that [`CellTarget::apply`] refused: add what the target knows to its result.
    async fn failed(&mut self, _plan: &Plan, _cell: &CellPlan, _result: &mut CellResult) {}

    /// Bring up what `cell` needs and say where its load goes.
    async fn prepare(&mut self, plan: &Plan, cell: &CellPlan) -> Result<ResolvedTarget, BoxError>;

    /// A capacity search's next step starts: restart the target side's measurement window
    /// after `warmup` (the embedded mesh: its sidecars' cpu.stat).
    fn begin_step(&mut self, _warmup: std::time::Duration) {}

    /// A step ended with `result`: the cell's sidecars summed ("all") since
    /// [`CellTarget::begin_step`]; `None` where the target measures no sidecar.
    fn step_stats(&mut self, _result: &CellResult) -> Option<meshbench_schema::SidecarStats> {
        None
    }

    /// Add sidecar stats / checks to the cell's result; tear down per-cell state.
    async fn finish(
        &mut self,
        _plan: &Plan,
        _cell: &CellPlan,
        _result: &mut CellResult,
    ) -> Result<(), BoxError> {
        Ok(())
    }

    /// After the last cell (also after an interrupt): run-level checks, teardown.
    async fn finish_run(&mut self, _plan: &Plan, _run: &mut RunResult) -> Result<(), BoxError> {
        Ok(())
    }
}

/// How the CLI wants the targets set up.
#[derive(Debug, Clone, Default)]
pub struct TargetOptions {
    /// Run the embedded mesh without sidecar cgroups (`--no-cpu-limits`).
    pub no_cpu_limits: bool,
    /// The binary that provides the embedded mesh's `mesh-app` and `mesh-sidecar` roles
    /// (default: this executable).
    pub exe: Option<PathBuf>,
}
