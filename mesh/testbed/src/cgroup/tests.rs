use super::*;
use meshbench_schema::CpuStat;

const MOUNTINFO_V2: &str = "30 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n";
const MOUNTINFO_V1: &str = "32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n\
    33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct\n\
    35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n\
    41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";

fn fake_v2(root: &Path, own: &str) -> PathBuf {
    let base = root.join("sys/fs/cgroup");
    let user = join_rel(&base, own);
    std::fs::create_dir_all(&user).unwrap();
    // The root has cpu enabled for children; the delegated service does too.
    let mut d = user.clone();
    loop {
        std::fs::write(d.join("cgroup.controllers"), "cpuset cpu io memory pids\n").unwrap();
        std::fs::write(d.join("cgroup.subtree_control"), "cpu memory\n").unwrap();
        std::fs::write(d.join("cgroup.procs"), "").unwrap();
        if d == base {
            break;
        }
        d = d.parent().unwrap().to_path_buf();
    }
    user
}

#[test]
fn stale_groups_of_dead_loadgens_are_removed_and_nothing_else() {
    let root = tempfile::tempdir().unwrap();
    let parent = root.path().to_path_buf();
    // pid_max is at most 2^22, so this pid never runs.
    let dead = parent.join("meshbench-999999999-0-cpu_100m_log_off");
    let live = parent.join(format!("{}7-x", name_prefix(std::process::id())));
    let busy = parent.join("meshbench-999999998-1-y");
    let other = parent.join("kubepods");
    for d in [&dead, &live, &busy, &other] {
        std::fs::create_dir(d).unwrap();
    }
    // A group that still has a process is never touched, even if its loadgen is gone.
    std::fs::write(busy.join("cgroup.procs"), "4242\n").unwrap();
    let cgs = Cgroups::V2 { parent };
    assert_eq!(cgs.remove_stale(), vec![dead.clone()]);
    assert!(!dead.exists());
    assert!(live.exists() && busy.exists() && other.exists());
}

#[test]
fn v2_delegated_subtree_is_used_and_written_as_kubernetes_does() {
    let root = tempfile::tempdir().unwrap();
    let own = "/user.slice/user-1000.slice/user@1000.service/app.slice";
    let dir = fake_v2(root.path(), own);
    let cgs = Cgroups::from_texts(MOUNTINFO_V2, &format!("0::{own}\n"), root.path()).unwrap();
    assert_eq!(
        cgs,
        Cgroups::V2 {
            parent: dir.clone()
        }
    );
    let mut cg = cgs
        .create(
            "meshbench-test",
            &Limits {
                cpu_millis: Some(100),
                memory_bytes: Some(64 << 20),
            },
        )
        .unwrap();
    let g = dir.join("meshbench-test");
    assert_eq!(
        std::fs::read_to_string(g.join("cpu.max")).unwrap(),
        "10000 100000"
    );
    assert_eq!(
        std::fs::read_to_string(g.join("memory.max")).unwrap(),
        "67108864"
    );
    cg.add_pid(4242).unwrap();
    assert_eq!(
        std::fs::read_to_string(g.join("cgroup.procs")).unwrap(),
        "4242"
    );
    // cpu.stat as the v2 kernel writes it
    std::fs::write(
        g.join("cpu.stat"),
        "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\nnr_periods 20\nnr_throttled 7\nthrottled_usec 90000\n",
    )
    .unwrap();
    std::fs::write(g.join("memory.peak"), "123456\n").unwrap();
    assert_eq!(
        cg.cpu_stat().unwrap(),
        CpuStat {
            usage_usec: 1500,
            nr_periods: 20,
            nr_throttled: 7,
            throttled_usec: 90000
        }
    );
    assert_eq!(cg.memory_peak(), Some(123456));
    // A fake cgroupfs holds regular files, so rmdir fails here (on a real one it does
    // not); forget the group and let the tempdir go.
    std::fs::write(g.join("cgroup.procs"), "").unwrap();
    cg.removed = true;

    // unlimited → "max"
    let cg = cgs.create("meshbench-none", &Limits::default()).unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.join("meshbench-none/cpu.max")).unwrap(),
        "max 100000"
    );
    let mut cg = cg;
    cg.removed = true;
}

