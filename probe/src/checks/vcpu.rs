//! Honest vCPUs: the same fixed CPU-bound kernel on one thread, then on every vCPU at once;
//! and the wake-up latency of timed sleeps (as cyclictest measures it).
//!
//! Both are live-only measurements. The arithmetic ([`throughput_ratio`], [`judge_ratio`],
//! [`judge_wakeup`]) is separate from the sampling so tests feed it recorded figures.

use hdrhistogram::Histogram;
use meshbench_schema::{Finding, Verdict};
use std::hint::black_box;
use std::time::{Duration, Instant};

use super::{below, finding, fmt_num, num, skip, with_reason, Check, Ctx, NOT_LIVE};
use crate::profile::Thresholds;

pub struct Vcpu;
pub struct Wakeup;

const VCPU_ID: &str = "cpu.vcpu";
const VCPU_TITLE: &str = "Honest vCPUs";
const VCPU_REMEDY: &str =
    "vCPUs are shared or oversold: use an instance type with dedicated vCPUs (CPU pinning) or fewer sidecars per node";
const WAKE_ID: &str = "cpu.wakeup";
const WAKE_TITLE: &str = "Timer wake-up latency";
const WAKE_REMEDY: &str =
    "late wake-ups add tail latency to every sidecar hop: use a dedicated-vCPU instance, disable deep C-states on the host, check steal";

/// One unit of the fixed CPU-bound kernel (integer mixing, no memory traffic).
fn work_unit(seed: u64) -> u64 {
    let mut x = seed | 1;
    for _ in 0..20_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x = x.wrapping_mul(0x2545_f491_4f6c_dd1d);
    }
    x
}

/// Units of work per second on the calling thread over `window`.
fn rate_for(window: Duration, seed: u64) -> f64 {
    let start = Instant::now();
    let mut units = 0u64;
    let mut acc = seed;
    while start.elapsed() < window {
        acc = black_box(work_unit(black_box(acc)));
        units += 1;
    }
    black_box(acc);
    units as f64 / start.elapsed().as_secs_f64()
}

/// Per-thread throughput with all vCPUs busy relative to one busy vCPU: (mean, min).
pub fn throughput_ratio(single: f64, parallel: &[f64]) -> Option<(f64, f64)> {
    if single.is_nan() || single <= 0.0 || parallel.is_empty() {
        return None;
    }
    let mean = parallel.iter().sum::<f64>() / parallel.len() as f64 / single;
    let min = parallel.iter().copied().fold(f64::INFINITY, f64::min) / single;
    Some((mean, min))
}

/// Finding for measured throughputs. The verdict follows the mean ratio.
pub fn judge_ratio(single: f64, parallel: &[f64], t: &Thresholds) -> Finding {
    let th = vcpu_thresholds(t);
    let Some((mean, min)) = throughput_ratio(single, parallel) else {
        return skip(VCPU_ID, VCPU_TITLE, th, "no throughput was measured");
    };
    let verdict = ratio_verdict(mean, t);
    with_reason(
        finding(
            VCPU_ID,
            VCPU_TITLE,
            verdict,
            format!(
                "ratio {} (min {}) on {} vCPUs",
                fmt_num(mean),
                fmt_num(min),
                parallel.len()
            ),
            th,
            VCPU_REMEDY,
            vec![
                num("vcpu_ratio", mean, ""),
                num("vcpu_ratio_min", min, ""),
                num("vcpus", parallel.len() as f64, ""),
                num("single_thread_units_per_s", single, "1/s"),
            ],
        ),
        "per-thread throughput with every vCPU busy / with one busy",
    )
}

fn vcpu_thresholds(t: &Thresholds) -> String {
    format!("warn < {}, fail < {}", t.vcpu.warn_below, t.vcpu.fail_below)
}

impl Check for Vcpu {
    describe!(VCPU_ID, VCPU_TITLE, vcpu_thresholds);
    fn live_only(&self) -> bool {
        true
    }
    fn run(&self, ctx: &Ctx) -> Vec<Finding> {
        if !ctx.host.is_live() {
            return vec![skip(
                VCPU_ID,
                VCPU_TITLE,
                self.thresholds(ctx.t()),
                NOT_LIVE,
            )];
        }
        let window = if ctx.quick {
            Duration::from_millis(200)
        } else {
            Duration::from_millis(500)
        };
        let n = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let single = rate_for(window, 1);
        let parallel: Vec<f64> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..n)
                .map(|i| s.spawn(move || rate_for(window, i as u64 + 7)))
                .collect();
            hs.into_iter().filter_map(|h| h.join().ok()).collect()
        });
        vec![judge_ratio(single, &parallel, ctx.t())]
    }
}

