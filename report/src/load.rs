//! Reading a run directory: run.json through the schema crate, then each cell's interval
//! log (`.hlog`), with every error naming the file.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use hdrhistogram::Histogram;
use meshbench_schema::hlog::{self, Interval};
use meshbench_schema::{
    CellResult, Percentiles, RunResult, HLOG_TAG_CORRECTED, HLOG_TAG_UNCORRECTED,
};

use crate::ReportError;

/// A decoded interval log.
#[derive(Debug, Clone, Default)]
pub struct Hlog {
    pub intervals: Vec<Interval>,
}

impl Hlog {
    /// Earliest interval start, seconds (absolute).
    pub fn first_start_s(&self) -> Option<f64> {
        self.intervals
            .iter()
            .map(|i| i.start_s)
            .min_by(|a, b| a.total_cmp(b))
    }

    /// Every interval of `tag` added into one histogram: the whole-cell distribution.
    pub fn total(&self, tag: &str) -> Option<Histogram<u64>> {
        let mut total = None;
        for i in self.tagged(tag) {
            add_into(&mut total, &i.hist);
        }
        total
    }

    /// Intervals of `tag` grouped by start second (relative to the first interval of the
    /// log) and added together: one histogram per second, in time order.
    pub fn per_second(&self, tag: &str) -> Vec<(f64, Histogram<u64>)> {
        let Some(first) = self.first_start_s() else {
            return Vec::new();
        };
        let mut by_second: BTreeMap<i64, Histogram<u64>> = BTreeMap::new();
        for i in self.tagged(tag) {
            let key = ((i.start_s - first) * 1000.0).round() as i64;
            let sum = by_second.entry(key).or_insert_with(|| empty_sum(&i.hist));
            add(sum, &i.hist);
        }
        by_second
            .into_iter()
            .map(|(k, h)| (k as f64 / 1000.0, h))
            .collect()
    }

    fn tagged<'a>(&'a self, tag: &'a str) -> impl Iterator<Item = &'a Interval> + 'a {
        self.intervals
            .iter()
            .filter(move |i| i.tag.as_deref() == Some(tag))
    }
}

/// An empty auto-resizing histogram with the precision of `like`, to add intervals into.
pub(crate) fn empty_sum(like: &Histogram<u64>) -> Histogram<u64> {
    let mut sum = Histogram::new_from(like);
    sum.auto(true);
    sum
}

/// Add `h` into `sum`, a histogram from [`empty_sum`]: auto-resizing, so it cannot fail.
pub(crate) fn add(sum: &mut Histogram<u64>, h: &Histogram<u64>) {
    let _ = sum.add(h);
}

/// Add `h` into the sum in `slot`, starting it when there is none yet.
fn add_into(slot: &mut Option<Histogram<u64>>, h: &Histogram<u64>) {
    add(slot.get_or_insert_with(|| empty_sum(h)), h);
}

/// Decode an interval log interval by interval (see `meshbench_schema::hlog`).
pub fn for_each_interval(path: &Path, visit: impl FnMut(Interval)) -> Result<usize, ReportError> {
    hlog::for_each_interval(path, visit).map_err(|e| ReportError::Hlog {
        path: e.path,
        msg: e.msg,
    })
}

/// Read and decode a whole interval log into memory (every interval's histogram: for
/// small logs and tests; rendering and merging stream with [`for_each_interval`]).
pub fn read_hlog(path: &Path) -> Result<Hlog, ReportError> {
    let mut log = Hlog::default();
    for_each_interval(path, |i| log.intervals.push(i))?;
    Ok(log)
}

/// Adds intervals of one tag into a whole-run histogram and into per-second histograms,
/// turning each second into a [`SecondPoint`] once it can no longer receive intervals
/// (more than [`REORDER_WINDOW_MS`] behind the newest one), so memory stays bounded
/// however long the run.
#[derive(Default)]
struct TagAccumulator {
    total: Option<Histogram<u64>>,
    open: BTreeMap<i64, Histogram<u64>>,
    /// (absolute start ms, point with t_s still absolute)
    done: Vec<(i64, SecondPoint)>,
}

