//! Open-loop rate profiles: a constant rate (the default), a linear ramp, or a list of
//! steps. Request *n* of the measured window is intended at the time the integral of the
//! rate reaches *n*: `N(t) = ∫₀ᵗ rate`, `t_n = N⁻¹(n)`, computed in closed form per
//! segment, so a long profile never drifts and a step edge neither bursts nor leaves a
//! gap. The engine schedules with [`Curve::time_of`]; the report reads the offered rate of
//! each second back with [`Curve::count`].

use serde::{Deserialize, Serialize};

/// A rate that changes over the measured window (`[load.profile]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum RateProfile {
    /// From `from` to `to` requests/s, linearly, over `duration_s`.
    Ramp { from: f64, to: f64, duration_s: f64 },
    /// Each step's rate for its duration, one after another.
    Steps { steps: Vec<RateStep> },
}

/// One step of a [`RateProfile::Steps`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RateStep {
    pub rate: f64,
    pub duration_s: f64,
}

/// A segment of a curve: from `t0` (count `n0` so far), rate `r0 + 2·a·(t − t0)`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Segment {
    t0: f64,
    n0: f64,
    r0: f64,
    a: f64,
}

/// A profile made ready for scheduling: its segments with their cumulative counts.
#[derive(Debug, Clone, PartialEq)]
pub struct Curve {
    segments: Vec<Segment>,
    end_s: f64,
    end_n: f64,
}

impl RateProfile {
    /// The measured window's length, seconds.
    pub fn duration_s(&self) -> f64 {
        match self {
            RateProfile::Ramp { duration_s, .. } => *duration_s,
            RateProfile::Steps { steps } => steps.iter().map(|s| s.duration_s).sum(),
        }
    }

    /// The rate at the start (the warmup runs at it).
    pub fn first_rate(&self) -> f64 {
        match self {
            RateProfile::Ramp { from, .. } => *from,
            RateProfile::Steps { steps } => steps.first().map_or(0.0, |s| s.rate),
        }
    }

    /// The highest rate of the profile.
    pub fn peak_rate(&self) -> f64 {
        match self {
            RateProfile::Ramp { from, to, .. } => from.max(*to),
            RateProfile::Steps { steps } => steps.iter().map(|s| s.rate).fold(0.0, f64::max),
        }
    }

