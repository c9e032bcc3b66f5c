//! `Mesh::up` / `down` with real child processes: the built loadgen binary plays the apps
//! (`mesh-app`) and the sidecar (`mesh-sidecar`), each started from its JSON config.
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use loadgen::checks::{self, MtlsTarget};
use meshbench_schema::units::Dur;
use meshbench_schema::CheckStatus;
use meshbench_tests::bin;
use sidecar::AccessLogMode;
use std::path::Path;
use std::time::Duration;
use testbed::{CellMeshSettings, Mesh, MeshSpec, RunningMesh, SubsetSpec};

pub(crate) fn spec() -> MeshSpec {
    let subset = |name: &str, weight| SubsetSpec {
        name: name.into(),
        weight,
        service_time: Dur(Duration::from_micros(200)),
        service_time_dist: app::ServiceTimeDist::Fixed,
    };
    MeshSpec {
        service: "checkout".into(),
        namespace: "default".into(),
        service_account: "checkout".into(),
        subset_header: "x-version".into(),
        concurrency: 1,
        sidecar_memory_bytes: None,
        response_bytes: Some(1024),
        ca: None,
        subsets: vec![subset("v1", 90), subset("v2", 10)],
    }
}

fn settings(cpu: Option<u64>, log: AccessLogMode, apply: bool) -> CellMeshSettings {
    CellMeshSettings {
        mode: testbed::MeshMode::Server,
        cpu_millis: cpu,
        memory_bytes: None,
        access_log: log,
        concurrency: 1,
        apply_limits: apply,
    }
}

/// Send `n` requests through the mesh; returns counts per x-version.
pub(crate) fn drive(m: &RunningMesh, n: usize) -> Vec<(String, u64)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let cfg = checks::client_tls_config(
            &m.pki.ca_cert,
            Some((&m.pki.client_cert, &m.pki.client_key)),
        )
        .unwrap();
        let tcp = tokio::net::TcpStream::connect(m.addr).await.unwrap();
        let tls = tokio_rustls::TlsConnector::from(cfg)
            .connect(
                rustls_pki_types::ServerName::try_from(m.pki.server_name.clone()).unwrap(),
                tcp,
            )
            .await
            .unwrap();
        let (mut s, c) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .unwrap();
        tokio::spawn(c);
        let mut counts = std::collections::BTreeMap::<String, u64>::new();
        for _ in 0..n {
            s.ready().await.unwrap();
            let resp = s
                .send_request(
                    http::Request::builder()
                        .uri("/")
                        .header("host", &m.pki.server_name)
                        .body(Empty::<Bytes>::new())
                        .unwrap(),
                )
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
            let v = resp.headers()["x-version"].to_str().unwrap().to_string();
            assert_eq!(
                resp.into_body().collect().await.unwrap().to_bytes().len(),
                1024
            );
            *counts.entry(v).or_default() += 1;
        }
        counts.into_iter().collect()
    })
}

pub(crate) fn gone(pid: u32) -> bool {
    // Reaped children disappear from /proc (pid reuse within the test is not a concern).
    !Path::new(&format!("/proc/{pid}")).exists()
}

pub(crate) fn cgroups_writable() -> bool {
    match testbed::cgroup::Cgroups::detect() {
        Ok(_) => true,
        Err(e) => {
            eprintln!("(cgroups cannot be written here, CPU-limit parts skipped: {e})");
            false
        }
    }
}

