//! `time.sync`: is the wall clock synchronised and left alone? Distributed load (a shared
//! start time), packet timestamps and tracing all compare wall clocks across machines.
//!
//! Three live measurements over a short window:
//! - the kernel's NTP state (`adjtimex`, read-only): `STA_UNSYNC`, the maximum and
//!   estimated error;
//! - clock steps: a `timerfd` on CLOCK_REALTIME armed with `TFD_TIMER_CANCEL_ON_SET` is
//!   cancelled by every discontinuous change of the wall clock (settimeofday,
//!   clock_settime, an NTP step), so each one is counted, none is missed;
//! - drift: how much CLOCK_REALTIME advanced against CLOCK_MONOTONIC_RAW over the window,
//!   in ppm (steps included; NTP slewing alone stays within 500 ppm).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use meshbench_schema::{Finding, Verdict};

use super::{finding, fmt_num, num, skip, text, Check, Ctx, NOT_LIVE};
use crate::profile::Thresholds;

const ID: &str = "time.sync";
const TITLE: &str = "Wall clock synchronised, not stepped";
const REMEDY: &str = "run one NTP client (chrony or systemd-timesyncd) against a good source and stop anything else setting the clock (a second NTP client, a hypervisor agent's time sync); until then distributed start times and timestamps across nodes disagree";

fn thresholds(t: &Thresholds) -> String {
    let s = &t.timesync;
    format!(
        "warn: unsynchronised, max error > {} ms, > {} steps/min or |drift| > {} ppm; fail: > {} steps/min or |drift| > {} ppm",
        fmt_num(s.warn_max_error_ms),
        fmt_num(s.warn_steps_per_min),
        fmt_num(s.warn_drift_ppm),
        fmt_num(s.fail_steps_per_min),
        fmt_num(s.fail_drift_ppm)
    )
}

/// The kernel's view of clock discipline (`adjtimex` with no modes: reads only).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NtpState {
    pub unsynchronised: bool,
    pub max_error_us: i64,
    pub est_error_us: i64,
}

/// The kernel's NTP state now (also what `loadgen run` records of its host's clock).
#[allow(unsafe_code)]
pub fn ntp_state() -> Result<NtpState, String> {
    // SAFETY: a zeroed timex with modes = 0 asks adjtimex to change nothing and fill it in
    let mut tx: libc::timex = unsafe { std::mem::zeroed() };
    let state = unsafe { libc::adjtimex(&mut tx) };
    if state < 0 {
        return Err(format!("adjtimex: {}", std::io::Error::last_os_error()));
    }
    Ok(NtpState {
        unsynchronised: state == libc::TIME_ERROR || tx.status & libc::STA_UNSYNC != 0,
        max_error_us: tx.maxerror as i64,
        est_error_us: tx.esterror as i64,
    })
}

#[allow(unsafe_code)]
fn now(clock: libc::clockid_t) -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a valid out pointer
    unsafe { libc::clock_gettime(clock, &mut ts) };
    Duration::new(
        ts.tv_sec.max(0) as u64,
        ts.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}

/// (monotonic raw, realtime) read as close together as this host allows: the pair with
/// the narrowest bracket of 20.
fn clock_pair() -> (Duration, Duration) {
    let mut best = (Duration::MAX, Duration::ZERO, Duration::ZERO);
    for _ in 0..20 {
        let a = now(libc::CLOCK_MONOTONIC_RAW);
        let r = now(libc::CLOCK_REALTIME);
        let b = now(libc::CLOCK_MONOTONIC_RAW);
        let width = b.saturating_sub(a);
        if width < best.0 {
            best = (width, a + width / 2, r);
        }
    }
    (best.1, best.2)
}

/// A file descriptor closed when dropped.
struct Fd(i32);

impl Drop for Fd {
    #[allow(unsafe_code)]
    fn drop(&mut self) {
        // SAFETY: a descriptor this struct owns
        unsafe { libc::close(self.0) };
    }
}

