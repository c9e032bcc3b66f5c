//! The built-in app server: the workload of the embedded mesh (one process per subset,
//! behind the sidecar), the target of `[app]` scenarios (in-process) and of
//! `loadgen serve`. hyper + rustls: plain, TLS or mTLS; HTTP/1.1 and HTTP/2 (ALPN on TLS,
//! prior-knowledge h2c on plain); a fixed or exponential service time, response headers
//! and body, periodic stalls (for the coordinated-omission tests) and a rate above which
//! it sheds load with 503 (a known capacity, for the error tests).
//!
//! Everything it can be told is one serde [`AppConfig`]: what `loadgen serve` builds from
//! its flags and what the embedded mesh writes as `app-<subset>.json` for each app process.
//! A request with `status=NNN` in its query is answered with that status code.
#![forbid(unsafe_code)]

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use meshbench_schema::units::Dur;
use rand_distr::Distribution;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Largest response body the app serves (64 MiB).
pub const MAX_BODY_BYTES: usize = 64 << 20;
/// Longest service time or stall the app accepts.
pub const MAX_WAIT: Duration = Duration::from_secs(3600);

/// How the service time is distributed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceTimeDist {
    /// Every request takes exactly the service time.
    #[default]
    Fixed,
    /// Exponentially distributed with the service time as its mean.
    Exp,
}

impl std::str::FromStr for ServiceTimeDist {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "fixed" => Ok(Self::Fixed),
            "exp" => Ok(Self::Exp),
            _ => Err(format!(
                "unknown distribution `{s}` (expected \"fixed\" or \"exp\")"
            )),
        }
    }
}

/// TLS files of the server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Require and verify client certificates signed by this CA (mTLS).
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
}

/// Every `stall.every`, all responses wait until `stall.stall` has passed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stall {
    pub stall: Dur,
    pub every: Dur,
}

/// Everything the app server can be told.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    /// Address to listen on; port 0 picks a free one.
    #[serde(default = "loopback")]
    pub listen: SocketAddr,
    #[serde(default)]
    pub tls: Option<AppTls>,
    #[serde(default)]
    pub service_time: Dur,
    #[serde(default)]
    pub service_time_dist: ServiceTimeDist,
    /// Response headers, `[name, value]` each.
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    #[serde(default)]
    pub body_bytes: usize,
    #[serde(default)]
    pub stall: Option<Stall>,
    /// Request headers copied into the response when present (e.g.
    /// `x-forwarded-client-cert`, to show who the app's caller was).
    #[serde(default)]
    pub echo_headers: Vec<String>,
    /// Requests per second the app accepts: a token bucket filled at this rate, holding a
    /// tenth of a second's worth (at least one request); a request finding it empty is
    /// answered 503 at once, without its service time.
    #[serde(default)]
    pub max_rate: Option<f64>,
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

