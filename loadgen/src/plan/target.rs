//! `[target]`: the URL (for a real endpoint), the request every connection sends, and the
//! TLS files and identity checks.

use super::ser;
use crate::scenario::{ProtocolRaw, Scenario, Source, SpecError, TargetSection};
use bytes::Bytes;
use meshbench_schema::units::Dur;
use serde::Serialize;
use std::path::PathBuf;
use std::time::Duration;
use toml::Spanned;

/// Which HTTP version to speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Http1,
    Http2,
    /// HTTP/2 when the server picks it through ALPN, else HTTP/1.1 (plain: HTTP/1.1).
    Auto,
}

impl Protocol {
    /// ALPN protocols offered, in order of preference.
    pub fn alpn(self) -> &'static [&'static [u8]] {
        match self {
            Protocol::Http1 => &[tls::ALPN_HTTP1],
            Protocol::Http2 => &[tls::ALPN_H2],
            Protocol::Auto => &[tls::ALPN_H2, tls::ALPN_HTTP1],
        }
    }
}

/// The request sent on every connection, checked and built once.
#[derive(Debug, Clone, Serialize)]
pub struct RequestPlan {
    #[serde(serialize_with = "ser::display")]
    pub method: http::Method,
    /// Path and query sent, e.g. `/api?x=1`; overrides the path of the URL.
    #[serde(serialize_with = "ser::opt_display")]
    pub path: Option<http::uri::PathAndQuery>,
    #[serde(serialize_with = "ser::headers")]
    pub headers: http::HeaderMap,
    #[serde(serialize_with = "ser::bytes")]
    pub body: Bytes,
    pub protocol: Protocol,
    pub timeout: Dur,
    pub connect_timeout: Dur,
    /// Response header naming the subset that answered (from `[target]`, `[mesh]` or
    /// `[checks]`).
    #[serde(serialize_with = "ser::opt_display")]
    pub subset_header: Option<http::HeaderName>,
}

/// TLS files and identity checks; paths are resolved (relative to the scenario file).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TlsPlan {
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub server_name: Option<String>,
    pub expected_identity: Option<String>,
    pub insecure_skip_verify: bool,
}

impl TlsPlan {
    /// The client side of `meshbench-tls`.
    pub fn client(&self) -> tls::ClientTls<'_> {
        tls::ClientTls {
            ca: self.ca.as_deref(),
            identity: self.cert.as_deref().zip(self.key.as_deref()),
            insecure_skip_verify: self.insecure_skip_verify,
        }
    }
}

/// The URL of `[target] url`, checked: http or https with a host.
pub(super) fn url(src: &Source, t: &TargetSection) -> Result<Option<(String, bool)>, SpecError> {
    let Some(u) = &t.url else { return Ok(None) };
    let uri: http::Uri = u
        .get_ref()
        .parse()
        .map_err(|e| src.error_at(u.span(), format!("target.url is not a URL: {e}")))?;
    let https = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => return Err(src.error_at(u.span(), "target.url must start with http:// or https://")),
    };
    if uri.host().is_none() {
        return Err(src.error_at(u.span(), "target.url has no host"));
    }
    Ok(Some((u.get_ref().clone(), https)))
}

/// A duration that must be positive and at most `max`.
pub(super) fn bounded_dur(
    src: &Source,
    d: &Spanned<Dur>,
    what: &str,
    max: Duration,
) -> Result<Dur, SpecError> {
    let v = *d.get_ref();
    if v.0.is_zero() {
        return Err(src.error_at(d.span(), format!("{what} must be > 0")));
    }
    if v.0 > max {
        return Err(src.error_at(d.span(), format!("{what} must be at most {}", Dur(max))));
    }
    Ok(v)
}

/// Longest request or connect timeout.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(3600);

