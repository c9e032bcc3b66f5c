//! Command line: `loadgen run`, `loadgen validate`, `loadgen serve`.

use crate::plan::{Dist, Plan};
use crate::run::{AppTarget, RunOptions, UrlTarget};
use crate::serve::{ServeConfig, ServeTls};
use crate::units::Dur;
use clap::{Parser, Subcommand, ValueEnum};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use tokio::sync::watch;

pub const EXIT_OK: u8 = 0;
pub const EXIT_CHECK_FAILED: u8 = 1;
pub const EXIT_USAGE: u8 = 2;
pub const EXIT_INTERRUPTED: u8 = 130;

/// Open-loop mTLS load generator with HDR latency recording.
#[derive(Debug, Parser)]
#[command(name = "loadgen", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a scenario and write results/<scenario>-<UTC>/run.json and interval logs.
    Run(RunArgs),
    /// Check scenario files without running them.
    Validate {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// The built-in app server (target of scenarios/app.toml and the tests; the embedded
    /// mesh's app workloads).
    Serve(ServeArgs),
    /// The embedded mesh's sidecar process, started by `run` (prints `listening on ADDR`).
    #[command(hide = true)]
    MeshSidecar {
        #[arg(long)]
        config: PathBuf,
    },
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Scenario file (TOML).
    pub scenario: PathBuf,
    /// Run directory (default results/<scenario>-<UTC timestamp>/).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Override a scenario field: --set load.rate=500 (repeatable).
    #[arg(long = "set", value_name = "KEY.PATH=VALUE")]
    pub sets: Vec<String>,
    /// Print the summary as JSON on stdout (no table).
    #[arg(long)]
    pub json: bool,
    /// Run the embedded mesh without sidecar CPU/memory limits (for hosts where cgroups
    /// cannot be written); every cell is then marked "CPU limit not applied".
    #[arg(long)]
    pub no_cpu_limits: bool,
    /// Do not render report.html, summary.md and plots/ at the end (`report render` can
    /// do it later).
    #[arg(long)]
    pub no_report: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum DistArg {
    Fixed,
    Exp,
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on; port 0 picks a free one. The first stdout line is
    /// `listening on <ip:port>`.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Server certificate chain (PEM); enables TLS (ALPN h2, http/1.1).
    #[arg(long, requires = "key")]
    pub cert: Option<PathBuf>,
    /// Server private key (PEM).
    #[arg(long, requires = "cert")]
    pub key: Option<PathBuf>,
    /// Require client certificates signed by this CA (mTLS).
    #[arg(long, requires = "cert")]
    pub client_ca: Option<PathBuf>,
    /// Time spent on each request before answering.
    #[arg(long, default_value = "0", value_parser = parse_dur)]
    pub service_time: Dur,
    #[arg(long, value_enum, default_value = "fixed")]
    pub service_time_dist: DistArg,
    /// Response header `name: value` (repeatable).
    #[arg(long = "header")]
    pub headers: Vec<String>,
    /// Response body size in bytes.
    #[arg(long, default_value_t = 0)]
    pub body_bytes: usize,
    /// Stall every response for this long at every --stall-every period.
    #[arg(long, value_parser = parse_dur, requires = "stall_every")]
    pub stall: Option<Dur>,
    #[arg(long, value_parser = parse_dur, requires = "stall")]
    pub stall_every: Option<Dur>,
    /// Stop when the parent process exits (the embedded mesh starts its apps with this, so
    /// a loadgen killed with SIGKILL leaves no app behind).
    #[arg(long, hide = true)]
    pub exit_with_parent: bool,
}

fn parse_dur(s: &str) -> Result<Dur, String> {
    Dur::parse(s)
}

/// An error and its causes on one line.
pub fn one_line(e: &anyhow::Error) -> String {
    let mut s = e.to_string();
    for c in e.chain().skip(1) {
        let c = c.to_string();
        if !s.contains(&c) {
            s.push_str(": ");
            s.push_str(&c);
        }
    }
    s.replace('\n', " ")
}

pub fn run(cli: Cli) -> anyhow::Result<u8> {
    match cli.command {
        Command::Validate { files } => validate(&files),
        Command::Run(args) => run_cmd(args),
        Command::Serve(args) => serve_cmd(args),
        Command::MeshSidecar { config } => Ok(mesh::sidecar_main_code(&config)),
    }
}

fn validate(files: &[PathBuf]) -> anyhow::Result<u8> {
    let mut bad = 0;
    for f in files {
        match Plan::load(f, &[]) {
            Ok(p) => println!(
                "{}: ok ({} cell{})",
                f.display(),
                p.cells.len(),
                if p.cells.len() == 1 { "" } else { "s" }
            ),
            Err(e) => {
                eprintln!("loadgen: {e}");
                bad += 1;
            }
        }
    }
    Ok(if bad == 0 { EXIT_OK } else { EXIT_USAGE })
}

fn runtime(threads: u32) -> anyhow::Result<tokio::runtime::Runtime> {
    let rt = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads as usize)
            .enable_all()
            .build()?
    };
    Ok(rt)
}

