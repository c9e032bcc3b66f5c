//! STRICT mTLS: plaintext and a TLS request without a client certificate must both be
//! refused without an HTTP response; a request with the mesh's client identity (when
//! given) must get one, so the refusals are proven to come from mTLS, not a dead port.

use super::STRICT_MTLS;
use meshbench_schema::{CheckResult, CheckStatus};
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use serde_json::json;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Where and how to reach a STRICT mTLS target.
#[derive(Debug, Clone)]
pub struct MtlsTarget<'a> {
    pub addr: SocketAddr,
    /// Name to verify the server certificate by (DNS SAN or IP).
    pub server_name: &'a str,
    /// CA bundle (PEM) that the server certificate chains to.
    pub ca: &'a Path,
    /// A valid client identity (certificate, key) for a positive control: with it a
    /// request must get an HTTP response, proving the refusals are mTLS and not a dead port.
    pub client: Option<(&'a Path, &'a Path)>,
    /// Path of the probe requests.
    pub path: &'a str,
}

/// What one probe connection ended in.
#[derive(Debug, Clone, PartialEq)]
pub enum ProbeOutcome {
    /// An HTTP response came back (status line shown).
    HttpResponse(String),
    /// The connection was closed, reset or failed the TLS handshake without an HTTP
    /// response (the detail says which).
    Refused(String),
    /// The probe could not decide (could not connect, server certificate not trusted,
    /// no answer in time).
    Inconclusive(String),
}

const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

fn looks_like_http(buf: &[u8]) -> Option<String> {
    if buf.starts_with(b"HTTP/") {
        let line = buf
            .split(|&b| b == b'\r' || b == b'\n')
            .next()
            .unwrap_or(b"");
        return Some(String::from_utf8_lossy(line).into_owned());
    }
    None
}

fn describe_tls_bytes(buf: &[u8]) -> String {
    match buf {
        [0x15, 3, _, _, _, _, desc, ..] => format!("TLS alert {desc} in reply"),
        [0x15, ..] => "TLS alert in reply".into(),
        [] => "connection closed without a reply".into(),
        _ => format!("{} bytes that are not HTTP", buf.len()),
    }
}

/// Send a plaintext HTTP/1.1 request and classify what comes back.
pub async fn probe_plaintext(addr: SocketAddr, host: &str, path: &str) -> ProbeOutcome {
    let mut tcp = match tokio::time::timeout(PROBE_TIMEOUT, TcpStream::connect(addr)).await {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => {
            return ProbeOutcome::Inconclusive(format!("could not connect to {addr}: {e}"))
        }
        Err(_) => return ProbeOutcome::Inconclusive(format!("connecting to {addr} timed out")),
    };
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    if let Err(e) = tcp.write_all(req.as_bytes()).await {
        return ProbeOutcome::Refused(format!("write failed: {e}"));
    }
    let mut buf = Vec::new();
    let read = tokio::time::timeout(PROBE_TIMEOUT, async {
        let mut chunk = [0u8; 512];
        loop {
            match tcp.read(&mut chunk).await {
                Ok(0) => return Ok(()),
                Ok(n) => {
                    buf.extend_from_slice(&chunk[..n]);
                    if buf.len() >= 16 {
                        return Ok(());
                    }
                }
                Err(e) => return Err(e),
            }
        }
    })
    .await;
    if let Some(status) = looks_like_http(&buf) {
        return ProbeOutcome::HttpResponse(status);
    }
    match read {
        Ok(Ok(())) => ProbeOutcome::Refused(describe_tls_bytes(&buf)),
        Ok(Err(e)) => ProbeOutcome::Refused(format!("connection error: {e}")),
        Err(_) if !buf.is_empty() => ProbeOutcome::Refused(describe_tls_bytes(&buf)),
        Err(_) => {
            ProbeOutcome::Inconclusive("no answer to the plaintext request within 5 s".into())
        }
    }
}

/// A client config trusting `ca`, optionally with a client identity; ALPN http/1.1.
pub fn client_tls_config(
    ca: &Path,
    client: Option<(&Path, &Path)>,
) -> Result<Arc<ClientConfig>, String> {
    tls::client_config(
        &tls::ClientTls {
            ca: Some(ca),
            identity: client,
            insecure_skip_verify: false,
        },
        &[tls::ALPN_HTTP1],
    )
    .map_err(|e| e.to_string())
}

