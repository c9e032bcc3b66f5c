//! probe: qualifies a node for latency-sensitive service-mesh sidecars.
//!
//! `Host(root) --> checks --> Findings --> table / JSON / Prometheus / JUnit`. Every read
//! goes through one root (`--root`), so each check runs on fixture trees; live-only
//! measurements (steal over time, vCPU throughput, wake-up latency, CPUID, disk I/O) keep
//! their arithmetic separate from their sampling.
//!
//! `unsafe_code` is denied, not forbidden, in the library: the exceptions are pushing an
//! io_uring submission (`checks::io::uring::push_rw`) and the clock syscalls of
//! `checks::timesync` (adjtimex read-only, clock_gettime, a timerfd and poll), each
//! `#[allow(unsafe_code)]` with its SAFETY argument. The binary still forbids it.
#![deny(unsafe_code)]

pub mod checks;
pub mod cleanup;
pub mod host;
pub mod output;
pub mod profile;

use clap::{Parser, ValueEnum};
use meshbench_schema::{Finding, ProbeReport, ToolInfo, Verdict, PROBE_SCHEMA_VERSION};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use checks::{Check, Ctx};
use host::Host;
use profile::Profile;

/// When warnings make the exit status 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FailOn {
    Fail,
    Warn,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorWhen {
    Auto,
    Always,
    Never,
}

/// Is this node fit to run latency-sensitive service-mesh sidecars?
///
/// Exit status: 0 nothing failed (warnings allowed), 1 a check failed (or warned, with
/// --fail-on warn), 2 probe could not run, 130 interrupted.
#[derive(Debug, Parser)]
#[command(name = "probe", version)]
pub struct Args {
    /// Root every /proc and /sys read goes through (a fixture tree, or / for this host).
    #[arg(long, default_value = "/")]
    pub root: PathBuf,
    /// Directory whose disk is checked and where the I/O test writes its temporary files.
    #[arg(long, default_value = "/var/lib")]
    pub path: String,
    /// Steal sample window (e.g. 5s, 500ms). Default 5s, or 1s with --quick.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub sample: Option<Duration>,
    /// Fast run: no disk I/O test, 1 s steal sample, shorter vCPU and wake-up tests.
    #[arg(long)]
    pub quick: bool,
    /// Skip the disk I/O test.
    #[arg(long)]
    pub no_io: bool,
    /// TOML file overriding thresholds of the built-in mesh-node profile.
    #[arg(long, value_name = "FILE")]
    pub profile: Option<PathBuf>,
    /// Run only these checks (ids or groups such as `mesh`, comma-separated).
    #[arg(long, value_delimiter = ',', value_name = "CHECKS")]
    pub only: Vec<String>,
    /// Do not run these checks (ids or groups, comma-separated).
    #[arg(long, value_delimiter = ',', value_name = "CHECKS")]
    pub skip: Vec<String>,
    /// Print every check with its thresholds and exit.
    #[arg(long)]
    pub list_checks: bool,
    /// Write the report as JSON: to stdout (instead of the table) or, with a FILE, to it.
    #[arg(long, value_name = "FILE", num_args = 0..=1, default_missing_value = "-")]
    pub json: Option<PathBuf>,
    /// Write node_exporter textfile-collector metrics to FILE (atomically).
    #[arg(long, value_name = "FILE")]
    pub prometheus: Option<PathBuf>,
    /// Write a JUnit XML report to FILE (atomically).
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Which verdict makes the exit status 1.
    #[arg(long, value_enum, default_value = "fail")]
    pub fail_on: FailOn,
    /// Colour the table: auto (only on a terminal), always, never.
    #[arg(long, value_enum, default_value = "auto")]
    pub color: ColorWhen,
}

