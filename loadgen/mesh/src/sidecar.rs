//! The sidecar: an inbound proxy like Istio's Envoy sidecar.
//!
//! - terminates STRICT mTLS: client certificates must chain to the mesh CA; plaintext and
//!   certificate-less clients never get an HTTP response;
//! - HTTP/1.1 and HTTP/2 downstream (chosen by ALPN), HTTP/1.1 with pooled keep-alive connections
//!   upstream to the apps on loopback;
//! - routes each request to a subset chosen at random by weight (a VirtualService route
//!   with DestinationRule subsets);
//! - writes an access log in Envoy's default format ([`ENVOY_DEFAULT_FORMAT`]): `off`,
//!   `buffered` (flushed once a second or every 64 KiB, as Envoy does) or `sync` (each
//!   line written and `fdatasync`ed before the response is sent);
//! - runs on `concurrency` tokio worker threads (Envoy's `--concurrency`).
//!
//! In-process: [`serve`] (tests). As a process: [`sidecar_main`] behind loadgen's hidden
//! `mesh-sidecar --config FILE.json`, which prints `listening on <addr>` once ready.
use bytes::{Bytes, BytesMut};
use http::header::HeaderName;
use http::{header, HeaderMap, HeaderValue, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rand::Rng;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::net::{TcpListener, TcpStream};

/// Envoy's default access-log format, which every line follows.
pub const ENVOY_DEFAULT_FORMAT: &str = "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" %RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" \"%REQ(X-REQUEST-ID)%\" \"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\"\\n";

/// Buffered access logs are flushed at least this often (Envoy's `file_flush_interval_msec`).
pub const LOG_FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// ... and whenever this much is buffered (Envoy's 64 KiB flush threshold).
pub const LOG_FLUSH_BYTES: usize = 64 * 1024;
const MAX_BODY: usize = 16 << 20;
const MAX_IDLE_PER_UPSTREAM: usize = 256;

/// Access-log mode of the sidecar.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccessLogMode {
    Off,
    Buffered,
    Sync,
}

impl AccessLogMode {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "off" => Some(Self::Off),
            "buffered" => Some(Self::Buffered),
            "sync" => Some(Self::Sync),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Buffered => "buffered",
            Self::Sync => "sync",
        }
    }
}

/// One weighted route to a subset's app.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub subset: String,
    pub weight: u32,
    pub upstream: SocketAddr,
}

/// Everything the sidecar process needs (the JSON file given to `mesh-sidecar --config`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SidecarConfig {
    /// Address to listen on; port 0 picks a free one.
    pub listen: SocketAddr,
    /// Serving certificate chain and key (PEM).
    pub cert: PathBuf,
    pub key: PathBuf,
    /// CA that client certificates must chain to (PEM).
    pub ca: PathBuf,
    pub routes: Vec<Route>,
    /// Worker threads (Envoy's `--concurrency`).
    pub concurrency: usize,
    pub access_log: AccessLogMode,
    /// Where the access log goes (required unless `access_log` is off).
    #[serde(default)]
    pub access_log_path: Option<PathBuf>,
    /// Upstream request timeout (Envoy's route timeout default: 15 s).
    #[serde(default = "default_timeout_ms")]
    pub upstream_timeout_ms: u64,
}

fn default_timeout_ms() -> u64 {
    15_000
}

/// Errors starting the sidecar; each names the file or setting.
#[derive(Debug, thiserror::Error)]
pub enum SidecarError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Pem { path: PathBuf, message: String },
    #[error("TLS configuration: {0}")]
    Tls(String),
    #[error("sidecar config: {0}")]
    Config(String),
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, SidecarError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| SidecarError::Pem {
            path: path.into(),
            message: e.to_string(),
        })?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| SidecarError::Pem {
            path: path.into(),
            message: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(SidecarError::Pem {
            path: path.into(),
            message: "no certificate in file".into(),
        });
    }
    Ok(certs)
}

