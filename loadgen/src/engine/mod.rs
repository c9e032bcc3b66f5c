//! The load engine: runs one cell against one resolved target.
//!
//! Open loop: a scheduler thread releases request *i* at `start + i/rate` (precise
//! `thread::sleep`, not the 1 ms tokio timer) by adding a permit to a FIFO semaphore; lanes
//! take permits in order, so a lane that takes permit *i* sends request *i*, whose latency is
//! measured from its intended time. When the target cannot keep up, permits pile up (a
//! counter: memory stays flat) and the wait shows in corrected latency and achieved rate.
//! Closed loop: each lane sends its next request when the previous one completes.
//!
//! Each connection has `lanes` lanes: 1 for HTTP/1.1, `max_in_flight` for HTTP/2 (streams
//! multiplexed on one connection). Lanes record into their connection's [`Recorder`]; the
//! cell loop takes the interval histograms every second (interval log, progress) and merges
//! the totals at the end.

pub mod conn;

use crate::plan::{Protocol, RequestPlan, TlsPlan};
use crate::record::{ErrorClass, Hlog, Outcome, Pair, Recorder};
use bytes::Bytes;
use conn::{Failure, SendKind, Sender};
use http_body_util::{BodyExt, Full};
use meshbench_schema::LoadMode;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// How long a failed request waits for its connection's own error (its real cause).
const CONN_ERROR_WAIT: Duration = Duration::from_millis(100);

/// How long an interrupted cell waits for requests in flight.
pub const INTERRUPT_DRAIN: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("target {url}: {message}")]
    Target { url: String, message: String },
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error(transparent)]
    Hlog(#[from] meshbench_schema::hlog::HlogError),
}

/// Where a cell sends its load, as resolved by the run's cell target.
#[derive(Debug, Clone)]
pub struct ResolvedTarget {
    /// `http://host:port/path` or `https://...`.
    pub url: String,
    /// Dial this address instead of resolving the URL's host.
    pub connect_to: Option<SocketAddr>,
    /// TLS settings (used when the URL is https).
    pub tls: TlsPlan,
}

pub struct TlsTarget {
    pub config: Arc<rustls::ClientConfig>,
    pub server_name: rustls_pki_types::ServerName<'static>,
    pub expected_identity: Option<String>,
}

/// A target ready for the engine: addresses resolved, request parts built, TLS config built.
pub struct Target {
    pub addrs: Vec<SocketAddr>,
    pub authority: String,
    pub protocol: Protocol,
    pub tls: Option<TlsTarget>,
    pub method: http::Method,
    /// Absolute URI (HTTP/2) and path-and-query (HTTP/1.1, with a Host header).
    pub uri_abs: http::Uri,
    pub uri_path: http::Uri,
    pub headers: http::HeaderMap,
    /// `headers` plus `Host` (HTTP/1.1), built once.
    pub headers_h1: http::HeaderMap,
    pub body: Bytes,
    pub timeout: Duration,
    pub connect_timeout: Duration,
    pub subset_header: Option<http::HeaderName>,
}

