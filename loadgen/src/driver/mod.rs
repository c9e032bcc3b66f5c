//! Drivers: how a real mesh gets each cell's sidecar CPU limit and access logging. Before a
//! cell the driver applies its settings, waits until they are live and verifies them; after
//! it, checks what can only be seen afterwards (access-log lines); after the last cell, an
//! error or an interrupt it restores what it changed. Every command it runs is logged in
//! `<run>/driver/`.
//!
//! - [`command`]: the user's commands, the cell's settings in MESHBENCH_* variables;
//! - [`istio`]: built in, through kubectl (annotations, rollout, Telemetry, verification);
//! - [`exec`]: running them (process groups, timeouts, the stop signal, bounded output).

pub mod command;
pub mod exec;
pub mod istio;

use crate::plan::driver::DriverKind;
use crate::plan::{CellPlan, DriverPlan, Plan};
use meshbench_schema::{DriverEvidence, DriverRun};
use std::path::{Path, PathBuf};
use tokio::sync::watch;

/// A cell whose settings could not be applied or verified: it is not measured.
#[derive(Debug, Clone)]
pub struct CellFailed {
    pub reason: String,
    /// The run must stop (interrupted, or `on_failure = "stop"`).
    pub stop: bool,
}

impl CellFailed {
    pub fn new(reason: String, interrupted: bool) -> Self {
        CellFailed {
            reason,
            stop: interrupted,
        }
    }
}

enum Runner<'a> {
    Command(command::CommandRun<'a>),
    Istio(istio::IstioRun<'a>),
}

/// One run's driver.
pub struct Driver<'a> {
    plan: &'a DriverPlan,
    runner: Runner<'a>,
    exec: exec::Exec,
    run_dir: PathBuf,
    pub record: DriverRun,
}

impl<'a> Driver<'a> {
    pub fn new(plan: &'a DriverPlan, run_dir: &Path, stop: watch::Receiver<bool>) -> Self {
        let runner = match &plan.kind {
            DriverKind::Command(c) => Runner::Command(command::CommandRun::new(c)),
            DriverKind::Istio(i) => Runner::Istio(istio::IstioRun::new(i)),
        };
        Driver {
            plan,
            runner,
            exec: exec::Exec::new(run_dir.join("driver"), stop),
            run_dir: run_dir.to_path_buf(),
            record: DriverRun {
                driver: plan.name().into(),
                log_dir: Some("driver".into()),
                ..DriverRun::default()
            },
        }
    }

    /// Apply and verify `cell`'s settings; the evidence is filled in either way.
    pub async fn apply(
        &mut self,
        plan: &Plan,
        cell: &CellPlan,
        ev: &mut DriverEvidence,
    ) -> Result<(), CellFailed> {
        let r = match &mut self.runner {
            Runner::Command(c) => c.apply(&mut self.exec, plan, cell, &self.run_dir, ev).await,
            Runner::Istio(i) => i.apply(&mut self.exec, cell, &mut self.record, ev).await,
        };
        r.map_err(|mut f| {
            f.stop |= self.plan.on_failure == crate::plan::OnFailure::Stop || self.exec.stopped();
            f
        })
    }

    /// After the measured window: `Err` when what was seen contradicts the settings.
    pub async fn after(
        &mut self,
        plan: &Plan,
        cell: &CellPlan,
        ev: &mut DriverEvidence,
    ) -> Result<(), String> {
        match &mut self.runner {
            Runner::Command(c) => c.after(&mut self.exec, plan, cell, &self.run_dir, ev).await,
            Runner::Istio(i) => i.after(&mut self.exec, cell, ev).await,
        }
    }

    /// Put back what the run changed; recorded in [`Driver::record`].
    pub async fn restore(&mut self, plan: &Plan) {
        let mut restored = Vec::new();
        let r = match &mut self.runner {
            Runner::Command(c) => {
                c.restore(&mut self.exec, plan, &self.run_dir, &mut restored)
                    .await
            }
            Runner::Istio(i) => i.restore(&mut self.exec, &mut restored).await,
        };
        self.record.restored.extend(restored);
        if let Err(e) = r {
            self.record.restore_error = Some(e);
        }
    }

    /// What `--dry-run` prints for a cell: every command and change, nothing run.
    pub fn describe(&self, plan: &Plan, cell: &CellPlan) -> Vec<String> {
        match &self.runner {
            Runner::Command(c) => c.describe(plan, cell, &self.run_dir),
            Runner::Istio(i) => i.describe(cell),
        }
    }
}
