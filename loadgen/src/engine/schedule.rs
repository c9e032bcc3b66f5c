//! The schedule of a cell: open-loop tickets released on time by a scheduler thread into a
//! FIFO semaphore (request *i* intended at `start + i/rate`), or closed-loop claims.

use meshbench_schema::LoadMode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::time::Instant;

/// Shared schedule state of a cell.
pub(super) struct Schedule {
    pub(super) mode: LoadMode,
    pub(super) start: Instant,
    pub(super) rate: f64,
    /// Open loop: first measured ticket and total tickets (warmup + measured).
    pub(super) warmup_tickets: u64,
    pub(super) total_tickets: u64,
    pub(super) next: AtomicU64,
    pub(super) permits: Semaphore,
    /// Closed loop.
    pub(super) window_start: Instant,
    pub(super) window_end: Option<Instant>,
    pub(super) max_measured: Option<u64>,
    pub(super) measured_claimed: AtomicU64,
    /// Measured requests actually sent.
    pub(super) dispatched: AtomicU64,
    pub(super) stopped: AtomicBool,
}

pub(super) struct Ticket {
    pub(super) intended: Instant,
    pub(super) measured: bool,
}

impl Schedule {
    pub async fn claim(&self) -> Option<Ticket> {
        if self.stopped.load(Ordering::Relaxed) {
            return None;
        }
        match self.mode {
            LoadMode::Open => {
                self.permits.acquire().await.ok()?.forget();
                let i = self.next.fetch_add(1, Ordering::Relaxed);
                if i >= self.total_tickets {
                    return None;
                }
                Some(Ticket {
                    intended: self.start + Duration::from_secs_f64(i as f64 / self.rate),
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
                        if self.measured_claimed.fetch_add(1, Ordering::Relaxed) >= n {
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
}

/// Releases open-loop tickets on time from a plain thread (µs-precise sleeps).
pub(super) fn spawn_scheduler(
    sched: Arc<Schedule>,
    lanes: usize,
    rt_start: Instant,
) -> std::thread::JoinHandle<()> {
    let start = rt_start.into_std();
    std::thread::spawn(move || {
        // Wake on time rather than up to the default 50 µs late.
        let _ = nix::sys::prctl::set_timerslack(1);
        let mut released: u64 = 0;
        while released < sched.total_tickets {
            if sched.stopped.load(Ordering::Relaxed) {
                return;
            }
            let now = std::time::Instant::now();
            let elapsed = now.saturating_duration_since(start).as_secs_f64();
            // Tickets whose intended time has come: i/rate <= elapsed.
            let due = ((elapsed * sched.rate).floor() as u64 + 1).min(sched.total_tickets);
            if due > released {
                sched.permits.add_permits((due - released) as usize);
                released = due;
                continue;
            }
            let next_at = start + Duration::from_secs_f64(released as f64 / sched.rate);
            let wait = next_at
                .saturating_duration_since(now)
                .min(Duration::from_millis(5));
            if !wait.is_zero() {
                std::thread::sleep(wait);
            }
        }
        // One extra permit per lane lets every lane see the end of the schedule.
        sched.permits.add_permits(lanes);
    })
}
