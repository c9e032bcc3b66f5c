//! Reading and writing the contract files: atomic writes (temp file, fsync, rename) and
//! versioned JSON readers whose every error names the file.

use serde::Serialize;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::{ProbeReport, RunResult, PROBE_SCHEMA_VERSION, RUN_FILE, RUN_SCHEMA_VERSION};

/// Errors reading or writing the contract files. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a valid {what}: {source}")]
    Parse {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "{path}: schema version {found} is not supported (this build reads version {supported})"
    )]
    Version {
        path: PathBuf,
        found: u64,
        supported: u32,
    },
}

/// Most bytes any tool reads from one input file it is given (scenario, run.json, probe
/// report, TLS file, profile): 64 MiB. A larger file is refused, not read.
pub const MAX_INPUT_BYTES: u64 = 64 << 20;

/// Open a regular file for reading, refusing anything else (a FIFO, a device, a
/// directory) without blocking: opened with O_NONBLOCK, checked with fstat.
pub fn open_regular(path: &Path) -> std::io::Result<(std::fs::File, std::fs::Metadata)> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let meta = f.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other(
            "not a regular file (a FIFO, device or directory is not read)",
        ));
    }
    Ok((f, meta))
}

/// Read a regular file, at most `limit` bytes. Anything else (a FIFO, a device such as
/// /dev/zero, a directory) is refused without blocking: the file is opened with
/// O_NONBLOCK and checked with fstat before a byte is read, so it cannot be swapped for a
/// FIFO in between. Files that report no size (/proc) are read up to `limit` too.
pub fn read_regular(path: &Path, limit: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let (f, meta) = open_regular(path)?;
    if meta.len() > limit {
        return Err(std::io::Error::other(format!(
            "{} bytes is more than the {limit} this tool reads",
            meta.len()
        )));
    }
    let mut buf = Vec::with_capacity(meta.len() as usize);
    f.take(limit + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > limit {
        return Err(std::io::Error::other(format!(
            "more than the {limit} bytes this tool reads"
        )));
    }
    Ok(buf)
}

/// Write `bytes` to `path` atomically: a temp file in the same directory, fsync, rename.
/// A reader never sees a half-written file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), SchemaError> {
    write_atomic_mode(path, bytes, 0o644)
}

/// [`write_atomic`] with the file's mode: the temp file is created exclusively (a planted
/// file or symlink at its name is removed, never followed) with `mode` (0o600 for private
/// keys), whatever existed at `path` before; the rename replaces `path` itself (a symlink
/// there is replaced, its target untouched).
pub fn write_atomic_mode(path: &Path, bytes: &[u8], mode: u32) -> Result<(), SchemaError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let io = |source| SchemaError::Io {
        path: path.to_path_buf(),
        source,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        // a leftover of a dead process with our pid, or something planted
        match std::fs::remove_file(&tmp) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)?;
        // the umask may have taken bits away, never added any: set exactly `mode`
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io)
}

/// Serialize `value` as pretty JSON and write it atomically.
pub fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> Result<(), SchemaError> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|source| SchemaError::Parse {
        path: path.to_path_buf(),
        what: "JSON value",
        source,
    })?;
    bytes.push(b'\n');
    write_atomic(path, &bytes)
}

fn read_versioned<T: serde::de::DeserializeOwned>(
    path: &Path,
    what: &'static str,
    supported: u32,
) -> Result<T, SchemaError> {
    let bytes = read_regular(path, MAX_INPUT_BYTES).map_err(|source| SchemaError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_versioned(&bytes, path, what, supported)
}

/// Parse the bytes of a run.json (`path` names it in errors).
pub fn parse_run(bytes: &[u8], path: &Path) -> Result<RunResult, SchemaError> {
    parse_versioned(bytes, path, "run.json", RUN_SCHEMA_VERSION)
}

/// Parse the bytes of a probe report (`path` names it in errors).
pub fn parse_probe(bytes: &[u8], path: &Path) -> Result<ProbeReport, SchemaError> {
    parse_versioned(bytes, path, "probe report", PROBE_SCHEMA_VERSION)
}

fn parse_versioned<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    path: &Path,
    what: &'static str,
    supported: u32,
) -> Result<T, SchemaError> {
    let parse = |source| SchemaError::Parse {
        path: path.to_path_buf(),
        what,
        source,
    };
    // Check the version before the shape, so a future file says "version" not "field".
    let raw: serde_json::Value = serde_json::from_slice(bytes).map_err(parse)?;
    let found = raw
        .get("schema_version")
        .and_then(|v| v.as_u64())
        .unwrap_or(0);
    if found != u64::from(supported) {
        return Err(SchemaError::Version {
            path: path.to_path_buf(),
            found,
            supported,
        });
    }
    serde_json::from_value(raw).map_err(parse)
}

