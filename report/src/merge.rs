//! `report merge OUT.hlog IN.hlog|RUN_DIR...`: merge interval logs from several load
//! workers into one, losslessly. Intervals are aligned by tag and by the absolute second
//! they start at, to the nearest second (BaseTime added), and added with `Histogram::add`,
//! so every per-tag total of the output equals the histogram of all the inputs' samples.
//! The inputs are streamed side by side (memory bounded by the reorder window).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use hdrhistogram::Histogram;
use meshbench_schema::hlog::{HlogError, HlogWriter};

use crate::load::{add, empty_sum, SecondPoint};
use crate::ReportError;
use meshbench_schema::hlog::{Interval, IntervalReader};

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

/// Seconds an input's interval may come late (behind the newest interval of all inputs)
/// and still be added into its second; as `load.rs` does when it reads a log.
pub const REORDER_WINDOW_S: i64 = 5;

/// Read every input and write `out` atomically, streaming: the inputs are read side by side
/// in time order and each (tag, second) is written out once it is [`REORDER_WINDOW_S`]
/// behind the newest interval, so memory is one histogram per tag and second of the window
/// (plus one per tag for the summary), whatever the length of the logs. An interval later
/// than the window is written as an interval of its own (the totals stay exact).
pub fn merge(out: &Path, inputs: &[PathBuf]) -> Result<MergeSummary, ReportError> {
    let mut files = Vec::with_capacity(inputs.len());
    for p in inputs {
        files.push(resolve_input(p)?);
    }
    let hlog_err = |e: HlogError| ReportError::Hlog {
        path: e.path,
        msg: e.msg,
    };
    let mut readers = Vec::with_capacity(files.len());
    let mut heads: Vec<Option<Interval>> = Vec::with_capacity(files.len());
    for f in &files {
        let mut r = IntervalReader::open(f).map_err(hlog_err)?;
        heads.push(r.next().transpose().map_err(hlog_err)?);
        readers.push(r);
    }
    let first = heads
        .iter()
        .flatten()
        .map(|i| i.start_s.round() as i64)
        .min()
        .unwrap_or(0);
    let base = UNIX_EPOCH + Duration::from_secs(first.max(0) as u64);
    let comment = format!(
        "merged by report from {}",
        files
            .iter()
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut w = HlogWriter::create(out, base, &[&comment]).map_err(hlog_err)?;
    let mut window: BTreeMap<(i64, Option<String>), (Histogram<u64>, f64)> = BTreeMap::new();
    let mut whole: BTreeMap<String, Histogram<u64>> = BTreeMap::new();
    let (mut intervals_in, mut intervals_out) = (0, 0);
    let mut newest = i64::MIN;
    let mut flushed_to = i64::MIN;
    let mut write = |w: &mut HlogWriter,
                     sec: i64,
                     tag: Option<&str>,
                     h: &Histogram<u64>,
                     dur: f64|
     -> Result<(), ReportError> {
        add(
            whole
                .entry(tag.unwrap_or_default().to_string())
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
        w.write(start, len, tag, h).map_err(hlog_err)?;
        intervals_out += 1;
        Ok(())
    };
    // the input whose next interval starts first, until every input is read
    while let Some(k) = (0..heads.len())
        .filter(|&k| heads[k].is_some())
        .min_by(|&a, &b| {
            let t = |k: usize| heads[k].as_ref().map_or(f64::INFINITY, |i| i.start_s);
            t(a).total_cmp(&t(b))
        })
    {
        let i = heads[k].take().expect("picked a present head");
        heads[k] = readers[k].next().transpose().map_err(hlog_err)?;
        intervals_in += 1;
        let sec = i.start_s.round() as i64;
        if sec <= flushed_to {
            write(&mut w, sec, i.tag.as_deref(), &i.hist, i.duration_s)?;
            continue;
        }
        newest = newest.max(sec);
        let (sum, longest) = window
            .entry((sec, i.tag))
            .or_insert_with(|| (empty_sum(&i.hist), i.duration_s));
        add(sum, &i.hist);
        *longest = longest.max(i.duration_s);
        // write out every second that is now out of the window, in (second, tag) order
        while let Some(entry) = window.first_entry() {
            if entry.key().0 >= newest - REORDER_WINDOW_S {
                break;
            }
            let ((sec, tag), (h, dur)) = entry.remove_entry();
            flushed_to = flushed_to.max(sec);
            write(&mut w, sec, tag.as_deref(), &h, dur)?;
        }
    }
    for ((sec, tag), (h, dur)) in std::mem::take(&mut window) {
        write(&mut w, sec, tag.as_deref(), &h, dur)?;
    }
    w.finish().map_err(hlog_err)?;
    Ok(MergeSummary {
        inputs: files,
        intervals_in,
        intervals_out,
        percentiles: whole
            .iter()
            .map(|(t, h)| (t.clone(), SecondPoint::of(0.0, h)))
            .collect(),
    })
}
