//! One request through the sidecar: request id, hop-by-hop headers and
//! `x-forwarded-for`, the upstream call, Envoy-style 503 UF/UC and 504 UT, the access-log
//! line.

use crate::access_log::Entry;
use crate::route::State;
use crate::upstream::{collect_body, UpstreamFailure};
use crate::{AccessLogMode, Direction};
use bytes::{Bytes, BytesMut};
use http::header::HeaderName;
use http::{header, HeaderMap, HeaderValue, Request, Response, StatusCode, Uri};
use http_body_util::Full;
use rand::Rng;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

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
static X_FORWARDED_CLIENT_CERT: HeaderName = HeaderName::from_static("x-forwarded-client-cert");

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
pub(crate) struct Peer {
    /// The peer's IP address as a header value (an IP address always formats as one).
    ip: HeaderValue,
    /// Inbound: `x-forwarded-client-cert` for the app, `By=<own id>;URI=<caller id>`
    /// (Envoy's format without the certificate hash), when the caller has an identity.
    xfcc: Option<HeaderValue>,
}

impl Peer {
    pub fn new(addr: SocketAddr) -> Peer {
        Peer {
            ip: HeaderValue::from_str(&addr.ip().to_string())
                .unwrap_or_else(|_| HeaderValue::from_static("unknown")),
            xfcc: None,
        }
    }

    /// The caller's identity (the URI SAN of its client certificate), for the app.
    pub fn with_caller(mut self, own: Option<&str>, caller: Option<&str>) -> Peer {
        self.xfcc = caller.and_then(|c| {
            let v = match own {
                Some(by) => format!("By={by};URI={c}"),
                None => format!("URI={c}"),
            };
            HeaderValue::from_str(&v).ok()
        });
        self
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

pub(crate) async fn handle<B>(
    req: Request<B>,
    st: Arc<State>,
    peer: Arc<Peer>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
{
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
    // What the app learns about its caller is set by the sidecar, never passed through:
    // inbound, the verified identity of the peer; outbound, nothing (the server side sets it).
    up_headers.remove(&X_FORWARDED_CLIENT_CERT);
    match st.direction {
        Direction::Inbound => {
            up_headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("https"));
            if let Some(v) = &peer.xfcc {
                up_headers.insert(X_FORWARDED_CLIENT_CERT.clone(), v.clone());
            }
        }
        Direction::Outbound => {
            up_headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("http"));
        }
    }
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
        let entry = Entry {
            start: start_wall,
            method: parts.method.as_str(),
            path: parts
                .headers
                .get(&X_ENVOY_ORIGINAL_PATH)
                .and_then(|v| v.to_str().ok())
                .unwrap_or(path),
            protocol,
            status: resp.status().as_u16(),
            flags,
            bytes_received,
            bytes_sent,
            duration_ms: t0.elapsed().as_millis(),
            upstream_ms: upstream_time,
            forwarded_for: hval(&parts.headers, &X_FORWARDED_FOR),
            user_agent: hval(&parts.headers, &header::USER_AGENT),
            request_id: hval(&parts.headers, &X_REQUEST_ID),
            authority,
            upstream_host: &up.addr_text,
        };
        st.log.write(entry.line().as_bytes());
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
}
