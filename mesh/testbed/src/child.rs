//! The child side of the process contract (the parent side is [`crate::process`]): read
//! the typed config, build the runtime, start serving, print [`READY_PREFIX`]`<addr>` as
//! the first stdout line, and stop on SIGTERM/SIGINT or when the parent process is gone.
//!
//! loadgen's hidden subcommands `mesh-app --config F` and `mesh-sidecar --config F` call
//! [`app_main`] and [`sidecar_main`]; `loadgen serve` (flags instead of a file) calls
//! [`run_app`]. Exit codes: 0 after a signal, 2 for a bad config, 1 when it could not start.

use crate::process::READY_PREFIX;
use meshbench_schema::exit;
use nix::unistd::Pid;
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use tokio::signal::unix::{signal, Signal, SignalKind};

/// How often a child checks that its parent is still there. (Polled rather than
/// PR_SET_PDEATHSIG, which fires when the spawning *thread* exits.)
const PARENT_POLL: Duration = Duration::from_millis(500);

/// Read a JSON config; the error is one line naming the file, line and column.
pub fn read_config<C: serde::de::DeserializeOwned>(path: &Path) -> Result<C, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text)
        .map_err(|e| format!("{}:{}:{}: {e}", path.display(), e.line(), e.column()))
}

/// When a child stops: SIGTERM, SIGINT, or (when it was started by a parent it must not
/// outlive) the parent's exit. Installed before the ready line is printed, so a signal
/// right after it is never lost.
pub struct Stop {
    term: Signal,
    int: Signal,
    parent: Option<Pid>,
}

impl Stop {
    /// Install the handlers (inside a tokio runtime). `parent`: stop when the process's
    /// parent is no longer this pid.
    pub fn install(parent: Option<Pid>) -> std::io::Result<Stop> {
        Ok(Stop {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            parent,
        })
    }

    /// Resolves when it is time to stop; says why.
    pub async fn wait(mut self) -> &'static str {
        let mut poll = tokio::time::interval(PARENT_POLL);
        loop {
            tokio::select! {
                _ = self.term.recv() => return "SIGTERM",
                _ = self.int.recv() => return "SIGINT",
                _ = poll.tick() => {
                    if self.parent.is_some_and(|p| nix::unistd::getppid() != p) {
                        return "parent exited";
                    }
                }
            }
        }
    }
}

/// Print the ready line: [`READY_PREFIX`]`<addr>`, flushed.
pub fn announce(addr: SocketAddr) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{READY_PREFIX}{addr}")?;
    out.flush()
}

/// A runtime with `threads` workers (1: a current-thread runtime, as one Envoy worker).
pub fn runtime(threads: usize, name: &str) -> std::io::Result<tokio::runtime::Runtime> {
    let mut b = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    };
    b.max_blocking_threads(4)
        .thread_name(name)
        .enable_all()
        .build()
}

fn fail(role: &str, code: u8, e: impl std::fmt::Display) -> u8 {
    eprintln!(
        "{role}: {}",
        meshbench_schema::text::one_line(&e.to_string())
    );
    code
}

/// `loadgen mesh-app --config FILE.json`: the app server of one subset, stopping with its
/// parent.
pub fn app_main(config: &Path) -> u8 {
    let parent = nix::unistd::getppid();
    match read_config::<app::AppConfig>(config) {
        Ok(cfg) => run_app(cfg, Some(parent), "mesh-app"),
        Err(e) => fail("mesh-app", exit::USAGE, e),
    }
}

/// Serve `cfg` until a signal (or `parent`'s exit).
pub fn run_app(cfg: app::AppConfig, parent: Option<Pid>, role: &str) -> u8 {
    if let Err(e) = cfg.check() {
        return fail(role, exit::USAGE, e);
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let rt = match runtime(threads, "app-worker") {
        Ok(rt) => rt,
        Err(e) => return fail(role, exit::CHECK_FAILED, format!("tokio runtime: {e}")),
    };
    let code = rt.block_on(async {
        let (addr, handle) = match app::spawn(cfg).await {
            Ok(s) => s,
            Err(e) => return fail(role, exit::CHECK_FAILED, e),
        };
        let stop = match Stop::install(parent) {
            Ok(s) => s,
            Err(e) => return fail(role, exit::CHECK_FAILED, format!("signal handlers: {e}")),
        };
        if let Err(e) = announce(addr) {
            return fail(role, exit::CHECK_FAILED, e);
        }
        let why = stop.wait().await;
        if why == "parent exited" {
            eprintln!("{role}: parent exited; stopping");
        }
        handle.shutdown().await;
        exit::OK
    });
    rt.shutdown_background();
    code
}

/// `loadgen mesh-sidecar --config FILE.json`: the sidecar of one cell, stopping with its
/// parent. concurrency 1: one thread does everything (accept, TLS, proxying), as one Envoy
/// worker does; more: that many workers.
pub fn sidecar_main(config: &Path) -> u8 {
    let parent = nix::unistd::getppid();
    let role = "mesh-sidecar";
    let cfg: sidecar::SidecarConfig = match read_config(config) {
        Ok(c) => c,
        Err(e) => return fail(role, exit::USAGE, e),
    };
    let sc = match sidecar::Sidecar::new(&cfg) {
        Ok(s) => s,
        Err(e) => return fail(role, exit::USAGE, e),
    };
    let rt = match runtime(cfg.concurrency, "sidecar-worker") {
        Ok(rt) => rt,
        Err(e) => return fail(role, exit::CHECK_FAILED, format!("tokio runtime: {e}")),
    };
    rt.block_on(async move {
        let listener = match tokio::net::TcpListener::bind(cfg.listen).await {
            Ok(l) => l,
            Err(e) => {
                return fail(
                    role,
                    exit::CHECK_FAILED,
                    format!("bind {}: {e}", cfg.listen),
                )
            }
        };
        let addr = match listener.local_addr() {
            Ok(a) => a,
            Err(e) => return fail(role, exit::CHECK_FAILED, e),
        };
        let stop = match Stop::install(Some(parent)) {
            Ok(s) => s,
            Err(e) => return fail(role, exit::CHECK_FAILED, format!("signal handlers: {e}")),
        };
        if let Err(e) = announce(addr) {
            return fail(role, exit::CHECK_FAILED, e);
        }
        let log = sc.access_log();
        let server = tokio::spawn(sc.serve(listener, async move {
            if stop.wait().await == "parent exited" {
                eprintln!("{role}: parent exited; stopping");
            }
        }));
        let _ = server.await;
        if let Some(e) = log.error() {
            eprintln!("{role}: access log write failed: {e}");
        }
        exit::OK
    })
}
