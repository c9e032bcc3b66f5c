//! Interval logs (`.hlog`): the standard HdrHistogram interval-log format, V2 deflate,
//! values in microseconds. loadgen writes one per cell (1 s intervals tagged
//! [`TAG_CORRECTED`] / [`TAG_UNCORRECTED`] / [`TAG_SEND_LAG`] / [`TAG_FAILED`]), `report merge` writes merged ones, and report
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
/// Tag of intervals holding the load generator's own lateness: how long after its intended
/// time each open-loop request was sent.
pub const TAG_SEND_LAG: &str = "send_lag";
/// Tag of intervals holding the latency (from the intended send time) of each request that
/// failed in the interval: a transport error or an HTTP status of 400 and above. Its count
/// is the interval's error count; the corrected and uncorrected tags hold successes only.
pub const TAG_FAILED: &str = "failed";
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

/// Longest line of an interval log that is read (one interval: a few KiB in practice).
pub const MAX_LINE: u64 = 4 << 20;
/// Most counts a decoded histogram may have (16 MiB of u64 counts): a crafted header asking
/// for more is refused before anything is allocated for it.
pub const MAX_COUNTS: u64 = 1 << 21;
/// Most payload bytes a histogram's header may announce.
pub const MAX_PAYLOAD: u64 = 16 << 20;

const V2_COOKIE: u32 = 0x1c84_9303 | 0x10;
const V2_COMPRESSED_COOKIE: u32 = 0x1c84_9304 | 0x10;

/// The length of the counts array hdrhistogram allocates for these bounds (its own
/// formula), or `None` when the bounds are not valid.
pub fn counts_len(low: u64, high: u64, sigfig: u8) -> Option<u64> {
    if low < 1 || sigfig > 5 || high < low.checked_mul(2)? {
        return None;
    }
    let single_unit = 2 * 10u64.pow(u32::from(sigfig));
    let sub_bucket_count_magnitude = 64 - (single_unit - 1).leading_zeros();
    let half_magnitude = sub_bucket_count_magnitude.max(1) - 1;
    let unit_magnitude = 63 - low.leading_zeros();
    let sub_bucket_count = 1u64 << (half_magnitude + 1);
    if unit_magnitude + half_magnitude + 1 > 63 {
        return None;
    }
    let mut smallest_untrackable = sub_bucket_count << unit_magnitude;
    let mut buckets = 1u64;
    while smallest_untrackable <= high {
        if smallest_untrackable > u64::MAX / 2 {
            buckets += 1;
            break;
        }
        smallest_untrackable <<= 1;
        buckets += 1;
    }
    Some((buckets + 1) * (sub_bucket_count / 2))
}

/// Check an encoded histogram's header before hdrhistogram allocates what it asks for.
fn check_header(bin: &[u8]) -> Result<(), String> {
    use std::io::Read;
    let be32 = |b: &[u8], at: usize| {
        b.get(at..at + 4)
            .map(|x| u32::from_be_bytes(x.try_into().unwrap_or_default()))
    };
    let be64 = |b: &[u8], at: usize| {
        b.get(at..at + 8)
            .map(|x| u64::from_be_bytes(x.try_into().unwrap_or_default()))
    };
    let mut header = [0u8; 40];
    let v2: &[u8] = match be32(bin, 0) {
        Some(V2_COOKIE) => bin,
        Some(V2_COMPRESSED_COOKIE) => {
            let rest = bin.get(8..).ok_or("truncated histogram")?;
            flate2::read::ZlibDecoder::new(rest)
                .read_exact(&mut header)
                .map_err(|e| format!("histogram does not inflate: {e}"))?;
            &header
        }
        _ => return Err("not a V2 histogram (bad cookie)".into()),
    };
    let (Some(payload), Some(digits), Some(low), Some(high)) =
        (be32(v2, 4), be32(v2, 12), be64(v2, 16), be64(v2, 24))
    else {
        return Err("truncated histogram header".into());
    };
    if u64::from(payload) > MAX_PAYLOAD {
        return Err(format!(
            "histogram announces {payload} payload bytes (at most {MAX_PAYLOAD})"
        ));
    }
    let n = u8::try_from(digits)
        .ok()
        .and_then(|d| counts_len(low, high, d))
        .ok_or_else(|| {
            format!("histogram bounds {low}..{high} with {digits} digits are not valid")
        })?;
    if n > MAX_COUNTS {
        return Err(format!(
            "histogram bounds {low}..{high} with {digits} digits need {n} counts (at most {MAX_COUNTS})"
        ));
    }
    Ok(())
}

