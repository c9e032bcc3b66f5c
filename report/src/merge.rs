//! `report merge OUT.hlog IN.hlog|RUN_DIR...`: merge interval logs from several load
//! workers into one, losslessly. Intervals are aligned by tag and by the absolute second
//! they start at, to the nearest second (BaseTime added), and added with `Histogram::add`; so every per-tag total
//! of the output equals the histogram of all the inputs' samples.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use hdrhistogram::Histogram;
use meshbench_schema::hlog::{HlogError, HlogWriter};

use crate::load::{add, empty_sum, for_each_interval, SecondPoint};
use crate::ReportError;

/// What a merge read and wrote.
#[derive(Debug, Clone)]
pub struct MergeSummary {
    pub inputs: Vec<PathBuf>,
    pub intervals_in: usize,
    pub intervals_out: usize,
    /// Per tag ("" for untagged): count and percentiles of all the merged samples.
    pub percentiles: BTreeMap<String, SecondPoint>,
}

/// The interval log an input names: the file itself, or the single cell's log of a run
/// directory.
pub fn resolve_input(p: &Path) -> Result<PathBuf, ReportError> {
    if !p.is_dir() {
        return Ok(p.to_path_buf());
    }
    let run = meshbench_schema::read_run(p)?;
    let logs: Vec<&String> = run.cells.iter().filter_map(|c| c.hlog.as_ref()).collect();
    match logs.as_slice() {
        [one] => Ok(p.join(one)),
        [] => Err(ReportError::Invalid {
            path: p.join(meshbench_schema::RUN_FILE),
            msg: "no cell has an interval log".into(),
        }),
        many => Err(ReportError::Invalid {
            path: p.join(meshbench_schema::RUN_FILE),
            msg: format!(
                "{} cells have interval logs; pass the .hlog files of the cell to merge",
                many.len()
            ),
        }),
    }
}

/// Merged intervals: (tag, absolute start second) -> (histogram, longest duration).
pub type Merged = BTreeMap<(Option<String>, i64), (Histogram<u64>, f64)>;

fn add_interval(
    merged: &mut Merged,
    tag: Option<String>,
    sec: i64,
    duration_s: f64,
    h: &Histogram<u64>,
) {
    let (sum, longest) = merged
        .entry((tag, sec))
        .or_insert_with(|| (empty_sum(h), duration_s));
    add(sum, h);
    *longest = longest.max(duration_s);
}

/// Read every input, merge, and write `out` atomically.
pub fn merge(out: &Path, inputs: &[PathBuf]) -> Result<MergeSummary, ReportError> {
    let mut files = Vec::with_capacity(inputs.len());
    for p in inputs {
        files.push(resolve_input(p)?);
    }
    // stream every input into (tag, second) histograms: memory is one histogram per tag
    // and second of the merged log, whatever the number of inputs
    let mut merged: Merged = BTreeMap::new();
    let mut first = i64::MAX;
    let mut intervals_in = 0;
    for f in &files {
        intervals_in += for_each_interval(f, |i| {
            let sec = i.start_s.round() as i64;
            first = first.min(sec);
            add_interval(&mut merged, i.tag, sec, i.duration_s, &i.hist);
        })?;
    }
    let first = if first == i64::MAX { 0 } else { first };
    // order by time, then tag, as the interval-log format expects
    let mut entries: Vec<_> = merged.iter().collect();
    entries.sort_by(|a, b| (a.0 .1, &a.0 .0).cmp(&(b.0 .1, &b.0 .0)));
    let mut whole: BTreeMap<String, Histogram<u64>> = BTreeMap::new();
    let base = UNIX_EPOCH + Duration::from_secs(first.max(0) as u64);
    let comment = format!(
        "merged by report from {}",
        files
            .iter()
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let hlog_err = |e: HlogError| ReportError::Hlog {
        path: e.path,
        msg: e.msg,
    };
    let mut w = HlogWriter::create(out, base, &[&comment]).map_err(hlog_err)?;
    for ((tag, sec), (h, dur)) in entries {
        add(
            whole
                .entry(tag.clone().unwrap_or_default())
                .or_insert_with(|| empty_sum(h)),
            h,
        );
        let start = Duration::from_secs((sec - first).max(0) as u64);
        let len = Duration::try_from_secs_f64(dur.max(0.0)).map_err(|_| {
            ReportError::hlog(
                out,
                format!("an input interval lasts {dur} s, too long to write"),
            )
        })?;
        w.write(start, len, tag.as_deref(), h).map_err(hlog_err)?;
    }
    w.finish().map_err(hlog_err)?;
    Ok(MergeSummary {
        inputs: files,
        intervals_in,
        intervals_out: merged.len(),
        percentiles: whole
            .iter()
            .map(|(t, h)| (t.clone(), SecondPoint::of(0.0, h)))
            .collect(),
    })
}
