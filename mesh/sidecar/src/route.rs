//! Routing: each request goes to a subset picked at random by weight, as a VirtualService
//! route with DestinationRule subsets does.

use crate::access_log::AccessLog;
use crate::upstream::{Upstream, UpstreamTls};
use crate::{Direction, Route, SidecarError};
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
    pub direction: Direction,
    /// This workload's identity (the URI SAN of its certificate): `By=` of the
    /// `x-forwarded-client-cert` an inbound sidecar gives its app.
    pub own_identity: Option<String>,
}

impl State {
    pub fn pick(&self) -> &Upstream {
        let x = rand::rng().random_range(0..self.total_weight);
        let i = self.cumulative.partition_point(|&c| c <= x);
        &self.upstreams[i.min(self.upstreams.len() - 1)]
    }
}

impl State {
    /// The routes of `routes` with their upstream pools; `client_tls` (outbound) is this
    /// workload's mTLS client config, used for every route with `tls`.
    pub fn new(
        routes: &[Route],
        log: Arc<AccessLog>,
        timeout: Duration,
        client_tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Result<State, SidecarError> {
        let mut cumulative = Vec::new();
        let mut acc = 0;
        for r in routes {
            acc += r.weight;
            cumulative.push(acc);
        }
        let mut upstreams = Vec::with_capacity(routes.len());
        for r in routes {
            let tls = match (&r.tls, &client_tls) {
                (Some(t), Some(config)) => Some(UpstreamTls {
                    connector: tokio_rustls::TlsConnector::from(config.clone()),
                    server_name: rustls::pki_types::ServerName::try_from(t.server_name.clone())
                        .map_err(|_| {
                            SidecarError::Config(format!(
                                "routes: `{}` is not a valid TLS server name",
                                t.server_name
                            ))
                        })?,
                    identity: t.identity.clone(),
                }),
                _ => None,
            };
            upstreams.push(Upstream {
                addr: r.upstream,
                addr_text: r.upstream.to_string(),
                idle: Mutex::new(Vec::new()),
                tls,
            });
        }
        Ok(State {
            upstreams,
            cumulative,
            total_weight: acc,
            log,
            timeout,
            direction: Direction::Inbound,
            own_identity: None,
        })
    }
}