/// Reads an interval log one line at a time, in file order, yielding each interval; only
/// the line being decoded is held in memory (a line longer than [`MAX_LINE`] and a
/// histogram whose header asks for more than [`MAX_COUNTS`] are errors, found before
/// anything is allocated for them). A line that does not parse (e.g. a truncated last
/// line) or a histogram that does not decode is an error naming the file.
pub struct IntervalReader<R = std::io::BufReader<std::fs::File>> {
    path: PathBuf,
    reader: R,
    line: Vec<u8>,
    line_no: usize,
    base: f64,
    n: usize,
    deserializer: Deserializer,
    done: bool,
}

impl IntervalReader {
    /// Open a log file (a regular file only: a FIFO is refused, not waited on).
    pub fn open(path: &Path) -> Result<Self, HlogError> {
        use std::os::unix::fs::OpenOptionsExt;
        let io = |e: std::io::Error| HlogError::new(path, e.to_string());
        let f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .map_err(io)?;
        if !f.metadata().map_err(io)?.is_file() {
            return Err(HlogError::new(path, "not a regular file"));
        }
        Ok(IntervalReader::from_reader(
            path,
            std::io::BufReader::new(f),
        ))
    }
}

impl<R: BufRead> IntervalReader<R> {
    /// Read a log from `reader`; `path` names it in errors.
    pub fn from_reader(path: &Path, reader: R) -> Self {
        IntervalReader {
            path: path.to_path_buf(),
            reader,
            line: Vec::new(),
            line_no: 0,
            base: 0.0,
            n: 0,
            deserializer: Deserializer::new(),
            done: false,
        }
    }

    /// Intervals read so far.
    pub fn intervals_read(&self) -> usize {
        self.n
    }

    fn next_interval(&mut self) -> Result<Option<Interval>, HlogError> {
        use base64::Engine as _;
        use std::io::Read;
        let path = self.path.clone();
        let io = |e: std::io::Error| HlogError::new(&path, e.to_string());
        loop {
            self.line.clear();
            let got = (&mut self.reader)
                .take(MAX_LINE + 1)
                .read_until(b'\n', &mut self.line)
                .map_err(io)?;
            if got == 0 {
                return Ok(None);
            }
            self.line_no += 1;
            if got as u64 > MAX_LINE {
                return Err(HlogError::new(
                    &path,
                    format!("line {} is longer than {MAX_LINE} bytes", self.line_no),
                ));
            }
            // the log format is line by line: one line is a whole input for the parser
            for entry in IntervalLogIterator::new(&self.line) {
                match entry {
                    Ok(LogEntry::StartTime(_)) => {}
                    Ok(LogEntry::BaseTime(d)) => self.base = d.as_secs_f64(),
                    Ok(LogEntry::Interval(i)) => {
                        self.n += 1;
                        let n = self.n;
                        let bin = base64::engine::general_purpose::STANDARD
                            .decode(i.encoded_histogram().trim())
                            .map_err(|e| {
                                HlogError::new(&path, format!("interval {n}: bad base64: {e}"))
                            })?;
                        check_header(&bin)
                            .map_err(|e| HlogError::new(&path, format!("interval {n}: {e}")))?;
                        let hist: Histogram<u64> = self
                            .deserializer
                            .deserialize(&mut bin.as_slice())
                            .map_err(|e| {
                                HlogError::new(&path, format!("interval {n}: bad histogram: {e:?}"))
                            })?;
                        let start_s = self.base + i.start_timestamp().as_secs_f64();
                        let duration_s = i.duration().as_secs_f64();
                        if !(start_s.is_finite() && duration_s.is_finite()) {
                            return Err(HlogError::new(
                                &path,
                                format!("interval {n}: times are not finite"),
                            ));
                        }
                        return Ok(Some(Interval {
                            tag: i.tag().map(|t| t.as_str().to_string()),
                            start_s,
                            duration_s,
                            hist,
                        }));
                    }
                    Err(LogIteratorError::ParseError { .. }) => {
                        return Err(HlogError::new(
                            &path,
                            format!(
                                "not a valid interval log: cannot parse line {} (truncated or corrupt)",
                                self.line_no
                            ),
                        ));
                    }
                }
            }
        }
    }
}

