use crate::util::run_text;
use app::{spawn, AppConfig as ServeConfig, Stall};
use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
use meshbench_schema::units::Dur;
use std::time::Duration;

/// A server that stalls every response for S = 200 ms once every P = 1 s, loaded at a
/// constant 200 req/s over one connection for 5 s. A request intended x ms into a stall
/// completes at its end, so the corrected latency exceeds L with probability (S - L)/P:
/// p99 = S - 0.01 P = 190 ms, p90 = S - 0.1 P = 100 ms. Only the one request in flight per
/// stall (0.5 % of requests) sees the stall as service time, so the uncorrected p90/p99 stay
/// near the normal service time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinated_omission_is_corrected() {
    let (addr, _srv) = spawn(ServeConfig {
        stall: Some(Stall {
            stall: Dur(Duration::from_millis(200)),
            every: Dur(Duration::from_secs(1)),
        }),
        ..Default::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let run = run_text(
        dir.path(),
        &format!(
            "[target]\nurl = \"http://{addr}/\"\n[load]\nrate = 200\nconnections = 1\nduration = \"5s\"\n"
        ),
    )
    .await;
    let c = &run.result.cells[0];
    assert_eq!(c.requests, 1000);
    assert_eq!(c.errors.total(), 0);
    let (p99, p90) = (c.latency.corrected.p99_us, c.latency.corrected.p90_us);
    let within = |v: f64, want: f64| (v - want).abs() <= 0.10 * want;
    assert!(
        within(p99, 190_000.0),
        "corrected p99 {p99} µs, expected 190 ms ± 10 %"
    );
    assert!(
        within(p90, 100_000.0),
        "corrected p90 {p90} µs, expected 100 ms ± 10 %"
    );
    let (u99, u90) = (c.latency.uncorrected.p99_us, c.latency.uncorrected.p90_us);
    assert!(
        u99 < p99 / 5.0,
        "uncorrected p99 {u99} µs should be far below {p99}"
    );
    assert!(
        u90 < p90 / 5.0,
        "uncorrected p90 {u90} µs should be far below {p90}"
    );
    // The stalls are in the max of both views (the in-flight request waits too).
    assert!(c.latency.uncorrected.max_us > 100_000.0);
}

/// Open loop at 500 req/s against a server that keeps up: the achieved rate is within 1 %,
/// and the one-second interval log holds every response.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_achieves_the_target_rate() {
    let (addr, _srv) = spawn(ServeConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let t0 = std::time::Instant::now();
    let run = run_text(
        dir.path(),
        &format!(
            "[target]\nurl = \"http://{addr}/\"\n[load]\nrate = 500\nconnections = 4\nwarmup = \"500ms\"\nduration = \"3s\"\n"
        ),
    )
    .await;
    let wall = t0.elapsed();
    let c = &run.result.cells[0];
    assert_eq!(c.requests, 1500);
    assert!(
        (c.achieved_rate - 500.0).abs() <= 5.0,
        "achieved {} req/s over {} s",
        c.achieved_rate,
        c.duration_s
    );
    assert!(
        wall >= Duration::from_millis(3400),
        "the schedule was not rushed: {wall:?}"
    );
    assert!(wall < Duration::from_secs(8), "{wall:?}");
    // Interval log: 1 s intervals, both tags, counts add up to the successful requests.
    let bytes = std::fs::read(run.dir.join(c.hlog.as_ref().unwrap())).unwrap();
    let mut de = hdrhistogram::serialization::Deserializer::new();
    let mut counted = 0;
    let mut intervals = 0;
    for e in IntervalLogIterator::new(&bytes) {
        if let LogEntry::Interval(i) = e.unwrap() {
            let raw = base64::Engine::decode(
                &base64::engine::general_purpose::STANDARD,
                i.encoded_histogram(),
            )
            .unwrap();
            let h: hdrhistogram::Histogram<u64> = de.deserialize(&mut raw.as_slice()).unwrap();
            if i.tag().unwrap().as_str() == "corrected" {
                counted += h.len();
                intervals += 1;
                assert!(
                    i.duration() <= Duration::from_millis(1100),
                    "{:?}",
                    i.duration()
                );
            }
        }
    }
    assert_eq!(counted, c.ok);
    assert!((3..=5).contains(&intervals), "{intervals} intervals");
}

/// A target that cannot keep up (one connection, 20 ms per request: 50 req/s) asked for
/// 200 req/s for 1 s: the backlog shows in corrected latency and achieved rate, and what
/// could not be sent before giving up (1 s timeout + 1 s after the schedule) is reported,
/// not dropped silently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backlog_shows_in_corrected_latency_and_achieved_rate() {
    let (addr, _srv) = spawn(ServeConfig {
        service_time: Dur(Duration::from_millis(20)),
        ..Default::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let run = run_text(
        dir.path(),
        &format!(
            "[target]\nurl = \"http://{addr}/\"\ntimeout = \"1s\"\n[load]\nrate = 200\nconnections = 1\nduration = \"1s\"\n"
        ),
    )
    .await;
    let c = &run.result.cells[0];
    assert_eq!(c.errors.total(), 0);
    assert!(c.requests < 200, "{} requests", c.requests);
    assert!(c.achieved_rate < 70.0, "achieved {} req/s", c.achieved_rate);
    assert!(
        c.duration_s > 2.0,
        "window extended to the last completion: {}",
        c.duration_s
    );
    assert!(
        c.latency.corrected.p99_us > 1_000_000.0,
        "{:?}",
        c.latency.corrected
    );
    assert!(
        c.latency.uncorrected.p99_us < 200_000.0,
        "{:?}",
        c.latency.uncorrected
    );
    let unsent = 200 - c.requests;
    assert!(
        run.result
            .warnings
            .iter()
            .any(|w| w.contains(&format!("{unsent} scheduled requests were never sent"))),
        "{:?}",
        run.result.warnings
    );
}
