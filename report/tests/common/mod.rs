//! Test inputs built from scratch: RunResult values plus per-cell interval logs written
//! with hdrhistogram's interval-log writer and V2 deflate serializer, exactly as the
//! contract describes (1-second intervals, tags "corrected"/"uncorrected", µs).
//! Shared by the integration tests and by `examples/gen_run.rs` (bench/report.sh).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::Histogram;
use meshbench_schema::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[derive(Clone, Debug)]
pub struct CellSpec {
    pub id: String,
    pub cpu_millis: Option<u64>,
    pub log: String,
    pub seconds: usize,
    pub rate: u64,
    /// Median service time, µs.
    pub median_us: f64,
    /// Multiplies every latency (a regression of 30 % is 1.3).
    pub scale: f64,
    pub seed: u64,
    pub errors: ErrorCounts,
    /// (subset, weight); the observed split follows the weights.
    pub subsets: Vec<(String, f64)>,
    pub split_passed: bool,
    pub throttled: bool,
    pub cpu_applied: bool,
    /// Second-to-second noise: each second's latencies are scaled by exp(jitter * N(0,1)).
    pub jitter: f64,
    /// Median send lateness of the generator, µs (0: closed loop, no send_lag tag).
    pub lag_us: f64,
    pub connections: u32,
    /// The embedded mesh's mode ("baseline", "server", "both"), when set.
    pub mesh_mode: Option<String>,
    /// A capacity search (see [`simulate_search`]); run.json carries it as given.
    pub search: Option<search::SearchResult>,
    /// A rate profile: each second gets the requests the profile offers in it
    /// (`Curve::tickets_in_second`) and latency grows with that rate; the sidecar's CPU
    /// and throttling per second follow it.
    pub profile: Option<profile::RateProfile>,
    /// The sidecar's CPU per request, µs (0: a flat 1 s of CPU over the cell).
    pub sidecar_us_per_request: f64,
    /// Failed requests in each second, written as the log's `failed` tag and counted as
    /// HTTP 5xx in run.json (empty: no `failed` tag, like a log of an older loadgen).
    pub failed_per_second: Vec<u64>,
}

impl CellSpec {
    pub fn new(id: &str, cpu_millis: Option<u64>, log: &str) -> Self {
        CellSpec {
            id: id.to_string(),
            cpu_millis,
            log: log.to_string(),
            seconds: 30,
            rate: 200,
            median_us: 2000.0,
            scale: 1.0,
            seed: 1,
            errors: ErrorCounts::default(),
            subsets: vec![],
            split_passed: true,
            throttled: false,
            cpu_applied: true,
            jitter: 0.0,
            lag_us: 15.0,
            connections: 8,
            mesh_mode: None,
            search: None,
            profile: None,
            sidecar_us_per_request: 0.0,
            failed_per_second: vec![],
        }
    }

    /// Requests (and the latency factor) of second `i` of the window.
    fn second_load(&self, i: usize) -> (u64, f64) {
        match &self.profile {
            Some(p) => {
                let curve = p.curve();
                let peak = p.peak_rate().max(1.0);
                let r = curve.offered(i as f64, i as f64 + 1.0);
                // latency grows with the offered rate: 4x at the peak
                (curve.tickets_in_second(i as u64), (1.0 + r / peak).powi(2))
            }
            None => (self.rate, 1.0),
        }
    }
}

