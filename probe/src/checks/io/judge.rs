//! Turning measured I/O into findings: `disk.fsync`, `disk.randread`, `disk.randwrite`,
//! `disk.seqwrite`, each against the profile's thresholds. Pure: unit-tested on recorded
//! figures.

use super::{
    Engine, IoResults, RandResult, ETCD_WRITE, FSYNC_ID, FSYNC_TITLE, RANDREAD_ID, RANDREAD_TITLE,
    RANDWRITE_ID, RANDWRITE_TITLE, SEQWRITE_ID, SEQWRITE_TITLE,
};
use crate::checks::{above, below, finding, fmt_num, num, skip, with_reason};
use crate::profile::{Io, Thresholds};
use meshbench_schema::{Finding, Verdict};

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}
fn us(ns: u64) -> f64 {
    ns as f64 / 1e3
}

fn th_fsync(t: &Thresholds) -> String {
    format!(
        "p99 warn > {} ms, fail > {} ms",
        t.fsync.warn_p99_ms, t.fsync.fail_p99_ms
    )
}
fn th_iops(t: &crate::profile::Iops) -> String {
    format!("warn < {} IOPS, fail < {} IOPS", t.warn_below, t.fail_below)
}
fn th_seq(t: &Thresholds) -> String {
    format!(
        "warn < {} MB/s, fail < {} MB/s",
        t.seqwrite.warn_below_mbs, t.seqwrite.fail_below_mbs
    )
}

/// Findings for measured results.
pub fn judge(r: &IoResults, t: &Thresholds, cfg: &Io) -> Vec<Finding> {
    let mut out = vec![];
    out.push(match &r.fsync {
        Ok(f) => {
            let h = &f.hist;
            let (p50, p99, max) = (
                ms(h.value_at_quantile(0.5)),
                ms(h.value_at_quantile(0.99)),
                ms(h.max()),
            );
            with_reason(
                finding(
                    FSYNC_ID,
                    FSYNC_TITLE,
                    fsync_verdict(p99, t),
                    format!("p99 {} ms (p50 {}, max {})", fmt_num(p99), fmt_num(p50), fmt_num(max)),
                    th_fsync(t),
                    "etcd and access logs need fast flushes: use local NVMe/SSD or a provisioned-IOPS volume",
                    vec![
                        num("fdatasync_p50_ms", p50, "ms"),
                        num("fdatasync_p99_ms", p99, "ms"),
                        num("fdatasync_max_ms", max, "ms"),
                        num("fdatasync_count", h.len() as f64, ""),
                    ],
                ),
                format!(
                    "{} writes of {ETCD_WRITE} B + fdatasync in {:.1} s, queue depth 1, file {}",
                    h.len(),
                    f.elapsed.as_secs_f64(),
                    if f.preallocated { "preallocated" } else { "not preallocated (fallocate refused)" }
                ),
            )
        }
        Err(e) => skip(FSYNC_ID, FSYNC_TITLE, th_fsync(t), e.clone()),
    });
    let rand = |id: &str,
                title: &str,
                rr: &Result<RandResult, String>,
                th: &crate::profile::Iops| match rr {
        Ok(x) => {
            let iops = x.iops();
            let h = &x.hist;
            let (p50, p99, max) = (
                us(h.value_at_quantile(0.5)),
                us(h.value_at_quantile(0.99)),
                us(h.max()),
            );
            let prefix = id.trim_start_matches("disk.");
            with_reason(
                finding(
                    id,
                    title,
                    below(iops, th.warn_below, th.fail_below),
                    format!(
                        "{} IOPS (p50 {} µs, p99 {} µs)",
                        fmt_num(iops),
                        fmt_num(p50),
                        fmt_num(p99)
                    ),
                    th_iops(th),
                    "slow random I/O: use local NVMe/SSD or raise the volume's provisioned IOPS",
                    vec![
                        num(&format!("{prefix}_iops"), iops, "IOPS"),
                        num(&format!("{prefix}_p50_us"), p50, "us"),
                        num(&format!("{prefix}_p99_us"), p99, "us"),
                        num(&format!("{prefix}_max_us"), max, "us"),
                    ],
                ),
                format!(
                    "4 KiB O_DIRECT, queue depth {} (engine {}), {} ops in {:.1} s",
                    cfg.queue_depth,
                    match (x.engine, &x.fallback) {
                        (Engine::IoUring, _) => "io_uring: one thread".to_string(),
                        (Engine::Threads, None) =>
                            format!("threads: {} threads, pread/pwrite", cfg.queue_depth),
                        (Engine::Threads, Some(why)) =>
                            format!("threads: {} threads, pread/pwrite; {why}", cfg.queue_depth),
                    },
                    x.ops,
                    x.elapsed.as_secs_f64()
                ),
            )
        }
        Err(e) => skip(id, title, th_iops(th), e.clone()),
    };
    out.push(rand(RANDREAD_ID, RANDREAD_TITLE, &r.randread, &t.randread));
    out.push(rand(
        RANDWRITE_ID,
        RANDWRITE_TITLE,
        &r.randwrite,
        &t.randwrite,
    ));
    out.push(match &r.seq {
        Ok(s) => {
            let mbs = s.bytes as f64 / 1e6 / s.elapsed.as_secs_f64().max(1e-9);
            with_reason(
                finding(
                    SEQWRITE_ID,
                    SEQWRITE_TITLE,
                    below(mbs, t.seqwrite.warn_below_mbs, t.seqwrite.fail_below_mbs),
                    format!("{} MB/s", fmt_num(mbs)),
                    th_seq(t),
                    "slow sequential writes: check the volume type and its throughput cap",
                    vec![num("seqwrite_mbs", mbs, "MB/s")],
                ),
                format!(
                    "{} MiB in 1 MiB {} writes + fdatasync in {:.2} s",
                    s.bytes >> 20,
                    if s.direct {
                        "O_DIRECT"
                    } else {
                        "buffered (O_DIRECT refused)"
                    },
                    s.elapsed.as_secs_f64()
                ),
            )
        }
        Err(e) => skip(SEQWRITE_ID, SEQWRITE_TITLE, th_seq(t), e.clone()),
    });
    out
}

