//! Tests of the `probe` binary: verdicts on fixture trees, output files, errors and exit
//! codes, and the disk I/O test's clean-up (also when interrupted).

use meshbench_schema::{Finding, ProbeReport, Verdict};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_probe"))
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("probe runs")
}

fn report_of(out: &Output) -> ProbeReport {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not a ProbeReport: {e}\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// The finding `id` of a report.
fn finding<'a>(r: &'a ProbeReport, id: &str) -> &'a Finding {
    r.findings
        .iter()
        .find(|f| f.check == id)
        .unwrap_or_else(|| panic!("no finding {id}"))
}

/// The I/O test alone on `work`, with the thresholds and bounds of `profile`.
fn io_args<'a>(work: &'a Path, profile: &'a Path) -> [&'a str; 6] {
    [
        "--only",
        "disk.io",
        "--path",
        work.to_str().unwrap(),
        "--profile",
        profile.to_str().unwrap(),
    ]
}

/// `--json` with the I/O test alone (see [`io_args`]).
fn run_io(work: &Path, profile: &Path) -> Output {
    let mut args = io_args(work, profile).to_vec();
    args.push("--json");
    run(&args)
}

/// `--json` on a root; returns the exit code and finding id -> verdict.
fn verdicts(root: &Path, extra: &[&str]) -> (i32, BTreeMap<String, Verdict>, ProbeReport) {
    let mut args = vec!["--root", root.to_str().unwrap(), "--json"];
    args.extend_from_slice(extra);
    let out = run(&args);
    let r = report_of(&out);
    let map = r
        .findings
        .iter()
        .map(|f| (f.check.clone(), f.verdict))
        .collect();
    (out.status.code().unwrap_or(-1), map, r)
}

/// Copy a fixture tree (symlinks kept as symlinks) into a temp dir and apply overrides:
/// `Some(text)` writes a file, `None` removes it.
fn variant(name: &str, overrides: &[(&str, Option<&str>)]) -> tempfile::TempDir {
    fn copy(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            let (src, dst) = (e.path(), to.join(e.file_name()));
            let ft = e.file_type().unwrap();
            if ft.is_symlink() {
                std::os::unix::fs::symlink(std::fs::read_link(&src).unwrap(), &dst).unwrap();
            } else if ft.is_dir() {
                copy(&src, &dst);
            } else {
                std::fs::copy(&src, &dst).unwrap();
            }
        }
    }
    let dir = tempfile::tempdir().unwrap();
    copy(&fixture(name), dir.path());
    for (p, content) in overrides {
        let path = dir.path().join(p.trim_start_matches('/'));
        match content {
            Some(text) => {
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                let _ = std::fs::remove_file(&path);
                std::fs::write(&path, text).unwrap();
            }
            None => {
                let _ = std::fs::remove_file(&path);
            }
        }
    }
    dir
}

fn assert_verdicts(map: &BTreeMap<String, Verdict>, expected: &[(&str, Verdict)]) {
    for (id, v) in expected {
        assert_eq!(map.get(*id), Some(v), "{id}: {map:?}");
    }
}

use Verdict::{Fail, Pass, Skip, Warn};

// ------------------------------------------------------------------ fixture verdicts

