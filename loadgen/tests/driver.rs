//! The settings matrix on a real mesh, through `[driver]`:
//!
//! - the istio driver's whole sequence (originals recorded -> apply -> rollout wait ->
//!   verify -> measure -> access-log check -> restore), a rollout that times out, a verify
//!   mismatch and an interrupt mid-cell, against a stand-in kubectl on PATH that answers as
//!   an API server with Istio's injector would and logs every call
//!   (`tests/fixtures/kubectl-standin`). This is the part NOT exercised against a real API
//!   server here: no cluster can be reached from this machine;
//! - the istio driver's patches applied by the real kubectl to the shipped manifests
//!   (`kubectl patch --local`), and every shipped and generated manifest validated against
//!   the Kubernetes schemas with `kubernetes-validate` (Istio's own resources against the
//!   fields of Istio's API reference);
//! - the command driver end to end with Debian's nginx as an mTLS sidecar inside a cgroup
//!   with the cell's CFS quota (root and nginx needed; skipped with the reason otherwise),
//!   and apply commands that fail or time out.
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_loadgen"))
}

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `loadgen serve` on a free port; killed on drop.
struct App(std::process::Child, String);

impl App {
    fn start(header: &str) -> App {
        let mut c = bin()
            .args(["serve", "--listen", "127.0.0.1:0", "--header", header])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(c.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap()
            .to_string();
        App(c, addr)
    }
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Standin {
    dir: tempfile::TempDir,
}

impl Standin {
    fn new() -> Standin {
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(
            fixtures().join("standin-state.json"),
            dir.path().join("state.json"),
        )
        .unwrap();
        Standin { dir }
    }
    fn env(&self, c: &mut Command) {
        c.env("STANDIN_STATE", self.dir.path().join("state.json"))
            .env("STANDIN_LOG", self.dir.path().join("calls.log"));
    }
    /// Every call, as the argv after the --kubeconfig/--context flags.
    fn calls(&self) -> Vec<Vec<String>> {
        let text = std::fs::read_to_string(self.dir.path().join("calls.log")).unwrap_or_default();
        text.lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                v["argv"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|a| a.as_str().unwrap().to_string())
                    .collect()
            })
            .collect()
    }
    /// `loadgen run SCENARIO --out OUT --no-report` with this stand-in as its kubectl.
    fn run(&self, scenario: &Path, out: &Path) -> Command {
        let mut c = bin();
        c.arg("run")
            .arg(scenario)
            .arg("--out")
            .arg(out)
            .arg("--no-report");
        self.env(&mut c);
        c
    }

    fn state(&self) -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(self.dir.path().join("state.json")).unwrap())
            .unwrap()
    }
}

fn istio_scenario(dir: &Path, url: &str, matrix: &str, duration: &str) -> PathBuf {
    let text = format!(
        r#"name = "istio-standin"
[target]
url = "{url}"
subset_header = "x-version"
[load]
rate = 40
duration = "{duration}"
warmup = "0s"
connections = 2
[matrix]
{matrix}
[driver]
kind = "istio"
namespace = "shop"
workloads = ["deployment/checkout-v1", "deployment/checkout-v2"]
kubectl = "{kubectl}"
context = "staging"
rollout_timeout = "20s"
settle = "0s"
"#,
        kubectl = fixtures().join("kubectl-standin").display()
    );
    let p = dir.join("s.toml");
    std::fs::write(&p, text).unwrap();
    p
}

fn verbs(calls: &[Vec<String>]) -> Vec<String> {
    calls
        .iter()
        .map(|a| {
            let a: Vec<&str> = a
                .iter()
                .map(String::as_str)
                .skip_while(|x| x.starts_with("--"))
                .collect();
            // --context staging comes first
            let a: Vec<&str> = if a.first() == Some(&"staging") {
                a[1..].to_vec()
            } else {
                a
            };
            match a.as_slice() {
                ["get", "pods", ..] => "get-pods".into(),
                ["get", w, ..] => format!("get {w}"),
                ["patch", w, .., p] => format!("patch {w} {p}"),
                ["rollout", "status", w, ..] => format!("rollout {w}"),
                ["apply", ..] => "apply".into(),
                ["delete", ..] => "delete".into(),
                ["logs", _, _, pod, ..] => format!("logs {pod}"),
                other => other.join(" "),
            }
        })
        .collect()
}

