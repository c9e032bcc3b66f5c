//! The schedule of one engine worker: its share of the cell's open-loop tickets (ticket
//! *i* of the cell, intended at `start + i/rate`, belongs to worker `i mod N`), released on
//! time into a FIFO semaphore that its lanes take them from; or closed-loop claims.
//!
//! How the releasing side waits for a ticket's intended time is the idle strategy:
//!
//! - [`Idle::Spin`]: a task of the worker's own runtime checks the clock between every
//!   other task and I/O poll of the worker, never parking the thread: a ticket is taken
//!   by a lane of the same thread as soon as it is due, with no wake-up of another
//!   thread between the schedule and the write (one core per worker, always);
//! - [`Idle::Hybrid`]: the same, but sleeps (tokio timer) while the next ticket is more
//!   than [`SPIN_AHEAD`] away: spins only near due times (at rates above ~500/s per
//!   worker that is all the time);
//! - [`Idle::Sleep`]: a plain thread sleeps until each due time and hands the ticket to the
//!   worker's runtime (a cross-thread wake-up: lateness up to the host's wake-up latency,
//!   about no CPU).

use meshbench_schema::LoadMode;
use serde::Serialize;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::time::Instant;

/// How a worker waits for its next ticket's intended time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Idle {
    Spin,
    #[default]
    Hybrid,
    Sleep,
}

impl Idle {
    pub fn parse(s: &str) -> Option<Idle> {
        match s {
            "spin" => Some(Idle::Spin),
            "hybrid" => Some(Idle::Hybrid),
            "sleep" => Some(Idle::Sleep),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Idle::Spin => "spin",
            Idle::Hybrid => "hybrid",
            Idle::Sleep => "sleep",
        }
    }
}

/// Hybrid: how long before a due time the worker stops sleeping and spins (the tokio timer
/// has 1 ms resolution; a sleeping thread wakes up to ~1.5 ms late on a busy guest).
pub const SPIN_AHEAD: Duration = Duration::from_millis(2);

/// State the workers of one cell share (closed loop: the measured-request budget).
#[derive(Debug, Default)]
pub(super) struct CellBudget {
    pub(super) measured_claimed: AtomicU64,
}

/// One worker's schedule.
pub struct Schedule {
    pub(super) mode: LoadMode,
    pub(super) start: Instant,
    pub(super) rate: f64,
    /// This worker's tickets are `first + k * step` of the cell's.
    pub(super) first: u64,
    pub(super) step: u64,
    /// Open loop: the cell's first measured ticket and total tickets (warmup + measured).
    pub(super) warmup_tickets: u64,
    pub(super) total_tickets: u64,
    /// Tickets of this worker taken so far (k).
    pub(super) next: AtomicU64,
    pub(super) permits: Semaphore,
    /// Closed loop.
    pub(super) window_start: Instant,
    pub(super) window_end: Option<Instant>,
    pub(super) max_measured: Option<u64>,
    pub(super) budget: Arc<CellBudget>,
    /// Measured requests actually sent.
    pub(super) dispatched: AtomicU64,
    pub(super) stopped: AtomicBool,
}

/// A ticket taken: when its request was meant to leave, and whether it is measured.
pub struct Ticket {
    pub intended: Instant,
    pub measured: bool,
}

impl Schedule {
    /// An open-loop schedule of `total` tickets at `rate` from `start`, all measured, of
    /// which this worker takes `first + k * step` (the engine builds its own; this is for
    /// benchmarks and tests of the claim path).
    pub fn open(start: Instant, rate: f64, first: u64, step: u64, total: u64) -> Schedule {
        Schedule {
            mode: LoadMode::Open,
            start,
            rate,
            first,
            step,
            warmup_tickets: 0,
            total_tickets: total,
            next: AtomicU64::new(0),
            permits: Semaphore::new(0),
            window_start: start,
            window_end: None,
            max_measured: None,
            budget: Arc::default(),
            dispatched: AtomicU64::new(0),
            stopped: AtomicBool::new(false),
        }
    }

    /// Release `n` tickets (as the releasing side does when they are due).
    pub fn release(&self, n: usize) {
        self.permits.add_permits(n);
    }

    /// How many of the cell's tickets are this worker's.
    pub fn own_tickets(&self) -> u64 {
        if self.first >= self.total_tickets {
            0
        } else {
            (self.total_tickets - self.first).div_ceil(self.step)
        }
    }

