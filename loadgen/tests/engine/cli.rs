use crate::util::bin;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

const GOOD: &str =
    "[target]\nurl = \"http://127.0.0.1:9/\"\n[load]\nrate = 10\nduration = \"1s\"\n";

/// Run `loadgen ARGS` in `dir`; (exit code, stdout, stderr).
fn loadgen(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = bin().args(args).current_dir(dir).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_scenarios_give_one_line_with_position_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&str, &str, &str)] = &[
        (
            "unknown-key",
            "[target]\nurl = \"http://127.0.0.1:9/\"\n[load]\nrate = 10\nduraton = \"1s\"\n",
            "unknown-key.toml:5:1: unknown field `duraton`, expected one of",
        ),
        (
            "wrong-type",
            "[target]\nurl = \"http://127.0.0.1:9/\"\n[load]\nrate = 10\nconnections = \"four\"\nduration = \"1s\"\n",
            "wrong-type.toml:5:15: invalid type: string \"four\", expected i64",
        ),
        (
            "zero-rate",
            "[target]\nurl = \"http://127.0.0.1:9/\"\n[load]\n  rate = 0\nduration = \"1s\"\n",
            "zero-rate.toml:4:10: load.rate must be > 0",
        ),
        (
            "bad-duration",
            "[target]\nurl = \"http://127.0.0.1:9/\"\n[load]\nrate = 10\nduration = \"5 fortnights\"\n",
            "bad-duration.toml:5:12: invalid duration `5 fortnights`",
        ),
        (
            "missing-cert",
            "[target]\nurl = \"https://127.0.0.1:9/\"\n[target.tls]\ncert = \"nope.pem\"\nkey = \"nope.key\"\n[load]\nrate = 10\nduration = \"1s\"\n",
            "missing-cert.toml:4:8: target.tls.cert: cannot read ./nope.pem: No such file or directory",
        ),
        (
            "search-without-slo",
            "[target]\nurl = \"http://127.0.0.1:9/\"\n[search]\nmin = 10\nmax = 100\n",
            "search-without-slo.toml:3:1: search.slo is required",
        ),
        (
            "search-bounds-reversed",
            "[target]\nurl = \"http://127.0.0.1:9/\"\n[search]\nslo = [\"p99<10ms\"]\nmin = 500\nmax = 100\n",
            "search-bounds-reversed.toml:6:7: search.max (100) must be above search.min (500)",
        ),
        (
            "search-with-rate",
            "[target]\nurl = \"http://127.0.0.1:9/\"\n[load]\nrate = 10\n[search]\nslo = [\"p99<10ms\"]\n",
            "search-with-rate.toml:4:8: load.rate and [search] are exclusive",
        ),
        (
            "search-added-slo",
            "[target]\nurl = \"http://127.0.0.1:9/\"\n[search]\nslo = [\"added_p99<1ms\"]\n",
            "search-added-slo.toml:4:8: search.slo: `added_p99<1ms` cannot be judged on one step",
        ),
        (
            "ramp-zero-duration",
            "[target]\nurl = \"http://127.0.0.1:9/\"\n[load.profile]\nkind = \"ramp\"\nfrom = 10\nto = 100\nover = \"0s\"\n",
            "ramp-zero-duration.toml:7:8: load.profile.over must be > 0",
        ),
        (
            "steps-negative-rate",
            "[target]\nurl = \"http://127.0.0.1:9/\"\n[load.profile]\nkind = \"steps\"\nsteps = [{ rate = 100, duration = \"1s\" }, { rate = -5, duration = \"1s\" }]\n",
            "steps-negative-rate.toml:5:52: load.profile.steps[1].rate must be > 0",
        ),
        (
            "profile-with-rate",
            "[target]\nurl = \"http://127.0.0.1:9/\"\n[load]\nrate = 10\n[load.profile]\nkind = \"ramp\"\nfrom = 1\nto = 2\nover = \"2s\"\n",
            "profile-with-rate.toml:4:8: load.rate and load.profile are exclusive",
        ),
        (
            "profile-unknown-kind",
            "[target]\nurl = \"http://127.0.0.1:9/\"\n[load.profile]\nkind = \"sine\"\n",
            "profile-unknown-kind.toml:4:8: load.profile.kind `sine`: expected",
        ),
    ];
    for (name, text, want) in cases {
        let file = format!("{name}.toml");
        std::fs::write(dir.path().join(&file), text).unwrap();
        for cmd in ["validate", "run"] {
            let (code, stdout, stderr) = loadgen(dir.path(), &[cmd, &file]);
            assert_eq!(code, 2, "{cmd} {name}: {stderr}");
            assert_eq!(
                stderr.lines().count(),
                1,
                "{cmd} {name}: one line: {stderr}"
            );
            assert!(
                stderr.contains(want),
                "{cmd} {name}:\n got  {stderr}\n want {want}"
            );
            assert!(stdout.is_empty(), "{stdout}");
        }
    }
    // Nothing was started: no results directory.
    assert!(!dir.path().join("results").exists());
}

