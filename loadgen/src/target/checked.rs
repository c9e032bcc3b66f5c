//! A real mesh at `target.url`, with the `[checks]` of the scenario: the canary split per
//! cell and STRICT mTLS once per run (both no-ops when the plan declares no checks).

use super::{BoxError, CellTarget};
use crate::checks::MtlsTarget;
use crate::engine::ResolvedTarget;
use crate::plan::{CellPlan, Plan};
use meshbench_schema::{CellResult, CheckResult, RunResult};

/// A real mesh at `target.url`, with the `[checks]` of the scenario.
pub struct Checked<T> {
    pub inner: T,
    strict: Option<CheckResult>,
}

impl<T> Checked<T> {
    pub fn new(inner: T) -> Self {
        Checked {
            inner,
            strict: None,
        }
    }
}

impl<T: CellTarget> CellTarget for Checked<T> {
    fn begin_step(&mut self, warmup: std::time::Duration) {
        self.inner.begin_step(warmup);
    }

    fn step_stats(&mut self, result: &CellResult) -> Option<meshbench_schema::SidecarStats> {
        self.inner.step_stats(result)
    }

    async fn prepare(&mut self, plan: &Plan, cell: &CellPlan) -> Result<ResolvedTarget, BoxError> {
        let resolved = self.inner.prepare(plan, cell).await?;
        let strict = plan.checks.as_ref().is_some_and(|c| c.strict_mtls);
        if strict && self.strict.is_none() {
            let uri: http::Uri = resolved.url.parse()?;
            let host = uri
                .host()
                .unwrap_or("localhost")
                .trim_matches(['[', ']'])
                .to_string();
            let port = uri.port_u16().unwrap_or(443);
            let addr = match resolved.connect_to {
                Some(a) => a,
                None => tokio::net::lookup_host((host.as_str(), port))
                    .await?
                    .next()
                    .ok_or_else(|| format!("{host}: no address"))?,
            };
            let server_name = resolved.tls.server_name.clone().unwrap_or(host);
            let ca = resolved
                .tls
                .ca
                .clone()
                .ok_or("checks.strict_mtls needs target.tls.ca")?;
            let client = resolved
                .tls
                .cert
                .as_deref()
                .zip(resolved.tls.key.as_deref());
            let path = plan
                .request
                .path
                .as_ref()
                .map(|p| p.to_string())
                .unwrap_or_else(|| uri.path().to_string());
            self.strict = Some(
                crate::checks::strict_mtls(&MtlsTarget {
                    addr,
                    server_name: &server_name,
                    ca: &ca,
                    client,
                    path: &path,
                })
                .await,
            );
        }
        Ok(resolved)
    }

    async fn finish(
        &mut self,
        plan: &Plan,
        cell: &CellPlan,
        result: &mut CellResult,
    ) -> Result<(), BoxError> {
        self.inner.finish(plan, cell, result).await?;
        crate::checks::canary::add_to_cell(plan.checks.as_ref(), result);
        Ok(())
    }

    async fn finish_run(&mut self, plan: &Plan, run: &mut RunResult) -> Result<(), BoxError> {
        if let Some(s) = self.strict.take() {
            run.checks.push(s);
        }
        self.inner.finish_run(plan, run).await
    }
}
