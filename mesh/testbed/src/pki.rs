//! The mesh PKI: a CA and workload certificates with SPIFFE identities, as istiod issues
//! them (`spiffe://cluster.local/ns/<namespace>/sa/<service-account>` URI SAN, ECDSA
//! P-256, serverAuth + clientAuth), written as PEM into a directory so `curl --cacert
//! ca.pem --cert client.pem --key client-key.pem` works against the sidecar.
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

/// The trust domain of every identity the embedded mesh issues.
pub const TRUST_DOMAIN: &str = "cluster.local";

/// Errors of the PKI; each names the file or identity concerned.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a usable CA {what}: {reason}")]
    BadCa {
        path: PathBuf,
        what: &'static str,
        reason: String,
    },
    #[error("issuing the certificate for {identity}: {source}")]
    Issue {
        identity: String,
        #[source]
        source: rcgen::Error,
    },
}

/// `spiffe://cluster.local/ns/<namespace>/sa/<service_account>`.
pub fn spiffe_id(namespace: &str, service_account: &str) -> String {
    format!("spiffe://{TRUST_DOMAIN}/ns/{namespace}/sa/{service_account}")
}

/// A certificate authority able to issue workload certificates.
pub struct Ca {
    /// The CA certificate as PEM (the user's own bytes when it was loaded).
    pub cert_pem: String,
    /// The CA key as PEM; only kept for a generated CA.
    generated_key_pem: Option<String>,
    issuer: rcgen::Certificate,
    key: KeyPair,
}

/// What goes into one workload certificate.
#[derive(Debug, Clone)]
pub struct Identity {
    pub namespace: String,
    pub service_account: String,
    /// DNS SANs (e.g. `checkout.default.svc.cluster.local`).
    pub dns: Vec<String>,
    /// Add `localhost` and `127.0.0.1` so clients on this host can verify by name.
    pub loopback: bool,
}

impl Identity {
    pub fn spiffe_id(&self) -> String {
        spiffe_id(&self.namespace, &self.service_account)
    }
}

/// A certificate and its private key, both PEM.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

fn issue_err(identity: &str) -> impl FnOnce(rcgen::Error) -> PkiError + '_ {
    move |source| PkiError::Issue {
        identity: identity.to_string(),
        source,
    }
}

impl Ca {
    /// A fresh self-signed mesh root CA (ECDSA P-256).
    pub fn generate(common_name: &str) -> Result<Ca, PkiError> {
        let err = issue_err(common_name);
        let key = KeyPair::generate().map_err(issue_err(common_name))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, TRUST_DOMAIN);
        dn.push(DnType::CommonName, common_name);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let issuer = params.self_signed(&key).map_err(err)?;
        Ok(Ca {
            cert_pem: issuer.pem(),
            generated_key_pem: Some(key.serialize_pem()),
            issuer,
            key,
        })
    }

    /// Load a user CA (certificate and private key, PEM).
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<Ca, PkiError> {
        let read = |p: &Path| {
            let bytes = meshbench_schema::files::read_regular(p, 1 << 20).map_err(|source| {
                PkiError::Io {
                    path: p.to_path_buf(),
                    source,
                }
            })?;
            String::from_utf8(bytes).map_err(|_| PkiError::BadCa {
                path: p.to_path_buf(),
                what: "PEM file",
                reason: "not UTF-8 text".into(),
            })
        };
        let cert_pem = read(cert)?;
        let key_pem = read(key)?;
        let params =
            CertificateParams::from_ca_cert_pem(&cert_pem).map_err(|e| PkiError::BadCa {
                path: cert.to_path_buf(),
                what: "certificate",
                reason: e.to_string(),
            })?;
        if !matches!(params.is_ca, IsCa::Ca(_)) {
            return Err(PkiError::BadCa {
                path: cert.to_path_buf(),
                what: "certificate",
                reason: "basicConstraints does not say CA:TRUE".into(),
            });
        }
        let key_pair = KeyPair::from_pem(&key_pem).map_err(|e| PkiError::BadCa {
            path: key.to_path_buf(),
            what: "private key",
            reason: e.to_string(),
        })?;
        if !tls::cert_has_public_key(&cert_pem, key_pair.public_key_raw()) {
            return Err(PkiError::BadCa {
                path: key.to_path_buf(),
                what: "private key",
                reason: format!("does not belong to {}", cert.display()),
            });
        }
        // rcgen signs with an issuer `Certificate`; re-creating it from the parsed params
        // and the same key keeps the subject DN and key identifier of the user's CA, which
        // is all that issued certificates refer to.
        let issuer = params.self_signed(&key_pair).map_err(|e| PkiError::BadCa {
            path: cert.to_path_buf(),
            what: "certificate/key pair",
            reason: e.to_string(),
        })?;
        Ok(Ca {
            cert_pem,
            generated_key_pem: None,
            issuer,
            key: key_pair,
        })
    }

    /// Issue a workload certificate for `id`, signed by this CA.
    pub fn issue(&self, id: &Identity) -> Result<Issued, PkiError> {
        let spiffe = id.spiffe_id();
        let key = KeyPair::generate().map_err(issue_err(&spiffe))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, TRUST_DOMAIN);
        dn.push(
            DnType::CommonName,
            id.dns
                .first()
                .cloned()
                .unwrap_or_else(|| id.service_account.clone()),
        );
        params.distinguished_name = dn;
        let ia5 = |s: &str| rcgen::Ia5String::try_from(s.to_string()).map_err(issue_err(&spiffe));
        params.subject_alt_names.push(SanType::URI(ia5(&spiffe)?));
        for d in &id.dns {
            params.subject_alt_names.push(SanType::DnsName(ia5(d)?));
        }
        if id.loopback {
            params
                .subject_alt_names
                .push(SanType::DnsName(ia5("localhost")?));
            params
                .subject_alt_names
                .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        }
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(&key, &self.issuer, &self.key)
            .map_err(issue_err(&spiffe))?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// The PEM files of one embedded mesh, all in one directory.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct MeshPki {
    pub dir: PathBuf,
    /// The CA certificate clients and the sidecar trust.
    pub ca_cert: PathBuf,
    /// The CA key, when the CA was generated (a user CA's key is not copied).
    pub ca_key: Option<PathBuf>,
    /// The sidecar's serving identity (the service's SPIFFE id + DNS names + loopback).
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub server_spiffe_id: String,
    /// DNS name to verify the sidecar by, e.g. `checkout.default.svc.cluster.local`.
    pub server_name: String,
    /// The load generator's client identity.
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    pub client_spiffe_id: String,
}

