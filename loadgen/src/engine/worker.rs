//! One engine worker: an OS thread with its own current-thread tokio runtime that owns its
//! share of the cell's connections, the lanes on them, its share of the schedule (see
//! `schedule`), and one [`Recorder`] for all of them (so memory grows with workers, not
//! with connections). Nothing on the request path crosses threads: the ticket, the lane,
//! hyper's connection task and the socket write run on this one thread.
//!
//! Once a second it sends the coordinator ([`super::run_cell`]) a [`Snapshot`] of the
//! interval; at the end a last one, and its totals in a [`WorkerOut`].

use super::conn::{self, Sender};
use super::lane::Lane;
use super::schedule::{
    release_in_runtime, spawn_sleeping_releaser, CellBudget, Idle, Pace, Schedule, Split,
};
use super::target::Target;
use super::{stopped, CellLoad, INTERRUPT_DRAIN};
use crate::plan::Protocol;
use crate::record::{new_hist, Hist, Pair, Recorder};
use meshbench_schema::LoadMode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// CPU time (user + system) of the calling thread.
pub(super) fn thread_cpu() -> Duration {
    use nix::sys::resource::{getrusage, UsageWho};
    match getrusage(UsageWho::RUSAGE_THREAD) {
        Ok(u) => {
            let tv = |t: nix::sys::time::TimeVal| {
                Duration::from_secs(t.tv_sec().max(0) as u64)
                    + Duration::from_micros(t.tv_usec().max(0) as u64)
            };
            tv(u.user_time()) + tv(u.system_time())
        }
        Err(_) => Duration::ZERO,
    }
}

/// Pin the calling thread to `cpu` ([`check_cpus`] has checked that it may run there).
fn pin(cpu: usize) {
    let mut set = nix::sched::CpuSet::new();
    if set.set(cpu).is_ok() {
        let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set);
    }
}

/// Every CPU of `cpus` is in this process's allowed set, or the error names the first that
/// is not and the allowed ones.
pub(super) fn check_cpus(cpus: &[usize]) -> Result<(), String> {
    if cpus.is_empty() {
        return Ok(());
    }
    let allowed = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0))
        .map_err(|e| format!("load.cpus: cannot read this process's CPU affinity: {e}"))?;
    let ok: Vec<usize> = (0..nix::sched::CpuSet::count())
        .filter(|&c| allowed.is_set(c).unwrap_or(false))
        .collect();
    match cpus.iter().find(|c| !ok.contains(c)) {
        None => Ok(()),
        Some(c) => Err(format!(
            "load.cpus: CPU {c} is not available to this process (allowed: {})",
            ok.iter()
                .map(|c| c.to_string())
                .collect::<Vec<_>>()
                .join(",")
        )),
    }
}

/// The moment the cell starts, shared by the coordinator once every worker is connected.
#[derive(Debug, Clone, Copy)]
pub(super) struct Start {
    pub(super) at: Instant,
    pub(super) window_start: Instant,
}

/// One interval of one worker.
pub(super) struct Snapshot {
    pub(super) worker: usize,
    /// 1, 2, ...: the interval ending at `window_start + index` seconds; a worker's last
    /// snapshot (`last`) holds what it measured since its last full interval.
    pub(super) index: u64,
    pub(super) last: bool,
    pub(super) until: Instant,
    pub(super) pair: Pair,
    pub(super) lag: Hist,
    pub(super) requests: u64,
    /// Corrected latency of the interval's failed requests (count = its errors).
    pub(super) failed: Hist,
}

/// What a worker measured in the whole cell.
pub(super) struct WorkerOut {
    pub(super) rec: Recorder,
    pub(super) dispatched: u64,
    /// Measured open-loop tickets that were this worker's.
    pub(super) own_measured: u64,
    pub(super) end: Instant,
    pub(super) cpu: Duration,
    pub(super) interrupted: bool,
}

/// Everything a worker is given.
pub(super) struct WorkerSpec {
    pub(super) index: usize,
    pub(super) workers: usize,
    pub(super) target: Arc<Target>,
    /// This worker's connections to each target endpoint.
    pub(super) connections: Vec<u32>,
    pub(super) load: CellLoad,
    pub(super) pace: Pace,
    pub(super) warmup_tickets: u64,
    pub(super) total_tickets: u64,
    pub(super) planned: Option<Duration>,
    pub(super) budget: Arc<CellBudget>,
    pub(super) stop: watch::Receiver<bool>,
    pub(super) ready: mpsc::UnboundedSender<usize>,
    pub(super) start: watch::Receiver<Option<Start>>,
    pub(super) snapshots: mpsc::UnboundedSender<Snapshot>,
}

/// Run a worker to its end on its own thread (a current-thread runtime).
pub(super) fn spawn(spec: WorkerSpec) -> std::io::Result<std::thread::JoinHandle<WorkerOut>> {
    std::thread::Builder::new()
        .name(format!("engine-{}", spec.index))
        .spawn(move || {
            if !spec.load.cpus.is_empty() {
                pin(spec.load.cpus[spec.index % spec.load.cpus.len()]);
            }
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a current-thread runtime builds");
            rt.block_on(run(spec))
        })
}

