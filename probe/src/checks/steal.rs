//! CPU steal from two /proc/stat snapshots, overall and per vCPU.
//!
//! Sampling and arithmetic are separate: [`steal_between`] takes two parsed snapshots.
//! On a live root the first snapshot is taken when the run starts and the second once the
//! sample window (`--sample`) has passed and the other checks are done, so the window
//! covers the run. On a fixture root the pair is `/proc/stat` (first) and
//! `/proc/stat.next` (second, taken the sample window later); a fixture without
//! `/proc/stat.next` is measured since boot.

use meshbench_schema::{Finding, Verdict};
use procfs_core::{CpuTime, ExplicitSystemInfo, FromReadSI, KernelStats};
use std::time::Instant;

use super::{above, finding, fmt_num, num, skip, with_reason, Check, Ctx};
use crate::host::HostError;
use crate::profile::Thresholds;

pub struct Steal;

const ID: &str = "cpu.steal";
const TITLE: &str = "CPU steal";
const REMEDY: &str =
    "move to a less contended host or a dedicated-vCPU instance type; ask the provider about oversubscription";

/// Tick counters of one CPU line of /proc/stat.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ticks {
    pub busy: u64,
    pub idle: u64,
    pub steal: u64,
}

impl Ticks {
    fn from_cpu(c: &CpuTime) -> Ticks {
        // guest and guest_nice are already counted in user and nice: not added again.
        Ticks {
            busy: sum(&[
                c.user,
                c.nice,
                c.system,
                c.irq.unwrap_or(0),
                c.softirq.unwrap_or(0),
            ]),
            idle: sum(&[c.idle, c.iowait.unwrap_or(0)]),
            steal: c.steal.unwrap_or(0),
        }
    }
    fn total(&self) -> u64 {
        sum(&[self.busy, self.idle, self.steal])
    }
}

/// Counters as read from a file: a sum saturates instead of overflowing.
fn sum(ticks: &[u64]) -> u64 {
    ticks.iter().fold(0, |a, &b| a.saturating_add(b))
}

/// One /proc/stat snapshot reduced to what steal needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub total: Ticks,
    pub cpus: Vec<Ticks>,
}

/// Parse /proc/stat text (via procfs-core).
pub fn parse_stat(path: &str, text: &str) -> Result<Snapshot, HostError> {
    let si = ExplicitSystemInfo {
        boot_time_secs: 0,
        ticks_per_second: 100,
        page_size: 4096,
        is_little_endian: true,
    };
    let ks = KernelStats::from_read(text.as_bytes(), &si)
        .map_err(|e| HostError::parse(path, e.to_string()))?;
    Ok(Snapshot {
        total: Ticks::from_cpu(&ks.total),
        cpus: ks.cpu_time.iter().map(Ticks::from_cpu).collect(),
    })
}

/// Steal over a window.
#[derive(Debug, Clone, PartialEq)]
pub struct StealSample {
    /// Percent of all CPU time in the window that was stolen.
    pub overall_pct: f64,
    /// Per vCPU, in /proc/stat order.
    pub per_cpu_pct: Vec<f64>,
    /// Ticks elapsed over all CPUs.
    pub ticks: u64,
}

impl StealSample {
    pub fn worst_cpu(&self) -> Option<(usize, f64)> {
        self.per_cpu_pct
            .iter()
            .copied()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(&b.1))
    }
}

fn pct(a: &Ticks, b: &Ticks) -> Result<f64, String> {
    if b.steal < a.steal || b.total() < a.total() {
        return Err("counters went backwards between the snapshots".into());
    }
    let total = b.total() - a.total();
    if total == 0 {
        return Err("no CPU time elapsed between the snapshots".into());
    }
    Ok((b.steal - a.steal) as f64 * 100.0 / total as f64)
}

/// The steal arithmetic: percent of CPU time stolen between snapshot `a` and `b`.
pub fn steal_between(a: &Snapshot, b: &Snapshot) -> Result<StealSample, String> {
    if a.cpus.len() != b.cpus.len() {
        return Err(format!(
            "the number of CPUs changed between the snapshots ({} -> {})",
            a.cpus.len(),
            b.cpus.len()
        ));
    }
    let overall_pct = pct(&a.total, &b.total)?;
    let per_cpu_pct = a
        .cpus
        .iter()
        .zip(&b.cpus)
        .map(|(x, y)| pct(x, y).unwrap_or(0.0))
        .collect();
    Ok(StealSample {
        overall_pct,
        per_cpu_pct,
        ticks: b.total.total() - a.total.total(),
    })
}

