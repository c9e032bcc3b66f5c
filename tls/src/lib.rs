//! TLS for every part of meshbench, with rustls and one crypto provider (ring): reading
//! PEM files, the client configs of the load engine and of the STRICT mTLS probes, the
//! server configs of the built-in app server and of the sidecar (STRICT: client
//! certificates required), and the server-identity check (URI or DNS SAN) after a
//! handshake. Every config is built once by its caller and shared through `Arc`.
#![forbid(unsafe_code)]

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A TLS setup error; names the file it came from.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// Where the system CA bundle lives on Debian-like systems.
pub const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";
/// ALPN protocol ids.
pub const ALPN_H2: &[u8] = b"h2";
pub const ALPN_HTTP1: &[u8] = b"http/1.1";

/// The one crypto provider.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn file_err(path: &Path, message: impl Into<String>) -> TlsError {
    TlsError::File {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Most bytes read from one PEM file.
pub const MAX_PEM_BYTES: u64 = 1 << 20;

/// A PEM file's bytes: a regular file only (a FIFO would block the reader) and at most
/// [`MAX_PEM_BYTES`].
pub fn read_pem(path: &Path) -> Result<Vec<u8>, TlsError> {
    meshbench_schema::files::read_regular(path, MAX_PEM_BYTES)
        .map_err(|e| file_err(path, format!("cannot read: {e}")))
}

/// All certificates of a PEM file (at least one).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read_pem(path)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| file_err(path, format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(file_err(path, "no PEM certificate found"));
    }
    Ok(certs)
}

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(&read_pem(path)?)
        .map_err(|e| file_err(path, format!("no usable PEM private key: {e}")))
}

/// The CA certificates of a PEM file as a root store (at least one usable).
pub fn root_store(path: &Path) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(load_certs(path)?);
    if added == 0 {
        return Err(file_err(path, "no usable CA certificate"));
    }
    Ok(roots)
}

/// What a client trusts and presents.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClientTls<'a> {
    /// CA bundle that verifies the server; `None`: the system bundle.
    pub ca: Option<&'a Path>,
    /// Client certificate chain and key (mTLS).
    pub identity: Option<(&'a Path, &'a Path)>,
    /// Accept any server certificate (flagged in results by the caller).
    pub insecure_skip_verify: bool,
}

/// A client config offering `alpn` (in order of preference).
pub fn client_config(
    tls: &ClientTls<'_>,
    alpn: &[&[u8]],
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = if tls.insecure_skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider())))
    } else {
        let ca = tls.ca.unwrap_or(Path::new(SYSTEM_CA_BUNDLE));
        builder.with_root_certificates(root_store(ca)?)
    };
    let mut config = match tls.identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(load_certs(cert)?, load_key(key)?)
            .map_err(|e| file_err(key, format!("client certificate and key do not fit: {e}")))?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// A server config offering ALPN h2 and http/1.1. With `client_ca`, client certificates
/// are required and verified against it (mTLS; the sidecar's STRICT mode).
pub fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match client_ca {
        Some(ca) => {
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(root_store(ca)?),
                provider(),
            )
            .build()
            .map_err(|e| file_err(ca, format!("cannot verify clients with this CA: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(load_certs(cert)?, load_key(key)?)
        .map_err(|e| file_err(key, format!("certificate and key do not fit: {e}")))?;
    config.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP1.to_vec()];
    Ok(Arc::new(config))
}

/// The SANs (URI and DNS) of a DER certificate, as strings.
pub fn sans(cert: &[u8]) -> Result<Vec<String>, String> {
    use x509_parser::prelude::*;
    let (_, x) =
        X509Certificate::from_der(cert).map_err(|e| format!("unparsable certificate: {e}"))?;
    let mut out = Vec::new();
    if let Ok(Some(ext)) = x.subject_alternative_name() {
        for n in &ext.value.general_names {
            match n {
                GeneralName::URI(u) => out.push(u.to_string()),
                GeneralName::DNSName(d) => out.push(d.to_string()),
                _ => {}
            }
        }
    }
    Ok(out)
}

/// Check that the leaf certificate carries `expected` as a URI or DNS SAN.
pub fn check_identity(peer: Option<&[CertificateDer<'_>]>, expected: &str) -> Result<(), String> {
    let leaf = peer.and_then(|c| c.first()).ok_or_else(|| {
        format!("server identity: expected {expected}, server sent no certificate")
    })?;
    let names = sans(leaf)?;
    if names.iter().any(|n| n == expected) {
        Ok(())
    } else {
        Err(format!(
            "server identity mismatch: expected {expected}, certificate has [{}]",
            names.join(", ")
        ))
    }
}

/// Whether the public key of the (first) certificate in `cert_pem` is `public_key_raw`.
pub fn cert_has_public_key(cert_pem: &str, public_key_raw: &[u8]) -> bool {
    let Ok(der) = CertificateDer::from_pem_slice(cert_pem.as_bytes()) else {
        return false;
    };
    match x509_parser::parse_x509_certificate(&der) {
        Ok((_, c)) => c.public_key().subject_public_key.data.as_ref() == public_key_raw,
        Err(_) => false,
    }
}

/// Accepts any server certificate; only used with `insecure_skip_verify = true`, which the
/// results flag.
#[derive(Debug)]
struct NoVerify(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_errors_name_the_file_and_configs_build_from_generated_files() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not pem at all").unwrap();
        let e = load_certs(&junk).unwrap_err().to_string();
        assert!(e.starts_with(&junk.display().to_string()), "{e}");
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = p.self_signed(&ca_key).unwrap();
        let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        std::fs::write(&cert, ca.pem()).unwrap();
        std::fs::write(&key, ca_key.serialize_pem()).unwrap();
        let s = server_config(&cert, &key, Some(&cert)).unwrap();
        assert_eq!(s.alpn_protocols, [b"h2".to_vec(), b"http/1.1".to_vec()]);
        let c = client_config(
            &ClientTls {
                ca: Some(&cert),
                ..Default::default()
            },
            &[ALPN_HTTP1],
        )
        .unwrap();
        assert_eq!(c.alpn_protocols, [b"http/1.1".to_vec()]);
        assert!(cert_has_public_key(&ca.pem(), ca_key.public_key_raw()));
        assert_eq!(sans(ca.der()).unwrap(), ["localhost"]);
        // a key that is not the certificate's
        let other = rcgen::KeyPair::generate().unwrap();
        assert!(!cert_has_public_key(&ca.pem(), other.public_key_raw()));
    }
}
