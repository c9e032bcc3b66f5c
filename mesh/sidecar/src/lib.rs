//! The sidecar: a proxy like Istio's Envoy sidecar, the system under test of the embedded
//! mesh, on either side of a call.
//!
//! - [`config`]: [`SidecarConfig`] (the JSON file of `mesh-sidecar --config`), the
//!   direction, routes, the access-log mode;
//! - inbound (server side): STRICT mTLS (through `meshbench-tls`): client certificates
//!   must chain to the mesh CA; plaintext and certificate-less clients never get an HTTP
//!   response; HTTP/1.1 and HTTP/2 downstream, chosen by ALPN; the app gets the caller's
//!   identity in `x-forwarded-client-cert` (`By=<own id>;URI=<caller id>`, as Envoy);
//! - outbound (client side): plaintext from the local app (HTTP/1.1 or h2c), mTLS with
//!   this workload's certificate to the route's server-side sidecar, whose identity (URI
//!   SAN) is verified on every connection;
//! - [`route`]: a subset picked at random by weight per request;
//! - [`upstream`]: pooled HTTP/1.1 keep-alive connections to the upstreams;
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
pub use config::{AccessLogMode, Direction, Route, RouteTls, SidecarConfig};

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
    /// Inbound: the STRICT listener's config; outbound: none (plaintext listener).
    tls: Option<Arc<ServerConfig>>,
    state: Arc<State>,
}

impl Sidecar {
    pub fn new(cfg: &SidecarConfig) -> Result<Sidecar, SidecarError> {
        config::check(cfg)?;
        let log = Arc::new(AccessLog::open(
            cfg.access_log,
            cfg.access_log_path.as_deref(),
        )?);
        let timeout = Duration::from_millis(cfg.upstream_timeout_ms.max(1));
        let (tls, client_tls) = match cfg.direction {
            // STRICT mTLS: client certificates required and verified against the mesh CA.
            Direction::Inbound => (
                Some(tls::server_config(&cfg.cert, &cfg.key, Some(&cfg.ca))?),
                None,
            ),
            // mTLS origination with this workload's certificate; upstreams verified
            // against the mesh CA (and by identity, per connection).
            Direction::Outbound => (
                None,
                Some(tls::client_config(
                    &tls::ClientTls {
                        ca: Some(&cfg.ca),
                        identity: Some((&cfg.cert, &cfg.key)),
                        insecure_skip_verify: false,
                    },
                    &[tls::ALPN_HTTP1],
                )?),
            ),
        };
        let mut state = State::new(&cfg.routes, log, timeout, client_tls)?;
        state.direction = cfg.direction;
        state.own_identity = own_identity(&cfg.cert)?;
        Ok(Sidecar {
            tls,
            state: Arc::new(state),
        })
    }

    pub fn direction(&self) -> Direction {
        self.state.direction
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
        let acceptor = self.tls.clone().map(tokio_rustls::TlsAcceptor::from);
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
                        match acceptor {
                            Some(a) => serve_tls(a, tcp, peer, st).await,
                            None => serve_plain(tcp, peer, st).await,
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

/// Inbound: the STRICT handshake, then HTTP/1.1 or HTTP/2 as ALPN says (as Envoy's
/// listener does, without sniffing the preface).
async fn serve_tls(
    acceptor: tokio_rustls::TlsAcceptor,
    tcp: tokio::net::TcpStream,
    addr: std::net::SocketAddr,
    st: Arc<State>,
) {
    // A handshake that does not finish in 10 s is dropped.
    let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
        Ok(Ok(t)) => t,
        _ => return,
    };
    let conn = tls.get_ref().1;
    let caller = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(|leaf| tls::sans(leaf).ok())
        .and_then(|names| names.into_iter().find(|n| n.starts_with("spiffe://")));
    let h2 = conn.alpn_protocol() == Some(b"h2".as_slice());
    let peer = Arc::new(Peer::new(addr).with_caller(st.own_identity.as_deref(), caller.as_deref()));
    let svc = hyper::service::service_fn(move |req| handle(req, st.clone(), peer.clone()));
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
}

/// Outbound: plaintext from the local app, HTTP/1.1 or prior-knowledge HTTP/2 (h2c).
async fn serve_plain(tcp: tokio::net::TcpStream, addr: std::net::SocketAddr, st: Arc<State>) {
    let peer = Arc::new(Peer::new(addr));
    let svc = hyper::service::service_fn(move |req| handle(req, st.clone(), peer.clone()));
    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(tcp), svc)
        .await;
}

/// The first SPIFFE URI SAN of the certificate in `cert` (PEM), if any.
fn own_identity(cert: &std::path::Path) -> Result<Option<String>, SidecarError> {
    let certs = tls::load_certs(cert)?;
    Ok(certs
        .first()
        .and_then(|leaf| tls::sans(leaf).ok())
        .and_then(|names| names.into_iter().find(|n| n.starts_with("spiffe://"))))
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