#[test]
fn kvm_virtio_fixture_captured_here() {
    let (code, map, r) = verdicts(&fixture("kvm-virtio"), &[]);
    assert_verdicts(
        &map,
        &[
            ("cpu.steal", Pass),
            ("cpu.vcpu", Skip),
            ("cpu.wakeup", Skip),
            ("hypervisor", Pass),
            ("virtio.net", Pass),
            ("virtio.disk", Pass),
            ("disk.device", Pass),
            ("disk.fsync", Skip),
            ("disk.randread", Skip),
            ("mesh.kernel", Pass),
            ("mesh.modules", Pass),
            ("mesh.ip_forward", Fail),
            ("mesh.swap", Pass),
            ("mesh.conntrack", Pass),
            ("mesh.somaxconn", Pass),
            ("mesh.nofile", Warn),
            ("mesh.clocksource", Pass),
            ("mesh.thp", Pass),
            ("mesh.governor", Skip),
            ("memory", Pass),
        ],
    );
    assert_eq!(code, 1, "ip_forward fails");
    let f = |id: &str| finding(&r, id).clone();
    assert_eq!(f("hypervisor").value, "KVM (Firecracker)");
    assert!(f("virtio.net").value.contains("virtio_net"));
    assert!(f("virtio.disk").value.contains("virtio_blk"));
    assert!(f("disk.device").value.contains("mq-deadline"));
    assert!(f("mesh.modules")
        .reason
        .unwrap()
        .contains("/proc/config.gz"));
    assert!(f("cpu.steal").reason.unwrap().contains("/proc/stat.next"));
    assert!(f("cpu.vcpu").reason.unwrap().contains("live-only"));
    assert_eq!(r.node, "vm");
    assert_eq!(r.schema_version, meshbench_schema::PROBE_SCHEMA_VERSION);
    assert_eq!(r.counts, ProbeReport::count(&r.findings));
}

#[test]
fn vm_emulated_fixture_fails_with_remedies() {
    let (code, map, r) = verdicts(&fixture("vm-emulated"), &[]);
    assert_verdicts(
        &map,
        &[
            ("cpu.steal", Fail),
            ("hypervisor", Pass),
            ("virtio.net", Fail),
            ("virtio.disk", Fail),
            ("disk.device", Warn),
            ("mesh.kernel", Warn),
            ("mesh.modules", Fail),
            ("mesh.ip_forward", Fail),
            ("mesh.swap", Warn),
            ("mesh.conntrack", Fail),
            ("mesh.somaxconn", Fail),
            ("mesh.nofile", Fail),
            ("mesh.clocksource", Warn),
            ("mesh.thp", Warn),
            ("mesh.governor", Warn),
            ("memory", Fail),
        ],
    );
    assert_eq!(code, 1);
    for f in &r.findings {
        if matches!(f.verdict, Warn | Fail) {
            assert!(f.remedy.as_deref().is_some_and(|s| !s.is_empty()), "{f:?}");
        }
    }
    let steal = finding(&r, "cpu.steal");
    let names: Vec<&str> = steal.measurements.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "steal_pct",
            "cpu0_steal_pct",
            "cpu1_steal_pct",
            "cpu2_steal_pct",
            "cpu3_steal_pct"
        ]
    );
    let modules = r
        .findings
        .iter()
        .find(|f| f.check == "mesh.modules")
        .unwrap();
    assert_eq!(modules.value, "missing: xt_REDIRECT");
}

#[test]
fn baremetal_nvme_fixture_passes_through_lvm() {
    let (code, map, r) = verdicts(&fixture("baremetal-nvme"), &[]);
    for (id, v) in &map {
        assert!(matches!(v, Pass | Skip), "{id}: {v:?}");
    }
    assert_verdicts(
        &map,
        &[
            ("hypervisor", Pass),
            ("disk.device", Pass),
            ("mesh.governor", Pass),
        ],
    );
    assert_eq!(code, 0);
    let disk = r
        .findings
        .iter()
        .find(|f| f.check == "disk.device")
        .unwrap();
    assert!(disk.value.starts_with("nvme0n1 NVMe"), "{}", disk.value);
    let reason = disk.reason.as_deref().unwrap();
    assert!(reason.contains("dm-0 -> nvme0n1p3 -> nvme0n1"), "{reason}");
    let hv = finding(&r, "hypervisor");
    assert_eq!(hv.value, "bare metal");
}

// ------------------------------------------------------------------ the other verdicts

