//! Fault injection: servers that misbehave on purpose, each on loopback, each run bounded
//! (requests and time). For every fault the run finishes within its planned time plus its
//! timeout (plus the 1 s the engine gives a lagging target), and every failure is counted
//! in its class. Peak memory under the heaviest faults (1 MB headers, a 100 MB body) is
//! checked on the built binary (`cli::faults_keep_memory_bounded`).

use crate::util::{certs, run_text, Certs};
use meshbench_schema::CellResult;
use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A raw TCP server: every accepted connection is handed to `serve` on its own task. The
/// accept loop ends when the returned guard is dropped.
pub async fn raw_server<F, Fut>(serve: F) -> (SocketAddr, tokio::task::JoinHandle<()>)
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let serve = std::sync::Arc::new(serve);
    let task = tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let serve = serve.clone();
            tokio::spawn(async move { serve(s).await });
        }
    });
    (addr, task)
}

/// Read one request head (no body: the scenarios send GET); false at EOF.
async fn read_head(s: &mut TcpStream) -> bool {
    let mut buf = Vec::new();
    let mut b = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut b).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&b[..n]),
        }
        if buf.len() > 64 << 10 {
            return false;
        }
    }
    true
}

const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";

fn scenario(addr: SocketAddr, timeout: &str, load: &str) -> String {
    format!("[target]\nurl = \"http://{addr}/\"\ntimeout = \"{timeout}\"\nprotocol = \"http1\"\n[load]\n{load}\n")
}