/// What [`MeshPki::create`] issues.
#[derive(Debug, Clone)]
pub struct PkiSpec {
    pub service: String,
    pub namespace: String,
    pub service_account: String,
    /// Service account of the client (load generator) identity.
    pub client_service_account: String,
    /// User CA (certificate, key) to issue from instead of a generated one.
    pub user_ca: Option<(PathBuf, PathBuf)>,
}

/// A PEM file, atomically and with its mode whatever existed before: 0600 for private keys
/// (a key file of an earlier run at 0644, or a symlink planted at its name, is replaced,
/// never followed), 0644 for certificates.
fn write_pem(path: &Path, text: &str, private: bool) -> Result<(), PkiError> {
    let mode = if private { 0o600 } else { 0o644 };
    meshbench_schema::write_atomic_mode(path, text.as_bytes(), mode).map_err(|e| PkiError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::other(e.to_string()),
    })
}

impl MeshPki {
    /// Generate (or load) the CA and issue the sidecar's and the client's certificates
    /// into `dir` (created if missing): `ca.pem` [`ca-key.pem`], `sidecar.pem`,
    /// `sidecar-key.pem`, `client.pem`, `client-key.pem`.
    pub fn create(dir: &Path, spec: &PkiSpec) -> Result<MeshPki, PkiError> {
        std::fs::create_dir_all(dir).map_err(|source| PkiError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let ca = match &spec.user_ca {
            Some((c, k)) => Ca::from_pem_files(c, k)?,
            None => Ca::generate("meshbench mesh CA")?,
        };
        let server_name = format!("{}.{}.svc.cluster.local", spec.service, spec.namespace);
        let server = Identity {
            namespace: spec.namespace.clone(),
            service_account: spec.service_account.clone(),
            dns: vec![
                server_name.clone(),
                format!("{}.{}.svc", spec.service, spec.namespace),
                format!("{}.{}", spec.service, spec.namespace),
                spec.service.clone(),
            ],
            loopback: true,
        };
        let client = Identity {
            namespace: spec.namespace.clone(),
            service_account: spec.client_service_account.clone(),
            dns: vec![],
            loopback: false,
        };
        let s = ca.issue(&server)?;
        let c = ca.issue(&client)?;
        let pki = MeshPki {
            dir: dir.to_path_buf(),
            ca_cert: dir.join("ca.pem"),
            ca_key: ca
                .generated_key_pem
                .as_ref()
                .map(|_| dir.join("ca-key.pem")),
            server_cert: dir.join("sidecar.pem"),
            server_key: dir.join("sidecar-key.pem"),
            server_spiffe_id: server.spiffe_id(),
            server_name,
            client_cert: dir.join("client.pem"),
            client_key: dir.join("client-key.pem"),
            client_spiffe_id: client.spiffe_id(),
        };
        write_pem(&pki.ca_cert, &ca.cert_pem, false)?;
        if let (Some(p), Some(k)) = (&pki.ca_key, &ca.generated_key_pem) {
            write_pem(p, k, true)?;
        }
        write_pem(&pki.server_cert, &s.cert_pem, false)?;
        write_pem(&pki.server_key, &s.key_pem, true)?;
        write_pem(&pki.client_cert, &c.cert_pem, false)?;
        write_pem(&pki.client_key, &c.key_pem, true)?;
        Ok(pki)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;
    use x509_parser::extensions::GeneralName;

    fn sans(pem_path: &Path) -> Vec<String> {
        let der = CertificateDer::from_pem_file(pem_path).unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let san = cert.subject_alternative_name().unwrap().unwrap();
        san.value
            .general_names
            .iter()
            .map(|g| match g {
                GeneralName::URI(u) => format!("URI:{u}"),
                GeneralName::DNSName(d) => format!("DNS:{d}"),
                GeneralName::IPAddress(ip) => format!("IP:{ip:?}"),
                other => format!("{other:?}"),
            })
            .collect()
    }

    fn spec() -> PkiSpec {
        PkiSpec {
            service: "checkout".into(),
            namespace: "default".into(),
            service_account: "checkout".into(),
            client_service_account: "loadgen".into(),
            user_ca: None,
        }
    }

    #[test]
    fn issues_spiffe_identities_into_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let pki = MeshPki::create(dir.path(), &spec()).unwrap();
        let s = sans(&pki.server_cert);
        assert!(
            s.contains(&"URI:spiffe://cluster.local/ns/default/sa/checkout".to_string()),
            "{s:?}"
        );
        assert!(
            s.contains(&"DNS:checkout.default.svc.cluster.local".to_string()),
            "{s:?}"
        );
        assert!(s.contains(&"DNS:localhost".to_string()), "{s:?}");
        let c = sans(&pki.client_cert);
        assert_eq!(
            c,
            vec!["URI:spiffe://cluster.local/ns/default/sa/loadgen".to_string()]
        );
        assert_eq!(
            pki.server_spiffe_id,
            "spiffe://cluster.local/ns/default/sa/checkout"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&pki.client_key)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "private keys are not world-readable");
        assert!(pki.ca_key.as_ref().unwrap().exists());
    }

