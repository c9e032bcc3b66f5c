//! Interval logs (`.hlog`): the standard HdrHistogram interval-log format, V2 deflate,
//! values in microseconds. loadgen writes one per cell (1 s intervals tagged
//! [`TAG_CORRECTED`] / [`TAG_UNCORRECTED`]), `report merge` writes merged ones, and report
//! reads them back; this module is the only writer and the only reader.

use hdrhistogram::serialization::interval_log::{
    IntervalLogIterator, IntervalLogWriterBuilder, LogEntry, LogIteratorError, Tag,
};
use hdrhistogram::serialization::{Deserializer, V2DeflateSerializer};
use hdrhistogram::Histogram;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Tag of intervals holding latency measured from the intended send time.
pub const TAG_CORRECTED: &str = "corrected";
/// Tag of intervals holding latency measured from the actual send time (service time).
pub const TAG_UNCORRECTED: &str = "uncorrected";
/// Unit of every value recorded in histograms and interval logs.
pub const UNIT: &str = "us";

/// An interval log that could not be written or read; names the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {msg}")]
pub struct HlogError {
    pub path: PathBuf,
    pub msg: String,
}

impl HlogError {
    pub fn new(path: &Path, msg: impl Into<String>) -> Self {
        HlogError {
            path: path.to_path_buf(),
            msg: msg.into(),
        }
    }
}

/// Writes an interval log to a temp file beside `path`; [`HlogWriter::finish`] fsyncs it
/// and renames it into place, so a reader never sees half a log.
pub struct HlogWriter {
    path: PathBuf,
    tmp: PathBuf,
    file: std::io::BufWriter<std::fs::File>,
    ser: V2DeflateSerializer,
}

/// The temp file an interval log is written to before it is renamed to `path`.
pub fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
}

impl HlogWriter {
    /// Start a log whose interval timestamps are relative to `base` (StartTime and
    /// BaseTime both), with a comment line per entry of `comments`.
    pub fn create(path: &Path, base: SystemTime, comments: &[&str]) -> Result<Self, HlogError> {
        let err = |e: &dyn std::fmt::Display| {
            HlogError::new(path, format!("cannot write interval log: {e}"))
        };
        let tmp = temp_path(path);
        let file = std::fs::File::create(&tmp).map_err(|e| err(&e))?;
        let mut w = HlogWriter {
            path: path.to_path_buf(),
            tmp,
            file: std::io::BufWriter::new(file),
            ser: V2DeflateSerializer::new(),
        };
        let mut b = IntervalLogWriterBuilder::new();
        for c in comments {
            b.add_comment(c);
        }
        b.with_start_time(base)
            .with_base_time(base)
            .begin_log_with(&mut w.file, &mut w.ser)
            .map_err(|e| err(&e))?;
        w.file
            .write_all(b"\"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\"\n")
            .map_err(|e| err(&e))?;
        Ok(w)
    }

    /// Append one interval: `offset` from the log's base, `len` long, tagged `tag` (or
    /// untagged).
    pub fn write(
        &mut self,
        offset: Duration,
        len: Duration,
        tag: Option<&str>,
        h: &Histogram<u64>,
    ) -> Result<(), HlogError> {
        let err = |e: String| HlogError::new(&self.path, format!("cannot write interval log: {e}"));
        let mut w = IntervalLogWriterBuilder::new()
            .begin_log_with(&mut self.file, &mut self.ser)
            .map_err(|e| err(e.to_string()))?;
        w.write_histogram(h, offset, len, tag.and_then(Tag::new))
            .map_err(|e| err(e.to_string()))
    }

    /// Flush, fsync and move into place.
    pub fn finish(mut self) -> Result<(), HlogError> {
        let path = self.path.clone();
        let err =
            |e: std::io::Error| HlogError::new(&path, format!("cannot write interval log: {e}"));
        self.file.flush().map_err(err)?;
        self.file.get_ref().sync_all().map_err(err)?;
        std::fs::rename(&self.tmp, &self.path).map_err(err)
    }
}

impl Drop for HlogWriter {
    /// A log that was not finished (an error, an unwinding panic) leaves no temp file.
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.tmp);
    }
}