/// Turn the first SIGINT/SIGTERM into `stop = true`; a second one exits at once.
fn watch_signals(stop: watch::Sender<bool>) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    tokio::spawn(async move {
        tokio::select! { _ = int.recv() => {}, _ = term.recv() => {} }
        let _ = stop.send(true);
        tokio::select! { _ = int.recv() => {}, _ = term.recv() => {} }
        // No unwinding after exit(): stop the embedded mesh's processes and cgroups first.
        mesh::emergency_cleanup();
        std::process::exit(EXIT_INTERRUPTED as i32);
    });
    Ok(())
}

fn run_cmd(args: RunArgs) -> anyhow::Result<u8> {
    let plan = Plan::load(&args.scenario, &args.sets)?;
    crate::mesh_target::check_cgroups(&plan, args.no_cpu_limits).map_err(anyhow::Error::msg)?;
    let rt = runtime(plan.load.threads)?;
    let out = rt.block_on(async {
        let (stop_tx, stop) = watch::channel(false);
        watch_signals(stop_tx)?;
        let opts = RunOptions {
            out: args.out.clone(),
            stop,
        };
        let mut ui = crate::output::Live::new(!args.json);
        let mut on_event = |e: crate::run::Event<'_>| ui.event(e);
        let out = if plan.mesh.is_some() {
            let dir = args.out.clone().unwrap_or_else(|| {
                crate::run::default_run_dir(&plan.name, std::time::SystemTime::now())
            });
            let exe = std::env::current_exe()?;
            let mut target =
                crate::mesh_target::MeshTarget::new(dir.clone(), exe, args.no_cpu_limits);
            let opts = RunOptions {
                out: Some(dir),
                ..opts
            };
            crate::run::run_plan(&plan, &mut target, opts, &mut on_event).await
        } else if plan.app.is_some() {
            crate::run::run_plan(&plan, &mut AppTarget::default(), opts, &mut on_event).await
        } else if plan.checks.is_some() {
            let mut target = crate::mesh_target::CheckedTarget::new(UrlTarget);
            crate::run::run_plan(&plan, &mut target, opts, &mut on_event).await
        } else {
            crate::run::run_plan(&plan, &mut UrlTarget, opts, &mut on_event).await
        };
        ui.finish();
        Ok::<_, anyhow::Error>(out?)
    })?;
    rt.shutdown_background();
    // The results are on disk by now; a report that cannot be drawn loses nothing measured.
    let report = (!args.no_report).then(|| report::render(&out.dir));
    let stdout = std::io::stdout();
    let mut w = stdout.lock();
    if args.json {
        serde_json::to_writer_pretty(&mut w, &crate::output::summary_json(&out.dir, &out.result))?;
        writeln!(w)?;
    } else {
        write!(w, "{}", crate::output::summary_table(&out.result))?;
        writeln!(w, "results: {}", out.dir.display())?;
    }
    match report {
        Some(Ok(rendered)) if args.json => eprintln!("report: {}", rendered.report_html.display()),
        Some(Ok(rendered)) => writeln!(w, "report: {}", rendered.report_html.display())?,
        Some(Err(e)) => eprintln!("error: report not rendered: {e}"),
        None => {}
    }
    for warning in &out.result.warnings {
        eprintln!("warning: {warning}");
    }
    w.flush()?;
    Ok(if out.result.interrupted {
        EXIT_INTERRUPTED
    } else if !out.result.checks_passed() {
        EXIT_CHECK_FAILED
    } else {
        EXIT_OK
    })
}

fn serve_cmd(a: ServeArgs) -> anyhow::Result<u8> {
    let mut headers = Vec::new();
    for h in &a.headers {
        headers.push(crate::serve::parse_header(h)?);
    }
    let cfg = ServeConfig {
        listen: a.listen,
        tls: match (a.cert, a.key) {
            (Some(cert), Some(key)) => Some(ServeTls {
                cert,
                key,
                client_ca: a.client_ca,
            }),
            _ => None,
        },
        service_time: a.service_time.0,
        service_time_dist: match a.service_time_dist {
            DistArg::Fixed => Dist::Fixed,
            DistArg::Exp => Dist::Exp,
        },
        headers,
        body_bytes: a.body_bytes,
        stall: a.stall.zip(a.stall_every).map(|(s, e)| (s.0, e.0)),
    };
    if let Some((s, e)) = cfg.stall {
        if s >= e {
            anyhow::bail!("--stall must be shorter than --stall-every");
        }
    }
    let rt = runtime(
        std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1),
    )?;
    rt.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut int = signal(SignalKind::interrupt())?;
        let mut term = signal(SignalKind::terminate())?;
        let (addr, handle) = crate::serve::spawn(cfg).await?;
        {
            let mut out = std::io::stdout().lock();
            writeln!(out, "listening on {addr}")?;
            out.flush()?;
        }
        // Polled rather than PR_SET_PDEATHSIG, which fires when the spawning *thread* exits.
        let parent = nix::unistd::getppid();
        let mut orphan = tokio::time::interval(std::time::Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = int.recv() => break,
                _ = term.recv() => break,
                _ = orphan.tick() => {
                    if a.exit_with_parent && nix::unistd::getppid() != parent {
                        eprintln!("serve: parent exited; stopping");
                        break;
                    }
                }
            }
        }
        handle.shutdown().await;
        Ok::<_, anyhow::Error>(())
    })?;
    rt.shutdown_background();
    Ok(EXIT_OK)
}
