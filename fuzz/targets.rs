//! The fuzz targets' bodies, one function per target: `fuzz_targets/*.rs` hand them
//! libFuzzer's inputs (`cargo +nightly fuzz run TARGET`), and the workspace's ordinary test
//! suite replays every seed and past crash in `fuzz/seeds/TARGET/` through them
//! (`tests/tests/fuzz_seeds.rs`), so they keep compiling and stay fixed on stable too.
#![allow(dead_code)]

use loadgen::plan::Plan;
use loadgen::scenario::Source;
use meshbench_schema::hlog::IntervalReader;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

const FILES: [&str; 14] = [
    "proc/stat",
    "proc/stat.next",
    "proc/cpuinfo",
    "proc/meminfo",
    "proc/self/mountinfo",
    "proc/modules",
    "proc/self/limits",
    "proc/net/route",
    "proc/swaps",
    "proc/cmdline",
    "proc/sys/kernel/osrelease",
    "proc/sys/net/netfilter/nf_conntrack_count",
    "sys/kernel/mm/transparent_hugepage/enabled",
    "sys/devices/system/clocksource/clocksource0/current_clocksource",
];

/// Copy the KVM fixture tree into `dir` (the root `probe_host_in` writes into).
pub fn make_probe_root(dir: &Path) {
    let fixture =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../probe/tests/fixtures/kvm-virtio");
    let status = std::process::Command::new("cp")
        .args([
            "-a",
            &format!("{}/.", fixture.display()),
            &dir.display().to_string(),
        ])
        .status()
        .unwrap();
    assert!(status.success());
    for f in FILES {
        std::fs::create_dir_all(dir.join(f).parent().unwrap()).unwrap();
    }
}

/// The fuzzing process's root, in /dev/shm (fast), made once.
fn root() -> &'static PathBuf {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let base = if Path::new("/dev/shm").is_dir() {
            "/dev/shm"
        } else {
            "/tmp"
        };
        let dir = tempfile::Builder::new()
            .prefix("probe-fuzz")
            .tempdir_in(base)
            .unwrap()
            .keep();
        make_probe_root(&dir);
        dir
    })
}

/// The scenario language end to end: `--set` overrides, parsing, validation into a plan.
/// Input: `--set` lines, a line `---`, then the scenario text (no `---`: text only).
pub fn scenario(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (sets, scenario) = match text.split_once("\n---\n") {
        Some((s, t)) => (
            s.lines().map(str::to_string).take(16).collect::<Vec<_>>(),
            t,
        ),
        None => (vec![], text),
    };
    let mut src = Source::new("fuzz.toml", scenario);
    if src.apply_sets(&sets).is_err() {
        return;
    }
    if let Ok(sc) = src.parse() {
        if let Ok(plan) = Plan::from_scenario(&sc, &src) {
            // what run.json keeps of it
            let _ = serde_json::to_value(&plan);
        }
    }
}

/// The interval-log reader report and merge use, on arbitrary bytes.
pub fn hlog(data: &[u8]) {
    let r = IntervalReader::from_reader(std::path::Path::new("fuzz.hlog"), data);
    for i in r.take(10_000) {
        match i {
            Ok(i) => {
                let _ = meshbench_schema::Percentiles::of(&i.hist);
            }
            Err(_) => break,
        }
    }
}

/// `report unpack` of a log holding these bytes, into a fresh directory removed after.
pub fn archive(data: &[u8]) {
    let d = tempfile::Builder::new()
        .prefix("archive-fuzz")
        .tempdir_in(std::env::temp_dir())
        .unwrap();
    let log = d.path().join("pod.log");
    std::fs::write(&log, data).unwrap();
    let out = d.path().join("out");
    if let Ok(got) = meshbench_schema::archive::unpack(&log, &out) {
        for u in got.archives {
            // what came back is inside its own directory, under plain names
            assert!(u.dir.starts_with(&out), "{}", u.dir.display());
            for f in &u.files {
                assert!(u.dir.join(f).is_file(), "{f}");
            }
        }
    }
}

/// run.json as report reads it: version check, shape, and what report asks of it.
pub fn run_json(data: &[u8]) {
    if let Ok(run) = meshbench_schema::files::parse_run(data, std::path::Path::new("run.json")) {
        let _ = run.checks_passed();
        let _ = run.incomplete();
        for c in &run.cells {
            let _ = c.errors.total();
            for s in meshbench_schema::LATENCY_STATS {
                let _ = c.latency.corrected.get(s);
            }
        }
        for slo in &run.slo {
            let _ = meshbench_schema::slo::Slo::parse(slo);
        }
    }
}

/// Probe reports as `report fleet` reads them.
pub fn probe_report(data: &[u8]) {
    let _ = meshbench_schema::files::parse_probe(data, std::path::Path::new("node.json"));
}

/// probe's `--profile FILE.toml` parser and its threshold checks.
pub fn profile(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(p) = probe::profile::Profile::parse("fuzz.toml", text) {
            let _ = probe::list_checks(&p);
        }
    }
}

/// probe's parsers of /proc and /sys text, through a fixture root: the input is split at
/// NUL bytes into the contents of the files below (in order), written into a copy of a
/// KVM fixture tree, and every check that runs on a fixture root is run on it.
pub fn probe_host(data: &[u8]) {
    probe_host_in(root(), data)
}

/// [`probe_host`] in a given root (made by [`make_probe_root`]).
pub fn probe_host_in(root: &Path, data: &[u8]) {
    let mut parts = data.split(|&b| b == 0);
    for f in FILES {
        let _ = std::fs::write(root.join(f), parts.next().unwrap_or(b""));
    }
    let Ok(host) = probe::host::Host::new(root) else {
        return;
    };
    let profile = probe::profile::Profile::default();
    let ctx = probe::checks::Ctx::new(host, profile, "/var/lib".into());
    let all = probe::checks::registry();
    let selected: Vec<bool> = all.iter().map(|c| !c.live_only()).collect();
    let _ = probe::probe(&ctx, &all, &selected);
}
