//! The command line: argument definitions and one function per subcommand. `main.rs`
//! only parses, calls [`run`] and maps the result to an exit code.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::gate::{self, GateOptions};
use crate::load::load_run;
use crate::{compare, fleet, junit, merge, ReportError};

/// Plots, HTML reports, comparisons and CI gates for meshbench runs.
#[derive(Parser, Debug)]
#[command(name = "report", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Write report.html, summary.md and plots/ into a run directory.
    Render {
        /// Directory holding run.json and the cells' .hlog files.
        run_dir: PathBuf,
    },
    /// Compare two runs cell by cell: base, current and change per percentile.
    Compare {
        base: PathBuf,
        current: PathBuf,
        /// Print markdown instead of a terminal table.
        #[arg(long)]
        markdown: bool,
    },
    /// Gate a run on SLOs and on noise-aware regression against a baseline.
    /// Exit 0 when every gate passes, 1 when any fails, 2 on usage or input errors.
    Gate {
        current: PathBuf,
        /// Baseline run directory for regression gates.
        #[arg(long)]
        baseline: Option<PathBuf>,
        /// Absolute threshold, e.g. 'p99<50ms', 'errors<0.1%', 'rate>190'
        /// (added to the SLOs declared in the scenario).
        #[arg(long = "slo", value_name = "EXPR")]
        slos: Vec<String>,
        /// Allowed regression against the baseline, e.g. 'p99=+10%', or 'capacity=10%'
        /// (an allowed drop of a [search]'s capacity; only when given). Default p99=+10%
        /// when --baseline is given without any.
        #[arg(long = "max-regression", value_name = "EXPR")]
        max_regressions: Vec<String>,
        /// Significance level of the noise test.
        #[arg(long, default_value_t = gate::DEFAULT_ALPHA)]
        alpha: f64,
        /// Write JUnit XML (one test case per gate per cell) to FILE.
        #[arg(long, value_name = "FILE")]
        junit: Option<PathBuf>,
    },
    /// Merge the run directories of a distributed run's workers into one run directory
    /// (`report merge RUN_DIR... --out DIR`), or interval logs into one
    /// (`report merge OUT.hlog IN.hlog|RUN_DIR...`), losslessly.
    Merge {
        /// The merged run directory (new or empty); without it the first path is the
        /// interval log to write.
        #[arg(long = "out", value_name = "DIR")]
        out_dir: Option<PathBuf>,
        #[arg(required = true, num_args = 1.., value_name = "PATH")]
        paths: Vec<PathBuf>,
    },
    /// Write back the run directories archived in logs by `loadgen run --log-results`
    /// (e.g. `kubectl logs` of each worker pod) as DIR/<name>, ready for `report merge`.
    /// Exit 1 when a log holds no archive or one cut short (its whole files are still
    /// written back).
    Unpack {
        #[arg(required = true, num_args = 1.., value_name = "LOG")]
        logs: Vec<PathBuf>,
        /// Directory to write the run directories into (each must not exist yet).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Probe reports of many nodes side by side: failed checks, steal and fsync p99 per
    /// node. Exit 1 when any node has a failed check.
    Fleet {
        #[arg(required = true, num_args = 1..)]
        reports: Vec<PathBuf>,
        /// Directory for fleet.md, fleet.html and fleet.svg/.png.
        #[arg(long, default_value = "fleet-report")]
        out: PathBuf,
    },
}