/// A capacity search as loadgen runs it (bracket by doubling from `min`, bisect at the
/// geometric midpoint to `resolution`, confirm the last pass), against a target that
/// holds the SLO (`p99<10ms`, `errors<0.1%`) up to `capacity` req/s and fails above it.
/// Each step: p99 from 2 ms up to 8 ms at the capacity, 25 ms beyond; sidecar 0.4 vCPU
/// per 1000 req/s.
pub fn simulate_search(
    min: f64,
    max: f64,
    capacity: f64,
    resolution: f64,
    max_steps: usize,
) -> search::SearchResult {
    use search::{SearchOutcome as O, SearchPhase as P};
    let mut steps: Vec<search::SearchStep> = Vec::new();
    let (mut pass, mut fail): (Option<f64>, Option<f64>) = (None, None);
    let mut passes: Vec<f64> = Vec::new();
    let narrow = |pass: f64, fail: f64| {
        if fail / pass - 1.0 <= resolution {
            (P::Confirm, pass)
        } else {
            (P::Bisect, (pass * fail).sqrt())
        }
    };
    let mut next = (P::Bracket, min);
    let outcome = loop {
        if steps.len() >= max_steps {
            break O::MaxSteps;
        }
        let (phase, rate) = next;
        let passed = rate <= capacity;
        let p99 = if passed {
            2000.0 + 6000.0 * rate / capacity
        } else {
            25_000.0
        };
        let cores = rate * 0.4 / 1000.0;
        steps.push(search::SearchStep {
            index: steps.len() as u32,
            phase,
            rate,
            started_s: steps.len() as f64 * 2.5,
            duration_s: 2.0,
            requests: (rate * 2.0) as u64,
            achieved_rate: rate,
            unsent: 0,
            errors: 0,
            latency: Percentiles {
                count: (rate * 2.0) as u64,
                min_us: 300.0,
                mean_us: p99 / 3.0,
                stdev_us: p99 / 6.0,
                p50_us: p99 / 4.0,
                p90_us: p99 / 2.0,
                p99_us: p99,
                p999_us: p99 * 1.5,
                p9999_us: p99 * 2.0,
                max_us: p99 * 2.5,
            },
            send_lag_p99_us: Some(20.0),
            generator_trusted: true,
            sidecar_cores: Some(cores),
            throttled_share: Some(if passed { 0.01 } else { 0.4 }),
            vcpu_per_1k_rps: Some(0.4),
            passed,
            reasons: if passed {
                vec![]
            } else {
                vec![format!(
                    "measured p99 {:.1} ms: violates `p99<10ms`",
                    p99 / 1000.0
                )]
            },
        });
        next = match (phase, passed) {
            (P::Confirm, true) => {
                break if fail.is_none() {
                    O::AtMax
                } else {
                    O::Converged
                }
            }
            (P::Confirm, false) => {
                fail = Some(rate);
                passes.retain(|&p| p < rate);
                pass = passes.iter().copied().reduce(f64::max);
                match pass {
                    None => break O::BelowMin,
                    Some(p) => narrow(p, rate),
                }
            }
            (_, true) => {
                pass = Some(rate);
                passes.push(rate);
                match fail {
                    Some(f) => narrow(rate, f),
                    None if rate >= max => (P::Confirm, rate),
                    None => (P::Bracket, (rate * 2.0).min(max)),
                }
            }
            (_, false) => {
                fail = Some(rate);
                match pass {
                    None => break O::BelowMin,
                    Some(p) => narrow(p, rate),
                }
            }
        };
    };
    let capacity_rps = match outcome {
        O::Converged | O::AtMax | O::MaxSteps => pass,
        _ => None,
    };
    search::SearchResult {
        slo: vec!["p99<10ms".into(), "errors<0.1%".into()],
        min_rps: min,
        max_rps: max,
        resolution,
        step_duration_s: 2.0,
        outcome,
        capacity_rps,
        last_pass_rps: pass,
        first_fail_rps: fail,
        vcpu_per_1k_rps: (outcome != O::MaxSteps && capacity_rps.is_some()).then_some(0.4),
        hlog: None,
        steps,
    }
}

fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).unwrap()
}

/// A log-normal sample around `median` (Box-Muller on two uniforms).
fn sample(rng: &mut StdRng, median: f64, sigma: f64) -> f64 {
    let u1: f64 = rng.random::<f64>().max(1e-12);
    let u2: f64 = rng.random();
    let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
    median * (sigma * z).exp()
}

pub fn percentiles(h: &Histogram<u64>) -> Percentiles {
    if h.is_empty() {
        return Percentiles::default();
    }
    let q = |q: f64| h.value_at_quantile(q) as f64;
    Percentiles {
        count: h.len(),
        min_us: h.min() as f64,
        mean_us: h.mean(),
        stdev_us: h.stdev(),
        p50_us: q(0.5),
        p90_us: q(0.9),
        p99_us: q(0.99),
        p999_us: q(0.999),
        p9999_us: q(0.9999),
        max_us: h.max() as f64,
    }
}

