//! Rate profiles and the capacity search against the built-in app: a ramp's per-second
//! rates in the interval log, coordinated-omission correction on a ramp against a stalling
//! server (the analytic tail), and a search against an app of known capacity.

use crate::util::run_text;
use app::{spawn, AppConfig, Stall};
use meshbench_schema::hlog::for_each_interval;
use meshbench_schema::profile::RateProfile;
use meshbench_schema::search::{parse_step_tag, SearchOutcome, SearchPhase};
use meshbench_schema::units::Dur;
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn wall_s(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

/// A ramp 100 -> 500 req/s over 5 s against a server that stalls every response for
/// S = 200 ms once a second. A request intended x into a stall completes at its end, so
/// its corrected latency is S - x: the requests above L are those intended in the first
/// S - L of each stall, N(t_k + S - L) - N(t_k) for the ramp's integral N, a count that
/// grows with the rate at each stall. The count measured in the interval log matches it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinated_omission_correction_holds_on_a_ramp() {
    let stall = Duration::from_millis(200);
    let every = Duration::from_secs(1);
    let before = SystemTime::now();
    let (addr, _srv) = spawn(AppConfig {
        stall: Some(Stall {
            stall: Dur(stall),
            every: Dur(every),
        }),
        ..Default::default()
    })
    .await
    .unwrap();
    let after = SystemTime::now();
    // the app's stall clock starts between `before` and `after`
    let epoch = (wall_s(before) + wall_s(after)) / 2.0;
    let dir = tempfile::tempdir().unwrap();
    let run = run_text(
        dir.path(),
        &format!(
            "[target]\nurl = \"http://{addr}/\"\n[load]\nconnections = 16\n[load.profile]\nkind = \"ramp\"\nfrom = 100\nto = 500\nover = \"5s\"\n"
        ),
    )
    .await;
    let c = &run.result.cells[0];
    let profile = c.settings.profile.clone().expect("the profile is recorded");
    let curve = profile.curve();
    assert_eq!(c.requests, 1500, "∫ 100→500 over 5 s");
    assert_eq!(c.errors.total(), 0);
    let mut total: Option<hdrhistogram::Histogram<u64>> = None;
    let mut window_start = f64::MAX;
    for_each_interval(&run.dir.join(c.hlog.as_ref().unwrap()), |i| {
        if i.tag.as_deref() == Some("corrected") {
            window_start = window_start.min(i.start_s);
            match &mut total {
                Some(t) => t.add(&i.hist).unwrap(),
                None => total = Some(i.hist),
            }
        }
    })
    .unwrap();
    let total = total.unwrap();
    for l_ms in [50u64, 100, 150] {
        let l = Duration::from_millis(l_ms);
        let above = total.len() - total.count_between(0, l.as_micros() as u64);
        // stalls k at epoch + k·P, in window time
        let mut want = 0.0;
        for k in 0..20 {
            let t = epoch + k as f64 * every.as_secs_f64() - window_start;
            let (a, b) = (t.max(0.0), (t + (stall - l).as_secs_f64()).min(5.0));
            if b > a {
                want += curve.count(b) - curve.count(a);
            }
        }
        assert!(want > 50.0, "L = {l_ms} ms: {want} expected");
        assert!(
            (above as f64 - want).abs() <= 0.10 * want + 3.0,
            "corrected latency > {l_ms} ms: {above} requests, analytic {want:.1} for the ramp's rate at each stall"
        );
    }
    // the uncorrected view hides it: only the requests in flight at each stall (at most
    // one per connection, ~5 % of them) see it
    let (u90, p90) = (c.latency.uncorrected.p90_us, c.latency.corrected.p90_us);
    assert!(
        u90 < 20_000.0 && p90 > 50_000.0,
        "p90 uncorrected {u90} µs, corrected {p90} µs"
    );
}

