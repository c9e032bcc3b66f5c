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

/// One weighted route to a subset's app.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub subset: String,
    pub weight: u32,
    pub upstream: SocketAddr,
}

/// Everything the sidecar process needs (the JSON file given to `mesh-sidecar --config`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SidecarConfig {
    /// Address to listen on; port 0 picks a free one.
    pub listen: SocketAddr,
    /// Serving certificate chain and key (PEM).
    pub cert: PathBuf,
    pub key: PathBuf,
    /// CA that client certificates must chain to (PEM).
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
    if cfg.concurrency == 0 {
        return Err(SidecarError::Config(
            "concurrency must be at least 1".into(),
        ));
    }
    Ok(())
}
