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

use meshbench_schema::profile::{Curve, RateProfile};
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

/// Hybrid: how long before a due time the worker stops sleeping and spins, at least (the
/// tokio timer has 1 ms resolution; a sleeping thread wakes up to ~1.5 ms late on a busy
/// guest). The window grows to twice the worst recent overshoot of a wake-up, up to
/// [`MAX_SPIN_AHEAD`], and shrinks back slowly: a host that wakes threads late costs CPU,
/// not accuracy.
pub const SPIN_AHEAD: Duration = Duration::from_millis(2);
pub const MAX_SPIN_AHEAD: Duration = Duration::from_millis(20);

/// State the workers of one cell share (closed loop: the measured-request budget).
#[derive(Debug, Default)]
pub(super) struct CellBudget {
    pub(super) measured_claimed: AtomicU64,
}

/// A client-side split of the tickets over target endpoints by weight: ticket *i* goes to
/// the endpoint its hash falls into, the same in every worker and every run (a
/// pseudo-random split, as a sidecar's weighted pick, but reproducible).
pub(super) struct Split {
    cumulative: Vec<u64>,
    total: u64,
    /// Per endpoint: this worker's next ticket index to look at.
    cursors: Vec<std::sync::Mutex<u64>>,
}

impl Split {
    /// `None` for fewer than two endpoints (nothing to split).
    pub(super) fn new(weights: &[u32]) -> Option<Split> {
        if weights.len() < 2 {
            return None;
        }
        let mut acc = 0u64;
        let cumulative = weights
            .iter()
            .map(|w| {
                acc += u64::from(*w);
                acc
            })
            .collect();
        Some(Split {
            cumulative,
            total: acc.max(1),
            cursors: weights.iter().map(|_| std::sync::Mutex::new(0)).collect(),
        })
    }

    /// The endpoint of the cell's ticket `i`.
    pub(super) fn pick(&self, i: u64) -> usize {
        let x = splitmix64(i) % self.total;
        self.cumulative
            .partition_point(|&c| c <= x)
            .min(self.cumulative.len() - 1)
    }
}

