//! The checks. A check reads the host through [`Ctx::host`], measures, and returns one or
//! more [`Finding`]s, each with a value, the threshold, a verdict and a remedy.
//!
//! A check never panics and never fails another check: whatever it cannot read makes its
//! own finding `skip` with the reason.

use meshbench_schema::{Finding, MeasuredValue, Measurement, Verdict};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::host::Host;
use crate::profile::{Profile, Thresholds};

/// The `id`, `title` and `thresholds` methods of a [`Check`] impl, from the check's id and
/// title and a `Fn(&Thresholds) -> String` for its thresholds text.
macro_rules! describe {
    ($id:expr, $title:expr, $thresholds:expr) => {
        fn id(&self) -> &'static str {
            $id
        }
        fn title(&self) -> &'static str {
            $title
        }
        fn thresholds(&self, t: &$crate::profile::Thresholds) -> String {
            ($thresholds)(t)
        }
    };
}

pub mod disk;
pub mod hypervisor;
pub mod io;
pub mod memory;
pub mod mesh;
pub mod steal;
pub mod timesync;
pub mod vcpu;
pub mod virtio;

/// Everything a check may use.
pub struct Ctx {
    pub host: Host,
    pub profile: Profile,
    /// `--path` as a host path (looked up under the root).
    pub path: String,
    /// Steal sample window.
    pub sample: Duration,
    /// `--quick`: shorter live measurements.
    pub quick: bool,
    /// False with `--no-io` or `--quick`.
    pub io: bool,
    /// First /proc/stat snapshot, taken when the run started (live roots only).
    pub stat_start: Option<(Instant, Result<String, String>)>,
    hv: OnceLock<hypervisor::HvFacts>,
}

impl Ctx {
    pub fn new(host: Host, profile: Profile, path: String) -> Ctx {
        Ctx {
            host,
            profile,
            path,
            sample: Duration::from_secs(5),
            quick: false,
            io: true,
            stat_start: None,
            hv: OnceLock::new(),
        }
    }

    pub fn t(&self) -> &Thresholds {
        &self.profile.t
    }

    /// Hypervisor facts, detected once and shared by the checks that need them.
    pub fn hypervisor(&self) -> &hypervisor::HvFacts {
        self.hv.get_or_init(|| hypervisor::detect(&self.host))
    }

    /// Take the first /proc/stat snapshot now (call at the start of a live run, so the steal
    /// window covers the other checks).
    pub fn start_steal_window(&mut self) {
        let first = self.host.read("/proc/stat").map_err(|e| e.to_string());
        self.stat_start = Some((Instant::now(), first));
    }
}

/// One check: an id for `--only` / `--skip`, a title, its thresholds, and a run.
pub trait Check: Sync {
    fn id(&self) -> &'static str;
    fn title(&self) -> &'static str;
    /// The thresholds in force, as shown by `--list-checks` and in the table.
    fn thresholds(&self, t: &Thresholds) -> String;
    /// Ids of the findings this check produces (one for most checks).
    fn finding_ids(&self) -> Vec<&'static str> {
        vec![self.id()]
    }
    /// True when this check needs the live host and does nothing on a fixture root.
    fn live_only(&self) -> bool {
        false
    }
    fn run(&self, ctx: &Ctx) -> Vec<Finding>;
}

/// Every check, in the order the table shows them.
pub fn registry() -> Vec<Box<dyn Check>> {
    vec![
        Box::new(steal::Steal),
        Box::new(vcpu::Vcpu),
        Box::new(vcpu::Wakeup),
        Box::new(hypervisor::Hypervisor),
        Box::new(virtio::VirtioNet),
        Box::new(virtio::VirtioDisk),
        Box::new(disk::DiskDevice),
        Box::new(io::DiskIo),
        Box::new(mesh::KernelVersion),
        Box::new(mesh::Modules),
        Box::new(mesh::IpForward),
        Box::new(mesh::Swap),
        Box::new(mesh::Conntrack),
        Box::new(mesh::Somaxconn),
        Box::new(mesh::Nofile),
        Box::new(mesh::Clocksource),
        Box::new(timesync::TimeSync),
        Box::new(mesh::Thp),
        Box::new(mesh::Governor),
        Box::new(memory::Memory),
    ]
}

/// The reason a live-only measurement gives on a fixture root.
pub const NOT_LIVE: &str = "live-only measurement: the root is not /";