/// Steps 200 -> 600 -> 100 req/s: each second of the interval log carries its step's
/// rate (completions, so within a few requests of the schedule's exact count).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_interval_log_shows_each_seconds_rate_of_a_steps_profile() {
    let (addr, _srv) = spawn(AppConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let run = run_text(
        dir.path(),
        &format!(
            "[target]\nurl = \"http://{addr}/\"\n[load]\nconnections = 4\nwarmup = \"300ms\"\n[load.profile]\nkind = \"steps\"\nsteps = [{{ rate = 200, duration = \"2s\" }}, {{ rate = 600, duration = \"1s\" }}, {{ rate = 100, duration = \"2s\" }}]\n"
        ),
    )
    .await;
    let c = &run.result.cells[0];
    assert_eq!(c.requests, 400 + 600 + 200);
    assert!(matches!(
        c.settings.profile,
        Some(RateProfile::Steps { ref steps }) if steps.len() == 3
    ));
    let mut per: BTreeMap<i64, u64> = BTreeMap::new();
    let mut first = f64::MAX;
    let mut seen = Vec::new();
    for_each_interval(&run.dir.join(c.hlog.as_ref().unwrap()), |i| {
        if i.tag.as_deref() == Some("corrected") {
            first = first.min(i.start_s);
            seen.push((i.start_s, i.hist.len()));
        }
    })
    .unwrap();
    for (s, n) in seen {
        *per.entry((s - first).round() as i64).or_default() += n;
    }
    let counts: Vec<u64> = per.values().copied().collect();
    let want = [200u64, 200, 600, 100, 100];
    assert!(counts.len() >= 5, "{counts:?}");
    for (s, w) in want.iter().enumerate() {
        let got = counts[s];
        assert!(
            got.abs_diff(*w) <= 2 + w / 50,
            "second {s}: {got} responses, the schedule has {w}: {counts:?}"
        );
    }
}

