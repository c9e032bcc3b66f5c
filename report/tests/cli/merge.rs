//! Merging interval logs is lossless: the merged log's per-tag totals equal the histogram
//! of all samples recorded directly (count and every percentile exact).

use hdrhistogram::Histogram;
use meshbench_schema::{HLOG_TAG_CORRECTED, HLOG_TAG_UNCORRECTED};

use crate::common::{self, CellSpec};
use crate::{bin, p, stdout};

#[test]
fn merging_two_logs_equals_the_histogram_of_the_combined_samples() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = CellSpec::new("w1", None, "off");
    a.seconds = 8;
    a.seed = 11;
    let mut b = CellSpec::new("w2", None, "off");
    b.seconds = 6;
    b.seed = 12;
    b.median_us = 5000.0;
    let (sa, sb) = (common::cell_seconds(&a), common::cell_seconds(&b));
    let (la, lb) = (dir.path().join("a.hlog"), dir.path().join("b.hlog"));
    common::write_hlog(&la, &sa, 1_790_000_000);
    // the second worker started 2 s later: its intervals align with a's third second
    common::write_hlog(&lb, &sb, 1_790_000_002);

    // the same samples, recorded into one histogram per tag directly
    let mut want_c = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
    let mut want_u = want_c.clone();
    for (c, u) in sa.iter().chain(&sb) {
        want_c.add(c).unwrap();
        want_u.add(u).unwrap();
    }

    let out = dir.path().join("merged.hlog");
    let o = bin(&["merge", p(&out), p(&la), p(&lb)]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert!(
        stdout(&o).contains("28 intervals from 2 log(s) merged into 16"),
        "{}",
        stdout(&o)
    );

    // the summary line per tag gives the percentiles of all merged samples
    for (tag, want) in [
        (HLOG_TAG_CORRECTED, &want_c),
        (HLOG_TAG_UNCORRECTED, &want_u),
    ] {
        let line = format!(
            "  {tag}: count {}, p50 {} µs, p90 {} µs, p99 {} µs, p99.9 {} µs, max {} µs",
            want.len(),
            want.value_at_quantile(0.5),
            want.value_at_quantile(0.9),
            want.value_at_quantile(0.99),
            want.value_at_quantile(0.999),
            want.max()
        );
        assert!(
            stdout(&o).lines().any(|l| l == line),
            "want {line:?} in\n{}",
            stdout(&o)
        );
    }

    let merged = report::load::read_hlog(&out).unwrap();
    for (tag, want) in [
        (HLOG_TAG_CORRECTED, &want_c),
        (HLOG_TAG_UNCORRECTED, &want_u),
    ] {
        let got = merged.total(tag).unwrap();
        assert_eq!(got.len(), want.len(), "{tag} count");
        assert_eq!(got.min(), want.min());
        assert_eq!(got.max(), want.max());
        for q in [0.0, 0.1, 0.5, 0.9, 0.99, 0.999, 0.9999, 1.0] {
            assert_eq!(
                got.value_at_quantile(q),
                want.value_at_quantile(q),
                "{tag} q={q}"
            );
        }
        // every recorded value bucket holds the same count
        let g: Vec<(u64, u64)> = got
            .iter_recorded()
            .map(|v| (v.value_iterated_to(), v.count_at_value()))
            .collect();
        let w: Vec<(u64, u64)> = want
            .iter_recorded()
            .map(|v| (v.value_iterated_to(), v.count_at_value()))
            .collect();
        assert_eq!(g, w, "{tag} buckets");
    }
    // intervals are aligned by start second: 8 seconds overall, seconds 2..7 hold both
    let per_second = merged.per_second(HLOG_TAG_CORRECTED);
    assert_eq!(per_second.len(), 8);
    assert_eq!(per_second[1].1.len(), sa[1].0.len());
    assert_eq!(per_second[2].1.len(), sa[2].0.len() + sb[0].0.len());
    assert_eq!(per_second[7].1.len(), sa[7].0.len() + sb[5].0.len());
}