/// Verdict and finding for a measured sample. The verdict follows the overall steal; a
/// single vCPU above the fail threshold makes it at least a warning.
pub fn judge(s: &StealSample, t: &Thresholds, window: &str) -> Finding {
    let th = &t.steal;
    let mut verdict = above(s.overall_pct, th.warn_pct, th.fail_pct);
    let worst = s.worst_cpu();
    if let Some((_, w)) = worst {
        if w > th.fail_pct && verdict == Verdict::Pass {
            verdict = Verdict::Warn;
        }
    }
    let mut ms = vec![num("steal_pct", s.overall_pct, "%")];
    for (i, p) in s.per_cpu_pct.iter().enumerate() {
        ms.push(num(&format!("cpu{i}_steal_pct"), *p, "%"));
    }
    let value = match worst {
        Some((i, w)) => format!(
            "{} % (worst vCPU cpu{i}: {} %)",
            fmt_num(s.overall_pct),
            fmt_num(w)
        ),
        None => format!("{} %", fmt_num(s.overall_pct)),
    };
    with_reason(
        finding(ID, TITLE, verdict, value, thresholds(t), REMEDY, ms),
        window.to_string(),
    )
}

fn thresholds(t: &Thresholds) -> String {
    format!(
        "warn > {} %, fail > {} %",
        t.steal.warn_pct, t.steal.fail_pct
    )
}

impl Check for Steal {
    describe!(ID, TITLE, thresholds);
    fn run(&self, ctx: &Ctx) -> Vec<Finding> {
        vec![run(ctx)]
    }
}

fn run(ctx: &Ctx) -> Finding {
    measure(ctx).unwrap_or_else(|e| skip(ID, TITLE, thresholds(ctx.t()), e))
}

/// One /proc/stat snapshot read from `path` under the root.
fn snapshot(ctx: &Ctx, path: &str) -> Result<Snapshot, String> {
    let text = ctx.host.read(path).map_err(|e| e.to_string())?;
    parse_stat(path, &text).map_err(|e| e.to_string())
}