    #[test]
    fn a_reused_directory_gets_0600_keys_and_planted_links_are_not_followed() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "not a key").unwrap();
        let mesh = dir.path().join("mesh");
        std::fs::create_dir(&mesh).unwrap();
        // an earlier run's loose key, and a symlink where the client key goes
        std::fs::write(mesh.join("ca-key.pem"), "old").unwrap();
        std::fs::set_permissions(
            mesh.join("ca-key.pem"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        std::os::unix::fs::symlink(&victim, mesh.join("client-key.pem")).unwrap();
        let pki = MeshPki::create(&mesh, &spec()).unwrap();
        for k in [
            pki.ca_key.clone().unwrap(),
            pki.client_key.clone(),
            pki.server_key.clone(),
        ] {
            let mode = std::fs::metadata(&k).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{}", k.display());
        }
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "not a key");
        assert!(std::fs::read_to_string(&pki.client_key)
            .unwrap()
            .contains("PRIVATE KEY"));
    }

    #[test]
    fn a_user_ca_replaces_the_generated_one() {
        let dir = tempfile::tempdir().unwrap();
        // a "user" CA made by a first run
        let first = MeshPki::create(&dir.path().join("a"), &spec()).unwrap();
        let mut s = spec();
        s.user_ca = Some((first.ca_cert.clone(), first.ca_key.clone().unwrap()));
        let second = MeshPki::create(&dir.path().join("b"), &s).unwrap();
        assert_eq!(
            std::fs::read(&first.ca_cert).unwrap(),
            std::fs::read(&second.ca_cert).unwrap(),
            "the user's CA certificate is used as is"
        );
        assert!(second.ca_key.is_none(), "a user CA key is not copied");
        // the new leaf chains to the user CA
        let ca = CertificateDer::from_pem_file(&first.ca_cert).unwrap();
        let leaf = CertificateDer::from_pem_file(&second.server_cert).unwrap();
        let (_, ca) = x509_parser::parse_x509_certificate(&ca).unwrap();
        let (_, leaf) = x509_parser::parse_x509_certificate(&leaf).unwrap();
        assert_eq!(leaf.issuer(), ca.subject());
        leaf.verify_signature(Some(ca.public_key())).unwrap();
    }

    #[test]
    fn a_bad_user_ca_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let bogus = dir.path().join("ca.pem");
        std::fs::write(&bogus, "not a certificate").unwrap();
        let mut s = spec();
        s.user_ca = Some((bogus.clone(), dir.path().join("missing-key.pem")));
        let err = MeshPki::create(&dir.path().join("out"), &s)
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("ca.pem") || err.contains("missing-key.pem"),
            "{err}"
        );
        // a leaf is not a CA
        let pki = MeshPki::create(&dir.path().join("ok"), &spec()).unwrap();
        s.user_ca = Some((pki.server_cert.clone(), pki.server_key.clone()));
        let err = MeshPki::create(&dir.path().join("out2"), &s)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("sidecar.pem"), "{err}");
    }
}