/// Read a `run.json` (or a run directory containing one), checking its schema version.
pub fn read_run(path: &Path) -> Result<RunResult, SchemaError> {
    let file = if path.is_dir() {
        path.join(RUN_FILE)
    } else {
        path.to_path_buf()
    };
    read_versioned(&file, "run.json", RUN_SCHEMA_VERSION)
}

/// Read a probe report written by `probe --json`, checking its schema version.
pub fn read_probe(path: &Path) -> Result<ProbeReport, SchemaError> {
    read_versioned(path, "probe report", PROBE_SCHEMA_VERSION)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::*;
    use std::collections::BTreeMap;

    fn sample_run() -> RunResult {
        RunResult {
            schema_version: RUN_SCHEMA_VERSION,
            tool: ToolInfo::new("loadgen", "0.1.0"),
            scenario: "smoke".into(),
            scenario_file: Some("scenarios/smoke.toml".into()),
            started_at: "2026-11-27T21:00:00Z".into(),
            finished_at: None,
            interrupted: true,
            plan: serde_json::json!({"rate": 100}),
            host: HostFacts::default(),
            slo: vec!["p99<50ms".into()],
            warnings: vec![],
            cells: vec![CellResult {
                id: "cpu=100m,log=off".into(),
                settings: CellSettings::default(),
                mode: LoadMode::Open,
                protocol: "http1".into(),
                duration_s: 1.0,
                requests: 10,
                ok: 9,
                achieved_rate: 10.0,
                errors: ErrorCounts {
                    http_5xx: 1,
                    ..Default::default()
                },
                status_classes: BTreeMap::new(),
                status_latency: BTreeMap::new(),
                latency: Latency::default(),
                subsets: vec![],
                hlog: Some("cell-0.hlog".into()),
                sidecar: None,
                sidecars: vec![],
                driver: None,
                failed: None,
                worker_start: None,
                parts_hlog: None,
                mesh_cost: None,
                generator: None,
                checks: vec![CheckResult {
                    name: "canary_split".into(),
                    status: CheckStatus::Failed,
                    summary: "off".into(),
                    details: serde_json::Value::Null,
                }],
                interrupted: true,
                search: None,
            }],
            checks: vec![],
            planned_cells: vec!["cpu=100m,log=off".into(), "cpu=500m,log=off".into()],
            planned_checks: vec![],
            driver: None,
            worker: None,
            merged_from: vec![],
        }
    }

    #[test]
    fn added_latency_is_against_the_baseline_of_the_same_load() {
        let cell = |id: &str, mode: &str, rate: f64, p99: f64| {
            let mut c = sample_run().cells.remove(0);
            c.id = id.into();
            c.settings.mesh_mode = Some(mode.into());
            c.settings.rate = Some(rate);
            c.settings.connections = 16;
            c.latency.corrected.p50_us = p99 / 2.0;
            c.latency.corrected.p90_us = p99 * 0.8;
            c.latency.corrected.p99_us = p99;
            c.latency.corrected.p999_us = p99 * 2.0;
            c
        };
        let mut cells = vec![
            cell("mode=baseline,rate=100", "baseline", 100.0, 1000.0),
            cell("mode=baseline,rate=200", "baseline", 200.0, 1500.0),
            cell("mode=server,rate=100", "server", 100.0, 1800.0),
            cell("mode=both,rate=200", "both", 200.0, 1200.0),
            cell("mode=both,rate=300", "both", 300.0, 5000.0),
        ];
        fill_added_latency(&mut cells);
        assert!(cells[0].mesh_cost.is_none() && cells[1].mesh_cost.is_none());
        let a = cells[2].mesh_cost.as_ref().unwrap().added.as_ref().unwrap();
        assert_eq!(a.baseline, "mode=baseline,rate=100");
        assert_eq!((a.p50_us, a.p99_us, a.p999_us), (400.0, 800.0, 1600.0));
        // faster than its baseline: a negative figure, not hidden
        let a = cells[3].mesh_cost.as_ref().unwrap().added.as_ref().unwrap();
        assert_eq!(
            (a.baseline.as_str(), a.p99_us),
            ("mode=baseline,rate=200", -300.0)
        );
        let m = cells[4].mesh_cost.as_ref().unwrap();
        assert!(m.added.is_none());
        assert!(
            m.note
                .as_deref()
                .unwrap()
                .contains("same rate and connections"),
            "{m:?}"
        );
        // no baseline at all: the note says how to get one
        let mut cells = vec![cell("mode=server", "server", 100.0, 1800.0)];
        fill_added_latency(&mut cells);
        let m = cells[0].mesh_cost.as_ref().unwrap();
        assert!(
            m.added.is_none() && m.note.as_deref().unwrap().contains("add \"baseline\""),
            "{m:?}"
        );
    }

    #[test]
    fn run_round_trips_through_disk() {
        let dir = tempfile::tempdir().unwrap();
        let run = sample_run();
        write_json_atomic(&dir.path().join(RUN_FILE), &run).unwrap();
        let back = read_run(dir.path()).unwrap();
        assert_eq!(back, run);
        assert!(!back.checks_passed());
        assert_eq!(back.cells[0].errors.total(), 1);
        assert_eq!(back.missing_cells(), ["cpu=500m,log=off"]);
        let why = back.incomplete().join("; ");
        assert!(
            why.contains("did not finish") && why.contains("1 of 2 planned cells"),
            "{why}"
        );
        // no temp file left beside it
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn unknown_version_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut v = serde_json::to_value(sample_run()).unwrap();
        v["schema_version"] = 99.into();
        let p = dir.path().join(RUN_FILE);
        std::fs::write(&p, v.to_string()).unwrap();
        let err = read_run(&p).unwrap_err().to_string();
        assert!(err.contains("run.json"), "{err}");
        assert!(err.contains("schema version 99"), "{err}");
    }

    #[test]
    fn fifos_devices_and_huge_files_are_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("run.json");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let e = read_run(&fifo).unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
        let e = read_regular(Path::new("/dev/zero"), 1024)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a regular file"), "{e}");
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'x'; 2048]).unwrap();
        assert!(read_regular(&big, 1024).is_err());
        assert_eq!(read_regular(&big, 4096).unwrap().len(), 2048);
        // /proc files report size 0 and are still read
        assert!(!read_regular(Path::new("/proc/self/stat"), 4096)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn atomic_writes_set_the_mode_and_never_follow_a_planted_link() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "keep me").unwrap();
        // a key file that exists with a loose mode, and a symlink planted at another
        let key = dir.path().join("key.pem");
        std::fs::write(&key, "old").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_atomic_mode(&key, b"secret", 0o600).unwrap();
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let link = dir.path().join("client-key.pem");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        let tmp_link = dir
            .path()
            .join(format!(".other.pem.{}.tmp", std::process::id()));
        std::os::unix::fs::symlink(&victim, &tmp_link).unwrap();
        write_atomic_mode(&link, b"secret", 0o600).unwrap();
        write_atomic_mode(&dir.path().join("other.pem"), b"x", 0o600).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me");
        assert!(!std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(std::fs::read_to_string(&link).unwrap(), "secret");
    }

    #[test]
    fn truncated_file_is_a_parse_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(RUN_FILE);
        let text = serde_json::to_string(&sample_run()).unwrap();
        std::fs::write(&p, &text[..text.len() / 2]).unwrap();
        let err = read_run(&p).unwrap_err().to_string();
        assert!(err.starts_with(&p.display().to_string()), "{err}");
    }
}
