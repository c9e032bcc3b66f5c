//! Service-level objectives: `p99<50ms`, `p99.9<=1.5s`, `errors<0.1%`, `rate>=190/s`,
//! `send_lag<50us` (the generator's own lateness, p99), `added_p99<2ms` (what the mesh adds
//! over the run's baseline cell), `vcpu_per_1k<0.5` (the sidecars' CPU per 1000 req/s).
//!
//! Scenarios declare them (`slo = [...]`, checked by `loadgen validate` with their
//! position), run.json carries them as written, and `report gate` evaluates them (and its
//! `--slo` flags) with this one grammar. Latency thresholds take every duration form of
//! [`crate::units::Dur`] (`1m`, `1m30s`, `250ms`, `800us`).

use crate::run::{CellResult, LATENCY_STATS};
use crate::search::SearchOutcome;
use crate::text::{signed_us, us};
use crate::units::Dur;

/// A comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Lt,
    Le,
    Gt,
    Ge,
}

impl Op {
    pub fn holds(self, v: f64, t: f64) -> bool {
        match self {
            Op::Lt => v < t,
            Op::Le => v <= t,
            Op::Gt => v > t,
            Op::Ge => v >= t,
        }
    }
}

/// What an SLO measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SloMetric {
    /// A corrected-latency statistic by name (see [`LATENCY_STATS`]); threshold in µs.
    Latency(&'static str),
    /// Failed requests / requests; threshold as a fraction.
    Errors,
    /// Achieved requests per second.
    Rate,
    /// The generator's own send lateness, p99; threshold in µs.
    SendLag,
    /// Corrected latency minus the baseline cell's, by statistic ("p50", "p90", "p99",
    /// "p99.9"); threshold in µs.
    Added(&'static str),
    /// The sidecars' CPU per 1000 requests/s of the cell, vCPU.
    VcpuPer1k,
    /// The capacity a `[search]` found, requests/s (`capacity>2000`).
    Capacity,
}

/// The statistics `added_*` SLOs take.
pub const ADDED_STATS: [&str; 4] = ["p50", "p90", "p99", "p99.9"];

impl SloMetric {
    /// Whether the metric is about the mesh (nothing to judge on a baseline cell).
    pub fn is_mesh_cost(self) -> bool {
        matches!(self, SloMetric::Added(_) | SloMetric::VcpuPer1k)
    }
}

/// One parsed objective.
#[derive(Debug, Clone, PartialEq)]
pub struct Slo {
    /// As written (trimmed).
    pub expr: String,
    pub metric: SloMetric,
    pub op: Op,
    pub threshold: f64,
}

/// An expression that is not an SLO; the message says what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("SLO '{expr}': {msg}")]
pub struct SloError {
    pub expr: String,
    pub msg: String,
}

impl Slo {
    pub fn parse(expr: &str) -> Result<Slo, SloError> {
        let err = |msg: String| SloError {
            expr: expr.to_string(),
            msg,
        };
        let e = expr.trim();
        let pos = e
            .find(['<', '>'])
            .ok_or_else(|| err("expected METRIC<VALUE or METRIC>VALUE, e.g. p99<50ms".into()))?;
        let (name, rest) = e.split_at(pos);
        let (op, value) = if let Some(v) = rest.strip_prefix("<=") {
            (Op::Le, v)
        } else if let Some(v) = rest.strip_prefix(">=") {
            (Op::Ge, v)
        } else if let Some(v) = rest.strip_prefix('<') {
            (Op::Lt, v)
        } else {
            (Op::Gt, &rest[1..])
        };
        let (name, value) = (name.trim(), value.trim());
        let (metric, threshold) = if let Some(&p) = LATENCY_STATS.iter().find(|&&p| p == name) {
            let d = Dur::parse(value).map_err(|_| {
                err(format!(
                    "'{value}' is not a duration with a unit (e.g. 800us, 50ms, 1.5s, 1m)"
                ))
            })?;
            (SloMetric::Latency(p), d.as_us())
        } else if let Some(&p) = name
            .strip_prefix("added_")
            .and_then(|n| ADDED_STATS.iter().find(|&&p| p == n))
        {
            let d = Dur::parse(value.trim_start_matches('-')).map_err(|_| {
                err(format!(
                    "'{value}' is not a duration with a unit (e.g. 2ms, 500us)"
                ))
            })?;
            let t = if value.starts_with('-') {
                -d.as_us()
            } else {
                d.as_us()
            };
            (SloMetric::Added(p), t)
        } else if name == "vcpu_per_1k" {
            let v = value
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && *v >= 0.0)
                .ok_or_else(|| {
                    err("give vCPU per 1000 req/s as a number, e.g. vcpu_per_1k<0.5".into())
                })?;
            (SloMetric::VcpuPer1k, v)
        } else if name == "capacity" {
            let v = per_second(value)
                .ok_or_else(|| err("give a capacity in requests/s, e.g. capacity>2000".into()))?;
            (SloMetric::Capacity, v)
        } else if name == "send_lag" {
            let d = Dur::parse(value).map_err(|_| {
                err(format!(
                    "'{value}' is not a duration with a unit (e.g. 50us)"
                ))
            })?;
            (SloMetric::SendLag, d.as_us())
        } else if name == "errors" {
            let pct = value
                .strip_suffix('%')
                .and_then(|v| v.trim().parse::<f64>().ok())
                .filter(|v| v.is_finite() && (0.0..=100.0).contains(v))
                .ok_or_else(|| err("give errors as a percentage, e.g. errors<0.1%".into()))?;
            (SloMetric::Errors, pct / 100.0)
        } else if name == "rate" {
            let v = per_second(value)
                .ok_or_else(|| err("give a rate in requests/s, e.g. rate>190".into()))?;
            (SloMetric::Rate, v)
        } else {
            return Err(err(format!(
                "unknown metric '{name}' (known: {}, errors, rate, send_lag, added_p50, added_p90, added_p99, added_p99.9, vcpu_per_1k, capacity)",
                LATENCY_STATS.join(", ")
            )));
        };
        Ok(Slo {
            expr: e.to_string(),
            metric,
            op,
            threshold,
        })
    }
}

