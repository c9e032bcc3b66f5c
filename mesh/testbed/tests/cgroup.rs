//! Real cgroups on this host: a CFS quota throttles a busy process; the group is removed on
//! drop, killing what is left in it. Skipped (with the reason printed) only where cgroups
//! cannot be written.
use std::process::Command;
use std::time::{Duration, Instant};
use testbed::cgroup::{unique_name, Cgroups, Limits};

fn cgroups_or_skip() -> Option<Cgroups> {
    match Cgroups::detect() {
        Ok(c) => Some(c),
        Err(e) => {
            eprintln!("SKIPPED: cgroups cannot be written here: {e}");
            None
        }
    }
}

#[test]
fn busy_child_under_100m_is_throttled_and_the_group_is_removed_on_drop() {
    let Some(cgs) = cgroups_or_skip() else { return };
    let cg = match cgs.create(
        &unique_name("test-busy"),
        &Limits {
            cpu_millis: Some(100),
            memory_bytes: None,
        },
    ) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("SKIPPED: cgroups cannot be written here: {e}");
            return;
        }
    };
    let dirs = cg.dirs().to_vec();
    assert!(!dirs.is_empty() && dirs.iter().all(|d| d.is_dir()));
    // Bounded: the loop ends by itself, and is killed below anyway.
    let mut child = Command::new("sh")
        .args(["-c", "i=0; while [ $i -lt 100000000 ]; do i=$((i+1)); done"])
        .spawn()
        .unwrap();
    cg.add_pid(child.id()).unwrap();
    assert_eq!(cg.pids(), vec![child.id()]);
    let start = Instant::now();
    let stat = loop {
        let s = cg.cpu_stat().unwrap();
        if s.nr_throttled > 0 && s.throttled_usec > 0 {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "never throttled under 100m: {s:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(stat.nr_periods >= stat.nr_throttled, "{stat:?}");
    assert!(stat.usage_usec > 0, "{stat:?}");
    // Drop with the child still running: the group kills it and disappears.
    drop(cg);
    let status = child.wait().unwrap();
    assert!(
        !status.success(),
        "the busy loop was killed by the cgroup teardown: {status}"
    );
    for d in &dirs {
        assert!(!d.exists(), "{} left behind", d.display());
    }
}

#[test]
fn unlimited_group_measures_without_throttling() {
    let Some(cgs) = cgroups_or_skip() else { return };
    let Ok(mut cg) = cgs.create(&unique_name("test-free"), &Limits::default()) else {
        eprintln!("SKIPPED: cgroups cannot be written here");
        return;
    };
    let mut child = Command::new("sh")
        .args(["-c", "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done"])
        .spawn()
        .unwrap();
    cg.add_pid(child.id()).unwrap();
    assert!(child.wait().unwrap().success());
    let s = cg.cpu_stat().unwrap();
    assert_eq!(s.nr_throttled, 0, "{s:?}");
    assert!(s.usage_usec > 0, "{s:?}");
    let dirs = cg.dirs().to_vec();
    cg.remove().unwrap();
    assert!(dirs.iter().all(|d| !d.exists()));
}
