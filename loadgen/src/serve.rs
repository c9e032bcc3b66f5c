//! The built-in app server (`loadgen serve`): hyper + rustls, plain / TLS / mTLS, HTTP/1.1
//! and HTTP/2 (ALPN on TLS, prior-knowledge h2c on plain), a configurable service time,
//! response headers and body, and periodic stalls (for the coordinated-omission test).
//!
//! A request with `status=NNN` in its query is answered with that status code.

use crate::plan::Dist;
use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rand_distr::Distribution;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// TLS files of the server.
#[derive(Debug, Clone)]
pub struct ServeTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Require and verify client certificates signed by this CA (mTLS).
    pub client_ca: Option<PathBuf>,
}

/// Everything `loadgen serve` can be told.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    pub tls: Option<ServeTls>,
    pub service_time: Duration,
    pub service_time_dist: Dist,
    pub headers: Vec<(String, String)>,
    pub body_bytes: usize,
    /// `(stall, every)`: every `every`, all responses wait until `stall` has passed.
    pub stall: Option<(Duration, Duration)>,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            tls: None,
            service_time: Duration::ZERO,
            service_time_dist: Dist::Fixed,
            headers: vec![],
            body_bytes: 0,
            stall: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error("--header `{0}`: expected `name: value`")]
    Header(String),
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
    dist: Dist,
    headers: Vec<(http::HeaderName, http::HeaderValue)>,
    body: Bytes,
    stall: Option<(Duration, Duration)>,
}

impl App {
    async fn handle(
        &self,
        req: http::Request<hyper::body::Incoming>,
    ) -> Result<http::Response<Full<Bytes>>, std::convert::Infallible> {
        if let Some((stall, every)) = self.stall {
            let since = Instant::now().duration_since(self.epoch);
            let phase = Duration::from_nanos((since.as_nanos() % every.as_nanos()) as u64);
            if phase < stall {
                tokio::time::sleep(stall - phase).await;
            }
        }
        let wait = match self.dist {
            Dist::Fixed => self.service_time,
            Dist::Exp if self.service_time.is_zero() => Duration::ZERO,
            Dist::Exp => {
                let lambda = 1.0 / self.service_time.as_secs_f64();
                let exp = rand_distr::Exp::new(lambda).expect("positive rate");
                Duration::from_secs_f64(exp.sample(&mut rand::rng()).min(3600.0))
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
        Ok(resp)
    }
}

/// Parse `name: value` as given to `--header`.
pub fn parse_header(s: &str) -> Result<(String, String), ServeError> {
    let (k, v) = s
        .split_once(':')
        .ok_or_else(|| ServeError::Header(s.to_string()))?;
    let (k, v) = (k.trim(), v.trim());
    if http::HeaderName::from_bytes(k.as_bytes()).is_err()
        || http::HeaderValue::from_str(v).is_err()
    {
        return Err(ServeError::Header(s.to_string()));
    }
    Ok((k.to_string(), v.to_string()))
}

/// Bind and serve in the current tokio runtime. Returns the bound address.
pub async fn spawn(cfg: ServeConfig) -> Result<(SocketAddr, ServerHandle), ServeError> {
    let acceptor = match &cfg.tls {
        Some(t) => Some(tokio_rustls::TlsAcceptor::from(crate::tls::server_config(
            &t.cert,
            &t.key,
            t.client_ca.as_deref(),
        )?)),
        None => None,
    };
    let mut headers = Vec::new();
    for (k, v) in &cfg.headers {
        let bad = || ServeError::Header(format!("{k}: {v}"));
        headers.push((
            http::HeaderName::from_bytes(k.as_bytes()).map_err(|_| bad())?,
            http::HeaderValue::from_str(v).map_err(|_| bad())?,
        ));
    }
    let listener = TcpListener::bind(cfg.listen)
        .await
        .map_err(|source| ServeError::Bind {
            addr: cfg.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| ServeError::Bind {
        addr: cfg.listen,
        source,
    })?;
    let app = Arc::new(App {
        epoch: Instant::now(),
        service_time: cfg.service_time,
        dist: cfg.service_time_dist,
        headers,
        body: Bytes::from(vec![b'x'; cfg.body_bytes]),
        stall: cfg.stall,
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
