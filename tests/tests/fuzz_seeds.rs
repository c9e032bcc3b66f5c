//! Every seed and past crash of the fuzz targets (`fuzz/seeds/TARGET/*`), replayed through
//! the same target bodies libFuzzer runs (`fuzz/targets.rs`), on the stable toolchain: a
//! crash that fuzzing once found stays fixed, and the targets keep compiling.

#[path = "../../fuzz/targets.rs"]
mod targets;

use meshbench_tests::workspace_root;

fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = workspace_root().join("fuzz/seeds").join(target);
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "{} has no seeds", dir.display());
    out
}

#[test]
fn scenario_seeds_replay() {
    for (_, s) in seeds("scenario") {
        targets::scenario(&s);
    }
}

#[test]
fn hlog_seeds_replay() {
    for (_, s) in seeds("hlog") {
        targets::hlog(&s);
    }
}

#[test]
fn archive_seeds_replay() {
    for (_, s) in seeds("archive") {
        targets::archive(&s);
    }
}

#[test]
fn run_json_seeds_replay() {
    for (_, s) in seeds("run_json") {
        targets::run_json(&s);
    }
}

#[test]
fn probe_report_seeds_replay() {
    for (_, s) in seeds("probe_report") {
        targets::probe_report(&s);
    }
}

#[test]
fn profile_seeds_replay() {
    for (_, s) in seeds("profile") {
        targets::profile(&s);
    }
}

#[test]
fn probe_host_seeds_replay() {
    let root = tempfile::tempdir().unwrap();
    targets::make_probe_root(root.path());
    for (_, s) in seeds("probe_host") {
        targets::probe_host_in(root.path(), &s);
    }
}