#[test]
fn v2_without_cpu_controller_falls_back_to_v1_or_says_why() {
    let root = tempfile::tempdir().unwrap();
    let base = root.path().join("sys/fs/cgroup/unified");
    std::fs::create_dir_all(&base).unwrap();
    std::fs::write(base.join("cgroup.controllers"), "").unwrap();
    let err = Cgroups::from_texts(MOUNTINFO_V1, "1:cpu:/\n0::/\n", root.path())
        .unwrap_err()
        .to_string();
    assert!(err.contains("cgroup2 has no cpu controller"), "{err}");
    assert!(err.contains("sys/fs/cgroup/cpu"), "{err}");
    // with a v1 cpu hierarchy present, v1 is chosen
    for (d, f) in [
        ("cpu", "cpu.cfs_quota_us"),
        ("cpuacct", "cpuacct.usage"),
        ("memory", "memory.limit_in_bytes"),
    ] {
        let p = root
            .path()
            .join("sys/fs/cgroup")
            .join(d)
            .join("process_api/x");
        std::fs::create_dir_all(&p).unwrap();
        std::fs::write(p.join(f), "").unwrap();
    }
    let cgs = Cgroups::from_texts(
        MOUNTINFO_V1,
        "4:memory:/process_api/x\n2:cpuacct:/process_api/x\n1:cpu:/process_api/x\n0::/\n",
        root.path(),
    )
    .unwrap();
    assert_eq!(cgs.version(), Version::V1);
    let Cgroups::V1 {
        cpu,
        cpuacct,
        memory,
    } = &cgs
    else {
        unreachable!()
    };
    assert!(cpu.ends_with("sys/fs/cgroup/cpu/process_api/x"));
    assert!(cpuacct.as_ref().unwrap().ends_with("cpuacct/process_api/x"));
    assert!(memory.as_ref().unwrap().ends_with("memory/process_api/x"));
    let mut cg = cgs
        .create(
            "g",
            &Limits {
                cpu_millis: Some(500),
                memory_bytes: Some(32 << 20),
            },
        )
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(cpu.join("g/cpu.cfs_quota_us")).unwrap(),
        "50000"
    );
    assert_eq!(
        std::fs::read_to_string(cpu.join("g/cpu.cfs_period_us")).unwrap(),
        "100000"
    );
    assert_eq!(
        std::fs::read_to_string(memory.as_ref().unwrap().join("g/memory.limit_in_bytes")).unwrap(),
        "33554432"
    );
    std::fs::write(
        cpu.join("g/cpu.stat"),
        "nr_periods 10\nnr_throttled 4\nthrottled_time 2500000\n",
    )
    .unwrap();
    std::fs::write(
        cpuacct.as_ref().unwrap().join("g/cpuacct.usage"),
        "7000000\n",
    )
    .unwrap();
    assert_eq!(
        cg.cpu_stat().unwrap(),
        CpuStat {
            usage_usec: 7000,
            nr_periods: 10,
            nr_throttled: 4,
            throttled_usec: 2500
        }
    );
    cg.removed = true;
}

#[test]
fn nothing_mounted_is_a_clear_error() {
    let root = tempfile::tempdir().unwrap();
    let err = Cgroups::from_texts("", "", root.path())
        .unwrap_err()
        .to_string();
    assert!(err.contains("no cgroup"), "{err}");
}

#[test]
fn kubernetes_cfs_mapping() {
    assert_eq!(CFS_PERIOD_US, 100_000);
    assert_eq!(cfs_quota_us(100), 10_000);
    assert_eq!(cfs_quota_us(500), 50_000);
    assert_eq!(cfs_quota_us(2000), 200_000);
    assert_eq!(cfs_quota_us(1), 1000); // kubelet's minimum quota
}

#[test]
fn mountinfo_escapes() {
    assert_eq!(unescape_mount("/a\\040b"), "/a b");
    assert_eq!(unescape_mount("/plain"), "/plain");
}