fn os_err(what: &str) -> String {
    format!("{what}: {}", std::io::Error::last_os_error())
}

/// Arm `fd` (a CLOCK_REALTIME timerfd) with an absolute expiry a year ahead: it never
/// fires, it is only cancelled by a set of the wall clock.
#[allow(unsafe_code)]
fn arm(fd: i32) -> Result<(), String> {
    let far = now(libc::CLOCK_REALTIME) + Duration::from_secs(365 * 86_400);
    let spec = libc::itimerspec {
        it_interval: libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        },
        it_value: libc::timespec {
            tv_sec: far.as_secs() as libc::time_t,
            tv_nsec: far.subsec_nanos() as _,
        },
    };
    let flags = libc::TFD_TIMER_ABSTIME | libc::TFD_TIMER_CANCEL_ON_SET;
    // SAFETY: valid fd and spec
    if unsafe { libc::timerfd_settime(fd, flags, &spec, std::ptr::null_mut()) } < 0 {
        Err(os_err("timerfd_settime"))
    } else {
        Ok(())
    }
}

/// What a [`ClockWatch`] saw so far.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClockReading {
    /// Discontinuous sets of the wall clock (settimeofday, clock_settime, an NTP step).
    pub steps: u64,
    /// How much faster CLOCK_REALTIME advanced than CLOCK_MONOTONIC_RAW, ppm (steps
    /// included; NTP slewing alone stays within 500 ppm).
    pub drift_ppm: f64,
    pub watched: Duration,
    /// False once the watching thread stopped on an error of its own (poll, re-arming the
    /// timer): steps after that were not counted.
    pub counting: bool,
}

/// Watches the wall clock from [`ClockWatch::start`] until dropped: a thread of its own
/// blocks on a CLOCK_REALTIME timerfd armed with `TFD_TIMER_CANCEL_ON_SET`, which every
/// discontinuous change of the wall clock cancels, so every step is counted (sets closer
/// together than the thread wakes count as one); an eventfd ends it. No periodic
/// wake-ups: a load generator can run beside it.
pub struct ClockWatch {
    steps: Arc<AtomicU64>,
    counting: Arc<AtomicBool>,
    stop: Option<Fd>,
    thread: Option<std::thread::JoinHandle<()>>,
    start: (Duration, Duration),
    started: Instant,
}

impl ClockWatch {
    #[allow(unsafe_code)]
    pub fn start() -> Result<Self, String> {
        // SAFETY: plain syscalls creating descriptors owned by `Fd`
        let timer = unsafe { libc::timerfd_create(libc::CLOCK_REALTIME, libc::TFD_CLOEXEC) };
        if timer < 0 {
            return Err(os_err("timerfd_create"));
        }
        let timer = Fd(timer);
        // SAFETY: as above
        let stop = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if stop < 0 {
            return Err(os_err("eventfd"));
        }
        let stop = Fd(stop);
        arm(timer.0)?;
        let steps = Arc::new(AtomicU64::new(0));
        let counted = steps.clone();
        let counting = Arc::new(AtomicBool::new(true));
        let alive = counting.clone();
        let stop_fd = stop.0;
        let start = clock_pair();
        let thread = std::thread::Builder::new()
            .name("clock-watch".into())
            .spawn(move || {
                let timer = timer;
                // every return but the eventfd's is the watch failing: say so
                let failed = || alive.store(false, Ordering::Relaxed);
                loop {
                    let mut p = [
                        libc::pollfd {
                            fd: timer.0,
                            events: libc::POLLIN,
                            revents: 0,
                        },
                        libc::pollfd {
                            fd: stop_fd,
                            events: libc::POLLIN,
                            revents: 0,
                        },
                    ];
                    // SAFETY: two valid pollfds
                    let n = unsafe { libc::poll(p.as_mut_ptr(), 2, -1) };
                    if n < 0 {
                        if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted
                        {
                            continue;
                        }
                        return failed();
                    }
                    if p[1].revents != 0 {
                        return;
                    }
                    if p[0].revents == 0 {
                        continue;
                    }
                    let mut buf = [0u8; 8];
                    // SAFETY: 8 bytes into an 8-byte buffer
                    let r = unsafe { libc::read(timer.0, buf.as_mut_ptr().cast(), 8) };
                    if r < 0
                        && std::io::Error::last_os_error().raw_os_error() == Some(libc::ECANCELED)
                    {
                        counted.fetch_add(1, Ordering::Relaxed);
                        if arm(timer.0).is_err() {
                            return failed();
                        }
                    }
                }
            })
            .map_err(|e| format!("clock watch thread: {e}"))?;
        Ok(ClockWatch {
            steps,
            counting,
            stop: Some(stop),
            thread: Some(thread),
            start,
            started: Instant::now(),
        })
    }