#[test]
fn steal_warn_and_since_boot() {
    // 8 vCPUs x 1000 ticks; 10 stolen per vCPU = 1 %
    let mut next = String::from("cpu  401600 0 72400 7206000 80 0 40 80 0 0\n");
    for i in 0..8 {
        next += &format!("cpu{i} 50200 0 9050 900740 10 0 5 10 0 0\n");
    }
    next += "intr 0\nctxt 1\nbtime 2\nprocesses 3\n";
    let v = variant("baremetal-nvme", &[("/proc/stat.next", Some(&next))]);
    let (code, map, _) = verdicts(v.path(), &["--only", "cpu.steal"]);
    assert_eq!(map["cpu.steal"], Warn);
    assert_eq!(code, 0, "warnings alone do not fail");
    let (code, _, _) = verdicts(v.path(), &["--only", "cpu.steal", "--fail-on", "warn"]);
    assert_eq!(code, 1, "--fail-on warn makes them fail");

    let v = variant("vm-emulated", &[("/proc/stat.next", None)]);
    let (_, map, r) = verdicts(v.path(), &["--only", "cpu.steal"]);
    assert_eq!(
        map["cpu.steal"], Warn,
        "800 of 96815 ticks per vCPU since boot = 0.83 %"
    );
    let f = finding(&r, "cpu.steal");
    assert!(f.reason.as_deref().unwrap().contains("since boot"));
}

#[test]
fn hypervisor_warn_fail_and_skip() {
    // no DMI, no kvm-clock, no cmdline marker: only the cpuinfo flag says "VM"
    let v = variant(
        "kvm-virtio",
        &[
            (
                "/sys/devices/system/clocksource/clocksource0/available_clocksource",
                Some("tsc\n"),
            ),
            ("/proc/cmdline", Some("console=ttyS0\n")),
        ],
    );
    let (_, map, _) = verdicts(v.path(), &["--only", "hypervisor"]);
    assert_eq!(map["hypervisor"], Warn);
    let v = variant(
        "vm-emulated",
        &[
            ("/sys/class/dmi/id/sys_vendor", Some("innotek GmbH\n")),
            ("/sys/class/dmi/id/product_name", Some("VirtualBox\n")),
        ],
    );
    let (_, map, _) = verdicts(v.path(), &["--only", "hypervisor"]);
    assert_eq!(map["hypervisor"], Fail);
    let empty = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(empty.path().join("var/lib")).unwrap();
    let (_, map, _) = verdicts(empty.path(), &["--only", "hypervisor"]);
    assert_eq!(map["hypervisor"], Skip);
}

#[test]
fn device_driver_warn_and_disk_skip() {
    let v = variant(
        "vm-emulated",
        &[("/sys/devices/pci0000:00/0000:00:03.0/driver", None)],
    );
    std::os::unix::fs::symlink(
        "../../../bus/pci/drivers/mystery_nic",
        v.path().join("sys/devices/pci0000:00/0000:00:03.0/driver"),
    )
    .unwrap();
    let (_, map, _) = verdicts(v.path(), &["--only", "virtio,disk.device"]);
    assert_eq!(map["virtio.net"], Warn, "unknown driver on a VM");
    let v = variant("kvm-virtio", &[("/sys/dev/block/254:0", None)]);
    let (_, map, r) = verdicts(v.path(), &["--only", "virtio.disk,disk.device"]);
    assert_eq!(map["virtio.disk"], Skip);
    assert_eq!(map["disk.device"], Skip);
    let f = r
        .findings
        .iter()
        .find(|f| f.check == "disk.device")
        .unwrap();
    assert!(
        f.reason
            .as_deref()
            .unwrap()
            .contains("/sys/dev/block/254:0"),
        "{f:?}"
    );
    // a rotational disk on bare metal warns
    let nvme =
        "sys/devices/pci0000:00/0000:00:1d.0/0000:3b:00.0/nvme/nvme0/nvme0n1/queue/rotational";
    let v = variant("baremetal-nvme", &[(nvme, Some("1\n"))]);
    let (_, map, _) = verdicts(v.path(), &["--only", "disk.device"]);
    assert_eq!(map["disk.device"], Warn);
}