async fn run(spec: WorkerSpec) -> WorkerOut {
    let WorkerSpec {
        index,
        workers,
        target,
        connections,
        load,
        pace,
        warmup_tickets,
        total_tickets,
        planned,
        budget,
        mut stop,
        ready,
        mut start,
        snapshots,
    } = spec;
    // Connections first, concurrently (failures are counted later, per request), so that
    // connection set-up does not delay the first scheduled requests.
    let mut connecting = JoinSet::new();
    let endpoint_of: Vec<usize> = connections
        .iter()
        .enumerate()
        .flat_map(|(e, &n)| std::iter::repeat_n(e, n as usize))
        .collect();
    for (i, &e) in endpoint_of.iter().enumerate() {
        let t = target.clone();
        connecting.spawn(async move { (i, conn::connect(&t, e).await.ok()) });
    }
    let mut firsts: Vec<Option<Sender>> = endpoint_of.iter().map(|_| None).collect();
    while let Some(r) = connecting.join_next().await {
        if let Ok((i, s)) = r {
            firsts[i] = s;
        }
    }
    let _ = ready.send(index);
    let started = match start.wait_for(|s| s.is_some()).await {
        Ok(s) => *s,
        Err(_) => None,
    };
    let rec = Arc::new(Mutex::new(Recorder::default()));
    let cpu0 = thread_cpu();
    let Some(Start { at, window_start }) = started else {
        return WorkerOut {
            rec: Recorder::default(),
            dispatched: 0,
            own_measured: 0,
            end: Instant::now(),
            cpu: Duration::ZERO,
            interrupted: true,
        };
    };
    let sched = Arc::new(Schedule {
        mode: load.mode,
        start: at,
        pace,
        // this machine's tickets are `share.index + k * share.count` of the cell; of those,
        // this worker thread takes every `workers`-th
        first: load.share.index + load.share.count * index as u64,
        step: load.share.count * workers as u64,
        warmup_tickets,
        total_tickets,
        next: AtomicU64::new(0),
        permits: target.endpoints.iter().map(|_| Semaphore::new(0)).collect(),
        split: match load.mode {
            LoadMode::Open => Split::new(
                &target
                    .endpoints
                    .iter()
                    .map(|e| e.weight)
                    .collect::<Vec<_>>(),
            ),
            LoadMode::Closed => None,
        },
        window_start,
        window_end: load.duration.map(|d| window_start + d),
        max_measured: load.requests,
        budget,
        dispatched: AtomicU64::new(0),
        stopped: AtomicBool::new(false),
    });
    let own_measured = (0..sched.own_tickets())
        .filter(|&k| sched.ticket(k) >= warmup_tickets)
        .count() as u64;

    let mut lanes = JoinSet::new();
    let mut lane_count = 0usize;
    for (first, &endpoint) in firsts.into_iter().zip(&endpoint_of) {
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
            lanes.spawn(
                Lane {
                    target: target.clone(),
                    sched: sched.clone(),
                    rec: rec.clone(),
                    slot: slot.clone(),
                    own: None,
                    stop: stop.clone(),
                    think: load.think_time,
                    endpoint,
                }
                .run(),
            );
        }
    }
    let mut sleeper = None;
    if load.mode == LoadMode::Open {
        match load.idle {
            Idle::Sleep => sleeper = Some(spawn_sleeping_releaser(sched.clone(), lane_count)),
            idle => {
                lanes.spawn(release_in_runtime(sched.clone(), lane_count, idle));
            }
        }
    }

    let mut ticker = tokio::time::interval_at(
        window_start + Duration::from_secs(1),
        Duration::from_secs(1),
    );
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ticks = 0u64;
    let snapshot = |k: u64, last: bool| {
        let mut pair = Pair::default();
        let mut lag = new_hist();
        let mut failed = new_hist();
        let requests =
            rec.lock()
                .expect("recorder lock")
                .take_interval(&mut pair, &mut lag, &mut failed);
        Snapshot {
            worker: index,
            index: k,
            last,
            until: Instant::now(),
            pair,
            lag,
            requests,
            failed,
        }
    };
    let mut interrupted = *stop.borrow();
    if interrupted {
        sched.stop();
    }
    let mut drain_deadline = Instant::now() + INTERRUPT_DRAIN;
    let give_up_at = match (load.mode, planned) {
        (LoadMode::Open, Some(p)) => {
            Some(window_start + p + target.timeout + Duration::from_secs(1))
        }
        _ => None,
    };
    let mut gave_up = false;
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                ticks += 1;
                let _ = snapshots.send(snapshot(ticks, false));
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
            _ = tokio::time::sleep_until(give_up_at.unwrap_or(at)), if !gave_up && !interrupted && give_up_at.is_some() => {
                // The target could not keep up: stop sending the backlog; what was not
                // sent is reported as unsent.
                gave_up = true;
                sched.stop();
            }
        }
    }
    interrupted |= *stop.borrow();
    sched.stop();
    let mut cpu = thread_cpu().saturating_sub(cpu0);
    if let Some(h) = sleeper {
        cpu += h.join().unwrap_or_default();
    }
    let end = Instant::now();
    let mut last = snapshot(ticks + 1, true);
    last.until = end;
    let _ = snapshots.send(last);
    let rec = std::mem::take(&mut *rec.lock().expect("recorder lock"));
    WorkerOut {
        dispatched: sched.dispatched.load(Ordering::Relaxed),
        own_measured,
        rec,
        end,
        cpu,
        interrupted,
    }
}