    /// Steps counted and drift measured since the start.
    pub fn reading(&self) -> ClockReading {
        let (m1, r1) = clock_pair();
        let mono = m1.saturating_sub(self.start.0).as_secs_f64();
        let real = r1.as_secs_f64() - self.start.1.as_secs_f64();
        ClockReading {
            steps: self.steps.load(Ordering::Relaxed),
            drift_ppm: if mono > 0.0 {
                (real - mono) / mono * 1e6
            } else {
                0.0
            },
            watched: self.started.elapsed(),
            counting: self.counting.load(Ordering::Relaxed),
        }
    }
}

impl Drop for ClockWatch {
    #[allow(unsafe_code)]
    fn drop(&mut self) {
        if let Some(stop) = &self.stop {
            let one: u64 = 1;
            // SAFETY: 8 bytes from an 8-byte value into our eventfd
            unsafe { libc::write(stop.0, (&one as *const u64).cast(), 8) };
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        // the eventfd closes only after the thread has seen it
        self.stop.take();
    }
}

/// Count the wall clock's discontinuous changes during `window`, and the drift of
/// CLOCK_REALTIME against CLOCK_MONOTONIC_RAW over it, ppm.
pub fn watch(window: Duration) -> Result<(u64, f64, Duration), String> {
    let w = ClockWatch::start()?;
    std::thread::sleep(window);
    let r = w.reading();
    Ok((r.steps, r.drift_ppm, r.watched))
}

/// Set CLOCK_REALTIME to its own reading: a discontinuous set, which a [`ClockWatch`]
/// counts as a step, that moves the clock by well under a microsecond. Needs CAP_SYS_TIME;
/// for the tests of step counting (here and in loadgen).
#[allow(unsafe_code)]
pub fn set_clock_to_itself() -> Result<(), String> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and valid pointers
    unsafe {
        libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts);
        if libc::clock_settime(libc::CLOCK_REALTIME, &ts) != 0 {
            return Err(os_err("clock_settime"));
        }
    }
    Ok(())
}

/// The verdict of the measured state, steps per minute and drift.
pub fn judge(
    state: Option<NtpState>,
    steps_per_min: f64,
    drift_ppm: f64,
    t: &Thresholds,
) -> Verdict {
    let s = &t.timesync;
    if steps_per_min > s.fail_steps_per_min || drift_ppm.abs() > s.fail_drift_ppm {
        return Verdict::Fail;
    }
    let unsynced = state.is_some_and(|n| n.unsynchronised);
    let max_err = state.is_some_and(|n| n.max_error_us as f64 / 1000.0 > s.warn_max_error_ms);
    if unsynced
        || max_err
        || steps_per_min > s.warn_steps_per_min
        || drift_ppm.abs() > s.warn_drift_ppm
    {
        Verdict::Warn
    } else {
        Verdict::Pass
    }
}

pub struct TimeSync;