impl Target {
    /// Resolve the address, build the request parts once (the plan checked them), and the
    /// TLS client config when none is given.
    pub async fn new(
        resolved: &ResolvedTarget,
        req: &RequestPlan,
        tls_config: Option<Arc<rustls::ClientConfig>>,
    ) -> Result<Target, EngineError> {
        let bad = |message: String| EngineError::Target {
            url: resolved.url.clone(),
            message,
        };
        let uri: http::Uri = resolved.url.parse().map_err(|e| bad(format!("{e}")))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(bad("scheme must be http or https".into())),
        };
        let host = uri.host().ok_or_else(|| bad("no host".into()))?.to_string();
        let bare_host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let authority = uri
            .authority()
            .map(|a| a.to_string())
            .unwrap_or_else(|| format!("{host}:{port}"));
        let addrs = match resolved.connect_to {
            Some(a) => vec![a],
            None => tokio::net::lookup_host((bare_host.as_str(), port))
                .await
                .map_err(|e| bad(format!("cannot resolve {host}: {e}")))?
                .collect(),
        };
        if addrs.is_empty() {
            return Err(bad(format!("{host} resolves to no address")));
        }
        let path = match (&req.path, uri.path_and_query()) {
            (Some(p), _) | (None, Some(p)) => p.clone(),
            (None, None) => http::uri::PathAndQuery::from_static("/"),
        };
        let uri_path = http::Uri::from(path.clone());
        let scheme = if https { "https" } else { "http" };
        let uri_abs: http::Uri = format!("{scheme}://{authority}{path}")
            .parse()
            .map_err(|e| bad(format!("{e}")))?;
        let tls = if https {
            let config = match tls_config {
                Some(c) => c,
                None => tls::client_config(&resolved.tls.client(), req.protocol.alpn())?,
            };
            let sn = resolved.tls.server_name.clone().unwrap_or(bare_host);
            let server_name = rustls_pki_types::ServerName::try_from(sn.clone())
                .map_err(|_| bad(format!("`{sn}` is not a valid TLS server name")))?;
            Some(TlsTarget {
                config,
                server_name,
                expected_identity: resolved.tls.expected_identity.clone(),
            })
        } else {
            None
        };
        let mut headers_h1 = req.headers.clone();
        if !headers_h1.contains_key(http::header::HOST) {
            let v = http::HeaderValue::from_str(&authority)
                .map_err(|_| bad(format!("`{authority}` is not a valid Host header")))?;
            headers_h1.insert(http::header::HOST, v);
        }
        Ok(Target {
            headers_h1,
            addrs,
            authority,
            protocol: req.protocol,
            tls,
            method: req.method.clone(),
            uri_abs,
            uri_path,
            headers: req.headers.clone(),
            body: req.body.clone(),
            timeout: req.timeout.0,
            connect_timeout: req.connect_timeout.0,
            subset_header: req.subset_header.clone(),
        })
    }

    fn request(&self, h2: bool) -> http::Request<Full<Bytes>> {
        let mut req = http::Request::new(Full::new(self.body.clone()));
        *req.method_mut() = self.method.clone();
        if h2 {
            *req.headers_mut() = self.headers.clone();
            *req.uri_mut() = self.uri_abs.clone();
            *req.version_mut() = http::Version::HTTP_2;
        } else {
            *req.headers_mut() = self.headers_h1.clone();
            *req.uri_mut() = self.uri_path.clone();
        }
        req
    }
}

/// How hard and how long to push in one cell.
#[derive(Debug, Clone)]
pub struct CellLoad {
    pub mode: LoadMode,
    pub rate: Option<f64>,
    pub connections: u32,
    pub max_in_flight: u32,
    pub duration: Option<Duration>,
    pub requests: Option<u64>,
    pub warmup: Duration,
    pub think_time: Duration,
}

/// Live figures, once a second.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    pub elapsed: Duration,
    pub planned: Option<Duration>,
    pub requests: u64,
    pub errors: u64,
    /// Completions per second over the last interval.
    pub rate: f64,
    /// Corrected p99 of the last interval, µs.
    pub p99_us: f64,
}

/// Where to write a cell's interval log, and its header comment.
pub struct HlogSpec {
    pub path: std::path::PathBuf,
    pub comment: String,
}

/// What one cell measured.
pub struct CellMeasurement {
    pub rec: Recorder,
    /// Measured window, seconds (extended to the last completion when the target lagged).
    pub duration_s: f64,
    pub interrupted: bool,
    /// Scheduled measured requests that were never sent (target too slow, or interrupted).
    pub unsent: u64,
    pub started_at: SystemTime,
}

