//! Command line: `loadgen run`, `loadgen validate`, `loadgen serve`.

use crate::plan::Plan;
use crate::run::RunOptions;
use crate::target::TargetOptions;
use app::{AppConfig, AppTls, ServiceTimeDist, Stall};
use clap::{Parser, Subcommand};
use meshbench_schema::exit;
use meshbench_schema::units::Dur;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use tokio::sync::watch;

pub use exit::{
    CHECK_FAILED as EXIT_CHECK_FAILED, INTERRUPTED as EXIT_INTERRUPTED, OK as EXIT_OK,
    USAGE as EXIT_USAGE,
};

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
    /// Check scenario files (with the same --set overrides as `run`) without running them.
    Validate {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Override a scenario field: --set load.rate=500 (repeatable; applied to every file).
        #[arg(long = "set", value_name = "KEY.PATH=VALUE")]
        sets: Vec<String>,
    },
    /// The built-in app server (the target of scenarios/app.toml and of the tests; the
    /// embedded mesh runs it as its app workloads).
    Serve(ServeArgs),
    /// The embedded mesh's app process, started by `run` from a JSON config.
    #[command(hide = true)]
    MeshApp {
        #[arg(long)]
        config: PathBuf,
    },
    /// The embedded mesh's sidecar process, started by `run` from a JSON config.
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
    /// Use --out even when it holds another run's results (they are removed first) or is
    /// a symbolic link.
    #[arg(long)]
    pub force: bool,
    /// Print, per cell, exactly what would be changed on the system measured (a
    /// `[driver]`'s commands, patches and manifests) and what would be measured; change
    /// nothing, measure nothing, write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Run worker I of N of a run spread over N machines (1-based, e.g. 2/3): this machine
    /// sends request k of every cell's single-machine schedule when k mod N = I-1, over
    /// its share of the connections. Default from the environment: JOB_COMPLETION_INDEX
    /// (0-based, as a Kubernetes Indexed Job sets it) with MESHBENCH_WORKERS. Merge the
    /// workers' run directories with `report merge`.
    #[arg(long, value_name = "I/N")]
    pub worker: Option<String>,
    /// Start the first cell's schedule at this instant (RFC 3339, e.g.
    /// 2026-12-01T10:00:00Z), shared by every worker (default: MESHBENCH_START_AT); cell c
    /// starts c slots later (a slot: warmup + duration + request timeout + 6 s).
    #[arg(long, value_name = "RFC3339")]
    pub start_at: Option<String>,
    /// After the run (also one cut short by an error or a signal), write its results —
    /// run.json and the interval logs — to standard output as a text archive, after the
    /// summary: for machines whose only way out is their log (a Kubernetes pod:
    /// `kubectl logs POD > w.log; report unpack w.log --out runs/`).
    #[arg(long, conflicts_with = "json")]
    pub log_results: bool,
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
    #[arg(long, default_value = "0")]
    pub service_time: Dur,
    /// `fixed` or `exp` (exponentially distributed around the service time).
    #[arg(long, default_value = "fixed")]
    pub service_time_dist: ServiceTimeDist,
    /// Response header `name: value` (repeatable).
    #[arg(long = "header")]
    pub headers: Vec<String>,
    /// Response body size in bytes.
    #[arg(long, default_value_t = 0)]
    pub body_bytes: usize,
    /// Stall every response for this long at every --stall-every period.
    #[arg(long, requires = "stall_every")]
    pub stall: Option<Dur>,
    #[arg(long, requires = "stall")]
    pub stall_every: Option<Dur>,
    /// Accept at most this many requests per second (a token bucket holding a tenth of a
    /// second's worth); the rest are answered 503 at once, like a server shedding load.
    #[arg(long)]
    pub max_rate: Option<f64>,
    /// Stop when the parent process exits (the embedded mesh starts its apps with this, so
    /// a loadgen killed with SIGKILL leaves no app behind).
    #[arg(long, hide = true)]
    pub exit_with_parent: bool,
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
    meshbench_schema::text::one_line(&s)
}

pub fn run(cli: Cli) -> anyhow::Result<u8> {
    match cli.command {
        Command::Validate { files, sets } => validate(&files, &sets),
        Command::Run(args) => run_cmd(args),
        Command::Serve(args) => serve_cmd(args),
        Command::MeshApp { config } => Ok(testbed::child::app_main(&config)),
        Command::MeshSidecar { config } => Ok(testbed::child::sidecar_main(&config)),
    }
}

