//! A fixed URL from `target.url`.

use super::{BoxError, CellTarget};
use crate::engine::ResolvedTarget;
use crate::plan::{CellPlan, Plan, TargetKind};

pub struct UrlTarget;

impl CellTarget for UrlTarget {
    async fn prepare(&mut self, plan: &Plan, _cell: &CellPlan) -> Result<ResolvedTarget, BoxError> {
        let TargetKind::Url { url, tls } = &plan.target else {
            return Err("the scenario has no target.url".into());
        };
        Ok(ResolvedTarget {
            url: url.clone(),
            connect_to: None,
            tls: tls.clone(),
            split: vec![],
        })
    }
}