/// Shared schedule state of a cell.
struct Schedule {
    mode: LoadMode,
    start: Instant,
    rate: f64,
    /// Open loop: first measured ticket and total tickets (warmup + measured).
    warmup_tickets: u64,
    total_tickets: u64,
    next: AtomicU64,
    permits: Semaphore,
    /// Closed loop.
    window_start: Instant,
    window_end: Option<Instant>,
    max_measured: Option<u64>,
    measured_claimed: AtomicU64,
    /// Measured requests actually sent.
    dispatched: AtomicU64,
    stopped: AtomicBool,
}

struct Ticket {
    intended: Instant,
    measured: bool,
}

impl Schedule {
    async fn claim(&self) -> Option<Ticket> {
        if self.stopped.load(Ordering::Relaxed) {
            return None;
        }
        match self.mode {
            LoadMode::Open => {
                self.permits.acquire().await.ok()?.forget();
                let i = self.next.fetch_add(1, Ordering::Relaxed);
                if i >= self.total_tickets {
                    return None;
                }
                Some(Ticket {
                    intended: self.start + Duration::from_secs_f64(i as f64 / self.rate),
                    measured: i >= self.warmup_tickets,
                })
            }
            LoadMode::Closed => {
                let now = Instant::now();
                let measured = now >= self.window_start;
                if measured {
                    if self.window_end.is_some_and(|e| now >= e) {
                        return None;
                    }
                    if let Some(n) = self.max_measured {
                        if self.measured_claimed.fetch_add(1, Ordering::Relaxed) >= n {
                            return None;
                        }
                    }
                }
                Some(Ticket {
                    intended: now,
                    measured,
                })
            }
        }
    }

    fn stop(&self) {
        self.stopped.store(true, Ordering::Relaxed);
        self.permits.close();
    }
}

/// Releases open-loop tickets on time from a plain thread (µs-precise sleeps).
fn spawn_scheduler(
    sched: Arc<Schedule>,
    lanes: usize,
    rt_start: Instant,
) -> std::thread::JoinHandle<()> {
    let start = rt_start.into_std();
    std::thread::spawn(move || {
        // Wake on time rather than up to the default 50 µs late.
        let _ = nix::sys::prctl::set_timerslack(1);
        let mut released: u64 = 0;
        while released < sched.total_tickets {
            if sched.stopped.load(Ordering::Relaxed) {
                return;
            }
            let now = std::time::Instant::now();
            let elapsed = now.saturating_duration_since(start).as_secs_f64();
            // Tickets whose intended time has come: i/rate <= elapsed.
            let due = ((elapsed * sched.rate).floor() as u64 + 1).min(sched.total_tickets);
            if due > released {
                sched.permits.add_permits((due - released) as usize);
                released = due;
                continue;
            }
            let next_at = start + Duration::from_secs_f64(released as f64 / sched.rate);
            let wait = next_at
                .saturating_duration_since(now)
                .min(Duration::from_millis(5));
            if !wait.is_zero() {
                std::thread::sleep(wait);
            }
        }
        // One extra permit per lane lets every lane see the end of the schedule.
        sched.permits.add_permits(lanes);
    })
}