#[test]
fn run_directories_contribute_their_cells_log() {
    let (d1, d2, out) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let mut a = CellSpec::new("c", None, "off");
    a.seconds = 3;
    let r1 = common::write_run(d1.path(), "m", &[a.clone()]);
    a.seed = 9;
    let r2 = common::write_run(d2.path(), "m", &[a]);
    let target = out.path().join("all.hlog");
    let o = bin(&["merge", p(&target), p(d1.path()), p(d2.path())]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let merged = report::load::read_hlog(&target).unwrap();
    let n = merged.total(HLOG_TAG_CORRECTED).unwrap().len();
    assert_eq!(
        n,
        r1.cells[0].latency.corrected.count + r2.cells[0].latency.corrected.count
    );

    // a run with two cells is ambiguous: refused with the reason
    let two = tempfile::tempdir().unwrap();
    let mut b = CellSpec::new("x", None, "off");
    b.seconds = 2;
    let mut c = b.clone();
    c.id = "y".into();
    common::write_run(two.path(), "m", &[b, c]);
    let o = bin(&["merge", p(&out.path().join("no.hlog")), p(two.path())]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("2 cells have interval logs"));
    assert!(!out.path().join("no.hlog").exists());
}

#[test]
fn an_interval_too_long_to_write_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = CellSpec::new("w", None, "off");
    a.seconds = 2;
    let log = dir.path().join("a.hlog");
    common::write_hlog(&log, &common::cell_seconds(&a), 1_790_000_000);
    // give the first interval a duration of u64::MAX seconds
    let text = std::fs::read_to_string(&log).unwrap();
    let mut done = false;
    let lines: Vec<String> = text
        .lines()
        .map(|l| {
            if done || l.starts_with('#') {
                return l.to_string();
            }
            done = true;
            let mut f: Vec<&str> = l.split(',').collect();
            f[2] = "18446744073709551615.000";
            f.join(",")
        })
        .collect();
    std::fs::write(&log, lines.join("\n") + "\n").unwrap();
    let out = dir.path().join("merged.hlog");
    let o = bin(&["merge", p(&out), p(&log)]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        err.contains("merged.hlog") && err.contains("too long"),
        "{err}"
    );
    assert!(!out.exists());
}

/// Peak resident set (VmHWM) of a running process, in bytes.
fn peak_rss(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: u64 = s
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kb * 1024)
}

#[test]
fn merging_long_logs_streams_in_bounded_memory() {
    use meshbench_schema::hlog::HlogWriter;
    use std::time::{Duration, UNIX_EPOCH};
    // two workers, 5000 one-second intervals each, both tags: held whole (as merge did
    // before it streamed), these are 188 KB per (tag, second) of full-range histograms,
    // 1.9 GB
    const SECONDS: u64 = 5000;
    let dir = tempfile::tempdir().unwrap();
    let mut h = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).unwrap();
    let mut logs = Vec::new();
    for w in 0..2u64 {
        let path = dir.path().join(format!("w{w}.hlog"));
        let base = UNIX_EPOCH + Duration::from_secs(1_790_000_000 + w);
        let mut log = HlogWriter::create(&path, base, &["long"]).unwrap();
        for s in 0..SECONDS {
            h.reset();
            h.record(100 + (s % 1000) + w).unwrap();
            for tag in [HLOG_TAG_CORRECTED, HLOG_TAG_UNCORRECTED] {
                log.write(
                    Duration::from_secs(s),
                    Duration::from_secs(1),
                    Some(tag),
                    &h,
                )
                .unwrap();
            }
        }
        log.finish().unwrap();
        logs.push(path);
    }
    let out = dir.path().join("merged.hlog");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_report"))
        .args(["merge", p(&out), p(&logs[0]), p(&logs[1])])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut peak = 0;
    let t0 = std::time::Instant::now();
    let status = loop {
        peak = peak.max(peak_rss(pid).unwrap_or(0));
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "merge did not finish"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(status.success());
    let mut text = String::new();
    std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut text).unwrap();
    assert!(text.contains(&format!("count {}", 2 * SECONDS)), "{text}");
    assert!(peak > 0 && peak < 64 << 20, "peak RSS {} MiB", peak >> 20);
}
