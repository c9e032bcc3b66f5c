//! The load engine: runs one cell against one resolved target.
//!
//! [`run_cell`] starts `threads` workers (`worker`): each an OS thread with its own
//! current-thread runtime, its share of the connections (split as evenly as possible), its
//! share of the schedule, and one [`Recorder`]. Nothing on a request's path crosses
//! threads.
//!
//! Open loop: request *i* of the cell is intended at `start + i/rate` (with a rate
//! profile, where the integral of the rate reaches *i*: [`Pace`]) and is worker `i mod N`'s; the worker releases it on time (`schedule`: spin, hybrid or sleep) into a
//! FIFO semaphore; its lanes take permits in order, so a lane that takes permit *k* sends
//! the worker's request *k*, whose latency is measured from its intended time. When the
//! target cannot keep up, permits pile up (a counter: memory stays flat) and the wait shows
//! in corrected latency and achieved rate. Closed loop: each lane sends its next request
//! when the previous one completes.
//!
//! Each connection has `lanes` lanes: 1 for HTTP/1.1, `max_in_flight` for HTTP/2 (streams
//! multiplexed on one connection). Once a second every worker sends the coordinator its
//! interval (latency, send lag, counts), which writes it to the interval log and reports
//! [`Progress`]; at the end the workers' recorders are merged with `Histogram::add`.

pub mod conn;
mod lane;
pub mod schedule;
mod target;
mod worker;

pub use schedule::{Idle, Pace};
pub use target::{Endpoint, ResolvedTarget, SplitTo, Target, TlsTarget};

use crate::record::{Hist, Hlog, Pair, Recorder};
use meshbench_schema::LoadMode;
use schedule::CellBudget;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use worker::{Start, WorkerSpec};

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
    /// Engine worker threads (each with its own runtime, connections and recorder).
    pub threads: u32,
    /// How the workers wait for open-loop tickets.
    pub idle: Idle,
    /// CPUs to pin the workers to (worker i on `cpus[i mod len]`); empty: not pinned.
    pub cpus: Vec<usize>,
    /// One machine's share of a cell run by several (`loadgen run --worker I/N`): open
    /// loop, the cell's tickets `k` with `k mod count == index`, at their times in the
    /// single-machine schedule. `connections` (and a closed loop's `requests`) are already
    /// this machine's share.
    pub share: Share,
    /// Start the schedule at this instant of the wall clock (shared by every worker); late
    /// workers start on the same schedule and report by how much they were late.
    pub start_at: Option<SystemTime>,
    /// Open loop: a rate that changes over the window (then `rate` is only its mean and
    /// `duration` the profile's).
    pub profile: Option<meshbench_schema::profile::RateProfile>,
}

/// One machine's part of a distributed cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Share {
    pub index: u64,
    pub count: u64,
}

impl Default for Share {
    fn default() -> Self {
        Share { index: 0, count: 1 }
    }
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
    pub generator: GeneratorUse,
    /// With `start_at`: how late after it the schedule started (zero when on time).
    pub start_late: Option<Duration>,
}

