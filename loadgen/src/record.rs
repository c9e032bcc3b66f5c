//! Recording: one [`Recorder`] per worker (HDR histograms, microseconds, 3 significant
//! digits, 1 µs .. 1 h), merged with `Histogram::add`; percentiles for run.json; and the
//! per-cell interval log (`.hlog`, V2 deflate, one-second intervals tagged `corrected` /
//! `uncorrected`). Nothing here grows with run length: memory is the histograms' fixed size
//! (subsets are capped at [`MAX_SUBSETS`]).

use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::Histogram;
use meshbench_schema::{
    ErrorCounts, Latency, Percentiles, HLOG_TAG_CORRECTED, HLOG_TAG_UNCORRECTED,
};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

/// Highest recordable latency: one hour, in microseconds. Longer values saturate.
pub const MAX_US: u64 = 3_600_000_000;
/// Distinct subset names tracked per cell; further names are pooled under [`OTHER_SUBSET`].
pub const MAX_SUBSETS: usize = 64;
pub const OTHER_SUBSET: &str = "(other)";
/// Distinct error messages kept per cell, as examples for the summary.
const MAX_ERROR_SAMPLES: usize = 8;

pub type Hist = Histogram<u64>;

pub fn new_hist() -> Hist {
    Histogram::new_with_bounds(1, MAX_US, 3).expect("static histogram bounds are valid")
}

fn us(d: Duration) -> u64 {
    (d.as_micros() as u64).max(1)
}

/// Percentiles of one histogram (zeros when empty).
pub fn percentiles(h: &Hist) -> Percentiles {
    if h.is_empty() {
        return Percentiles::default();
    }
    Percentiles {
        count: h.len(),
        min_us: h.min_nz() as f64,
        mean_us: h.mean(),
        stdev_us: h.stdev(),
        p50_us: h.value_at_quantile(0.50) as f64,
        p90_us: h.value_at_quantile(0.90) as f64,
        p99_us: h.value_at_quantile(0.99) as f64,
        p999_us: h.value_at_quantile(0.999) as f64,
        p9999_us: h.value_at_quantile(0.9999) as f64,
        max_us: h.max() as f64,
    }
}

/// Corrected (from intended send) and uncorrected (from actual send) histograms.
#[derive(Clone)]
pub struct Pair {
    pub corrected: Hist,
    pub uncorrected: Hist,
}

impl Default for Pair {
    fn default() -> Self {
        Pair {
            corrected: new_hist(),
            uncorrected: new_hist(),
        }
    }
}

impl Pair {
    pub fn record(&mut self, corrected: Duration, uncorrected: Duration) {
        self.corrected.saturating_record(us(corrected));
        self.uncorrected.saturating_record(us(uncorrected));
    }
    pub fn add(&mut self, other: &Pair) {
        // Same bounds everywhere, so `add` cannot fail.
        let _ = self.corrected.add(&other.corrected);
        let _ = self.uncorrected.add(&other.uncorrected);
    }
    pub fn reset(&mut self) {
        self.corrected.reset();
        self.uncorrected.reset();
    }
    pub fn latency(&self) -> Latency {
        Latency {
            corrected: percentiles(&self.corrected),
            uncorrected: percentiles(&self.uncorrected),
        }
    }
}

/// Failure classes (see [`ErrorCounts`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ErrorClass {
    ConnectRefused,
    ConnectTimeout,
    Tls,
    RequestTimeout,
    ConnectionReset,
    Other,
}

impl ErrorClass {
    pub fn name(self) -> &'static str {
        match self {
            ErrorClass::ConnectRefused => "connect_refused",
            ErrorClass::ConnectTimeout => "connect_timeout",
            ErrorClass::Tls => "tls",
            ErrorClass::RequestTimeout => "request_timeout",
            ErrorClass::ConnectionReset => "connection_reset",
            ErrorClass::Other => "other",
        }
    }
}

/// What became of one request.
#[derive(Debug)]
pub enum Outcome {
    Response { status: u16, subset: Option<String> },
    Failed { class: ErrorClass, message: String },
}

fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// One worker's recording (also used for the merged cell totals).
#[derive(Clone)]
pub struct Recorder {
    /// Requests with a known outcome (measured window only).
    pub requests: u64,
    /// Responses with a status below 400.
    pub ok: u64,
    /// Latency of successful responses.
    pub total: Pair,
    /// Latency of every response, by status class.
    pub by_class: BTreeMap<&'static str, (u64, Pair)>,
    /// Latency of successful responses by subset header value.
    pub subsets: BTreeMap<String, Pair>,
    pub errors: ErrorCounts,
    /// First messages seen per class, as examples.
    pub error_samples: Vec<(String, String)>,
    /// Successful responses since the interval was last taken.
    pub interval: Pair,
    pub interval_requests: u64,
    pub interval_errors: u64,
    /// Completion time of the last measured request.
    pub last_done: Option<Instant>,
    /// True once any connection negotiated HTTP/2.
    pub saw_h2: bool,
    /// Open loop: how late requests were sent after their intended time (the generator's
    /// own lateness, e.g. a busy host; it is part of corrected latency). Counted only for
    /// lanes that were free at the intended time, so waiting on a slow target is not in it.
    pub send_lag: Hist,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            requests: 0,
            ok: 0,
            total: Pair::default(),
            by_class: BTreeMap::new(),
            subsets: BTreeMap::new(),
            errors: ErrorCounts::default(),
            error_samples: vec![],
            interval: Pair::default(),
            interval_requests: 0,
            interval_errors: 0,
            last_done: None,
            saw_h2: false,
            send_lag: new_hist(),
        }
    }
}

impl Recorder {
    pub fn record(&mut self, intended: Instant, sent: Instant, done: Instant, outcome: Outcome) {
        self.requests += 1;
        self.interval_requests += 1;
        self.last_done = Some(self.last_done.map_or(done, |l| l.max(done)));
        let corrected = done.saturating_duration_since(intended);
        let uncorrected = done.saturating_duration_since(sent);
        match outcome {
            Outcome::Response { status, subset } => {
                let class = status_class(status);
                let e = self.by_class.entry(class).or_default();
                e.0 += 1;
                e.1.record(corrected, uncorrected);
                if status >= 500 {
                    self.errors.http_5xx += 1;
                    self.interval_errors += 1;
                } else if status >= 400 {
                    self.errors.http_4xx += 1;
                    self.interval_errors += 1;
                } else {
                    self.ok += 1;
                    self.total.record(corrected, uncorrected);
                    self.interval.record(corrected, uncorrected);
                    if let Some(s) = subset {
                        let key =
                            if self.subsets.contains_key(&s) || self.subsets.len() < MAX_SUBSETS {
                                s
                            } else {
                                OTHER_SUBSET.to_string()
                            };
                        self.subsets
                            .entry(key)
                            .or_default()
                            .record(corrected, uncorrected);
                    }
                }
            }
            Outcome::Failed { class, message } => {
                self.interval_errors += 1;
                let e = &mut self.errors;
                match class {
                    ErrorClass::ConnectRefused => e.connect_refused += 1,
                    ErrorClass::ConnectTimeout => e.connect_timeout += 1,
                    ErrorClass::Tls => e.tls += 1,
                    ErrorClass::RequestTimeout => e.request_timeout += 1,
                    ErrorClass::ConnectionReset => e.connection_reset += 1,
                    ErrorClass::Other => e.other += 1,
                }
                self.sample_error(class.name(), message);
            }
        }
    }

    fn sample_error(&mut self, class: &str, message: String) {
        if self.error_samples.len() < MAX_ERROR_SAMPLES
            && !self.error_samples.iter().any(|(_, m)| *m == message)
        {
            self.error_samples.push((class.to_string(), message));
        }
    }

    /// Take the interval histograms (leaving them empty) into `into`.
    pub fn take_interval(&mut self, into: &mut Pair) -> (u64, u64) {
        into.add(&self.interval);
        self.interval.reset();
        let r = (self.interval_requests, self.interval_errors);
        self.interval_requests = 0;
        self.interval_errors = 0;
        r
    }

