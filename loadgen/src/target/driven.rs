//! A real mesh driven cell by cell: the `[driver]` applies and verifies each cell's
//! settings before it (a cell it cannot apply is failed, not measured), checks after it
//! what only shows afterwards, and restores everything after the last cell, an error or
//! an interrupt. Its evidence goes into each cell (`driver`, a `driver` check) and the run
//! (`driver`: the cluster, what was restored).

use super::{BoxError, CellFailed, CellTarget};
use crate::driver::Driver;
use crate::engine::ResolvedTarget;
use crate::plan::{CellPlan, Plan};
use meshbench_schema::{CellResult, CheckResult, CheckStatus, DriverEvidence, RunResult};

/// The name of the per-cell check the driver adds (and of the run's restore check).
pub const DRIVER_CHECK: &str = "driver";
pub const RESTORE_CHECK: &str = "driver_restore";

pub struct Driven<'a, T> {
    pub inner: T,
    driver: Driver<'a>,
    evidence: Option<DriverEvidence>,
}

impl<'a, T> Driven<'a, T> {
    pub fn new(inner: T, driver: Driver<'a>) -> Self {
        Driven {
            inner,
            driver,
            evidence: None,
        }
    }
}

impl<T: CellTarget> CellTarget for Driven<'_, T> {
    fn begin_step(&mut self, warmup: std::time::Duration) {
        self.inner.begin_step(warmup);
    }

    fn step_stats(&mut self, result: &CellResult) -> Option<meshbench_schema::SidecarStats> {
        self.inner.step_stats(result)
    }

    async fn apply(&mut self, plan: &Plan, cell: &CellPlan) -> Result<(), CellFailed> {
        let mut ev = DriverEvidence::default();
        let r = self.driver.apply(plan, cell, &mut ev).await;
        self.evidence = Some(ev);
        r
    }

    async fn failed(&mut self, _plan: &Plan, _cell: &CellPlan, result: &mut CellResult) {
        result.driver = self.evidence.take();
    }

    async fn prepare(&mut self, plan: &Plan, cell: &CellPlan) -> Result<ResolvedTarget, BoxError> {
        self.inner.prepare(plan, cell).await
    }

    async fn finish(
        &mut self,
        plan: &Plan,
        cell: &CellPlan,
        result: &mut CellResult,
    ) -> Result<(), BoxError> {
        self.inner.finish(plan, cell, result).await?;
        let mut ev = self.evidence.take().unwrap_or_default();
        let after = self.driver.after(plan, cell, &mut ev).await;
        // the settings were verified live before the cell was measured
        result.settings.cpu_limit_applied = result.settings.sidecar_cpu_millis.is_some();
        result.checks.push(CheckResult {
            name: DRIVER_CHECK.into(),
            status: if after.is_ok() {
                CheckStatus::Passed
            } else {
                CheckStatus::Failed
            },
            summary: match &after {
                Ok(()) => format!(
                    "applied and verified in {:.1} s: {}{}",
                    ev.apply_s,
                    ev.verified.as_deref().unwrap_or("no verify command"),
                    ev.after
                        .as_deref()
                        .map(|a| format!("; after the cell: {a}"))
                        .unwrap_or_default()
                ),
                Err(e) => format!("FAILED after the cell: {e}"),
            },
            details: serde_json::to_value(&ev).unwrap_or_default(),
        });
        result.driver = Some(ev);
        Ok(())
    }

    async fn finish_run(&mut self, plan: &Plan, run: &mut RunResult) -> Result<(), BoxError> {
        let inner = self.inner.finish_run(plan, run).await;
        self.driver.restore(plan).await;
        let rec = self.driver.record.clone();
        if !rec.restored.is_empty() || rec.restore_error.is_some() {
            run.checks.push(CheckResult {
                name: RESTORE_CHECK.into(),
                status: if rec.restore_error.is_none() {
                    CheckStatus::Passed
                } else {
                    CheckStatus::Failed
                },
                summary: match &rec.restore_error {
                    None => format!("restored: {}", rec.restored.join("; ")),
                    Some(e) => format!("FAILED to restore what the run changed: {e}"),
                },
                details: serde_json::json!({"restored": rec.restored}),
            });
        }
        run.driver = Some(rec);
        inner
    }
}
