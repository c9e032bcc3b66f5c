//! The embedded mesh, the system under test, tested as a system:
//!
//! - `sidecar_in_process`: the sidecar in-process: STRICT mTLS (plaintext, certificate-less and
//!   foreign-CA clients refused), 90/10 routing within the statistical bound over HTTP/1.1
//!   and HTTP/2, Envoy access-log lines (off / buffered / sync), 503 UF;
//! - `mesh_up`: `Mesh::up` / `down` with the built loadgen binary as its apps and sidecar:
//!   the sidecar in its cgroup with the cell's quota, and nothing left behind after
//!   `down`, a drop, or a run without CPU limits;
//! - `modes`: the topologies: `both` (plaintext to a client-side sidecar that splits by
//!   weight and originates mTLS with the client's identity; one server-side sidecar per
//!   subset, the only peer of its app) and `baseline` (no sidecar process at all);
//! - `security`: nothing listens beyond loopback (in `server` and `both`), TLS 1.2 and 1.3
//!   only, an expired client certificate of the mesh CA refused.

mod mesh_up;
mod modes;
mod security;
mod sidecar_in_process;