/// Per-second histograms (corrected, uncorrected) of one cell.
pub fn cell_seconds(spec: &CellSpec) -> Vec<(Histogram<u64>, Histogram<u64>)> {
    let mut rng = StdRng::seed_from_u64(spec.seed);
    let mut out = Vec::with_capacity(spec.seconds);
    for i in 0..spec.seconds {
        let (n, load_scale) = spec.second_load(i);
        let mut c = new_hist();
        let mut u = new_hist();
        let second_scale = if spec.jitter > 0.0 {
            sample(&mut rng, 1.0, spec.jitter)
        } else {
            1.0
        };
        for _ in 0..n {
            let service =
                sample(&mut rng, spec.median_us, 0.45) * spec.scale * second_scale * load_scale;
            // now and then a request waits behind a stall: the corrected time grows
            let queued = if rng.random::<f64>() < 0.02 {
                sample(&mut rng, spec.median_us * 2.0, 0.5) * spec.scale * second_scale
            } else {
                0.0
            };
            let s = service.max(1.0) as u64;
            u.record(s).unwrap();
            c.record(s + queued as u64).unwrap();
        }
        out.push((c, u));
    }
    out
}

/// Per-second send-lag histograms of one cell (empty when `lag_us` is 0).
pub fn lag_seconds(spec: &CellSpec) -> Vec<Histogram<u64>> {
    if spec.lag_us <= 0.0 {
        return vec![];
    }
    let mut rng = StdRng::seed_from_u64(spec.seed ^ 0x1a9);
    (0..spec.seconds)
        .map(|_| {
            let mut h = new_hist();
            for _ in 0..spec.rate {
                h.record(sample(&mut rng, spec.lag_us, 0.6).max(1.0) as u64)
                    .unwrap();
            }
            h
        })
        .collect()
}

/// Write an interval log of (corrected, uncorrected) per-second histograms.
pub fn write_hlog(path: &Path, seconds: &[(Histogram<u64>, Histogram<u64>)], base_s: u64) {
    write_hlog_with_lag(path, seconds, &[], &[], base_s)
}

/// [`write_hlog`], plus a `send_lag` interval per second from `lag` and a `failed` one
/// from `failed`.
pub fn write_hlog_with_lag(
    path: &Path,
    seconds: &[(Histogram<u64>, Histogram<u64>)],
    lag: &[Histogram<u64>],
    failed: &[Histogram<u64>],
    base_s: u64,
) {
    let mut buf = Vec::new();
    {
        let mut ser = V2DeflateSerializer::new();
        let mut w = IntervalLogWriterBuilder::new()
            .add_comment("meshbench test fixture")
            .with_base_time(UNIX_EPOCH + Duration::from_secs(base_s))
            .with_start_time(UNIX_EPOCH + Duration::from_secs(base_s))
            .begin_log_with(&mut buf, &mut ser)
            .unwrap();
        for (i, (c, u)) in seconds.iter().enumerate() {
            let start = Duration::from_secs(i as u64);
            w.write_histogram(
                c,
                start,
                Duration::from_secs(1),
                Tag::new(HLOG_TAG_CORRECTED),
            )
            .unwrap();
            w.write_histogram(
                u,
                start,
                Duration::from_secs(1),
                Tag::new(HLOG_TAG_UNCORRECTED),
            )
            .unwrap();
            if let Some(l) = lag.get(i) {
                w.write_histogram(l, start, Duration::from_secs(1), Tag::new("send_lag"))
                    .unwrap();
            }
            if let Some(f) = failed.get(i) {
                w.write_histogram(f, start, Duration::from_secs(1), Tag::new("failed"))
                    .unwrap();
            }
        }
    }
    std::fs::write(path, buf).unwrap();
}

