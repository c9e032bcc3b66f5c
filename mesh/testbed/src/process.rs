//! The parent side of the child-process contract (the child side is [`crate::child`]).
//!
//! Every child of the embedded mesh (one app per subset, the sidecar) is started the same
//! way: its typed config is written as `<name>.json` into the cell's directory and the
//! loadgen binary is run as `<exe> <role subcommand> --config <name>.json`, stderr to
//! `<name>.stderr`, in its own process group (so a terminal's Ctrl-C reaches only loadgen,
//! which then stops the children in order). It is ready when its first stdout line is
//! [`READY_PREFIX`]`<addr>`; it is stopped with SIGTERM then SIGKILL and always reaped.
use crate::MeshError;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::Serialize;
use std::io::BufRead;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The first stdout line of a ready child: `listening on <ip:port>`.
pub const READY_PREFIX: &str = "listening on ";

/// The roles a child process can play, each a hidden loadgen subcommand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The built-in app server ([`app::AppConfig`]).
    App,
    /// The sidecar proxy ([`sidecar::SidecarConfig`]).
    Sidecar,
}

impl Role {
    /// The subcommand of the loadgen binary that runs this role.
    pub fn subcommand(self) -> &'static str {
        match self {
            Role::App => "mesh-app",
            Role::Sidecar => "mesh-sidecar",
        }
    }
}

/// How long a child may take to print its `listening on` line.
pub const READY_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a child gets between SIGTERM and SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(3);

/// A running child that announced its listening address.
#[derive(Debug)]
pub struct ChildProc {
    name: String,
    child: Option<Child>,
    addr: SocketAddr,
}

impl ChildProc {
    /// Start `exe` in `role` with `config` (written to `<dir>/<name>.json`) and wait for
    /// its ready line. `on_spawn` runs right after the spawn (e.g. to move the pid into a
    /// cgroup) before waiting for readiness.
    pub fn start<C: Serialize>(
        name: &str,
        exe: &Path,
        role: Role,
        config: &C,
        dir: &Path,
        on_spawn: impl FnOnce(u32) -> Result<(), MeshError>,
    ) -> Result<ChildProc, MeshError> {
        let config_path = dir.join(format!("{name}.json"));
        let json = serde_json::to_vec_pretty(config).map_err(|e| MeshError::Io {
            path: config_path.clone(),
            source: std::io::Error::other(e),
        })?;
        meshbench_schema::write_atomic(&config_path, &json).map_err(|e| MeshError::Io {
            path: config_path.clone(),
            source: std::io::Error::other(e),
        })?;
        let args = [
            role.subcommand().to_string(),
            "--config".into(),
            config_path.display().to_string(),
        ];
        Self::spawn(
            name,
            exe,
            &args,
            &dir.join(format!("{name}.stderr")),
            on_spawn,
        )
    }

    fn spawn(
        name: &str,
        exe: &Path,
        args: &[String],
        stderr_file: &Path,
        on_spawn: impl FnOnce(u32) -> Result<(), MeshError>,
    ) -> Result<ChildProc, MeshError> {
        let stderr = std::fs::File::create(stderr_file).map_err(|source| MeshError::Io {
            path: stderr_file.to_path_buf(),
            source,
        })?;
        let mut child = Command::new(exe)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .process_group(0)
            .spawn()
            .map_err(|source| MeshError::Spawn {
                what: name.to_string(),
                exe: exe.to_path_buf(),
                source,
            })?;
        crate::live::add_pid(child.id());
        let stdout = child.stdout.take();
        let mut proc = ChildProc {
            name: name.to_string(),
            child: Some(child),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        // From here on, an early return drops `proc`, which stops the child.
        on_spawn(proc.pid())?;
        let (tx, rx) = std::sync::mpsc::channel();
        if let Some(out) = stdout {
            std::thread::Builder::new()
                .name(format!("{name}-stdout"))
                .spawn(move || {
                    let mut lines = std::io::BufReader::new(out).lines();
                    let first = lines.next();
                    let _ = tx.send(first.map(|r| r.unwrap_or_default()));
                    // Keep draining so the child never blocks on a full pipe.
                    for _ in lines {}
                })
                .map_err(|source| MeshError::Io {
                    path: stderr_file.to_path_buf(),
                    source,
                })?;
        }
        let stderr_tail = || {
            std::fs::read_to_string(stderr_file)
                .unwrap_or_default()
                .lines()
                .last()
                .unwrap_or("")
                .to_string()
        };
        let first = match rx.recv_timeout(READY_TIMEOUT) {
            Ok(Some(line)) => line,
            Ok(None) | Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                let status = proc.wait_briefly();
                return Err(MeshError::NotReady {
                    what: name.to_string(),
                    reason: format!(
                        "exited ({}) before printing `listening on`: {}",
                        status.unwrap_or_else(|| "still running".into()),
                        stderr_tail()
                    ),
                });
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                return Err(MeshError::NotReady {
                    what: name.to_string(),
                    reason: format!("no `listening on` line within {READY_TIMEOUT:?}"),
                })
            }
        };
        let addr = first
            .trim()
            .strip_prefix(READY_PREFIX)
            .and_then(|a| {
                a.trim()
                    .trim_start_matches("http://")
                    .trim_start_matches("https://")
                    .trim_end_matches('/')
                    .parse::<SocketAddr>()
                    .ok()
            })
            .ok_or_else(|| MeshError::NotReady {
                what: name.to_string(),
                reason: format!(
                    "first stdout line was `{first}`, expected `listening on <ip:port>`"
                ),
            })?;
        proc.addr = addr;
        Ok(proc)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Process id (0 once stopped).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    fn wait_briefly(&mut self) -> Option<String> {
        let child = self.child.as_mut()?;
        let deadline = Instant::now() + Duration::from_millis(500);
        while Instant::now() < deadline {
            if let Ok(Some(st)) = child.try_wait() {
                return Some(st.to_string());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    /// SIGTERM, wait up to [`STOP_GRACE`], SIGKILL; always reaped. Returns true when it
    /// exited on SIGTERM (or had already exited).
    pub fn stop(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        let clean = Self::stop_child(&mut child);
        crate::live::remove_pid(child.id());
        clean
    }

    fn stop_child(child: &mut std::process::Child) -> bool {
        if let Ok(Some(_)) = child.try_wait() {
            return true;
        }
        let pid = Pid::from_raw(child.id() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            match child.try_wait() {
                Ok(Some(_)) => return true,
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                Err(_) => break,
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }
}

impl Drop for ChildProc {
    fn drop(&mut self) {
        self.stop();
    }
}