impl Check for TimeSync {
    describe!(ID, TITLE, thresholds);
    fn live_only(&self) -> bool {
        true
    }
    fn run(&self, ctx: &Ctx) -> Vec<Finding> {
        let th = self.thresholds(ctx.t());
        if !ctx.host.is_live() {
            return vec![skip(ID, TITLE, th, NOT_LIVE)];
        }
        let window = if ctx.quick {
            Duration::from_millis(500)
        } else {
            Duration::from_secs(2)
        };
        let state = ntp_state();
        let (steps, drift, took) = match watch(window) {
            Ok(m) => m,
            Err(e) => return vec![skip(ID, TITLE, th, e)],
        };
        let per_min = steps as f64 * 60.0 / took.as_secs_f64().max(1e-3);
        let st = state.as_ref().ok().copied();
        let verdict = judge(st, per_min, drift, ctx.t());
        let mut value = format!(
            "{steps} step(s) in {:.1} s ({} /min), drift {} ppm",
            took.as_secs_f64(),
            fmt_num(per_min),
            fmt_num(drift)
        );
        let mut m = vec![
            num("clock_steps", steps as f64, ""),
            num("clock_steps_per_min", per_min, "1/min"),
            num("clock_drift_ppm", drift, "ppm"),
        ];
        match &state {
            Ok(n) => {
                value.push_str(&format!(
                    ", kernel {} (max error {} ms)",
                    if n.unsynchronised {
                        "UNSYNCHRONISED"
                    } else {
                        "synchronised"
                    },
                    fmt_num(n.max_error_us as f64 / 1000.0)
                ));
                m.push(super::flag("clock_unsynchronised", n.unsynchronised));
                m.push(num(
                    "clock_max_error_ms",
                    n.max_error_us as f64 / 1000.0,
                    "ms",
                ));
                m.push(num(
                    "clock_est_error_ms",
                    n.est_error_us as f64 / 1000.0,
                    "ms",
                ));
            }
            Err(e) => m.push(text("adjtimex", e.clone())),
        }
        vec![finding(ID, TITLE, verdict, value, th, REMEDY, m)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_states_give_each_verdict() {
        let t = Thresholds::default();
        let synced = Some(NtpState {
            unsynchronised: false,
            max_error_us: 20_000,
            est_error_us: 100,
        });
        assert_eq!(judge(synced, 0.0, 3.0, &t), Verdict::Pass);
        // the 2026-12-01 dev guest: +500 µs every ~100 ms, STA_UNSYNC
        let unsynced = Some(NtpState {
            unsynchronised: true,
            max_error_us: 16_000_000,
            est_error_us: 16_000_000,
        });
        assert_eq!(judge(unsynced, 600.0, 5000.0, &t), Verdict::Fail);
        assert_eq!(judge(unsynced, 0.0, 1.0, &t), Verdict::Warn);
        assert_eq!(judge(synced, 2.0, 0.0, &t), Verdict::Warn);
        assert_eq!(judge(synced, 0.0, 700.0, &t), Verdict::Warn);
        assert_eq!(judge(synced, 0.0, -2000.0, &t), Verdict::Fail);
        assert_eq!(judge(None, 0.0, 0.0, &t), Verdict::Pass);
    }

    /// Setting the wall clock to what it reads (a sub-microsecond change) is a
    /// discontinuous set: each of three is counted. Needs root (CAP_SYS_TIME).
    #[test]
    #[allow(unsafe_code)]
    fn each_setting_of_the_wall_clock_is_counted() {
        // SAFETY: geteuid has no preconditions
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIPPED: setting the clock needs root");
            return;
        }
        let watcher = std::thread::spawn(|| watch(Duration::from_millis(600)));
        std::thread::sleep(Duration::from_millis(100));
        for _ in 0..3 {
            set_clock_to_itself().unwrap();
            std::thread::sleep(Duration::from_millis(50));
        }
        let (steps, drift, took) = watcher.join().unwrap().unwrap();
        // three ours; a host whose clock is being stepped (the dev guest) adds its own
        assert!(steps >= 3, "{steps} steps counted");
        assert!(took >= Duration::from_millis(600) && took < Duration::from_secs(5));
        assert!(drift.is_finite());
    }
}