/// Why probe could not run (exit status 2). Every variant names the flag or file.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("--root {0}")]
    Root(#[source] host::HostError),
    #[error("--path {path}: {msg}")]
    Path { path: String, msg: String },
    #[error("--profile {0}")]
    Profile(#[from] profile::ProfileError),
    #[error("{flag}: unknown check {name:?} (known: {known})")]
    UnknownCheck {
        flag: &'static str,
        name: String,
        known: String,
    },
    #[error("--sample {0}")]
    Sample(String),
    #[error("{0}")]
    Write(#[from] meshbench_schema::SchemaError),
    #[error("stdout: {0}")]
    Stdout(std::io::Error),
}

/// Which checks run, from --only / --skip. A name is a check id, a finding id of a check
/// (e.g. `disk.fsync` selects `disk.io`) or a group (`cpu`, `disk`, `mesh`, `virtio`).
pub fn select(
    all: &[Box<dyn Check>],
    only: &[String],
    skip: &[String],
) -> Result<Vec<bool>, ProbeError> {
    let known = || all.iter().map(|c| c.id()).collect::<Vec<_>>().join(", ");
    let matches = |c: &dyn Check, name: &str| {
        c.id() == name || c.finding_ids().contains(&name) || c.id().split('.').next() == Some(name)
    };
    let resolve = |flag: &'static str, names: &[String]| -> Result<Vec<bool>, ProbeError> {
        let mut sel = vec![false; all.len()];
        for n in names.iter().map(|n| n.trim()).filter(|n| !n.is_empty()) {
            let mut hit = false;
            for (i, c) in all.iter().enumerate() {
                if matches(c.as_ref(), n) {
                    sel[i] = true;
                    hit = true;
                }
            }
            if !hit {
                return Err(ProbeError::UnknownCheck {
                    flag,
                    name: n.to_string(),
                    known: known(),
                });
            }
        }
        Ok(sel)
    };
    let only_sel = resolve("--only", only)?;
    let skip_sel = resolve("--skip", skip)?;
    let any_only = only.iter().any(|n| !n.trim().is_empty());
    Ok((0..all.len())
        .map(|i| (!any_only || only_sel[i]) && !skip_sel[i])
        .collect())
}

/// `--list-checks` text.
pub fn list_checks(profile: &Profile) -> String {
    let mut out = format!("profile {}\n", profile.name);
    for c in checks::registry() {
        let ids = c.finding_ids();
        let extra = if ids.len() > 1 || ids[0] != c.id() {
            format!(" (findings: {})", ids.join(", "))
        } else {
            String::new()
        };
        let live = if c.live_only() { " [live only]" } else { "" };
        out.push_str(&format!(
            "{:<18} {}{extra}{live}\n{:<18} thresholds: {}\n",
            c.id(),
            c.title(),
            "",
            c.thresholds(&profile.t)
        ));
    }
    out
}

/// Run the selected checks and assemble the report.
pub fn probe(ctx: &Ctx, all: &[Box<dyn Check>], selected: &[bool]) -> Vec<Finding> {
    let mut by_check: Vec<Vec<Finding>> = vec![vec![]; all.len()];
    // Steal runs last: its window started with the run and ends after the other checks.
    let order: Vec<usize> = (0..all.len())
        .filter(|&i| all[i].id() != "cpu.steal")
        .chain((0..all.len()).filter(|&i| all[i].id() == "cpu.steal"))
        .collect();
    for i in order {
        let c = &all[i];
        by_check[i] = if selected[i] {
            c.run(ctx)
        } else {
            c.finding_ids()
                .into_iter()
                .map(|id| {
                    checks::skip(
                        id,
                        c.title(),
                        c.thresholds(ctx.t()),
                        "not selected (--only/--skip)",
                    )
                })
                .collect()
        };
    }
    by_check.into_iter().flatten().collect()
}

/// The node's name, read under the root.
pub fn node_name(host: &Host) -> String {
    host.read_trim("/proc/sys/kernel/hostname")
        .or_else(|_| host.read_trim("/etc/hostname"))
        .unwrap_or_else(|_| "unknown".into())
}

/// Exit status for a report.
pub fn exit_code(report: &ProbeReport, fail_on: FailOn) -> i32 {
    let failed = report.findings.iter().any(|f| {
        f.verdict == Verdict::Fail || (fail_on == FailOn::Warn && f.verdict == Verdict::Warn)
    });
    i32::from(failed)
}

/// The whole program after argument parsing. Returns the exit status (0 or 1).
pub fn run(args: Args) -> Result<i32, ProbeError> {
    let profile = match &args.profile {
        Some(p) => Profile::load(p)?,
        None => Profile::default(),
    };
    let all = checks::registry();
    let selected = select(&all, &args.only, &args.skip)?;
    if args.list_checks {
        print!("{}", list_checks(&profile));
        return Ok(0);
    }
    let host = Host::new(&args.root).map_err(ProbeError::Root)?;
    let path = if args.path.starts_with('/') {
        args.path.clone()
    } else if host.is_live() {
        std::env::current_dir()
            .map(|d| d.join(&args.path).display().to_string())
            .map_err(|e| ProbeError::Path {
                path: args.path.clone(),
                msg: e.to_string(),
            })?
    } else {
        format!("/{}", args.path)
    };
    match std::fs::metadata(host.path(&path)) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(ProbeError::Path {
                path,
                msg: "not a directory".into(),
            })
        }
        Err(e) => {
            return Err(ProbeError::Path {
                path,
                msg: e.to_string(),
            })
        }
    }
    let sample = args
        .sample
        .unwrap_or(Duration::from_secs(if args.quick { 1 } else { 5 }));
    if sample.is_zero() || sample > Duration::from_secs(3600) {
        return Err(ProbeError::Sample(
            "must be longer than 0 and at most 1h".into(),
        ));
    }

    let started = Instant::now();
    let started_at = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    let mut ctx = Ctx::new(host, profile, path);
    ctx.sample = sample;
    ctx.quick = args.quick;
    ctx.io = !(args.quick || args.no_io);
    let steal_selected = all
        .iter()
        .zip(&selected)
        .any(|(c, s)| *s && c.id() == "cpu.steal");
    if ctx.host.is_live() && steal_selected {
        ctx.start_steal_window();
    }
    let findings = probe(&ctx, &all, &selected);
    let report = ProbeReport {
        schema_version: PROBE_SCHEMA_VERSION,
        tool: ToolInfo::new("probe", env!("CARGO_PKG_VERSION")),
        node: node_name(&ctx.host),
        root: ctx.host.root().display().to_string(),
        started_at,
        duration_s: started.elapsed().as_secs_f64(),
        profile: ctx.profile.name.clone(),
        counts: ProbeReport::count(&findings),
        findings,
    };
    let fail_on_warn = args.fail_on == FailOn::Warn;
    if let Some(p) = &args.prometheus {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        meshbench_schema::write_atomic(p, output::prometheus::render(&report, now).as_bytes())?;
    }
    if let Some(p) = &args.junit {
        meshbench_schema::write_atomic(p, output::junit::render(&report, fail_on_warn).as_bytes())?;
    }
    let mut stdout = std::io::stdout().lock();
    match &args.json {
        Some(p) if p.as_os_str() == "-" => {
            stdout
                .write_all(output::json::render(&report).as_bytes())
                .map_err(ProbeError::Stdout)?;
        }
        other => {
            if let Some(p) = other {
                output::json::write(p, &report)?;
            }
            let color = match args.color {
                ColorWhen::Always => true,
                ColorWhen::Never => false,
                ColorWhen::Auto => std::io::stdout().is_terminal(),
            };
            stdout
                .write_all(output::table::render(&report, color).as_bytes())
                .map_err(ProbeError::Stdout)?;
        }
    }
    Ok(exit_code(&report, args.fail_on))
}