#[test]
fn mesh_checks_other_verdicts() {
    let rel = "3.10.0-1160.el7.x86_64";
    let dep = format!("lib/modules/{rel}/modules.dep");
    let v = variant(
        "vm-emulated",
        &[
            (
                "/proc/sys/net/netfilter/nf_conntrack_count",
                Some("40000\n"),
            ),
            ("/proc/sys/net/core/somaxconn", Some("2048\n")),
            (
                "/proc/sys/kernel/osrelease",
                Some("2.6.32-754.el6.x86_64\n"),
            ),
            (
                "/proc/swaps",
                Some("Filename\tType\tSize\tUsed\tPriority\n"),
            ),
            ("/proc/sys/net/ipv4/ip_forward", Some("1\n")),
            (
                "/sys/devices/system/clocksource/clocksource0/current_clocksource",
                Some("kvm-clock\n"),
            ),
            (
                "/sys/kernel/mm/transparent_hugepage/enabled",
                Some("always madvise [never]\n"),
            ),
        ],
    );
    let (_, map, _) = verdicts(v.path(), &["--only", "mesh"]);
    assert_verdicts(
        &map,
        &[
            // /lib/modules/2.6.32.../ does not exist: only /proc/modules is left -> missing
            ("mesh.modules", Fail),
            ("mesh.conntrack", Warn),
            ("mesh.somaxconn", Warn),
            ("mesh.kernel", Fail),
            ("mesh.swap", Pass),
            ("mesh.ip_forward", Pass),
            ("mesh.clocksource", Pass),
            ("mesh.thp", Pass),
        ],
    );
    // with the release unchanged, every module is at least loadable -> warn
    let v = variant(
        "vm-emulated",
        &[(&dep, Some("kernel/net/netfilter/xt_REDIRECT.ko.xz:\nkernel/net/bridge/br_netfilter.ko.xz:\nkernel/net/ipv4/netfilter/iptable_nat.ko.xz:\nkernel/net/ipv4/netfilter/iptable_mangle.ko.xz:\nkernel/net/netfilter/xt_owner.ko.xz:\nkernel/net/netfilter/xt_tcpudp.ko.xz:\nkernel/net/netfilter/xt_multiport.ko.xz:\n"))],
    );
    let (_, map, r) = verdicts(v.path(), &["--only", "mesh.modules"]);
    assert_eq!(map["mesh.modules"], Warn);
    let f = r
        .findings
        .iter()
        .find(|f| f.check == "mesh.modules")
        .unwrap();
    assert!(
        f.value.starts_with("not loaded: br_netfilter"),
        "{}",
        f.value
    );
    // no module source at all -> skip; no conntrack -> skip
    let v = variant(
        "kvm-virtio",
        &[
            ("/proc/config.gz", None),
            ("/proc/sys/net/netfilter/nf_conntrack_max", None),
        ],
    );
    let (_, map, _) = verdicts(v.path(), &["--only", "mesh.modules,mesh.conntrack"]);
    assert_eq!(map["mesh.modules"], Skip);
    assert_eq!(map["mesh.conntrack"], Skip);
}

