//! End-to-end tests: each module runs the built binaries as a user would.
//!
//! Modules:
//! - `cli`: every binary answers --help and --version.

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
