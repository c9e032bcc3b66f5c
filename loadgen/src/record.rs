//! Recording: one [`Recorder`] per worker (HDR histograms, microseconds, 3 significant
//! digits, 1 µs .. 1 h), merged with `Histogram::add`; percentiles for run.json; and the
//! per-cell interval log (`.hlog`, V2 deflate, one-second intervals tagged `corrected` /
//! `uncorrected`). Nothing here grows with run length: memory is the histograms' fixed size
//! (subsets are capped at [`MAX_SUBSETS`]).

use hdrhistogram::Histogram;
use meshbench_schema::hlog::{
    HlogError, HlogWriter, TAG_CORRECTED, TAG_FAILED, TAG_SEND_LAG, TAG_UNCORRECTED,
};
use meshbench_schema::{ErrorCounts, Latency, Percentiles};
use std::collections::BTreeMap;
use std::path::Path;
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
    Percentiles::of(h)
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

/// The status class of a response; anything outside 100..=599 (a server may send 999)
/// is `other`, and counted as an `other` error, not as a 5xx.
fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => "other",
    }
}

/// A message with every run of digits replaced by `#`: what makes two failures alike.
fn error_shape(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut in_digits = false;
    for c in message.chars() {
        if c.is_ascii_digit() {
            if !in_digits {
                out.push('#');
            }
            in_digits = true;
        } else {
            out.push(c);
            in_digits = false;
        }
    }
    out
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
    /// Send lag since the interval was last taken.
    pub interval_lag: Hist,
    pub interval_requests: u64,
    /// Corrected latency of each request that failed since the interval was last taken
    /// (its count is the interval's error count).
    pub interval_failed: Hist,
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
            interval_lag: new_hist(),
            interval_requests: 0,
            interval_failed: new_hist(),
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
                if !(100..=599).contains(&status) {
                    self.errors.other += 1;
                    self.interval_failed.saturating_record(us(corrected));
                    self.sample_error(
                        "other",
                        format!("HTTP status {status} is not an HTTP status"),
                    );
                } else if status >= 500 {
                    self.errors.http_5xx += 1;
                    self.interval_failed.saturating_record(us(corrected));
                } else if status >= 400 {
                    self.errors.http_4xx += 1;
                    self.interval_failed.saturating_record(us(corrected));
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
                self.interval_failed.saturating_record(us(corrected));
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

    /// Keep `message` as an example of its class unless one like it is kept already:
    /// messages that differ only in numbers (ports, counts, addresses) are alike, so they
    /// do not crowd out other kinds of failure; at most [`MAX_ERROR_SAMPLES`] in all and
    /// half of them per class.
    fn sample_error(&mut self, class: &str, message: String) {
        let shape = error_shape(&message);
        let same_class = self
            .error_samples
            .iter()
            .filter(|(c, _)| c == class)
            .count();
        if self.error_samples.len() < MAX_ERROR_SAMPLES
            && same_class < MAX_ERROR_SAMPLES / 2
            && !self
                .error_samples
                .iter()
                .any(|(c, m)| c == class && error_shape(m) == shape)
        {
            self.error_samples.push((class.to_string(), message));
        }
    }

    /// The generator's own lateness for one request (open loop).
    pub fn record_lag(&mut self, lag: Duration) {
        let v = us(lag);
        self.send_lag.saturating_record(v);
        self.interval_lag.saturating_record(v);
    }

    /// Take the interval histograms (leaving them empty) into `into`, `lag` and `failed`;
    /// returns the interval's request count.
    pub fn take_interval(&mut self, into: &mut Pair, lag: &mut Hist, failed: &mut Hist) -> u64 {
        into.add(&self.interval);
        self.interval.reset();
        let _ = lag.add(&self.interval_lag);
        self.interval_lag.reset();
        let _ = failed.add(&self.interval_failed);
        self.interval_failed.reset();
        std::mem::take(&mut self.interval_requests)
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
        self.errors.add(&o.errors);
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

/// A cell's interval log: each interval's corrected, uncorrected and send-lag histograms,
/// through the one writer of `meshbench-schema` (temp file, renamed into place by
/// [`Hlog::finish`]).
pub struct Hlog(HlogWriter);

impl Hlog {
    /// Start a log whose interval timestamps are relative to `start` (the measured window).
    pub fn create(path: &Path, start: SystemTime, comment: &str) -> Result<Hlog, HlogError> {
        HlogWriter::create(
            path,
            start,
            &[comment, "values are microseconds (max column too)"],
        )
        .map(Hlog)
    }

    /// Append one interval (every tag; send lag only in open loop; the failed requests'
    /// latency always, empty in a second without errors). `offset` is from the log's start.
    pub fn write(
        &mut self,
        offset: Duration,
        len: Duration,
        pair: &Pair,
        lag: Option<&Hist>,
        failed: &Hist,
    ) -> Result<(), HlogError> {
        self.0
            .write(offset, len, Some(TAG_CORRECTED), &pair.corrected)?;
        self.0
            .write(offset, len, Some(TAG_UNCORRECTED), &pair.uncorrected)?;
        if let Some(l) = lag {
            self.0.write(offset, len, Some(TAG_SEND_LAG), l)?;
        }
        self.0.write(offset, len, Some(TAG_FAILED), failed)
    }

    /// Flush, fsync and move into place.
    pub fn finish(self) -> Result<(), HlogError> {
        self.0.finish()
    }
}

/// Write the cell's whole-window latency per status class and per subset as one interval
/// each (tags from `hlog::part_tag`), so that `report merge` can merge them exactly. False
/// when there is nothing to write.
pub fn write_parts(
    path: &Path,
    rec: &Recorder,
    window_start: SystemTime,
    duration_s: f64,
) -> Result<bool, HlogError> {
    use meshbench_schema::hlog::part_tag;
    let mut parts: Vec<(String, &Hist)> = Vec::new();
    for (class, (_, pair)) in &rec.by_class {
        for (which, h) in [
            ("corrected", &pair.corrected),
            ("uncorrected", &pair.uncorrected),
        ] {
            parts.extend(part_tag("status", class, which).map(|t| (t, h)));
        }
    }
    for (name, pair) in &rec.subsets {
        for (which, h) in [
            ("corrected", &pair.corrected),
            ("uncorrected", &pair.uncorrected),
        ] {
            parts.extend(part_tag("subset", name, which).map(|t| (t, h)));
        }
    }
    if parts.is_empty() {
        return Ok(false);
    }
    let mut w = HlogWriter::create(
        path,
        window_start,
        &["meshbench loadgen: whole-window latency per status class and subset (one interval per tag), microseconds"],
    )?;
    let len = Duration::from_secs_f64(duration_s.max(0.0));
    for (tag, h) in parts {
        w.write(Duration::ZERO, len, Some(&tag), h)?;
    }
    w.finish()?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn an_interval_holds_its_failed_requests_latency_apart_from_successes() {
        let t0 = Instant::now();
        let mut r = Recorder::default();
        let at = |ms| t0 + Duration::from_millis(ms);
        let resp = |status| Outcome::Response {
            status,
            subset: None,
        };
        // sent 1 ms late each: corrected (from intended) differs from uncorrected
        r.record(t0, at(1), at(10), resp(200));
        r.record(t0, at(1), at(20), resp(404));
        r.record(t0, at(1), at(30), resp(503));
        r.record(
            t0,
            at(1),
            at(40),
            Outcome::Failed {
                class: ErrorClass::ConnectionReset,
                message: "reset".into(),
            },
        );
        let (mut pair, mut lag, mut failed) = (Pair::default(), new_hist(), new_hist());
        assert_eq!(r.take_interval(&mut pair, &mut lag, &mut failed), 4);
        assert_eq!(pair.corrected.len(), 1);
        assert_eq!(failed.len(), r.errors.total());
        assert_eq!(failed.len(), 3);
        // corrected latencies of the three failures: 20, 30 and 40 ms
        assert_eq!(failed.min(), 20_000);
        assert!(failed.equivalent(failed.max(), 40_000), "{}", failed.max());
        // taken: the next interval starts empty
        let mut again = new_hist();
        assert_eq!(r.take_interval(&mut pair, &mut lag, &mut again), 0);
        assert!(again.is_empty());
    }

    #[test]
    fn odd_statuses_and_alike_errors() {
        let t0 = Instant::now();
        let mut r = Recorder::default();
        let resp = |status| Outcome::Response {
            status,
            subset: None,
        };
        r.record(t0, t0, t0, resp(999));
        r.record(t0, t0, t0, resp(503));
        assert_eq!((r.errors.other, r.errors.http_5xx, r.ok), (1, 1, 0));
        assert_eq!(r.by_class["other"].0, 1);
        // twenty resets that differ only in the port, then one TLS failure: the TLS one is
        // still kept as an example
        for port in 0..20 {
            r.record(
                t0,
                t0,
                t0,
                Outcome::Failed {
                    class: ErrorClass::ConnectionReset,
                    message: format!("connect to 127.0.0.1:{}: reset", 40000 + port),
                },
            );
        }
        r.record(
            t0,
            t0,
            t0,
            Outcome::Failed {
                class: ErrorClass::Tls,
                message: "TLS handshake: bad certificate".into(),
            },
        );
        let classes: Vec<&str> = r.error_samples.iter().map(|(c, _)| c.as_str()).collect();
        assert_eq!(classes, ["other", "connection_reset", "tls"]);
    }

    #[test]
    fn interval_log_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cell-0.hlog");
        let mut log = Hlog::create(&path, SystemTime::now(), "test").unwrap();
        let mut p = Pair::default();
        p.record(Duration::from_millis(5), Duration::from_millis(1));
        let mut lag = new_hist();
        lag.record(3).unwrap();
        let mut failed = new_hist();
        failed.record(40).unwrap();
        log.write(
            Duration::ZERO,
            Duration::from_secs(1),
            &p,
            Some(&lag),
            &failed,
        )
        .unwrap();
        log.write(
            Duration::from_secs(1),
            Duration::from_secs(1),
            &p,
            None,
            &failed,
        )
        .unwrap();
        log.finish().unwrap();
        let mut tags = vec![];
        meshbench_schema::hlog::for_each_interval(&path, |i| {
            assert_eq!(i.hist.len(), 1);
            tags.push(i.tag.unwrap());
        })
        .unwrap();
        assert_eq!(
            tags,
            [
                "corrected",
                "uncorrected",
                "send_lag",
                "failed",
                "corrected",
                "uncorrected",
                "failed"
            ]
        );
    }
}
