//! Routing: each request goes to a subset picked at random by weight, as a VirtualService
//! route with DestinationRule subsets does.

use crate::access_log::AccessLog;
use crate::upstream::Upstream;
use crate::Route;
use rand::Rng;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Shared state of a running sidecar.
pub(crate) struct State {
    pub upstreams: Vec<Upstream>,
    /// Cumulative weights for the random pick.
    pub cumulative: Vec<u32>,
    pub total_weight: u32,
    pub log: Arc<AccessLog>,
    pub timeout: Duration,
}

impl State {
    pub fn pick(&self) -> &Upstream {
        let x = rand::rng().random_range(0..self.total_weight);
        let i = self.cumulative.partition_point(|&c| c <= x);
        &self.upstreams[i.min(self.upstreams.len() - 1)]
    }
}

impl State {
    /// The routes of `routes` with their upstream pools.
    pub fn new(routes: &[Route], log: Arc<AccessLog>, timeout: Duration) -> State {
        let mut cumulative = Vec::new();
        let mut acc = 0;
        for r in routes {
            acc += r.weight;
            cumulative.push(acc);
        }
        let upstreams = routes
            .iter()
            .map(|r| Upstream {
                addr: r.upstream,
                addr_text: r.upstream.to_string(),
                idle: Mutex::new(Vec::new()),
            })
            .collect();
        State {
            upstreams,
            cumulative,
            total_weight: acc,
            log,
            timeout,
        }
    }
}
