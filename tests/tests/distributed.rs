//! A distributed run on one machine: load workers in their own network namespaces (veth
//! pairs on a bridge in a fourth namespace that holds the target: nginx splitting 90/10
//! over two built-in apps), one shared `--start-at`, merged by `report merge`; and a worker
//! killed mid-run.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime};

use hdrhistogram::Histogram;
use meshbench_schema::hlog::IntervalReader;
use meshbench_tests::bin;

fn ok(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn ip(args: &[&str]) {
    let o = Command::new("ip").args(args).output().expect("ip");
    assert!(
        o.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// The tests of this file measure: one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A test that cannot run here says why; under CI (root, every tool installed) it fails.
fn skip(why: &str) {
    assert!(std::env::var_os("CI").is_none(), "CI is set, but {why}");
    eprintln!("SKIPPED: {why} (set CI to make this fail)");
}

/// The namespaces and processes of the test; all removed on drop.
struct Net {
    target: String,
    workers: Vec<String>,
    children: Vec<Child>,
}

impl Drop for Net {
    fn drop(&mut self) {
        // SIGTERM first: nginx's master then stops its workers (SIGKILL would orphan them)
        for c in &mut self.children {
            let pid = nix::unistd::Pid::from_raw(c.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        }
        for c in &mut self.children {
            let t0 = std::time::Instant::now();
            while c.try_wait().ok().flatten().is_none() && t0.elapsed() < Duration::from_secs(3) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in self.workers.iter().chain([&self.target]) {
            let _ = ok(Command::new("ip").args(["netns", "del", ns]));
        }
    }
}

const TARGET_IP: &str = "10.201.0.1";

fn network(workers: usize) -> Option<Net> {
    if !nix::unistd::geteuid().is_root() {
        skip("network namespaces need root");
        return None;
    }
    let tag = std::process::id() % 100_000;
    let net = Net {
        target: format!("mbd{tag}t"),
        workers: (1..=workers).map(|i| format!("mbd{tag}w{i}")).collect(),
        children: vec![],
    };
    if !ok(Command::new("ip").args(["netns", "add", &net.target])) {
        skip("cannot create a network namespace (ip netns add)");
        return None;
    }
    let t = net.target.clone();
    ip(&["-n", &t, "link", "set", "lo", "up"]);
    ip(&["-n", &t, "link", "add", "br0", "type", "bridge"]);
    ip(&[
        "-n",
        &t,
        "addr",
        "add",
        &format!("{TARGET_IP}/24"),
        "dev",
        "br0",
    ]);
    ip(&["-n", &t, "link", "set", "br0", "up"]);
    for (i, w) in net.workers.iter().enumerate() {
        ip(&["netns", "add", w]);
        let (a, b) = (format!("mbd{tag}a{i}"), format!("mbd{tag}b{i}"));
        ip(&["link", "add", &a, "type", "veth", "peer", "name", &b]);
        ip(&["link", "set", &a, "netns", &t]);
        ip(&["link", "set", &b, "netns", w]);
        ip(&["-n", &t, "link", "set", &a, "master", "br0"]);
        ip(&["-n", &t, "link", "set", &a, "up"]);
        ip(&["-n", w, "link", "set", "lo", "up"]);
        ip(&[
            "-n",
            w,
            "addr",
            "add",
            &format!("10.201.0.{}/24", 11 + i),
            "dev",
            &b,
        ]);
        ip(&["-n", w, "link", "set", &b, "up"]);
    }
    Some(net)
}

/// Start `cmd` inside `ns` and return once its first stdout line (`listening on ...`) is out.
fn spawn_in(net: &mut Net, ns: &str, args: &[&str]) {
    let mut c = Command::new("ip")
        .args(["netns", "exec", ns])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let mut out = c.stdout.take().unwrap();
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while std::io::Read::read(&mut out, &mut byte).unwrap_or(0) == 1 && byte[0] != b'\n' {
        line.push(byte[0]);
    }
    assert!(
        String::from_utf8_lossy(&line).starts_with("listening on"),
        "{args:?}: {line:?}"
    );
    net.children.push(c);
}

/// nginx in the target namespace on TARGET_IP:8080, 90/10 weighted round robin over two apps.
fn start_target(net: &mut Net, dir: &Path) -> bool {
    let nginx = Path::new("/usr/sbin/nginx");
    if !nginx.exists() {
        skip("nginx (Debian nginx-light) is not installed");
        return false;
    }
    let t = net.target.clone();
    let loadgen = bin("loadgen");
    let lg = loadgen.to_str().unwrap();
    spawn_in(
        net,
        &t,
        &[
            lg,
            "serve",
            "--listen",
            "127.0.0.1:18181",
            "--header",
            "x-version: v1",
        ],
    );
    spawn_in(
        net,
        &t,
        &[
            lg,
            "serve",
            "--listen",
            "127.0.0.1:18182",
            "--header",
            "x-version: v2",
        ],
    );
    std::fs::create_dir_all(dir.join("tmp")).unwrap();
    let conf = dir.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "worker_processes 1;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\nevents {{ worker_connections 1024; }}\nhttp {{\n access_log off;\n client_body_temp_path {d}/tmp; proxy_temp_path {d}/tmp; fastcgi_temp_path {d}/tmp; uwsgi_temp_path {d}/tmp; scgi_temp_path {d}/tmp;\n upstream apps {{ server 127.0.0.1:18181 weight=9; server 127.0.0.1:18182 weight=1; keepalive 32; }}\n server {{ listen {TARGET_IP}:8080; location / {{ proxy_pass http://apps; proxy_http_version 1.1; proxy_set_header Connection \"\"; }} }}\n}}\n",
            d = dir.display()
        ),
    )
    .unwrap();
    let c = Command::new("ip")
        .args(["netns", "exec", &t, "/usr/sbin/nginx", "-c"])
        .arg(&conf)
        .arg("-p")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    net.children.push(c);
    // ready when it answers from a worker's namespace
    let w = net.workers[0].clone();
    for _ in 0..100 {
        if ok(Command::new("ip").args([
            "netns",
            "exec",
            &w,
            "bash",
            "-c",
            &format!("exec 3<>/dev/tcp/{TARGET_IP}/8080"),
        ])) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "nginx did not come up in {t}: {}",
        std::fs::read_to_string(dir.join("error.log")).unwrap_or_default()
    );
}

fn scenario(dir: &Path, url: &str) -> PathBuf {
    let p = dir.join("dist.toml");
    std::fs::write(
        &p,
        format!(
            "name = \"dist\"\n[target]\nurl = \"{url}\"\ntimeout = \"2s\"\nprotocol = \"http1\"\nsubset_header = \"x-version\"\n[checks]\nweights = {{ v1 = 90, v2 = 10 }}\nconfidence = 0.99999\nstrict_mtls = false\n[load]\nrate = 600\nduration = \"3s\"\nwarmup = \"1s\"\nconnections = 6\n[matrix]\nrate = [600, 300]\n"
        ),
    )
    .unwrap();
    p
}

/// `loadgen serve` on a loopback port: the process and its address.
fn serve_app() -> (Child, String) {
    let mut app = Command::new(bin("loadgen"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--header",
            "x-version: v1",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(app.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap()
        .to_string();
    (app, addr)
}

fn rfc3339_in(d: Duration) -> String {
    humantime_like(SystemTime::now() + d)
}

/// RFC 3339 with whole seconds (what a user would type).
fn humantime_like(t: SystemTime) -> String {
    let s = t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
    let out = Command::new("date")
        .args(["-u", "-d", &format!("@{s}"), "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Every interval of a log summed per tag.
fn totals(path: &Path) -> std::collections::BTreeMap<String, Histogram<u64>> {
    let r = IntervalReader::open(path).unwrap();
    let mut out: std::collections::BTreeMap<String, Histogram<u64>> = Default::default();
    for i in r {
        let i = i.unwrap();
        let h = out
            .entry(i.tag.clone().unwrap_or_default())
            .or_insert_with(|| Histogram::new_with_bounds(1, 3_600_000_000, 3).unwrap());
        h.add(&i.hist).unwrap();
    }
    out
}

fn buckets(h: &Histogram<u64>) -> Vec<(u64, u64)> {
    h.iter_recorded()
        .map(|v| (v.value_iterated_to(), v.count_at_value()))
        .collect()
}

#[test]
fn three_workers_in_their_own_namespaces_merge_into_the_single_machine_run() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let Some(mut net) = network(3) else { return };
    let dir = tempfile::tempdir().unwrap();
    if !start_target(&mut net, dir.path()) {
        return;
    }
    let sc = scenario(dir.path(), &format!("http://{TARGET_IP}:8080/"));
    let start = rfc3339_in(Duration::from_secs(3));
    let mut workers = Vec::new();
    for (i, ns) in net.workers.iter().enumerate() {
        let out = dir.path().join(format!("w{}", i + 1));
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(bin("loadgen"))
            .args([
                "run",
                sc.to_str().unwrap(),
                "--no-report",
                "--start-at",
                &start,
                "--out",
            ])
            .arg(&out)
            .env("JOB_COMPLETION_INDEX", i.to_string())
            .env("MESHBENCH_WORKERS", "3")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        workers.push((out, child));
    }
    let mut dirs = Vec::new();
    for (out, child) in workers {
        let o = child.wait_with_output().unwrap();
        let failed: Vec<String> = meshbench_schema::read_run(&out)
            .map(|r| {
                r.cells
                    .iter()
                    .flat_map(|c| c.checks.iter())
                    .chain(r.checks.iter())
                    .filter(|c| c.status == meshbench_schema::CheckStatus::Failed)
                    .map(|c| format!("{}: {}", c.name, c.summary))
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(
            o.status.code(),
            Some(0),
            "{failed:?} {}",
            String::from_utf8_lossy(&o.stderr)
        );
        dirs.push(out);
    }
    // one machine, the same scenario, for comparison
    let single = dir.path().join("single");
    let o = Command::new("ip")
        .args(["netns", "exec", &net.workers[0]])
        .arg(bin("loadgen"))
        .args(["run", sc.to_str().unwrap(), "--no-report", "--out"])
        .arg(&single)
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let merged = dir.path().join("merged");
    let o = Command::new(bin("report"))
        .arg("merge")
        .args(&dirs)
        .arg("--out")
        .arg(&merged)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let m = meshbench_schema::read_run(&merged).unwrap();
    let one = meshbench_schema::read_run(&single).unwrap();
    assert!(m.incomplete().is_empty(), "{:?}", m.incomplete());
    assert_eq!(m.merged_from.len(), 3);
    let ws: Vec<meshbench_schema::RunResult> = dirs
        .iter()
        .map(|d| meshbench_schema::read_run(d).unwrap())
        .collect();
    for (i, w) in ws.iter().enumerate() {
        let share = w.worker.as_ref().unwrap();
        assert_eq!((share.index, share.count), (i as u32, 3));
    }
    for (pos, (mc, sc)) in m.cells.iter().zip(&one.cells).enumerate() {
        assert_eq!(mc.id, sc.id);
        // the union of the workers' schedules is the single-machine schedule
        assert_eq!(mc.requests, sc.requests, "{}", mc.id);
        let parts: Vec<u64> = ws.iter().map(|w| w.cells[pos].requests).collect();
        assert_eq!(parts.iter().sum::<u64>(), mc.requests);
        assert!(
            parts.iter().all(|&p| p.abs_diff(mc.requests / 3) <= 1),
            "{parts:?}"
        );
        let rate = mc.settings.rate.unwrap();
        assert!(
            (mc.achieved_rate - rate).abs() / rate < 0.03,
            "{}: {} vs {rate}",
            mc.id,
            mc.achieved_rate
        );
        assert_eq!(mc.errors.total(), 0, "{:?}", mc.errors);
        // the merged histogram is the union of the samples, bucket by bucket
        let merged_totals = totals(&merged.join(mc.hlog.as_ref().unwrap()));
        let mut union: std::collections::BTreeMap<String, Histogram<u64>> = Default::default();
        for (w, d) in ws.iter().zip(&dirs) {
            for (tag, h) in totals(&d.join(w.cells[pos].hlog.as_ref().unwrap())) {
                union
                    .entry(tag)
                    .or_insert_with(|| Histogram::new_with_bounds(1, 3_600_000_000, 3).unwrap())
                    .add(&h)
                    .unwrap();
            }
        }
        assert_eq!(
            merged_totals.keys().collect::<Vec<_>>(),
            union.keys().collect::<Vec<_>>()
        );
        for (tag, h) in &union {
            assert_eq!(
                buckets(&merged_totals[tag]),
                buckets(h),
                "{}: tag {tag}",
                mc.id
            );
        }
        assert_eq!(mc.latency.corrected.count, union["corrected"].len());
        // per subset: counts summed, the split re-tested on them, latency merged
        let v2 = mc.subsets.iter().find(|s| s.name == "v2").unwrap();
        let v2_parts: u64 = ws
            .iter()
            .map(|w| {
                w.cells[pos]
                    .subsets
                    .iter()
                    .find(|s| s.name == "v2")
                    .unwrap()
                    .count
            })
            .sum();
        assert_eq!(v2.count, v2_parts);
        assert_eq!(v2.latency.corrected.count, v2.count);
        let split = mc.checks.iter().find(|c| c.name == "canary_split").unwrap();
        assert_eq!(
            split.status,
            meshbench_schema::CheckStatus::Passed,
            "{}",
            split.summary
        );
        assert_eq!(split.details["total"].as_u64(), Some(mc.ok));
        // the start skew is reported
        assert!(
            mc.worker_start.as_ref().is_some_and(|s| s.late_s < 1.0),
            "{:?}",
            mc.worker_start
        );
    }
    assert!(m.merged_from.iter().all(|w| w.max_start_late_s.is_some()));
    assert!(stdout.contains("after the shared start"), "{stdout}");
    // every report command reads the merged directory
    let o = Command::new(bin("report"))
        .arg("render")
        .arg(&merged)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let md = std::fs::read_to_string(merged.join("summary.md")).unwrap();
    assert!(md.contains("Merged from 3 workers"), "{md}");
    let o = Command::new(bin("report"))
        .args(["gate"])
        .arg(&merged)
        .args(["--slo", "p99<1s", "--slo", "errors<1%"])
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    // the processes of the namespaces end with the test: none is left in any of them
    let inodes: Vec<u64> = net
        .workers
        .iter()
        .chain([&net.target])
        .map(|ns| {
            std::os::unix::fs::MetadataExt::ino(
                &std::fs::metadata(format!("/run/netns/{ns}")).unwrap(),
            )
        })
        .collect();
    drop(net);
    let left: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            std::fs::read_link(e.path().join("ns/net")).is_ok_and(|l| {
                inodes
                    .iter()
                    .any(|i| l.to_string_lossy() == format!("net:[{i}]"))
            })
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(left.is_empty(), "processes left: {left:?}");
}

#[test]
fn a_worker_killed_mid_run_is_merged_as_incomplete_and_marked() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let (mut app, addr) = serve_app();
    let sc = dir.path().join("k.toml");
    std::fs::write(
        &sc,
        format!("name = \"killed\"\n[target]\nurl = \"http://{addr}/\"\ntimeout = \"1s\"\n[load]\nrate = 200\nduration = \"2s\"\nwarmup = \"0s\"\nconnections = 2\n[matrix]\nrate = [200, 100]\n"),
    )
    .unwrap();
    let start = rfc3339_in(Duration::from_secs(2));
    let run = |i: usize| {
        Command::new(bin("loadgen"))
            .args([
                "run",
                sc.to_str().unwrap(),
                "--no-report",
                "--worker",
                &format!("{i}/2"),
                "--start-at",
                &start,
                "--out",
            ])
            .arg(dir.path().join(format!("w{i}")))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let (mut a, mut b) = (run(1), run(2));
    // worker 2 is killed in its second cell (cells start one slot apart: 2 + 1 + 1 + 5 s)
    let w2 = dir.path().join("w2/run.json");
    let t0 = std::time::Instant::now();
    loop {
        let cells = meshbench_schema::read_run(&w2)
            .map(|r| r.cells.len())
            .unwrap_or(0);
        if cells == 1 {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "worker 2 never finished its first cell"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(800));
    b.kill().unwrap();
    b.wait().unwrap();
    assert!(a.wait().unwrap().success());
    let _ = app.kill();
    let _ = app.wait();
    let merged = dir.path().join("merged");
    let o = Command::new(bin("report"))
        .args(["merge"])
        .arg(dir.path().join("w1"))
        .arg(dir.path().join("w2"))
        .arg("--out")
        .arg(&merged)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("worker 2/2 did not finish"), "{err}");
    assert!(
        err.contains("cell rate=100: worker 2/2 measured nothing: merged from 1 of 2 workers"),
        "{err}"
    );
    let m = meshbench_schema::read_run(&merged).unwrap();
    assert!(m.finished_at.is_none());
    assert!(!m.incomplete().is_empty());
    assert_eq!(m.cells.len(), 2);
    assert!(
        !m.cells[0].interrupted && m.cells[0].requests == 400,
        "{:?}",
        m.cells[0].requests
    );
    assert!(
        m.cells[1].interrupted && m.cells[1].requests == 100,
        "{}",
        m.cells[1].requests
    );
    // each worker's clock, as its run.json had it (the killed one's up to its last write)
    for w in &m.merged_from {
        let c = w.clock.as_ref().expect("a worker's clock");
        assert!(c.synchronised.is_some() && c.steps.is_some(), "{c:?}");
    }
    // the gate fails the merged run
    let o = Command::new(bin("report"))
        .args(["gate"])
        .arg(&merged)
        .args(["--slo", "p99<1s"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    // a worker whose clock was unsynchronised, far off and stepped beside one whose clock
    // was kept: the merge says so for the first only, in its output and in the merged
    // run's warnings
    let mut w1 = meshbench_schema::read_run(&dir.path().join("w1")).unwrap();
    let c = w1.host.clock.get_or_insert_with(Default::default);
    c.synchronised = Some(false);
    c.est_error_us = Some(250_000);
    c.steps = Some(3);
    // and it was stopped by a signal (it still finished: finished_at is set)
    w1.interrupted = true;
    meshbench_schema::write_json_atomic(&dir.path().join("w1/run.json"), &w1).unwrap();
    // and worker 2's as a well-kept node's (this host's own may be unsynchronised)
    let mut w2 = meshbench_schema::read_run(&dir.path().join("w2")).unwrap();
    let c = w2.host.clock.get_or_insert_with(Default::default);
    c.synchronised = Some(true);
    c.est_error_us = Some(200);
    c.steps = Some(0);
    meshbench_schema::write_json_atomic(&dir.path().join("w2/run.json"), &w2).unwrap();
    let merged2 = dir.path().join("merged2");
    let o = Command::new(bin("report"))
        .args(["merge"])
        .arg(dir.path().join("w1"))
        .arg(dir.path().join("w2"))
        .arg("--out")
        .arg(&merged2)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(
        err.contains(
            "warning: worker 1/2 was interrupted: its share of the cell then running is partial"
        ),
        "{err}"
    );
    assert!(
        out.lines().any(|l| l.contains("worker 1:")
            && l.contains(
                "clock NOT synchronised (est. error 250.0 ms), 3 step(s) during the run"
            )),
        "{out}"
    );
    let m2 = meshbench_schema::read_run(&merged2).unwrap();
    for want in [
        "worker 1/2: its clock was not synchronised",
        "worker 1/2: its clock's estimated error was 250.0 ms",
        "worker 1/2: its wall clock was stepped 3 time(s) during the run",
    ] {
        assert!(
            m2.warnings.iter().any(|w| w.starts_with(want)),
            "{want}: {:?}",
            m2.warnings
        );
    }
    assert!(
        !m2.warnings
            .iter()
            .any(|w| w.starts_with("worker 2/2: its clock")),
        "{:?}",
        m2.warnings
    );
    // merging runs that are not one run is refused
    let other = dir.path().join("again");
    let o = Command::new(bin("report"))
        .args(["merge"])
        .arg(dir.path().join("w1"))
        .arg(dir.path().join("w1"))
        .arg("--out")
        .arg(&other)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("worker 1/2 twice"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Results through pod logs (`deploy/render.sh --results logs`): two workers run with
/// `--log-results`, their standard output plays each pod's log, and `deploy/collect.sh`
/// with a stand-in kubectl that serves those logs gets back every worker's run directory
/// byte for byte and merges them into what `report merge` makes of the directories
/// themselves.
#[test]
fn worker_results_leave_through_their_logs_and_merge_as_from_a_volume() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let (mut app, addr) = serve_app();
    let sc = dir.path().join("logs.toml");
    std::fs::write(
        &sc,
        format!("name = \"logs\"\n[target]\nurl = \"http://{addr}/\"\ntimeout = \"1s\"\n[load]\nrate = 200\nduration = \"1s\"\nwarmup = \"0s\"\nconnections = 2\n[matrix]\nrate = [200, 100]\n"),
    )
    .unwrap();
    let pods = dir.path().join("pods");
    std::fs::create_dir(&pods).unwrap();
    let start = rfc3339_in(Duration::from_secs(2));
    let workers: Vec<Child> = (1..=2)
        .map(|i| {
            Command::new(bin("loadgen"))
                .args(["run", sc.to_str().unwrap(), "--no-report", "--log-results"])
                .args(["--worker", &format!("{i}/2"), "--start-at", &start, "--out"])
                .arg(dir.path().join(format!("w{i}")))
                .stdout(
                    std::fs::File::create(pods.join(format!("meshbench-load-{}-x7k2p.log", i - 1)))
                        .unwrap(),
                )
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut w in workers {
        assert!(w.wait().unwrap().success());
    }
    let _ = app.kill();
    let _ = app.wait();
    // the stand-in kubectl: `get pods` lists the logs, `logs POD -c loadgen` prints one;
    // every call is recorded
    let bin_dir = dir.path().join("bin");
    std::fs::create_dir(&bin_dir).unwrap();
    let kubectl = bin_dir.join("kubectl");
    std::fs::write(
        &kubectl,
        format!(
            "#!/bin/sh\necho \"$*\" >> {calls}\ncase \"$3\" in\n  get) for f in {pods}/*.log; do basename \"$f\" .log; done; cat {pods}/extra 2>/dev/null; true ;;\n  logs) cat {pods}/\"$4\".log ;;\n  *) exit 3 ;;\nesac\n",
            calls = dir.path().join("calls").display(),
            pods = pods.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &kubectl,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let report_dir = bin("report").parent().unwrap().to_path_buf();
    let path = format!(
        "{}:{}:{}",
        bin_dir.display(),
        report_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let collect = |out: &Path| {
        Command::new(meshbench_tests::workspace_root().join("deploy/collect.sh"))
            .args(["--namespace", "shop", "--out"])
            .arg(out)
            .env("PATH", &path)
            .output()
            .unwrap()
    };
    let collected = dir.path().join("collected");
    let o = collect(&collected);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(0), "{err}");
    let calls = std::fs::read_to_string(dir.path().join("calls")).unwrap();
    assert!(
        calls.contains("-n shop get pods -l app.kubernetes.io/instance=meshbench,app.kubernetes.io/component=load")
            && calls.contains("-n shop logs meshbench-load-1-x7k2p -c loadgen"),
        "{calls}"
    );
    // every worker's results, byte for byte
    for i in 1..=2 {
        let from = dir.path().join(format!("w{i}"));
        let back = collected.join(format!("workers/worker-{i}"));
        let names = meshbench_schema::archive::archived_files(&from).unwrap();
        assert!(names.len() >= 3, "{names:?}");
        assert_eq!(
            meshbench_schema::archive::archived_files(&back).unwrap(),
            names
        );
        for n in &names {
            assert_eq!(
                std::fs::read(back.join(n)).unwrap(),
                std::fs::read(from.join(n)).unwrap(),
                "worker {i}: {n}"
            );
        }
    }
    // merged as the directories themselves merge, and rendered
    let direct = dir.path().join("direct");
    let o = Command::new(bin("report"))
        .args(["merge"])
        .arg(dir.path().join("w1"))
        .arg(dir.path().join("w2"))
        .arg("--out")
        .arg(&direct)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0));
    let (a, b) = (
        meshbench_schema::read_run(&collected.join("merged")).unwrap(),
        meshbench_schema::read_run(&direct).unwrap(),
    );
    assert_eq!(a.cells.len(), 2);
    assert_eq!(a.cells, b.cells);
    assert_eq!(a.cells[0].requests + a.cells[1].requests, 300);
    assert!(collected.join("merged/summary.md").is_file());
    // a pod whose log lost its end: what came back is merged and marked, exit 1
    let log0 = pods.join("meshbench-load-0-x7k2p.log");
    let text = std::fs::read_to_string(&log0).unwrap();
    // cut 30 characters into the first data line of cell-1.hlog
    let file_line = text.find(" file cell-1.hlog ").unwrap();
    let cut = file_line + text[file_line..].find('\n').unwrap() + 1 + 30;
    std::fs::write(&log0, &text[..cut]).unwrap();
    let again = dir.path().join("again");
    let o = collect(&again);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("archive `worker-1`: the log ends inside cell-1.hlog"),
        "{err}"
    );
    assert!(
        err.contains("cell rate=100: worker 1/2: cell-1.hlog, cell-1.parts.hlog missing from"),
        "{err}"
    );
    let m = meshbench_schema::read_run(&again.join("merged")).unwrap();
    assert!(
        !m.incomplete().is_empty(),
        "the merged run is marked incomplete"
    );
    assert!(again.join("merged/summary.md").is_file());
    // a pod whose log cannot be read, and a log cut inside run.json: both left out, said,
    // exit 1, and the one whole worker still merged and rendered
    std::fs::write(pods.join("extra"), "meshbench-load-9-gone\n").unwrap();
    let rj = text.find(" file run.json ").unwrap();
    let cut = rj + text[rj..].find('\n').unwrap() + 1 + 40;
    std::fs::write(&log0, &text[..cut]).unwrap();
    let third = dir.path().join("third");
    let o = collect(&third);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("meshbench-load-9-gone: its log could not be read")
            && err.contains("worker-1: its run.json did not come back; left out of the merge")
            && err.contains("worker 1/2 is missing: merged from 1 of 2 workers"),
        "{err}"
    );
    let m = meshbench_schema::read_run(&third.join("merged")).unwrap();
    assert_eq!(m.merged_from.len(), 1);
    assert!(third.join("merged/summary.md").is_file());
}

/// The manifests in deploy/ and the ones deploy/render.sh renders are valid Kubernetes
/// objects (kubernetes-validate, offline), say what they should, and bad arguments are one
/// line and exit 2.
#[test]
fn deploy_manifests_render_and_validate() {
    let root = meshbench_tests::workspace_root();
    let render = root.join("deploy/render.sh");
    let run = |args: &[&str]| {
        Command::new(&render)
            .current_dir(&root)
            .args(args)
            .output()
            .unwrap()
    };
    let o = run(&[
        "--scenario",
        "scenarios/real-mesh.toml",
        "--workers",
        "3",
        "--start-at",
        "2026-12-01T10:00:00Z",
        "--namespace",
        "shop",
        "--set",
        "load.rate=900",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let load = String::from_utf8(o.stdout).unwrap();
    for want in [
        "completionMode: Indexed",
        "completions: 3",
        "parallelism: 3",
        "{ name: MESHBENCH_WORKERS, value: \"3\" }",
        "{ name: MESHBENCH_START_AT, value: \"2026-12-01T10:00:00Z\" }",
        "\"--out\", \"/results/worker-$(JOB_COMPLETION_INDEX)\", \"--set\", \"load.rate=900\"",
        "real-mesh.toml: |\n    # Measure a real mesh endpoint",
    ] {
        assert!(load.contains(want), "{want} not in\n{load}");
    }
    let o = run(&[
        "--scenario",
        "scenarios/real-mesh.toml",
        "--workers",
        "3",
        "--merge",
        "--namespace",
        "shop",
    ]);
    assert!(o.status.success());
    let merge = String::from_utf8(o.stdout).unwrap();
    assert!(merge.contains("report merge /results/worker-0 /results/worker-1 /results/worker-2 --out /results/merged"), "{merge}");
    // results through the pods' logs: no claim, --log-results, a scratch volume
    let o = run(&[
        "--scenario",
        "scenarios/real-mesh.toml",
        "--workers",
        "3",
        "--start-at",
        "2026-12-01T10:00:00Z",
        "--results",
        "logs",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let logs = String::from_utf8(o.stdout).unwrap();
    assert!(
        logs.contains("\"--out\", \"/results/run\", \"--log-results\"]")
            && logs.contains("emptyDir: {}")
            && !logs.contains("PersistentVolumeClaim")
            && !logs.contains("claimName"),
        "{logs}"
    );
    // bad arguments
    for (args, want) in [
        (
            vec!["--workers", "3", "--start-in", "60s"],
            "--scenario is required",
        ),
        (
            vec![
                "--scenario",
                "scenarios/real-mesh.toml",
                "--workers",
                "0",
                "--start-in",
                "60s",
            ],
            "--workers `0`",
        ),
        (
            vec!["--scenario", "scenarios/real-mesh.toml", "--workers", "2"],
            "give --start-at or --start-in",
        ),
        (
            vec![
                "--scenario",
                "scenarios/real-mesh.toml",
                "--workers",
                "2",
                "--start-at",
                "tomorrow",
            ],
            "--start-at `tomorrow`",
        ),
        (
            vec![
                "--scenario",
                "nope.toml",
                "--workers",
                "2",
                "--start-in",
                "5s",
            ],
            "--scenario nope.toml: no such file",
        ),
        (vec!["--bogus"], "unknown argument `--bogus`"),
        (
            vec![
                "--scenario",
                "scenarios/real-mesh.toml",
                "--workers",
                "2",
                "--start-in",
                "5s",
                "--results",
                "s3",
            ],
            "--results `s3`: volume or logs",
        ),
        (
            vec![
                "--scenario",
                "scenarios/real-mesh.toml",
                "--workers",
                "2",
                "--merge",
                "--results",
                "logs",
            ],
            "with --results logs there is no merge Job",
        ),
    ] {
        let o = run(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains(want) && err.lines().count() == 1,
            "{args:?}: {err}"
        );
    }
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
    std::fs::write(dir.path().join("load.yaml"), &load).unwrap();
    std::fs::write(dir.path().join("merge.yaml"), &merge).unwrap();
    std::fs::write(dir.path().join("logs.yaml"), &logs).unwrap();
    let files = [
        dir.path().join("load.yaml"),
        dir.path().join("merge.yaml"),
        dir.path().join("logs.yaml"),
        root.join("deploy/probe-daemonset.yaml"),
    ];
    for f in &files {
        let o = Command::new("kubernetes-validate")
            .arg("--strict")
            .arg(f)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(o.status.success(), "{}: {text}", f.display());
        assert!(text.contains("passed"), "{text}");
    }
    let ds = std::fs::read_to_string(root.join("deploy/probe-daemonset.yaml")).unwrap();
    for want in [
        "probe --root /host --path /io",
        "mountPath: /host/proc, readOnly: true",
        "mountPath: /host/sys, readOnly: true",
        "--prometheus /textfile/meshbench.prom",
        "fieldPath: spec.nodeName",
    ] {
        assert!(ds.contains(want), "{want}");
    }
}