#[test]
fn istio_driver_applies_verifies_measures_and_restores() {
    let st = Standin::new();
    let app = App::start("x-version: v1");
    let dir = tempfile::tempdir().unwrap();
    let sc = istio_scenario(
        dir.path(),
        &format!("http://{}/", app.1),
        "sidecar_cpu = [\"100m\", \"none\"]\naccess_log = [\"off\", \"on\"]",
        "1s",
    );
    let out = dir.path().join("run");
    let mut c = st.run(&sc, &out);
    let o = c.output().unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let run = meshbench_schema::read_run(&out).unwrap();
    assert_eq!(run.cells.len(), 4);
    for c in &run.cells {
        assert!(c.failed.is_none(), "{}: {:?}", c.id, c.failed);
        assert!(c.requests >= 40, "{}: measured", c.id);
        let ev = c.driver.as_ref().unwrap();
        assert_eq!(ev.pods.len(), 3, "{}: 2 pods of v1 + 1 of v2", c.id);
        let limits: Vec<&str> = ev
            .pods
            .iter()
            .map(|p| p.proxy_cpu_limit.as_deref().unwrap())
            .collect();
        let want = if c.id.starts_with("cpu=100m") {
            "100m"
        } else {
            "2"
        };
        assert!(limits.iter().all(|l| *l == want), "{}: {limits:?}", c.id);
        let lines: u64 = ev.pods.iter().map(|p| p.access_log_lines.unwrap()).sum();
        assert_eq!(
            lines > 0,
            c.id.ends_with("log=on"),
            "{}: {lines} access-log lines",
            c.id
        );
        assert_eq!(
            ev.pods[0].proxy_image.as_deref(),
            Some("docker.io/istio/proxyv2:1.24.2")
        );
        let check = c.checks.iter().find(|k| k.name == "driver").unwrap();
        assert_eq!(
            check.status,
            meshbench_schema::CheckStatus::Passed,
            "{}",
            check.summary
        );
        assert_eq!(c.settings.cpu_limit_applied, c.id.starts_with("cpu=100m"));
    }
    let d = run.driver.as_ref().unwrap();
    assert_eq!(d.driver, "istio");
    assert_eq!(d.context.as_deref(), Some("staging"));
    assert_eq!(d.kubernetes_server_version.as_deref(), Some("v1.31.2"));
    assert_eq!(d.originals[0]["cpu_limit"], "2000m");
    assert!(d.originals[1]["cpu_limit"].is_null());
    assert!(d.restore_error.is_none(), "{:?}", d.restore_error);
    // the order: facts and originals, then per cell apply -> rollout -> verify -> measure ->
    // logs; at the end the originals back and the Telemetry resource removed
    let v = verbs(&st.calls());
    let limit = |m: &str| {
        format!(
            r#"{{"spec":{{"template":{{"metadata":{{"annotations":{{"sidecar.istio.io/proxyCPULimit":{m}}}}}}}}}}}"#
        )
    };
    let want_first = [
        "version -o json".to_string(),
        "get deployment/checkout-v1".into(),
        "get deployment/checkout-v2".into(),
        format!("patch deployment/checkout-v1 {}", limit("\"100m\"")),
        format!("patch deployment/checkout-v2 {}", limit("\"100m\"")),
        "apply".into(),
        "rollout deployment/checkout-v1".into(),
        "rollout deployment/checkout-v2".into(),
        "get-pods".into(),
        "get-pods".into(),
        "logs checkout-v1-2-0".into(),
    ];
    assert_eq!(&v[..want_first.len()], &want_first, "{v:#?}");
    let tail = &v[v.len() - 5..];
    assert_eq!(
        tail,
        [
            format!("patch deployment/checkout-v1 {}", limit("\"2000m\"")),
            format!("patch deployment/checkout-v2 {}", limit("null")),
            "rollout deployment/checkout-v1".into(),
            "rollout deployment/checkout-v2".into(),
            "delete".into(),
        ],
        "{v:#?}"
    );
    let state = st.state();
    assert_eq!(
        state["workloads"]["deployment/checkout-v1"]["spec"]["template"]["metadata"]["annotations"]
            ["sidecar.istio.io/proxyCPULimit"],
        "2000m"
    );
    assert!(
        state["workloads"]["deployment/checkout-v2"]["spec"]["template"]["metadata"]["annotations"]
            .get("sidecar.istio.io/proxyCPULimit")
            .is_none()
    );
    assert!(state["telemetry"].is_null());
    // every call's output is kept
    assert!(std::fs::read_dir(out.join("driver")).unwrap().count() >= v.len());
}