impl<R: BufRead> Iterator for IntervalReader<R> {
    type Item = Result<Interval, HlogError>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let r = self.next_interval().transpose();
        if !matches!(r, Some(Ok(_))) {
            self.done = true;
        }
        r
    }
}

/// Decode an interval log interval by interval (see [`IntervalReader`]), handing each to
/// `visit`. Returns the number of intervals.
pub fn for_each_interval(path: &Path, mut visit: impl FnMut(Interval)) -> Result<usize, HlogError> {
    let mut r = IntervalReader::open(path)?;
    for i in r.by_ref() {
        visit(i?);
    }
    Ok(r.intervals_read())
}

/// The tag of a whole-window part histogram in a cell's `parts.hlog`: `kind` is "status"
/// or "subset", `name` the class or subset, `which` "corrected" or "uncorrected". None when
/// the name cannot be a tag (interval-log tags hold no ',' or whitespace; here only
/// `[A-Za-z0-9._-]`, so ':' separates the parts).
pub fn part_tag(kind: &str, name: &str, which: &str) -> Option<String> {
    let ok = !name.is_empty()
        && name.len() <= 100
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    ok.then(|| format!("{kind}:{name}:{which}"))
}

/// The parts of a tag written by [`part_tag`]: (kind, name, which).
pub fn parse_part_tag(tag: &str) -> Option<(&str, &str, &str)> {
    let mut it = tag.splitn(3, ':');
    Some((it.next()?, it.next()?, it.next()?))
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
    fn counts_len_is_hdrhistograms_own() {
        for (low, high, digits) in [
            (1, 3_600_000_000, 3),
            (1, 60_000_000_000, 3),
            (1000, 1 << 40, 2),
            (1, u64::MAX / 2, 5),
        ] {
            let h = Histogram::<u8>::new_with_bounds(low, high, digits).unwrap();
            assert_eq!(
                counts_len(low, high, digits),
                Some(h.distinct_values() as u64),
                "{low} {high} {digits}"
            );
        }
        assert_eq!(counts_len(0, 10, 3), None);
        assert_eq!(counts_len(1, 10, 6), None);
    }

    #[test]
    fn a_histogram_asking_for_gigabytes_is_refused_before_it_is_allocated() {
        use base64::Engine as _;
        use std::io::Write;
        // a V2 header announcing a 4 GiB payload, then one asking for an absurd range
        let mut inner = Vec::new();
        for (payload, digits, low, high) in [
            (u32::MAX, 3u32, 1u64, 3_600_000_000u64),
            (16, 5, 1, u64::MAX / 2),
        ] {
            inner.clear();
            inner.extend(V2_COOKIE.to_be_bytes());
            inner.extend(payload.to_be_bytes());
            inner.extend(0u32.to_be_bytes());
            inner.extend(digits.to_be_bytes());
            inner.extend(low.to_be_bytes());
            inner.extend(high.to_be_bytes());
            inner.extend(1.0f64.to_be_bytes());
            let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
            z.write_all(&inner).unwrap();
            let z = z.finish().unwrap();
            let mut bin = V2_COMPRESSED_COOKIE.to_be_bytes().to_vec();
            bin.extend((z.len() as u32).to_be_bytes());
            bin.extend(z);
            let line = format!(
                "0.000,1.000,5.0,{}\n",
                base64::engine::general_purpose::STANDARD.encode(&bin)
            );
            let dir = tempfile::tempdir().unwrap();
            let p = dir.path().join("bomb.hlog");
            std::fs::write(&p, line).unwrap();
            let e = for_each_interval(&p, |_| {}).unwrap_err().to_string();
            assert!(
                e.contains("interval 1:") && (e.contains("payload") || e.contains("counts")),
                "{e}"
            );
        }
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
