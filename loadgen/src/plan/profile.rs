//! `[load.profile]` -> a [`RateProfile`] (ramp or steps; `constant` is `load.rate`), and
//! `[search]` -> a [`SearchPlan`]: every rate and duration bounded as `load.rate` is.

use super::load::{rate, MAX_DURATION, MAX_RATE, MIN_RATE};
use super::target::bounded_dur;
use crate::scenario::{ProfileSection, SearchSection, Source, SpecError};
use meshbench_schema::profile::{RateProfile, RateStep};
use meshbench_schema::slo::{Slo, SloMetric};
use meshbench_schema::units::Dur;
use serde::Serialize;
use std::time::Duration;
use toml::Spanned;

/// Most steps of a `steps` profile.
pub const MAX_PROFILE_STEPS: usize = 1000;

/// A profile's measured window must be at least this long.
pub const MIN_PROFILE: Duration = Duration::from_secs(1);

/// `None` for `kind = "constant"` (the rate is `load.rate`).
pub(super) fn profile(
    src: &Source,
    p: &Spanned<ProfileSection>,
) -> Result<Option<RateProfile>, SpecError> {
    let sec = p.get_ref();
    let kind = sec.kind.as_ref().ok_or_else(|| {
        src.error_at(
            p.span(),
            "load.profile.kind is required: \"constant\", \"ramp\" or \"steps\"",
        )
    })?;
    let only = |field: &str, span: Option<std::ops::Range<usize>>, k: &str| match span {
        Some(s) => Err(src.error_at(
            s,
            format!("load.profile.{field} does not apply to kind = \"{k}\""),
        )),
        None => Ok(()),
    };
    let spans = |names: &[&str]| -> Option<(String, std::ops::Range<usize>)> {
        for n in names {
            let s = match *n {
                "from" => sec.from.as_ref().map(|v| v.span()),
                "to" => sec.to.as_ref().map(|v| v.span()),
                "over" => sec.over.as_ref().map(|v| v.span()),
                _ => sec.steps.as_ref().map(|v| v.span()),
            };
            if let Some(s) = s {
                return Some((n.to_string(), s));
            }
        }
        None
    };
    match kind.get_ref().as_str() {
        "constant" => {
            if let Some((f, s)) = spans(&["from", "to", "over", "steps"]) {
                only(&f, Some(s), "constant")?;
            }
            Ok(None)
        }
        "ramp" => {
            if let Some((f, s)) = spans(&["steps"]) {
                only(&f, Some(s), "ramp")?;
            }
            let need = |v: &Option<Spanned<f64>>, what: &str| -> Result<f64, SpecError> {
                match v {
                    Some(r) => rate(src, r, &format!("load.profile.{what}")),
                    None => Err(src.error_at(
                        p.span(),
                        format!("load.profile.{what} is required for a ramp (requests/s)"),
                    )),
                }
            };
            let from = need(&sec.from, "from")?;
            let to = need(&sec.to, "to")?;
            let over = match &sec.over {
                Some(d) => window(src, d, "load.profile.over")?,
                None => return Err(src.error_at(
                    p.span(),
                    "load.profile.over is required for a ramp (how long it takes, e.g. \"30s\")",
                )),
            };
            Ok(Some(RateProfile::Ramp {
                from,
                to,
                duration_s: over.as_secs_f64(),
            }))
        }
        "steps" => {
            if let Some((f, s)) = spans(&["from", "to", "over"]) {
                only(&f, Some(s), "steps")?;
            }
            let list = sec.steps.as_ref().ok_or_else(|| {
                src.error_at(
                    p.span(),
                    "load.profile.steps is required: [{ rate = 100, duration = \"10s\" }, ...]",
                )
            })?;
            if list.get_ref().is_empty() || list.get_ref().len() > MAX_PROFILE_STEPS {
                return Err(src.error_at(
                    list.span(),
                    format!("load.profile.steps must list 1 to {MAX_PROFILE_STEPS} steps"),
                ));
            }
            let mut steps = Vec::new();
            let mut total = Duration::ZERO;
            for (i, st) in list.get_ref().iter().enumerate() {
                let s = st.get_ref();
                let r = rate(src, &s.rate, &format!("load.profile.steps[{i}].rate"))?;
                let d = bounded_dur(
                    src,
                    &s.duration,
                    &format!("load.profile.steps[{i}].duration"),
                    MAX_DURATION,
                )?;
                total += d.0;
                steps.push(RateStep {
                    rate: r,
                    duration_s: d.0.as_secs_f64(),
                });
            }
            if total > MAX_DURATION || total < MIN_PROFILE {
                return Err(src.error_at(
                    list.span(),
                    format!(
                        "load.profile.steps last {} in all; between {} and {}",
                        Dur(total),
                        Dur(MIN_PROFILE),
                        Dur(MAX_DURATION)
                    ),
                ));
            }
            Ok(Some(RateProfile::Steps { steps }))
        }
        other => Err(src.error_at(
            kind.span(),
            format!("load.profile.kind `{other}`: expected \"constant\", \"ramp\" or \"steps\""),
        )),
    }
}

