//! The load engine: runs one cell against one resolved target.
//!
//! Open loop: a scheduler thread releases request *i* at `start + i/rate` (precise
//! `thread::sleep`, not the 1 ms tokio timer) by adding a permit to a FIFO semaphore; lanes
//! take permits in order, so a lane that takes permit *i* sends request *i*, whose latency is
//! measured from its intended time. When the target cannot keep up, permits pile up (a
//! counter: memory stays flat) and the wait shows in corrected latency and achieved rate.
//! Closed loop: each lane sends its next request when the previous one completes.
//!
//! Each connection has `lanes` lanes: 1 for HTTP/1.1, `max_in_flight` for HTTP/2 (streams
//! multiplexed on one connection). Lanes record into their connection's [`Recorder`]; the
//! cell loop takes the interval histograms every second (interval log, progress) and merges
//! the totals at the end.

pub mod conn;
mod lane;
mod schedule;
mod target;

pub use target::{ResolvedTarget, Target, TlsTarget};

use crate::plan::Protocol;
use crate::record::{Hlog, Pair, Recorder};
use conn::Sender;
use lane::Lane;
use meshbench_schema::LoadMode;
use schedule::{spawn_scheduler, Schedule};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// How long a failed request waits for its connection's own error (its real cause).
const CONN_ERROR_WAIT: Duration = Duration::from_millis(100);

/// How long an interrupted cell waits for requests in flight.
pub const INTERRUPT_DRAIN: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("target {url}: {message}")]
    Target { url: String, message: String },
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error(transparent)]
    Hlog(#[from] meshbench_schema::hlog::HlogError),
}

/// How hard and how long to push in one cell.
#[derive(Debug, Clone)]
pub struct CellLoad {
    pub mode: LoadMode,
    pub rate: Option<f64>,
    pub connections: u32,
    pub max_in_flight: u32,
    pub duration: Option<Duration>,
    pub requests: Option<u64>,
    pub warmup: Duration,
    pub think_time: Duration,
}

/// Live figures, once a second.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    pub elapsed: Duration,
    pub planned: Option<Duration>,
    pub requests: u64,
    pub errors: u64,
    /// Completions per second over the last interval.
    pub rate: f64,
    /// Corrected p99 of the last interval, µs.
    pub p99_us: f64,
}

/// Where to write a cell's interval log, and its header comment.
pub struct HlogSpec {
    pub path: std::path::PathBuf,
    pub comment: String,
}

/// What one cell measured.
pub struct CellMeasurement {
    pub rec: Recorder,
    /// Measured window, seconds (extended to the last completion when the target lagged).
    pub duration_s: f64,
    pub interrupted: bool,
    /// Scheduled measured requests that were never sent (target too slow, or interrupted).
    pub unsent: u64,
    pub started_at: SystemTime,
}

