//! `[load]`: open or closed loop, rate, connections, how long, warmup; every number
//! bounded to what the engine can honour.

use super::profile::SearchPlan;
use super::target::bounded_dur;
use crate::engine::Idle;
use crate::scenario::{LoadSection, ModeRaw, Source, SpecError};
use meshbench_schema::profile::RateProfile;
use meshbench_schema::units::Dur;
use meshbench_schema::LoadMode;
use serde::Serialize;
use std::time::Duration;
use toml::Spanned;

/// Lowest open-loop rate: one request every 1000 s.
pub const MIN_RATE: f64 = 1e-3;
/// Highest open-loop rate one generator schedules.
pub const MAX_RATE: f64 = 1e7;
/// Most connections one generator opens.
pub const MAX_CONNECTIONS: i64 = 100_000;
/// Longest measured window or warmup.
pub const MAX_DURATION: Duration = Duration::from_secs(7 * 86400);
/// Most measured requests of one cell.
pub const MAX_REQUESTS: i64 = 10_000_000_000;

#[derive(Debug, Clone, Serialize)]
pub struct LoadPlan {
    pub mode: LoadMode,
    /// Requests/s; always set in open loop.
    pub rate: Option<f64>,
    pub connections: u32,
    /// Measured window; at least one of `duration` and `requests` is set.
    pub duration: Option<Dur>,
    pub requests: Option<u64>,
    pub warmup: Dur,
    pub think_time: Dur,
    /// Concurrent HTTP/2 streams per connection (HTTP/1.1 always 1).
    pub max_in_flight: u32,
    pub threads: u32,
    /// How the engine waits for open-loop send times.
    pub idle: Idle,
    /// CPUs the engine's worker threads are pinned to; empty: not pinned.
    pub cpus: Vec<usize>,
    /// A rate that changes over the window (`[load.profile]`); `rate` is then its mean
    /// and `duration` its length.
    pub profile: Option<RateProfile>,
}

/// An open-loop rate, checked against [`MIN_RATE`]..=[`MAX_RATE`].
pub(super) fn rate(src: &Source, r: &Spanned<f64>, what: &str) -> Result<f64, SpecError> {
    let v = *r.get_ref();
    if !v.is_finite() || v <= 0.0 {
        return Err(src.error_at(r.span(), format!("{what} must be > 0")));
    }
    if !(MIN_RATE..=MAX_RATE).contains(&v) {
        return Err(src.error_at(
            r.span(),
            format!("{what} {v:e} is out of range: between {MIN_RATE} and {MAX_RATE} requests/s"),
        ));
    }
    Ok(v)
}

/// An integer within `min..=max`, or `default`.
pub(super) fn int(
    src: &Source,
    v: &Option<Spanned<i64>>,
    what: &str,
    min: i64,
    max: i64,
    default: i64,
) -> Result<i64, SpecError> {
    match v {
        Some(x) if !(min..=max).contains(x.get_ref()) => {
            Err(src.error_at(x.span(), format!("{what} must be between {min} and {max}")))
        }
        Some(x) => Ok(*x.get_ref()),
        None => Ok(default),
    }
}