/// A measured window: more than zero, at least [`MIN_PROFILE`], at most [`MAX_DURATION`].
fn window(src: &Source, d: &Spanned<Dur>, what: &str) -> Result<Duration, SpecError> {
    let v = bounded_dur(src, d, what, MAX_DURATION)?.0;
    if v < MIN_PROFILE {
        return Err(src.error_at(
            d.span(),
            format!("{what} must be at least {}", Dur(MIN_PROFILE)),
        ));
    }
    Ok(v)
}

/// `[search]`, resolved.
#[derive(Debug, Clone, Serialize)]
pub struct SearchPlan {
    #[serde(serialize_with = "super::ser::slos")]
    pub slo: Vec<Slo>,
    pub min: f64,
    pub max: f64,
    /// Relative: 0.05 for 5 %.
    pub resolution: f64,
    pub step: Dur,
    /// Each step's warmup; `None`: `load.warmup`.
    pub warmup: Option<Dur>,
    pub max_steps: u32,
}

pub const DEFAULT_SEARCH_MIN: f64 = 100.0;
pub const DEFAULT_SEARCH_MAX: f64 = 100_000.0;
pub const DEFAULT_RESOLUTION: f64 = 0.05;
pub const DEFAULT_SEARCH_STEP: Duration = Duration::from_secs(5);
pub const DEFAULT_MAX_STEPS: i64 = 24;

pub(super) fn search(src: &Source, s: &Spanned<SearchSection>) -> Result<SearchPlan, SpecError> {
    let sec = s.get_ref();
    let list = sec.slo.as_ref().filter(|l| !l.get_ref().is_empty()).ok_or_else(|| {
        src.error_at(
            s.span(),
            "search.slo is required: the objectives every step must meet, e.g. slo = [\"p99<10ms\", \"errors<0.1%\"]",
        )
    })?;
    let mut slo = Vec::new();
    for e in list.get_ref() {
        let parsed =
            Slo::parse(e.get_ref()).map_err(|err| src.error_at(e.span(), err.to_string()))?;
        match parsed.metric {
            SloMetric::Added(_) | SloMetric::Capacity => {
                return Err(src.error_at(
                    e.span(),
                    format!(
                        "search.slo: `{}` cannot be judged on one step (it needs other cells); use latency, errors, send_lag, rate or vcpu_per_1k",
                        parsed.expr
                    ),
                ))
            }
            _ => slo.push(parsed),
        }
    }
    let bound = |v: &Option<Spanned<f64>>, what: &str, default: f64| match v {
        Some(r) => rate(src, r, what),
        None => Ok(default),
    };
    let min = bound(&sec.min, "search.min", DEFAULT_SEARCH_MIN)?;
    let max = bound(&sec.max, "search.max", DEFAULT_SEARCH_MAX.max(min))?;
    if max <= min {
        let span = sec
            .max
            .as_ref()
            .or(sec.min.as_ref())
            .map_or(s.span(), |v| v.span());
        return Err(src.error_at(
            span,
            format!("search.max ({max}) must be above search.min ({min})"),
        ));
    }
    debug_assert!((MIN_RATE..=MAX_RATE).contains(&max));
    let resolution = match &sec.resolution {
        None => DEFAULT_RESOLUTION,
        Some(r) => r
            .get_ref()
            .trim()
            .strip_suffix('%')
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|v| v.is_finite() && *v >= 0.1 && *v <= 100.0)
            .map(|v| v / 100.0)
            .ok_or_else(|| {
                src.error_at(
                    r.span(),
                    format!(
                        "search.resolution `{}`: give a percentage between 0.1% and 100%, e.g. \"5%\"",
                        r.get_ref()
                    ),
                )
            })?,
    };
    let step = match &sec.step {
        None => Dur(DEFAULT_SEARCH_STEP),
        Some(d) => Dur(window(src, d, "search.step")?),
    };
    let warmup = match &sec.warmup {
        Some(w) if w.get_ref().0 > MAX_DURATION => {
            return Err(src.error_at(
                w.span(),
                format!("search.warmup must be at most {}", Dur(MAX_DURATION)),
            ))
        }
        Some(w) => Some(*w.get_ref()),
        None => None,
    };
    let max_steps = super::load::int(
        src,
        &sec.max_steps,
        "search.max_steps",
        2,
        200,
        DEFAULT_MAX_STEPS,
    )? as u32;
    Ok(SearchPlan {
        slo,
        min,
        max,
        resolution,
        step,
        warmup,
        max_steps,
    })
}