/// A TLS request with `config`; the server's answer classified. With TLS 1.3 a missing
/// client certificate is reported by the server after the client's handshake completes,
/// so the request is written and the reply read before deciding.
pub async fn probe_tls(
    addr: SocketAddr,
    server_name: &str,
    path: &str,
    config: Arc<ClientConfig>,
) -> ProbeOutcome {
    let Ok(name) = ServerName::try_from(server_name.to_string()) else {
        return ProbeOutcome::Inconclusive(format!("`{server_name}` is not a valid server name"));
    };
    let tcp = match tokio::time::timeout(PROBE_TIMEOUT, TcpStream::connect(addr)).await {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => {
            return ProbeOutcome::Inconclusive(format!("could not connect to {addr}: {e}"))
        }
        Err(_) => return ProbeOutcome::Inconclusive(format!("connecting to {addr} timed out")),
    };
    let connector = tokio_rustls::TlsConnector::from(config);
    let work = async {
        let mut tls = match connector.connect(name, tcp).await {
            Ok(t) => t,
            Err(e) => {
                let text = e.to_string();
                // Our failure to trust the server proves nothing about the server.
                if text.contains("invalid peer certificate") {
                    return ProbeOutcome::Inconclusive(format!(
                        "server certificate not trusted: {text}"
                    ));
                }
                return ProbeOutcome::Refused(format!("TLS handshake failed: {text}"));
            }
        };
        let req =
            format!("GET {path} HTTP/1.1\r\nHost: {server_name}\r\nConnection: close\r\n\r\n");
        if let Err(e) = tls.write_all(req.as_bytes()).await {
            return ProbeOutcome::Refused(format!("TLS error on first write: {e}"));
        }
        let _ = tls.flush().await;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 512];
        loop {
            match tls.read(&mut chunk).await {
                Ok(0) => break,
                Ok(n) => {
                    buf.extend_from_slice(&chunk[..n]);
                    if buf.len() >= 16 {
                        break;
                    }
                }
                Err(e) => {
                    return match looks_like_http(&buf) {
                        Some(s) => ProbeOutcome::HttpResponse(s),
                        None => ProbeOutcome::Refused(format!("TLS error on first read: {e}")),
                    }
                }
            }
        }
        match looks_like_http(&buf) {
            Some(s) => ProbeOutcome::HttpResponse(s),
            None if buf.is_empty() => {
                ProbeOutcome::Refused("connection closed without a reply".into())
            }
            None => ProbeOutcome::Refused(format!("{} bytes that are not HTTP", buf.len())),
        }
    };
    match tokio::time::timeout(PROBE_TIMEOUT, work).await {
        Ok(o) => o,
        Err(_) => ProbeOutcome::Inconclusive("no answer to the TLS request within 5 s".into()),
    }
}

fn outcome_json(o: &ProbeOutcome) -> serde_json::Value {
    match o {
        ProbeOutcome::HttpResponse(s) => json!({"outcome": "http_response", "detail": s}),
        ProbeOutcome::Refused(s) => json!({"outcome": "refused", "detail": s}),
        ProbeOutcome::Inconclusive(s) => json!({"outcome": "inconclusive", "detail": s}),
    }
}

/// STRICT mTLS: a plaintext request and a TLS request without a client certificate must
/// both be refused without an HTTP response. Passed ("verified") only then, and — when a
/// client identity is given — if a request with it does get an HTTP response.
pub async fn strict_mtls(target: &MtlsTarget<'_>) -> CheckResult {
    let plaintext = probe_plaintext(target.addr, target.server_name, target.path).await;
    let no_cert = match client_tls_config(target.ca, None) {
        Ok(cfg) => probe_tls(target.addr, target.server_name, target.path, cfg).await,
        Err(e) => ProbeOutcome::Inconclusive(e),
    };
    let control = match target.client {
        None => None,
        Some(id) => Some(match client_tls_config(target.ca, Some(id)) {
            Ok(cfg) => probe_tls(target.addr, target.server_name, target.path, cfg).await,
            Err(e) => ProbeOutcome::Inconclusive(e),
        }),
    };
    let mut details = json!({
        "target": target.addr.to_string(),
        "server_name": target.server_name,
        "plaintext": outcome_json(&plaintext),
        "tls_without_client_cert": outcome_json(&no_cert),
    });
    if let Some(c) = &control {
        details["tls_with_client_cert"] = outcome_json(c);
    }
    let mut problems = Vec::new();
    for (what, o) in [
        ("plaintext request", &plaintext),
        ("TLS request without client certificate", &no_cert),
    ] {
        match o {
            ProbeOutcome::Refused(_) => {}
            ProbeOutcome::HttpResponse(s) => problems.push(format!("{what} got through ({s})")),
            ProbeOutcome::Inconclusive(s) => {
                problems.push(format!("{what}: could not verify ({s})"))
            }
        }
    }
    if let Some(c) = &control {
        match c {
            ProbeOutcome::HttpResponse(_) => {}
            ProbeOutcome::Refused(s) | ProbeOutcome::Inconclusive(s) => {
                problems.push(format!("control request with a valid client certificate failed ({s}), so the refusals prove nothing"))
            }
        }
    }
    if problems.is_empty() {
        let detail = |o: &ProbeOutcome| match o {
            ProbeOutcome::Refused(s) => s.clone(),
            _ => String::new(),
        };
        CheckResult {
            name: STRICT_MTLS.into(),
            status: CheckStatus::Passed,
            summary: format!(
                "verified: plaintext refused ({}), TLS without client certificate refused ({}){}",
                detail(&plaintext),
                detail(&no_cert),
                if control.is_some() {
                    ", mesh client certificate accepted"
                } else {
                    ""
                }
            ),
            details,
        }
    } else {
        CheckResult {
            name: STRICT_MTLS.into(),
            status: CheckStatus::Failed,
            summary: format!("FAILED: {}", problems.join("; ")),
            details,
        }
    }
}