/// `[load]`; with a `[search]`, the search sets each step's rate and window.
pub(super) fn load(
    src: &Source,
    l: &LoadSection,
    search: Option<&SearchPlan>,
) -> Result<LoadPlan, SpecError> {
    let mode = match l.mode {
        None | Some(ModeRaw::Open) => LoadMode::Open,
        Some(ModeRaw::Closed) => LoadMode::Closed,
    };
    let profile = match &l.profile {
        Some(p) => super::profile::profile(src, p)?,
        None => None,
    };
    if let (Some(p), Some(prof)) = (&l.profile, &profile) {
        let n = prof.curve().tickets();
        if n > MAX_REQUESTS as u64 {
            return Err(src.error_at(
                p.span(),
                format!("load.profile schedules {n} requests; at most {MAX_REQUESTS} per cell"),
            ));
        }
        let clash = [
            (
                "load.rate",
                l.rate.as_ref().map(|v| v.span()),
                "the profile sets the rate",
            ),
            (
                "load.duration",
                l.duration.as_ref().map(|v| v.span()),
                "the profile's own durations make the window",
            ),
        ];
        if mode == LoadMode::Closed {
            return Err(src.error_at(
                p.span(),
                "load.profile applies to open loop only (load.mode = \"closed\")",
            ));
        }
        for (field, span, why) in clash {
            if let Some(span) = span {
                return Err(src.error_at(
                    span,
                    format!("{field} and load.profile are exclusive: {why}"),
                ));
            }
        }
    }
    if search.is_some() {
        if mode == LoadMode::Closed {
            return Err(src.error_file(
                "[search] finds an open-loop rate; it does not apply with load.mode = \"closed\"",
            ));
        }
        let clash = [
            ("load.rate", l.rate.as_ref().map(|v| v.span())),
            ("load.duration", l.duration.as_ref().map(|v| v.span())),
            ("load.requests", l.requests.as_ref().map(|v| v.span())),
            ("load.profile", l.profile.as_ref().map(|v| v.span())),
        ];
        for (field, span) in clash {
            if let Some(span) = span {
                return Err(src.error_at(
                    span,
                    format!("{field} and [search] are exclusive: the search sets each step's rate and window (search.min, search.max, search.step)"),
                ));
            }
        }
    }
    let rate = match &l.rate {
        _ if search.is_some() => search.map(|s| s.min),
        _ if profile.is_some() => profile
            .as_ref()
            .map(|p| p.curve().tickets() as f64 / p.duration_s()),
        Some(r) if mode == LoadMode::Closed => {
            return Err(src.error_at(
                r.span(),
                "load.rate applies to open loop only (load.mode = \"closed\")",
            ))
        }
        Some(r) => Some(rate(src, r, "load.rate")?),
        None if mode == LoadMode::Open => {
            return Err(src.error_file("load.rate is required in open loop (requests/s)"))
        }
        None => None,
    };
    let connections = int(
        src,
        &l.connections,
        "load.connections",
        1,
        MAX_CONNECTIONS,
        4,
    )? as u32;
    let max_in_flight = int(src, &l.max_in_flight, "load.max_in_flight", 1, 10_000, 16)? as u32;
    let threads = int(src, &l.threads, "load.threads", 1, 1024, 1)? as u32;
    let idle = match &l.idle {
        None => Idle::default(),
        Some(i) => Idle::parse(i.get_ref()).ok_or_else(|| {
            src.error_at(
                i.span(),
                format!(
                    "load.idle `{}`: expected \"spin\", \"hybrid\" or \"sleep\"",
                    i.get_ref()
                ),
            )
        })?,
    };
    let online = std::thread::available_parallelism().map_or(1024, |n| n.get().max(1024));
    let mut cpus = Vec::new();
    if let Some(list) = &l.cpus {
        for c in list.get_ref() {
            let v = *c.get_ref();
            if !(0..online as i64).contains(&v) {
                return Err(src.error_at(
                    c.span(),
                    format!("load.cpus: {v} is not a CPU index (0 and up)"),
                ));
            }
            if cpus.contains(&(v as usize)) {
                return Err(src.error_at(c.span(), format!("load.cpus: {v} is listed twice")));
            }
            cpus.push(v as usize);
        }
    }
    let duration = match (&profile, search) {
        (Some(p), _) => Some(Dur(Duration::from_secs_f64(p.duration_s()))),
        (None, Some(s)) => Some(s.step),
        (None, None) => l
            .duration
            .as_ref()
            .map(|d| bounded_dur(src, d, "load.duration", MAX_DURATION))
            .transpose()?,
    };
    let requests = match &l.requests {
        Some(r) if *r.get_ref() <= 0 => {
            return Err(src.error_at(r.span(), "load.requests must be > 0"))
        }
        Some(r) if *r.get_ref() > MAX_REQUESTS => {
            return Err(src.error_at(
                r.span(),
                format!("load.requests must be at most {MAX_REQUESTS}"),
            ))
        }
        Some(r) => Some(*r.get_ref() as u64),
        None => None,
    };
    if duration.is_none() && requests.is_none() {
        return Err(
            src.error_file("load.duration or load.requests is required (the run must be bounded)")
        );
    }
    let warmup = match &l.warmup {
        Some(w) if w.get_ref().0 > MAX_DURATION => {
            return Err(src.error_at(
                w.span(),
                format!("load.warmup must be at most {}", Dur(MAX_DURATION)),
            ))
        }
        Some(w) => *w.get_ref(),
        None => Dur::default(),
    };
    let think_time = match &l.think_time {
        Some(d) if mode == LoadMode::Open => {
            return Err(src.error_at(
                d.span(),
                "load.think_time applies to closed loop only (load.mode = \"closed\")",
            ))
        }
        Some(d) if duration.is_some_and(|dur| d.get_ref().0 >= dur.0) => {
            return Err(src.error_at(
                d.span(),
                "load.think_time must be shorter than load.duration",
            ))
        }
        Some(d) if d.get_ref().0 > MAX_DURATION => {
            return Err(src.error_at(
                d.span(),
                format!("load.think_time must be at most {}", Dur(MAX_DURATION)),
            ))
        }
        Some(d) => *d.get_ref(),
        None => Dur::default(),
    };
    Ok(LoadPlan {
        mode,
        rate,
        connections,
        duration,
        requests,
        warmup,
        think_time,
        max_in_flight,
        threads,
        idle,
        cpus,
        profile,
    })
}