/// SplitMix64: a well-mixed 64-bit hash of the ticket index.
fn splitmix64(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// When the cell's open-loop tickets are intended, from the schedule's start.
#[derive(Debug, Clone)]
pub enum Pace {
    /// Ticket *i* at `i / rate` (warmup and measured window alike).
    Constant(f64),
    /// A rate profile: the warmup's tickets at its first rate, then measured ticket *n*
    /// at `warmup + N⁻¹(n)` (the integral of the profile's rate, exact per segment).
    Profile {
        first_rate: f64,
        warmup_tickets: u64,
        warmup_s: f64,
        curve: Arc<Curve>,
    },
}

impl Pace {
    /// A profile's pace with a warmup of `warmup` at its first rate; returns the pace and
    /// the warmup's ticket count.
    pub fn profile(profile: &RateProfile, warmup: Duration) -> (Pace, u64) {
        let first_rate = profile.first_rate();
        let warmup_tickets = (warmup.as_secs_f64() * first_rate - 1e-9).ceil().max(0.0) as u64;
        (
            Pace::Profile {
                first_rate,
                warmup_tickets,
                warmup_s: warmup.as_secs_f64(),
                curve: Arc::new(profile.curve()),
            },
            warmup_tickets,
        )
    }

    /// Seconds from the schedule's start to ticket `i`'s intended time.
    pub fn offset_s(&self, i: u64) -> f64 {
        match self {
            Pace::Constant(rate) => i as f64 / rate,
            Pace::Profile {
                first_rate,
                warmup_tickets,
                warmup_s,
                curve,
            } => {
                if i < *warmup_tickets {
                    i as f64 / first_rate
                } else {
                    warmup_s + curve.time_of((i - warmup_tickets) as f64)
                }
            }
        }
    }
}

/// One worker's schedule.
pub struct Schedule {
    pub(super) mode: LoadMode,
    pub(super) start: Instant,
    pub(super) pace: Pace,
    /// This worker's tickets are `first + k * step` of the cell's.
    pub(super) first: u64,
    pub(super) step: u64,
    /// Open loop: the cell's first measured ticket and total tickets (warmup + measured).
    pub(super) warmup_tickets: u64,
    pub(super) total_tickets: u64,
    /// Tickets of this worker taken so far (k).
    pub(super) next: AtomicU64,
    /// Released tickets, one semaphore per target endpoint (one without a split).
    pub(super) permits: Vec<Semaphore>,
    /// A client-side split: which endpoint each ticket goes to.
    pub(super) split: Option<Split>,
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
        Schedule::paced(start, Pace::Constant(rate), first, step, 0, total)
    }

    /// An open-loop schedule of `total` tickets (the first `warmup` of them unmeasured) at
    /// `pace`, of which this worker takes `first + k * step`.
    pub fn paced(
        start: Instant,
        pace: Pace,
        first: u64,
        step: u64,
        warmup: u64,
        total: u64,
    ) -> Schedule {
        Schedule {
            mode: LoadMode::Open,
            start,
            pace,
            first,
            step,
            warmup_tickets: warmup,
            total_tickets: total,
            next: AtomicU64::new(0),
            permits: vec![Semaphore::new(0)],
            split: None,
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
        self.permits[0].add_permits(n);
    }

    /// Release this worker's ticket `k` to the endpoint it goes to.
    fn release_ticket(&self, k: u64) {
        let e = match &self.split {
            Some(s) => s.pick(self.ticket(k)),
            None => 0,
        };
        self.permits[e].add_permits(1);
    }

    /// After the last ticket: `n` permits to every endpoint, so every lane sees the end.
    fn release_end(&self, n: usize) {
        for p in &self.permits {
            p.add_permits(n);
        }
    }

    /// The next of this worker's tickets that goes to endpoint `e` (with a split).
    fn next_for(&self, split: &Split, e: usize) -> u64 {
        let own = self.own_tickets();
        let mut c = split.cursors[e].lock().unwrap_or_else(|p| p.into_inner());
        while *c < own && split.pick(self.ticket(*c)) != e {
            *c += 1;
        }
        let k = *c;
        *c += 1;
        k
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
        // rates >= MIN_RATE and i < 2^53 (bounded by the plan): finite and in range
        self.start + Duration::from_secs_f64(self.pace.offset_s(i))
    }

    /// Take the next ticket of a lane whose connection goes to endpoint `endpoint`.
    pub async fn claim(&self, endpoint: usize) -> Option<Ticket> {
        if self.stopped.load(Ordering::Relaxed) {
            return None;
        }
        match self.mode {
            LoadMode::Open => {
                let e = endpoint.min(self.permits.len() - 1);
                self.permits[e].acquire().await.ok()?.forget();
                let k = match &self.split {
                    Some(s) => self.next_for(s, e),
                    None => self.next.fetch_add(1, Ordering::Relaxed),
                };
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
        for p in &self.permits {
            p.close();
        }
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
    let mut ahead = SPIN_AHEAD;
    while k < own {
        if sched.is_stopped() {
            return;
        }
        let due = sched.intended(sched.ticket(k));
        let now = Instant::now();
        if now >= due {
            // every ticket that is due, at once (a late worker catches up)
            sched.release_ticket(k);
            k += 1;
            // on time: the spin window shrinks back towards its minimum
            ahead = next_ahead(ahead, Duration::ZERO);
            continue;
        }
        if idle == Idle::Hybrid && due - now > ahead {
            let wake = due - ahead;
            tokio::time::sleep_until(wake).await;
            ahead = next_ahead(ahead, Instant::now().saturating_duration_since(wake));
        } else {
            // back to the runtime: other tasks run and I/O is polled (epoll, no wait),
            // then this task is polled again
            tokio::task::yield_now().await;
        }
    }
    sched.release_end(lanes);
}

/// The hybrid spin window after a wake-up `over` late (or, with zero, after a ticket): at
/// least twice that at once, else 1/32 of the way back towards [`SPIN_AHEAD`].
fn next_ahead(ahead: Duration, over: Duration) -> Duration {
    let want = (over * 2).clamp(SPIN_AHEAD, MAX_SPIN_AHEAD);
    if want >= ahead {
        want
    } else {
        ahead - (ahead - want) / 32
    }
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
                sched.release_ticket(k);
                k += 1;
                continue;
            }
            std::thread::sleep((due - now).min(Duration::from_millis(5)));
        }
        sched.release_end(lanes);
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

    #[test]
    fn machines_times_threads_cover_the_single_machine_schedule_once_at_its_times() {
        // worker.rs: thread t of T on machine i of N takes first = i + N*t, step = N*T
        let start = Instant::now();
        for (machines, threads, total) in [(3u64, 2u64, 100u64), (2, 1, 7), (5, 3, 4)] {
            let mut all: Vec<(u64, Instant)> = Vec::new();
            for i in 0..machines {
                for t in 0..threads {
                    let s =
                        Schedule::open(start, 1000.0, i + machines * t, machines * threads, total);
                    for k in 0..s.own_tickets() {
                        let cell = s.ticket(k);
                        assert_eq!(cell % machines, i, "machine {i} took ticket {cell}");
                        all.push((cell, s.intended(cell)));
                    }
                }
            }
            all.sort();
            let single = Schedule::open(start, 1000.0, 0, 1, total);
            let want: Vec<(u64, Instant)> = (0..total).map(|k| (k, single.intended(k))).collect();
            assert_eq!(all, want, "{machines} machines x {threads} threads");
        }
    }

    /// Every ticket's offset from the start, in seconds, for a profile's pace.
    fn offsets(p: &RateProfile, warmup: Duration, workers: u64) -> (Vec<(u64, f64)>, u64, u64) {
        let start = Instant::now();
        let (pace, w) = Pace::profile(p, warmup);
        let total = w + p.curve().tickets();
        let mut all = Vec::new();
        for t in 0..workers {
            let s = Schedule::paced(start, pace.clone(), t, workers, w, total);
            for k in 0..s.own_tickets() {
                let i = s.ticket(k);
                all.push((i, (s.intended(i) - start).as_secs_f64()));
            }
        }
        all.sort_by_key(|x| x.0);
        (all, w, total)
    }

    #[test]
    fn a_profile_schedules_exactly_its_integral_per_second_with_no_gaps_or_doubles() {
        use meshbench_schema::profile::RateStep;
        let step = |rate, d| RateStep {
            rate,
            duration_s: d,
        };
        let profiles = [
            RateProfile::Ramp {
                from: 100.0,
                to: 300.0,
                duration_s: 10.0,
            },
            RateProfile::Ramp {
                from: 733.0,
                to: 41.5,
                duration_s: 7.0,
            },
            RateProfile::Steps {
                steps: vec![
                    step(100.0, 2.0),
                    step(250.0, 1.5),
                    step(40.0, 2.5),
                    step(1000.0, 1.0),
                ],
            },
        ];
        for p in &profiles {
            for workers in [1u64, 3] {
                let warmup = Duration::from_millis(500);
                let (all, w, total) = offsets(p, warmup, workers);
                // every ticket once, in order of time
                assert_eq!(
                    all.iter().map(|x| x.0).collect::<Vec<_>>(),
                    (0..total).collect::<Vec<_>>()
                );
                assert!(
                    all.windows(2).all(|x| x[0].1 <= x[1].1),
                    "{p:?}: out of order"
                );
                // the warmup at the first rate, ending before the window
                let r0 = p.first_rate();
                assert_eq!(w, (0.5 * r0 - 1e-9).ceil() as u64);
                for &(i, t) in &all[..w as usize] {
                    assert!((t - i as f64 / r0).abs() < 1e-6 && t < 0.5, "{i} {t}");
                }
                // per second of the window: exactly ceil(N(s+1)) - ceil(N(s))
                let curve = p.curve();
                let seconds = p.duration_s().ceil() as u64;
                let mut per = vec![0u64; seconds as usize];
                for &(_, t) in &all[w as usize..] {
                    let s = ((t - 0.5) + 1e-9).floor() as usize;
                    per[s.min(seconds as usize - 1)] += 1;
                }
                let want: Vec<u64> = (0..seconds).map(|s| curve.tickets_in_second(s)).collect();
                assert_eq!(per, want, "{p:?} over {workers} workers");
                assert_eq!(per.iter().sum::<u64>(), curve.tickets());
                // no burst at an edge: consecutive gaps never shorter than the higher
                // rate's interval allows, never longer than the lower's
                let (lo, hi) = match p {
                    RateProfile::Ramp { from, to, .. } => (from.min(*to), from.max(*to)),
                    RateProfile::Steps { steps } => {
                        steps.iter().fold((f64::MAX, 0.0f64), |a, s| {
                            (a.0.min(s.rate), a.1.max(s.rate))
                        })
                    }
                };
                for x in all[w as usize..].windows(2) {
                    let gap = x[1].1 - x[0].1;
                    assert!(
                        gap >= 1.0 / hi - 1e-6 && gap <= 1.0 / lo + 1e-6,
                        "{p:?}: gap {gap} at {}",
                        x[0].1
                    );
                }
            }
        }
    }

    #[test]
    fn a_split_follows_the_weights_and_every_ticket_goes_to_one_endpoint() {
        let split = Split::new(&[90, 10]).unwrap();
        let n = 100_000u64;
        let v2 = (0..n).filter(|&i| split.pick(i) == 1).count() as f64;
        // binomial sd at n = 1e5, p = 0.1: ~95; 5 sd
        assert!((v2 - 10_000.0).abs() < 475.0, "{v2}");
        assert!(Split::new(&[100]).is_none());
        assert_eq!(Split::new(&[0, 5]).unwrap().pick(7), 1);

        // two workers, two endpoints: the tickets each lane takes are the schedule, once
        let mut taken = Vec::new();
        for w in 0..2u64 {
            let mut s = sched(w, 2, 1000);
            s.split = Split::new(&[3, 1]);
            s.permits = vec![Semaphore::new(0), Semaphore::new(0)];
            let sp = s.split.as_ref().unwrap();
            let mut per = [0usize; 2];
            for k in 0..s.own_tickets() {
                per[sp.pick(s.ticket(k))] += 1;
            }
            for (e, &count) in per.iter().enumerate() {
                for _ in 0..count {
                    let k = s.next_for(sp, e);
                    assert!(k < s.own_tickets());
                    assert_eq!(sp.pick(s.ticket(k)), e);
                    taken.push(s.ticket(k));
                }
                // nothing more for this endpoint
                assert!(s.next_for(sp, e) >= s.own_tickets());
            }
        }
        taken.sort();
        assert_eq!(taken, (0..1000).collect::<Vec<_>>());
    }

    #[test]
    fn the_hybrid_window_follows_late_wake_ups() {
        let ms = Duration::from_millis;
        assert_eq!(next_ahead(SPIN_AHEAD, ms(0)), SPIN_AHEAD);
        // a wake-up 3 ms late: spin 6 ms ahead from now on
        assert_eq!(next_ahead(SPIN_AHEAD, ms(3)), ms(6));
        assert_eq!(next_ahead(ms(6), ms(50)), MAX_SPIN_AHEAD);
        // on time again: back towards the minimum, slowly, never below it
        let mut a = ms(6);
        for _ in 0..32 {
            let b = next_ahead(a, Duration::ZERO);
            assert!(b < a && b >= SPIN_AHEAD);
            a = b;
        }
        for _ in 0..10_000 {
            a = next_ahead(a, Duration::ZERO);
        }
        assert!(a - SPIN_AHEAD < Duration::from_micros(100), "{a:?}");
    }
}