/// Run a parsed command. Ok(0) all good, Ok(1) a gate or check failed; Err is a usage or
/// input error (exit 2).
pub fn run(cli: Cli) -> Result<u8, ReportError> {
    match cli.command {
        Command::Render { run_dir } => {
            let out = crate::render(&run_dir)?;
            for n in &out.not_drawn {
                eprintln!("note: {n}");
            }
            for line in &out.capacity {
                println!("capacity: {line}");
            }
            println!("{}", out.report_html.display());
            println!("{}", out.summary_md.display());
            Ok(0)
        }
        Command::Compare {
            base,
            current,
            markdown,
        } => {
            let b = load_run(&base)?;
            let c = load_run(&current)?;
            let cmp = compare::compare(&b, &c);
            if markdown {
                print!("{}", compare::markdown(&cmp));
            } else {
                print!("{}", compare::table(&cmp));
            }
            Ok(0)
        }
        Command::Gate {
            current,
            baseline,
            slos,
            max_regressions,
            alpha,
            junit: junit_path,
        } => {
            if !(alpha > 0.0 && alpha < 1.0) {
                return Err(ReportError::Usage(format!(
                    "--alpha {alpha}: must be between 0 and 1"
                )));
            }
            if baseline.is_none() && !max_regressions.is_empty() {
                return Err(ReportError::Usage(
                    "--max-regression needs --baseline".into(),
                ));
            }
            let mut parsed_slos = Vec::new();
            for e in &slos {
                parsed_slos.push(gate::parse_slo(e)?);
            }
            let mut regressions = Vec::new();
            for e in &max_regressions {
                regressions.push(gate::parse_max_regression(e)?);
            }
            if baseline.is_some() && regressions.is_empty() {
                regressions.push(gate::parse_max_regression(gate::DEFAULT_MAX_REGRESSION)?);
            }
            let cur = load_run(&current)?;
            // SLOs declared in the scenario travel in run.json
            for e in &cur.run.slo {
                let slo = gate::parse_slo(e).map_err(|err| ReportError::Invalid {
                    path: cur.dir.join(meshbench_schema::RUN_FILE),
                    msg: err.to_string(),
                })?;
                if !parsed_slos.iter().any(|s| s.expr == slo.expr) {
                    parsed_slos.push(slo);
                }
            }
            let base = match &baseline {
                Some(b) => Some(load_run(b)?),
                None => None,
            };
            // an incomplete run is always gated: its missing cells and checks fail
            if parsed_slos.is_empty() && base.is_none() && cur.run.incomplete().is_empty() {
                return Err(ReportError::Usage(format!(
                    "{}: nothing to gate: give --slo or --baseline, or declare [slo] in the scenario",
                    current.display()
                )));
            }
            let opts = GateOptions {
                slos: parsed_slos,
                regressions,
                alpha,
            };
            let results = gate::evaluate(&cur, base.as_ref(), &opts);
            print!("{}", gate::markdown(&cur, base.as_ref(), &results));
            if let Some(p) = junit_path {
                let xml =
                    junit::junit_xml(&format!("meshbench gate: {}", cur.run.scenario), &results);
                meshbench_schema::write_atomic(&p, xml.as_bytes())?;
            }
            Ok(u8::from(results.iter().any(|r| r.verdict.fails())))
        }
        Command::Merge {
            out_dir: Some(dir),
            paths,
        } => {
            let m = crate::runmerge::merge_runs(&paths, &dir)?;
            println!(
                "{}: {} worker run(s) of {} merged: {}",
                dir.display(),
                m.run.merged_from.len(),
                m.run.scenario,
                m.run
                    .cells
                    .iter()
                    .map(|c| format!("{} {} requests", c.id, c.requests))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            for w in &m.run.merged_from {
                println!(
                    "  worker {}: {} ({}), {} cell(s){}{}",
                    w.index + 1,
                    w.host,
                    w.dir,
                    w.cells.len(),
                    w.max_start_late_s
                        .map(|l| format!(
                            ", started up to {:.1} ms after the shared start",
                            l * 1000.0
                        ))
                        .unwrap_or_default(),
                    w.clock
                        .as_ref()
                        .map(|c| format!(", {}", crate::format::clock(c)))
                        .unwrap_or_default()
                );
            }
            for g in &m.gaps {
                eprintln!("warning: {g}");
            }
            Ok(if m.gaps.is_empty() { 0 } else { 1 })
        }
        Command::Merge {
            out_dir: None,
            paths,
        } => {
            let (out, inputs) = paths.split_first().expect("clap requires one path");
            if inputs.is_empty() {
                return Err(ReportError::Usage(
                    "report merge OUT.hlog IN...: give the logs to merge after the output (or --out DIR with run directories)".into(),
                ));
            }
            let out = out.clone();
            let inputs = inputs.to_vec();
            let s = merge::merge(&out, &inputs)?;
            fn label(t: &str) -> &str {
                if t.is_empty() {
                    "(untagged)"
                } else {
                    t
                }
            }
            let totals: Vec<String> = s
                .percentiles
                .iter()
                .map(|(t, q)| format!("{}={}", label(t), q.count))
                .collect();
            println!(
                "{}: {} intervals from {} log(s) merged into {}; counts {}",
                out.display(),
                s.intervals_in,
                s.inputs.len(),
                s.intervals_out,
                totals.join(", ")
            );
            for (t, q) in &s.percentiles {
                println!(
                    "  {}: count {}, p50 {} µs, p90 {} µs, p99 {} µs, p99.9 {} µs, max {} µs",
                    label(t),
                    q.count,
                    q.p50_us,
                    q.p90_us,
                    q.p99_us,
                    q.p999_us,
                    q.max_us
                );
            }
            Ok(0)
        }
        Command::Unpack { logs, out } => {
            // every log is read, whatever an earlier one held: one damaged log must not
            // keep the other workers' results from coming back
            let mut short = false;
            for log in &logs {
                let got = match meshbench_schema::archive::unpack(log, &out) {
                    Ok(got) => got,
                    Err(e) => {
                        short = true;
                        eprintln!("warning: {e} (its whole files before that are written back)");
                        continue;
                    }
                };
                if let Some(line) = got.orphaned_from {
                    short = true;
                    eprintln!(
                        "warning: {}: archive lines from line {line} on have no `begin`: the log lost its start (rotated?) and that archive with it",
                        log.display()
                    );
                }
                if got.archives.is_empty() && got.orphaned_from.is_none() {
                    short = true;
                    eprintln!(
                        "warning: {}: no meshbench archive in it (was the run started with --log-results, and is this its whole log?)",
                        log.display()
                    );
                }
                for u in got.archives {
                    println!(
                        "{}: {} file(s) from {}",
                        u.dir.display(),
                        u.files.len(),
                        log.display()
                    );
                    if let Some(why) = &u.incomplete {
                        short = true;
                        eprintln!("warning: {}: archive `{}`: {why}", log.display(), u.label);
                    }
                }
            }
            Ok(u8::from(short))
        }
        Command::Fleet { reports, out } => {
            let f = fleet::load(&reports)?;
            print!("{}", fleet::table(&f));
            let o = fleet::write(&f, &out)?;
            println!("{}", o.html.display());
            Ok(u8::from(f.any_failed()))
        }
    }
}