/// Builder-free constructor of a finding. The remedy is kept only for warn and fail.
pub fn finding(
    check: &str,
    title: &str,
    verdict: Verdict,
    value: impl Into<String>,
    threshold: impl Into<String>,
    remedy: &str,
    measurements: Vec<Measurement>,
) -> Finding {
    Finding {
        check: check.to_string(),
        title: title.to_string(),
        verdict,
        value: value.into(),
        threshold: threshold.into(),
        remedy: match verdict {
            Verdict::Warn | Verdict::Fail if !remedy.is_empty() => Some(remedy.to_string()),
            _ => None,
        },
        reason: None,
        measurements,
    }
}

/// A skipped finding with its reason.
pub fn skip(
    check: &str,
    title: &str,
    threshold: impl Into<String>,
    reason: impl Into<String>,
) -> Finding {
    let reason = reason.into();
    Finding {
        check: check.to_string(),
        title: title.to_string(),
        verdict: Verdict::Skip,
        value: "-".into(),
        threshold: threshold.into(),
        remedy: None,
        reason: Some(reason),
        measurements: vec![],
    }
}

/// Attach a reason (context) to a finding.
/// Set a finding's reason (bounded and escaped: a reason may quote a file of the host).
pub fn with_reason(mut f: Finding, reason: impl Into<String>) -> Finding {
    f.reason = Some(crate::host::bounded(
        &reason.into(),
        4 * crate::host::MAX_EXCERPT,
    ));
    f
}

/// Verdict for "bad when high": fail above `fail`, warn above `warn`.
pub fn above(v: f64, warn: f64, fail: f64) -> Verdict {
    if v > fail {
        Verdict::Fail
    } else if v > warn {
        Verdict::Warn
    } else {
        Verdict::Pass
    }
}

/// Verdict for "bad when low": fail below `fail`, warn below `warn`.
pub fn below(v: f64, warn: f64, fail: f64) -> Verdict {
    if v < fail {
        Verdict::Fail
    } else if v < warn {
        Verdict::Warn
    } else {
        Verdict::Pass
    }
}

/// The worse of two verdicts (skip counts as better than pass here: it only ranks
/// pass < warn < fail).
pub fn worst(a: Verdict, b: Verdict) -> Verdict {
    let rank = |v: Verdict| match v {
        Verdict::Skip => 0,
        Verdict::Pass => 1,
        Verdict::Warn => 2,
        Verdict::Fail => 3,
    };
    if rank(b) > rank(a) {
        b
    } else {
        a
    }
}

pub fn num(name: &str, value: f64, unit: &str) -> Measurement {
    Measurement {
        name: name.into(),
        value: MeasuredValue::Number(value),
        unit: unit.into(),
    }
}

/// A text fact; it may come from a file of the host, so it is a bounded, escaped excerpt.
pub fn text(name: &str, value: impl Into<String>) -> Measurement {
    Measurement {
        name: name.into(),
        value: MeasuredValue::Text(crate::host::excerpt(&value.into())),
        unit: String::new(),
    }
}

pub fn flag(name: &str, value: bool) -> Measurement {
    Measurement {
        name: name.into(),
        value: MeasuredValue::Flag(value),
        unit: String::new(),
    }
}

/// Format a number with sensible precision for the table.
pub fn fmt_num(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdict_helpers() {
        assert_eq!(above(0.4, 0.5, 2.0), Verdict::Pass);
        assert_eq!(above(0.5, 0.5, 2.0), Verdict::Pass);
        assert_eq!(above(0.6, 0.5, 2.0), Verdict::Warn);
        assert_eq!(above(2.1, 0.5, 2.0), Verdict::Fail);
        assert_eq!(below(0.95, 0.9, 0.7), Verdict::Pass);
        assert_eq!(below(0.8, 0.9, 0.7), Verdict::Warn);
        assert_eq!(below(0.5, 0.9, 0.7), Verdict::Fail);
        assert_eq!(worst(Verdict::Pass, Verdict::Warn), Verdict::Warn);
        assert_eq!(worst(Verdict::Fail, Verdict::Warn), Verdict::Fail);
        assert_eq!(worst(Verdict::Skip, Verdict::Pass), Verdict::Pass);
    }

    #[test]
    fn remedy_only_for_warn_and_fail() {
        let f = finding("x", "X", Verdict::Pass, "1", "t", "fix it", vec![]);
        assert!(f.remedy.is_none());
        let f = finding("x", "X", Verdict::Warn, "1", "t", "fix it", vec![]);
        assert_eq!(f.remedy.as_deref(), Some("fix it"));
    }

    #[test]
    fn check_ids_are_unique() {
        let mut ids: Vec<&str> = registry().iter().flat_map(|c| c.finding_ids()).collect();
        ids.extend(registry().iter().map(|c| c.id()));
        let mut seen = std::collections::HashSet::new();
        for c in registry() {
            assert!(seen.insert(c.id()), "duplicate check id {}", c.id());
        }
        assert!(ids.len() > registry().len());
    }
}
