//! One connection: TCP connect, optional TLS (with the identity check), the HTTP/1.1 or
//! HTTP/2 handshake, and the classification of failures into [`ErrorClass`]es.

use super::Target;
use crate::plan::Protocol;
use crate::record::ErrorClass;
use bytes::Bytes;
use http_body_util::Full;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::error::Error as StdError;
use std::io;
use std::sync::Arc;
use tokio::net::TcpStream;

pub type Body = Full<Bytes>;

/// A failure with its class and a human message.
#[derive(Debug)]
pub struct Failure {
    pub class: ErrorClass,
    pub message: String,
}

impl Failure {
    pub fn new(class: ErrorClass, message: impl Into<String>) -> Self {
        Failure {
            class,
            message: message.into(),
        }
    }
}

pub enum SendKind {
    H1(http1::SendRequest<Body>),
    H2(http2::SendRequest<Body>),
}

/// A connection's request handle, with the outcome of its connection task.
pub struct Sender {
    pub kind: SendKind,
    pub state: Arc<ConnState>,
}

impl Sender {
    pub fn is_h2(&self) -> bool {
        matches!(self.kind, SendKind::H2(_))
    }
    pub fn is_closed(&self) -> bool {
        match &self.kind {
            SendKind::H1(s) => s.is_closed(),
            SendKind::H2(s) => s.is_closed(),
        }
    }
    /// HTTP/2 handles are shared by cloning; HTTP/1.1 handles are not.
    pub fn try_clone(&self) -> Option<Sender> {
        match &self.kind {
            SendKind::H2(s) => Some(Sender {
                kind: SendKind::H2(s.clone()),
                state: self.state.clone(),
            }),
            SendKind::H1(_) => None,
        }
    }
}

/// How a connection's background task ended. Requests on a connection that dies only see
/// "canceled" / "connection closed"; the cause (e.g. a TLS alert for a refused client
/// certificate) is the connection task's error.
pub struct ConnState {
    error: std::sync::Mutex<Option<Failure>>,
    /// A TLS connection: a death before its first response is the server refusing us.
    tls: bool,
    /// Set once a response has arrived on this connection.
    pub answered: std::sync::atomic::AtomicBool,
    done: tokio::sync::watch::Sender<bool>,
}

impl ConnState {
    fn new(tls: bool) -> Arc<ConnState> {
        Arc::new(ConnState {
            error: std::sync::Mutex::new(None),
            tls,
            answered: std::sync::atomic::AtomicBool::new(false),
            done: tokio::sync::watch::channel(false).0,
        })
    }

    /// Refine a request failure with the connection's own error, waiting up to `wait` for
    /// the connection task to end. A TLS cause wins.
    pub async fn explain(&self, f: Failure, wait: std::time::Duration) -> Failure {
        if f.class == ErrorClass::Tls || f.class == ErrorClass::RequestTimeout {
            return f;
        }
        let mut rx = self.done.subscribe();
        let _ = tokio::time::timeout(wait, rx.wait_for(|d| *d)).await;
        let guard = self.error.lock().expect("conn state lock");
        match guard.as_ref() {
            Some(c) if c.class == ErrorClass::Tls => Failure::new(c.class, c.message.clone()),
            // With TLS 1.3 the server judges the client certificate after the client's
            // handshake is done; its alert may be lost to a reset or broken pipe. A TLS
            // connection that dies before its first response was refused at the TLS layer.
            _ if self.tls && !self.answered.load(std::sync::atomic::Ordering::Relaxed) => {
                Failure::new(
                    ErrorClass::Tls,
                    format!(
                        "TLS connection closed before its first response (a refused client certificate looks like this in TLS 1.3): {}",
                        f.message
                    ),
                )
            }
            _ => f,
        }
    }
}

fn spawn_conn<F, E>(conn: F, tls: bool) -> Arc<ConnState>
where
    F: std::future::Future<Output = Result<(), E>> + Send + 'static,
    E: StdError + Send + Sync + 'static,
{
    let state = ConnState::new(tls);
    let st = state.clone();
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            *st.error.lock().expect("conn state lock") = Some(failure(&e, "connection"));
        }
        st.done.send_replace(true);
    });
    state
}