pub fn cell(dir: &Path, index: usize, spec: &CellSpec) -> CellResult {
    let seconds = cell_seconds(spec);
    let lags = lag_seconds(spec);
    let failed: Vec<Histogram<u64>> = spec
        .failed_per_second
        .iter()
        .map(|&n| {
            let mut h = new_hist();
            h.record_n(spec.median_us as u64, n).unwrap();
            h
        })
        .collect();
    let hlog = format!("cell-{index}.hlog");
    write_hlog_with_lag(&dir.join(&hlog), &seconds, &lags, &failed, 1_790_000_000);
    let mut lag_total = new_hist();
    for l in &lags {
        lag_total.add(l).unwrap();
    }
    let lag_limit = 0.1 * 1e6 / spec.rate as f64;
    let send_lag = (!lags.is_empty()).then(|| percentiles(&lag_total));
    let mut c = new_hist();
    let mut u = new_hist();
    for (a, b) in &seconds {
        c.add(a).unwrap();
        u.add(b).unwrap();
    }
    let ok = c.len();
    let mut errors = spec.errors;
    errors.http_5xx += spec.failed_per_second.iter().sum::<u64>();
    let requests = ok + errors.total();
    let total_w: f64 = spec.subsets.iter().map(|s| s.1).sum();
    let mut assigned = 0;
    let subsets: Vec<SubsetResult> = spec
        .subsets
        .iter()
        .enumerate()
        .map(|(i, (name, w))| {
            let share = w / total_w;
            // a failing split: the first subset gets 15 % less than its weight
            let observed = if spec.split_passed || i > 0 {
                share
            } else {
                share * 0.85
            };
            let count = if i + 1 == spec.subsets.len() {
                ok - assigned
            } else {
                (ok as f64 * observed) as u64
            };
            assigned += count;
            SubsetResult {
                name: name.clone(),
                count,
                share: count as f64 / ok as f64,
                expected_share: Some(share),
                latency: Latency {
                    corrected: percentiles(&c),
                    uncorrected: percentiles(&u),
                },
            }
        })
        .collect();
    let mut checks = Vec::new();
    if !subsets.is_empty() {
        checks.push(CheckResult {
            name: "canary_split".into(),
            status: if spec.split_passed {
                CheckStatus::Passed
            } else {
                CheckStatus::Failed
            },
            summary: format!(
                "observed {} against weights {}",
                subsets
                    .iter()
                    .map(|s| format!("{}={:.3}", s.name, s.share))
                    .collect::<Vec<_>>()
                    .join(" "),
                spec.subsets
                    .iter()
                    .map(|s| format!("{}={}", s.0, s.1))
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
            details: serde_json::json!({"p_value": if spec.split_passed {0.4} else {1e-9}}),
        });
    }
    let mut status = BTreeMap::new();
    status.insert("2xx".to_string(), ok);
    CellResult {
        id: spec.id.clone(),
        settings: CellSettings {
            sidecar_cpu: spec.cpu_millis.map(|m| format!("{m}m")),
            sidecar_cpu_millis: spec.cpu_millis,
            cpu_limit_applied: spec.cpu_millis.is_some() && spec.cpu_applied,
            cpu_limit_note: if spec.cpu_applied {
                None
            } else {
                Some("--no-cpu-limits".into())
            },
            sidecar_memory_bytes: None,
            access_log: Some(spec.log.clone()),
            rate: Some(match &spec.profile {
                Some(p) => p.curve().count(p.duration_s()) / p.duration_s(),
                None => spec.rate as f64,
            }),
            connections: spec.connections,
            mesh_mode: spec.mesh_mode.clone(),
            profile: spec.profile.clone(),
            ..Default::default()
        },
        mode: LoadMode::Open,
        protocol: "http1".into(),
        duration_s: spec.seconds as f64,
        requests,
        ok,
        achieved_rate: if spec.seconds == 0 {
            0.0
        } else {
            requests as f64 / spec.seconds as f64
        },
        errors,
        status_classes: status,
        status_latency: Default::default(),
        latency: Latency {
            corrected: percentiles(&c),
            uncorrected: percentiles(&u),
        },
        subsets,
        hlog: Some(hlog),
        sidecar: Some(SidecarStats {
            cpu_stat: Some(CpuStat {
                usage_usec: if spec.sidecar_us_per_request > 0.0 {
                    (ok as f64 * spec.sidecar_us_per_request) as u64
                } else {
                    1_000_000
                },
                nr_periods: 300,
                nr_throttled: if spec.throttled { 40 } else { 0 },
                throttled_usec: if spec.throttled { 400_000 } else { 0 },
            }),
            memory_peak_bytes: Some(40 << 20),
            access_log_lines: Some(ok),
            throttled_usec_per_second: if spec.throttled {
                (0..spec.seconds as u64)
                    .map(|i| 5_000 + (i * 7919) % 20_000)
                    .collect()
            } else if spec.profile.is_some() {
                profile_sidecar(spec).1
            } else {
                vec![]
            },
            cpu_usec_per_second: if spec.profile.is_some() {
                profile_sidecar(spec).0
            } else {
                vec![]
            },
            ..Default::default()
        }),
        sidecars: vec![],
        driver: None,
        failed: None,
        worker_start: None,
        parts_hlog: None,
        mesh_cost: None,
        generator: Some(GeneratorStats {
            idle: "hybrid".into(),
            threads: 1,
            cpu_s: 0.4 * spec.seconds as f64,
            cpu_cores: 0.4,
            send_lag,
            lag_limit_us: Some(lag_limit),
            trusted: send_lag.is_none_or(|l| l.p99_us <= lag_limit),
            ..Default::default()
        }),
        checks,
        interrupted: false,
        search: spec.search.clone(),
    }
}

/// A profile cell's sidecar per second: (CPU µs, throttled µs). CPU follows the offered
/// rate (`sidecar_us_per_request`, default 400 µs: 0.4 cores per 1000 req/s); above the
/// cell's CPU limit the sidecar is throttled for the share it lacks.
pub fn profile_sidecar(spec: &CellSpec) -> (Vec<u64>, Vec<u64>) {
    let Some(p) = &spec.profile else {
        return (vec![], vec![]);
    };
    let curve = p.curve();
    let per_req = if spec.sidecar_us_per_request > 0.0 {
        spec.sidecar_us_per_request
    } else {
        400.0
    };
    let limit_us = spec.cpu_millis.map(|m| m as f64 * 1000.0);
    (0..curve.end_s().ceil() as usize)
        .map(|i| {
            let want = curve.offered(i as f64, i as f64 + 1.0) * per_req;
            match limit_us {
                Some(l) if want > l => (l as u64, ((want - l) / want * 1e6) as u64),
                _ => (want as u64, 0),
            }
        })
        .unzip()
}

/// Write a whole run (run.json + one .hlog per cell) into `dir`.
pub fn write_run(dir: &Path, scenario: &str, specs: &[CellSpec]) -> RunResult {
    std::fs::create_dir_all(dir).unwrap();
    let cells: Vec<CellResult> = specs
        .iter()
        .enumerate()
        .map(|(i, s)| cell(dir, i, s))
        .collect();
    let run = RunResult {
        schema_version: RUN_SCHEMA_VERSION,
        tool: ToolInfo::new("loadgen", "0.1.0"),
        scenario: scenario.into(),
        scenario_file: Some(format!("scenarios/{scenario}.toml")),
        started_at: "2026-11-27T21:00:00Z".into(),
        finished_at: Some("2026-11-27T21:05:00Z".into()),
        interrupted: false,
        plan: serde_json::json!({"rate": 200}),
        host: HostFacts {
            hostname: "bench-1".into(),
            kernel: "6.1.0".into(),
            cpus: 2,
            cpu_model: "test".into(),
            cgroup_version: Some("v1".into()),
            clock: None,
        },
        slo: vec![],
        warnings: vec![],
        cells,
        checks: vec![CheckResult {
            name: "strict_mtls".into(),
            status: CheckStatus::Passed,
            summary: "plaintext connection refused by the sidecar".into(),
            details: serde_json::Value::Null,
        }],
        planned_cells: specs.iter().map(|s| s.id.clone()).collect(),
        planned_checks: vec!["strict_mtls".into()],
        driver: None,
        worker: None,
        merged_from: vec![],
    };
    write_json_atomic(&dir.join(RUN_FILE), &run).unwrap();
    run
}

/// The canonical matrix: CPU limits x access-log modes, with subsets, throttling on the
/// tightest limit, and errors in one cell. `cpus` x `logs` cells.
pub fn matrix(cpus: &[Option<u64>], logs: &[&str]) -> Vec<CellSpec> {
    let mut v = Vec::new();
    for (i, &cpu) in cpus.iter().enumerate() {
        for (j, log) in logs.iter().enumerate() {
            let id = format!(
                "cpu={},log={log}",
                cpu.map(|m| format!("{m}m"))
                    .unwrap_or_else(|| "none".into())
            );
            let mut s = CellSpec::new(&id, cpu, log);
            s.seed = (i * 10 + j) as u64 + 1;
            // tighter limits and synchronous logs cost latency
            let cpu_factor = match cpu {
                Some(m) => 1.0 + 200.0 / m as f64,
                None => 1.0,
            };
            let log_factor = match *log {
                "sync" => 1.6,
                "buffered" => 1.15,
                _ => 1.0,
            };
            s.median_us = 1500.0 * cpu_factor * log_factor;
            s.subsets = vec![("v1".into(), 90.0), ("v2".into(), 10.0)];
            s.throttled = cpu.is_some_and(|m| m <= 200);
            if i == 0 && j + 1 == logs.len() {
                s.errors = ErrorCounts {
                    request_timeout: 12,
                    http_5xx: 5,
                    ..Default::default()
                };
            }
            v.push(s);
        }
    }
    v
}