/// The same steps against an app that accepts 400 req/s and answers the rest 503 at once:
/// the interval log's `failed` tag counts each second's errors, which appear in the
/// 600 req/s second only (600 offered - 400 refilled - the bucket's 40), and sum to the
/// cell's error total exactly; successes and failures of each second add up to its
/// scheduled requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_interval_log_counts_each_seconds_errors_of_a_steps_profile() {
    let (addr, _srv) = spawn(AppConfig {
        max_rate: Some(400.0),
        ..AppConfig::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let run = run_text(
        dir.path(),
        &format!(
            "[target]\nurl = \"http://{addr}/\"\n[load]\nconnections = 4\nwarmup = \"300ms\"\n[load.profile]\nkind = \"steps\"\nsteps = [{{ rate = 200, duration = \"2s\" }}, {{ rate = 600, duration = \"1s\" }}, {{ rate = 100, duration = \"2s\" }}]\n"
        ),
    )
    .await;
    let c = &run.result.cells[0];
    assert_eq!(c.requests, 1200);
    let mut first = f64::MAX;
    let mut seen = Vec::new();
    for_each_interval(&run.dir.join(c.hlog.as_ref().unwrap()), |i| {
        first = first.min(i.start_s);
        seen.push((i.tag.clone().unwrap_or_default(), i.start_s, i.hist.len()));
    })
    .unwrap();
    let mut ok: BTreeMap<i64, u64> = BTreeMap::new();
    let mut failed: BTreeMap<i64, u64> = BTreeMap::new();
    for (tag, s, n) in seen {
        let k = (s - first).round() as i64;
        match tag.as_str() {
            "corrected" => *ok.entry(k).or_default() += n,
            "failed" => *failed.entry(k).or_default() += n,
            _ => {}
        }
    }
    assert_eq!(
        failed.values().sum::<u64>(),
        c.errors.total(),
        "per-second errors sum to the cell's: {failed:?}"
    );
    assert_eq!(c.errors.total(), c.errors.http_5xx);
    assert_eq!(
        ok.keys().collect::<Vec<_>>(),
        failed.keys().collect::<Vec<_>>(),
        "every second has a failed interval, empty or not"
    );
    let f: Vec<u64> = (0..5)
        .map(|k| failed.get(&k).copied().unwrap_or(0))
        .collect();
    eprintln!("failed per second {f:?}, ok {ok:?}");
    assert!((130..=190).contains(&f[2]), "the 600/s second: {f:?}");
    for k in [0, 1, 4] {
        assert!(f[k] <= 10, "second {k} is below the app's rate: {f:?}");
    }
    for (k, want) in [200u64, 200, 600, 100, 100].into_iter().enumerate() {
        let got = ok.get(&(k as i64)).copied().unwrap_or(0) + f[k];
        assert!(
            got.abs_diff(want) <= 2 + want / 50,
            "second {k}: {got} completed, the schedule has {want}; failed {f:?}, ok {ok:?}"
        );
    }
}

/// An app that serves each request in 10 ms, loaded over 4 HTTP/1.1 connections, can
/// carry 4 / service time requests per second (about 400/s; the service time measured at
/// the search's first, lightest step is the truth): above that the queue grows without
/// bound and p99 breaks the SLO. The search finds it within its resolution, repeats it,
/// and keeps every step in run.json and in the search's interval log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_search_finds_a_known_capacity_within_its_resolution() {
    let (addr, _srv) = spawn(AppConfig {
        service_time: Dur(Duration::from_millis(10)),
        ..Default::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let run = run_text(
        dir.path(),
        &format!(
            "[target]\nurl = \"http://{addr}/\"\nprotocol = \"http1\"\n[load]\nconnections = 4\n[search]\nslo = [\"p99<60ms\", \"errors<0.1%\"]\nmin = 50\nmax = 5000\nresolution = \"5%\"\nstep = \"2s\"\nwarmup = \"300ms\"\n"
        ),
    )
    .await;
    let c = &run.result.cells[0];
    let s = c.search.as_ref().expect("a search result");
    assert_eq!(s.outcome, SearchOutcome::Converged, "{:#?}", s.steps);
    let cap = s.capacity_rps.unwrap();
    let (lo, hi) = (s.last_pass_rps.unwrap(), s.first_fail_rps.unwrap());
    assert_eq!(cap, lo);
    assert!(hi / lo - 1.0 <= 0.05 + 1e-9, "{lo} .. {hi}");
    let service_s = s.steps[0].latency.mean_us / 1e6;
    let truth = 4.0 / service_s;
    assert!(
        (cap / truth - 1.0).abs() <= 0.05 + 0.02,
        "capacity {cap} req/s, truth 4 / {:.2} ms = {truth:.0} req/s",
        service_s * 1e3
    );
    // every step recorded; the last repeats the capacity and holds; the cell is its step
    let last = s.steps.last().unwrap();
    assert_eq!(
        (last.phase, last.rate, last.passed),
        (SearchPhase::Confirm, cap, true)
    );
    assert!(s.steps.iter().filter(|st| st.rate == cap).count() >= 2);
    assert!(s.steps.iter().any(|st| st.rate == hi && !st.passed));
    assert!(s.steps.iter().all(|st| !st.reasons.is_empty()));
    assert_eq!(c.settings.rate, Some(cap));
    assert_eq!(c.requests, last.requests);
    // the steps' seconds in the search's interval log, tagged by step
    let mut steps_logged = std::collections::BTreeSet::new();
    for_each_interval(&run.dir.join(s.hlog.as_ref().unwrap()), |i| {
        let (k, which) = parse_step_tag(i.tag.as_deref().unwrap()).unwrap();
        if which == "corrected" {
            steps_logged.insert(k);
        }
    })
    .unwrap();
    assert_eq!(steps_logged.len(), s.steps.len());
    // no step's own log is left behind
    let left: Vec<_> = std::fs::read_dir(&run.dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".step-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}