/// Open a connection to the target's endpoint `endpoint` (0 without a split) and
/// perform the HTTP handshake.
pub async fn connect(t: &Target, endpoint: usize) -> Result<Sender, Failure> {
    let addrs = &t.endpoints[endpoint.min(t.endpoints.len() - 1)].addrs;
    let tcp = match tokio::time::timeout(t.connect_timeout, TcpStream::connect(&addrs[..])).await {
        Err(_) => {
            return Err(Failure::new(
                ErrorClass::ConnectTimeout,
                format!("connect to {} timed out", t.authority),
            ))
        }
        Ok(Err(e)) => {
            let class = match e.kind() {
                io::ErrorKind::TimedOut => ErrorClass::ConnectTimeout,
                io::ErrorKind::ConnectionRefused => ErrorClass::ConnectRefused,
                io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted => {
                    ErrorClass::ConnectionReset
                }
                _ => ErrorClass::Other,
            };
            return Err(Failure::new(
                class,
                format!("connect to {}: {e}", t.authority),
            ));
        }
        Ok(Ok(s)) => s,
    };
    let _ = tcp.set_nodelay(true);
    match &t.tls {
        None => {
            let h2 = t.protocol == Protocol::Http2;
            handshake(TokioIo::new(tcp), h2, false).await
        }
        Some(tls) => {
            let connector = tokio_rustls::TlsConnector::from(tls.config.clone());
            let stream = match tokio::time::timeout(
                t.connect_timeout,
                connector.connect(tls.server_name.clone(), tcp),
            )
            .await
            {
                Err(_) => {
                    return Err(Failure::new(
                        ErrorClass::Tls,
                        format!("TLS handshake with {} timed out", t.authority),
                    ))
                }
                Ok(Err(e)) => {
                    let class = classify_io(&e).unwrap_or(ErrorClass::Tls);
                    let class = if class == ErrorClass::ConnectionReset {
                        // The server hung up during the handshake: a TLS failure.
                        ErrorClass::Tls
                    } else {
                        class
                    };
                    return Err(Failure::new(
                        class,
                        format!("TLS handshake with {}: {e}", t.authority),
                    ));
                }
                Ok(Ok(s)) => s,
            };
            let (_, session) = stream.get_ref();
            if let Some(expected) = &tls.expected_identity {
                tls::check_identity(session.peer_certificates(), expected)
                    .map_err(|m| Failure::new(ErrorClass::Tls, m))?;
            }
            let h2 = match session.alpn_protocol() {
                Some(b"h2") => true,
                Some(_) => false,
                None => t.protocol == Protocol::Http2,
            };
            handshake(TokioIo::new(stream), h2, true).await
        }
    }
}

async fn handshake<IO>(io: TokioIo<IO>, h2: bool, tls: bool) -> Result<Sender, Failure>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    if h2 {
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .handshake(io)
            .await
            .map_err(|e| failure(&e, "HTTP/2 handshake"))?;
        Ok(Sender {
            kind: SendKind::H2(sender),
            state: spawn_conn(conn, tls),
        })
    } else {
        let (sender, conn) = http1::handshake(io)
            .await
            .map_err(|e| failure(&e, "HTTP/1.1 handshake"))?;
        Ok(Sender {
            kind: SendKind::H1(sender),
            state: spawn_conn(conn, tls),
        })
    }
}

/// h2's words for a stream or connection the server ended: a GOAWAY (also with NO_ERROR,
/// "not a result of an error") or a RST_STREAM such as REFUSED_STREAM.
fn is_peer_reset_message(m: &str) -> bool {
    m.contains("connection error received") || m.contains("stream error received")
}

/// rustls errors as they read once HTTP/2 has copied them into plain I/O errors (h2 hands
/// every stream a copy of the connection's error, made from its message).
fn is_tls_message(m: &str) -> bool {
    [
        "received fatal alert",
        "invalid peer certificate",
        "peer sent no certificates",
        "peer is incompatible",
        "peer misbehaved",
    ]
    .iter()
    .any(|p| m.contains(p))
}

fn classify_io(e: &io::Error) -> Option<ErrorClass> {
    if let Some(inner) = e.get_ref() {
        if inner.downcast_ref::<rustls::Error>().is_some() {
            return Some(ErrorClass::Tls);
        }
    }
    match e.kind() {
        io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe
        | io::ErrorKind::UnexpectedEof => Some(ErrorClass::ConnectionReset),
        io::ErrorKind::TimedOut => Some(ErrorClass::RequestTimeout),
        _ => None,
    }
}

/// Classify an error by walking its source chain. TLS wins over everything (TLS 1.3 reports
/// a refused client certificate as an alert on the first read, wrapped in I/O and HTTP errors).
pub fn classify(err: &(dyn StdError + 'static)) -> ErrorClass {
    let mut found = None;
    let mut cur: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = cur {
        if e.downcast_ref::<rustls::Error>().is_some() {
            return ErrorClass::Tls;
        }
        if let Some(io) = e.downcast_ref::<io::Error>() {
            if let Some(c) = classify_io(io) {
                if c == ErrorClass::Tls {
                    return c;
                }
                found = found.or(Some(c));
            }
        }
        if let Some(h) = e.downcast_ref::<hyper::Error>() {
            if h.is_incomplete_message() || h.is_canceled() || h.is_closed() {
                found = found.or(Some(ErrorClass::ConnectionReset));
            } else if h.is_timeout() {
                found = found.or(Some(ErrorClass::RequestTimeout));
            }
        }
        let text = e.to_string();
        if is_tls_message(&text) {
            return ErrorClass::Tls;
        }
        if is_peer_reset_message(&text) {
            found = found.or(Some(ErrorClass::ConnectionReset));
        }
        cur = e.source();
    }
    found.unwrap_or(ErrorClass::Other)
}

/// A [`Failure`] from an error, with the whole chain in its message.
pub fn failure(err: &(dyn StdError + 'static), what: &str) -> Failure {
    let mut msg = format!("{what}: {err}");
    let mut cur = err.source();
    while let Some(e) = cur {
        let s = e.to_string();
        if !msg.contains(&s) {
            msg.push_str(": ");
            msg.push_str(&s);
        }
        cur = e.source();
    }
    Failure::new(classify(err), msg)
}