/// The STRICT mTLS server config: client certificates required and verified against `ca`;
/// ALPN h2 and http/1.1. Built once, shared through `Arc`.
pub fn server_tls_config(
    cert: &Path,
    key: &Path,
    ca: &Path,
) -> Result<Arc<ServerConfig>, SidecarError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for c in read_certs(ca)? {
        roots.add(c).map_err(|e| SidecarError::Pem {
            path: ca.into(),
            message: e.to_string(),
        })?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| SidecarError::Tls(format!("client verifier from {}: {e}", ca.display())))?;
    let chain = read_certs(cert)?;
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| SidecarError::Pem {
        path: key.into(),
        message: e.to_string(),
    })?;
    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| SidecarError::Tls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key_der)
        .map_err(|e| SidecarError::Tls(format!("{} / {}: {e}", cert.display(), key.display())))?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// The access-log writer shared by all connections.
pub struct AccessLog {
    mode: AccessLogMode,
    inner: Mutex<LogInner>,
    lines: AtomicU64,
}

struct LogInner {
    file: Option<std::fs::File>,
    buf: Vec<u8>,
    error: Option<String>,
}

impl AccessLog {
    pub fn open(mode: AccessLogMode, path: Option<&Path>) -> Result<AccessLog, SidecarError> {
        let file = match (mode, path) {
            (AccessLogMode::Off, _) => None,
            (_, None) => {
                return Err(SidecarError::Config(format!(
                    "access_log = \"{}\" needs access_log_path",
                    mode.as_str()
                )))
            }
            (_, Some(p)) => Some(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .map_err(|source| SidecarError::Io {
                        path: p.into(),
                        source,
                    })?,
            ),
        };
        Ok(AccessLog {
            mode,
            inner: Mutex::new(LogInner {
                file,
                buf: Vec::with_capacity(LOG_FLUSH_BYTES),
                error: None,
            }),
            lines: AtomicU64::new(0),
        })
    }

    pub fn mode(&self) -> AccessLogMode {
        self.mode
    }

    /// Lines logged so far.
    pub fn lines(&self) -> u64 {
        self.lines.load(Ordering::Relaxed)
    }

    fn write(&self, line: &[u8]) {
        if self.mode == AccessLogMode::Off {
            return;
        }
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let g = &mut *g;
        match self.mode {
            AccessLogMode::Off => {}
            AccessLogMode::Buffered => {
                g.buf.extend_from_slice(line);
                if g.buf.len() >= LOG_FLUSH_BYTES {
                    flush_inner(g);
                }
            }
            AccessLogMode::Sync => {
                if let Some(f) = g.file.as_mut() {
                    if let Err(e) = f.write_all(line).and_then(|_| f.sync_data()) {
                        g.error.get_or_insert(e.to_string());
                    }
                }
            }
        }
        self.lines.fetch_add(1, Ordering::Relaxed);
    }

    /// Write out what is buffered.
    pub fn flush(&self) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        flush_inner(&mut g);
    }

    /// The first write error, if any.
    pub fn error(&self) -> Option<String> {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .error
            .clone()
    }
}

fn flush_inner(g: &mut LogInner) {
    if g.buf.is_empty() {
        return;
    }
    if let Some(f) = g.file.as_mut() {
        if let Err(e) = f.write_all(&g.buf) {
            g.error.get_or_insert(e.to_string());
        }
    }
    g.buf.clear();
}

/// One upstream (a subset's app) with its idle keep-alive connections.
struct Upstream {
    addr: SocketAddr,
    addr_text: String,
    idle: Mutex<Vec<SendRequest<Full<Bytes>>>>,
}

enum UpstreamFailure {
    /// Could not connect (Envoy flag UF).
    Connect,
    /// Reset or closed before a response (UC).
    Reset,
}

impl Upstream {
    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, UpstreamFailure> {
        let stream = TcpStream::connect(self.addr)
            .await
            .map_err(|_| UpstreamFailure::Connect)?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|_| UpstreamFailure::Connect)?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }

    fn take_idle(&self) -> Option<SendRequest<Full<Bytes>>> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(s) = idle.pop() {
            if !s.is_closed() {
                return Some(s);
            }
        }
        None
    }

    /// Send one request; a request that fails on a reused connection before any response
    /// (the app closed it while idle) is retried once on a fresh one.
    async fn send(
        &self,
        req: Request<Full<Bytes>>,
    ) -> Result<(http::response::Parts, Bytes), UpstreamFailure> {
        let (mut sender, reused) = match self.take_idle() {
            Some(s) => (s, true),
            None => (self.connect().await?, false),
        };
        // The copy for the one retry (cheap: the header values and body are shared `Bytes`).
        let mut retry = reused.then(|| clone_request(&req));
        let mut req = req;
        loop {
            let result = match sender.ready().await {
                Ok(()) => sender.send_request(req).await,
                Err(e) => Err(e),
            };
            match result {
                Ok(resp) => {
                    let (rparts, rbody) = resp.into_parts();
                    let bytes = collect_body(rbody)
                        .await
                        .map_err(|_| UpstreamFailure::Reset)?;
                    let keep = !rparts
                        .headers
                        .get(header::CONNECTION)
                        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
                    if keep && !sender.is_closed() {
                        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
                        if idle.len() < MAX_IDLE_PER_UPSTREAM {
                            idle.push(sender);
                        }
                    }
                    return Ok((rparts, bytes));
                }
                Err(_) => match retry.take() {
                    Some(r) => {
                        req = r;
                        sender = self.connect().await?;
                    }
                    None => return Err(UpstreamFailure::Reset),
                },
            }
        }
    }
}

