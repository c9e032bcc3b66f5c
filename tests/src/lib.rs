//! Helpers for the end-to-end tests: locate the workspace binaries built by cargo.

use std::path::PathBuf;

/// Path of a workspace binary (`loadgen`, `probe`, `report`) in the same target directory
/// as the running test executable. `cargo test --workspace` builds them before any test runs.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/e2e-<hash> -> target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("test executable lives in target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} not found: run the tests with `cargo test --workspace` so the binaries are built",
        path.display()
    );
    path
}

/// The workspace root (for scenarios/ and fixtures).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace root")
        .to_path_buf()
}

/// One row of `/proc/<pid>/net/tcp{,6}`: addresses as `IP:PORT` in the kernel's hex
/// notation (`0100007F:1F90`), the state (`0A` listen, `01` established) and the inode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpSocket {
    pub local: String,
    pub remote: String,
    pub state: String,
    pub inode: String,
}

impl TcpSocket {
    /// The local port.
    pub fn local_port(&self) -> u16 {
        port_of(&self.local)
    }
    /// The remote port.
    pub fn remote_port(&self) -> u16 {
        port_of(&self.remote)
    }
}

fn port_of(hex: &str) -> u16 {
    hex.rsplit(':')
        .next()
        .and_then(|p| u16::from_str_radix(p, 16).ok())
        .unwrap_or(0)
}

/// The socket inodes process `pid` holds open.
pub fn socket_inodes(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .filter_map(|l| {
                    let l = l.to_string_lossy().into_owned();
                    l.strip_prefix("socket:[")
                        .and_then(|x| x.strip_suffix(']'))
                        .map(str::to_string)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The TCP sockets (IPv4 and IPv6) that process `pid` holds.
pub fn tcp_sockets(pid: u32) -> Vec<TcpSocket> {
    let inodes = socket_inodes(pid);
    let mut out = Vec::new();
    for table in ["tcp", "tcp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() > 9 && inodes.iter().any(|i| i == f[9]) {
                out.push(TcpSocket {
                    local: f[1].to_string(),
                    remote: f[2].to_string(),
                    state: f[3].to_string(),
                    inode: f[9].to_string(),
                });
            }
        }
    }
    out
}
