//! The sidecar's configuration: what `mesh-sidecar --config FILE.json` reads (the embedded
//! mesh writes one per cell) and what [`crate::Sidecar::new`] checks.

use crate::SidecarError;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;

/// Access-log mode of the sidecar.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccessLogMode {
    Off,
    Buffered,
    Sync,
}

impl AccessLogMode {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "off" => Some(Self::Off),
            "buffered" => Some(Self::Buffered),
            "sync" => Some(Self::Sync),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Buffered => "buffered",
            Self::Sync => "sync",
        }
    }
}

/// Which side of a workload the sidecar is on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Server side (Istio's inbound listener): STRICT mTLS from other sidecars, plaintext
    /// to the local app(s); the app is told the caller's identity in
    /// `x-forwarded-client-cert`.
    #[default]
    Inbound,
    /// Client side (Istio's outbound listener): plaintext from the local app, routed by
    /// weight, mTLS with this workload's certificate to each route's server-side sidecar,
    /// whose identity is verified.
    Outbound,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }
}

/// How an outbound route reaches its upstream: mTLS with this name and identity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteTls {
    /// TLS server name (SNI and certificate name check), e.g.
    /// `checkout.default.svc.cluster.local`.
    pub server_name: String,
    /// The URI SAN the upstream's certificate must carry, e.g.
    /// `spiffe://cluster.local/ns/default/sa/checkout`.
    pub identity: String,
}

/// One weighted route to a subset's app (inbound) or server-side sidecar (outbound).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub subset: String,
    pub weight: u32,
    pub upstream: SocketAddr,
    /// Outbound: required (mTLS origination); inbound: absent.
    #[serde(default)]
    pub tls: Option<RouteTls>,
}

/// Everything the sidecar process needs (the JSON file given to `mesh-sidecar --config`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SidecarConfig {
    /// Inbound (default) or outbound.
    #[serde(default)]
    pub direction: Direction,
    /// Address to listen on; port 0 picks a free one.
    pub listen: SocketAddr,
    /// This workload's certificate chain and key (PEM): served to callers (inbound) or
    /// presented to upstreams (outbound).
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The mesh CA (PEM): client certificates must chain to it (inbound), upstream
    /// certificates must chain to it (outbound).
    pub ca: PathBuf,
    pub routes: Vec<Route>,
    /// Worker threads (Envoy's `--concurrency`).
    pub concurrency: usize,
    pub access_log: AccessLogMode,
    /// Where the access log goes (required unless `access_log` is off).
    #[serde(default)]
    pub access_log_path: Option<PathBuf>,
    /// Upstream request timeout (Envoy's route timeout default: 15 s).
    #[serde(default = "default_timeout_ms")]
    pub upstream_timeout_ms: u64,
}

fn default_timeout_ms() -> u64 {
    15_000
}

/// Check routes: at least one, weights sum > 0, known subsets.
pub(crate) fn check(cfg: &SidecarConfig) -> Result<(), SidecarError> {
    if cfg.routes.is_empty() {
        return Err(SidecarError::Config(
            "routes: at least one route is required".into(),
        ));
    }
    if cfg.routes.iter().map(|r| r.weight).sum::<u32>() == 0 {
        return Err(SidecarError::Config("routes: weights sum to 0".into()));
    }
    for r in &cfg.routes {
        match (cfg.direction, &r.tls) {
            (Direction::Outbound, None) => {
                return Err(SidecarError::Config(format!(
                    "routes: outbound route `{}` needs `tls` (server_name, identity): the mesh is STRICT",
                    r.subset
                )))
            }
            (Direction::Inbound, Some(_)) => {
                return Err(SidecarError::Config(format!(
                    "routes: inbound route `{}` has `tls`: an inbound sidecar speaks plaintext to its app",
                    r.subset
                )))
            }
            _ => {}
        }
    }
    if cfg.concurrency == 0 {
        return Err(SidecarError::Config(
            "concurrency must be at least 1".into(),
        ));
    }
    Ok(())
}