fn clone_request(req: &Request<Full<Bytes>>) -> Request<Full<Bytes>> {
    let mut r = Request::new(req.body().clone());
    *r.method_mut() = req.method().clone();
    *r.uri_mut() = req.uri().clone();
    *r.version_mut() = req.version();
    *r.headers_mut() = req.headers().clone();
    r
}

/// The whole body of `body` (at most [`MAX_BODY`] bytes, else an error), without copying
/// when it arrives as one chunk (the usual case) and without allocating when it is empty.
async fn collect_body<B>(mut body: B) -> Result<Bytes, ()>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
{
    if body.is_end_stream() {
        return Ok(Bytes::new());
    }
    let mut first: Option<Bytes> = None;
    let mut more: Option<BytesMut> = None;
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(|_| ())?.into_data() else {
            continue;
        };
        total += data.len();
        if total > MAX_BODY {
            return Err(());
        }
        if let Some(m) = more.as_mut() {
            m.extend_from_slice(&data);
        } else if let Some(f) = first.take() {
            let mut m = BytesMut::with_capacity(total);
            m.extend_from_slice(&f);
            m.extend_from_slice(&data);
            more = Some(m);
        } else {
            first = Some(data);
        }
    }
    Ok(match (more, first) {
        (Some(m), _) => m.freeze(),
        (None, Some(f)) => f,
        (None, None) => Bytes::new(),
    })
}

/// Shared state of a running sidecar.
struct State {
    upstreams: Vec<Upstream>,
    /// Cumulative weights for the random pick.
    cumulative: Vec<u32>,
    total_weight: u32,
    log: Arc<AccessLog>,
    timeout: Duration,
}

impl State {
    fn pick(&self) -> &Upstream {
        let x = rand::rng().random_range(0..self.total_weight);
        let i = self.cumulative.partition_point(|&c| c <= x);
        &self.upstreams[i.min(self.upstreams.len() - 1)]
    }
}

static HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TRANSFER_ENCODING,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
];

static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_ENVOY_ORIGINAL_PATH: HeaderName = HeaderName::from_static("x-envoy-original-path");
static X_ENVOY_UPSTREAM_SERVICE_TIME: HeaderName =
    HeaderName::from_static("x-envoy-upstream-service-time");

fn strip_hop_by_hop(h: &mut HeaderMap) {
    for name in &HOP_BY_HOP {
        h.remove(name);
    }
}

/// A fresh `x-request-id`: 128 random bits as 32 lowercase hex digits.
fn request_id() -> Option<HeaderValue> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let id: u128 = rand::rng().random();
    let mut buf = [0u8; 32];
    for (i, b) in buf.iter_mut().enumerate() {
        *b = HEX[((id >> (124 - 4 * i)) & 0xf) as usize];
    }
    HeaderValue::from_bytes(&buf).ok()
}

fn hval<'a>(h: &'a HeaderMap, name: &HeaderName) -> &'a str {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .filter(|s| !s.is_empty())
        .unwrap_or("-")
}

/// What one downstream connection's requests share.
struct Peer {
    /// The peer's IP address as a header value (an IP address always formats as one).
    ip: HeaderValue,
}

impl Peer {
    fn new(addr: SocketAddr) -> Peer {
        Peer {
            ip: HeaderValue::from_str(&addr.ip().to_string())
                .unwrap_or_else(|_| HeaderValue::from_static("unknown")),
        }
    }

