//! A target ready for the engine: address resolved, request parts and TLS config built
//! once, from the plan's typed request (nothing is parsed again here).

use super::EngineError;
use crate::plan::{Protocol, RequestPlan, TlsPlan};
use bytes::Bytes;
use http_body_util::Full;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Where a cell sends its load, as resolved by the run's cell target.
#[derive(Debug, Clone)]
pub struct ResolvedTarget {
    /// `http://host:port/path` or `https://...`.
    pub url: String,
    /// Dial this address instead of resolving the URL's host.
    pub connect_to: Option<SocketAddr>,
    /// TLS settings (used when the URL is https).
    pub tls: TlsPlan,
    /// Split the requests by weight over these addresses instead (the embedded mesh's
    /// baseline: the client does the routing a sidecar would do). Empty: no split.
    pub split: Vec<SplitTo>,
}

/// One destination of a client-side split: a subset, its weight, its address.
#[derive(Debug, Clone, PartialEq)]
pub struct SplitTo {
    pub subset: String,
    pub weight: u32,
    pub addr: SocketAddr,
}

/// Where connections go: one endpoint (the URL's addresses), or one per split subset.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub addrs: Vec<SocketAddr>,
    pub weight: u32,
}

pub struct TlsTarget {
    pub config: Arc<rustls::ClientConfig>,
    pub server_name: rustls_pki_types::ServerName<'static>,
    pub expected_identity: Option<String>,
}

/// A target ready for the engine: addresses resolved, request parts built, TLS config built.
pub struct Target {
    /// At least one; more with a split, whose requests are routed by weight.
    pub endpoints: Vec<Endpoint>,
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
        let endpoints = if !resolved.split.is_empty() {
            if resolved.split.iter().all(|s| s.weight == 0) {
                return Err(bad("the split's weights sum to 0".into()));
            }
            resolved
                .split
                .iter()
                .map(|s| Endpoint {
                    addrs: vec![s.addr],
                    weight: s.weight,
                })
                .collect()
        } else {
            let addrs: Vec<SocketAddr> = match resolved.connect_to {
                Some(a) => vec![a],
                None => tokio::net::lookup_host((bare_host.as_str(), port))
                    .await
                    .map_err(|e| bad(format!("cannot resolve {host}: {e}")))?
                    .collect(),
            };
            if addrs.is_empty() {
                return Err(bad(format!("{host} resolves to no address")));
            }
            vec![Endpoint { addrs, weight: 1 }]
        };
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
            endpoints,
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

    /// How many connections of `total` go to each endpoint: one endpoint gets all; a
    /// split gives each its share by weight, at least one.
    pub fn connections_per_endpoint(&self, total: u32) -> Vec<u32> {
        if self.endpoints.len() == 1 {
            return vec![total];
        }
        let sum: u64 = self.endpoints.iter().map(|e| u64::from(e.weight)).sum();
        self.endpoints
            .iter()
            .map(|e| {
                let share = u64::from(total) * u64::from(e.weight);
                (share.div_ceil(sum.max(1)) as u32).max(1)
            })
            .collect()
    }

    /// The request to send (HTTP/2: absolute URI; HTTP/1.1: path and Host), from parts
    /// built once.
    pub fn request(&self, h2: bool) -> http::Request<Full<Bytes>> {
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