/// Run one cell on `load.threads` engine workers (at most one per connection). `stop`
/// turning true interrupts it (what was measured is kept).
///
/// The workers connect; once all are connected the cell starts (`start`, then the warmup,
/// then the measured window). Each worker sends a snapshot of every second; a second is
/// written to the interval log (and reported as [`Progress`]) once every worker still
/// running has sent it.
pub async fn run_cell(
    target: Arc<Target>,
    load: &CellLoad,
    hlog: Option<HlogSpec>,
    mut stop: watch::Receiver<bool>,
    on_progress: &mut (dyn FnMut(&Progress) + Send),
) -> Result<CellMeasurement, EngineError> {
    let (pace, warmup_tickets, measured_tickets, planned) = match (load.mode, load.rate) {
        (LoadMode::Open, _) if load.profile.is_some() => {
            let profile = load.profile.as_ref().expect("checked");
            let (pace, w) = Pace::profile(profile, load.warmup);
            let curve = profile.curve();
            let n = load
                .requests
                .map_or(curve.tickets(), |r| r.min(curve.tickets()));
            let planned = curve.time_of(n as f64);
            (pace, w, n, Some(Duration::from_secs_f64(planned)))
        }
        (LoadMode::Open, Some(r)) => {
            let w = (load.warmup.as_secs_f64() * r - 1e-9).ceil().max(0.0) as u64;
            let by_time = load
                .duration
                .map(|d| (d.as_secs_f64() * r - 1e-9).ceil().max(1.0) as u64);
            let n = match (by_time, load.requests) {
                (Some(a), Some(b)) => a.min(b),
                (a, b) => a.or(b).unwrap_or(1),
            };
            let planned = Duration::from_secs_f64(n as f64 / r);
            (Pace::Constant(r), w, n, Some(planned))
        }
        _ => (Pace::Constant(1.0), 0, 0, load.duration),
    };
    let workers = (load.threads.max(1)).min(load.connections.max(1)) as usize;
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel();
    let (start_tx, start_rx) = watch::channel(None);
    let (snap_tx, mut snap_rx) = mpsc::unbounded_channel();
    let budget = Arc::new(CellBudget::default());
    let mut handles = Vec::with_capacity(workers);
    worker::check_cpus(&load.cpus).map_err(|message| EngineError::Target {
        url: target.authority.clone(),
        message,
    })?;
    let per_endpoint = target.connections_per_endpoint(load.connections);
    let split = target.endpoints.len() > 1;
    for w in 0..workers {
        // connections split as evenly as possible; with a split, every worker has at
        // least one connection to every endpoint (its tickets go to all of them)
        let connections: Vec<u32> = per_endpoint
            .iter()
            .map(|&n| {
                let c = n / workers as u32 + u32::from((w as u32) < n % workers as u32);
                if split {
                    c.max(1)
                } else {
                    c
                }
            })
            .collect();
        let spec = WorkerSpec {
            index: w,
            workers,
            target: target.clone(),
            connections,
            load: load.clone(),
            pace: pace.clone(),
            warmup_tickets,
            total_tickets: warmup_tickets + measured_tickets,
            planned,
            budget: budget.clone(),
            stop: stop.clone(),
            ready: ready_tx.clone(),
            start: start_rx.clone(),
            snapshots: snap_tx.clone(),
        };
        handles.push(worker::spawn(spec).map_err(|e| EngineError::Target {
            url: target.authority.clone(),
            message: format!("cannot start an engine thread: {e}"),
        })?);
    }
    drop((ready_tx, snap_tx, start_rx));
    for _ in 0..workers {
        if ready_rx.recv().await.is_none() {
            break;
        }
    }
    let (started_at, start, start_late) = match load.start_at {
        None => (SystemTime::now(), Instant::now(), None),
        Some(at) => match at.duration_since(SystemTime::now()) {
            Ok(wait) => {
                let start = Instant::now() + wait;
                tokio::select! {
                    _ = tokio::time::sleep_until(start) => {}
                    _ = stopped(&mut stop) => {}
                }
                (at, start, Some(Duration::ZERO))
            }
            // late: the same schedule, already running (its first tickets are overdue and
            // their lateness is in corrected latency and send lag)
            Err(e) => {
                let late = e.duration();
                let now = Instant::now();
                (at, now.checked_sub(late).unwrap_or(now), Some(late))
            }
        },
    };
    let window_start = start + load.warmup;
    let _ = start_tx.send(Some(Start {
        at: start,
        window_start,
    }));
    let mut hlog = match hlog {
        Some(spec) => Some(Hlog::create(
            &spec.path,
            started_at + load.warmup,
            &spec.comment,
        )?),
        None => None,
    };
    let mut merge = IntervalMerge {
        pending: BTreeMap::new(),
        written: 0,
        requests: 0,
        errors: 0,
        window_start,
        planned,
        open: load.mode == LoadMode::Open,
    };
    // per worker: the index of its last snapshot, once it has sent it
    let mut finished: Vec<Option<u64>> = vec![None; workers];
    let mut interrupted = *stop.borrow();
    loop {
        tokio::select! {
            s = snap_rx.recv() => {
                let Some(s) = s else { break };
                let index = merge.add(&s);
                if s.last {
                    finished[s.worker] = Some(index);
                }
                merge.flush(&finished, &mut hlog, on_progress)?;
            }
            _ = stopped(&mut stop), if !interrupted => {
                // the workers watch `stop` themselves; here only the flag is kept
                interrupted = true;
            }
        }
    }
    let mut outs = Vec::with_capacity(workers);
    for h in handles {
        let out = tokio::task::spawn_blocking(move || h.join())
            .await
            .ok()
            .and_then(|r| r.ok());
        outs.extend(out);
    }
    merge.flush(&vec![Some(0); workers], &mut hlog, on_progress)?;
    if let Some(h) = hlog {
        h.finish()?;
    }
    interrupted |= *stop.borrow() || outs.iter().any(|o| o.interrupted);
    let mut rec = Recorder::default();
    let mut dispatched = 0;
    let mut own_measured = 0;
    let mut cpu = Duration::ZERO;
    let mut end = start;
    for o in &outs {
        rec.merge(&o.rec);
        dispatched += o.dispatched;
        own_measured += o.own_measured;
        cpu += o.cpu;
        end = end.max(o.end);
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
        LoadMode::Open => own_measured.saturating_sub(dispatched),
        LoadMode::Closed => 0,
    };
    let wall = end.saturating_duration_since(start);
    Ok(CellMeasurement {
        rec,
        duration_s: measured.as_secs_f64(),
        interrupted,
        unsent,
        started_at,
        start_late,
        generator: GeneratorUse {
            workers: workers as u32,
            idle: load.idle,
            cpus: load.cpus.clone(),
            cpu,
            wall,
        },
    })
}