    /// `x-forwarded-for`: the peer appended to `prev` (a request's own header), or the
    /// peer alone when there is none (or it is not text).
    fn forwarded_for(&self, prev: Option<&HeaderValue>) -> Option<HeaderValue> {
        match prev.filter(|v| v.to_str().is_ok()) {
            Some(prev) => {
                let mut b = BytesMut::with_capacity(prev.len() + 2 + self.ip.len());
                b.extend_from_slice(prev.as_bytes());
                b.extend_from_slice(b", ");
                b.extend_from_slice(self.ip.as_bytes());
                HeaderValue::from_maybe_shared(b.freeze()).ok()
            }
            None => Some(self.ip.clone()),
        }
    }
}

async fn handle(
    req: Request<Incoming>,
    st: Arc<State>,
    peer: Arc<Peer>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let log_on = st.log.mode() != AccessLogMode::Off;
    // Start time and clock for the access log (not read when it is off).
    let start = log_on.then(|| (SystemTime::now(), Instant::now()));
    let (mut parts, body) = req.into_parts();
    if !parts.headers.contains_key(&X_REQUEST_ID) {
        if let Some(v) = request_id() {
            parts.headers.insert(X_REQUEST_ID.clone(), v);
        }
    }
    let body = collect_body(body).await.unwrap_or_default();
    let bytes_received = body.len();
    let up = st.pick();

    // The upstream request: HTTP/1.1 over the pooled connection, origin-form URI. The
    // request's headers move to it; only the access log needs them afterwards.
    let uri = match parts.uri.path_and_query() {
        Some(_) if parts.uri.scheme().is_none() && parts.uri.authority().is_none() => {
            parts.uri.clone()
        }
        Some(pq) => Uri::from(pq.clone()),
        None => Uri::from_static("/"),
    };
    let mut up_headers = if log_on {
        parts.headers.clone()
    } else {
        std::mem::take(&mut parts.headers)
    };
    strip_hop_by_hop(&mut up_headers);
    if !up_headers.contains_key(header::HOST) {
        if let Some(a) = parts.uri.authority().filter(|a| a.as_str() != "-") {
            if let Ok(v) = HeaderValue::from_str(a.as_str()) {
                up_headers.insert(header::HOST, v);
            }
        }
    }
    if let Some(v) = peer.forwarded_for(up_headers.get(&X_FORWARDED_FOR)) {
        up_headers.insert(X_FORWARDED_FOR.clone(), v);
    }
    up_headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("https"));
    let mut up_req = Request::new(Full::new(body));
    *up_req.method_mut() = parts.method.clone();
    *up_req.uri_mut() = uri;
    *up_req.version_mut() = http::Version::HTTP_11;
    *up_req.headers_mut() = up_headers;

    let t_up = Instant::now();
    let outcome = tokio::time::timeout(st.timeout, up.send(up_req)).await;
    let upstream_ms = t_up.elapsed().as_millis();
    let (resp, flags, upstream_time) = match outcome {
        Ok(Ok((rparts, rbody))) => {
            let mut resp = Response::from_parts(rparts, Full::new(rbody));
            strip_hop_by_hop(resp.headers_mut());
            *resp.version_mut() = parts.version;
            resp.headers_mut().insert(
                X_ENVOY_UPSTREAM_SERVICE_TIME.clone(),
                HeaderValue::from(upstream_ms as u64),
            );
            (resp, "-", Some(upstream_ms))
        }
        Ok(Err(f)) => {
            let (code, flag, text) = match f {
                UpstreamFailure::Connect => {
                    (StatusCode::SERVICE_UNAVAILABLE, "UF", "connection failure")
                }
                UpstreamFailure::Reset => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "UC",
                    "connection termination",
                ),
            };
            (error_response(code, text), flag, None)
        }
        Err(_) => (
            error_response(StatusCode::GATEWAY_TIMEOUT, "upstream request timeout"),
            "UT",
            None,
        ),
    };
    if let Some((start_wall, t0)) = start {
        let bytes_sent = hyper::body::Body::size_hint(resp.body())
            .exact()
            .unwrap_or(0);
        let protocol = match parts.version {
            http::Version::HTTP_2 => "HTTP/2",
            http::Version::HTTP_10 => "HTTP/1.0",
            _ => "HTTP/1.1",
        };
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let authority = match parts.uri.authority() {
            Some(a) => a.as_str(),
            None => parts
                .headers
                .get(header::HOST)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-"),
        };
        let line = format!(
            "[{}] \"{} {} {}\" {} {} {} {} {} {} \"{}\" \"{}\" \"{}\" \"{}\" \"{}\"\n",
            humantime::format_rfc3339_millis(start_wall),
            parts.method,
            parts
                .headers
                .get(&X_ENVOY_ORIGINAL_PATH)
                .and_then(|v| v.to_str().ok())
                .unwrap_or(path),
            protocol,
            resp.status().as_u16(),
            flags,
            bytes_received,
            bytes_sent,
            t0.elapsed().as_millis(),
            upstream_time
                .map(|t| t.to_string())
                .unwrap_or_else(|| "-".into()),
            hval(&parts.headers, &X_FORWARDED_FOR),
            hval(&parts.headers, &header::USER_AGENT),
            hval(&parts.headers, &X_REQUEST_ID),
            authority,
            up.addr_text,
        );
        st.log.write(line.as_bytes());
    }
    Ok(resp)
}