/// Run one cell. `stop` turning true interrupts it (what was measured is kept).
pub async fn run_cell(
    target: Arc<Target>,
    load: &CellLoad,
    hlog: Option<HlogSpec>,
    mut stop: watch::Receiver<bool>,
    on_progress: &mut (dyn FnMut(&Progress) + Send),
) -> Result<CellMeasurement, EngineError> {
    // Connections first, concurrently (failures are counted later, per request), so that
    // connection set-up does not delay the first scheduled requests.
    let mut connecting = JoinSet::new();
    for i in 0..load.connections {
        let t = target.clone();
        connecting.spawn(async move { (i, conn::connect(&t).await.ok()) });
    }
    let mut firsts: Vec<Option<Sender>> = (0..load.connections).map(|_| None).collect();
    while let Some(r) = connecting.join_next().await {
        if let Ok((i, s)) = r {
            firsts[i as usize] = s;
        }
    }
    let started_at = SystemTime::now();
    let start = Instant::now();
    let window_start = start + load.warmup;
    let mut hlog = match hlog {
        Some(spec) => Some(Hlog::create(
            &spec.path,
            started_at + load.warmup,
            &spec.comment,
        )?),
        None => None,
    };
    let (rate, warmup_tickets, measured_tickets) = match (load.mode, load.rate) {
        (LoadMode::Open, Some(r)) => {
            let w = (load.warmup.as_secs_f64() * r - 1e-9).ceil().max(0.0) as u64;
            let by_time = load
                .duration
                .map(|d| (d.as_secs_f64() * r - 1e-9).ceil().max(1.0) as u64);
            let n = match (by_time, load.requests) {
                (Some(a), Some(b)) => a.min(b),
                (a, b) => a.or(b).unwrap_or(1),
            };
            (r, w, n)
        }
        _ => (0.0, 0, 0),
    };
    let planned = match load.mode {
        LoadMode::Open => Some(Duration::from_secs_f64(measured_tickets as f64 / rate)),
        LoadMode::Closed => load.duration,
    };
    let sched = Arc::new(Schedule {
        mode: load.mode,
        start,
        rate,
        warmup_tickets,
        total_tickets: warmup_tickets + measured_tickets,
        next: AtomicU64::new(0),
        permits: Semaphore::new(0),
        window_start,
        window_end: load.duration.map(|d| window_start + d),
        max_measured: load.requests,
        measured_claimed: AtomicU64::new(0),
        dispatched: AtomicU64::new(0),
        stopped: AtomicBool::new(false),
    });

    let mut lanes = JoinSet::new();
    let mut recorders = Vec::new();
    let mut lane_count = 0usize;
    for first in firsts {
        let rec = Arc::new(Mutex::new(Recorder::default()));
        recorders.push(rec.clone());
        let h2 = match &first {
            Some(s) => s.is_h2(),
            None => target.protocol == Protocol::Http2,
        };
        if h2 && first.is_some() {
            rec.lock().expect("recorder lock").saw_h2 = true;
        }
        let n = if h2 { load.max_in_flight.max(1) } else { 1 };
        let slot = Arc::new(tokio::sync::Mutex::new(first));
        for _ in 0..n {
            lane_count += 1;
            let lane = Lane {
                target: target.clone(),
                sched: sched.clone(),
                rec: rec.clone(),
                slot: slot.clone(),
                own: None,
                stop: stop.clone(),
                think: load.think_time,
            };
            lanes.spawn(lane.run());
        }
    }
    let scheduler =
        (load.mode == LoadMode::Open).then(|| spawn_scheduler(sched.clone(), lane_count, start));

    let mut ticker = tokio::time::interval_at(
        window_start + Duration::from_secs(1),
        Duration::from_secs(1),
    );
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_edge = window_start;
    let mut interval = Pair::default();
    let mut total_requests = 0u64;
    let mut total_errors = 0u64;
    let mut interrupted = *stop.borrow();
    if interrupted {
        sched.stop();
    }
    let mut drain_deadline = Instant::now() + INTERRUPT_DRAIN;
    let give_up_after = load.mode == LoadMode::Open;
    let sched_end = planned.map(|p| window_start + p);
    let give_up_at = sched_end.map(|e| e + target.timeout + Duration::from_secs(1));
    let mut gave_up = false;

    let collect = |until: Instant,
                   last_edge: &mut Instant,
                   interval: &mut Pair,
                   hlog: &mut Option<Hlog>,
                   total_requests: &mut u64,
                   total_errors: &mut u64|
     -> Result<Progress, EngineError> {
        interval.reset();
        let (mut n, mut e) = (0, 0);
        for r in &recorders {
            let (a, b) = r.lock().expect("recorder lock").take_interval(interval);
            n += a;
            e += b;
        }
        *total_requests += n;
        *total_errors += e;
        let len = until.saturating_duration_since(*last_edge);
        if let Some(h) = hlog.as_mut() {
            if !len.is_zero() {
                h.write(
                    last_edge.saturating_duration_since(window_start),
                    len,
                    interval,
                )?;
            }
        }
        *last_edge = until;
        Ok(Progress {
            elapsed: until.saturating_duration_since(window_start),
            planned,
            requests: *total_requests,
            errors: *total_errors,
            rate: if len.is_zero() {
                0.0
            } else {
                n as f64 / len.as_secs_f64()
            },
            p99_us: crate::record::percentiles(&interval.corrected).p99_us,
        })
    };

    loop {
        tokio::select! {
            _ = ticker.tick() => {
                let p = collect(Instant::now(), &mut last_edge, &mut interval, &mut hlog, &mut total_requests, &mut total_errors)?;
                on_progress(&p);
            }
            r = lanes.join_next() => {
                if r.is_none() { break; }
            }
            _ = stopped(&mut stop), if !interrupted => {
                interrupted = true;
                sched.stop();
                drain_deadline = Instant::now() + INTERRUPT_DRAIN.min(target.timeout);
            }
            _ = tokio::time::sleep_until(drain_deadline), if interrupted => {
                lanes.abort_all();
                while lanes.join_next().await.is_some() {}
                break;
            }
            _ = tokio::time::sleep_until(give_up_at.unwrap_or(start)), if give_up_after && !gave_up && !interrupted && give_up_at.is_some() => {
                // The target could not keep up: stop sending the backlog; what was not
                // sent is reported as unsent.
                gave_up = true;
                sched.stop();
            }
        }
    }
    // Lanes also watch `stop` and may all end before the branch above saw it.
    interrupted |= *stop.borrow();
    sched.stop();
    if let Some(s) = scheduler {
        let _ = tokio::task::spawn_blocking(move || s.join()).await;
    }
    let end = Instant::now();
    collect(
        end,
        &mut last_edge,
        &mut interval,
        &mut hlog,
        &mut total_requests,
        &mut total_errors,
    )?;
    if let Some(h) = hlog {
        h.finish()?;
    }
    let mut rec = Recorder::default();
    for r in &recorders {
        rec.merge(&r.lock().expect("recorder lock"));
    }
    let measured = if interrupted {
        end.saturating_duration_since(window_start)
    } else {
        let to_last = rec
            .last_done
            .map(|l| l.saturating_duration_since(window_start))
            .unwrap_or_default();
        planned.map_or(to_last, |p| p.max(to_last))
    };
    let unsent = match load.mode {
        LoadMode::Open => measured_tickets.saturating_sub(sched.dispatched.load(Ordering::Relaxed)),
        LoadMode::Closed => 0,
    };
    Ok(CellMeasurement {
        rec,
        duration_s: measured.as_secs_f64(),
        interrupted,
        unsent,
        started_at,
    })
}

