//! The per-request hot path of the engine, piece by piece: claiming an open-loop ticket,
//! building a request, recording one outcome, and taking + encoding a one-second interval
//! (what a worker does once a second). `cargo bench -p loadgen`; in CI once each in test
//! mode (`cargo test --benches`).

use criterion::{criterion_group, criterion_main, Criterion};
use loadgen::engine::schedule::Schedule;
use loadgen::record::{new_hist, Hlog, Outcome, Pair, Recorder};
use std::hint::black_box;
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

fn ticket_claim(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    c.bench_function("ticket claim (open loop, released)", |b| {
        let s = Schedule::open(Instant::now(), 1e7, 0, 1, u64::MAX / 4);
        b.iter(|| {
            s.release(1);
            black_box(rt.block_on(s.claim(0)).map(|t| t.measured))
        })
    });
}

fn request_build(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let src = loadgen::scenario::Source::new(
        "b.toml",
        "[target]\nurl = \"http://127.0.0.1:9/api/checkout?x=1\"\nheaders = { x-tenant = \"a\", authorization = \"Bearer t\" }\n[load]\nrate = 1\nduration = \"1s\"\n",
    );
    let plan = loadgen::plan::Plan::from_scenario(&src.parse().unwrap(), &src).unwrap();
    let resolved = loadgen::engine::ResolvedTarget {
        url: "http://127.0.0.1:9/api/checkout?x=1".into(),
        connect_to: Some("127.0.0.1:9".parse().unwrap()),
        tls: Default::default(),
        split: vec![],
    };
    let t = rt
        .block_on(loadgen::engine::Target::new(&resolved, &plan.request, None))
        .unwrap();
    c.bench_function("request build (HTTP/1.1)", |b| {
        b.iter(|| black_box(t.request(false)))
    });
    c.bench_function("request build (HTTP/2)", |b| {
        b.iter(|| black_box(t.request(true)))
    });
}

fn record_outcome(c: &mut Criterion) {
    let mut r = Recorder::default();
    let t0 = Instant::now();
    let mut i = 0u64;
    c.bench_function("record one outcome (200, subset)", |b| {
        b.iter(|| {
            i += 1;
            let done = t0 + Duration::from_micros(300 + i % 5000);
            r.record_lag(Duration::from_micros(i % 40));
            r.record(
                t0,
                t0 + Duration::from_micros(20),
                done,
                Outcome::Response {
                    status: 200,
                    subset: Some("v1".into()),
                },
            );
        })
    });
}

fn record_1000(r: &mut Recorder, t0: Instant) {
    for i in 0..1000u64 {
        r.record(
            t0,
            t0,
            t0 + Duration::from_micros(200 + i * 7),
            Outcome::Response {
                status: 200,
                subset: None,
            },
        );
        r.record_lag(Duration::from_micros(i % 40));
    }
}

/// The worker's once-a-second step (on the thread that sends requests) and the
/// coordinator's (writing the interval to the `.hlog`), apart.
fn take_and_encode_interval(c: &mut Criterion) {
    let t0 = Instant::now();
    c.bench_function("take a 1000-request interval (worker)", |b| {
        b.iter_batched_ref(
            || {
                let mut r = Recorder::default();
                record_1000(&mut r, t0);
                (r, Pair::default(), new_hist(), new_hist())
            },
            |(r, pair, lag, failed)| black_box(r.take_interval(pair, lag, failed)),
            criterion::BatchSize::LargeInput,
        )
    });
    let dir = tempfile::tempdir().unwrap();
    let mut log = Hlog::create(&dir.path().join("b.hlog"), SystemTime::now(), "bench").unwrap();
    let mut r = Recorder::default();
    record_1000(&mut r, t0);
    let (mut pair, mut lag, mut failed) = (Pair::default(), new_hist(), new_hist());
    r.take_interval(&mut pair, &mut lag, &mut failed);
    let mut s = 0u64;
    c.bench_function(
        "encode a 1000-request interval into the .hlog (coordinator)",
        |b| {
            b.iter(|| {
                log.write(
                    Duration::from_secs(s),
                    Duration::from_secs(1),
                    &pair,
                    Some(&lag),
                    &failed,
                )
                .unwrap();
                s += 1;
            })
        },
    );
}

criterion_group!(
    hot_path,
    ticket_claim,
    request_build,
    record_outcome,
    take_and_encode_interval
);
criterion_main!(hot_path);
