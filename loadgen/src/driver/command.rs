//! The command driver: the user's `apply`, `verify`, `after` and `restore` commands
//! (`sh -c`, in the scenario's directory), each with the cell's settings in MESHBENCH_*
//! environment variables and the driver's timeout. `verify`'s stdout is the cell's
//! evidence in run.json, `after`'s what was seen after the measured window.

use super::exec::{shell_quote, Cmd, Exec};
use super::CellFailed;
use crate::plan::driver::CommandDriver;
use crate::plan::{CellPlan, Plan};
use meshbench_schema::DriverEvidence;
use std::path::Path;
use std::time::Instant;

/// Most of a command's stdout kept as evidence in run.json (all of it is in the log).
pub const MAX_EVIDENCE: usize = 4096;

fn evidence(s: &str) -> String {
    let t = s.trim();
    if t.len() <= MAX_EVIDENCE {
        return t.to_string();
    }
    let mut end = MAX_EVIDENCE;
    while !t.is_char_boundary(end) {
        end -= 1;
    }
    format!(
        "{}… ({} bytes in all; see the driver log)",
        &t[..end],
        t.len()
    )
}

/// The environment every command gets: the phase, the scenario, the run directory.
fn base_env(plan: &Plan, run_dir: &Path, phase: &str) -> Vec<(String, String)> {
    vec![
        ("MESHBENCH_PHASE".into(), phase.into()),
        ("MESHBENCH_SCENARIO".into(), plan.name.clone()),
        (
            "MESHBENCH_RUN_DIR".into(),
            std::path::absolute(run_dir)
                .unwrap_or_else(|_| run_dir.to_path_buf())
                .display()
                .to_string(),
        ),
    ]
}

/// The environment every command of a cell gets: the above and the cell's settings.
pub fn env(plan: &Plan, cell: &CellPlan, run_dir: &Path, phase: &str) -> Vec<(String, String)> {
    let d = cell.driven.as_ref();
    let cpu = d.map(|d| d.cpu.clone());
    let mut env = base_env(plan, run_dir, phase);
    env.extend([
        ("MESHBENCH_CELL".into(), cell.id.clone()),
        ("MESHBENCH_CELL_INDEX".into(), cell.index.to_string()),
        (
            "MESHBENCH_SIDECAR_CPU".into(),
            cpu.as_ref()
                .and_then(|c| c.millis.map(|_| c.text.clone()))
                .unwrap_or_else(|| "none".into()),
        ),
        (
            "MESHBENCH_SIDECAR_CPU_MILLIS".into(),
            cpu.and_then(|c| c.millis)
                .map(|m| m.to_string())
                .unwrap_or_default(),
        ),
        (
            "MESHBENCH_ACCESS_LOG".into(),
            d.map(|d| d.access_log.clone())
                .unwrap_or_else(|| "off".into()),
        ),
        (
            "MESHBENCH_RATE".into(),
            cell.rate.map(|r| r.to_string()).unwrap_or_default(),
        ),
        ("MESHBENCH_CONNECTIONS".into(), cell.connections.to_string()),
    ]);
    env
}

pub struct CommandRun<'a> {
    pub cfg: &'a CommandDriver,
    /// Whether any apply ran (restore runs only then).
    pub applied: bool,
}

impl<'a> CommandRun<'a> {
    pub fn new(cfg: &'a CommandDriver) -> Self {
        CommandRun {
            cfg,
            applied: false,
        }
    }

    async fn sh(
        &self,
        exec: &mut Exec,
        label: &str,
        script: &str,
        env: Vec<(String, String)>,
    ) -> super::exec::Ran {
        exec.run(Cmd {
            label,
            program: "sh",
            args: vec!["-c".into(), script.to_string()],
            env,
            stdin: None,
            cwd: Some(&self.cfg.workdir),
            timeout: self.cfg.timeout.0,
        })
        .await
    }

    /// Apply the cell's settings, then verify them.
    pub async fn apply(
        &mut self,
        exec: &mut Exec,
        plan: &Plan,
        cell: &CellPlan,
        run_dir: &Path,
        ev: &mut DriverEvidence,
    ) -> Result<(), CellFailed> {
        let t0 = Instant::now();
        self.applied = true;
        let r = self
            .sh(
                exec,
                &format!("apply-{}", cell.index),
                &self.cfg.apply,
                env(plan, cell, run_dir, "apply"),
            )
            .await;
        ev.applied
            .push(format!("sh -c {}", shell_quote(&self.cfg.apply)));
        if !r.ok() {
            return Err(CellFailed::new(
                format!("apply: {}", r.failure(self.cfg.timeout.0)),
                r.interrupted,
            ));
        }
        if let Some(v) = &self.cfg.verify {
            let r = self
                .sh(
                    exec,
                    &format!("verify-{}", cell.index),
                    v,
                    env(plan, cell, run_dir, "verify"),
                )
                .await;
            if !r.ok() {
                return Err(CellFailed::new(
                    format!("verify: {}", r.failure(self.cfg.timeout.0)),
                    r.interrupted,
                ));
            }
            ev.verified = Some(evidence(&r.stdout));
        }
        ev.apply_s = t0.elapsed().as_secs_f64();
        Ok(())
    }

    /// After the measured window: the `after` command's stdout as evidence.
    pub async fn after(
        &mut self,
        exec: &mut Exec,
        plan: &Plan,
        cell: &CellPlan,
        run_dir: &Path,
        ev: &mut DriverEvidence,
    ) -> Result<(), String> {
        let Some(a) = &self.cfg.after else {
            return Ok(());
        };
        let r = self
            .sh(
                exec,
                &format!("after-{}", cell.index),
                a,
                env(plan, cell, run_dir, "after"),
            )
            .await;
        ev.after = Some(evidence(&r.stdout));
        if r.ok() {
            Ok(())
        } else {
            Err(format!("after: {}", r.failure(self.cfg.timeout.0)))
        }
    }

    /// Restore what the applies changed (when any ran).
    pub async fn restore(
        &mut self,
        exec: &mut Exec,
        plan: &Plan,
        run_dir: &Path,
        restored: &mut Vec<String>,
    ) -> Result<(), String> {
        let Some(r) = &self.cfg.restore else {
            return Ok(());
        };
        if !self.applied {
            return Ok(());
        }
        let ran = self
            .sh(exec, "restore", r, base_env(plan, run_dir, "restore"))
            .await;
        restored.push(format!("sh -c {}", shell_quote(r)));
        self.applied = false;
        if ran.ok() {
            Ok(())
        } else {
            Err(format!("restore: {}", ran.failure(self.cfg.timeout.0)))
        }
    }

    /// What `--dry-run` prints for a cell.
    pub fn describe(&self, plan: &Plan, cell: &CellPlan, run_dir: &Path) -> Vec<String> {
        let env = |phase| {
            env(plan, cell, run_dir, phase)
                .into_iter()
                .filter(|(k, _)| k != "MESHBENCH_RUN_DIR" && k != "MESHBENCH_SCENARIO")
                .map(|(k, v)| format!("{k}={}", shell_quote(&v)))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let mut out = vec![format!(
            "apply:  {} sh -c {}",
            env("apply"),
            shell_quote(&self.cfg.apply)
        )];
        if let Some(v) = &self.cfg.verify {
            out.push(format!(
                "verify: {} sh -c {}",
                env("verify"),
                shell_quote(v)
            ));
        }
        if let Some(a) = &self.cfg.after {
            out.push(format!("after:  {} sh -c {}", env("after"), shell_quote(a)));
        }
        out
    }
}
