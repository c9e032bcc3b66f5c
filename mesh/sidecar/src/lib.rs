//! The sidecar: an inbound proxy like Istio's Envoy sidecar, the system under test of the
//! embedded mesh.
//!
//! - [`config`]: [`SidecarConfig`] (the JSON file of `mesh-sidecar --config`), routes, the
//!   access-log mode;
//! - STRICT mTLS (through `meshbench-tls`): client certificates must chain to the mesh
//!   CA; plaintext and certificate-less clients never get an HTTP response; HTTP/1.1 and
//!   HTTP/2 downstream, chosen by ALPN;
//! - [`route`]: a subset picked at random by weight per request;
//! - [`upstream`]: pooled HTTP/1.1 keep-alive connections to the apps;
//! - [`handler`]: one request, with Envoy's headers, flags (503 UF/UC, 504 UT) and
//!   access-log line;
//! - [`access_log`]: Envoy's default format, `off` / `buffered` / `sync`.
//!
//! [`Sidecar::serve`] runs it on a listener until a shutdown future completes (in-process in
//! tests; as a process through `meshbench-testbed`'s child entry point).
#![forbid(unsafe_code)]

pub mod access_log;
pub mod config;
mod handler;
mod route;
mod upstream;

pub use access_log::{AccessLog, ENVOY_DEFAULT_FORMAT, LOG_FLUSH_BYTES, LOG_FLUSH_INTERVAL};
pub use config::{AccessLogMode, Route, SidecarConfig};

use handler::{handle, Peer};
use hyper_util::rt::{TokioExecutor, TokioIo};
use route::State;
use rustls::ServerConfig;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// Errors starting the sidecar; each names the file or setting.
#[derive(Debug, thiserror::Error)]
pub enum SidecarError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("sidecar config: {0}")]
    Config(String),
}

/// A sidecar ready to serve: TLS config and access log opened, routes checked.
pub struct Sidecar {
    tls: Arc<ServerConfig>,
    state: Arc<State>,
}

impl Sidecar {
    pub fn new(cfg: &SidecarConfig) -> Result<Sidecar, SidecarError> {
        config::check(cfg)?;
        // STRICT mTLS: client certificates required and verified against the mesh CA.
        let tls = tls::server_config(&cfg.cert, &cfg.key, Some(&cfg.ca))?;
        let log = Arc::new(AccessLog::open(
            cfg.access_log,
            cfg.access_log_path.as_deref(),
        )?);
        let timeout = Duration::from_millis(cfg.upstream_timeout_ms.max(1));
        Ok(Sidecar {
            tls,
            state: Arc::new(State::new(&cfg.routes, log, timeout)),
        })
    }

    /// The access log (for line counts in tests).
    pub fn access_log(&self) -> Arc<AccessLog> {
        self.state.log.clone()
    }

    /// Handle one request as a connection from `peer` would have it handled after its TLS
    /// handshake: routing, the upstream call, the access log (for benchmarks and tests).
    pub async fn handle<B>(
        &self,
        req: http::Request<B>,
        peer: std::net::SocketAddr,
    ) -> http::Response<http_body_util::Full<bytes::Bytes>>
    where
        B: hyper::body::Body<Data = bytes::Bytes> + Unpin,
    {
        match handle(req, self.state.clone(), Arc::new(Peer::new(peer))).await {
            Ok(r) => r,
            Err(never) => match never {},
        }
    }

    /// Accept connections on `listener` until `shutdown` completes; then stop, close
    /// connections and flush the access log.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        let acceptor = tokio_rustls::TlsAcceptor::from(self.tls.clone());
        let log = self.state.log.clone();
        let flusher = (log.mode() == AccessLogMode::Buffered).then(|| {
            let log = log.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(LOG_FLUSH_INTERVAL);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    let l = log.clone();
                    let _ = tokio::task::spawn_blocking(move || l.flush()).await;
                }
            })
        });
        let mut conns = tokio::task::JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                accepted = listener.accept() => {
                    let Ok((tcp, peer)) = accepted else { continue };
                    let _ = tcp.set_nodelay(true);
                    let acceptor = acceptor.clone();
                    let st = self.state.clone();
                    conns.spawn(async move {
                        // A handshake that does not finish in 10 s is dropped.
                        let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                            Ok(Ok(t)) => t,
                            _ => return,
                        };
                        let peer = Arc::new(Peer::new(peer));
                        let svc = hyper::service::service_fn(move |req| handle(req, st.clone(), peer.clone()));
                        // ALPN decides the protocol (as Envoy's listener does), so the
                        // connection is served without sniffing the preface.
                        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());
                        let io = TokioIo::new(tls);
                        if h2 {
                            let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                                .serve_connection(io, svc)
                                .await;
                        } else {
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(io, svc)
                                .await;
                        }
                    });
                }
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
            }
        }
        conns.abort_all();
        while conns.join_next().await.is_some() {}
        if let Some(f) = flusher {
            f.abort();
        }
        log.flush();
    }
}

/// Serve `cfg` on `listener` in-process until `shutdown`.
pub async fn serve(
    cfg: &SidecarConfig,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), SidecarError> {
    Sidecar::new(cfg)?.serve(listener, shutdown).await;
    Ok(())
}