/// The finding, or why steal could not be measured.
fn measure(ctx: &Ctx) -> Result<Finding, String> {
    if ctx.host.is_live() {
        let (started, a) = match &ctx.stat_start {
            Some((t, first)) => (
                *t,
                parse_stat("/proc/stat", first.as_ref()?).map_err(|e| e.to_string())?,
            ),
            None => (Instant::now(), snapshot(ctx, "/proc/stat")?),
        };
        let elapsed = started.elapsed();
        if elapsed < ctx.sample {
            std::thread::sleep(ctx.sample - elapsed);
        }
        let window = started.elapsed();
        let b = snapshot(ctx, "/proc/stat")?;
        let s = steal_between(&a, &b)?;
        let window = format!("sampled over {:.1} s", window.as_secs_f64());
        return Ok(judge(&s, ctx.t(), &window));
    }
    let a = snapshot(ctx, "/proc/stat")?;
    if ctx.host.exists("/proc/stat.next") {
        let b = snapshot(ctx, "/proc/stat.next")?;
        let s = steal_between(&a, &b).map_err(|e| format!("/proc/stat.next: {e}"))?;
        Ok(judge(&s, ctx.t(), "between /proc/stat and /proc/stat.next"))
    } else {
        let boot = Snapshot {
            cpus: vec![Ticks::default(); a.cpus.len()],
            ..Default::default()
        };
        let s = steal_between(&boot, &a).map_err(|e| format!("/proc/stat: {e}"))?;
        Ok(judge(
            &s,
            ctx.t(),
            "since boot (the fixture has no /proc/stat.next)",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str = "intr 0\nctxt 1\nbtime 2\nprocesses 3\nprocs_running 1\nprocs_blocked 0\n";

    fn stat(lines: &[&str]) -> Snapshot {
        let text = format!("{}\n{HEAD}", lines.join("\n"));
        parse_stat("/proc/stat", &text).unwrap()
    }

    #[test]
    fn steal_is_stolen_ticks_over_all_ticks() {
        // 1000 ticks elapse per CPU; cpu0 loses 10, cpu1 loses 30 -> 40 / 2000 = 2 %.
        let a = stat(&[
            "cpu  200 0 100 1600 0 0 0 100 0 0",
            "cpu0 100 0 50 800 0 0 0 50 0 0",
            "cpu1 100 0 50 800 0 0 0 50 0 0",
        ]);
        let b = stat(&[
            "cpu  1100 0 200 2560 0 0 0 140 50 0",
            "cpu0 550 0 100 1290 0 0 0 60 25 0",
            "cpu1 550 0 100 1270 0 0 0 80 25 0",
        ]);
        let s = steal_between(&a, &b).unwrap();
        assert_eq!(s.ticks, 2000);
        assert!((s.overall_pct - 2.0).abs() < 1e-9, "{s:?}");
        assert!((s.per_cpu_pct[0] - 1.0).abs() < 1e-9);
        assert!((s.per_cpu_pct[1] - 3.0).abs() < 1e-9);
        assert_eq!(s.worst_cpu().map(|w| w.0), Some(1));
    }

    #[test]
    fn guest_time_is_not_counted_twice() {
        let a = stat(&["cpu  0 0 0 0 0 0 0 0 0 0", "cpu0 0 0 0 0 0 0 0 0 0 0"]);
        // 100 user ticks, of which 100 were guest: the total is 100, not 200.
        let b = stat(&["cpu  90 0 0 0 0 0 0 10 90 0", "cpu0 90 0 0 0 0 0 0 10 90 0"]);
        let s = steal_between(&a, &b).unwrap();
        assert!((s.overall_pct - 10.0).abs() < 1e-9, "{s:?}");
    }

    #[test]
    fn recorded_pairs_give_each_verdict() {
        let t = Thresholds::default();
        let a = stat(&[
            "cpu  0 0 0 0 0 0 0 0 0 0",
            "cpu0 0 0 0 0 0 0 0 0 0 0",
            "cpu1 0 0 0 0 0 0 0 0 0 0",
        ]);
        let mk = |s0: u64, s1: u64| {
            stat(&[
                &format!("cpu  400 0 0 {} 0 0 0 {} 0 0", 3600 - s0 - s1, s0 + s1),
                &format!("cpu0 200 0 0 {} 0 0 0 {s0} 0 0", 1800 - s0),
                &format!("cpu1 200 0 0 {} 0 0 0 {s1} 0 0", 1800 - s1),
            ])
        };
        // 0.1 % overall -> pass
        let f = judge(&steal_between(&a, &mk(2, 2)).unwrap(), &t, "w");
        assert_eq!(f.verdict, Verdict::Pass, "{f:?}");
        // 1 % overall -> warn
        let f = judge(&steal_between(&a, &mk(20, 20)).unwrap(), &t, "w");
        assert_eq!(f.verdict, Verdict::Warn, "{f:?}");
        assert!(f.remedy.is_some());
        // 5 % overall -> fail
        let f = judge(&steal_between(&a, &mk(100, 100)).unwrap(), &t, "w");
        assert_eq!(f.verdict, Verdict::Fail, "{f:?}");
        // overall 0.4 % but one vCPU at 0.8 %... still pass; one vCPU at 2.5 % -> warn
        let f = judge(&steal_between(&a, &mk(0, 14)).unwrap(), &t, "w");
        assert_eq!(f.verdict, Verdict::Pass, "{f:?}");
        let s = steal_between(&a, &mk(0, 0)).unwrap();
        let mut s2 = s.clone();
        s2.per_cpu_pct[1] = 2.5;
        assert_eq!(judge(&s2, &t, "w").verdict, Verdict::Warn);
        assert_eq!(f.measurements[0].name, "steal_pct");
        assert_eq!(f.measurements.len(), 3);
    }

    #[test]
    fn bad_pairs_are_errors_not_panics() {
        let a = stat(&["cpu  10 0 0 10 0 0 0 5 0 0", "cpu0 10 0 0 10 0 0 0 5 0 0"]);
        let e = steal_between(&a, &a).unwrap_err();
        assert!(e.contains("no CPU time"), "{e}");
        let b = stat(&["cpu  1 0 0 1 0 0 0 0 0 0", "cpu0 1 0 0 1 0 0 0 0 0 0"]);
        assert!(steal_between(&a, &b).unwrap_err().contains("backwards"));
        let c = stat(&[
            "cpu  20 0 0 20 0 0 0 5 0 0",
            "cpu0 10 0 0 10 0 0 0 5 0 0",
            "cpu1 10 0 0 10 0 0 0 0 0 0",
        ]);
        assert!(steal_between(&a, &c)
            .unwrap_err()
            .contains("number of CPUs"));
        assert!(parse_stat("/proc/stat", "garbage\n").is_err());
    }

    #[test]
    fn counters_near_the_top_of_u64_do_not_overflow() {
        let max = u64::MAX;
        let a = stat(&["cpu  0 0 0 0 0 0 0 0 0 0", "cpu0 0 0 0 0 0 0 0 0 0 0"]);
        let b = stat(&[
            &format!("cpu  {max} {max} 1 1 0 0 0 0 0 0"),
            &format!("cpu0 {max} {max} 1 1 0 0 0 0 0 0"),
        ]);
        let s = steal_between(&a, &b).unwrap();
        assert_eq!(s.overall_pct, 0.0);
    }
}