#[test]
fn memory_warn() {
    let text = std::fs::read_to_string(fixture("vm-emulated/proc/meminfo")).unwrap();
    let text = text
        .lines()
        .map(|l| {
            if l.starts_with("MemAvailable:") {
                "MemAvailable:     716800 kB".to_string()
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let v = variant("vm-emulated", &[("/proc/meminfo", Some(&text))]);
    let (_, map, _) = verdicts(v.path(), &["--only", "memory"]);
    assert_eq!(map["memory"], Warn);
}

#[test]
fn missing_files_skip_each_check_without_failing_others() {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("var/lib")).unwrap();
    let (code, map, r) = verdicts(root.path(), &[]);
    assert_eq!(code, 0);
    for (id, v) in &map {
        assert_eq!(*v, Skip, "{id}");
    }
    for f in &r.findings {
        let reason = f.reason.as_deref().unwrap_or("");
        assert!(!reason.is_empty() && !reason.contains('\n'), "{f:?}");
    }
    assert_eq!(r.node, "unknown");
}

// ------------------------------------------------------------------ selection, listing

#[test]
fn only_and_skip_select_and_deselected_checks_say_so() {
    let (_, map, r) = verdicts(
        &fixture("baremetal-nvme"),
        &["--only", "mesh", "--skip", "mesh.thp"],
    );
    assert_eq!(map["mesh.kernel"], Pass);
    assert_eq!(map["mesh.thp"], Skip);
    assert_eq!(map["memory"], Skip);
    let thp = finding(&r, "mesh.thp");
    assert!(thp.reason.as_deref().unwrap().contains("not selected"));
    // a finding id selects its check
    let (_, map, _) = verdicts(&fixture("baremetal-nvme"), &["--only", "disk.fsync"]);
    assert_eq!(map["disk.fsync"], Skip);
    assert_eq!(map.len(), 23);
}

#[test]
fn list_checks_shows_every_check_with_profile_thresholds() {
    let out = run(&["--list-checks"]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    for id in [
        "cpu.steal",
        "cpu.vcpu",
        "cpu.wakeup",
        "hypervisor",
        "virtio.net",
        "virtio.disk",
        "disk.device",
        "disk.io",
        "mesh.kernel",
        "mesh.modules",
        "mesh.ip_forward",
        "mesh.swap",
        "mesh.conntrack",
        "mesh.somaxconn",
        "mesh.nofile",
        "mesh.clocksource",
        "mesh.thp",
        "mesh.governor",
        "memory",
    ] {
        assert!(text.contains(id), "{id} missing from:\n{text}");
    }
    assert!(text.contains("warn > 0.5 %, fail > 2 %"));
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("p.toml");
    std::fs::write(&p, "[steal]\nwarn_pct = 1.0\nfail_pct = 4.0\n").unwrap();
    let out = run(&["--list-checks", "--profile", p.to_str().unwrap()]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("warn > 1 %, fail > 4 %"), "{text}");
}

#[test]
fn profile_override_changes_verdicts() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("lenient.toml");
    std::fs::write(&p, "[steal]\nwarn_pct = 6.0\nfail_pct = 10.0\n").unwrap();
    let (_, map, r) = verdicts(
        &fixture("vm-emulated"),
        &["--only", "cpu.steal", "--profile", p.to_str().unwrap()],
    );
    assert_eq!(map["cpu.steal"], Pass);
    assert_eq!(r.profile, p.display().to_string());
}

// ------------------------------------------------------------------ errors: one line, exit 2

fn assert_usage_error(args: &[&str], needle: &str) {
    let out = run(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "{args:?}: not one line: {err}"
    );
    assert!(err.contains(needle), "{args:?}: {err} lacks {needle}");
    assert!(out.stdout.is_empty(), "{args:?}");
}

#[test]
fn bad_input_is_one_line_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let bad_key = dir.path().join("bad-key.toml");
    std::fs::write(&bad_key, "[fsync]\nwarn_p99_ms = 5\nwarn_p99 = 5\n").unwrap();
    let bad_syntax = dir.path().join("bad-syntax.toml");
    std::fs::write(&bad_syntax, "[steal\nwarn_pct = 1\n").unwrap();
    let inverted = dir.path().join("inverted.toml");
    std::fs::write(&inverted, "[fsync]\nwarn_p99_ms = 30\n").unwrap();
    let root = fixture("kvm-virtio");
    let root = root.to_str().unwrap();
    assert_usage_error(
        &["--root", root, "--profile", bad_key.to_str().unwrap()],
        "bad-key.toml:3:1: unknown field `warn_p99`",
    );
    assert_usage_error(
        &["--root", root, "--profile", bad_syntax.to_str().unwrap()],
        "bad-syntax.toml:1:",
    );
    assert_usage_error(
        &["--root", root, "--profile", inverted.to_str().unwrap()],
        "fsync: warn (30) is above fail (20)",
    );
    assert_usage_error(
        &["--root", root, "--profile", "/nonexistent/p.toml"],
        "/nonexistent/p.toml",
    );
    assert_usage_error(
        &["--root", root, "--only", "cpu.stael"],
        "--only: unknown check \"cpu.stael\"",
    );
    assert_usage_error(
        &["--root", root, "--skip", "nope"],
        "--skip: unknown check \"nope\"",
    );
    assert_usage_error(
        &["--root", root, "--path", "/no/such/dir"],
        "--path /no/such/dir",
    );
    assert_usage_error(&["--path", "/no/such/dir"], "No such file");
    assert_usage_error(&["--root", "/no/such/root"], "--root /no/such/root");
    assert_usage_error(&["--root", root, "--sample", "soon"], "soon");
    assert_usage_error(&["--root", root, "--sample", "0s"], "--sample");
    assert_usage_error(&["--frobnicate"], "--frobnicate");
}

// ------------------------------------------------------------------ outputs

#[test]
fn json_prometheus_and_junit_files() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("r.json");
    let prom = dir.path().join("probe.prom");
    let junit = dir.path().join("junit.xml");
    let out = run(&[
        "--root",
        fixture("vm-emulated").to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
        "--prometheus",
        prom.to_str().unwrap(),
        "--junit",
        junit.to_str().unwrap(),
        "--color",
        "never",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.contains("FAIL") && table.contains("virtio.net") && !table.contains("\x1b["));
    let r = meshbench_schema::read_probe(&json).unwrap();
    assert_eq!(r.node, "legacy-vm-07");
    assert!(r.counts.fail >= 8);

    let p = std::fs::read_to_string(&prom).unwrap();
    assert!(p.contains("# TYPE meshbench_probe_verdict gauge\n"));
    assert!(
        p.contains("meshbench_probe_verdict{check=\"virtio.net\"} 2\n"),
        "{p}"
    );
    assert!(p.contains("meshbench_probe_verdict{check=\"disk.fsync\"} 3\n"));
    assert!(
        p.contains("meshbench_probe_steal_pct{check=\"cpu.steal\"} 5\n"),
        "{p}"
    );
    assert!(p.contains("meshbench_probe_cpu_steal_pct{check=\"cpu.steal\",cpu=\"3\"} 5\n"));
    assert!(p.contains(
        "meshbench_probe_fact{check=\"virtio.net\",name=\"driver\",value=\"e1000\"} 1\n"
    ));
    for line in p.lines().filter(|l| !l.starts_with('#')) {
        let (_, value) = line.rsplit_once(' ').unwrap();
        assert!(value.parse::<f64>().is_ok(), "bad sample line {line}");
    }

    let x = std::fs::read_to_string(&junit).unwrap();
    let mut reader = quick_xml::Reader::from_str(&x);
    let (mut cases, mut failures, mut skipped) = (0, 0, 0);
    loop {
        match reader.read_event().expect("well-formed JUnit XML") {
            quick_xml::events::Event::Eof => break,
            quick_xml::events::Event::Start(e) | quick_xml::events::Event::Empty(e) => {
                match e.name().as_ref() {
                    b"testcase" => cases += 1,
                    b"failure" => failures += 1,
                    b"skipped" => skipped += 1,
                    _ => {}
                }
            }
            _ => {}
        }
    }
    assert_eq!(cases, r.findings.len());
    assert_eq!(
        failures, r.counts.fail as usize,
        "warnings are not failures by default"
    );
    assert_eq!(skipped, r.counts.skip as usize);
    // --fail-on warn turns warnings into failures
    run(&[
        "--root",
        fixture("vm-emulated").to_str().unwrap(),
        "--junit",
        junit.to_str().unwrap(),
        "--fail-on",
        "warn",
    ]);
    let x = std::fs::read_to_string(&junit).unwrap();
    assert_eq!(
        x.matches("<failure").count(),
        (r.counts.fail + r.counts.warn) as usize
    );
    // atomic writes leave no temp files
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["junit.xml", "probe.prom", "r.json"]);
}