/// A non-negative requests-per-second figure, `190` or `190/s`.
fn per_second(value: &str) -> Option<f64> {
    value
        .strip_suffix("/s")
        .unwrap_or(value)
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v >= 0.0)
}

/// What a cell measured for an objective: its value and how to show it, or why there is
/// none.
#[derive(Debug, Clone, PartialEq)]
pub enum Measured {
    Value(f64, String),
    /// The cell has nothing to judge it on; the reason says why.
    Missing(String),
}

impl Slo {
    /// The cell's value for this objective (`Added` needs `fill_added_latency` first).
    pub fn measure(&self, c: &CellResult) -> Measured {
        let missing = |why: &str| Measured::Missing(why.to_string());
        let cost = c.mesh_cost.as_ref();
        match self.metric {
            SloMetric::Added(p) => match cost.and_then(|m| m.added.as_ref()) {
                Some(a) => {
                    let v = a.get(p).unwrap_or(f64::NAN);
                    Measured::Value(v, format!("added {p} {} vs {}", signed_us(v), a.baseline))
                }
                None => Measured::Missing(format!(
                    "no added latency for this cell ({}), so the SLO cannot be judged",
                    cost.and_then(|m| m.note.clone())
                        .unwrap_or_else(|| "no baseline cell of the same load".into())
                )),
            },
            SloMetric::VcpuPer1k => match cost.and_then(|m| m.vcpu_per_1k_rps) {
                Some(v) => Measured::Value(v, format!("{v:.3} vCPU per 1000 req/s")),
                None => missing("no sidecar CPU was measured in this cell (no cgroup?), so the SLO cannot be judged"),
            },
            SloMetric::Latency(p) => {
                if c.latency.corrected.count == 0 {
                    missing("no completed requests in this cell, so the SLO cannot be met")
                } else {
                    let v = c.latency.corrected.get(p).unwrap_or(f64::NAN);
                    Measured::Value(v, format!("{p} {}", us(v)))
                }
            }
            SloMetric::Errors => {
                if c.requests == 0 {
                    missing("no completed requests in this cell, so the SLO cannot be met")
                } else {
                    let v = c.errors.total() as f64 / c.requests as f64;
                    Measured::Value(
                        v,
                        format!(
                            "errors {:.3} % ({} of {})",
                            v * 100.0,
                            c.errors.total(),
                            c.requests
                        ),
                    )
                }
            }
            SloMetric::SendLag => match c.generator.as_ref().and_then(|g| g.send_lag) {
                Some(l) => Measured::Value(l.p99_us, format!("send lag p99 {}", us(l.p99_us))),
                None => missing("no send lateness was measured in this cell (closed loop, or nothing sent), so the SLO cannot be judged"),
            },
            SloMetric::Rate => Measured::Value(c.achieved_rate, format!("{:.1}/s", c.achieved_rate)),
            SloMetric::Capacity => match &c.search {
                None => missing("this cell ran no capacity search ([search]), so the SLO cannot be judged"),
                Some(s) => match (s.outcome, s.capacity_rps) {
                    (SearchOutcome::Interrupted, _) => missing(
                        "its capacity search was interrupted before it found a capacity, so the SLO cannot be judged",
                    ),
                    (SearchOutcome::MaxSteps, Some(v)) => Measured::Value(
                        v,
                        format!(
                            "capacity {}, unconfirmed: the step budget ran out",
                            s.capacity_text()
                        ),
                    ),
                    (_, Some(v)) => Measured::Value(v, format!("capacity {}", s.capacity_text())),
                    // below the lower bound: nothing held, judged as zero
                    (_, None) => Measured::Value(0.0, format!("capacity {}", s.capacity_text())),
                },
            },
        }
    }

