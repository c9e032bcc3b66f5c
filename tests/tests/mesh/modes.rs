//! The mesh modes, each with its real topology, from the processes and sockets up:
//! `both` is plaintext to a client-side sidecar that splits by weight and speaks mTLS with
//! the client's workload identity to one server-side sidecar per subset, each of which
//! alone talks to its app; `baseline` has no sidecar at all.
use super::mesh_up::{gone, spec};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use loadgen::checks::{self, MtlsTarget};
use meshbench_schema::CheckStatus;
use meshbench_tests::{bin, tcp_sockets};
use sidecar::{AccessLogMode, Direction};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use testbed::{CellMeshSettings, Mesh, MeshMode, RunningMesh};

fn up(dir: &std::path::Path, mode: MeshMode, log: AccessLogMode) -> (Mesh, RunningMesh) {
    let mut mesh = Mesh::prepare(&spec(), dir, &bin("loadgen")).unwrap();
    let settings = CellMeshSettings {
        mode,
        cpu_millis: None,
        memory_bytes: None,
        access_log: log,
        concurrency: 1,
        apply_limits: false,
    };
    let m = mesh.up(&settings, mode.as_str()).unwrap();
    (mesh, m)
}

/// `n` plaintext HTTP/1.1 requests on one keep-alive connection to `addr`; per response
/// its x-version and x-forwarded-client-cert (or "").
fn plain_requests(addr: SocketAddr, host: &str, n: usize) -> Vec<(String, String)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut s, c) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .unwrap();
        tokio::spawn(c);
        let mut out = Vec::new();
        for _ in 0..n {
            s.ready().await.unwrap();
            let resp = s
                .send_request(
                    http::Request::builder()
                        .uri("/api/checkout")
                        .header("host", host)
                        // an app cannot claim an identity: the sidecars replace this
                        .header("x-forwarded-client-cert", "URI=spiffe://evil/sa/forged")
                        .body(Empty::<Bytes>::new())
                        .unwrap(),
                )
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
            let h = |name: &str| {
                resp.headers()
                    .get(name)
                    .map(|v| v.to_str().unwrap().to_string())
                    .unwrap_or_default()
            };
            let row = (h("x-version"), h("x-forwarded-client-cert"));
            resp.into_body().collect().await.unwrap();
            out.push(row);
        }
        out
    })
}

/// Local ports of `pid`'s established connections to `port`.
fn ports_connected_to(pid: u32, port: u16) -> BTreeSet<u16> {
    tcp_sockets(pid)
        .into_iter()
        .filter(|s| s.state == "01" && s.remote_port() == port)
        .map(|s| s.local_port())
        .collect()
}

/// Remote ports of `pid`'s established connections accepted on `port`.
fn peers_on(pid: u32, port: u16) -> BTreeSet<u16> {
    tcp_sockets(pid)
        .into_iter()
        .filter(|s| s.state == "01" && s.local_port() == port)
        .map(|s| s.remote_port())
        .collect()
}

/// The `%UPSTREAM_HOST%` (last quoted field) of every line of an access log.
fn upstream_hosts(path: &std::path::Path) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for line in std::fs::read_to_string(path).unwrap().lines() {
        let host = line.rsplit('"').nth(1).unwrap().to_string();
        *out.entry(host).or_default() += 1;
    }
    out
}