fn error_response(code: StatusCode, text: &str) -> Response<Full<Bytes>> {
    let body =
        format!("upstream connect error or disconnect/reset before headers. reset reason: {text}");
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = code;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}

/// Check routes: at least one, weights sum > 0, known subsets.
fn check_config(cfg: &SidecarConfig) -> Result<(), SidecarError> {
    if cfg.routes.is_empty() {
        return Err(SidecarError::Config(
            "routes: at least one route is required".into(),
        ));
    }
    if cfg.routes.iter().map(|r| r.weight).sum::<u32>() == 0 {
        return Err(SidecarError::Config("routes: weights sum to 0".into()));
    }
    if cfg.concurrency == 0 {
        return Err(SidecarError::Config(
            "concurrency must be at least 1".into(),
        ));
    }
    Ok(())
}

/// A sidecar ready to serve: TLS config and access log opened, routes checked.
pub struct Sidecar {
    tls: Arc<ServerConfig>,
    state: Arc<State>,
}

impl Sidecar {
    pub fn new(cfg: &SidecarConfig) -> Result<Sidecar, SidecarError> {
        check_config(cfg)?;
        let tls = server_tls_config(&cfg.cert, &cfg.key, &cfg.ca)?;
        let log = Arc::new(AccessLog::open(
            cfg.access_log,
            cfg.access_log_path.as_deref(),
        )?);
        let mut cumulative = Vec::new();
        let mut acc = 0;
        for r in &cfg.routes {
            acc += r.weight;
            cumulative.push(acc);
        }
        let upstreams = cfg
            .routes
            .iter()
            .map(|r| Upstream {
                addr: r.upstream,
                addr_text: r.upstream.to_string(),
                idle: Mutex::new(Vec::new()),
            })
            .collect();
        Ok(Sidecar {
            tls,
            state: Arc::new(State {
                upstreams,
                cumulative,
                total_weight: acc,
                log,
                timeout: Duration::from_millis(cfg.upstream_timeout_ms.max(1)),
            }),
        })
    }