#[test]
fn up_serves_strict_mtls_and_down_removes_everything() {
    let dir = tempfile::tempdir().unwrap();
    let exe = bin("loadgen");
    let mut mesh = Mesh::prepare(&spec(), dir.path(), &exe).unwrap();
    let apply = cgroups_writable();
    let mut m = mesh
        .up(
            &settings(Some(500), AccessLogMode::Buffered, apply),
            "cpu=500m,log=buffered",
        )
        .unwrap();
    assert!(
        m.url
            .starts_with("https://checkout.default.svc.cluster.local:"),
        "{}",
        m.url
    );
    assert_eq!(
        m.pki.server_spiffe_id,
        "spiffe://cluster.local/ns/default/sa/checkout"
    );
    let mut pids = m.app_pids();
    pids.extend(m.sidecar_pids());
    let dirs = m.cgroup_dirs();
    assert_eq!(apply, !dirs.is_empty());
    if apply {
        let procs = std::fs::read_to_string(dirs[0].join("cgroup.procs")).unwrap();
        assert_eq!(
            procs.trim(),
            m.sidecar_pids()[0].to_string(),
            "the sidecar runs in its cgroup"
        );
        let quota = std::fs::read_to_string(dirs[0].join("cpu.cfs_quota_us"))
            .or_else(|_| std::fs::read_to_string(dirs[0].join("cpu.max")))
            .unwrap();
        assert!(quota.starts_with("50000"), "{quota}");
    }
    m.begin_measurement_after(Duration::ZERO);
    let observed = drive(&m, 400);
    let r = checks::canary_split(&m.weights, &observed, 0.999);
    assert_eq!(r.status, CheckStatus::Passed, "{}", r.summary);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let strict = rt.block_on(checks::strict_mtls(&MtlsTarget {
        addr: m.addr,
        server_name: &m.pki.server_name,
        ca: &m.pki.ca_cert,
        client: Some((&m.pki.client_cert, &m.pki.client_key)),
        path: "/",
    }));
    assert_eq!(strict.status, CheckStatus::Passed, "{}", strict.summary);
    let stats = m.down().unwrap().remove(0);
    // 400 driven + 1 control request of the STRICT check
    assert_eq!(stats.access_log_lines, Some(401));
    if apply {
        let cpu = stats.cpu_stat.expect("cpu.stat from the cgroup");
        assert!(cpu.usage_usec > 0, "{cpu:?}");
    }
    assert!(stats.memory_peak_bytes.unwrap_or(0) > 0, "{stats:?}");
    for p in pids {
        assert!(gone(p), "process {p} left behind");
    }
    for d in dirs {
        assert!(!d.exists(), "{} left behind", d.display());
    }
    // The PEM files stay in the run directory for curl/openssl.
    assert!(dir.path().join("mesh/ca.pem").exists());
}

#[test]
fn drop_without_down_removes_everything() {
    let dir = tempfile::tempdir().unwrap();
    let exe = bin("loadgen");
    let mut mesh = Mesh::prepare(&spec(), dir.path(), &exe).unwrap();
    let apply = cgroups_writable();
    let mut m = mesh
        .up(&settings(Some(100), AccessLogMode::Sync, apply), "drop")
        .unwrap();
    m.begin_measurement_after(Duration::from_millis(10));
    drive(&m, 20);
    let mut pids = m.app_pids();
    pids.extend(m.sidecar_pids());
    let dirs = m.cgroup_dirs();
    drop(m); // as on an error path or an unwinding panic
    for p in pids {
        assert!(gone(p), "process {p} left behind");
    }
    for d in dirs {
        assert!(!d.exists(), "{} left behind", d.display());
    }
}

#[test]
fn no_cpu_limits_runs_without_a_cgroup() {
    let dir = tempfile::tempdir().unwrap();
    let exe = bin("loadgen");
    let mut mesh = Mesh::prepare(&spec(), dir.path(), &exe).unwrap();
    let m = mesh
        .up(&settings(Some(100), AccessLogMode::Off, false), "nolimit")
        .unwrap();
    assert!(!m.cpu_limit_applied());
    assert!(m.cgroup_dirs().is_empty());
    drive(&m, 10);
    let stats = m.down().unwrap().remove(0);
    assert_eq!(
        stats.cpu_stat, None,
        "no cgroup, no cpu.stat: never pretend"
    );
    assert_eq!(stats.access_log_lines, Some(0));
}
