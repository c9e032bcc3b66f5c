//! The sidecar in-process: STRICT mTLS, weighted routing, access logging.
//! Upstream apps are tiny hyper servers in this test on ephemeral loopback ports.
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use loadgen::checks::{self, MtlsTarget};
use meshbench_schema::CheckStatus;
use sidecar::{AccessLogMode, Route, Sidecar, SidecarConfig};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use testbed::pki::{Ca, Identity, MeshPki, PkiSpec};
use tokio::net::{TcpListener, TcpStream};

/// An app answering every request with `x-version: <name>` and a small body.
async fn app(name: &'static str) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |_req| async move {
                    Ok::<_, std::convert::Infallible>(
                        http::Response::builder()
                            .header("x-version", name)
                            .body(Full::new(Bytes::from_static(b"hello from the app")))
                            .unwrap(),
                    )
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

fn pki(dir: &Path) -> MeshPki {
    MeshPki::create(
        dir,
        &PkiSpec {
            service: "checkout".into(),
            namespace: "default".into(),
            service_account: "checkout".into(),
            client_service_account: "loadgen".into(),
            user_ca: None,
        },
    )
    .unwrap()
}

struct Running {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    log: Arc<sidecar::AccessLog>,
}

impl Running {
    async fn shutdown(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("sidecar stops")
            .unwrap();
    }
}

async fn sidecar(
    pki: &MeshPki,
    routes: Vec<Route>,
    mode: AccessLogMode,
    log: Option<&Path>,
) -> Running {
    let cfg = SidecarConfig {
        direction: Default::default(),
        listen: "127.0.0.1:0".parse().unwrap(),
        cert: pki.server_cert.clone(),
        key: pki.server_key.clone(),
        ca: pki.ca_cert.clone(),
        routes,
        concurrency: 1,
        access_log: mode,
        access_log_path: log.map(Path::to_path_buf),
        upstream_timeout_ms: 5000,
    };
    let sc = Sidecar::new(&cfg).unwrap();
    let log = sc.access_log();
    let l = TcpListener::bind(cfg.listen).await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(sc.serve(l, async {
        let _ = rx.await;
    }));
    Running {
        addr,
        stop: Some(tx),
        task,
        log,
    }
}

/// A mesh client connection (HTTP/1.1 or HTTP/2 by ALPN).
enum Client {
    H1(hyper::client::conn::http1::SendRequest<Empty<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Empty<Bytes>>),
}

async fn connect(addr: SocketAddr, pki: &MeshPki, alpn: &[u8]) -> Client {
    let mut cfg =
        (*checks::client_tls_config(&pki.ca_cert, Some((&pki.client_cert, &pki.client_key)))
            .unwrap())
        .clone();
    cfg.alpn_protocols = vec![alpn.to_vec()];
    let tcp = TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(
            rustls_pki_types::ServerName::try_from("checkout.default.svc.cluster.local").unwrap(),
            tcp,
        )
        .await
        .unwrap();
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    if h2 {
        let (s, c) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
        tokio::spawn(c);
        Client::H2(s)
    } else {
        let (s, c) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .unwrap();
        tokio::spawn(c);
        Client::H1(s)
    }
}

impl Client {
    /// GET / and return (status, x-version, protocol).
    async fn get(&mut self) -> (u16, String, http::Version) {
        let req = |v| {
            http::Request::builder()
                .uri("https://checkout.default.svc.cluster.local/")
                .version(v)
                .header("user-agent", "mesh-test")
                .body(Empty::<Bytes>::new())
                .unwrap()
        };
        let resp = match self {
            Client::H1(s) => {
                s.ready().await.unwrap();
                let mut r = req(http::Version::HTTP_11);
                *r.uri_mut() = "/".parse().unwrap();
                r.headers_mut().insert(
                    "host",
                    "checkout.default.svc.cluster.local".parse().unwrap(),
                );
                s.send_request(r).await.unwrap()
            }
            Client::H2(s) => {
                s.ready().await.unwrap();
                s.send_request(req(http::Version::HTTP_2)).await.unwrap()
            }
        };
        let status = resp.status().as_u16();
        let v = resp
            .headers()
            .get("x-version")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let version = resp.version();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"hello from the app");
        (status, v, version)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_plaintext_certless_and_untrusted_clients() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let v1 = app("v1").await;
    let sc = sidecar(
        &pki,
        vec![Route {
            subset: "v1".into(),
            weight: 100,
            upstream: v1,
            tls: None,
        }],
        AccessLogMode::Off,
        None,
    )
    .await;

    // The STRICT check: plaintext and cert-less TLS refused, the mesh identity accepted.
    let r = checks::strict_mtls(&MtlsTarget {
        addr: sc.addr,
        server_name: "checkout.default.svc.cluster.local",
        ca: &pki.ca_cert,
        client: Some((&pki.client_cert, &pki.client_key)),
        path: "/",
    })
    .await;
    assert_eq!(r.status, CheckStatus::Passed, "{}", r.summary);
    assert!(r.summary.starts_with("verified"), "{}", r.summary);
    assert_eq!(r.details["plaintext"]["outcome"], "refused");
    assert_eq!(r.details["tls_without_client_cert"]["outcome"], "refused");
    assert_eq!(
        r.details["tls_with_client_cert"]["outcome"],
        "http_response"
    );

    // A client certificate from ANOTHER CA (same SPIFFE id) is refused too.
    let other = Ca::generate("some other CA").unwrap();
    let forged = other
        .issue(&Identity {
            namespace: "default".into(),
            service_account: "loadgen".into(),
            dns: vec![],
            loopback: false,
        })
        .unwrap();
    std::fs::write(dir.path().join("forged.pem"), &forged.cert_pem).unwrap();
    std::fs::write(dir.path().join("forged-key.pem"), &forged.key_pem).unwrap();
    let cfg = checks::client_tls_config(
        &pki.ca_cert,
        Some((
            &dir.path().join("forged.pem"),
            &dir.path().join("forged-key.pem"),
        )),
    )
    .unwrap();
    let o = checks::probe_tls(sc.addr, "checkout.default.svc.cluster.local", "/", cfg).await;
    assert!(matches!(o, checks::ProbeOutcome::Refused(_)), "{o:?}");

    // And against a server that is NOT strict (plain HTTP app), the check fails and says why.
    let r = checks::strict_mtls(&MtlsTarget {
        addr: v1,
        server_name: "checkout.default.svc.cluster.local",
        ca: &pki.ca_cert,
        client: None,
        path: "/",
    })
    .await;
    assert_eq!(r.status, CheckStatus::Failed);
    assert!(
        r.summary
            .contains("plaintext request got through (HTTP/1.1 200 OK)"),
        "{}",
        r.summary
    );
    sc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_90_10_within_the_statistical_bound_over_http1_and_http2() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let (v1, v2) = (app("v1").await, app("v2").await);
    let routes = vec![
        Route {
            subset: "v1".into(),
            weight: 90,
            upstream: v1,
            tls: None,
        },
        Route {
            subset: "v2".into(),
            weight: 10,
            upstream: v2,
            tls: None,
        },
    ];
    let sc = sidecar(&pki, routes, AccessLogMode::Off, None).await;
    let mut tasks = Vec::new();
    for (i, alpn) in [b"h2".as_slice(), b"http/1.1", b"h2", b"http/1.1"]
        .into_iter()
        .enumerate()
    {
        let mut c = connect(sc.addr, &pki, alpn).await;
        tasks.push(tokio::spawn(async move {
            let mut counts = std::collections::BTreeMap::<String, u64>::new();
            let want = if i % 2 == 0 {
                http::Version::HTTP_2
            } else {
                http::Version::HTTP_11
            };
            for _ in 0..1000 {
                let (status, v, version) = c.get().await;
                assert_eq!(status, 200);
                assert_eq!(version, want);
                *counts.entry(v).or_default() += 1;
            }
            counts
        }));
    }
    let mut total = std::collections::BTreeMap::<String, u64>::new();
    for t in tasks {
        let c = tokio::time::timeout(Duration::from_secs(60), t)
            .await
            .unwrap()
            .unwrap();
        for (k, v) in c {
            *total.entry(k).or_default() += v;
        }
    }
    let observed: Vec<(String, u64)> = total.into_iter().collect();
    assert_eq!(observed.iter().map(|(_, c)| c).sum::<u64>(), 4000);
    let weights = vec![("v1".to_string(), 90), ("v2".to_string(), 10)];
    let r = checks::canary_split(&weights, &observed, 0.999);
    assert_eq!(r.status, CheckStatus::Passed, "{} {observed:?}", r.summary);
    // The same counts do not fit a 50/50 split: the test has power.
    let r = checks::canary_split(&[("v1".into(), 50), ("v2".into(), 50)], &observed, 0.999);
    assert_eq!(r.status, CheckStatus::Failed, "{}", r.summary);
    sc.shutdown().await;
}

fn lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_has_one_envoy_line_per_request_when_on_and_none_when_off() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let v1 = app("v1").await;
    let route = || {
        vec![Route {
            subset: "v1".into(),
            weight: 100,
            upstream: v1,
            tls: None,
        }]
    };
    const N: usize = 50;
    for mode in [
        AccessLogMode::Off,
        AccessLogMode::Buffered,
        AccessLogMode::Sync,
    ] {
        let path = dir.path().join(format!("access-{}.log", mode.as_str()));
        let sc = sidecar(
            &pki,
            route(),
            mode,
            (mode != AccessLogMode::Off).then_some(path.as_path()),
        )
        .await;
        let mut c = connect(sc.addr, &pki, b"http/1.1").await;
        for _ in 0..N {
            assert_eq!(c.get().await.0, 200);
        }
        match mode {
            // sync: on disk before each response was sent
            AccessLogMode::Sync => assert_eq!(lines(&path).len(), N),
            // buffered: held in memory (64 KiB / 1 s), not yet all on disk
            AccessLogMode::Buffered => assert!(lines(&path).len() < N),
            AccessLogMode::Off => {}
        }
        assert_eq!(
            sc.log.lines(),
            if mode == AccessLogMode::Off {
                0
            } else {
                N as u64
            }
        );
        sc.shutdown().await;
        match mode {
            AccessLogMode::Off => assert!(!path.exists(), "no log file when off"),
            _ => {
                let ls = lines(&path);
                assert_eq!(ls.len(), N, "{mode:?}");
                // Envoy's default format
                let l = &ls[0];
                assert!(
                    l.starts_with('[') && l.contains("Z] \"GET / HTTP/1.1\" 200 - 0 18 "),
                    "{l}"
                );
                assert!(l.contains("\"mesh-test\""), "{l}");
                assert!(
                    l.ends_with(&format!("\"checkout.default.svc.cluster.local\" \"{v1}\"")),
                    "{l}"
                );
                let fields: Vec<&str> = l.split('"').collect();
                assert_eq!(fields.len(), 13, "{l}");
                assert_eq!(fields[7].len(), 32, "generated x-request-id: {l}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffered_log_is_flushed_within_about_a_second() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let v1 = app("v1").await;
    let path = dir.path().join("access.log");
    let sc = sidecar(
        &pki,
        vec![Route {
            subset: "v1".into(),
            weight: 100,
            upstream: v1,
            tls: None,
        }],
        AccessLogMode::Buffered,
        Some(&path),
    )
    .await;
    let mut c = connect(sc.addr, &pki, b"h2").await;
    for _ in 0..5 {
        c.get().await;
    }
    // Wait (bounded) for the periodic flush rather than for shutdown.
    let mut seen = 0;
    for _ in 0..50 {
        seen = lines(&path).len();
        if seen == 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(seen, 5, "the 1 s flush wrote the buffered lines");
    assert!(
        lines(&path)[0].contains("\"GET / HTTP/2\" 200"),
        "{:?}",
        lines(&path)
    );
    sc.shutdown().await;
}

#[tokio::test]
async fn unreachable_upstream_is_a_503_with_envoy_flag() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    // a port that was free a moment ago
    let dead = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let path = dir.path().join("access.log");
    let sc = sidecar(
        &pki,
        vec![Route {
            subset: "v1".into(),
            weight: 100,
            upstream: dead,
            tls: None,
        }],
        AccessLogMode::Sync,
        Some(&path),
    )
    .await;
    let mut cfg =
        (*checks::client_tls_config(&pki.ca_cert, Some((&pki.client_cert, &pki.client_key)))
            .unwrap())
        .clone();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = TcpStream::connect(sc.addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(
            rustls_pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .unwrap();
    let (mut s, c) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(c);
    let resp = s
        .send_request(
            http::Request::builder()
                .uri("/x")
                .header("host", "localhost")
                .body(Empty::<Bytes>::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert!(
        lines(&path)[0].contains("\"GET /x HTTP/1.1\" 503 UF "),
        "{:?}",
        lines(&path)
    );
    sc.shutdown().await;
}