/// Finding for a histogram of sleep overshoots in microseconds.
pub fn judge_wakeup(h: &Histogram<u64>, t: &Thresholds) -> Finding {
    let th = wake_thresholds(t);
    if h.is_empty() {
        return skip(WAKE_ID, WAKE_TITLE, th, "no sleeps were measured");
    }
    let p50 = h.value_at_quantile(0.50) as f64;
    let p99 = h.value_at_quantile(0.99) as f64;
    let max = h.max() as f64;
    let verdict = super::above(p99, t.wakeup.warn_p99_us, t.wakeup.fail_p99_us);
    with_reason(
        finding(
            WAKE_ID,
            WAKE_TITLE,
            verdict,
            format!("p99 {} µs (p50 {}, max {})", p99, p50, max),
            th,
            WAKE_REMEDY,
            vec![
                num("wakeup_p50_us", p50, "us"),
                num("wakeup_p99_us", p99, "us"),
                num("wakeup_max_us", max, "us"),
                num("wakeup_samples", h.len() as f64, ""),
            ],
        ),
        format!("overshoot of {} timed 1 ms sleeps", h.len()),
    )
}

fn wake_thresholds(t: &Thresholds) -> String {
    format!(
        "p99 warn > {} µs, fail > {} µs",
        t.wakeup.warn_p99_us, t.wakeup.fail_p99_us
    )
}

impl Check for Wakeup {
    describe!(WAKE_ID, WAKE_TITLE, wake_thresholds);
    fn live_only(&self) -> bool {
        true
    }
    fn run(&self, ctx: &Ctx) -> Vec<Finding> {
        let th = self.thresholds(ctx.t());
        if !ctx.host.is_live() {
            return vec![skip(WAKE_ID, WAKE_TITLE, th, NOT_LIVE)];
        }
        // at most `loops` sleeps and at most `budget` of wall time, even on a bad node
        let (loops, budget) = if ctx.quick {
            (250, Duration::from_millis(500))
        } else {
            (1000, Duration::from_secs(2))
        };
        let started = Instant::now();
        let interval = Duration::from_millis(1);
        let mut h = match Histogram::<u64>::new_with_bounds(1, 10_000_000, 3) {
            Ok(h) => h,
            Err(e) => return vec![skip(WAKE_ID, WAKE_TITLE, th, e.to_string())],
        };
        for _ in 0..loops {
            let t0 = Instant::now();
            std::thread::sleep(interval);
            let over = t0.elapsed().saturating_sub(interval).as_micros() as u64;
            h.saturating_record(over.max(1));
            if started.elapsed() >= budget {
                break;
            }
        }
        vec![judge_wakeup(&h, ctx.t())]
    }
}

/// The verdict of a mean per-thread throughput ratio.
pub fn ratio_verdict(ratio: f64, t: &Thresholds) -> Verdict {
    below(ratio, t.vcpu.warn_below, t.vcpu.fail_below)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratio_arithmetic() {
        let (mean, min) = throughput_ratio(100.0, &[100.0, 80.0]).unwrap();
        assert!((mean - 0.9).abs() < 1e-9);
        assert!((min - 0.8).abs() < 1e-9);
        assert!(throughput_ratio(0.0, &[1.0]).is_none());
        assert!(throughput_ratio(1.0, &[]).is_none());
    }

    #[test]
    fn recorded_throughputs_give_each_verdict() {
        let t = Thresholds::default();
        assert_eq!(judge_ratio(100.0, &[99.0, 98.0], &t).verdict, Verdict::Pass);
        assert_eq!(judge_ratio(100.0, &[85.0, 80.0], &t).verdict, Verdict::Warn);
        let f = judge_ratio(100.0, &[50.0, 52.0], &t);
        assert_eq!(f.verdict, Verdict::Fail);
        assert!(f.remedy.is_some());
        assert_eq!(judge_ratio(0.0, &[], &t).verdict, Verdict::Skip);
        assert_eq!(ratio_verdict(0.95, &t), Verdict::Pass);
    }

    #[test]
    fn recorded_wakeups_give_each_verdict() {
        let t = Thresholds::default();
        let hist = |values: &[u64]| {
            let mut h = Histogram::<u64>::new_with_bounds(1, 10_000_000, 3).unwrap();
            for v in values {
                h.record(*v).unwrap();
            }
            h
        };
        // 100 samples: p99 is the 99th smallest.
        let mut v = vec![60u64; 98];
        v.extend([70, 5000]);
        assert_eq!(judge_wakeup(&hist(&v), &t).verdict, Verdict::Pass);
        let mut v = vec![60u64; 97];
        v.extend([500, 500, 500]);
        assert_eq!(judge_wakeup(&hist(&v), &t).verdict, Verdict::Warn);
        let mut v = vec![60u64; 90];
        v.extend([3000; 10]);
        let f = judge_wakeup(&hist(&v), &t);
        assert_eq!(f.verdict, Verdict::Fail);
        assert_eq!(judge_wakeup(&hist(&[]), &t).verdict, Verdict::Skip);
    }

    #[test]
    fn kernel_does_work() {
        assert_ne!(work_unit(1), work_unit(2));
        assert!(rate_for(Duration::from_millis(20), 3) > 0.0);
    }
}