#[test]
fn both_mode_is_the_istio_data_path() {
    let dir = tempfile::tempdir().unwrap();
    let (_mesh, m) = up(dir.path(), MeshMode::Both, AccessLogMode::Sync);
    assert!(!m.entry_tls);
    assert!(
        m.url
            .starts_with("http://checkout.default.svc.cluster.local:"),
        "{}",
        m.url
    );
    let sidecars = m.sidecar_addrs();
    let names: Vec<(&str, Direction)> = sidecars.iter().map(|(n, d, _)| (n.as_str(), *d)).collect();
    assert_eq!(
        names,
        [
            ("server-v1", Direction::Inbound),
            ("server-v2", Direction::Inbound),
            ("client", Direction::Outbound)
        ]
    );
    let apps = m.app_addrs();
    let app_pids = m.app_pids();
    let sc_pids = m.sidecar_pids();
    let server_addrs = m.server_sidecar_addrs();
    assert_eq!(server_addrs, [sidecars[0].2, sidecars[1].2]);

    // loadgen's side is plaintext, to the client-side sidecar
    let rows = plain_requests(m.addr, &m.pki.server_name, 400);
    // every app saw the client's workload identity, as its server-side sidecar verified
    // it (not the forged header the caller sent)
    for (_, xfcc) in &rows {
        assert_eq!(
            xfcc,
            "By=spiffe://cluster.local/ns/default/sa/checkout;URI=spiffe://cluster.local/ns/default/sa/loadgen"
        );
    }
    let mut observed = BTreeMap::<String, u64>::new();
    for (v, _) in &rows {
        *observed.entry(v.clone()).or_default() += 1;
    }
    let observed: Vec<(String, u64)> = observed.into_iter().collect();
    let split = checks::canary_split(&m.weights, &observed, 0.999);
    assert_eq!(split.status, CheckStatus::Passed, "{}", split.summary);

    // each app's connections come from its own server-side sidecar, and from nothing else
    for (i, app) in apps.iter().enumerate() {
        let peers = peers_on(app_pids[i], app.port());
        assert!(!peers.is_empty(), "app {i} has no connection");
        assert_eq!(peers, ports_connected_to(sc_pids[i], app.port()), "app {i}");
        let client_to_app = ports_connected_to(sc_pids[2], app.port());
        assert!(
            client_to_app.is_empty(),
            "the client sidecar calls app {i} directly"
        );
    }
    // the client sidecar holds the connections to the server-side sidecars
    for (i, s) in server_addrs.iter().enumerate() {
        assert!(
            !ports_connected_to(sc_pids[2], s.port()).is_empty(),
            "client -> server {i}"
        );
    }

    // STRICT on every server-side sidecar, and the client-side one is plaintext
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for addr in &server_addrs {
        let r = rt.block_on(checks::strict_mtls(&MtlsTarget {
            addr: *addr,
            server_name: &m.pki.server_name,
            ca: &m.pki.ca_cert,
            client: Some((&m.pki.client_cert, &m.pki.client_key)),
            path: "/",
        }));
        assert_eq!(r.status, CheckStatus::Passed, "{addr}: {}", r.summary);
    }
    let cell_dir = m.cell_dir.clone();
    let stats = m.down().unwrap();
    let names: Vec<&str> = stats.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["server-v1", "server-v2", "client"]);
    assert_eq!(stats[0].subsets, ["v1"]);
    assert_eq!(stats[2].subsets, ["v1", "v2"]);

    // the split is the client sidecar's: each server-side sidecar sent to its app only
    let client = upstream_hosts(&cell_dir.join("client.access.log"));
    let want: BTreeSet<String> = server_addrs.iter().map(|a| a.to_string()).collect();
    assert_eq!(client.keys().cloned().collect::<BTreeSet<_>>(), want);
    assert_eq!(client.values().sum::<usize>(), 400);
    for (i, app) in apps.iter().enumerate() {
        let log = upstream_hosts(&cell_dir.join(format!("server-v{}.access.log", i + 1)));
        assert_eq!(
            log.keys().collect::<Vec<_>>(),
            [&app.to_string()],
            "server-v{}",
            i + 1
        );
        // its share of the 400, plus the STRICT check's control request
        let n = observed
            .iter()
            .find(|(v, _)| *v == format!("v{}", i + 1))
            .unwrap()
            .1;
        assert_eq!(log.values().sum::<usize>() as u64, n + 1);
    }
    for p in app_pids.iter().chain(&sc_pids) {
        assert!(gone(*p), "process {p} left behind");
    }
}

#[test]
fn baseline_mode_has_no_sidecar() {
    let dir = tempfile::tempdir().unwrap();
    let (_mesh, m) = up(dir.path(), MeshMode::Baseline, AccessLogMode::Buffered);
    assert!(m.sidecar_pids().is_empty());
    assert!(!m.cpu_limit_applied());
    assert_eq!(m.url, "http://checkout.default.svc.cluster.local/");
    let split: Vec<(&str, u32, SocketAddr)> = m
        .split
        .iter()
        .map(|(s, w, a)| (s.as_str(), *w, *a))
        .collect();
    let apps = m.app_addrs();
    assert_eq!(split, [("v1", 90, apps[0]), ("v2", 10, apps[1])]);
    // no process of this mesh runs the sidecar role: only the two apps were started
    let me = std::process::id();
    let mut children = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let ppid: u32 = stat
            .rsplit(')')
            .next()
            .and_then(|r| r.split_whitespace().nth(1))
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        // this mesh's children (other tests of this binary start theirs): their command
        // lines name their config files in its directory
        if ppid == me && cmd.contains(dir.path().to_str().unwrap()) {
            children.push((pid, cmd));
        }
    }
    assert_eq!(children.len(), 2, "{children:?}");
    assert!(
        children.iter().all(|(_, c)| c.contains("mesh-app")),
        "{children:?}"
    );
    // an app answers in plaintext directly, and says it had no verified caller
    let rows = plain_requests(apps[1], "checkout", 3);
    assert!(rows
        .iter()
        .all(|(v, x)| v == "v2" && x == "URI=spiffe://evil/sa/forged"));
    let stats = m.down().unwrap();
    assert!(stats.is_empty());
}