    /// "ramp 100→2000/s over 30s", "steps 100/s 10s, 500/s 10s".
    pub fn label(&self) -> String {
        match self {
            RateProfile::Ramp {
                from,
                to,
                duration_s,
            } => format!("ramp {from}→{to}/s over {duration_s}s"),
            RateProfile::Steps { steps } => format!(
                "steps {}",
                steps
                    .iter()
                    .map(|s| format!("{}/s {}s", s.rate, s.duration_s))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }

    pub fn curve(&self) -> Curve {
        let mut segments = Vec::new();
        let (mut t, mut n) = (0.0, 0.0);
        let mut push = |r0: f64, r1: f64, d: f64, t: &mut f64, n: &mut f64| {
            if d <= 0.0 {
                return;
            }
            let a = (r1 - r0) / (2.0 * d);
            segments.push(Segment {
                t0: *t,
                n0: *n,
                r0,
                a,
            });
            *t += d;
            *n += r0 * d + a * d * d;
        };
        match self {
            RateProfile::Ramp {
                from,
                to,
                duration_s,
            } => push(*from, *to, *duration_s, &mut t, &mut n),
            RateProfile::Steps { steps } => {
                for s in steps {
                    push(s.rate, s.rate, s.duration_s, &mut t, &mut n);
                }
            }
        }
        Curve {
            segments,
            end_s: t,
            end_n: n,
        }
    }
}

impl Curve {
    /// Requests intended in `[0, t)`: the integral of the rate (clamped to the window).
    pub fn count(&self, t: f64) -> f64 {
        let t = t.clamp(0.0, self.end_s);
        let i = self
            .segments
            .partition_point(|s| s.t0 <= t)
            .saturating_sub(1);
        match self.segments.get(i) {
            None => 0.0,
            Some(s) => {
                let dt = t - s.t0;
                s.n0 + s.r0 * dt + s.a * dt * dt
            }
        }
    }

    /// When the count reaches `n` (the intended time of measured request `n`, from the
    /// window's start), seconds; `n` beyond the profile's total maps to its end.
    pub fn time_of(&self, n: f64) -> f64 {
        let n = n.clamp(0.0, self.end_n);
        let i = self
            .segments
            .partition_point(|s| s.n0 <= n)
            .saturating_sub(1);
        let Some(s) = self.segments.get(i) else {
            return 0.0;
        };
        let m = n - s.n0;
        // r0·dt + a·dt² = m, in the form that is stable for a ramp up or down and a = 0
        let disc = (s.r0 * s.r0 + 4.0 * s.a * m).max(0.0);
        let den = s.r0 + disc.sqrt();
        let dt = if den > 0.0 { 2.0 * m / den } else { 0.0 };
        (s.t0 + dt).min(self.end_s)
    }

    /// The measured requests of the whole profile (request `n` for `n < tickets()`).
    pub fn tickets(&self) -> u64 {
        (self.end_n - 1e-9).ceil().max(1.0) as u64
    }

    /// The window's length, seconds.
    pub fn end_s(&self) -> f64 {
        self.end_s
    }

    /// Requests intended in `[a, b)` per second: the offered rate of that span.
    pub fn offered(&self, a: f64, b: f64) -> f64 {
        if b <= a {
            return 0.0;
        }
        (self.count(b) - self.count(a)) / (b - a)
    }

    /// Requests intended in second `s` of the window: `ceil(N(s+1)) − ceil(N(s))`.
    pub fn tickets_in_second(&self, s: u64) -> u64 {
        let c = |t: f64| (self.count(t) - 1e-9).ceil().max(0.0) as u64;
        let end = self.tickets();
        c((s + 1) as f64).min(end) - c(s as f64).min(end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ramp_integrates_and_inverts() {
        let p = RateProfile::Ramp {
            from: 100.0,
            to: 300.0,
            duration_s: 10.0,
        };
        let c = p.curve();
        // N(t) = 100 t + 10 t²
        assert_eq!(c.count(10.0), 2000.0);
        assert_eq!(c.count(1.0), 110.0);
        assert_eq!(c.time_of(110.0), 1.0);
        assert_eq!(c.tickets(), 2000);
        for n in [0.0, 1.0, 57.5, 999.0, 1999.0] {
            assert!((c.count(c.time_of(n)) - n).abs() < 1e-9, "{n}");
        }
        assert!((c.offered(9.0, 10.0) - 290.0).abs() < 1e-9);
        // down: 300 → 100, the same total
        let d = RateProfile::Ramp {
            from: 300.0,
            to: 100.0,
            duration_s: 10.0,
        }
        .curve();
        assert!((d.count(10.0) - 2000.0).abs() < 1e-9);
        assert!((d.time_of(290.0) - 1.0).abs() < 1e-12);
        assert!((d.time_of(2000.0) - 10.0).abs() < 1e-9);
    }

    #[test]
    fn steps_are_piecewise_and_their_edges_exact() {
        let p = RateProfile::Steps {
            steps: vec![
                RateStep {
                    rate: 100.0,
                    duration_s: 2.0,
                },
                RateStep {
                    rate: 250.0,
                    duration_s: 1.0,
                },
            ],
        };
        let c = p.curve();
        assert_eq!(c.tickets(), 450);
        assert_eq!(c.time_of(200.0), 2.0);
        assert_eq!(c.time_of(199.0), 1.99);
        assert_eq!(c.time_of(201.0), 2.004);
        assert_eq!(
            (0..3).map(|s| c.tickets_in_second(s)).collect::<Vec<_>>(),
            vec![100, 100, 250]
        );
        assert_eq!(p.peak_rate(), 250.0);
        assert_eq!(p.first_rate(), 100.0);
        assert_eq!(p.duration_s(), 3.0);
    }
}