    /// The access log (for line counts in tests).
    pub fn access_log(&self) -> Arc<AccessLog> {
        self.state.log.clone()
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

/// Read a sidecar config file.
pub fn read_config(path: &Path) -> Result<SidecarConfig, SidecarError> {
    let text = std::fs::read_to_string(path).map_err(|source| SidecarError::Io {
        path: path.into(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| {
        SidecarError::Config(format!(
            "{}:{}:{}: {e}",
            path.display(),
            e.line(),
            e.column()
        ))
    })
}

/// Entry point of the sidecar process (`loadgen mesh-sidecar --config FILE.json`): serve
/// until SIGTERM/SIGINT. Prints `listening on <addr>` as the first stdout line when ready.
/// Exit codes: 0 after a signal, 2 for a bad config, 1 when it could not start.
pub fn sidecar_main(config_path: &Path) -> ExitCode {
    ExitCode::from(sidecar_main_code(config_path))
}

/// [`sidecar_main`] returning the exit code as a number.
pub fn sidecar_main_code(config_path: &Path) -> u8 {
    match sidecar_process(config_path) {
        Ok(()) => 0,
        Err(code) => code,
    }
}

fn sidecar_process(config_path: &Path) -> Result<(), u8> {
    // Exit with the parent: a loadgen killed with SIGKILL must not leave a sidecar behind.
    // (Polling getppid instead of PR_SET_PDEATHSIG, which fires when the spawning
    // *thread* exits.)
    let parent = nix::unistd::getppid();
    let cfg = match read_config(config_path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mesh-sidecar: {e}");
            return Err(2);
        }
    };
    let sidecar = match Sidecar::new(&cfg) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("mesh-sidecar: {e}");
            return Err(2);
        }
    };
    // concurrency 1: one thread does everything (accept, TLS, proxying), as one Envoy
    // worker does; more: that many workers, with the accept loop on one of them.
    let mut builder = if cfg.concurrency == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(cfg.concurrency);
        b
    };
    let rt = match builder
        .max_blocking_threads(4)
        .thread_name("sidecar-worker")
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mesh-sidecar: tokio runtime: {e}");
            return Err(1);
        }
    };
    rt.block_on(async move {
        let listener = match TcpListener::bind(cfg.listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("mesh-sidecar: bind {}: {e}", cfg.listen);
                return Err(1);
            }
        };
        let addr = match listener.local_addr() {
            Ok(a) => a,
            Err(e) => {
                eprintln!("mesh-sidecar: {e}");
                return Err(1);
            }
        };
        let (Ok(mut term), Ok(mut int)) = (
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()),
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()),
        ) else {
            eprintln!("mesh-sidecar: cannot install signal handlers");
            return Err(1);
        };
        {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "listening on {addr}");
            let _ = out.flush();
        }
        let log = sidecar.access_log();
        let server = tokio::spawn(sidecar.serve(listener, async move {
            let mut orphan = tokio::time::interval(Duration::from_millis(500));
            loop {
                tokio::select! {
                    _ = term.recv() => break,
                    _ = int.recv() => break,
                    _ = orphan.tick() => {
                        if nix::unistd::getppid() != parent {
                            eprintln!("mesh-sidecar: parent exited; stopping");
                            break;
                        }
                    }
                }
            }
        }));
        let _ = server.await;
        if let Some(e) = log.error() {
            eprintln!("mesh-sidecar: access log write failed: {e}");
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_32_lowercase_hex_digits() {
        let a = request_id().unwrap();
        let b = request_id().unwrap();
        assert_ne!(a, b);
        let s = a.to_str().unwrap();
        assert_eq!(s.len(), 32);
        assert!(s
            .bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)));
    }

    #[test]
    fn forwarded_for_appends_the_peer() {
        let peer = Peer::new("10.1.2.3:4567".parse().unwrap());
        assert_eq!(peer.forwarded_for(None).unwrap(), "10.1.2.3");
        let prev = HeaderValue::from_static("1.1.1.1, 2.2.2.2");
        assert_eq!(
            peer.forwarded_for(Some(&prev)).unwrap(),
            "1.1.1.1, 2.2.2.2, 10.1.2.3"
        );
        let v6 = Peer::new("[::1]:80".parse().unwrap());
        assert_eq!(v6.forwarded_for(None).unwrap(), "::1");
    }

    /// A body that yields `parts` as separate data frames.
    struct Chunks(std::collections::VecDeque<Bytes>);

    impl hyper::body::Body for Chunks {
        type Data = Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            _cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
            std::task::Poll::Ready(self.0.pop_front().map(|b| Ok(hyper::body::Frame::data(b))))
        }
    }

    fn chunks(parts: &[&'static str]) -> Chunks {
        Chunks(
            parts
                .iter()
                .map(|p| Bytes::from_static(p.as_bytes()))
                .collect(),
        )
    }

    #[tokio::test]
    async fn bodies_are_collected_whole() {
        assert_eq!(collect_body(chunks(&[])).await.unwrap(), "");
        assert_eq!(collect_body(chunks(&["one"])).await.unwrap(), "one");
        assert_eq!(
            collect_body(chunks(&["a", "bc", "", "def"])).await.unwrap(),
            "abcdef"
        );
        assert_eq!(collect_body(Full::new(Bytes::new())).await.unwrap(), "");
        let big = Bytes::from(vec![b'x'; MAX_BODY]);
        assert_eq!(collect_body(Full::new(big)).await.unwrap().len(), MAX_BODY);
        let mut over = chunks(&[]);
        over.0.push_back(Bytes::from(vec![b'x'; MAX_BODY]));
        over.0.push_back(Bytes::from_static(b"y"));
        assert!(collect_body(over).await.is_err());
    }
}
