//! One cgroup: moving a process in, reading its counters (`cpu.stat` normalised to µs
//! across v1 and v2, memory peak), and removing it (killing what is left) on drop.

use super::{io, read_words, write, CgroupError, Version};
use meshbench_schema::CpuStat;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// One cgroup (one directory per v1 hierarchy used). Removed on drop.
#[derive(Debug)]
pub struct Cgroup {
    pub(super) version: Version,
    pub(super) cpu_dir: PathBuf,
    pub(super) cpuacct_dir: Option<PathBuf>,
    pub(super) memory_dir: Option<PathBuf>,
    pub(super) created: Vec<PathBuf>,
    pub(super) removed: bool,
}

/// Parse `key value` lines into a lookup.
fn kv(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        (it.next()? == key).then(|| it.next()?.parse().ok())?
    })
}

impl Cgroup {
    pub fn version(&self) -> Version {
        self.version
    }

    /// A handle that only reads counters (for a sampler thread); it never removes anything.
    pub fn reader(&self) -> Cgroup {
        Cgroup {
            version: self.version,
            cpu_dir: self.cpu_dir.clone(),
            cpuacct_dir: self.cpuacct_dir.clone(),
            memory_dir: self.memory_dir.clone(),
            created: Vec::new(),
            removed: true,
        }
    }

    /// The cgroup directories (one per hierarchy on v1).
    pub fn dirs(&self) -> &[PathBuf] {
        &self.created
    }

    /// Move process `pid` (all its threads) into this cgroup.
    pub fn add_pid(&self, pid: u32) -> Result<(), CgroupError> {
        let mut dirs = vec![self.cpu_dir.clone()];
        dirs.extend(self.cpuacct_dir.clone());
        if self.version == Version::V1 {
            dirs.extend(self.memory_dir.clone());
        }
        for d in dirs {
            write(&d.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    /// Tasks (process ids) in the cgroup.
    pub fn pids(&self) -> Vec<u32> {
        let mut out = Vec::new();
        for d in &self.created {
            for w in read_words(&d.join("cgroup.procs")) {
                if let Ok(p) = w.parse::<u32>() {
                    if !out.contains(&p) {
                        out.push(p);
                    }
                }
            }
        }
        out
    }

    /// Absolute `cpu.stat` counters (µs), normalised across v1 and v2.
    pub fn cpu_stat(&self) -> Result<CpuStat, CgroupError> {
        let p = self.cpu_dir.join("cpu.stat");
        let text = std::fs::read_to_string(&p).map_err(io(&p, "read"))?;
        match self.version {
            Version::V2 => Ok(CpuStat {
                usage_usec: kv(&text, "usage_usec").unwrap_or(0),
                nr_periods: kv(&text, "nr_periods").unwrap_or(0),
                nr_throttled: kv(&text, "nr_throttled").unwrap_or(0),
                throttled_usec: kv(&text, "throttled_usec").unwrap_or(0),
            }),
            Version::V1 => {
                let usage_ns = {
                    let dir = self.cpuacct_dir.as_ref().unwrap_or(&self.cpu_dir);
                    let p = dir.join("cpuacct.usage");
                    match std::fs::read_to_string(&p) {
                        Ok(s) => s.trim().parse::<u64>().unwrap_or(0),
                        // No cpuacct: sum the tasks' own CPU time.
                        Err(_) => self
                            .pids()
                            .iter()
                            .map(|&p| crate::proc::cpu_usec(p) * 1000)
                            .sum(),
                    }
                };
                Ok(CpuStat {
                    usage_usec: usage_ns / 1000,
                    nr_periods: kv(&text, "nr_periods").unwrap_or(0),
                    nr_throttled: kv(&text, "nr_throttled").unwrap_or(0),
                    throttled_usec: kv(&text, "throttled_usec")
                        .or_else(|| kv(&text, "throttled_time").map(|ns| ns / 1000))
                        .unwrap_or(0),
                })
            }
        }
    }

    /// Peak memory of the cgroup in bytes (`memory.peak` / `memory.max_usage_in_bytes`),
    /// when a memory group exists.
    pub fn memory_peak(&self) -> Option<u64> {
        let dir = self.memory_dir.as_ref()?;
        let file = match self.version {
            Version::V2 => "memory.peak",
            Version::V1 => "memory.max_usage_in_bytes",
        };
        std::fs::read_to_string(dir.join(file))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Kill remaining tasks, wait until the group is empty, remove the directories.
    pub fn remove(&mut self) -> Result<(), CgroupError> {
        if self.removed {
            return Ok(());
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let pids = self.pids();
            if pids.is_empty() {
                break;
            }
            for p in pids {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(p as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            if Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut first_err = None;
        for d in self.created.iter().rev() {
            let mut tries = 0;
            loop {
                match std::fs::remove_dir(d) {
                    Ok(()) => {
                        crate::live::remove_cgroup(d);
                        break;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        crate::live::remove_cgroup(d);
                        break;
                    }
                    // EBUSY while the last task is still exiting.
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) && tries < 200 => {
                        tries += 1;
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Err(e) => {
                        first_err.get_or_insert(CgroupError::Io {
                            path: d.clone(),
                            op: "rmdir",
                            source: e,
                        });
                        break;
                    }
                }
            }
        }
        self.removed = true;
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        if let Err(e) = self.remove() {
            eprintln!("warning: cgroup not removed: {e}");
        }
    }
}