    /// Judge a cell: `Ok(line)` when it holds, `Err(line)` when it does not or cannot be
    /// judged.
    pub fn judge(&self, c: &CellResult) -> Result<String, String> {
        match self.measure(c) {
            Measured::Value(v, shown) if self.op.holds(v, self.threshold) => {
                Ok(format!("measured {shown}: within `{}`", self.expr))
            }
            Measured::Value(_, shown) => Err(format!("measured {shown}: violates `{}`", self.expr)),
            Measured::Missing(why) => Err(why),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slo_expressions_parse() {
        let s = Slo::parse("p99<50ms").unwrap();
        assert_eq!(s.metric, SloMetric::Latency("p99"));
        assert_eq!((s.op, s.threshold), (Op::Lt, 50_000.0));
        let s = Slo::parse(" p99.9 <= 1.5s ").unwrap();
        assert_eq!(
            (s.op, s.threshold, s.expr.as_str()),
            (Op::Le, 1_500_000.0, "p99.9 <= 1.5s")
        );
        assert_eq!(Slo::parse("max<1m30s").unwrap().threshold, 90e6);
        assert_eq!(Slo::parse("p50<800us").unwrap().threshold, 800.0);
        let s = Slo::parse("added_p99<2ms").unwrap();
        assert_eq!((s.metric, s.threshold), (SloMetric::Added("p99"), 2000.0));
        let s = Slo::parse("added_p99.9<=-1ms").unwrap();
        assert_eq!(
            (s.metric, s.threshold),
            (SloMetric::Added("p99.9"), -1000.0)
        );
        let s = Slo::parse("capacity>=2000/s").unwrap();
        assert_eq!(
            (s.metric, s.op, s.threshold),
            (SloMetric::Capacity, Op::Ge, 2000.0)
        );
        assert!(Slo::parse("capacity>lots").is_err());
        let s = Slo::parse("vcpu_per_1k<0.5").unwrap();
        assert_eq!((s.metric, s.threshold), (SloMetric::VcpuPer1k, 0.5));
        assert!(Slo::parse("added_p98<2ms").is_err());
        assert!(Slo::parse("added_p99<2").is_err());
        assert!(Slo::parse("vcpu_per_1k<lots").is_err());
        let s = Slo::parse("send_lag<50us").unwrap();
        assert_eq!((s.metric, s.threshold), (SloMetric::SendLag, 50.0));
        let s = Slo::parse("errors<0.1%").unwrap();
        assert!((s.threshold - 0.001).abs() < 1e-12);
        let s = Slo::parse("rate>=190/s").unwrap();
        assert_eq!(
            (s.metric, s.op, s.threshold),
            (SloMetric::Rate, Op::Ge, 190.0)
        );
        for bad in [
            "p99<50",
            "p98<5ms",
            "errors<0.1",
            "p99",
            "rate>fast",
            "p99<-3ms",
            "p99<fast",
            "errors<200%",
        ] {
            let e = Slo::parse(bad).unwrap_err().to_string();
            assert!(e.contains(bad), "{e}");
        }
    }
}