/// The request of `[target]`; `subset_header` is the one `[mesh]`/`[checks]` supply when
/// `[target]` names none.
pub(super) fn request(
    src: &Source,
    t: &TargetSection,
    subset_header: Option<http::HeaderName>,
) -> Result<RequestPlan, SpecError> {
    let method = match &t.method {
        Some(m) => http::Method::from_bytes(m.get_ref().to_ascii_uppercase().as_bytes())
            .map_err(|_| src.error_at(m.span(), "target.method is not an HTTP method"))?,
        None => http::Method::GET,
    };
    let path = match &t.path {
        Some(p) => {
            if !p.get_ref().starts_with('/') {
                return Err(src.error_at(p.span(), "target.path must start with '/'"));
            }
            Some(
                http::uri::PathAndQuery::try_from(p.get_ref().as_str())
                    .map_err(|e| src.error_at(p.span(), format!("target.path: {e}")))?,
            )
        }
        None => None,
    };
    let mut headers = http::HeaderMap::new();
    for (k, v) in &t.headers {
        let name = http::HeaderName::from_bytes(k.as_bytes()).map_err(|_| {
            src.error_at(
                v.span(),
                format!("target.headers: `{k}` is not a header name"),
            )
        })?;
        let value = http::HeaderValue::from_str(v.get_ref()).map_err(|_| {
            src.error_at(
                v.span(),
                format!("target.headers.{k}: not a valid header value"),
            )
        })?;
        headers.append(name, value);
    }
    let timeout = t
        .timeout
        .as_ref()
        .map(|d| bounded_dur(src, d, "target.timeout", MAX_TIMEOUT))
        .transpose()?
        .unwrap_or(Dur(Duration::from_secs(5)));
    let connect_timeout = t
        .connect_timeout
        .as_ref()
        .map(|d| bounded_dur(src, d, "target.connect_timeout", MAX_TIMEOUT))
        .transpose()?
        .unwrap_or(timeout);
    let own_subset_header = match &t.subset_header {
        Some(h) => Some(
            http::HeaderName::from_bytes(h.get_ref().to_ascii_lowercase().as_bytes())
                .map_err(|_| src.error_at(h.span(), "target.subset_header is not a header name"))?,
        ),
        None => None,
    };
    Ok(RequestPlan {
        method,
        path,
        headers,
        body: Bytes::from(t.body.clone().unwrap_or_default()),
        protocol: match t.protocol {
            None | Some(ProtocolRaw::Auto) => Protocol::Auto,
            Some(ProtocolRaw::Http1) => Protocol::Http1,
            Some(ProtocolRaw::Http2) => Protocol::Http2,
        },
        timeout,
        connect_timeout,
        subset_header: own_subset_header.or(subset_header),
    })
}

/// `[target.tls]`: files resolved and opened (a file that cannot be read is an error at
/// its value), cert and key together, names checked.
pub(super) fn tls(sc: &Scenario, src: &Source, https: Option<bool>) -> Result<TlsPlan, SpecError> {
    let mut tls = TlsPlan::default();
    let Some(ts) = &sc.target.tls else {
        return Ok(tls);
    };
    if https == Some(false) {
        return Err(src.error_at(
            ts.span(),
            "[target.tls] is set but target.url uses http://; use https://",
        ));
    }
    let t = ts.get_ref();
    let file = |f: &Option<Spanned<String>>, what: &str| {
        f.as_ref()
            .map(|p| {
                let path = src.resolve_path(&p.span(), p.get_ref());
                meshbench_schema::files::read_regular(&path, tls::MAX_PEM_BYTES).map_err(|e| {
                    src.error_at(
                        p.span(),
                        format!("target.tls.{what}: cannot read {}: {e}", path.display()),
                    )
                })?;
                Ok::<_, SpecError>(path)
            })
            .transpose()
    };
    tls.ca = file(&t.ca, "ca")?;
    tls.cert = file(&t.cert, "cert")?;
    tls.key = file(&t.key, "key")?;
    match (&t.cert, &t.key) {
        (Some(c), None) => {
            return Err(src.error_at(c.span(), "target.tls.cert needs target.tls.key"))
        }
        (None, Some(k)) => {
            return Err(src.error_at(k.span(), "target.tls.key needs target.tls.cert"))
        }
        _ => {}
    }
    if let Some(sn) = &t.server_name {
        rustls_pki_types::ServerName::try_from(sn.get_ref().as_str()).map_err(|_| {
            src.error_at(sn.span(), "target.tls.server_name is not a DNS name or IP")
        })?;
        tls.server_name = Some(sn.get_ref().clone());
    }
    if let Some(id) = &t.expected_identity {
        if id.get_ref().trim().is_empty() {
            return Err(src.error_at(id.span(), "target.tls.expected_identity is empty"));
        }
        tls.expected_identity = Some(id.get_ref().trim().to_string());
    }
    tls.insecure_skip_verify = t.insecure_skip_verify;
    Ok(tls)
}