// ------------------------------------------------------------------ live host

#[test]
fn live_quick_measures_cpu() {
    let out = run(&["--quick", "--only", "cpu", "--json", "--sample", "300ms"]);
    let r = report_of(&out);
    for id in ["cpu.steal", "cpu.vcpu", "cpu.wakeup"] {
        let f = finding(&r, id);
        assert_ne!(f.verdict, Skip, "{f:?}");
        assert!(!f.measurements.is_empty());
    }
    let io = finding(&r, "disk.fsync");
    assert_eq!(io.verdict, Skip);
}

fn tiny_profile(dir: &Path, phase: f64) -> PathBuf {
    let p = dir.join("tiny.toml");
    std::fs::write(
        &p,
        format!(
            "[io]\nsize_mib = 4\nfsync_max_writes = 50\nphase_seconds = {phase}\nqueue_depth = 4\n"
        ),
    )
    .unwrap();
    p
}

#[test]
fn io_test_measures_and_leaves_no_file() {
    let conf = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let profile = tiny_profile(conf.path(), 0.2);
    let out = run_io(work.path(), &profile);
    let r = report_of(&out);
    for id in [
        "disk.fsync",
        "disk.randread",
        "disk.randwrite",
        "disk.seqwrite",
    ] {
        let f = finding(&r, id);
        assert_ne!(f.verdict, Skip, "{f:?}");
    }
    let fsync = finding(&r, "disk.fsync");
    let count = fsync
        .measurements
        .iter()
        .find(|m| m.name == "fdatasync_count")
        .unwrap();
    match count.value {
        meshbench_schema::MeasuredValue::Number(n) => assert!((1.0..=50.0).contains(&n)),
        ref v => panic!("{v:?}"),
    }
    assert_eq!(std::fs::read_dir(work.path()).unwrap().count(), 0);
}