/// How far out of order intervals may arrive and still be merged into their second.
pub const REORDER_WINDOW_MS: i64 = 5_000;

impl TagAccumulator {
    fn add(&mut self, start_s: f64, h: Histogram<u64>) {
        add_into(&mut self.total, &h);
        let key = (start_s * 1000.0).round() as i64;
        add(self.open.entry(key).or_insert_with(|| empty_sum(&h)), &h);
        let newest = *self.open.keys().next_back().unwrap_or(&key);
        while let Some(oldest) = self.open.first_entry() {
            if *oldest.key() >= newest - REORDER_WINDOW_MS {
                break;
            }
            let (k, h) = oldest.remove_entry();
            self.close(k, &h);
        }
    }

    fn close(&mut self, k: i64, h: &Histogram<u64>) {
        if !h.is_empty() {
            self.done.push((k, SecondPoint::of(k as f64 / 1000.0, h)));
        }
    }

    fn finish(mut self) -> (Option<Histogram<u64>>, Vec<(i64, SecondPoint)>) {
        for (k, h) in std::mem::take(&mut self.open) {
            self.close(k, &h);
        }
        self.done.sort_by_key(|(k, _)| *k);
        (self.total, self.done)
    }
}

/// One point of a per-second series: the second and its latency statistics.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SecondPoint {
    /// Seconds since the first interval of the cell.
    pub t_s: f64,
    pub stats: Percentiles,
}

impl SecondPoint {
    pub fn of(t_s: f64, h: &Histogram<u64>) -> Self {
        SecondPoint {
            t_s,
            stats: Percentiles::of(h),
        }
    }

    /// The value of a statistic by its conventional name (p50, p90, p99, p99.9, max, ...).
    pub fn get(&self, name: &str) -> Option<f64> {
        self.stats.get(name)
    }
}

impl std::ops::Deref for SecondPoint {
    type Target = Percentiles;
    fn deref(&self) -> &Percentiles {
        &self.stats
    }
}

/// A cell with its interval data decoded.
#[derive(Debug, Clone)]
pub struct LoadedCell {
    pub result: CellResult,
    /// Path of the cell's interval log, when it has one.
    pub hlog_path: Option<PathBuf>,
    /// Whole-cell histograms (every interval of the tag added), when the log has them.
    pub corrected: Option<Histogram<u64>>,
    pub uncorrected: Option<Histogram<u64>>,
    /// Per-second corrected latency (seconds with no completed request are left out).
    pub seconds: Vec<SecondPoint>,
    /// Per-second uncorrected latency.
    pub seconds_uncorrected: Vec<SecondPoint>,
    /// Per-second send lateness of the generator (open loop; empty without a `send_lag` tag).
    pub seconds_lag: Vec<SecondPoint>,
    /// Failed requests per second, (t_s, count), every second of the log including those
    /// without errors; `None` when the log has no `failed` tag (written before it existed).
    pub errors_per_second: Option<Vec<(f64, u64)>>,
}

/// A run directory, read and checked.
#[derive(Debug, Clone)]
pub struct LoadedRun {
    pub dir: PathBuf,
    pub run: RunResult,
    pub cells: Vec<LoadedCell>,
}

impl LoadedRun {
    pub fn cell(&self, id: &str) -> Option<&LoadedCell> {
        self.cells.iter().find(|c| c.result.id == id)
    }
}

