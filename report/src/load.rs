//! Reading a run directory: run.json through the schema crate, then each cell's interval
//! log (`.hlog`), with every error naming the file.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry, LogIteratorError};
use hdrhistogram::serialization::Deserializer;
use hdrhistogram::Histogram;
use meshbench_schema::{CellResult, RunResult, HLOG_TAG_CORRECTED, HLOG_TAG_UNCORRECTED};

use crate::ReportError;

/// One interval of an interval log, decoded.
#[derive(Debug, Clone)]
pub struct Interval {
    pub tag: Option<String>,
    /// Absolute start (BaseTime added when the log has one), seconds.
    pub start_s: f64,
    pub duration_s: f64,
    pub hist: Histogram<u64>,
}

/// A decoded interval log.
#[derive(Debug, Clone, Default)]
pub struct Hlog {
    pub start_time_s: Option<f64>,
    pub base_time_s: Option<f64>,
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
        let mut total: Option<Histogram<u64>> = None;
        for i in self
            .intervals
            .iter()
            .filter(|i| i.tag.as_deref() == Some(tag))
        {
            match total.as_mut() {
                None => {
                    let mut h = Histogram::new_from(&i.hist);
                    h.auto(true);
                    // auto-resizing histograms accept any value, so add cannot fail
                    let _ = h.add(&i.hist);
                    total = Some(h);
                }
                Some(h) => {
                    let _ = h.add(&i.hist);
                }
            }
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
        for i in self
            .intervals
            .iter()
            .filter(|i| i.tag.as_deref() == Some(tag))
        {
            let key = ((i.start_s - first) * 1000.0).round() as i64;
            match by_second.get_mut(&key) {
                Some(h) => {
                    let _ = h.add(&i.hist);
                }
                None => {
                    let mut h = Histogram::new_from(&i.hist);
                    h.auto(true);
                    let _ = h.add(&i.hist);
                    by_second.insert(key, h);
                }
            }
        }
        by_second
            .into_iter()
            .map(|(k, h)| (k as f64 / 1000.0, h))
            .collect()
    }
}

/// Read and decode an interval log. A missing file, a line that does not parse (e.g. a
/// truncated last line) or a histogram that does not decode is an error naming the file.
pub fn read_hlog(path: &Path) -> Result<Hlog, ReportError> {
    let bytes = std::fs::read(path).map_err(|source| ReportError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut log = Hlog::default();
    let mut raw = Vec::new();
    for entry in IntervalLogIterator::new(&bytes) {
        match entry {
            Ok(LogEntry::StartTime(d)) => log.start_time_s = Some(d.as_secs_f64()),
            Ok(LogEntry::BaseTime(d)) => log.base_time_s = Some(d.as_secs_f64()),
            Ok(LogEntry::Interval(i)) => raw.push((
                i.tag().map(|t| t.as_str().to_string()),
                i.start_timestamp().as_secs_f64(),
                i.duration().as_secs_f64(),
                i.encoded_histogram().to_string(),
            )),
            Err(LogIteratorError::ParseError { offset }) => {
                let line = bytes[..offset.min(bytes.len())]
                    .iter()
                    .filter(|&&b| b == b'\n')
                    .count()
                    + 1;
                return Err(ReportError::hlog(
                    path,
                    format!(
                        "not a valid interval log: cannot parse line {line} (truncated or corrupt)"
                    ),
                ));
            }
        }
    }
    let base = log.base_time_s.unwrap_or(0.0);
    let mut deserializer = Deserializer::new();
    for (n, (tag, start, duration, encoded)) in raw.into_iter().enumerate() {
        use base64::Engine as _;
        let bin = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|e| ReportError::hlog(path, format!("interval {}: bad base64: {e}", n + 1)))?;
        let hist: Histogram<u64> = deserializer.deserialize(&mut bin.as_slice()).map_err(|e| {
            ReportError::hlog(path, format!("interval {}: bad histogram: {e:?}", n + 1))
        })?;
        log.intervals.push(Interval {
            tag,
            start_s: base + start,
            duration_s: duration,
            hist,
        });
    }
    Ok(log)
}

/// One point of a per-second series.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SecondPoint {
    /// Seconds since the first interval of the cell.
    pub t_s: f64,
    pub count: u64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
}

impl SecondPoint {
    fn of(t_s: f64, h: &Histogram<u64>) -> Self {
        let q = |q: f64| h.value_at_quantile(q) as f64;
        SecondPoint {
            t_s,
            count: h.len(),
            p50_us: q(0.5),
            p90_us: q(0.9),
            p99_us: q(0.99),
            p999_us: q(0.999),
            max_us: h.max() as f64,
        }
    }

    /// The value of a percentile by its conventional name (p50, p90, p99, p99.9, max).
    pub fn get(&self, name: &str) -> Option<f64> {
        Some(match name {
            "p50" => self.p50_us,
            "p90" => self.p90_us,
            "p99" => self.p99_us,
            "p99.9" | "p999" => self.p999_us,
            "max" => self.max_us,
            _ => return None,
        })
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
        };
        if let Some(path) = hlog_path {
            let log = read_hlog(&path)?;
            if log.intervals.is_empty() && cell.requests > 0 {
                return Err(ReportError::hlog(
                    &path,
                    format!(
                        "holds no intervals although cell '{}' counted {} requests (truncated?)",
                        cell.id, cell.requests
                    ),
                ));
            }
            loaded.corrected = log.total(HLOG_TAG_CORRECTED);
            loaded.uncorrected = log.total(HLOG_TAG_UNCORRECTED);
            loaded.seconds = seconds_of(&log, HLOG_TAG_CORRECTED);
            loaded.seconds_uncorrected = seconds_of(&log, HLOG_TAG_UNCORRECTED);
        }
        cells.push(loaded);
    }
    Ok(LoadedRun {
        dir: run_dir,
        run,
        cells,
    })
}

fn seconds_of(log: &Hlog, tag: &str) -> Vec<SecondPoint> {
    log.per_second(tag)
        .iter()
        .filter(|(_, h)| !h.is_empty())
        .map(|(t, h)| SecondPoint::of(*t, h))
        .collect()
}