    /// Merge another worker's totals into this one.
    pub fn merge(&mut self, o: &Recorder) {
        self.requests += o.requests;
        self.ok += o.ok;
        self.total.add(&o.total);
        for (k, (n, p)) in &o.by_class {
            let e = self.by_class.entry(k).or_default();
            e.0 += n;
            e.1.add(p);
        }
        for (k, p) in &o.subsets {
            let key = if self.subsets.contains_key(k) || self.subsets.len() < MAX_SUBSETS {
                k.clone()
            } else {
                OTHER_SUBSET.to_string()
            };
            self.subsets.entry(key).or_default().add(p);
        }
        let (e, f) = (&mut self.errors, &o.errors);
        e.connect_refused += f.connect_refused;
        e.connect_timeout += f.connect_timeout;
        e.tls += f.tls;
        e.request_timeout += f.request_timeout;
        e.connection_reset += f.connection_reset;
        e.http_4xx += f.http_4xx;
        e.http_5xx += f.http_5xx;
        e.other += f.other;
        for (c, m) in &o.error_samples {
            self.sample_error(c, m.clone());
        }
        self.last_done = match (self.last_done, o.last_done) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        self.saw_h2 |= o.saw_h2;
        let _ = self.send_lag.add(&o.send_lag);
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{path}: cannot write interval log: {message}")]
pub struct HlogError {
    pub path: PathBuf,
    pub message: String,
}

/// A cell's interval log, written to a temp file and renamed into place by [`Hlog::finish`].
pub struct Hlog {
    path: PathBuf,
    tmp: PathBuf,
    file: std::io::BufWriter<std::fs::File>,
    ser: V2DeflateSerializer,
}

impl Hlog {
    /// Start a log whose interval timestamps are relative to `start` (the measured window).
    pub fn create(path: &Path, start: SystemTime, comment: &str) -> Result<Hlog, HlogError> {
        let err = |e: &dyn std::fmt::Display| HlogError {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
        let file = std::fs::File::create(&tmp).map_err(|e| err(&e))?;
        let mut h = Hlog {
            path: path.to_path_buf(),
            tmp,
            file: std::io::BufWriter::new(file),
            ser: V2DeflateSerializer::new(),
        };
        IntervalLogWriterBuilder::new()
            .add_comment(comment)
            .add_comment("values are microseconds (max column too)")
            .with_start_time(start)
            .with_base_time(start)
            .begin_log_with(&mut h.file, &mut h.ser)
            .map_err(|e| err(&e))?;
        h.file
            .write_all(b"\"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\"\n")
            .map_err(|e| err(&e))?;
        Ok(h)
    }

    /// Append one interval (both tags). `offset` is from the log's start.
    pub fn write(&mut self, offset: Duration, len: Duration, pair: &Pair) -> Result<(), HlogError> {
        let path = self.path.clone();
        let err = |e: &dyn std::fmt::Display| HlogError {
            path: path.clone(),
            message: e.to_string(),
        };
        let mut w = IntervalLogWriterBuilder::new()
            .begin_log_with(&mut self.file, &mut self.ser)
            .map_err(|e| err(&e))?;
        w.write_histogram(&pair.corrected, offset, len, Tag::new(HLOG_TAG_CORRECTED))
            .map_err(|e| err(&e))?;
        w.write_histogram(
            &pair.uncorrected,
            offset,
            len,
            Tag::new(HLOG_TAG_UNCORRECTED),
        )
        .map_err(|e| err(&e))?;
        Ok(())
    }

    /// Flush, fsync and move into place.
    pub fn finish(mut self) -> Result<(), HlogError> {
        let err = |e: std::io::Error| HlogError {
            path: self.path.clone(),
            message: e.to_string(),
        };
        self.file.flush().map_err(err)?;
        self.file.get_ref().sync_all().map_err(err)?;
        std::fs::rename(&self.tmp, &self.path).map_err(err)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
    use hdrhistogram::serialization::Deserializer;

    #[test]
    fn merge_adds_counts_and_errors() {
        let t0 = Instant::now();
        let mut a = Recorder::default();
        let mut b = Recorder::default();
        for i in 1..=100u64 {
            let done = t0 + Duration::from_millis(i);
            a.record(
                t0,
                t0,
                done,
                Outcome::Response {
                    status: 200,
                    subset: Some("v1".into()),
                },
            );
        }
        b.record(
            t0,
            t0,
            t0 + Duration::from_secs(1),
            Outcome::Response {
                status: 503,
                subset: None,
            },
        );
        b.record(
            t0,
            t0,
            t0,
            Outcome::Failed {
                class: ErrorClass::Tls,
                message: "x".into(),
            },
        );
        a.merge(&b);
        assert_eq!(a.requests, 102);
        assert_eq!(a.ok, 100);
        assert_eq!(a.errors.http_5xx, 1);
        assert_eq!(a.errors.tls, 1);
        assert_eq!(a.by_class["5xx"].0, 1);
        assert_eq!(a.subsets["v1"].corrected.len(), 100);
        let p = percentiles(&a.total.corrected);
        assert!((p.p50_us - 50_000.0).abs() / 50_000.0 < 0.01, "{p:?}");
    }

    #[test]
    fn interval_log_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cell-0.hlog");
        let mut log = Hlog::create(&path, SystemTime::now(), "test").unwrap();
        let mut p = Pair::default();
        p.record(Duration::from_millis(5), Duration::from_millis(1));
        log.write(Duration::ZERO, Duration::from_secs(1), &p)
            .unwrap();
        log.write(Duration::from_secs(1), Duration::from_secs(1), &p)
            .unwrap();
        log.finish().unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let mut tags = vec![];
        let mut de = Deserializer::new();
        for e in IntervalLogIterator::new(&bytes) {
            if let LogEntry::Interval(i) = e.unwrap() {
                tags.push(i.tag().unwrap().as_str().to_string());
                let raw = base64::Engine::decode(
                    &base64::engine::general_purpose::STANDARD,
                    i.encoded_histogram(),
                )
                .unwrap();
                let h: Hist = de.deserialize(&mut raw.as_slice()).unwrap();
                assert_eq!(h.len(), 1);
            }
        }
        assert_eq!(
            tags,
            ["corrected", "uncorrected", "corrected", "uncorrected"]
        );
    }
}