/// One interval of an interval log, decoded.
#[derive(Debug, Clone)]
pub struct Interval {
    pub tag: Option<String>,
    /// Absolute start (BaseTime added when the log has one), seconds.
    pub start_s: f64,
    pub duration_s: f64,
    pub hist: Histogram<u64>,
}

/// Decode an interval log one line at a time, in file order, handing each interval to
/// `visit`; only the line being decoded is held in memory. A missing file, a line that
/// does not parse (e.g. a truncated last line) or a histogram that does not decode is an
/// error naming the file. Returns the number of intervals.
pub fn for_each_interval(path: &Path, mut visit: impl FnMut(Interval)) -> Result<usize, HlogError> {
    use base64::Engine as _;
    let io = |e: std::io::Error| HlogError::new(path, e.to_string());
    let mut reader = std::io::BufReader::new(std::fs::File::open(path).map_err(io)?);
    let mut line = Vec::new();
    let mut line_no = 0;
    let mut base = 0.0;
    let mut deserializer = Deserializer::new();
    let mut n = 0;
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line).map_err(io)? == 0 {
            return Ok(n);
        }
        line_no += 1;
        // the log format is line by line: one line is a whole input for the parser
        for entry in IntervalLogIterator::new(&line) {
            match entry {
                Ok(LogEntry::StartTime(_)) => {}
                Ok(LogEntry::BaseTime(d)) => base = d.as_secs_f64(),
                Ok(LogEntry::Interval(i)) => {
                    n += 1;
                    let bin = base64::engine::general_purpose::STANDARD
                        .decode(i.encoded_histogram().trim())
                        .map_err(|e| {
                            HlogError::new(path, format!("interval {n}: bad base64: {e}"))
                        })?;
                    let hist: Histogram<u64> =
                        deserializer.deserialize(&mut bin.as_slice()).map_err(|e| {
                            HlogError::new(path, format!("interval {n}: bad histogram: {e:?}"))
                        })?;
                    visit(Interval {
                        tag: i.tag().map(|t| t.as_str().to_string()),
                        start_s: base + i.start_timestamp().as_secs_f64(),
                        duration_s: i.duration().as_secs_f64(),
                        hist,
                    });
                }
                Err(LogIteratorError::ParseError { .. }) => {
                    return Err(HlogError::new(
                        path,
                        format!(
                            "not a valid interval log: cannot parse line {line_no} (truncated or corrupt)"
                        ),
                    ));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_log_reads_back_interval_by_interval() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cell-0.hlog");
        let base = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut w = HlogWriter::create(&path, base, &["test", "values are microseconds"]).unwrap();
        let mut h = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).unwrap();
        h.record(5000).unwrap();
        for s in 0..2 {
            let at = Duration::from_secs(s);
            w.write(at, Duration::from_secs(1), Some(TAG_CORRECTED), &h)
                .unwrap();
            w.write(at, Duration::from_secs(1), Some(TAG_UNCORRECTED), &h)
                .unwrap();
        }
        assert!(!path.exists(), "not in place before finish");
        w.finish().unwrap();
        let mut seen = vec![];
        let n = for_each_interval(&path, |i| {
            seen.push((i.tag.unwrap(), i.start_s, i.hist.len()));
        })
        .unwrap();
        assert_eq!(n, 4);
        assert_eq!(seen[0], ("corrected".to_string(), 1_700_000_000.0, 1));
        assert_eq!(seen[3], ("uncorrected".to_string(), 1_700_000_001.0, 1));
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temp file left"
        );
    }

    #[test]
    fn an_unfinished_log_leaves_nothing_and_a_truncated_one_names_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.hlog");
        drop(HlogWriter::create(&path, SystemTime::now(), &[]).unwrap());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        std::fs::write(
            &path,
            "#[StartTime: 1.000 (seconds since epoch)]\n0.000,1.000,5.0,HISTFAAAA",
        )
        .unwrap();
        let e = for_each_interval(&path, |_| {}).unwrap_err().to_string();
        assert!(e.starts_with(&path.display().to_string()), "{e}");
    }
}
