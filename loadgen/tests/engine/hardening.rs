//! The binary against hostile or careless input, each defect found once turned into a test:
//! concurrent runs, reused and symlinked run directories, killed runs, values that validate
//! but cannot run, FIFOs and devices as input, memory under oversized responses.

use crate::faults::raw_server;
use crate::util::bin;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An `[app]` scenario (the built-in app in-process: no mesh, no cgroups).
fn app_scenario(dir: &Path, name: &str, load: &str) -> PathBuf {
    let p = dir.join(format!("{name}.toml"));
    std::fs::write(
        &p,
        format!("name = \"{name}\"\n[app]\nservice_time = \"1ms\"\n[target]\ntimeout = \"2s\"\n[load]\nrate = 100\nconnections = 2\n{load}\n"),
    )
    .unwrap();
    p
}

fn output(cmd: &mut std::process::Command) -> (i32, String, String) {
    let o = cmd.output().unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Sum of the corrected counts in an interval log.
fn hlog_count(p: &Path) -> u64 {
    let mut n = 0;
    meshbench_schema::hlog::for_each_interval(p, |i| {
        if i.tag.as_deref() == Some("corrected") {
            n += i.hist.len();
        }
    })
    .unwrap();
    n
}

#[test]
fn two_runs_started_together_never_share_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    let sc = app_scenario(dir.path(), "twin", "duration = \"1s\"");
    let start = || {
        bin()
            .args(["run", sc.to_str().unwrap(), "--json", "--no-report"])
            .current_dir(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let (a, b) = (start(), start());
    let mut dirs = Vec::new();
    for c in [a, b] {
        let o = c.wait_with_output().unwrap();
        assert_eq!(o.status.code(), Some(0));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        dirs.push(PathBuf::from(v["run_dir"].as_str().unwrap()));
    }
    assert_ne!(dirs[0], dirs[1]);
    for d in &dirs {
        let d = dir.path().join(d);
        let run = meshbench_schema::read_run(&d).unwrap();
        // each run.json's cell is its own interval log's count
        assert_eq!(
            hlog_count(&d.join("cell-0.hlog")),
            run.cells[0].ok,
            "{}",
            d.display()
        );
    }
}

#[test]
fn an_out_directory_with_another_run_or_a_symlink_is_refused_unless_forced() {
    let dir = tempfile::tempdir().unwrap();
    let sc = app_scenario(dir.path(), "reuse", "requests = 20");
    let out = dir.path().join("out");
    let run = |extra: &[&str]| {
        output(
            bin()
                .args([
                    "run",
                    sc.to_str().unwrap(),
                    "--no-report",
                    "--out",
                    out.to_str().unwrap(),
                ])
                .args(extra),
        )
    };
    assert_eq!(run(&[]).0, 0);
    let (code, stdout, stderr) = run(&[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stdout.is_empty());
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("holds another run's results (run.json, cell-N.hlog)")
            && stderr.contains("--force"),
        "{stderr}"
    );
    // a stale interval log of another, longer run is gone after --force
    std::fs::write(out.join("cell-7.hlog"), "old").unwrap();
    assert_eq!(run(&["--force"]).0, 0);
    assert!(!out.join("cell-7.hlog").exists());
    // a symlinked --out
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(dir.path().join("elsewhere"), &link).unwrap();
    std::fs::create_dir(dir.path().join("elsewhere")).unwrap();
    let (code, _, stderr) =
        output(bin().args(["run", sc.to_str().unwrap(), "--out", link.to_str().unwrap()]));
    assert_eq!(code, 2);
    assert!(
        stderr.contains("symbolic link") && stderr.contains("--force"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_dir(dir.path().join("elsewhere"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn a_killed_run_is_recognisable_and_the_next_run_cleans_up_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let sc = app_scenario(
        dir.path(),
        "killed",
        "duration = \"60s\"\n[matrix]\nrate = [100, 200]",
    );
    let out = dir.path().join("out");
    let mut child = bin()
        .args([
            "run",
            sc.to_str().unwrap(),
            "--no-report",
            "--out",
            out.to_str().unwrap(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let tmp = out.join(format!(".cell-0.hlog.{pid}.tmp"));
    let t0 = Instant::now();
    while !tmp.exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "the cell did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(500));
    child.kill().unwrap();
    child.wait().unwrap();
    // run.json was written before the first cell: it shows the plan and no finish
    let run = meshbench_schema::read_run(&out).unwrap();
    assert_eq!(run.planned_cells, ["rate=100", "rate=200"]);
    assert!(run.finished_at.is_none() && run.cells.is_empty());
    let why = run.incomplete().join("; ");
    assert!(
        why.contains("did not finish") && why.contains("2 of 2 planned cells"),
        "{why}"
    );
    // report shows it and the gate fails on it
    let report = PathBuf::from(env!("CARGO_BIN_EXE_loadgen")).with_file_name("report");
    if report.exists() {
        let (code, _, stderr) =
            output(std::process::Command::new(&report).args(["render", out.to_str().unwrap()]));
        assert_eq!(code, 0, "{stderr}");
        let md = std::fs::read_to_string(out.join("summary.md")).unwrap();
        assert!(md.contains("INCOMPLETE RUN"), "{md}");
        let (code, stdout, _) =
            output(std::process::Command::new(&report).args(["gate", out.to_str().unwrap()]));
        assert_eq!(code, 1, "{stdout}");
    }
    // the dead run's temp file is removed by the next run into the directory
    assert!(tmp.exists());
    let (code, _, stderr) = output(
        bin()
            .args([
                "run",
                sc.to_str().unwrap(),
                "--no-report",
                "--force",
                "--out",
                out.to_str().unwrap(),
            ])
            .args(["--set", "load.duration=\"1s\""]),
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(!tmp.exists());
    let run = meshbench_schema::read_run(&out).unwrap();
    assert!(run.incomplete().is_empty(), "{:?}", run.incomplete());
}

#[test]
fn values_that_validate_must_be_runnable_and_input_must_be_a_small_regular_file() {
    let dir = tempfile::tempdir().unwrap();
    let base = "[target]\nurl = \"http://127.0.0.1:9/\"\n[load]\n";
    let cases: &[(&str, String, &str)] = &[
        ("tiny-rate", format!("{base}rate = 5e-324\nduration = \"1s\"\n"), "tiny-rate.toml:4:8: load.rate 5e-324 is out of range"),
        ("huge-rate", format!("{base}rate = 1e300\nduration = \"1s\"\n"), "huge-rate.toml:4:8: load.rate 1e300 is out of range"),
        ("huge-duration", format!("{base}rate = 1\nduration = \"9300000000000000000s\"\n"), "huge-duration.toml:5:12: "),
        ("think", "[target]\nurl = \"http://127.0.0.1:9/\"\n[load]\nmode = \"closed\"\nduration = \"2s\"\nthink_time = \"1h\"\n".into(), "think.toml:6:14: load.think_time must be shorter than load.duration"),
        ("bad-slo", format!("slo = [\"p99<fast\"]\n{base}rate = 1\nduration = \"1s\"\n"), "bad-slo.toml:1:8: SLO 'p99<fast'"),
        ("big-matrix", format!("{base}rate = 1\nduration = \"1s\"\n[matrix]\nrate = [{}]\nconnections = [{}]\n",
            (1..=1000).map(|i| i.to_string()).collect::<Vec<_>>().join(","),
            (1..=1000).map(|i| i.to_string()).collect::<Vec<_>>().join(",")), "the matrix has 1000000 cells; at most 1000"),
        ("newline", "[mesh]\nservice = \"a\\nb\"\n[[mesh.subset]]\nname = \"v1\"\nweight = 100\n[load]\nrate = 1\nduration = \"1s\"\n".into(), "newline.toml:2:11: mesh.service: `a b` is not a DNS label"),
    ];
    for (name, text, want) in cases {
        let file = dir.path().join(format!("{name}.toml"));
        std::fs::write(&file, text).unwrap();
        let t0 = Instant::now();
        let (code, _, stderr) = output(bin().arg("validate").arg(&file).current_dir(dir.path()));
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "{name} took {:?}",
            t0.elapsed()
        );
        assert_eq!(code, 2, "{name}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{name}: {stderr}");
        assert!(
            stderr.contains(want),
            "{name}:\n got  {stderr}\n want {want}"
        );
    }
    // a FIFO and a device as the scenario: refused at once, not waited on
    let fifo = dir.path().join("fifo.toml");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    for p in [fifo.as_path(), Path::new("/dev/zero")] {
        let t0 = Instant::now();
        let (code, _, stderr) = output(bin().arg("validate").arg(p));
        assert!(t0.elapsed() < Duration::from_secs(5));
        assert_eq!(code, 2);
        assert!(stderr.contains("not a regular file"), "{stderr}");
    }
    // a FIFO as a TLS file
    let tls = dir.path().join("tls.toml");
    std::fs::write(&tls, format!("[target]\nurl = \"https://127.0.0.1:9/\"\n[target.tls]\nca = {:?}\n[load]\nrate = 1\nduration = \"1s\"\n", fifo.display())).unwrap();
    let (code, _, stderr) = output(bin().arg("validate").arg(&tls));
    assert_eq!(code, 2);
    assert!(
        stderr.contains("tls.toml:4:6: target.tls.ca: cannot read")
            && stderr.contains("not a regular file"),
        "{stderr}"
    );
    // validate takes the same --set as run, and a --set error names the --set
    let good = dir.path().join("good.toml");
    std::fs::write(&good, format!("{base}rate = 1\nduration = \"1s\"\n")).unwrap();
    let (code, stdout, _) = output(bin().args([
        "validate",
        good.to_str().unwrap(),
        "--set",
        "matrix.rate=[1,2,3]",
    ]));
    assert_eq!(code, 0);
    assert!(stdout.contains("ok (3 cells)"), "{stdout}");
    let (code, _, stderr) =
        output(bin().args(["validate", good.to_str().unwrap(), "--set", "bogus.key=1"]));
    assert_eq!(code, 2);
    assert!(
        stderr.starts_with("loadgen: --set bogus.key: unknown field `bogus`"),
        "{stderr}"
    );
    // serve refuses a body it cannot hold
    let (code, _, stderr) = output(bin().args(["serve", "--body-bytes", "100000000000"]));
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--body-bytes"), "{stderr}");
}

/// The peak resident set (VmHWM) of a running process, in bytes.
fn peak_rss(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: u64 = s
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kb * 1024)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_keep_memory_bounded() {
    // 1 MB response headers, or a 100 MB body, to every request
    let (heads, _t1) = raw_server(|mut s| async move {
        let mut b = [0u8; 4096];
        while let Ok(n) = s.read(&mut b).await {
            if n == 0 {
                return;
            }
            let mut head = b"HTTP/1.1 200 OK\r\nx-big: ".to_vec();
            head.extend(std::iter::repeat_n(b'a', 1 << 20));
            head.extend_from_slice(b"\r\ncontent-length: 0\r\n\r\n");
            if s.write_all(&head).await.is_err() {
                return;
            }
        }
    })
    .await;
    let (bodies, _t2) = raw_server(|mut s| async move {
        let mut b = [0u8; 4096];
        while let Ok(n) = s.read(&mut b).await {
            if n == 0 {
                return;
            }
            let chunk = vec![b'x'; 1 << 20];
            if s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 104857600\r\n\r\n")
                .await
                .is_err()
            {
                return;
            }
            for _ in 0..100 {
                if s.write_all(&chunk).await.is_err() {
                    return;
                }
            }
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    for (addr, load) in [
        (heads, "rate = 20\nrequests = 20"),
        (bodies, "rate = 2\nrequests = 4"),
    ] {
        let sc = dir.path().join("s.toml");
        std::fs::write(&sc, format!("[target]\nurl = \"http://{addr}/\"\ntimeout = \"10s\"\nprotocol = \"http1\"\n[load]\nconnections = 2\nthreads = 2\n{load}\n")).unwrap();
        let out = dir.path().join(format!("out-{}", addr.port()));
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_loadgen"))
            .args([
                "run",
                sc.to_str().unwrap(),
                "--no-report",
                "--out",
                out.to_str().unwrap(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id().unwrap();
        let t0 = Instant::now();
        let mut peak = 0;
        let status = loop {
            peak = peak.max(peak_rss(pid).unwrap_or(0));
            if let Some(st) = child.try_wait().unwrap() {
                break st;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "loadgen did not finish"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        assert_eq!(status.code(), Some(0));
        // the engine drains bodies frame by frame and hyper refuses heads past its limit
        assert!(peak > 0 && peak < 64 << 20, "peak RSS {} MiB", peak >> 20);
        let run = meshbench_schema::read_run(&out).unwrap();
        let c = &run.cells[0];
        assert_eq!(c.requests, c.ok + c.errors.total());
    }
}
