//! The capacity search of one cell (`[search]`): constant-rate steps on the cell's target,
//! each judged against the search's SLO, to find the highest rate that holds.
//!
//! Bracket: from `min`, double until a step fails (or `max` passes). Bisect: between the
//! last pass L and the first fail H at their geometric midpoint, until `H/L − 1 <=
//! resolution`. Confirm: L again; it must pass a second time (then it is the capacity,
//! and this last step's measurement, sidecar figures included, is the cell's result). A
//! failed repeat makes L the new first fail and the next lower pass the new L. The step
//! budget (`max_steps`) bounds it all.
//!
//! Every step's seconds go to `cell-N.search.hlog` (tags `step-K-corrected`, ...), every
//! step's figures and verdict to the cell's `search` in run.json.

use crate::engine::{CellLoad, Target};
use crate::plan::{CellPlan, Plan, SearchPlan};
use crate::run::{measure, Event, RunError, RunOptions};
use crate::target::CellTarget;
use meshbench_schema::hlog::{self, HlogWriter};
use meshbench_schema::search::{step_tag, SearchOutcome, SearchPhase, SearchResult, SearchStep};
use meshbench_schema::{CellResult, SidecarStats};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// A step fails when more than this share of its scheduled requests were never sent (the
/// target could not take the offered rate, whatever the latency of those it took).
pub const MAX_UNSENT_SHARE: f64 = 0.01;

/// Where the search stands: the highest rate that passed (L) and the lowest that failed
/// (H), and every rate that passed.
#[derive(Debug, Default, Clone)]
pub struct Bracket {
    pub pass: Option<f64>,
    pub fail: Option<f64>,
    passes: Vec<f64>,
}

/// What to do after a step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Next {
    Step(SearchPhase, f64),
    Done(SearchOutcome),
}

impl Bracket {
    /// The decision after a step of `phase` at `rate` that `passed`.
    pub fn after(&mut self, s: &SearchPlan, phase: SearchPhase, rate: f64, passed: bool) -> Next {
        match (phase, passed) {
            (SearchPhase::Confirm, true) => {
                return Next::Done(if self.fail.is_none() {
                    SearchOutcome::AtMax
                } else {
                    SearchOutcome::Converged
                })
            }
            (SearchPhase::Confirm, false) => {
                // it did not hold: it is the new first fail, the next lower pass the new L
                self.fail = Some(rate);
                self.passes.retain(|&p| p < rate);
                self.pass = self.passes.iter().copied().reduce(f64::max);
            }
            (_, true) => {
                self.passes.push(rate);
                self.pass = Some(self.pass.map_or(rate, |p| p.max(rate)));
            }
            (_, false) => self.fail = Some(self.fail.map_or(rate, |f| f.min(rate))),
        }
        let Some(lo) = self.pass else {
            return Next::Done(SearchOutcome::BelowMin);
        };
        match self.fail {
            None if lo >= s.max => Next::Step(SearchPhase::Confirm, s.max),
            None => Next::Step(SearchPhase::Bracket, (lo * 2.0).min(s.max)),
            Some(hi) if hi / lo - 1.0 <= s.resolution + 1e-12 => {
                Next::Step(SearchPhase::Confirm, lo)
            }
            Some(hi) => Next::Step(SearchPhase::Bisect, round_rate((lo * hi).sqrt())),
        }
    }
}

/// A rate as steps use it: 4 significant digits (the resolution is coarser).
fn round_rate(r: f64) -> f64 {
    if r <= 0.0 || !r.is_finite() {
        return r;
    }
    // through the decimal text: 351.2, not 351.20000000000005
    format!("{r:.3e}").parse().unwrap_or(r)
}