    /// The cell-wide index of this worker's `k`-th ticket.
    pub fn ticket(&self, k: u64) -> u64 {
        self.first + k * self.step
    }

    /// Intended time of the cell's ticket `i`.
    pub fn intended(&self, i: u64) -> Instant {
        // rate >= MIN_RATE and i < 2^53 (bounded by the plan): finite and in range
        self.start + Duration::from_secs_f64(i as f64 / self.rate)
    }

    pub async fn claim(&self) -> Option<Ticket> {
        if self.stopped.load(Ordering::Relaxed) {
            return None;
        }
        match self.mode {
            LoadMode::Open => {
                self.permits.acquire().await.ok()?.forget();
                let k = self.next.fetch_add(1, Ordering::Relaxed);
                if k >= self.own_tickets() {
                    return None;
                }
                let i = self.ticket(k);
                Some(Ticket {
                    intended: self.intended(i),
                    measured: i >= self.warmup_tickets,
                })
            }
            LoadMode::Closed => {
                let now = Instant::now();
                let measured = now >= self.window_start;
                if measured {
                    if self.window_end.is_some_and(|e| now >= e) {
                        return None;
                    }
                    if let Some(n) = self.max_measured {
                        if self.budget.measured_claimed.fetch_add(1, Ordering::Relaxed) >= n {
                            return None;
                        }
                    }
                }
                Some(Ticket {
                    intended: now,
                    measured,
                })
            }
        }
    }

    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Relaxed);
        self.permits.close();
    }

    fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Relaxed)
    }
}

/// Spin and hybrid: release this worker's tickets from a task of its own runtime. After
/// the last one, one extra permit per lane lets every lane see the end.
pub(super) async fn release_in_runtime(sched: Arc<Schedule>, lanes: usize, idle: Idle) {
    let own = sched.own_tickets();
    let mut k = 0;
    while k < own {
        if sched.is_stopped() {
            return;
        }
        let due = sched.intended(sched.ticket(k));
        let now = Instant::now();
        if now >= due {
            // every ticket that is due, at once (a late worker catches up)
            sched.permits.add_permits(1);
            k += 1;
            continue;
        }
        if idle == Idle::Hybrid && due - now > SPIN_AHEAD {
            tokio::time::sleep_until(due - SPIN_AHEAD).await;
        } else {
            // back to the runtime: other tasks run and I/O is polled (epoll, no wait),
            // then this task is polled again
            tokio::task::yield_now().await;
        }
    }
    sched.permits.add_permits(lanes);
}

/// Sleep: release this worker's tickets on time from a plain thread (µs sleeps, timer
/// slack 1 ns); the ticket wakes the worker's runtime. Returns the thread's CPU time.
pub(super) fn spawn_sleeping_releaser(
    sched: Arc<Schedule>,
    lanes: usize,
) -> std::thread::JoinHandle<Duration> {
    std::thread::spawn(move || {
        let _ = nix::sys::prctl::set_timerslack(1);
        let own = sched.own_tickets();
        let mut k = 0;
        while k < own {
            if sched.is_stopped() {
                return super::worker::thread_cpu();
            }
            let due = sched.intended(sched.ticket(k)).into_std();
            let now = std::time::Instant::now();
            if now >= due {
                sched.permits.add_permits(1);
                k += 1;
                continue;
            }
            std::thread::sleep((due - now).min(Duration::from_millis(5)));
        }
        sched.permits.add_permits(lanes);
        super::worker::thread_cpu()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sched(first: u64, step: u64, total: u64) -> Schedule {
        Schedule::open(Instant::now(), 1000.0, first, step, total)
    }

    #[test]
    fn the_workers_shares_are_the_whole_schedule_once() {
        for (n, total) in [(1u64, 10u64), (2, 10), (3, 10), (4, 3), (3, 0)] {
            let mut all: Vec<u64> = (0..n)
                .flat_map(|w| {
                    let s = sched(w, n, total);
                    (0..s.own_tickets()).map(move |k| s.ticket(k))
                })
                .collect();
            all.sort();
            assert_eq!(
                all,
                (0..total).collect::<Vec<_>>(),
                "{n} workers, {total} tickets"
            );
        }
        let s = sched(1, 3, 10);
        // ticket 4 of the cell is intended 4 ms after the start
        assert_eq!(s.intended(s.ticket(1)) - s.start, Duration::from_millis(4));
    }
}