/// Run one cell. `stop` turning true interrupts it (what was measured is kept).
pub async fn run_cell(
    target: Arc<Target>,
    load: &CellLoad,
    hlog: Option<HlogSpec>,
    mut stop: watch::Receiver<bool>,
    on_progress: &mut (dyn FnMut(&Progress) + Send),
) -> Result<CellMeasurement, EngineError> {
    // Connections first, concurrently (failures are counted later, per request), so that
    // connection set-up does not delay the first scheduled requests.
    let mut connecting = JoinSet::new();
    for i in 0..load.connections {
        let t = target.clone();
        connecting.spawn(async move { (i, conn::connect(&t).await.ok()) });
    }
    let mut firsts: Vec<Option<Sender>> = (0..load.connections).map(|_| None).collect();
    while let Some(r) = connecting.join_next().await {
        if let Ok((i, s)) = r {
            firsts[i as usize] = s;
        }
    }
    let started_at = SystemTime::now();
    let start = Instant::now();
    let window_start = start + load.warmup;
    let mut hlog = match hlog {
        Some(spec) => Some(Hlog::create(
            &spec.path,
            started_at + load.warmup,
            &spec.comment,
        )?),
        None => None,
    };
    let (rate, warmup_tickets, measured_tickets) = match (load.mode, load.rate) {
        (LoadMode::Open, Some(r)) => {
            let w = (load.warmup.as_secs_f64() * r - 1e-9).ceil().max(0.0) as u64;
            let by_time = load
                .duration
                .map(|d| (d.as_secs_f64() * r - 1e-9).ceil().max(1.0) as u64);
            let n = match (by_time, load.requests) {
                (Some(a), Some(b)) => a.min(b),
                (a, b) => a.or(b).unwrap_or(1),
            };
            (r, w, n)
        }
        _ => (0.0, 0, 0),
    };
    let planned = match load.mode {
        LoadMode::Open => Some(Duration::from_secs_f64(measured_tickets as f64 / rate)),
        LoadMode::Closed => load.duration,
    };
    let sched = Arc::new(Schedule {
        mode: load.mode,
        start,
        rate,
        warmup_tickets,
        total_tickets: warmup_tickets + measured_tickets,
        next: AtomicU64::new(0),
        permits: Semaphore::new(0),
        window_start,
        window_end: load.duration.map(|d| window_start + d),
        max_measured: load.requests,
        measured_claimed: AtomicU64::new(0),
        dispatched: AtomicU64::new(0),
        stopped: AtomicBool::new(false),
    });

    let mut lanes = JoinSet::new();
    let mut recorders = Vec::new();
    let mut lane_count = 0usize;
    for first in firsts {
        let rec = Arc::new(Mutex::new(Recorder::default()));
        recorders.push(rec.clone());
        let h2 = match &first {
            Some(s) => s.is_h2(),
            None => target.protocol == Protocol::Http2,
        };
        if h2 && first.is_some() {
            rec.lock().expect("recorder lock").saw_h2 = true;
        }
        let n = if h2 { load.max_in_flight.max(1) } else { 1 };
        let slot = Arc::new(tokio::sync::Mutex::new(first));
        for _ in 0..n {
            lane_count += 1;
            let lane = Lane {
                target: target.clone(),
                sched: sched.clone(),
                rec: rec.clone(),
                slot: slot.clone(),
                own: None,
                stop: stop.clone(),
                think: load.think_time,
            };
            lanes.spawn(lane.run());
        }
    }
    let scheduler =
        (load.mode == LoadMode::Open).then(|| spawn_scheduler(sched.clone(), lane_count, start));

    let mut ticker = tokio::time::interval_at(
        window_start + Duration::from_secs(1),
        Duration::from_secs(1),
    );
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_edge = window_start;
    let mut interval = Pair::default();
    let mut total_requests = 0u64;
    let mut total_errors = 0u64;
    let mut interrupted = *stop.borrow();
    if interrupted {
        sched.stop();
    }
    let mut drain_deadline = Instant::now() + INTERRUPT_DRAIN;
    let give_up_after = load.mode == LoadMode::Open;
    let sched_end = planned.map(|p| window_start + p);
    let give_up_at = sched_end.map(|e| e + target.timeout + Duration::from_secs(1));
    let mut gave_up = false;

    let collect = |until: Instant,
                   last_edge: &mut Instant,
                   interval: &mut Pair,
                   hlog: &mut Option<Hlog>,
                   total_requests: &mut u64,
                   total_errors: &mut u64|
     -> Result<Progress, EngineError> {
        interval.reset();
        let (mut n, mut e) = (0, 0);
        for r in &recorders {
            let (a, b) = r.lock().expect("recorder lock").take_interval(interval);
            n += a;
            e += b;
        }
        *total_requests += n;
        *total_errors += e;
        let len = until.saturating_duration_since(*last_edge);
        if let Some(h) = hlog.as_mut() {
            if !len.is_zero() {
                h.write(
                    last_edge.saturating_duration_since(window_start),
                    len,
                    interval,
                )?;
            }
        }
        *last_edge = until;
        Ok(Progress {
            elapsed: until.saturating_duration_since(window_start),
            planned,
            requests: *total_requests,
            errors: *total_errors,
            rate: if len.is_zero() {
                0.0
            } else {
                n as f64 / len.as_secs_f64()
            },
            p99_us: crate::record::percentiles(&interval.corrected).p99_us,
        })
    };

    loop {
        tokio::select! {
            _ = ticker.tick() => {
                let p = collect(Instant::now(), &mut last_edge, &mut interval, &mut hlog, &mut total_requests, &mut total_errors)?;
                on_progress(&p);
            }
            r = lanes.join_next() => {
                if r.is_none() { break; }
            }
            _ = stopped(&mut stop), if !interrupted => {
                interrupted = true;
                sched.stop();
                drain_deadline = Instant::now() + INTERRUPT_DRAIN.min(target.timeout);
            }
            _ = tokio::time::sleep_until(drain_deadline), if interrupted => {
                lanes.abort_all();
                while lanes.join_next().await.is_some() {}
                break;
            }
            _ = tokio::time::sleep_until(give_up_at.unwrap_or(start)), if give_up_after && !gave_up && !interrupted && give_up_at.is_some() => {
                // The target could not keep up: stop sending the backlog; what was not
                // sent is reported as unsent.
                gave_up = true;
                sched.stop();
            }
        }
    }
    // Lanes also watch `stop` and may all end before the branch above saw it.
    interrupted |= *stop.borrow();
    sched.stop();
    if let Some(s) = scheduler {
        let _ = tokio::task::spawn_blocking(move || s.join()).await;
    }
    let end = Instant::now();
    collect(
        end,
        &mut last_edge,
        &mut interval,
        &mut hlog,
        &mut total_requests,
        &mut total_errors,
    )?;
    if let Some(h) = hlog {
        h.finish()?;
    }
    let mut rec = Recorder::default();
    for r in &recorders {
        rec.merge(&r.lock().expect("recorder lock"));
    }
    let measured = if interrupted {
        end.saturating_duration_since(window_start)
    } else {
        let to_last = rec
            .last_done
            .map(|l| l.saturating_duration_since(window_start))
            .unwrap_or_default();
        planned.map_or(to_last, |p| p.max(to_last))
    };
    let unsent = match load.mode {
        LoadMode::Open => measured_tickets.saturating_sub(sched.dispatched.load(Ordering::Relaxed)),
        LoadMode::Closed => 0,
    };
    Ok(CellMeasurement {
        rec,
        duration_s: measured.as_secs_f64(),
        interrupted,
        unsent,
        started_at,
    })
}

/// Resolves once `stop` is true; never when its sender is gone without saying so.
pub(super) async fn stopped(stop: &mut watch::Receiver<bool>) {
    if stop.wait_for(|v| *v).await.is_err() {
        std::future::pending::<()>().await;
    }
}
