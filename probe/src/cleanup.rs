//! Temporary files that are always removed: on drop, on error, and on SIGINT/SIGTERM.
//!
//! Signals are handled without `unsafe`: [`install_signal_thread`] blocks SIGINT, SIGTERM,
//! SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 in the calling thread (call it first thing in `main`, so every thread spawned later
//! inherits the mask) and starts a thread that waits for them with `sigwait`. On a signal
//! it removes every registered temporary file and exits with status 130.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

static PENDING: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

fn pending() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
    PENDING.lock().unwrap_or_else(|e| e.into_inner())
}

/// Remove every registered temporary file (what the signal thread does).
pub fn remove_all_pending() -> usize {
    sweep(&mut pending())
}

fn sweep(paths: &mut Vec<PathBuf>) -> usize {
    let n = paths.len();
    for path in paths.drain(..) {
        let _ = std::fs::remove_file(path);
    }
    n
}

/// A temporary file registered for removal. Dropping it removes the file.
pub struct TempFile {
    path: PathBuf,
    pub file: File,
}

impl TempFile {
    /// Create `dir/.probe-io-PID-TAG.tmp` exclusively, with extra open flags (e.g.
    /// `O_DIRECT`). The path is registered *before* the file exists, so no signal can
    /// leave it behind; registering and creating happen under the registry's lock, which
    /// the signal thread keeps from its sweep to the exit, so no file appears after it.
    pub fn create(dir: &Path, tag: &str, flags: i32) -> io::Result<TempFile> {
        let path = dir.join(format!(".probe-io-{}-{tag}.tmp", std::process::id()));
        let mut registry = pending();
        registry.push(path.clone());
        use std::os::unix::fs::OpenOptionsExt;
        let opened = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .custom_flags(flags)
            .open(&path);
        match opened {
            Ok(file) => Ok(TempFile { path, file }),
            Err(e) => {
                registry.retain(|p| p != &path);
                Err(e)
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        pending().retain(|p| p != &self.path);
    }
}

/// The signals whose default action would end probe without removing its files.
const SIGNALS: [nix::sys::signal::Signal; 6] = {
    use nix::sys::signal::Signal::*;
    [SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2]
};

/// Remove `.probe-io-<pid>-*.tmp` files in `dir` left by a probe that no longer runs (a
/// SIGKILL leaves them; nothing else does). Returns what was removed.
pub fn remove_stale(dir: &Path) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return removed;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(".probe-io-")
            .filter(|n| n.ends_with(".tmp"))
            .and_then(|n| n.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let alive = pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists();
        if !alive && std::fs::remove_file(e.path()).is_ok() {
            removed.push(e.path());
        }
    }
    removed
}

/// Block SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 here and handle them on a
/// dedicated thread: remove temporary files, say so on stderr, exit 130.
pub fn install_signal_thread() -> io::Result<()> {
    use nix::sys::signal::SigSet;
    let mut set = SigSet::empty();
    for sig in SIGNALS {
        set.add(sig);
    }
    set.thread_block().map_err(io::Error::from)?;
    std::thread::Builder::new()
        .name("probe-signals".into())
        .spawn(move || {
            if let Ok(sig) = set.wait() {
                // the lock is held until the process is gone: no new file after the sweep
                let mut registry = pending();
                let n = sweep(&mut registry);
                eprintln!("probe: interrupted by {sig}; removed {n} temporary file(s)");
                std::process::exit(130);
            }
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_of_dead_probes_are_removed_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        // pid_max is at most 2^22: this pid never runs
        let dead = dir.path().join(".probe-io-999999999-wal.tmp");
        let mine = dir
            .path()
            .join(format!(".probe-io-{}-wal.tmp", std::process::id()));
        let other = dir.path().join("data.tmp");
        for p in [&dead, &mine, &other] {
            std::fs::write(p, "x").unwrap();
        }
        assert_eq!(remove_stale(dir.path()), vec![dead.clone()]);
        assert!(!dead.exists() && mine.exists() && other.exists());
    }

    #[test]
    fn temp_file_is_removed_on_drop_and_by_the_pending_sweep() {
        let dir = tempfile::tempdir().unwrap();
        let t = TempFile::create(dir.path(), "a", 0).unwrap();
        let p = t.path().to_path_buf();
        assert!(p.exists());
        drop(t);
        assert!(!p.exists());
        let t = TempFile::create(dir.path(), "b", 0).unwrap();
        let p = t.path().to_path_buf();
        assert!(remove_all_pending() >= 1);
        assert!(!p.exists());
        drop(t);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
