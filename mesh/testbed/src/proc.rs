//! A process's own counters from `/proc/<pid>` (read with procfs-core): CPU time and peak
//! resident memory, for a sidecar that runs without a cgroup.

use procfs_core::process::{Stat, Status};
use procfs_core::FromRead;

fn ticks_per_second() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .map(|t| t.max(1) as u64)
        .unwrap_or(100)
}

/// utime + stime of a process, in µs (0 when unreadable).
pub fn cpu_usec(pid: u32) -> u64 {
    match Stat::from_file(format!("/proc/{pid}/stat")) {
        Ok(s) => (s.utime + s.stime) * 1_000_000 / ticks_per_second(),
        Err(_) => 0,
    }
}

/// Peak resident set size of a process (`VmHWM`), in bytes.
pub fn peak_rss(pid: u32) -> Option<u64> {
    Status::from_file(format!("/proc/{pid}/status"))
        .ok()?
        .vmhwm
        .map(|kb| kb * 1024)
}

#[cfg(test)]
mod tests {
    #[test]
    fn this_process_has_used_cpu_and_memory() {
        let me = std::process::id();
        let spin = std::time::Instant::now();
        while spin.elapsed() < std::time::Duration::from_millis(30) {
            std::hint::black_box(0u64);
        }
        assert!(super::cpu_usec(me) > 0);
        assert!(super::peak_rss(me).unwrap() > 1 << 20);
        assert_eq!(super::cpu_usec(u32::MAX), 0);
    }
}
