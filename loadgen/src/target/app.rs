//! The built-in app server from the scenario's `[app]` section, started in-process once.

use super::{BoxError, CellTarget};
use crate::engine::ResolvedTarget;
use crate::plan::{CellPlan, Plan, TargetKind};
use meshbench_schema::RunResult;

#[derive(Default)]
pub struct AppTarget {
    server: Option<(std::net::SocketAddr, app::ServerHandle)>,
}

impl CellTarget for AppTarget {
    async fn prepare(&mut self, plan: &Plan, _cell: &CellPlan) -> Result<ResolvedTarget, BoxError> {
        let TargetKind::App(cfg) = &plan.target else {
            return Err("the scenario has no [app] section".into());
        };
        let addr = match &self.server {
            Some((addr, _)) => *addr,
            None => {
                let (addr, handle) = app::spawn(cfg.clone()).await?;
                self.server = Some((addr, handle));
                addr
            }
        };
        Ok(ResolvedTarget {
            url: format!("http://{addr}/"),
            connect_to: Some(addr),
            tls: Default::default(),
            split: vec![],
        })
    }

    async fn finish_run(&mut self, _plan: &Plan, _run: &mut RunResult) -> Result<(), BoxError> {
        if let Some((_, h)) = self.server.take() {
            h.shutdown().await;
        }
        Ok(())
    }
}