#[test]
fn a_rollout_timeout_or_a_verify_mismatch_fails_the_cell_and_still_restores() {
    for (switch, value, want) in [
        ("STANDIN_ROLLOUT", "fail", "the rollout of deployment/checkout-v1 did not complete within 20s"),
        ("STANDIN_IGNORE_PATCH", "1", "pod checkout-v1-2-0 of deployment/checkout-v1: istio-proxy resources.limits.cpu is 2000m, the cell wants 100m"),
    ] {
        let st = Standin::new();
        let app = App::start("x-version: v1");
        let dir = tempfile::tempdir().unwrap();
        let sc = istio_scenario(
            dir.path(),
            &format!("http://{}/", app.1),
            "sidecar_cpu = [\"100m\", \"none\"]\naccess_log = [\"off\"]",
            "1s",
        );
        let out = dir.path().join("run");
        let mut c = bin();
        c.args(["run", sc.to_str().unwrap(), "--out", out.to_str().unwrap(), "--no-report"])
            .env(switch, value);
        st.env(&mut c);
        let o = c.output().unwrap();
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{switch}: {stderr}");
        let run = meshbench_schema::read_run(&out).unwrap();
        assert!(run.finished_at.is_some(), "everything else is written");
        let tight = &run.cells[0];
        let reason = tight.failed.as_deref().unwrap_or_else(|| panic!("{switch}: {tight:?}"));
        assert!(reason.contains(want), "{switch}: {reason}");
        assert_eq!(tight.requests, 0, "a failed cell is not measured");
        let check = tight.checks.iter().find(|k| k.name == "driver").unwrap();
        assert_eq!(check.status, meshbench_schema::CheckStatus::Failed);
        assert!(stderr.contains("not measured"), "{stderr}");
        if switch == "STANDIN_IGNORE_PATCH" {
            // the unlimited cell has nothing to mismatch: measured
            assert!(run.cells[1].failed.is_none() && run.cells[1].requests > 0);
        }
        let v = verbs(&st.calls());
        assert!(v.iter().any(|x| x.contains("\"2000m\"")), "{switch}: restored: {v:#?}");
        assert!(v.last().unwrap() == "delete", "{v:#?}");
    }
}

