//! Upstream: the subset apps behind an inbound sidecar, or the server-side sidecars in
//! front of them behind an outbound one (mTLS with this workload's certificate, the
//! upstream's identity verified), each with its own pool of HTTP/1.1 keep-alive
//! connections (one retry when a reused connection turns out closed).

use bytes::{Bytes, BytesMut};
use http::{header, Request};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::Mutex;
use tokio::net::TcpStream;

/// Largest request or response body the sidecar carries.
pub(crate) const MAX_BODY: usize = 16 << 20;
const MAX_IDLE_PER_UPSTREAM: usize = 256;

/// One upstream (a subset's app or server-side sidecar) with its idle keep-alive
/// connections.
pub(crate) struct Upstream {
    pub addr: SocketAddr,
    pub addr_text: String,
    pub idle: Mutex<Vec<SendRequest<Full<Bytes>>>>,
    pub tls: Option<UpstreamTls>,
}

/// mTLS origination to one upstream (outbound sidecars).
pub(crate) struct UpstreamTls {
    pub connector: tokio_rustls::TlsConnector,
    pub server_name: rustls::pki_types::ServerName<'static>,
    /// The URI SAN its certificate must carry.
    pub identity: String,
}

pub(crate) enum UpstreamFailure {
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
        match &self.tls {
            None => handshake(stream).await,
            Some(t) => {
                // A handshake that fails, or an upstream whose certificate does not carry
                // the expected identity, is a connection failure (Envoy: UF).
                let tls = t
                    .connector
                    .connect(t.server_name.clone(), stream)
                    .await
                    .map_err(|_| UpstreamFailure::Connect)?;
                tls::check_identity(tls.get_ref().1.peer_certificates(), &t.identity)
                    .map_err(|_| UpstreamFailure::Connect)?;
                handshake(tls).await
            }
        }
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
    pub async fn send(
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

async fn handshake<T>(io: T) -> Result<SendRequest<Full<Bytes>>, UpstreamFailure>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|_| UpstreamFailure::Connect)?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
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
pub(crate) async fn collect_body<B>(mut body: B) -> Result<Bytes, ()>
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

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Full;

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
