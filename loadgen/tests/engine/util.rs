use loadgen::plan::Plan;
use loadgen::run::RunOutput;
use loadgen::scenario::Source;
use loadgen::target::TargetOptions;
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, SanType};
use std::path::{Path, PathBuf};
use tokio::sync::watch;

pub const SPIFFE_APP: &str = "spiffe://cluster.local/ns/default/sa/app";

/// PEM files in a temp dir: a CA, a server cert (localhost, 127.0.0.1, a SPIFFE URI) and a
/// client cert signed by it; another CA with its own client cert.
pub struct Certs {
    pub dir: tempfile::TempDir,
}

impl Certs {
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    pub fn p(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }
}

fn ca(name: &str) -> (rcgen::Certificate, KeyPair) {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name
        .push(rcgen::DnType::CommonName, name.to_string());
    (p.self_signed(&key).unwrap(), key)
}

fn leaf(
    sans: Vec<SanType>,
    ca: &rcgen::Certificate,
    ca_key: &KeyPair,
) -> (rcgen::Certificate, KeyPair) {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.subject_alt_names = sans;
    (p.signed_by(&key, ca, ca_key).unwrap(), key)
}

pub fn certs() -> Certs {
    let dir = tempfile::tempdir().unwrap();
    let w = |n: &str, s: String| std::fs::write(dir.path().join(n), s).unwrap();
    let (ca_cert, ca_key) = ca("meshbench test CA");
    let (srv, srv_key) = leaf(
        vec![
            SanType::DnsName("localhost".try_into().unwrap()),
            SanType::IpAddress("127.0.0.1".parse().unwrap()),
            SanType::URI(SPIFFE_APP.try_into().unwrap()),
        ],
        &ca_cert,
        &ca_key,
    );
    let (cli, cli_key) = leaf(
        vec![SanType::URI(
            "spiffe://cluster.local/ns/default/sa/loadgen"
                .try_into()
                .unwrap(),
        )],
        &ca_cert,
        &ca_key,
    );
    let (other_ca, other_key) = ca("someone else's CA");
    let (ocli, ocli_key) = leaf(
        vec![SanType::DnsName("intruder".try_into().unwrap())],
        &other_ca,
        &other_key,
    );
    w("ca.pem", ca_cert.pem());
    w("server.pem", srv.pem());
    w("server.key", srv_key.serialize_pem());
    w("client.pem", cli.pem());
    w("client.key", cli_key.serialize_pem());
    // the same names as the server certificate, but valid only in 2020
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.subject_alt_names = vec![
        SanType::DnsName("localhost".try_into().unwrap()),
        SanType::IpAddress("127.0.0.1".parse().unwrap()),
    ];
    p.not_before = rcgen::date_time_ymd(2020, 1, 1);
    p.not_after = rcgen::date_time_ymd(2020, 12, 31);
    let expired = p.signed_by(&key, &ca_cert, &ca_key).unwrap();
    w("expired.pem", expired.pem());
    w("expired.key", key.serialize_pem());
    w("other-ca.pem", other_ca.pem());
    w("other-client.pem", ocli.pem());
    w("other-client.key", ocli_key.serialize_pem());
    Certs { dir }
}

/// Run scenario text (written to `dir/s.toml`) against its target, in-process.
pub async fn run_text(dir: &Path, text: &str) -> RunOutput {
    let path = dir.join("s.toml");
    std::fs::write(&path, text).unwrap();
    let src = Source::load(&path, &[]).unwrap();
    let plan = Plan::from_scenario(&src.parse().unwrap(), &src).unwrap();
    let (_tx, stop) = watch::channel(false);
    let opts = loadgen::run::RunOptions {
        dir: dir.join("out"),
        stop,
        worker: None,
    };
    let run = loadgen::run::run(&plan, &TargetOptions::default(), opts, &mut |_| {})
        .await
        .unwrap();
    // run.json on disk holds what was returned.
    let back = meshbench_schema::read_run(&run.dir).unwrap();
    assert_eq!(back.cells.len(), run.result.cells.len());
    for (a, b) in back.cells.iter().zip(&run.result.cells) {
        assert_eq!(
            (a.requests, a.ok, a.errors, &a.hlog),
            (b.requests, b.ok, b.errors, &b.hlog)
        );
        assert_eq!(a.latency.corrected.p99_us, b.latency.corrected.p99_us);
        // a capacity search's every step and its result
        assert_eq!(a.search, b.search);
    }
    assert_eq!(back.warnings, run.result.warnings);
    run
}

/// The built loadgen binary.
pub fn bin() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_loadgen"))
}