/// One interval being merged: workers heard from, latency, send lag, failed requests'
/// latency, request count, last time.
struct Merging {
    heard: usize,
    pair: Pair,
    lag: Hist,
    failed: Hist,
    requests: u64,
    until: Instant,
}

/// The workers' snapshots, merged per interval and written in order.
struct IntervalMerge {
    pending: BTreeMap<u64, Merging>,
    /// The last interval written.
    written: u64,
    requests: u64,
    errors: u64,
    window_start: Instant,
    planned: Option<Duration>,
    open: bool,
}

impl IntervalMerge {
    /// Add a snapshot; returns the interval it went into (a second already written, when a
    /// worker lagged, goes into the next one).
    fn add(&mut self, s: &worker::Snapshot) -> u64 {
        let index = s.index.max(self.written + 1);
        let m = self.pending.entry(index).or_insert_with(|| Merging {
            heard: 0,
            pair: Pair::default(),
            lag: crate::record::new_hist(),
            failed: crate::record::new_hist(),
            requests: 0,
            until: s.until,
        });
        m.heard += 1;
        m.pair.add(&s.pair);
        let _ = m.lag.add(&s.lag);
        let _ = m.failed.add(&s.failed);
        m.requests += s.requests;
        m.until = m.until.max(s.until);
        index
    }

    /// Write every interval that every worker still running has sent (`finished[w]`: the
    /// index of worker w's last snapshot, once sent).
    fn flush(
        &mut self,
        finished: &[Option<u64>],
        hlog: &mut Option<Hlog>,
        on_progress: &mut (dyn FnMut(&Progress) + Send),
    ) -> Result<(), EngineError> {
        while let Some(entry) = self.pending.first_entry() {
            let k = *entry.key();
            let running = finished
                .iter()
                .filter(|f| f.is_none_or(|last| last >= k))
                .count();
            let all_done = finished.iter().all(|f| f.is_some_and(|last| last <= k));
            if entry.get().heard < running && !all_done {
                break;
            }
            let m = entry.remove();
            let from = self.window_start + Duration::from_secs(k - 1);
            let to = if all_done && self.pending.is_empty() {
                m.until.max(from)
            } else {
                self.window_start + Duration::from_secs(k)
            };
            let len = to.saturating_duration_since(from);
            self.requests += m.requests;
            self.errors += m.failed.len();
            if let Some(h) = hlog.as_mut() {
                if !len.is_zero() {
                    h.write(
                        from.saturating_duration_since(self.window_start),
                        len,
                        &m.pair,
                        self.open.then_some(&m.lag),
                        &m.failed,
                    )?;
                }
            }
            self.written = k;
            on_progress(&Progress {
                elapsed: to.saturating_duration_since(self.window_start),
                planned: self.planned,
                requests: self.requests,
                errors: self.errors,
                rate: if len.is_zero() {
                    0.0
                } else {
                    m.requests as f64 / len.as_secs_f64()
                },
                p99_us: crate::record::percentiles(&m.pair.corrected).p99_us,
            });
        }
        Ok(())
    }
}

/// What the generator itself used in a cell: its engine threads' CPU time over the cell
/// (pre-connecting excluded), and how it waited between tickets.
#[derive(Debug, Clone)]
pub struct GeneratorUse {
    pub workers: u32,
    pub idle: Idle,
    /// The CPUs the workers were pinned to (empty: not pinned).
    pub cpus: Vec<usize>,
    pub cpu: Duration,
    pub wall: Duration,
}

/// Resolves once `stop` is true; never when its sender is gone without saying so.
pub(super) async fn stopped(stop: &mut watch::Receiver<bool>) {
    if stop.wait_for(|v| *v).await.is_err() {
        std::future::pending::<()>().await;
    }
}
