//! The checks `loadgen run` reports: the canary split and STRICT mTLS.
use meshbench_schema::{CheckResult, CheckStatus};
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::json;
use statrs::distribution::{Binomial, ChiSquared, ContinuousCDF, DiscreteCDF};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Name of the canary-split check in results.
pub const CANARY_SPLIT: &str = "canary_split";
/// Name of the STRICT mTLS check in results.
pub const STRICT_MTLS: &str = "strict_mtls";

/// Goodness of fit of observed subset counts to configured weights.
///
/// Two subsets with weight: an exact two-sided binomial test on the first subset's count;
/// more: Pearson's chi-square test with k-1 degrees of freedom. The check fails when the
/// p-value is below `1 - confidence`, when a subset with weight 0 (or one not configured)
/// answered, or when nothing answered.
pub fn canary_split(
    weights: &[(String, u32)],
    observed: &[(String, u64)],
    confidence: f64,
) -> CheckResult {
    let alpha = 1.0 - confidence;
    let count_of = |name: &str| {
        observed
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, c)| *c)
            .sum::<u64>()
    };
    let total_w: u32 = weights.iter().map(|(_, w)| w).sum();
    let n: u64 = observed.iter().map(|(_, c)| c).sum();
    let unexpected: Vec<(String, u64)> = observed
        .iter()
        .filter(|(name, c)| *c > 0 && !weights.iter().any(|(w, wt)| w == name && *wt > 0))
        .cloned()
        .collect();
    let rows: Vec<serde_json::Value> = weights
        .iter()
        .map(|(name, w)| {
            let c = count_of(name);
            json!({
                "subset": name,
                "weight": w,
                "observed": c,
                "expected": n as f64 * *w as f64 / total_w.max(1) as f64,
                "observed_share": if n > 0 { c as f64 / n as f64 } else { 0.0 },
                "expected_share": *w as f64 / total_w.max(1) as f64,
            })
        })
        .collect();
    let mut details = json!({
        "confidence": confidence,
        "alpha": alpha,
        "total": n,
        "subsets": rows,
    });
    let shares = weights
        .iter()
        .map(|(name, w)| {
            format!(
                "{name} {:.2}% (weight {w}%)",
                if n > 0 {
                    100.0 * count_of(name) as f64 / n as f64
                } else {
                    0.0
                }
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    let fail = |summary: String, details: serde_json::Value| CheckResult {
        name: CANARY_SPLIT.into(),
        status: CheckStatus::Failed,
        summary,
        details,
    };
    if n == 0 {
        return fail(
            "no response named its subset, so the split could not be verified".into(),
            details,
        );
    }
    if !unexpected.is_empty() {
        details["unexpected"] = json!(unexpected);
        let list = unexpected
            .iter()
            .map(|(n, c)| format!("{n}: {c}"))
            .collect::<Vec<_>>()
            .join(", ");
        return fail(
            format!("responses from subsets with no weight: {list} (of {n})"),
            details,
        );
    }
    let live: Vec<(&str, f64, u64)> = weights
        .iter()
        .filter(|(_, w)| *w > 0)
        .map(|(name, w)| (name.as_str(), *w as f64 / total_w as f64, count_of(name)))
        .collect();
    let (test, p_value) = if live.len() < 2 {
        // One live subset: every response came from it (unexpected ones failed above).
        ("all traffic to one subset", 1.0)
    } else if live.len() == 2 {
        let (_, p, k) = live[0];
        let p_value = match Binomial::new(p, n) {
            Ok(b) => {
                // two-sided: twice the smaller tail, capped at 1
                let lower = b.cdf(k);
                let upper = if k == 0 { 1.0 } else { b.sf(k - 1) };
                (2.0 * lower.min(upper)).min(1.0)
            }
            Err(_) => 0.0,
        };
        ("exact binomial test (two-sided)", p_value)
    } else {
        let stat: f64 = live
            .iter()
            .map(|(_, p, k)| {
                let e = p * n as f64;
                (*k as f64 - e).powi(2) / e
            })
            .sum();
        details["chi_square"] = json!(stat);
        details["degrees_of_freedom"] = json!(live.len() - 1);
        let p_value = match ChiSquared::new((live.len() - 1) as f64) {
            Ok(d) => d.sf(stat),
            Err(_) => 0.0,
        };
        ("Pearson chi-square test", p_value)
    };
    details["test"] = json!(test);
    details["p_value"] = json!(p_value);
    let conf = format!("{}%", trim_float(confidence * 100.0));
    if p_value < alpha {
        fail(
            format!("split differs from the weights at {conf} confidence: {shares}, n={n}, p={p_value:.2e} ({test})"),
            details,
        )
    } else {
        CheckResult {
            name: CANARY_SPLIT.into(),
            status: CheckStatus::Passed,
            summary: format!("split matches the weights at {conf} confidence: {shares}, n={n}, p={p_value:.3} ({test})"),
            details,
        }
    }
}

fn trim_float(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

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

/// A rustls client config trusting `ca`, optionally with a client identity; ALPN http/1.1.
pub fn client_tls_config(
    ca: &Path,
    client: Option<(&Path, &Path)>,
) -> Result<Arc<ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca)
        .map_err(|e| format!("{}: {e}", ca.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", ca.display()))?;
    for c in certs {
        roots.add(c).map_err(|e| format!("{}: {e}", ca.display()))?;
    }
    let b = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    let mut cfg = match client {
        None => b.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .map_err(|e| format!("{}: {e}", cert.display()))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("{}: {e}", cert.display()))?;
            let k =
                PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
            b.with_client_auth_cert(chain, k)
                .map_err(|e| format!("{}: {e}", cert.display()))?
        }
    };
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn w(v: &[(&str, u32)]) -> Vec<(String, u32)> {
        v.iter().map(|(n, w)| (n.to_string(), *w)).collect()
    }
    fn o(v: &[(&str, u64)]) -> Vec<(String, u64)> {
        v.iter().map(|(n, c)| (n.to_string(), *c)).collect()
    }

    #[test]
    fn binomial_accepts_a_fair_split_and_rejects_a_skewed_one() {
        let weights = w(&[("v1", 90), ("v2", 10)]);
        let ok = canary_split(&weights, &o(&[("v1", 9030), ("v2", 970)]), 0.999);
        assert_eq!(ok.status, CheckStatus::Passed, "{}", ok.summary);
        let p = ok.details["p_value"].as_f64().unwrap();
        assert!(p > 0.3 && p <= 1.0, "{p}");
        let bad = canary_split(&weights, &o(&[("v1", 8000), ("v2", 2000)]), 0.999);
        assert_eq!(bad.status, CheckStatus::Failed, "{}", bad.summary);
        assert!(bad.details["p_value"].as_f64().unwrap() < 1e-10);
        assert!(bad.summary.contains("99.9% confidence"), "{}", bad.summary);
        // exact p-value of a small case: n=10, p=0.5, k=0 → 2 * 0.5^10
        let tiny = canary_split(
            &w(&[("a", 50), ("b", 50)]),
            &o(&[("a", 0), ("b", 10)]),
            0.99,
        );
        let p = tiny.details["p_value"].as_f64().unwrap();
        assert!((p - 2.0 / 1024.0).abs() < 1e-12, "{p}");
        assert_eq!(tiny.status, CheckStatus::Failed);
    }

    #[test]
    fn chi_square_for_three_subsets() {
        let weights = w(&[("a", 50), ("b", 30), ("c", 20)]);
        let ok = canary_split(
            &weights,
            &o(&[("a", 5020), ("b", 2990), ("c", 1990)]),
            0.999,
        );
        assert_eq!(ok.status, CheckStatus::Passed, "{}", ok.summary);
        assert_eq!(ok.details["degrees_of_freedom"], 2);
        let bad = canary_split(
            &weights,
            &o(&[("a", 4000), ("b", 4000), ("c", 2000)]),
            0.999,
        );
        assert_eq!(bad.status, CheckStatus::Failed);
        // chi2 = 1000^2/5000 + 1000^2/3000 + 0 = 200 + 333.3
        let stat = bad.details["chi_square"].as_f64().unwrap();
        assert!((stat - 533.333).abs() < 0.01, "{stat}");
    }

    #[test]
    fn unexpected_or_missing_subsets_fail() {
        let weights = w(&[("v1", 100), ("v2", 0)]);
        let r = canary_split(&weights, &o(&[("v1", 99), ("v2", 1)]), 0.999);
        assert_eq!(r.status, CheckStatus::Failed);
        assert!(r.summary.contains("v2: 1"), "{}", r.summary);
        let r = canary_split(
            &w(&[("v1", 90), ("v2", 10)]),
            &o(&[("v1", 90), ("v3", 10)]),
            0.999,
        );
        assert_eq!(r.status, CheckStatus::Failed);
        let r = canary_split(&w(&[("v1", 90), ("v2", 10)]), &[], 0.999);
        assert_eq!(r.status, CheckStatus::Failed);
        assert!(r.summary.contains("could not be verified"));
        let r = canary_split(&weights, &o(&[("v1", 50)]), 0.999);
        assert_eq!(r.status, CheckStatus::Passed);
    }
}
