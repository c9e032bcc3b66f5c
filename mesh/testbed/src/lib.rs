//! The embedded mesh's testbed: what `loadgen run` brings up on a machine with no cluster,
//! per cell of the settings matrix, and tears down again.
//!
//! - [`spec`]: what to bring up ([`MeshSpec`], built by loadgen's plan; [`CellMeshSettings`]);
//! - [`pki`]: a mesh CA and SPIFFE workload certificates (as istiod issues them), as PEM
//!   files in the run directory;
//! - [`process`] / [`child`]: both sides of the child-process contract: every child (one
//!   app per subset, the sidecar) is started from a typed JSON config, announces
//!   `listening on <addr>`, and stops with its parent;
//! - [`cgroup`]: the sidecar's cgroup with the cell's CFS quota (v1 and v2), its
//!   `cpu.stat`; [`proc`]: a process's own counters without one;
//! - [`mesh`]: [`Mesh::prepare`] (PKI once per run) and [`Mesh::up`] -> [`RunningMesh`]
//!   in the cell's [`MeshMode`] (baseline: apps only; server: one inbound sidecar; both:
//!   a client-side sidecar and one server-side sidecar per subset), each sidecar in its
//!   own cgroup with its 1 Hz throttling sampler; [`RunningMesh::down`] -> stats per
//!   sidecar;
//! - `live`: what runs right now, for [`emergency_cleanup`].
//!
//! Everything started is stopped, reaped and removed on [`RunningMesh::down`], on drop
//! (errors, panics unwinding) and therefore on an interrupted run.
#![deny(unsafe_code)]

pub mod cgroup;
pub mod child;
mod live;
pub mod mesh;
pub mod pki;
pub mod proc;
pub mod process;
pub mod spec;

pub use live::emergency_cleanup;
pub use mesh::{Mesh, RunningMesh};
pub use spec::{CellMeshSettings, MeshMode, MeshSpec, SubsetSpec};

use std::path::PathBuf;

/// Errors bringing the mesh up or down. Each names the file, process or cgroup concerned.
#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Pki(#[from] pki::PkiError),
    #[error("cannot start {what} ({exe}): {source}")]
    Spawn {
        what: String,
        exe: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: {reason}")]
    NotReady { what: String, reason: String },
    /// cgroups could not be created or written: the message names the path and errno.
    #[error("cgroup: {0}")]
    Cgroup(String),
}