impl Default for AppConfig {
    fn default() -> Self {
        AppConfig {
            listen: loopback(),
            tls: None,
            service_time: Dur::default(),
            service_time_dist: ServiceTimeDist::Fixed,
            headers: vec![],
            body_bytes: 0,
            stall: None,
            echo_headers: vec![],
            max_rate: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("header `{0}`: expected `name: value` with a valid name and value")]
    Header(String),
    #[error("{0}")]
    Config(String),
}

/// Parse `name: value` as `--header` and `[app] headers` write it.
pub fn parse_header(s: &str) -> Result<(String, String), AppError> {
    let (k, v) = s
        .split_once(':')
        .ok_or_else(|| AppError::Header(s.to_string()))?;
    let (k, v) = (k.trim(), v.trim());
    header_pair(k, v)?;
    Ok((k.to_string(), v.to_string()))
}

fn header_pair(k: &str, v: &str) -> Result<(http::HeaderName, http::HeaderValue), AppError> {
    let bad = || AppError::Header(format!("{k}: {v}"));
    Ok((
        http::HeaderName::from_bytes(k.as_bytes()).map_err(|_| bad())?,
        http::HeaderValue::from_str(v).map_err(|_| bad())?,
    ))
}

impl AppConfig {
    /// Every value in range: body size, waits, stall shorter than its period, headers.
    pub fn check(&self) -> Result<(), AppError> {
        if self.body_bytes > MAX_BODY_BYTES {
            return Err(AppError::Config(format!(
                "body_bytes {} is more than the app serves ({MAX_BODY_BYTES} bytes)",
                self.body_bytes
            )));
        }
        if self.service_time.0 > MAX_WAIT {
            return Err(AppError::Config(format!(
                "service_time {} is longer than {}",
                self.service_time,
                Dur(MAX_WAIT)
            )));
        }
        if let Some(s) = &self.stall {
            if s.every.0.is_zero() || s.stall.0 >= s.every.0 || s.every.0 > MAX_WAIT {
                return Err(AppError::Config(format!(
                    "stall {} must be shorter than stall_every {} (at most {})",
                    s.stall,
                    s.every,
                    Dur(MAX_WAIT)
                )));
            }
        }
        if let Some(r) = self.max_rate {
            if !(r.is_finite() && r > 0.0) {
                return Err(AppError::Config(format!(
                    "max_rate {r} must be a positive number of requests per second"
                )));
            }
        }
        for (k, v) in &self.headers {
            header_pair(k, v)?;
        }
        for k in &self.echo_headers {
            http::HeaderName::from_bytes(k.as_bytes()).map_err(|_| {
                AppError::Config(format!("echo_headers: `{k}` is not a header name"))
            })?;
        }
        Ok(())
    }
}

/// A running server; dropping it (or calling [`ServerHandle::shutdown`]) stops it.
pub struct ServerHandle {
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl ServerHandle {
    /// Stop accepting, close connections, and wait for the accept loop to end.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

struct App {
    epoch: Instant,
    service_time: Duration,
    dist: ServiceTimeDist,
    headers: Vec<(http::HeaderName, http::HeaderValue)>,
    echo: Vec<http::HeaderName>,
    body: Bytes,
    stall: Option<(Duration, Duration)>,
    bucket: Option<std::sync::Mutex<Bucket>>,
}

/// The `max_rate` token bucket.
struct Bucket {
    rate: f64,
    capacity: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn new(rate: f64) -> Self {
        let capacity = (rate / 10.0).max(1.0);
        Bucket {
            rate,
            capacity,
            tokens: capacity,
            last: Instant::now(),
        }
    }

    /// Take a token at `now`; false when there is none.
    fn take(&mut self, now: Instant) -> bool {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = self.last.max(now);
        self.tokens = (self.tokens + dt * self.rate).min(self.capacity);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

impl App {
    async fn handle(
        &self,
        req: http::Request<hyper::body::Incoming>,
    ) -> Result<http::Response<Full<Bytes>>, std::convert::Infallible> {
        if let Some(b) = &self.bucket {
            if !b.lock().expect("bucket lock").take(Instant::now()) {
                let mut resp = http::Response::new(Full::new(Bytes::new()));
                *resp.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
                return Ok(resp);
            }
        }
        if let Some((stall, every)) = self.stall {
            let since = Instant::now().duration_since(self.epoch);
            let phase = Duration::from_nanos((since.as_nanos() % every.as_nanos()) as u64);
            if phase < stall {
                tokio::time::sleep(stall - phase).await;
            }
        }
        let wait = match self.dist {
            ServiceTimeDist::Fixed => self.service_time,
            ServiceTimeDist::Exp if self.service_time.is_zero() => Duration::ZERO,
            ServiceTimeDist::Exp => {
                let lambda = 1.0 / self.service_time.as_secs_f64();
                let exp = rand_distr::Exp::new(lambda).expect("positive rate");
                Duration::from_secs_f64(exp.sample(&mut rand::rng()).min(MAX_WAIT.as_secs_f64()))
            }
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        let status = req
            .uri()
            .query()
            .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("status=")))
            .and_then(|s| s.parse::<u16>().ok())
            .and_then(|s| http::StatusCode::from_u16(s).ok())
            .unwrap_or(http::StatusCode::OK);
        let mut resp = http::Response::new(Full::new(self.body.clone()));
        *resp.status_mut() = status;
        for (k, v) in &self.headers {
            resp.headers_mut().append(k.clone(), v.clone());
        }
        for k in &self.echo {
            if let Some(v) = req.headers().get(k) {
                resp.headers_mut().insert(k.clone(), v.clone());
            }
        }
        Ok(resp)
    }
}

/// Check `cfg`, bind and serve in the current tokio runtime. Returns the bound address.
pub async fn spawn(cfg: AppConfig) -> Result<(SocketAddr, ServerHandle), AppError> {
    cfg.check()?;
    let acceptor = match &cfg.tls {
        Some(t) => Some(tokio_rustls::TlsAcceptor::from(tls::server_config(
            &t.cert,
            &t.key,
            t.client_ca.as_deref(),
        )?)),
        None => None,
    };
    let headers = cfg
        .headers
        .iter()
        .map(|(k, v)| header_pair(k, v))
        .collect::<Result<Vec<_>, _>>()?;
    let bind_err = |source| AppError::Bind {
        addr: cfg.listen,
        source,
    };
    let listener = TcpListener::bind(cfg.listen).await.map_err(bind_err)?;
    let addr = listener.local_addr().map_err(bind_err)?;
    let app = Arc::new(App {
        epoch: Instant::now(),
        service_time: cfg.service_time.0,
        dist: cfg.service_time_dist,
        headers,
        echo: cfg
            .echo_headers
            .iter()
            .filter_map(|k| http::HeaderName::from_bytes(k.as_bytes()).ok())
            .collect(),
        body: Bytes::from(vec![b'x'; cfg.body_bytes]),
        stall: cfg.stall.map(|s| (s.stall.0, s.every.0)),
        bucket: cfg.max_rate.map(|r| std::sync::Mutex::new(Bucket::new(r))),
    });
    let (stop, mut stopped) = watch::channel(false);
    let conn_stop = stop.subscribe();
    let task = tokio::spawn(async move {
        loop {
            let (tcp, _) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(c) => c,
                    Err(_) => {
                        // Out of descriptors or similar: back off instead of spinning.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                },
                _ = stopped.changed() => break,
            };
            let _ = tcp.set_nodelay(true);
            let app = app.clone();
            let acceptor = acceptor.clone();
            let mut conn_stop = conn_stop.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let app = app.clone();
                    async move { app.handle(req).await }
                });
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                let serve = async {
                    match acceptor {
                        Some(acc) => {
                            let hs = tokio::time::timeout(Duration::from_secs(10), acc.accept(tcp));
                            if let Ok(Ok(tls)) = hs.await {
                                let _ = builder.serve_connection(TokioIo::new(tls), svc).await;
                            }
                        }
                        None => {
                            let _ = builder.serve_connection(TokioIo::new(tcp), svc).await;
                        }
                    }
                };
                tokio::select! {
                    _ = serve => {}
                    _ = conn_stop.changed() => {}
                }
            });
        }
    });
    Ok((
        addr,
        ServerHandle {
            stop,
            task: Some(task),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_round_trips_and_checks_its_values() {
        let cfg = AppConfig {
            service_time: Dur(Duration::from_millis(2)),
            service_time_dist: ServiceTimeDist::Exp,
            headers: vec![("x-version".into(), "v1".into())],
            body_bytes: 1024,
            stall: Some(Stall {
                stall: Dur(Duration::from_millis(100)),
                every: Dur(Duration::from_secs(1)),
            }),
            ..AppConfig::default()
        };
        let json = serde_json::to_string(&cfg).unwrap();
        assert!(json.contains("\"service_time\":\"2ms\""), "{json}");
        let back: AppConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, cfg);
        cfg.check().unwrap();
        let big = AppConfig {
            body_bytes: MAX_BODY_BYTES + 1,
            ..AppConfig::default()
        };
        assert!(big.check().unwrap_err().to_string().contains("body_bytes"));
        let bad_stall = AppConfig {
            stall: Some(Stall {
                stall: Dur(Duration::from_secs(2)),
                every: Dur(Duration::from_secs(1)),
            }),
            ..AppConfig::default()
        };
        assert!(bad_stall.check().is_err());
        assert!(parse_header("x-a: b").is_ok());
        assert!(parse_header("no colon").is_err());
        assert!(parse_header("bad name: v").is_err());
        assert!(serde_json::from_str::<AppConfig>(r#"{"bogus": 1}"#).is_err());
        for r in [0.0, -5.0, f64::NAN, f64::INFINITY] {
            let bad = AppConfig {
                max_rate: Some(r),
                ..AppConfig::default()
            };
            assert!(bad.check().unwrap_err().to_string().contains("max_rate"));
        }
    }

    #[test]
    fn the_bucket_passes_its_rate_and_a_tenth_of_a_second_more() {
        let t0 = Instant::now();
        let mut b = Bucket::new(400.0);
        b.last = t0;
        // 600 requests evenly over one second: 400 refilled + 40 held at the start
        let passed = (0..600)
            .filter(|i| b.take(t0 + Duration::from_micros(i * 1_000_000 / 600)))
            .count();
        assert!((439..=441).contains(&passed), "{passed}");
        // at 200/s the bucket never runs dry
        let t1 = t0 + Duration::from_secs(2);
        let passed = (0..200)
            .filter(|i| b.take(t1 + Duration::from_micros(i * 5_000)))
            .count();
        assert_eq!(passed, 200);
    }
}