#[test]
fn io_test_refuses_without_twice_the_space() {
    let conf = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let p = conf.path().join("huge.toml");
    std::fs::write(&p, "[io]\nsize_mib = 65536\n").unwrap();
    let free = nix::sys::statvfs::statvfs(work.path()).unwrap();
    let free_mib = (free.blocks_available() as u64 * free.fragment_size() as u64) >> 20;
    if free_mib >= 2 * 65536 {
        return; // this machine has more than 128 GiB free: the refusal cannot be provoked
    }
    let out = run_io(work.path(), &p);
    let r = report_of(&out);
    let f = finding(&r, "disk.fsync");
    assert_eq!(f.verdict, Skip);
    assert!(
        f.reason.as_deref().unwrap().starts_with("refused: "),
        "{f:?}"
    );
    assert_eq!(std::fs::read_dir(work.path()).unwrap().count(), 0);
}

#[test]
fn interrupted_io_test_removes_its_files_and_exits_130() {
    let conf = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    // long phases so the temp files certainly exist when the signal comes
    let profile = tiny_profile(conf.path(), 5.0);
    let child = bin()
        .args(io_args(work.path(), &profile))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // wait (bounded) until the I/O test has created its file
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let n = std::fs::read_dir(work.path()).unwrap().count();
        if n > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "no temp file appeared");
        std::thread::sleep(Duration::from_millis(10));
    }
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("interrupted"), "{err}");
    let left: Vec<_> = std::fs::read_dir(work.path()).unwrap().collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// The textfile passes Prometheus' own linter (`promtool check metrics`, Debian package
/// prometheus), for a fixture node with every kind of finding and for this host.
#[test]
fn the_prometheus_textfile_passes_promtool() {
    let promtool = ["/usr/bin/promtool", "/usr/local/bin/promtool"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.exists());
    let Some(promtool) = promtool else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set, but promtool (Debian package prometheus) is not installed"
        );
        eprintln!("SKIPPED: promtool is not installed (apt-get install prometheus; set CI to make this fail)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    for (name, root) in [
        ("fixture", fixture("vm-emulated")),
        ("host", PathBuf::from("/")),
    ] {
        let prom = dir.path().join(format!("{name}.prom"));
        let mut args = vec![
            "--root",
            root.to_str().unwrap(),
            "--prometheus",
            prom.to_str().unwrap(),
            "--color",
            "never",
        ];
        if name == "host" {
            args.extend(["--quick"]);
        }
        let out = run(&args);
        assert!(out.status.code().is_some_and(|c| c <= 1), "{name}: {out:?}");
        let text = std::fs::read(&prom).unwrap();
        let mut child = std::process::Command::new(promtool)
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), &text).unwrap();
        let o = child.wait_with_output().unwrap();
        assert!(
            o.status.success(),
            "{name}: promtool check metrics:\n{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
}
