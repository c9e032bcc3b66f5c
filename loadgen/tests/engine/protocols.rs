use crate::util::{certs, run_text};
use app::{spawn, AppConfig as ServeConfig, AppTls as ServeTls};

fn plain() -> ServeConfig {
    ServeConfig {
        headers: vec![("x-version".into(), "v2".into())],
        body_bytes: 1024,
        ..Default::default()
    }
}

fn scenario(url: &str, extra_target: &str, load: &str) -> String {
    format!(
        "[target]\nurl = {url:?}\nsubset_header = \"x-version\"\ntimeout = \"2s\"\n{extra_target}\n[load]\n{load}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_plain_keep_alive() {
    let (addr, _srv) = spawn(plain()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let run = run_text(
        dir.path(),
        &scenario(
            &format!("http://{addr}/x"),
            "",
            "rate = 300\nconnections = 3\nrequests = 60",
        ),
    )
    .await;
    let c = &run.result.cells[0];
    assert_eq!((c.protocol.as_str(), c.ok, c.requests), ("http1", 60, 60));
    assert_eq!(c.status_classes["2xx"], 60);
    assert_eq!(c.subsets[0].name, "v2");
    assert_eq!(c.latency.corrected.count, 60);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_prior_knowledge_on_plain() {
    let (addr, _srv) = spawn(plain()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let run = run_text(
        dir.path(),
        &scenario(
            &format!("http://{addr}/"),
            "protocol = \"http2\"",
            "rate = 300\nconnections = 1\nmax_in_flight = 8\nrequests = 60",
        ),
    )
    .await;
    let c = &run.result.cells[0];
    assert_eq!(
        (c.protocol.as_str(), c.ok),
        ("http2", 60),
        "{:?}",
        run.result.warnings
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_and_http2_over_tls() {
    let certs = certs();
    let (addr, _srv) = spawn(ServeConfig {
        tls: Some(ServeTls {
            cert: certs.path("server.pem"),
            key: certs.path("server.key"),
            client_ca: None,
        }),
        ..plain()
    })
    .await
    .unwrap();
    for (proto, want) in [("http1", "http1"), ("http2", "http2"), ("auto", "http2")] {
        let dir = tempfile::tempdir().unwrap();
        let tls = format!(
            "protocol = {proto:?}\n[target.tls]\nca = {:?}",
            certs.p("ca.pem")
        );
        let run = run_text(
            dir.path(),
            &scenario(
                &format!("https://localhost:{}/", addr.port()),
                &tls,
                "rate = 300\nrequests = 30",
            ),
        )
        .await;
        let c = &run.result.cells[0];
        assert_eq!(
            (c.protocol.as_str(), c.ok),
            (want, 30),
            "{proto}: {:?}",
            run.result.warnings
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_loop_counts_requests() {
    let (addr, _srv) = spawn(plain()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let run = run_text(
        dir.path(),
        &scenario(
            &format!("http://{addr}/"),
            "",
            "mode = \"closed\"\nconnections = 2\nrequests = 200\nthink_time = \"1ms\"",
        ),
    )
    .await;
    let c = &run.result.cells[0];
    assert_eq!(c.mode, meshbench_schema::LoadMode::Closed);
    assert_eq!((c.requests, c.ok), (200, 200));
    // Closed loop has no intended schedule: both views are the same measurement.
    assert_eq!(c.latency.corrected.count, c.latency.uncorrected.count);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_errors_are_counted_by_class() {
    let (addr, _srv) = spawn(plain()).await.unwrap();
    for (q, class) in [("503", "5xx"), ("404", "4xx")] {
        let dir = tempfile::tempdir().unwrap();
        let run = run_text(
            dir.path(),
            &scenario(
                &format!("http://{addr}/?status={q}"),
                "",
                "rate = 300\nrequests = 30",
            ),
        )
        .await;
        let c = &run.result.cells[0];
        assert_eq!(c.status_classes[class], 30);
        assert_eq!(c.ok, 0);
        let n = if class == "5xx" {
            c.errors.http_5xx
        } else {
            c.errors.http_4xx
        };
        assert_eq!(n, 30);
        assert_eq!(c.errors.total(), 30);
        // Error responses have their own latency; the success histogram stays empty.
        assert_eq!(c.status_latency[class].corrected.count, 30);
        assert_eq!(c.status_latency[class].uncorrected.count, 30);
        assert!(!c.status_latency.contains_key("2xx"));
        assert_eq!(c.latency.corrected.count, 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connections_are_counted_and_do_not_stop_the_run() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let dir = tempfile::tempdir().unwrap();
    let run = run_text(
        dir.path(),
        &scenario(
            &format!("http://127.0.0.1:{port}/"),
            "",
            "rate = 200\nrequests = 20",
        ),
    )
    .await;
    let c = &run.result.cells[0];
    assert_eq!(c.errors.connect_refused, 20, "{:?}", c.errors);
    assert_eq!(c.requests, 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_responses_are_counted_as_request_timeouts() {
    // Every response takes 400 ms; the per-request timeout is 100 ms.
    let (addr, _srv) = spawn(ServeConfig {
        service_time: meshbench_schema::units::Dur(std::time::Duration::from_millis(400)),
        ..plain()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[target]\nurl = \"http://{addr}/\"\ntimeout = \"100ms\"\n[load]\nrate = 50\nconnections = 2\nrequests = 10\n"
    );
    let run = run_text(dir.path(), &text).await;
    let c = &run.result.cells[0];
    assert_eq!(c.ok, 0, "{c:?}");
    assert_eq!(c.errors.request_timeout, 10, "{:?}", c.errors);
    assert_eq!(c.errors.total(), 10, "{:?}", c.errors);
}