/// Judge one step: every objective, and whether the offered rate was taken at all.
pub fn judge(
    slo: &[meshbench_schema::slo::Slo],
    r: &CellResult,
    unsent: u64,
) -> (bool, Vec<String>) {
    let mut passed = true;
    let mut reasons = Vec::new();
    for o in slo {
        match o.judge(r) {
            Ok(line) => reasons.push(line),
            Err(line) => {
                passed = false;
                reasons.push(line);
            }
        }
    }
    let scheduled = r.requests + unsent;
    if scheduled > 0 && unsent as f64 > MAX_UNSENT_SHARE * scheduled as f64 {
        passed = false;
        reasons.push(format!(
            "{unsent} of {scheduled} scheduled requests were never sent: the target could not take the offered rate"
        ));
    }
    if r.interrupted {
        passed = false;
        reasons.push("interrupted".into());
    }
    (passed, reasons)
}

/// Run the search for `cell` on its prepared target; returns the cell's result (its last
/// step's measurement with the search attached) and the last step's warnings.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn run<T: CellTarget>(
    plan: &Plan,
    search: &SearchPlan,
    cell: &CellPlan,
    target: &mut T,
    dir: &Path,
    opts: &RunOptions,
    engine_target: Arc<Target>,
    base: CellLoad,
    on_event: &mut (dyn FnMut(Event<'_>) + Send),
) -> Result<(CellResult, Vec<String>), RunError> {
    let warmup = search.warmup.map_or(plan.load.warmup.0, |d| d.0);
    let mut bracket = Bracket::default();
    let mut steps: Vec<SearchStep> = Vec::new();
    let mut files: Vec<(u32, PathBuf)> = Vec::new();
    let mut first_window: Option<SystemTime> = None;
    let mut last: Option<(CellResult, Vec<String>)> = None;
    let mut next = Next::Step(SearchPhase::Bracket, search.min);
    let outcome = loop {
        let Next::Step(phase, rate) = next else {
            let Next::Done(o) = next else { unreachable!() };
            break o;
        };
        if *opts.stop.borrow() {
            break SearchOutcome::Interrupted;
        }
        if steps.len() >= search.max_steps as usize {
            break SearchOutcome::MaxSteps;
        }
        let k = steps.len() as u32;
        target.begin_step(warmup);
        let load = CellLoad {
            rate: Some(rate),
            duration: Some(search.step.0),
            requests: None,
            warmup,
            profile: None,
            ..base.clone()
        };
        let name = format!("cell-{}.step-{k}.hlog", cell.index);
        let (mut r, w, extra) = measure(
            plan,
            cell,
            dir,
            opts,
            engine_target.clone(),
            &load,
            name.clone(),
            on_event,
        )
        .await?;
        files.push((k, dir.join(&name)));
        let first = *first_window.get_or_insert(extra.window_start);
        let sidecar = target.step_stats(&r);
        if let Some(all) = &sidecar {
            r.mesh_cost = Some(meshbench_schema::MeshCost {
                vcpu_per_1k_rps: all.vcpu_per_1k_rps,
                ..Default::default()
            });
        }
        let (passed, reasons) = judge(&search.slo, &r, extra.unsent);
        let mut step = step_of(
            k,
            phase,
            rate,
            &r,
            extra.unsent,
            sidecar.as_ref(),
            passed,
            reasons,
        );
        step.started_s = extra
            .window_start
            .duration_since(first)
            .unwrap_or(Duration::ZERO)
            .as_secs_f64();
        on_event(Event::SearchStep { cell, step: &step });
        steps.push(step);
        let interrupted = r.interrupted;
        last = Some((r, w));
        if interrupted {
            break SearchOutcome::Interrupted;
        }
        next = bracket.after(search, phase, rate, passed);
    };
    let Some((mut result, warnings)) = last else {
        return Err(RunError::Target {
            cell: cell.id.clone(),
            message: "the capacity search was stopped before its first step".into(),
        });
    };
    let capacity = match outcome {
        SearchOutcome::Converged | SearchOutcome::AtMax | SearchOutcome::MaxSteps => bracket.pass,
        SearchOutcome::BelowMin | SearchOutcome::Interrupted => None,
    };
    let confirmed = steps
        .last()
        .filter(|s| s.phase == SearchPhase::Confirm && s.passed);
    let search_hlog = format!("cell-{}.search.hlog", cell.index);
    combine_hlogs(
        &dir.join(&search_hlog),
        first_window.unwrap_or_else(SystemTime::now),
        &files,
        &format!(
            "meshbench loadgen: scenario {}, cell {}: capacity search steps",
            plan.name, cell.id
        ),
    )?;
    // the cell's own interval log is its last step's
    let cell_hlog = format!("cell-{}.hlog", cell.index);
    if let Some((_, path)) = files.last() {
        std::fs::rename(path, dir.join(&cell_hlog)).map_err(|source| RunError::Io {
            path: path.clone(),
            source,
        })?;
    }
    for (_, path) in files.iter().rev().skip(1) {
        let _ = std::fs::remove_file(path);
    }
    result.hlog = Some(cell_hlog);
    result.search = Some(SearchResult {
        slo: search.slo.iter().map(|s| s.expr.clone()).collect(),
        min_rps: search.min,
        max_rps: search.max,
        resolution: search.resolution,
        step_duration_s: search.step.0.as_secs_f64(),
        outcome,
        capacity_rps: capacity,
        last_pass_rps: bracket.pass,
        first_fail_rps: bracket.fail,
        vcpu_per_1k_rps: confirmed.and_then(|s| s.vcpu_per_1k_rps),
        hlog: Some(search_hlog),
        steps,
    });
    Ok((result, warnings))
}

#[allow(clippy::too_many_arguments)]
fn step_of(
    k: u32,
    phase: SearchPhase,
    rate: f64,
    r: &CellResult,
    unsent: u64,
    sidecar: Option<&SidecarStats>,
    passed: bool,
    reasons: Vec<String>,
) -> SearchStep {
    let cpu = sidecar.and_then(|s| s.cpu_stat);
    SearchStep {
        index: k,
        phase,
        rate,
        started_s: 0.0,
        duration_s: r.duration_s,
        requests: r.requests,
        achieved_rate: r.achieved_rate,
        unsent,
        errors: r.errors.total(),
        latency: r.latency.corrected,
        send_lag_p99_us: r
            .generator
            .as_ref()
            .and_then(|g| g.send_lag)
            .map(|l| l.p99_us),
        generator_trusted: r.generator.as_ref().is_none_or(|g| g.trusted),
        sidecar_cores: cpu
            .filter(|_| r.duration_s > 0.0)
            .map(|c| c.usage_usec as f64 / 1e6 / r.duration_s),
        throttled_share: cpu
            .filter(|c| c.nr_periods > 0)
            .map(|c| c.nr_throttled as f64 / c.nr_periods as f64),
        vcpu_per_1k_rps: sidecar.and_then(|s| s.vcpu_per_1k_rps),
        passed,
        reasons,
    }
}

/// Every step's intervals into one log on one time base (the first step's window), each
/// tag prefixed with its step.
fn combine_hlogs(
    path: &Path,
    base: SystemTime,
    files: &[(u32, PathBuf)],
    comment: &str,
) -> Result<(), RunError> {
    let herr = |e: hlog::HlogError| RunError::Engine(e.into());
    let mut w =
        HlogWriter::create(path, base, &[comment, "values are microseconds"]).map_err(herr)?;
    let base_s = base
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    for (k, f) in files {
        let mut intervals = Vec::new();
        hlog::for_each_interval(f, |i| intervals.push(i)).map_err(herr)?;
        for i in intervals {
            let tag = step_tag(*k, i.tag.as_deref().unwrap_or("untagged"));
            let offset = Duration::from_secs_f64((i.start_s - base_s).max(0.0));
            let len = Duration::from_secs_f64(i.duration_s.max(0.0));
            w.write(offset, len, Some(&tag), &i.hist).map_err(herr)?;
        }
    }
    w.finish().map_err(herr)
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshbench_schema::units::Dur;

    fn plan(min: f64, max: f64, resolution: f64) -> SearchPlan {
        SearchPlan {
            slo: vec![],
            min,
            max,
            resolution,
            step: Dur(Duration::from_secs(1)),
            warmup: None,
            max_steps: 40,
        }
    }

    /// The search against a pass/fail oracle: the steps it runs, and how it ends.
    fn simulate(
        s: &SearchPlan,
        mut holds: impl FnMut(SearchPhase, f64) -> bool,
    ) -> (Vec<(SearchPhase, f64)>, Next, Bracket) {
        let mut b = Bracket::default();
        let mut tried = Vec::new();
        let mut next = Next::Step(SearchPhase::Bracket, s.min);
        while let Next::Step(phase, rate) = next {
            assert!(tried.len() < s.max_steps as usize, "{tried:?}");
            let passed = holds(phase, rate);
            tried.push((phase, rate));
            next = b.after(s, phase, rate, passed);
        }
        (tried, next, b)
    }

    #[test]
    fn the_search_converges_within_the_resolution_and_confirms() {
        for truth in [150.0, 777.0, 2900.0, 12_345.0] {
            let s = plan(100.0, 100_000.0, 0.05);
            let (tried, end, b) = simulate(&s, |_, r| r <= truth);
            assert_eq!(
                end,
                Next::Done(SearchOutcome::Converged),
                "{truth}: {tried:?}"
            );
            let (lo, hi) = (b.pass.unwrap(), b.fail.unwrap());
            assert!(lo <= truth && hi > truth, "{truth}: {lo} {hi}");
            assert!(hi / lo - 1.0 <= 0.05 + 1e-9, "{truth}: {lo} {hi}");
            // the last step repeats the capacity
            assert_eq!(*tried.last().unwrap(), (SearchPhase::Confirm, lo));
            assert!(tried.iter().filter(|(_, r)| *r == lo).count() >= 2);
            // bracketing doubles from the lower bound
            assert_eq!(tried[1], (SearchPhase::Bracket, 200.0));
            assert!(tried.len() <= 14, "{truth}: {} steps", tried.len());
        }
    }

    #[test]
    fn the_bounds_end_the_search() {
        let s = plan(100.0, 1000.0, 0.05);
        let (tried, end, b) = simulate(&s, |_, _| true);
        assert_eq!(end, Next::Done(SearchOutcome::AtMax));
        assert_eq!(b.pass, Some(1000.0));
        assert_eq!(
            tried.iter().map(|t| t.1).collect::<Vec<_>>(),
            vec![100.0, 200.0, 400.0, 800.0, 1000.0, 1000.0]
        );
        let (tried, end, _) = simulate(&s, |_, _| false);
        assert_eq!(end, Next::Done(SearchOutcome::BelowMin));
        assert_eq!(tried.len(), 1);
    }

    #[test]
    fn a_failed_repeat_moves_the_bracket_down() {
        let s = plan(100.0, 100_000.0, 0.05);
        // every rate up to 1020 holds, except that the first repeat fails
        let mut first_confirm = None;
        let (tried, end, b) = simulate(&s, |phase, r| {
            if phase == SearchPhase::Confirm && first_confirm.is_none() {
                first_confirm = Some(r);
                return false;
            }
            r <= 1020.0
        });
        let failed = first_confirm.unwrap();
        assert_eq!(end, Next::Done(SearchOutcome::Converged), "{tried:?}");
        assert!(b.pass.unwrap() < failed, "{tried:?}");
        assert_eq!(b.fail, Some(failed));
        assert_eq!(tried.last().unwrap().0, SearchPhase::Confirm);
    }

    #[test]
    fn rates_are_rounded_to_four_digits() {
        assert_eq!(round_rate(1414.2135), 1414.0);
        assert_eq!(round_rate(98765.4), 98770.0);
    }
}
