//! The generator's own accuracy as a result: send lateness recorded per cell (run.json,
//! the `send_lag` interval-log tag, the summary), a cell forced late failing its
//! `max_send_lag` check while every result is still written, and the idle strategies
//! running the same schedule into the same results format. (How small the lateness is,
//! is a benchmark: bench/engine.sh.)

use crate::util::{bin, run_text};
use std::collections::BTreeSet;

fn scenario(addr: std::net::SocketAddr, load: &str) -> String {
    format!("[target]\nurl = \"http://{addr}/\"\ntimeout = \"2s\"\nprotocol = \"http1\"\n[load]\n{load}\n")
}

fn tags(path: &std::path::Path) -> BTreeSet<String> {
    let mut t = BTreeSet::new();
    meshbench_schema::hlog::for_each_interval(path, |i| {
        t.insert(i.tag.unwrap_or_default());
    })
    .unwrap();
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_idle_strategy_runs_the_same_schedule_into_the_same_results() {
    let (addr, _srv) = app::spawn(app::AppConfig::default()).await.unwrap();
    let mut shapes = Vec::new();
    for idle in ["spin", "hybrid", "sleep"] {
        for threads in [1, 2] {
            let dir = tempfile::tempdir().unwrap();
            let run = run_text(
                dir.path(),
                &scenario(
                    addr,
                    &format!("rate = 400\nconnections = 4\nrequests = 400\nwarmup = \"250ms\"\nidle = \"{idle}\"\nthreads = {threads}"),
                ),
            )
            .await;
            let c = &run.result.cells[0];
            assert_eq!(
                (c.requests, c.ok),
                (400, 400),
                "{idle} x{threads}: {:?}",
                c.errors
            );
            // the measured window is the schedule's: 400 requests at 400/s
            assert!(
                (c.duration_s - 1.0).abs() < 0.05,
                "{idle}: {} s",
                c.duration_s
            );
            let g = c.generator.as_ref().unwrap();
            assert_eq!((g.idle.as_str(), g.threads), (idle, threads));
            let lag = g.send_lag.expect("open loop records send lag");
            // every request whose lane was free at its intended time (a lane still busy
            // then was waiting on the target, not on the generator)
            assert!(
                (380..=400).contains(&lag.count),
                "{idle}: {} lateness samples",
                lag.count
            );
            assert!(g.cpu_s > 0.0 && g.lag_limit_us == Some(250.0));
            let t = tags(&run.dir.join(c.hlog.as_ref().unwrap()));
            shapes.push((
                t,
                serde_json::to_value(c)
                    .unwrap()
                    .as_object()
                    .unwrap()
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>(),
            ));
        }
    }
    assert!(shapes.windows(2).all(|w| w[0] == w[1]), "{shapes:?}");
    assert_eq!(
        shapes[0].0,
        ["corrected", "failed", "send_lag", "uncorrected"]
            .into_iter()
            .map(String::from)
            .collect()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_loop_cell_has_no_send_lag() {
    let (addr, _srv) = app::spawn(app::AppConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let run = run_text(
        dir.path(),
        &scenario(addr, "mode = \"closed\"\nconnections = 2\nrequests = 100"),
    )
    .await;
    let c = &run.result.cells[0];
    let g = c.generator.as_ref().unwrap();
    assert!(g.send_lag.is_none() && g.trusted && g.lag_limit_us.is_none());
    let t = tags(&run.dir.join(c.hlog.as_ref().unwrap()));
    assert!(!t.contains("send_lag"), "{t:?}");
}

#[test]
fn a_cell_forced_late_fails_its_check_with_exit_1_and_keeps_its_results() {
    let dir = tempfile::tempdir().unwrap();
    // the built-in app in-process; a limit no host meets: 1 µs
    let sc = dir.path().join("late.toml");
    std::fs::write(
        &sc,
        "[app]\n[target]\ntimeout = \"2s\"\n[load]\nrate = 200\nconnections = 2\nrequests = 200\nidle = \"sleep\"\n[checks]\nmax_send_lag = \"1us\"\n",
    )
    .unwrap();
    let out = dir.path().join("out");
    let o = bin()
        .args(["run", sc.to_str().unwrap(), "--out", out.to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("check send_lag [default]: Failed: send lateness p99"),
        "{stdout}"
    );
    assert!(
        stdout.contains("EXCEEDS checks.max_send_lag = 1 µs"),
        "{stdout}"
    );
    let run = meshbench_schema::read_run(&out).unwrap();
    let c = &run.cells[0];
    assert_eq!(c.requests, 200);
    assert!(!c.generator.as_ref().unwrap().trusted);
    assert_eq!(c.checks[0].name, "send_lag");
    assert!(out.join("cell-0.hlog").exists() && out.join("report.html").exists());
    // the same cell with a limit it can meet passes
    let o = bin()
        .args([
            "run",
            sc.to_str().unwrap(),
            "--force",
            "--no-report",
            "--out",
            out.to_str().unwrap(),
        ])
        .args(["--set", "checks.max_send_lag=\"10s\""])
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    // and a bad limit is a placed error
    let o = bin()
        .args([
            "validate",
            sc.to_str().unwrap(),
            "--set",
            "checks.max_send_lag=\"soon\"",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr)
        .contains("--set checks.max_send_lag: checks.max_send_lag: `soon` is not a lateness"));
}

/// run.json records the host's wall clock (what a distributed run's shared start relies
/// on): the kernel's NTP state as adjtimex reads it, and every step of the clock while the
/// run went on. As root the test steps the clock twice during a 2 s cell (to its own
/// reading: a set of well under a microsecond) and both are counted; without root it
/// checks the record only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_json_records_the_clock_and_its_steps_during_the_run() {
    let (addr, _srv) = app::spawn(app::AppConfig::default()).await.unwrap();
    let root = nix::unistd::geteuid().is_root();
    if !root {
        eprintln!("SKIPPED (part): stepping the clock needs root; the record is still checked");
    }
    let stepper = root.then(|| {
        std::thread::spawn(|| {
            std::thread::sleep(std::time::Duration::from_millis(600));
            for _ in 0..2 {
                probe::checks::timesync::set_clock_to_itself().unwrap();
                std::thread::sleep(std::time::Duration::from_millis(300));
            }
        })
    });
    let dir = tempfile::tempdir().unwrap();
    let run = run_text(
        dir.path(),
        &scenario(addr, "rate = 100\nduration = \"2s\"\nwarmup = \"0s\""),
    )
    .await;
    if let Some(s) = stepper {
        s.join().unwrap();
    }
    let c = run
        .result
        .host
        .clock
        .as_ref()
        .expect("the clock is recorded");
    let now = probe::checks::timesync::ntp_state().unwrap();
    assert_eq!(c.synchronised, Some(!now.unsynchronised), "{c:?}");
    assert!(
        c.est_error_us.is_some() && c.max_error_us.is_some(),
        "{c:?}"
    );
    assert!(c.notes.is_empty(), "{c:?}");
    let watched = c.watched_s.unwrap();
    assert!((2.0..30.0).contains(&watched), "{c:?}");
    assert!(c.drift_ppm.unwrap().is_finite());
    let steps = c.steps.unwrap();
    if root {
        // ours; a host whose clock is being stepped adds its own
        assert!(steps >= 2, "{c:?}");
        assert!(
            c.concerns().iter().any(|l| l.contains("stepped")),
            "{:?}",
            c.concerns()
        );
    }
    // as written on disk
    let back = meshbench_schema::read_run(&run.dir).unwrap();
    assert_eq!(back.host.clock.as_ref(), Some(c));
}