/// Run and check the wall time against planned + timeout + 1 s (+ slack for the host).
async fn bounded_run(text: &str, planned: Duration, timeout: Duration) -> CellResult {
    let dir = tempfile::tempdir().unwrap();
    let t0 = Instant::now();
    let run = run_text(dir.path(), text).await;
    let wall = t0.elapsed();
    let limit = planned + timeout + Duration::from_secs(1) + Duration::from_secs(3);
    assert!(wall < limit, "took {wall:?}, limit {limit:?}");
    run.result.cells[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_never_answers_is_request_timeouts() {
    let (addr, _t) = raw_server(|mut s| async move {
        read_head(&mut s).await;
        tokio::time::sleep(Duration::from_secs(30)).await;
    })
    .await;
    let c = bounded_run(
        &scenario(
            addr,
            "300ms",
            "rate = 20\nconnections = 2\nduration = \"1s\"",
        ),
        Duration::from_secs(1),
        Duration::from_millis(300),
    )
    .await;
    assert!(c.errors.request_timeout > 0, "{:?}", c.errors);
    assert_eq!(c.errors.total(), c.errors.request_timeout, "{:?}", c.errors);
    assert_eq!(c.ok, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_truncated_and_oversized_heads_are_classified() {
    // (what the server sends, the class every request must end in)
    let cases: [(&'static [u8], &str); 3] = [
        (b"NOT HTTP AT ALL\r\n\r\n", "other"),
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nabc",
            "connection_reset",
        ),
        (b"", "connection_reset"),
    ];
    for (reply, class) in cases {
        let (addr, _t) = raw_server(move |mut s| async move {
            if read_head(&mut s).await {
                let _ = s.write_all(reply).await;
            }
            // then close
        })
        .await;
        let c = bounded_run(
            &scenario(addr, "1s", "rate = 50\nconnections = 2\nrequests = 20"),
            Duration::from_millis(400),
            Duration::from_secs(1),
        )
        .await;
        let by: Vec<(&str, u64)> = c
            .errors
            .by_class()
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .collect();
        assert_eq!(by, [(class, 20)], "{reply:?}");
    }
    // a 1 MB header line: hyper refuses the head as too large
    let (addr, _t) = raw_server(|mut s| async move {
        if read_head(&mut s).await {
            let mut head = b"HTTP/1.1 200 OK\r\nx-big: ".to_vec();
            head.extend(std::iter::repeat_n(b'a', 1 << 20));
            head.extend_from_slice(b"\r\ncontent-length: 0\r\n\r\n");
            let _ = s.write_all(&head).await;
        }
    })
    .await;
    let c = bounded_run(
        &scenario(addr, "2s", "rate = 20\nconnections = 2\nrequests = 6"),
        Duration::from_millis(300),
        Duration::from_secs(2),
    )
    .await;
    assert_eq!(c.ok, 0);
    assert_eq!(c.errors.total(), 6, "{:?}", c.errors);
    assert_eq!(
        c.errors.other + c.errors.connection_reset,
        6,
        "{:?}",
        c.errors
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resets_after_n_requests_and_close_after_one_response() {
    // RST (SO_LINGER 0) after every third response on a connection
    let (addr, _t) = raw_server(|mut s| async move {
        for _ in 0..3 {
            if !read_head(&mut s).await || s.write_all(OK).await.is_err() {
                return;
            }
        }
        if read_head(&mut s).await {
            // linger 0: the close is a RST (and does not block: nothing is left to send)
            #[allow(deprecated)]
            let _ = s.set_linger(Some(Duration::ZERO));
        }
    })
    .await;
    let c = bounded_run(
        &scenario(addr, "1s", "rate = 100\nconnections = 2\nrequests = 80"),
        Duration::from_millis(800),
        Duration::from_secs(1),
    )
    .await;
    assert!(c.ok >= 40, "{} ok, {:?}", c.ok, c.errors);
    assert!(c.errors.connection_reset > 0, "{:?}", c.errors);
    assert_eq!(
        c.errors.total(),
        c.errors.connection_reset,
        "{:?}",
        c.errors
    );
    assert_eq!(c.requests, 80);
    // one response per connection, announced with `connection: close`: no error at all
    let (addr, _t) = raw_server(|mut s| async move {
        if read_head(&mut s).await {
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok")
                .await;
        }
    })
    .await;
    let c = bounded_run(
        &scenario(addr, "1s", "rate = 50\nconnections = 2\nrequests = 40"),
        Duration::from_millis(800),
        Duration::from_secs(1),
    )
    .await;
    assert_eq!(c.ok, 40, "{:?}", c.errors);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_killed_mid_run_and_restarted() {
    let (addr, srv) = app::spawn(app::AppConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let text = scenario(
        addr,
        "500ms",
        "rate = 100\nconnections = 2\nduration = \"2s\"",
    );
    let restart = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(600)).await;
        srv.shutdown().await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        app::spawn(app::AppConfig {
            listen: addr,
            ..Default::default()
        })
        .await
        .unwrap()
    });
    let t0 = Instant::now();
    let run = run_text(dir.path(), &text).await;
    assert!(t0.elapsed() < Duration::from_secs(7), "{:?}", t0.elapsed());
    let _again = restart.await.unwrap();
    let c = &run.result.cells[0];
    assert!(c.errors.connect_refused > 0, "{:?}", c.errors);
    assert!(c.ok > 60, "{} ok", c.ok);
    // while it was down: refused connects (and requests cut off by the shutdown)
    assert_eq!(
        c.errors.total(),
        c.errors.connect_refused + c.errors.connection_reset,
        "{:?}",
        c.errors
    );
}

fn tls_scenario(addr: SocketAddr, c: &Certs, extra: &str) -> String {
    format!(
        "[target]\nurl = \"https://{addr}/\"\ntimeout = \"1s\"\n[target.tls]\nca = {:?}\n{extra}\n[load]\nrate = 50\nconnections = 2\nrequests = 20\n",
        c.p("ca.pem")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_certificate_and_a_wrong_hostname_are_tls_errors() {
    let c = certs();
    for (cert, key, extra) in [
        ("expired.pem", "expired.key", ""),
        (
            "server.pem",
            "server.key",
            "server_name = \"other.example\"",
        ),
    ] {
        let (addr, _srv) = app::spawn(app::AppConfig {
            tls: Some(app::AppTls {
                cert: c.path(cert),
                key: c.path(key),
                client_ca: None,
            }),
            ..Default::default()
        })
        .await
        .unwrap();
        let cell = bounded_run(
            &tls_scenario(addr, &c, extra),
            Duration::from_millis(400),
            Duration::from_secs(1),
        )
        .await;
        assert_eq!(cell.errors.tls, 20, "{cert} {extra}: {:?}", cell.errors);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_goaway_mid_run_is_counted_as_resets_not_other() {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    // an h2c server that answers, and after 150 ms shuts each connection down gracefully
    // (GOAWAY with NO_ERROR): streams after it are refused, new connections work
    let (addr, _t) = raw_server(|s| async move {
        let svc = hyper::service::service_fn(|_req| async {
            Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(
                bytes::Bytes::from_static(b"ok"),
            )))
        });
        let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .serve_connection(TokioIo::new(s), svc);
        tokio::pin!(conn);
        tokio::select! {
            _ = conn.as_mut() => return,
            _ = tokio::time::sleep(Duration::from_millis(150)) => {}
        }
        conn.as_mut().graceful_shutdown();
        let _ = conn.await;
    })
    .await;
    let text = format!(
        "[target]\nurl = \"http://{addr}/\"\ntimeout = \"1s\"\nprotocol = \"http2\"\n[load]\nrate = 200\nconnections = 2\nmax_in_flight = 4\nduration = \"1s\"\n"
    );
    let c = bounded_run(&text, Duration::from_secs(1), Duration::from_secs(1)).await;
    assert!(c.ok > 100, "{} ok, {:?}", c.ok, c.errors);
    assert_eq!(c.errors.other, 0, "{:?}", c.errors);
    assert_eq!(
        c.errors.total(),
        c.errors.connection_reset + c.errors.connect_refused,
        "{:?}",
        c.errors
    );
}