fn validate(files: &[PathBuf], sets: &[String]) -> anyhow::Result<u8> {
    let mut bad = 0;
    for f in files {
        match Plan::load(f, sets) {
            Ok(p) => println!(
                "{}: ok ({} cell{})",
                f.display(),
                p.cells.len(),
                if p.cells.len() == 1 { "" } else { "s" }
            ),
            Err(e) => {
                eprintln!(
                    "loadgen: {}",
                    meshbench_schema::text::one_line(&e.to_string())
                );
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
        testbed::emergency_cleanup();
        std::process::exit(EXIT_INTERRUPTED as i32);
    });
    Ok(())
}

/// `run --dry-run`: the cells and, with a `[driver]`, what it would run for each.
fn dry_run(plan: &Plan, dir: &std::path::Path) -> String {
    let mut out = format!(
        "dry run of {} ({} cells): nothing is changed, measured or written\n",
        plan.name,
        plan.cells.len()
    );
    let (_tx, stop) = watch::channel(false);
    let driver = plan
        .driver
        .as_ref()
        .map(|d| crate::driver::Driver::new(d, dir, stop));
    match (&plan.target, &driver) {
        (crate::plan::TargetKind::Url { url, .. }, Some(_)) => {
            out.push_str(&format!("target {url}; the {} driver would, per cell:\n", plan.driver.as_ref().map_or("", |d| d.name())));
        }
        (crate::plan::TargetKind::Url { url, .. }, None) => {
            out.push_str(&format!("target {url} as it is (no [driver]: nothing on it is changed)\n"));
        }
        (crate::plan::TargetKind::App(_), _) => out.push_str("target: the built-in app server, started in-process on loopback\n"),
        (crate::plan::TargetKind::Mesh(_), _) => out.push_str("target: the embedded mesh, started per cell on loopback (its own processes and cgroups, removed after each cell)\n"),
    }
    for cell in &plan.cells {
        out.push_str(&format!(
            "cell {} ({}): {} over {} connections\n",
            cell.index,
            cell.id,
            cell.rate
                .map_or("closed loop".to_string(), |r| format!("{r} req/s")),
            cell.connections
        ));
        if let Some(d) = &driver {
            for line in d.describe(plan, cell) {
                out.push_str(&format!("  {line}\n"));
            }
        }
    }
    if driver.is_some() {
        out.push_str(
            "after the last cell (and on an error or interrupt): restore what was changed\n",
        );
    }
    out
}

/// Whether, and how, this run is one worker of several: from `--worker` / `--start-at`
/// or their environment variables, checked against the plan.
fn distributed(
    args: &RunArgs,
    plan: &Plan,
) -> anyhow::Result<Option<crate::distributed::Distributed>> {
    use crate::distributed::{Distributed, MAX_WORKERS};
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
    let share = match (&args.worker, env("JOB_COMPLETION_INDEX"), env("MESHBENCH_WORKERS")) {
        (Some(w), _, _) => Some(Distributed::parse_share(w).map_err(|e| anyhow::anyhow!("--worker {e}"))?),
        (None, Some(i), Some(n)) => {
            let i: u32 = i.trim().parse().map_err(|_| anyhow::anyhow!("JOB_COMPLETION_INDEX `{i}` is not a whole number"))?;
            let n: u32 = n.trim().parse().ok().filter(|n| (1..=MAX_WORKERS).contains(n)).ok_or_else(|| {
                anyhow::anyhow!("MESHBENCH_WORKERS `{n}`: must be 1..{MAX_WORKERS}")
            })?;
            if i >= n {
                anyhow::bail!("JOB_COMPLETION_INDEX {i} is not below MESHBENCH_WORKERS {n} (the Job's completions and MESHBENCH_WORKERS must agree)");
            }
            Some((i, n))
        }
        (None, None, Some(_)) => anyhow::bail!("MESHBENCH_WORKERS is set but JOB_COMPLETION_INDEX is not: give --worker I/N"),
        (None, Some(_), None) => anyhow::bail!("JOB_COMPLETION_INDEX is set but MESHBENCH_WORKERS is not: set it to the Job's completions, or give --worker I/N"),
        (None, None, None) => None,
    };
    let (flag, start_text) = match (&args.start_at, env("MESHBENCH_START_AT")) {
        (Some(s), _) => ("--start-at", Some(s.clone())),
        (None, Some(s)) => ("MESHBENCH_START_AT", Some(s)),
        (None, None) => ("", None),
    };
    let start_at = match &start_text {
        None => None,
        Some(t) => {
            let at = humantime::parse_rfc3339_weak(t.trim()).map_err(|e| {
                anyhow::anyhow!(
                    "{flag} `{t}`: not an RFC 3339 time ({e}), e.g. 2026-12-01T10:00:00Z"
                )
            })?;
            let now = std::time::SystemTime::now();
            let day = std::time::Duration::from_secs(24 * 3600);
            if at > now + day {
                anyhow::bail!("{flag} `{t}` is more than a day ahead");
            }
            if now
                .duration_since(at)
                .is_ok_and(|d| d > std::time::Duration::from_secs(3600))
            {
                anyhow::bail!("{flag} `{t}` is more than an hour ago");
            }
            Some(at)
        }
    };
    if share.is_none() && start_at.is_none() {
        return Ok(None);
    }
    let (index, count) = share.unwrap_or((0, 1));
    if plan.driver.is_some() && count > 1 {
        anyhow::bail!("--worker: the scenario has a [driver], which changes the cluster; run it from one machine");
    }
    if plan.search.is_some() {
        anyhow::bail!("--worker/--start-at: the scenario has a [search], whose every step depends on the one before; run it from one machine");
    }
    if start_at.is_some() && plan.load.duration.is_none() {
        anyhow::bail!(
            "{flag}: the cells need a fixed length to share start times: set load.duration"
        );
    }
    if let Some(c) = plan.cells.iter().find(|c| c.connections < count) {
        anyhow::bail!(
            "--worker {}/{count}: cell {} has {} connection(s), fewer than the {count} workers (each needs one)",
            index + 1,
            c.id,
            c.connections
        );
    }
    Ok(Some(Distributed {
        index,
        count,
        start_at,
    }))
}

fn run_cmd(args: RunArgs) -> anyhow::Result<u8> {
    let plan = Plan::load(&args.scenario, &args.sets)?;
    let worker = distributed(&args, &plan)?;
    if args.dry_run {
        let default = crate::run::default_run_dir(&plan.name, std::time::SystemTime::now());
        print!(
            "{}",
            dry_run(&plan, args.out.as_deref().unwrap_or(&default))
        );
        return Ok(meshbench_schema::exit::OK);
    }
    crate::target::mesh::check_cgroups(&plan, args.no_cpu_limits).map_err(anyhow::Error::msg)?;
    let default = crate::run::default_run_dir(&plan.name, std::time::SystemTime::now());
    let dir = crate::run::create_run_dir(args.out.as_deref(), &default, args.force)?;
    // --log-results: the archive's name, "worker-I" for a worker of a distributed run
    let archive = args.log_results.then(|| {
        (
            dir.clone(),
            match &worker {
                Some(w) if w.count > 1 => format!("worker-{}", w.index + 1),
                _ => "run".to_string(),
            },
        )
    });
    let rt = runtime(plan.load.threads)?;
    let out = rt.block_on(async {
        let (stop_tx, stop) = watch::channel(false);
        watch_signals(stop_tx)?;
        let opts = RunOptions { dir, stop, worker };
        let targets = TargetOptions {
            no_cpu_limits: args.no_cpu_limits,
            exe: None,
        };
        let mut ui = crate::output::Live::new(!args.json);
        let mut on_event = |e: crate::run::Event<'_>| ui.event(e);
        let out = crate::run::run(&plan, &targets, opts, &mut on_event).await;
        ui.finish();
        Ok::<_, anyhow::Error>(out?)
    });
    rt.shutdown_background();
    let out = match out {
        Ok(out) => out,
        Err(e) => {
            // what was measured before the error is on disk: it leaves through the log too
            if let Some((dir, label)) = &archive {
                if dir.join(meshbench_schema::RUN_FILE).is_file() {
                    if let Err(a) = log_results(dir, label) {
                        eprintln!("error: results not written to the log: {a}");
                    }
                }
            }
            return Err(e);
        }
    };
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
    drop(w);
    if let Some((dir, label)) = &archive {
        log_results(dir, label)?;
    }
    Ok(if out.result.interrupted {
        EXIT_INTERRUPTED
    } else if !out.result.checks_passed() {
        EXIT_CHECK_FAILED
    } else {
        EXIT_OK
    })
}

/// `--log-results`: the run's results as a text archive on standard output.
fn log_results(dir: &std::path::Path, label: &str) -> anyhow::Result<()> {
    let stdout = std::io::stdout();
    let mut w = std::io::BufWriter::new(stdout.lock());
    let n = meshbench_schema::archive::write_archive(dir, label, &mut w)?;
    eprintln!("results: {n} file(s) of {} written to standard output as archive `{label}` (report unpack)", dir.display());
    Ok(())
}

fn serve_cmd(a: ServeArgs) -> anyhow::Result<u8> {
    let headers = a
        .headers
        .iter()
        .map(|h| app::parse_header(h).map_err(|e| anyhow::anyhow!("--{e}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let cfg = AppConfig {
        listen: a.listen,
        tls: match (a.cert, a.key) {
            (Some(cert), Some(key)) => Some(AppTls {
                cert,
                key,
                client_ca: a.client_ca,
            }),
            _ => None,
        },
        service_time: a.service_time,
        service_time_dist: a.service_time_dist,
        headers,
        body_bytes: a.body_bytes,
        stall: a
            .stall
            .zip(a.stall_every)
            .map(|(stall, every)| Stall { stall, every }),
        echo_headers: vec![],
        max_rate: a.max_rate,
    };
    if let Err(e) = cfg.check() {
        anyhow::bail!(
            "{}",
            e.to_string()
                .replace("stall_every", "--stall-every")
                .replace("max_rate", "--max-rate")
                .replace("body_bytes", "--body-bytes")
        );
    }
    let parent = a.exit_with_parent.then(nix::unistd::getppid);
    Ok(testbed::child::run_app(cfg, parent, "serve"))
}
