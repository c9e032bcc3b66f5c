//! What the mesh has running right now, for a last-resort cleanup when the process must
//! exit without unwinding (loadgen's second Ctrl-C calls [`emergency_cleanup`] before
//! `exit(130)`): child pids are killed and reaped, cgroup directories removed.
use std::path::PathBuf;
use std::sync::Mutex;

static PIDS: Mutex<Vec<u32>> = Mutex::new(Vec::new());
static CGROUPS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

pub(crate) fn add_pid(pid: u32) {
    PIDS.lock().unwrap_or_else(|e| e.into_inner()).push(pid);
}

pub(crate) fn remove_pid(pid: u32) {
    PIDS.lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|&p| p != pid);
}

pub(crate) fn add_cgroup(dir: PathBuf) {
    CGROUPS.lock().unwrap_or_else(|e| e.into_inner()).push(dir);
}

pub(crate) fn remove_cgroup(dir: &PathBuf) {
    CGROUPS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|d| d != dir);
}

/// Kill and reap every mesh child still running and remove every mesh cgroup still
/// present. Safe to call at any time; the normal path ([`crate::RunningMesh::down`] and
/// drops) leaves nothing for it to do.
pub fn emergency_cleanup() {
    use nix::sys::signal::{kill, Signal};
    use nix::sys::wait::waitpid;
    use nix::unistd::Pid;
    let pids: Vec<u32> = std::mem::take(&mut *PIDS.lock().unwrap_or_else(|e| e.into_inner()));
    for &p in &pids {
        let _ = kill(Pid::from_raw(p as i32), Signal::SIGKILL);
    }
    for &p in &pids {
        let _ = waitpid(Pid::from_raw(p as i32), None);
    }
    let dirs: Vec<PathBuf> =
        std::mem::take(&mut *CGROUPS.lock().unwrap_or_else(|e| e.into_inner()));
    for d in dirs.iter().rev() {
        for _ in 0..100 {
            match std::fs::remove_dir(d) {
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                    std::thread::sleep(std::time::Duration::from_millis(10))
                }
                _ => break,
            }
        }
    }
}
