//! A cell's capacity search (`[search]` in a scenario): every probe step at a constant
//! rate, its verdict against the search's SLO, and the capacity found.

use crate::run::Percentiles;
use serde::{Deserialize, Serialize};

/// How a search ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SearchOutcome {
    /// Last pass and first fail within the resolution, and the last pass held on a repeat.
    Converged,
    /// The upper bound met the SLO (twice): the capacity is at least `max_rps`.
    AtMax,
    /// The lower bound failed: the capacity is below `min_rps`.
    BelowMin,
    /// The step budget ran out before the bracket narrowed to the resolution.
    MaxSteps,
    /// Stopped by an interrupt.
    Interrupted,
}

impl SearchOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            SearchOutcome::Converged => "converged",
            SearchOutcome::AtMax => "at-max",
            SearchOutcome::BelowMin => "below-min",
            SearchOutcome::MaxSteps => "max-steps",
            SearchOutcome::Interrupted => "interrupted",
        }
    }
}

/// Why a step was run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SearchPhase {
    /// Doubling from the lower bound until a rate fails (or the upper bound passes).
    Bracket,
    /// Between the last pass and the first fail (geometric midpoint).
    Bisect,
    /// The found rate, repeated: it must hold again.
    Confirm,
}

impl SearchPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            SearchPhase::Bracket => "bracket",
            SearchPhase::Bisect => "bisect",
            SearchPhase::Confirm => "confirm",
        }
    }
}

/// One probe step: a constant rate for the step's measured window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchStep {
    pub index: u32,
    pub phase: SearchPhase,
    /// Offered rate, requests/s.
    pub rate: f64,
    /// When its measured window started, seconds after the first step's.
    pub started_s: f64,
    pub duration_s: f64,
    pub requests: u64,
    pub achieved_rate: f64,
    /// Scheduled requests never sent (the target could not take the offered rate).
    #[serde(default)]
    pub unsent: u64,
    pub errors: u64,
    /// Corrected latency over the step.
    pub latency: Percentiles,
    #[serde(default)]
    pub send_lag_p99_us: Option<f64>,
    /// Whether the generator kept its own send lateness within its limit.
    #[serde(default = "yes")]
    pub generator_trusted: bool,
    /// The sidecars' CPU over the step, cores (sum over the cell's sidecars).
    #[serde(default)]
    pub sidecar_cores: Option<f64>,
    /// Share of CFS periods in which a sidecar was throttled (over all of the cell's).
    #[serde(default)]
    pub throttled_share: Option<f64>,
    #[serde(default)]
    pub vcpu_per_1k_rps: Option<f64>,
    pub passed: bool,
    /// One line per objective judged, and why a step failed beyond them.
    #[serde(default)]
    pub reasons: Vec<String>,
}

fn yes() -> bool {
    true
}

/// A cell's capacity: the highest constant rate that met the SLO and held on a repeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchResult {
    /// The objectives every step was judged by, as written.
    pub slo: Vec<String>,
    pub min_rps: f64,
    pub max_rps: f64,
    /// Relative width the bracket is narrowed to (0.05: the first fail within 5 % above
    /// the last pass).
    pub resolution: f64,
    pub step_duration_s: f64,
    pub outcome: SearchOutcome,
    /// The confirmed rate (absent when even the lower bound failed).
    #[serde(default)]
    pub capacity_rps: Option<f64>,
    /// The confidence interval of the capacity: the last passing and the first failing
    /// rate (absent when none failed: the upper bound held).
    #[serde(default)]
    pub last_pass_rps: Option<f64>,
    #[serde(default)]
    pub first_fail_rps: Option<f64>,
    /// The sidecars' vCPU per 1000 req/s at the capacity (its confirming step).
    #[serde(default)]
    pub vcpu_per_1k_rps: Option<f64>,
    /// The steps' interval log (every step's seconds, tags `step-K-corrected`,
    /// `step-K-uncorrected`, `step-K-lag`).
    #[serde(default)]
    pub hlog: Option<String>,
    pub steps: Vec<SearchStep>,
}

/// The interval-log tag of step `k`'s histograms of kind `which` ("corrected", ...).
pub fn step_tag(k: u32, which: &str) -> String {
    format!("step-{k}-{which}")
}

/// Step index and kind of a tag written by [`step_tag`].
pub fn parse_step_tag(tag: &str) -> Option<(u32, &str)> {
    let rest = tag.strip_prefix("step-")?;
    let (k, which) = rest.split_once('-')?;
    Some((k.parse().ok()?, which))
}

impl SearchResult {
    /// "2900 req/s (2900 held, 3050 failed)" or why there is no figure.
    pub fn capacity_text(&self) -> String {
        let r = |v: f64| format!("{v:.0}");
        match (self.outcome, self.capacity_rps) {
            (SearchOutcome::BelowMin, _) | (_, None) => {
                format!("below {} req/s (the lower bound failed)", r(self.min_rps))
            }
            (SearchOutcome::AtMax, Some(c)) => {
                format!("at least {} req/s (the upper bound held)", r(c))
            }
            (_, Some(c)) => match self.first_fail_rps {
                Some(f) => format!("{} req/s ({} held, {} failed)", r(c), r(c), r(f)),
                None => format!("{} req/s", r(c)),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_tags_round_trip() {
        assert_eq!(step_tag(3, "corrected"), "step-3-corrected");
        assert_eq!(parse_step_tag("step-12-lag"), Some((12, "lag")));
        assert_eq!(parse_step_tag("corrected"), None);
        assert_eq!(parse_step_tag("step-x-lag"), None);
    }
}