pub(super) fn skip_all(t: &Thresholds, reason: &str) -> Vec<Finding> {
    vec![
        skip(FSYNC_ID, FSYNC_TITLE, th_fsync(t), reason),
        skip(RANDREAD_ID, RANDREAD_TITLE, th_iops(&t.randread), reason),
        skip(RANDWRITE_ID, RANDWRITE_TITLE, th_iops(&t.randwrite), reason),
        skip(SEQWRITE_ID, SEQWRITE_TITLE, th_seq(t), reason),
    ]
}

pub(super) fn thresholds(t: &Thresholds) -> String {
    format!(
        "fdatasync {}; randread {}; randwrite {}; seqwrite {}; test file {} MiB, \
         <= {} fdatasyncs in <= {} s, {} s per other phase, queue depth {}",
        th_fsync(t),
        th_iops(&t.randread),
        th_iops(&t.randwrite),
        th_seq(t),
        t.io.size_mib,
        t.io.fsync_max_writes,
        t.io.fsync_seconds,
        t.io.phase_seconds,
        t.io.queue_depth
    )
}

/// Verdict of an fdatasync p99 in ms.
pub fn fsync_verdict(p99_ms: f64, t: &Thresholds) -> Verdict {
    above(p99_ms, t.fsync.warn_p99_ms, t.fsync.fail_p99_ms)
}

#[cfg(test)]
mod tests {
    use super::super::{new_hist, FsyncResult, SeqResult};
    use super::*;
    use hdrhistogram::Histogram;
    use std::time::Duration;

    fn hist_ms(values: &[f64]) -> Histogram<u64> {
        let mut h = new_hist();
        for v in values {
            h.record((v * 1e6) as u64).unwrap();
        }
        h
    }

    fn results(fsync_ms: &[f64], iops_ops: u64) -> IoResults {
        IoResults {
            fsync: Ok(FsyncResult {
                hist: hist_ms(fsync_ms),
                elapsed: Duration::from_secs(1),
                preallocated: true,
            }),
            seq: Ok(SeqResult {
                bytes: 200 << 20,
                elapsed: Duration::from_secs(1),
                direct: true,
            }),
            randread: Ok(RandResult {
                hist: hist_ms(&[0.1, 0.2]),
                ops: iops_ops,
                elapsed: Duration::from_secs(1),
                engine: Engine::IoUring,
                fallback: None,
            }),
            randwrite: Err("x: pwrite: Input/output error".into()),
        }
    }

    #[test]
    fn recorded_latencies_give_each_verdict() {
        let t = Thresholds::default();
        let cfg = Io::default();
        let mut fast = vec![1.0; 99];
        fast.push(50.0);
        let f = judge(&results(&fast, 10_000), &t, &cfg);
        assert_eq!(f[0].check, FSYNC_ID);
        assert_eq!(f[0].verdict, Verdict::Pass, "{:?}", f[0]);
        let f = judge(&results(&[15.0; 100], 1000), &t, &cfg);
        assert_eq!(f[0].verdict, Verdict::Warn);
        assert_eq!(f[1].verdict, Verdict::Warn, "{:?}", f[1]);
        let f = judge(&results(&[25.0; 100], 100), &t, &cfg);
        assert_eq!(f[0].verdict, Verdict::Fail);
        assert_eq!(f[1].verdict, Verdict::Fail);
        assert_eq!(f[2].verdict, Verdict::Skip);
        assert!(f[2].reason.as_ref().unwrap().contains("pwrite"));
        assert_eq!(f[3].verdict, Verdict::Pass);
        assert_eq!(fsync_verdict(10.5, &t), Verdict::Warn);
        assert!(f[1].reason.as_ref().unwrap().contains("engine io_uring"));
    }

    #[test]
    fn the_reason_names_the_fallback_engine_and_why() {
        let t = Thresholds::default();
        let cfg = Io::default();
        let mut r = results(&[1.0], 10_000);
        if let Ok(x) = r.randread.as_mut() {
            x.engine = Engine::Threads;
            x.fallback = Some("io_uring setup: Operation not permitted".into());
        }
        let f = judge(&r, &t, &cfg);
        let reason = f[1].reason.as_ref().unwrap();
        assert!(reason.contains("engine threads: 32 threads"), "{reason}");
        assert!(
            reason.contains("io_uring setup: Operation not permitted"),
            "{reason}"
        );
    }
}
