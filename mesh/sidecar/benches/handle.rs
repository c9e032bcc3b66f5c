//! The sidecar's per-request handling: one request routed to a loopback app over a pooled
//! HTTP/1.1 keep-alive connection and its response returned, with the access log off and
//! buffered (TLS is set up once per connection and not part of it). `cargo bench -p
//! meshbench-sidecar`; in CI once in test mode (`cargo test --benches`).

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use http_body_util::{Empty, Full};
use hyper_util::rt::TokioIo;
use sidecar::{AccessLogMode, Route, Sidecar, SidecarConfig};
use std::hint::black_box;
use std::net::SocketAddr;

/// A loopback app answering 1 KiB to everything.
async fn app() -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from(
                        vec![b'x'; 1024],
                    ))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

fn pki(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let cert = p.self_signed(&key).unwrap();
    let (c, k) = (dir.join("c.pem"), dir.join("k.pem"));
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    (c.clone(), k, c)
}

fn handle(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, ca) = pki(dir.path());
    let upstream = rt.block_on(app());
    for mode in [AccessLogMode::Off, AccessLogMode::Buffered] {
        let cfg = SidecarConfig {
            direction: Default::default(),
            listen: "127.0.0.1:0".parse().unwrap(),
            cert: cert.clone(),
            key: key.clone(),
            ca: ca.clone(),
            routes: vec![Route {
                subset: "v1".into(),
                weight: 100,
                upstream,
                tls: None,
            }],
            concurrency: 1,
            access_log: mode,
            access_log_path: (mode != AccessLogMode::Off).then(|| dir.path().join("access.log")),
            upstream_timeout_ms: 5000,
        };
        let sc = Sidecar::new(&cfg).unwrap();
        let peer: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        c.bench_function(
            &format!("sidecar: one request, access log {}", mode.as_str()),
            |b| {
                b.iter(|| {
                    let req = http::Request::builder()
                        .uri("/api")
                        .header("host", "checkout")
                        .body(Empty::<Bytes>::new())
                        .unwrap();
                    black_box(rt.block_on(sc.handle(req, peer)).status())
                })
            },
        );
    }
}

criterion_group!(benches, handle);
criterion_main!(benches);