/// Resolves once `stop` is true; never when its sender is gone without saying so.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    if stop.wait_for(|v| *v).await.is_err() {
        std::future::pending::<()>().await;
    }
}

struct Lane {
    target: Arc<Target>,
    sched: Arc<Schedule>,
    rec: Arc<Mutex<Recorder>>,
    slot: Arc<tokio::sync::Mutex<Option<Sender>>>,
    /// HTTP/1.1: the lane's own connection between requests (no lock on the hot path).
    own: Option<Sender>,
    stop: watch::Receiver<bool>,
    think: Duration,
}

impl Lane {
    async fn run(mut self) {
        let closed = self.sched.mode == LoadMode::Closed;
        loop {
            let waiting_since = Instant::now();
            let ticket = tokio::select! {
                t = self.sched.claim() => t,
                _ = stopped(&mut self.stop) => None,
            };
            let Some(ticket) = ticket else { break };
            let before = Instant::now();
            let intended = if closed { before } else { ticket.intended };
            if ticket.measured {
                self.sched.dispatched.fetch_add(1, Ordering::Relaxed);
            }
            let (sent, outcome) = match self.acquire().await {
                Err(f) => (
                    before,
                    Outcome::Failed {
                        class: f.class,
                        message: f.message,
                    },
                ),
                Ok(mut s) => {
                    let sent = Instant::now();
                    match tokio::time::timeout(self.target.timeout, self.send(&mut s)).await {
                        Err(_) => (
                            sent,
                            Outcome::Failed {
                                class: ErrorClass::RequestTimeout,
                                message: format!(
                                    "no complete response within {}",
                                    humantime::format_duration(self.target.timeout)
                                ),
                            },
                        ),
                        Ok(Err(f)) => {
                            let f = s.state.explain(f, CONN_ERROR_WAIT).await;
                            (
                                sent,
                                Outcome::Failed {
                                    class: f.class,
                                    message: f.message,
                                },
                            )
                        }
                        Ok(Ok((status, subset))) => {
                            self.release(s);
                            (sent, Outcome::Response { status, subset })
                        }
                    }
                }
            };
            let done = Instant::now();
            if ticket.measured {
                let mut rec = self.rec.lock().expect("recorder lock");
                // The generator's own lateness: only when this lane was already free at
                // the intended time. A ticket that waited for a lane to come free waited on
                // the target (every connection busy), which is not the generator's doing.
                if !closed && waiting_since <= intended {
                    let lag = before.saturating_duration_since(intended);
                    rec.send_lag
                        .saturating_record((lag.as_micros() as u64).max(1));
                }
                rec.record(intended, sent, done, outcome);
            }
            if closed && !self.think.is_zero() {
                tokio::select! {
                    _ = tokio::time::sleep(self.think) => {}
                    _ = stopped(&mut self.stop) => break,
                }
            }
        }
    }