#[test]
fn set_overrides_are_named_in_errors_and_applied() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("s.toml"), GOOD).unwrap();
    let (code, _, stderr) = loadgen(dir.path(), &["run", "s.toml", "--set", "load.rate=0"]);
    assert_eq!(code, 2);
    assert_eq!(
        stderr.trim(),
        "loadgen: --set load.rate: load.rate must be > 0"
    );
    let (code, _, stderr) = loadgen(
        dir.path(),
        &["run", "s.toml", "--set", "load.duration=soon"],
    );
    assert_eq!(code, 2);
    assert!(
        stderr.contains("--set load.duration: invalid duration `soon`"),
        "{stderr}"
    );
    let (code, _, stderr) = loadgen(dir.path(), &["run", "s.toml", "--set", "load.bogus=1"]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("--set load.bogus: unknown field `bogus`"),
        "{stderr}"
    );
}

#[test]
fn every_scenario_in_the_repo_validates() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    assert!(files.iter().any(|f| f.ends_with("smoke.toml")));
    for f in files {
        let (code, stdout, stderr) = loadgen(&dir, &["validate", f.to_str().unwrap()]);
        assert_eq!(code, 0, "{}: {stderr}", f.display());
        assert!(stdout.contains("ok"), "{stdout}");
    }
}

#[test]
fn json_summary_and_set_on_the_smoke_scenario() {
    json_summary_and_set("smoke");
}

#[test]
fn json_summary_and_set_on_the_builtin_app_scenario() {
    json_summary_and_set("app");
}

fn json_summary_and_set(name: &str) {
    let dir = tempfile::tempdir().unwrap();
    let smoke = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../scenarios/{name}.toml"));
    let (code, stdout, stderr) = loadgen(
        dir.path(),
        &[
            "run",
            smoke.to_str().unwrap(),
            "--json",
            "--set",
            "load.duration=1s",
            "--set",
            "load.warmup=0",
            "--set",
            "load.rate=100",
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["cells"][0]["requests"], 100);
    assert_eq!(v["cells"][0]["subsets"][0]["name"], "v1");
    let run_json = dir.path().join(v["run_json"].as_str().unwrap());
    let run = meshbench_schema::read_run(&run_json).unwrap();
    assert_eq!(run.plan["load"]["rate"], 100.0);
    assert!(run_json
        .parent()
        .unwrap()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .starts_with(&format!("{name}-")));
}

#[test]
fn sigint_mid_run_keeps_what_was_measured_and_exits_130() {
    let dir = tempfile::tempdir().unwrap();
    let smoke = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/smoke.toml");
    let out = dir.path().join("out");
    let mut child = bin()
        .args([
            "run",
            smoke.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
        .args(["--set", "load.duration=60s", "--set", "load.warmup=0"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the cell is running (its interval log is being written), then let it
    // measure a little.
    let t0 = Instant::now();
    loop {
        let started = std::fs::read_dir(&out).is_ok_and(|d| {
            d.flatten()
                .any(|e| e.file_name().to_string_lossy().contains("cell-0.hlog"))
        });
        if started {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(20), "run did not start");
        std::thread::sleep(Duration::from_millis(20));
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
        if t1.elapsed() > Duration::from_secs(15) {
            let _ = child.kill();
            panic!("loadgen did not exit after SIGINT");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(130));
    let run = meshbench_schema::read_run(&out).unwrap();
    assert!(run.interrupted);
    assert!(run.finished_at.is_some());
    let c = &run.cells[0];
    assert!(c.interrupted);
    assert!(
        c.requests >= 100,
        "measured before the interrupt: {}",
        c.requests
    );
    assert!(
        c.duration_s > 1.0 && c.duration_s < 30.0,
        "{}",
        c.duration_s
    );
    assert!(out.join("cell-0.hlog").exists());
}

#[test]
fn serve_prints_its_address_first_and_stops_on_sigterm() {
    let mut child = bin()
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--header",
            "x-version: v2",
        ])
        .args([
            "--service-time",
            "1ms",
            "--service-time-dist",
            "exp",
            "--body-bytes",
            "10",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr: std::net::SocketAddr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("first line: {line}"))
        .parse()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let run = rt.block_on(crate::util::run_text(
        dir.path(),
        &format!("[target]\nurl = \"http://{addr}/\"\nsubset_header = \"x-version\"\n[load]\nrate = 100\nrequests = 20\n"),
    ));
    assert_eq!(run.result.cells[0].subsets[0].name, "v2");
    assert_eq!(run.result.cells[0].ok, 20);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let t0 = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            assert_eq!(s.code(), Some(0));
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "serve did not stop");
        std::thread::sleep(Duration::from_millis(20));
    }
}