/// Read `run.json` in `dir` (or `dir` itself when it is a run.json file) and every
/// cell's interval log.
pub fn load_run(dir: &Path) -> Result<LoadedRun, ReportError> {
    let (run_dir, run_file) = if dir.is_file() {
        (
            dir.parent().unwrap_or(Path::new(".")).to_path_buf(),
            dir.to_path_buf(),
        )
    } else {
        (dir.to_path_buf(), dir.join(meshbench_schema::RUN_FILE))
    };
    let run = meshbench_schema::read_run(&run_file)?;
    let mut seen = HashSet::new();
    let mut cells = Vec::with_capacity(run.cells.len());
    for cell in &run.cells {
        if !seen.insert(cell.id.as_str()) {
            return Err(ReportError::Invalid {
                path: run_file.clone(),
                msg: format!("two cells have the id '{}'", cell.id),
            });
        }
        let hlog_path = cell.hlog.as_ref().map(|h| run_dir.join(h));
        let mut loaded = LoadedCell {
            result: cell.clone(),
            hlog_path: hlog_path.clone(),
            corrected: None,
            uncorrected: None,
            seconds: Vec::new(),
            seconds_uncorrected: Vec::new(),
            seconds_lag: Vec::new(),
            errors_per_second: None,
        };
        if let Some(path) = hlog_path {
            let mut corrected = TagAccumulator::default();
            let mut uncorrected = TagAccumulator::default();
            let mut lag = TagAccumulator::default();
            // failed requests per second (ms key): one count per second, so bounded by the
            // run's length in seconds
            let mut failed: Option<BTreeMap<i64, u64>> = None;
            let mut first_ms: Option<i64> = None;
            let n = for_each_interval(&path, |i| {
                let key = (i.start_s * 1000.0).round() as i64;
                first_ms = Some(first_ms.map_or(key, |f| f.min(key)));
                match i.tag.as_deref() {
                    Some(HLOG_TAG_CORRECTED) => corrected.add(i.start_s, i.hist),
                    Some(HLOG_TAG_UNCORRECTED) => uncorrected.add(i.start_s, i.hist),
                    Some(hlog::TAG_SEND_LAG) => lag.add(i.start_s, i.hist),
                    Some(hlog::TAG_FAILED) => {
                        *failed.get_or_insert_default().entry(key).or_default() += i.hist.len()
                    }
                    _ => {}
                }
            })?;
            if n == 0 && cell.requests > 0 {
                return Err(ReportError::hlog(
                    &path,
                    format!(
                        "holds no intervals although cell '{}' counted {} requests (truncated?)",
                        cell.id, cell.requests
                    ),
                ));
            }
            let (c_total, c_points) = corrected.finish();
            let (u_total, u_points) = uncorrected.finish();
            let (_, lag_points) = lag.finish();
            // time axis: seconds since the first interval of the log (of any tag, empty or
            // not: second 0 is the first second of the measured window)
            let first = first_ms.unwrap_or(0);
            let relative = |v: Vec<(i64, SecondPoint)>| -> Vec<SecondPoint> {
                v.into_iter()
                    .map(|(k, mut p)| {
                        p.t_s = (k - first) as f64 / 1000.0;
                        p
                    })
                    .collect()
            };
            loaded.corrected = c_total;
            loaded.uncorrected = u_total;
            loaded.seconds = relative(c_points);
            loaded.seconds_uncorrected = relative(u_points);
            loaded.seconds_lag = relative(lag_points);
            loaded.errors_per_second = failed.map(|m| {
                m.into_iter()
                    .map(|(k, n)| ((k - first) as f64 / 1000.0, n))
                    .collect()
            });
        }
        cells.push(loaded);
    }
    Ok(LoadedRun {
        dir: run_dir,
        run,
        cells,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hist(values: &[u64]) -> Histogram<u64> {
        let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
        for &v in values {
            h.record(v).unwrap();
        }
        h
    }

    #[test]
    fn seconds_merge_out_of_order_intervals_and_close_behind_the_window() {
        let mut acc = TagAccumulator::default();
        acc.add(100.0, hist(&[10, 20]));
        acc.add(101.0, hist(&[30]));
        // a second worker's interval for second 100 arrives late, within the window
        acc.add(100.0, hist(&[40]));
        assert_eq!(acc.open.len(), 2);
        // 10 s later: seconds 100 and 101 are closed, only the newest stays open
        acc.add(111.0, hist(&[50]));
        assert_eq!(acc.open.len(), 1);
        assert_eq!(acc.done.len(), 2);
        let (total, points) = acc.finish();
        assert_eq!(total.unwrap().len(), 5);
        let counts: Vec<(i64, u64)> = points.iter().map(|(k, p)| (*k, p.count)).collect();
        assert_eq!(counts, vec![(100_000, 3), (101_000, 1), (111_000, 1)]);
        assert_eq!(points[0].1.max_us, 40.0);
    }
}