    /// A sender for one request: the connection's (HTTP/2: a clone of the shared one;
    /// HTTP/1.1: the lane's own, kept by `release`), or a new connection when there is none
    /// or it closed.
    async fn acquire(&mut self) -> Result<Sender, Failure> {
        if let Some(s) = self.own.take() {
            if !s.is_closed() {
                return Ok(s);
            }
        }
        let mut g = self.slot.lock().await;
        if let Some(s) = g.as_ref() {
            if !s.is_closed() {
                return Ok(match s.try_clone() {
                    Some(c) => c,
                    None => g.take().expect("checked above"),
                });
            }
        }
        *g = None;
        let s = conn::connect(&self.target).await?;
        Ok(match s.try_clone() {
            Some(c) => {
                self.rec.lock().expect("recorder lock").saw_h2 = true;
                *g = Some(s);
                c
            }
            None => s,
        })
    }

    fn release(&mut self, s: Sender) {
        if !s.is_h2() {
            self.own = Some(s);
        }
    }

    async fn send(&self, s: &mut Sender) -> Result<(u16, Option<String>), Failure> {
        let resp = match &mut s.kind {
            SendKind::H1(s) => {
                s.ready()
                    .await
                    .map_err(|e| conn::failure(&e, "connection"))?;
                s.send_request(self.target.request(false)).await
            }
            SendKind::H2(s) => s.send_request(self.target.request(true)).await,
        }
        .map_err(|e| conn::failure(&e, "request"))?;
        s.state.answered.store(true, Ordering::Relaxed);
        let status = resp.status().as_u16();
        let subset = self.target.subset_header.as_ref().and_then(|h| {
            resp.headers()
                .get(h)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        });
        let mut body = resp.into_body();
        while let Some(frame) = body.frame().await {
            frame.map_err(|e| conn::failure(&e, "response body"))?;
        }
        Ok((status, subset))
    }
}
