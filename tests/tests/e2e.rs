//! End-to-end tests: each module runs the built binaries as a user would, across tools.
//!
//! Modules:
//! - `cli`: every binary answers --help and --version.
//! - `pipeline`: `loadgen run` writes a run that it renders itself, and that `report`
//!   compares and gates; `--no-report` leaves the report to `report render`.
//! - `fleet`: `probe --json` on fixture trees feeds `report fleet`.

mod cli {
    use meshbench_tests::bin;
    use std::process::Command;

    #[test]
    fn every_binary_answers_help_and_version() {
        for name in ["loadgen", "probe", "report"] {
            for flag in ["--help", "--version"] {
                let out = Command::new(bin(name)).arg(flag).output().unwrap();
                assert!(out.status.success(), "{name} {flag}: {out:?}");
                assert!(!out.stdout.is_empty(), "{name} {flag} printed nothing");
            }
        }
    }
}

mod pipeline {
    use meshbench_tests::{bin, workspace_root};
    use std::path::Path;
    use std::process::{Command, Output};

    /// A short smoke run (seconds), through the embedded mesh, without CPU limits so it
    /// runs wherever cgroups cannot be written.
    fn smoke(out: &Path, extra: &[&str]) -> Output {
        let mut cmd = Command::new(bin("loadgen"));
        cmd.current_dir(workspace_root())
            .args(["run", "scenarios/smoke.toml", "--no-cpu-limits", "--out"])
            .arg(out)
            .args([
                "--set",
                "load.warmup=\"500ms\"",
                "--set",
                "load.duration=\"2s\"",
            ])
            .args(extra);
        cmd.output().unwrap()
    }

    fn text(out: &Output) -> String {
        format!(
            "status {:?}\nstdout:\n{}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    #[test]
    fn a_run_renders_its_report_and_gates_against_itself() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        let out = smoke(&run, &[]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));

        let result = meshbench_schema::read_run(&run).unwrap();
        assert!(!result.interrupted);
        assert!(!result.cells.is_empty());
        for cell in &result.cells {
            assert!(cell.ok > 0, "cell {} answered nothing", cell.id);
            let hlog = cell.hlog.as_ref().expect("every cell has an interval log");
            assert!(run.join(hlog).is_file(), "{hlog} missing");
        }
        // loadgen rendered the report and said where.
        let html = run.join("report.html");
        assert!(html.is_file(), "no report.html: {}", text(&out));
        assert!(run.join("summary.md").is_file());
        let said = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(said.contains("report.html"), "{said}");
        let summary = std::fs::read_to_string(run.join("summary.md")).unwrap();
        for cell in &result.cells {
            assert!(
                summary.contains(&cell.id),
                "summary.md lacks cell {}",
                cell.id
            );
        }

        // The run passes its own SLOs and does not regress against itself.
        let gate = Command::new(bin("report"))
            .arg("gate")
            .arg(&run)
            .arg("--baseline")
            .arg(&run)
            .output()
            .unwrap();
        assert_eq!(gate.status.code(), Some(0), "{}", text(&gate));

        // An SLO no real run can meet fails the gate with exit 1.
        let gate = Command::new(bin("report"))
            .arg("gate")
            .arg(&run)
            .args(["--slo", "p50<1us"])
            .output()
            .unwrap();
        assert_eq!(gate.status.code(), Some(1), "{}", text(&gate));

        let compare = Command::new(bin("report"))
            .arg("compare")
            .arg(&run)
            .arg(&run)
            .output()
            .unwrap();
        assert!(compare.status.success(), "{}", text(&compare));
        assert!(String::from_utf8_lossy(&compare.stdout).contains("p99"));
    }

    #[test]
    fn no_report_leaves_rendering_to_report_render() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        let out = smoke(&run, &["--no-report", "--json"]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        // --json prints a JSON summary on stdout, and nothing else.
        let _: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("--json stdout is not JSON ({e}): {}", text(&out)));
        assert!(run.join("run.json").is_file());
        assert!(
            !run.join("report.html").exists(),
            "--no-report rendered anyway"
        );

        let render = Command::new(bin("report"))
            .arg("render")
            .arg(&run)
            .output()
            .unwrap();
        assert!(render.status.success(), "{}", text(&render));
        assert!(run.join("report.html").is_file());
        assert!(run.join("plots").is_dir());
    }
}

mod fleet {
    use meshbench_tests::{bin, workspace_root};
    use std::process::Command;

    #[test]
    fn probe_reports_of_fixture_nodes_feed_the_fleet_report() {
        let dir = tempfile::tempdir().unwrap();
        let fixtures = workspace_root().join("probe/tests/fixtures");
        let mut jsons = Vec::new();
        for (node, want) in [("vm-emulated", 1), ("baremetal-nvme", 0)] {
            let out = Command::new(bin("probe"))
                .arg("--root")
                .arg(fixtures.join(node))
                .arg("--json")
                .output()
                .unwrap();
            assert_eq!(out.status.code(), Some(want), "probe on {node}: {out:?}");
            let path = dir.path().join(format!("{node}.json"));
            std::fs::write(&path, &out.stdout).unwrap();
            meshbench_schema::read_probe(&path).expect("probe --json writes a ProbeReport");
            jsons.push(path);
        }
        let out = Command::new(bin("report"))
            .arg("fleet")
            .args(&jsons)
            .arg("--out")
            .arg(dir.path().join("fleet"))
            .output()
            .unwrap();
        // The emulated VM fails checks, so the fleet gate fails.
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        let table = String::from_utf8_lossy(&out.stdout);
        // Nodes are named by their hostname, read under each probe root.
        for node in ["legacy-vm-07", "metal-r650-12"] {
            assert!(table.contains(node), "fleet table lacks {node}:\n{table}");
        }
    }
}