#[test]
fn an_interrupt_mid_cell_restores() {
    let st = Standin::new();
    let app = App::start("x-version: v1");
    let dir = tempfile::tempdir().unwrap();
    let sc = istio_scenario(
        dir.path(),
        &format!("http://{}/", app.1),
        "sidecar_cpu = [\"100m\", \"none\"]",
        "30s",
    );
    let out = dir.path().join("run");
    let mut c = st.run(&sc, &out);
    c.stdout(Stdio::null()).stderr(Stdio::null());
    let mut child = c.spawn().unwrap();
    // wait until the first cell is verified and measuring
    let t0 = Instant::now();
    while !verbs(&st.calls()).iter().any(|v| v == "get-pods") {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the driver never verified"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(1500));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let t1 = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(t1.elapsed() < Duration::from_secs(30), "did not stop");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(130));
    let run = meshbench_schema::read_run(&out).unwrap();
    assert!(run.interrupted);
    assert_eq!(run.cells.len(), 1, "the second cell never started");
    let d = run.driver.unwrap();
    assert!(d.restore_error.is_none() && !d.restored.is_empty(), "{d:?}");
    let state = st.state();
    assert_eq!(
        state["workloads"]["deployment/checkout-v1"]["spec"]["template"]["metadata"]["annotations"]
            ["sidecar.istio.io/proxyCPULimit"],
        "2000m"
    );
    assert!(state["telemetry"].is_null());
}

#[test]
fn dry_run_prints_every_change_and_makes_none() {
    let st = Standin::new();
    let dir = tempfile::tempdir().unwrap();
    let sc = istio_scenario(
        dir.path(),
        "http://127.0.0.1:9/",
        "sidecar_cpu = [\"250m\"]\naccess_log = [\"on\"]",
        "1s",
    );
    let out = dir.path().join("run");
    let mut c = bin();
    c.args([
        "run",
        sc.to_str().unwrap(),
        "--dry-run",
        "--out",
        out.to_str().unwrap(),
    ]);
    st.env(&mut c);
    let o = c.output().unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains(r#"patch deployment/checkout-v1 -n shop --type merge -p '{"spec":{"template":{"metadata":{"annotations":{"sidecar.istio.io/proxyCPULimit":"250m"}}}}}'"#), "{stdout}");
    assert!(stdout.contains(r#""disabled":false"#), "{stdout}");
    assert!(stdout.contains("--context staging"), "{stdout}");
    assert!(stdout.contains("restore what was changed"), "{stdout}");
    assert!(
        st.calls().is_empty(),
        "kubectl was called: {:?}",
        st.calls()
    );
    assert!(!out.exists(), "nothing written");
}

/// The JSON documents kubectl prints for `patch --local -o json` of a multi-document file.
fn kubectl_local(file: &Path, patch: &str) -> Option<Vec<serde_json::Value>> {
    let o = Command::new("kubectl")
        .args([
            "patch",
            "--local",
            "-f",
            file.to_str().unwrap(),
            "--type",
            "merge",
            "-p",
            patch,
            "-o",
            "json",
        ])
        .output()
        .ok()?;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    Some(
        serde_json::Deserializer::from_slice(&o.stdout)
            .into_iter::<serde_json::Value>()
            .map(Result::unwrap)
            .collect(),
    )
}

#[test]
fn the_patches_do_to_the_shipped_deployments_what_they_say_and_nothing_else() {
    let file = repo().join("examples/istio/checkout.yaml");
    let Some(before) = kubectl_local(&file, "{}") else {
        skip("kubectl is not installed");
        return;
    };
    for (limit, request) in [
        (Some("100m"), Some(Some("50m"))),
        (None, None),
        (Some("2"), Some(None)),
    ] {
        let patch = loadgen::driver::istio::annotation_patch(limit, request).to_string();
        let after = kubectl_local(&file, &patch).unwrap();
        assert_eq!(after.len(), before.len());
        let mut deployments = 0;
        for (b, a) in before.iter().zip(&after) {
            if b["kind"] != "Deployment" {
                continue;
            }
            deployments += 1;
            let ann = &a["spec"]["template"]["metadata"]["annotations"];
            assert_eq!(
                ann.get("sidecar.istio.io/proxyCPULimit")
                    .and_then(|v| v.as_str()),
                limit,
                "{patch}"
            );
            let req = ann
                .get("sidecar.istio.io/proxyCPU")
                .and_then(|v| v.as_str());
            match request {
                Some(r) => assert_eq!(req, r, "{patch}"),
                None => assert_eq!(req, Some("100m"), "untouched: {patch}"),
            }
            // everything but those two annotations as it was
            let strip = |v: &serde_json::Value| {
                let mut v = v.clone();
                if let Some(a) = v["spec"]["template"]["metadata"]["annotations"].as_object_mut() {
                    a.remove("sidecar.istio.io/proxyCPULimit");
                    a.remove("sidecar.istio.io/proxyCPU");
                }
                v
            };
            assert_eq!(strip(a), strip(b), "{patch}");
        }
        assert_eq!(deployments, 2);
    }
}

/// Fields Istio's API reference gives each resource we ship or generate (istio.io/latest
/// /docs/reference/config/: networking DestinationRule / VirtualService, security
/// PeerAuthentication, telemetry Telemetry); `*` takes anything below.
fn istio_fields(kind: &str) -> &'static [&'static str] {
    match kind {
        "DestinationRule" => &[
            "host",
            "trafficPolicy*",
            "subsets",
            "subsets.name",
            "subsets.labels*",
            "subsets.trafficPolicy*",
            "exportTo",
            "workloadSelector*",
        ],
        "VirtualService" => &[
            "hosts",
            "gateways",
            "exportTo",
            "tcp*",
            "tls*",
            "http",
            "http.name",
            "http.match*",
            "http.route",
            "http.route.destination",
            "http.route.destination.host",
            "http.route.destination.subset",
            "http.route.destination.port*",
            "http.route.weight",
            "http.route.headers",
            "http.route.headers.request*",
            "http.route.headers.response",
            "http.route.headers.response.set*",
            "http.route.headers.response.add*",
            "http.route.headers.response.remove",
            "http.timeout",
            "http.retries*",
            "http.fault*",
            "http.mirror*",
            "http.headers*",
        ],
        "PeerAuthentication" => &["selector*", "mtls", "mtls.mode", "portLevelMtls*"],
        "Telemetry" => &[
            "selector*",
            "targetRef*",
            "targetRefs*",
            "tracing*",
            "metrics*",
            "accessLogging",
            "accessLogging.providers",
            "accessLogging.providers.name",
            "accessLogging.disabled",
            "accessLogging.filter*",
            "accessLogging.match*",
        ],
        _ => &[],
    }
}

fn check_fields(kind: &str, prefix: &str, v: &serde_json::Value, errors: &mut Vec<String>) {
    let allowed = istio_fields(kind);
    let mut visit = |key: String, val: &serde_json::Value| {
        if allowed.iter().any(|a| {
            a.strip_suffix('*')
                .is_some_and(|a| key == a || key.starts_with(&format!("{a}.")))
        }) {
            return;
        }
        if !allowed.contains(&key.as_str()) {
            errors.push(format!("{kind}: spec.{key} is not a field of Istio's API"));
            return;
        }
        check_fields(kind, &key, val, errors);
    };
    match v {
        serde_json::Value::Object(m) => {
            for (k, val) in m {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                visit(key, val);
            }
        }
        serde_json::Value::Array(a) => {
            for x in a {
                if x.is_object() {
                    check_fields(kind, prefix, x, errors);
                }
            }
        }
        _ => {}
    }
}

#[test]
fn shipped_and_generated_manifests_validate() {
    let kv = Command::new("kubernetes-validate")
        .arg("--version")
        .output();
    if kv.map(|o| !o.status.success()).unwrap_or(true) {
        skip(
            "kubernetes-validate is not installed (pip install kubernetes-validate; .ci/run does)",
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join("examples/istio"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    for on in [true, false] {
        let p = dir.path().join(format!("telemetry-{on}.json"));
        std::fs::write(
            &p,
            loadgen::driver::istio::telemetry_manifest("shop", on).to_string(),
        )
        .unwrap();
        files.push(p);
    }
    files.sort();
    assert!(files.len() >= 6, "{files:?}");
    let mut istio_docs = 0;
    for f in &files {
        let o = Command::new("kubernetes-validate")
            .args(["--strict", f.to_str().unwrap()])
            .output()
            .unwrap();
        let text =
            String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
        assert!(
            o.status.success() && !text.contains("ERROR"),
            "{}: {text}",
            f.display()
        );
        // the Istio resources kubernetes-validate has no schema for, against the API reference
        if let Some(docs) = kubectl_local(f, "{}") {
            for d in docs {
                let kind = d["kind"].as_str().unwrap_or_default().to_string();
                if istio_fields(&kind).is_empty() {
                    continue;
                }
                istio_docs += 1;
                let api = d["apiVersion"].as_str().unwrap();
                assert!(
                    [
                        "networking.istio.io/v1",
                        "security.istio.io/v1",
                        "telemetry.istio.io/v1"
                    ]
                    .contains(&api),
                    "{kind}: {api}"
                );
                let mut errors = Vec::new();
                check_fields(&kind, "", &d["spec"], &mut errors);
                assert!(errors.is_empty(), "{}: {errors:?}", f.display());
                if kind == "PeerAuthentication" {
                    assert_eq!(d["spec"]["mtls"]["mode"], "STRICT");
                }
                if kind == "VirtualService" {
                    let w: u64 = d["spec"]["http"][0]["route"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|r| r["weight"].as_u64().unwrap())
                        .sum();
                    assert_eq!(w, 100);
                }
            }
        }
    }
    assert_eq!(
        istio_docs, 5,
        "DestinationRule, VirtualService, PeerAuthentication, 2 Telemetry"
    );
}

fn command_scenario(dir: &Path, url: &str, matrix: &str, driver: &str, extra: &str) -> PathBuf {
    let text = format!(
        r#"name = "command-driver"
[target]
url = "{url}"
subset_header = "x-version"
timeout = "5s"
protocol = "http1"
{extra}
[load]
rate = 200
duration = "2s"
warmup = "1s"
connections = 4
[matrix]
{matrix}
[driver]
kind = "command"
{driver}
"#
    );
    let p = dir.join("s.toml");
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn a_command_that_fails_or_hangs_fails_its_cell_and_the_run_goes_on() {
    let app = App::start("x-version: v1");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("apply.sh"),
        r#"case "$MESHBENCH_SIDECAR_CPU" in
  100m) echo "quota rejected by the test" >&2; exit 1 ;;
  200m) sleep 30 ;;
esac
echo "$MESHBENCH_CELL $MESHBENCH_SIDECAR_CPU_MILLIS $MESHBENCH_ACCESS_LOG" >> applied.txt
"#,
    )
    .unwrap();
    let sc = command_scenario(
        dir.path(),
        &format!("http://{}/", app.1),
        "sidecar_cpu = [\"100m\", \"200m\", \"none\"]",
        "apply = \"sh apply.sh\"\nverify = \"echo verified $MESHBENCH_CELL\"\nrestore = \"echo restored > restored.txt\"\ntimeout = \"1s\"",
        "",
    );
    let out = dir.path().join("run");
    let t0 = Instant::now();
    let o = bin()
        .args([
            "run",
            sc.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--no-report",
        ])
        .output()
        .unwrap();
    assert!(
        t0.elapsed() < Duration::from_secs(25),
        "the hung apply was not killed"
    );
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let run = meshbench_schema::read_run(&out).unwrap();
    assert!(run.finished_at.is_some());
    let ids: Vec<&str> = run.cells.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(
        ids,
        ["cpu=100m,log=off", "cpu=200m,log=off", "cpu=none,log=off"]
    );
    let f0 = run.cells[0].failed.as_deref().unwrap();
    assert!(
        f0.contains("exited with status 1: quota rejected by the test"),
        "{f0}"
    );
    let f1 = run.cells[1].failed.as_deref().unwrap();
    assert!(
        f1.contains("did not finish within 1s and was killed"),
        "{f1}"
    );
    let ok = &run.cells[2];
    assert!(ok.failed.is_none() && ok.requests >= 400, "{ok:?}");
    assert_eq!(
        ok.driver.as_ref().unwrap().verified.as_deref(),
        Some("verified cpu=none,log=off")
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("applied.txt")).unwrap(),
        "cpu=none,log=off  off\n",
        "the environment the command saw"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("restored.txt")).unwrap(),
        "restored\n"
    );
    // the killed sleep is gone with its process group
    let sleeping = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .any(|c| String::from_utf8_lossy(&c).replace('\0', " ").trim() == "sleep 30");
    assert!(!sleeping, "the timed-out command's children were left");
}

/// A test that cannot run here says why; under CI (which installs every tool it needs
/// and runs as root) that is a failure.
fn skip(why: &str) {
    assert!(std::env::var_os("CI").is_none(), "CI is set, but {why}");
    eprintln!("SKIPPED: {why} (set CI to make this fail)");
}

fn cgroup_root() -> Option<(PathBuf, bool)> {
    if !nix::unistd::geteuid().is_root() {
        skip("the nginx sidecar test needs root (cgroups)");
        return None;
    }
    if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        return Some((PathBuf::from("/sys/fs/cgroup"), true));
    }
    if Path::new("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").exists() {
        return Some((PathBuf::from("/sys/fs/cgroup/cpu"), false));
    }
    skip("no cgroup cpu controller found");
    None
}

#[test]
fn command_driver_with_nginx_as_the_sidecar_under_a_real_quota() {
    let nginx = PathBuf::from("/usr/sbin/nginx");
    if !nginx.exists() {
        skip("nginx (Debian nginx-light) is not installed");
        return;
    }
    let Some((root, v2)) = cgroup_root() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("tmp")).unwrap();
    let pki = testbed::pki::MeshPki::create(
        &d.join("pki"),
        &testbed::pki::PkiSpec {
            service: "checkout".into(),
            namespace: "default".into(),
            service_account: "checkout".into(),
            client_service_account: "loadgen".into(),
            user_ca: None,
        },
    )
    .unwrap();
    let v1 = App::start("x-version: v1");
    let v2app = App::start("x-version: v2");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cg = root.join(format!("meshbench-cmdtest-{}", std::process::id()));
    std::fs::write(
        d.join("nginx.conf.in"),
        format!(
            r#"worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
  @LOG@
  client_body_temp_path {d}/tmp;
  proxy_temp_path {d}/tmp;
  fastcgi_temp_path {d}/tmp;
  uwsgi_temp_path {d}/tmp;
  scgi_temp_path {d}/tmp;
  upstream apps {{ server {v1} weight=9; server {v2} weight=1; keepalive 16; }}
  server {{
    listen 127.0.0.1:{port} ssl;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    ssl_client_certificate {ca};
    ssl_verify_client on;
    location / {{ proxy_pass http://apps; proxy_http_version 1.1; proxy_set_header Connection ""; }}
  }}
}}
"#,
            d = d.display(),
            v1 = v1.1,
            v2 = v2app.1,
            cert = pki.server_cert.display(),
            key = pki.server_key.display(),
            ca = pki.ca_cert.display(),
        ),
    )
    .unwrap();
    let quota_file = if v2 { "cpu.max" } else { "cpu.cfs_quota_us" };
    std::fs::write(
        d.join("env.sh"),
        format!(
            "CG={cg}\nNGINX={nginx}\nV2={v2}\nQUOTA_FILE={quota_file}\n",
            cg = cg.display(),
            nginx = nginx.display(),
            v2 = if v2 { 1 } else { 0 },
        ),
    )
    .unwrap();
    // apply: stop the previous sidecar, set the cell's CFS quota on the cgroup, start nginx
    // inside it with the cell's access-log setting, wait until it listens
    std::fs::write(
        d.join("apply.sh"),
        r#"set -eu
. ./env.sh
if [ -f nginx.pid ]; then
  pid=$(cat nginx.pid); kill "$pid" 2>/dev/null || true
  while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
  rm -f nginx.pid
fi
mkdir -p "$CG"
if [ -n "$MESHBENCH_SIDECAR_CPU_MILLIS" ]; then q=$((MESHBENCH_SIDECAR_CPU_MILLIS * 100)); else q=-1; fi
if [ "$V2" = 1 ]; then
  [ "$q" = -1 ] && q=max
  echo "$q 100000" > "$CG/cpu.max"
else
  echo 100000 > "$CG/cpu.cfs_period_us"
  echo "$q" > "$CG/cpu.cfs_quota_us"
fi
if [ "$MESHBENCH_ACCESS_LOG" = on ]; then log="access_log $PWD/access-$MESHBENCH_CELL_INDEX.log;"; else log="access_log off;"; fi
sed "s|@LOG@|$log|" nginx.conf.in > nginx.conf
sh -c 'echo $$ > "$1/cgroup.procs"; exec "$2" -c "$3" -p "$4"' _ "$CG" "$NGINX" "$PWD/nginx.conf" "$PWD"
for i in $(seq 100); do [ -s nginx.pid ] && break; sleep 0.05; done
sleep 0.3
awk '$1 == "nr_throttled" {print $2}' "$CG/cpu.stat" > throttled-at-apply
"#,
    )
    .unwrap();
    // verify: the quota read back, and every nginx process inside the cgroup
    std::fs::write(
        d.join("verify.sh"),
        r#"set -eu
. ./env.sh
n=$(wc -l < "$CG/cgroup.procs")
[ "$n" -ge 2 ] || { echo "nginx is not in $CG ($n processes)" >&2; exit 1; }
echo "quota=$(cat "$CG/$QUOTA_FILE" | tr ' ' '/') processes=$n"
"#,
    )
    .unwrap();
    // after: what this cell did to the cgroup (nr_throttled is cumulative, so the delta)
    std::fs::write(
        d.join("after.sh"),
        r#". ./env.sh
t=$(( $(awk '$1 == "nr_throttled" {print $2}' "$CG/cpu.stat") - $(cat throttled-at-apply) ))
f=access-$MESHBENCH_CELL_INDEX.log
l=0; [ -f "$f" ] && l=$(wc -l < "$f")
echo "nr_throttled=$t access_log_lines=$l"
"#,
    )
    .unwrap();
    std::fs::write(
        d.join("restore.sh"),
        r#". ./env.sh
if [ -f nginx.pid ]; then
  pid=$(cat nginx.pid); kill "$pid" 2>/dev/null
  while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
fi
for i in $(seq 100); do rmdir "$CG" 2>/dev/null && break; sleep 0.05; done
"#,
    )
    .unwrap();
    let sc = command_scenario(
        d,
        &format!("https://127.0.0.1:{port}/"),
        "sidecar_cpu = [\"20m\", \"none\"]\naccess_log = [\"off\", \"on\"]",
        "apply = \"sh apply.sh\"\nverify = \"sh verify.sh\"\nafter = \"sh after.sh\"\nrestore = \"sh restore.sh\"\ntimeout = \"20s\"",
        &format!(
            "[target.tls]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\nserver_name = \"checkout.default.svc.cluster.local\"\n[checks]\nweights = {{ v1 = 90, v2 = 10 }}\nstrict_mtls = false",
            pki.ca_cert.display(),
            pki.client_cert.display(),
            pki.client_key.display()
        ),
    );
    let out = d.join("run");
    let o = bin()
        .args([
            "run",
            sc.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--no-report",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    let run = meshbench_schema::read_run(&out).unwrap_or_else(|e| panic!("{e}: {stderr}"));
    let by = |id: &str| {
        run.cells
            .iter()
            .find(|c| c.id == id)
            .unwrap_or_else(|| panic!("{id}: {stderr}"))
    };
    for c in &run.cells {
        assert!(c.failed.is_none(), "{}: {:?}", c.id, c.failed);
        assert_eq!(c.errors.total(), 0, "{}: {:?} {stderr}", c.id, c.errors);
        let split = c.checks.iter().find(|k| k.name == "canary_split").unwrap();
        assert_eq!(
            split.status,
            meshbench_schema::CheckStatus::Passed,
            "{}",
            split.summary
        );
        let ev = c.driver.as_ref().unwrap();
        let verified = ev.verified.as_deref().unwrap();
        let after = ev.after.as_deref().unwrap();
        let throttled: u64 = after
            .split_whitespace()
            .find_map(|w| w.strip_prefix("nr_throttled="))
            .unwrap()
            .parse()
            .unwrap();
        let lines: u64 = after
            .split_whitespace()
            .find_map(|w| w.strip_prefix("access_log_lines="))
            .unwrap()
            .parse()
            .unwrap();
        if c.id.starts_with("cpu=20m") {
            assert!(
                verified.starts_with(if v2 {
                    "quota=2000/100000"
                } else {
                    "quota=2000 "
                }),
                "{verified}"
            );
            assert!(throttled > 0, "{}: {after}", c.id);
        } else {
            assert!(
                verified.starts_with(if v2 { "quota=max/100000" } else { "quota=-1 " }),
                "{verified}"
            );
            assert_eq!(throttled, 0, "{}: {after}", c.id);
        }
        assert_eq!(lines > 0, c.id.ends_with("log=on"), "{}: {after}", c.id);
        assert_eq!(
            c.settings.access_log.as_deref(),
            Some(if c.id.ends_with("on") { "on" } else { "off" })
        );
    }
    let (tight, free) = (by("cpu=20m,log=off"), by("cpu=none,log=off"));
    assert_eq!(tight.settings.sidecar_cpu_millis, Some(20));
    assert!(
        tight.latency.corrected.p99_us > free.latency.corrected.p99_us,
        "tight {} vs unlimited {}",
        tight.latency.corrected.p99_us,
        free.latency.corrected.p99_us
    );
    assert_eq!(o.status.code(), Some(0), "{stderr}");
    // restore left no nginx and no cgroup
    assert!(!cg.exists(), "{} left behind", cg.display());
    let conf = d.join("nginx.conf").display().to_string();
    let left = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .any(|c| String::from_utf8_lossy(&c).contains(&conf));
    assert!(!left, "nginx left running");
}

/// `access_log_method = "configmap"` (older Istio): each cell sets the mesh-wide
/// `accessLogFile` in the `istio` ConfigMap, keeps the rest of `data.mesh`, and restore
/// puts the original text back.
#[test]
fn the_configmap_method_sets_access_log_file_and_restores_the_mesh_config() {
    let st = Standin::new();
    let app = App::start("x-version: v1");
    let dir = tempfile::tempdir().unwrap();
    let sc = istio_scenario(
        dir.path(),
        &format!("http://{}/", app.1),
        "access_log = [\"on\", \"off\"]",
        "1s",
    );
    let mut text = std::fs::read_to_string(&sc).unwrap();
    text.push_str("access_log_method = \"configmap\"\n");
    std::fs::write(&sc, text).unwrap();
    let original = st.state()["configmap"]["data"]["mesh"]
        .as_str()
        .unwrap()
        .to_string();
    let out = dir.path().join("run");
    let mut c = st.run(&sc, &out);
    let o = c.output().unwrap();
    let failed: Vec<String> = meshbench_schema::read_run(&out)
        .map(|r| {
            r.cells
                .iter()
                .flat_map(|c| c.checks.iter())
                .chain(r.checks.iter())
                .filter(|c| c.status == meshbench_schema::CheckStatus::Failed)
                .map(|c| c.summary.clone())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{failed:?} {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let patches: Vec<String> = st
        .calls()
        .iter()
        .filter(|a| a.iter().any(|x| x == "patch") && a.iter().any(|x| x == "configmap"))
        .map(|a| a.iter().skip_while(|x| *x != "-p").nth(1).cloned().unwrap())
        .collect();
    assert_eq!(patches.len(), 3, "on, off, restore: {patches:?}");
    let mesh = |p: &str| -> String {
        let v: serde_json::Value = serde_json::from_str(p).unwrap();
        v["data"]["mesh"].as_str().unwrap().to_string()
    };
    let (on, off, restored) = (mesh(&patches[0]), mesh(&patches[1]), mesh(&patches[2]));
    assert!(
        on.contains("accessLogFile: /dev/stdout") || on.contains("accessLogFile: \"/dev/stdout\""),
        "{on}"
    );
    assert!(off.contains("accessLogFile: \"\""), "{off}");
    for m in [&on, &off] {
        assert!(
            m.contains("defaultConfig:\n  concurrency: 2"),
            "the rest of the mesh config was kept: {m}"
        );
        assert_eq!(m.matches("accessLogFile").count(), 1, "{m}");
    }
    assert_eq!(restored, original);
    assert_eq!(
        st.state()["configmap"]["data"]["mesh"].as_str().unwrap(),
        original
    );
    let run = meshbench_schema::read_run(&out).unwrap();
    assert!(run.cells.iter().all(|c| c.failed.is_none()));
}
