//! Per-sidecar cgroups: the kernel's CFS quota, as Kubernetes applies `limits.cpu`.
//!
//! cgroup v2 (`cpu.max` = "QUOTA PERIOD", `memory.max`, `cpu.stat`, `memory.peak`) and v1
//! (`cpu.cfs_quota_us`/`cpu.cfs_period_us`, `memory.limit_in_bytes`, `cpu.stat` +
//! `cpuacct.usage`, `memory.max_usage_in_bytes`) are both written directly. The version is
//! found from `/proc/self/mountinfo`: v2 when a cgroup2 mount has the `cpu` controller,
//! else the v1 `cpu` hierarchy. New groups are made under the caller's own cgroup (from
//! `/proc/self/cgroup`) or, on v2, the nearest writable ancestor with `cpu` delegated, so
//! a systemd user session's delegated subtree works without root.
//!
//! A [`Cgroup`] removes itself on drop: remaining tasks are killed, then the directories
//! are removed.
mod group;
pub use group::Cgroup;

use procfs_core::process::MountInfo;
use procfs_core::{FromBufRead, ProcessCGroups};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// The CFS period Kubernetes uses (kubelet's default `cpu-cfs-quota-period`), in µs.
pub const CFS_PERIOD_US: u64 = 100_000;

/// The CFS quota (µs per [`CFS_PERIOD_US`]) Kubernetes writes for a CPU limit in
/// millicores: `100m` -> 10 000 µs, `2` -> 200 000 µs; kubelet's minimum is 1000 µs.
pub fn cfs_quota_us(millis: u64) -> u64 {
    (millis.saturating_mul(CFS_PERIOD_US) / 1000).max(1000)
}

/// Why cgroups could not be used; every variant names what is missing.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("{path}: {op}: {source}")]
    Io {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("no usable cgroup CPU controller: {0}")]
    Unavailable(String),
}

pub(crate) fn io<'a>(
    path: &'a Path,
    op: &'static str,
) -> impl FnOnce(std::io::Error) -> CgroupError + 'a {
    move |source| CgroupError::Io {
        path: path.to_path_buf(),
        op,
        source,
    }
}

/// cgroup v1 or v2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Version {
    V1,
    V2,
}

impl Version {
    pub fn as_str(self) -> &'static str {
        match self {
            Version::V1 => "v1",
            Version::V2 => "v2",
        }
    }
}

/// Where new cgroups are made.
#[derive(Debug, Clone, PartialEq)]
pub enum Cgroups {
    V2 {
        /// Directory new groups are created in (cpu enabled in its subtree_control).
        parent: PathBuf,
    },
    V1 {
        cpu: PathBuf,
        /// Parent in the cpuacct hierarchy, when mounted separately from cpu.
        cpuacct: Option<PathBuf>,
        memory: Option<PathBuf>,
    },
}

/// Limits for one cgroup. `cpu_millis: None` means no quota (usage is still measured).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    pub cpu_millis: Option<u64>,
    pub memory_bytes: Option<u64>,
}

/// One mount from mountinfo: mount point, fs type, super options.
struct Mount {
    point: PathBuf,
    fstype: String,
    options: Vec<String>,
}

/// The mounts of a mountinfo text (procfs-core parses it; lines it cannot parse are skipped).
fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|l| MountInfo::from_line(l).ok())
        .map(|m| Mount {
            point: PathBuf::from(unescape_mount(&m.mount_point.to_string_lossy())),
            fstype: m.fs_type,
            options: m.super_options.into_keys().collect(),
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as octal (`\040`); procfs-core
/// leaves the mount point as written.
fn unescape_mount(s: &str) -> String {
    let mut out = Vec::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            if let Some(v) = s
                .get(i + 1..i + 4)
                .and_then(|o| u8::from_str_radix(o, 8).ok())
            {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `/proc/self/cgroup`: (controllers, path) per line; v2 has no controllers.
fn parse_proc_cgroup(text: &str) -> Vec<(Vec<String>, String)> {
    ProcessCGroups::from_buf_read(text.as_bytes())
        .map(|c| {
            c.0.into_iter()
                .map(|g| (g.controllers, g.pathname))
                .collect()
        })
        .unwrap_or_default()
}

fn join_rel(base: &Path, cg_path: &str) -> PathBuf {
    base.join(cg_path.trim_start_matches('/'))
}

fn writable(p: &Path) -> bool {
    nix::unistd::access(p, nix::unistd::AccessFlags::W_OK).is_ok()
}

pub(crate) fn read_words(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .map(|s| s.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}

impl Cgroups {
    /// Find this host's cgroup setup from `/proc/self/mountinfo` and `/proc/self/cgroup`.
    pub fn detect() -> Result<Cgroups, CgroupError> {
        let mi = Path::new("/proc/self/mountinfo");
        let pc = Path::new("/proc/self/cgroup");
        let mountinfo = std::fs::read_to_string(mi).map_err(io(mi, "read"))?;
        let proc_cgroup = std::fs::read_to_string(pc).map_err(io(pc, "read"))?;
        Self::from_texts(&mountinfo, &proc_cgroup, Path::new("/"))
    }

    /// Like [`Cgroups::detect`] from given file contents, with mount points taken relative
    /// to `root` (a fake cgroupfs in tests).
    pub fn from_texts(
        mountinfo: &str,
        proc_cgroup: &str,
        root: &Path,
    ) -> Result<Cgroups, CgroupError> {
        let mounts = parse_mountinfo(mountinfo);
        let own = parse_proc_cgroup(proc_cgroup);
        let at = |p: &Path| root.join(p.strip_prefix("/").unwrap_or(p));
        let mut tried = Vec::new();

        // v2 first, when its cpu controller is available (not bound to v1).
        if let Some(m) = mounts.iter().find(|m| m.fstype == "cgroup2") {
            let base = at(&m.point);
            let own_path = own
                .iter()
                .find(|(c, _)| c.is_empty())
                .map(|(_, p)| p.clone())
                .unwrap_or_else(|| "/".into());
            if read_words(&base.join("cgroup.controllers"))
                .iter()
                .any(|c| c == "cpu")
            {
                let mut cand = Some(join_rel(&base, &own_path));
                while let Some(dir) = cand {
                    if !dir.starts_with(&base) {
                        break;
                    }
                    match Self::usable_v2_parent(&dir) {
                        Ok(()) => return Ok(Cgroups::V2 { parent: dir }),
                        Err(why) => tried.push(why),
                    }
                    cand = dir.parent().map(Path::to_path_buf);
                }
            } else {
                tried.push(format!(
                    "{}: cgroup2 has no cpu controller (bound to cgroup v1)",
                    base.join("cgroup.controllers").display()
                ));
            }
        }

        let v1 = |ctrl: &str| -> Option<PathBuf> {
            let m = mounts
                .iter()
                .find(|m| m.fstype == "cgroup" && m.options.iter().any(|o| o == ctrl))?;
            let own_path = own
                .iter()
                .find(|(c, _)| c.iter().any(|c| c == ctrl))
                .map(|(_, p)| p.clone())
                .unwrap_or_else(|| "/".into());
            Some(join_rel(&at(&m.point), &own_path))
        };
        match v1("cpu") {
            Some(cpu) if writable(&cpu) && cpu.join("cpu.cfs_quota_us").exists() => {
                let cpuacct = v1("cpuacct").filter(|p| p != &cpu && writable(p));
                let memory = v1("memory").filter(|p| writable(p));
                Ok(Cgroups::V1 {
                    cpu,
                    cpuacct,
                    memory,
                })
            }
            Some(cpu) => {
                tried.push(format!(
                    "{}: not writable or has no cpu.cfs_quota_us ({})",
                    cpu.display(),
                    nix::unistd::access(&cpu, nix::unistd::AccessFlags::W_OK)
                        .err()
                        .map(|e| e.desc().to_string())
                        .unwrap_or_else(|| "quota file missing".into())
                ));
                Err(CgroupError::Unavailable(tried.join("; ")))
            }
            None => {
                if tried.is_empty() {
                    tried.push(
                        "no cgroup or cgroup2 filesystem is mounted (see /proc/self/mountinfo)"
                            .into(),
                    );
                } else {
                    tried.push("no cgroup v1 cpu hierarchy is mounted".into());
                }
                Err(CgroupError::Unavailable(tried.join("; ")))
            }
        }
    }

    /// A v2 directory we can create children in with the cpu controller enabled.
    fn usable_v2_parent(dir: &Path) -> Result<(), String> {
        if !read_words(&dir.join("cgroup.controllers"))
            .iter()
            .any(|c| c == "cpu")
        {
            return Err(format!("{}: cpu controller not available", dir.display()));
        }
        if !writable(dir) || !writable(&dir.join("cgroup.subtree_control")) {
            return Err(format!("{}: not writable (EACCES)", dir.display()));
        }
        let sc = dir.join("cgroup.subtree_control");
        if !read_words(&sc).iter().any(|c| c == "cpu") {
            // Fails with EBUSY in a non-root cgroup that has processes of its own.
            if let Err(e) = std::fs::write(&sc, "+cpu") {
                return Err(format!("{}: writing +cpu: {e}", sc.display()));
            }
        }
        Ok(())
    }

    pub fn version(&self) -> Version {
        match self {
            Cgroups::V2 { .. } => Version::V2,
            Cgroups::V1 { .. } => Version::V1,
        }
    }

    /// Create a cgroup named `name` with `limits`. The name should be unique per run
    /// (see [`unique_name`]).
    pub fn create(&self, name: &str, limits: &Limits) -> Result<Cgroup, CgroupError> {
        let mut cg = Cgroup {
            version: self.version(),
            cpu_dir: PathBuf::new(),
            cpuacct_dir: None,
            memory_dir: None,
            created: Vec::new(),
            removed: false,
        };
        let mkdir = |cg: &mut Cgroup, dir: PathBuf| -> Result<PathBuf, CgroupError> {
            std::fs::create_dir(&dir).map_err(io(&dir, "mkdir"))?;
            crate::live::add_cgroup(dir.clone());
            cg.created.push(dir.clone());
            Ok(dir)
        };
        // On error, `cg` is dropped and removes what was already created.
        match self {
            Cgroups::V2 { parent } => {
                if limits.memory_bytes.is_some() {
                    let sc = parent.join("cgroup.subtree_control");
                    if !read_words(&sc).iter().any(|c| c == "memory") {
                        std::fs::write(&sc, "+memory").map_err(io(&sc, "write +memory"))?;
                    }
                }
                let dir = mkdir(&mut cg, parent.join(name))?;
                let quota = match limits.cpu_millis {
                    Some(m) => cfs_quota_us(m).to_string(),
                    None => "max".to_string(),
                };
                write(&dir.join("cpu.max"), &format!("{quota} {CFS_PERIOD_US}"))?;
                if let Some(b) = limits.memory_bytes {
                    write(&dir.join("memory.max"), &b.to_string())?;
                    cg.memory_dir = Some(dir.clone());
                }
                cg.cpu_dir = dir;
            }
            Cgroups::V1 {
                cpu,
                cpuacct,
                memory,
            } => {
                let dir = mkdir(&mut cg, cpu.join(name))?;
                write(&dir.join("cpu.cfs_period_us"), &CFS_PERIOD_US.to_string())?;
                let quota = match limits.cpu_millis {
                    Some(m) => cfs_quota_us(m) as i64,
                    None => -1,
                };
                write(&dir.join("cpu.cfs_quota_us"), &quota.to_string())?;
                cg.cpu_dir = dir;
                if let Some(acct) = cpuacct {
                    cg.cpuacct_dir = Some(mkdir(&mut cg, acct.join(name))?);
                }
                if let Some(b) = limits.memory_bytes {
                    let Some(mem) = memory else {
                        return Err(CgroupError::Unavailable(
                            "a memory limit was asked for, but no writable cgroup v1 memory hierarchy is mounted".into(),
                        ));
                    };
                    let dir = mkdir(&mut cg, mem.join(name))?;
                    write(&dir.join("memory.limit_in_bytes"), &b.to_string())?;
                    cg.memory_dir = Some(dir);
                }
            }
        }
        Ok(cg)
    }
}

impl Cgroups {
    /// Remove empty cgroups left by a loadgen that was killed with SIGKILL (named
    /// `meshbench-<pid>-...` for a pid that no longer runs). Its children exit with it, but
    /// nobody is left to rmdir their groups. Returns the directories removed.
    pub fn remove_stale(&self) -> Vec<PathBuf> {
        let parents: Vec<&PathBuf> = match self {
            Cgroups::V2 { parent } => vec![parent],
            Cgroups::V1 {
                cpu,
                cpuacct,
                memory,
            } => std::iter::once(cpu)
                .chain(cpuacct.iter())
                .chain(memory.iter())
                .collect(),
        };
        let mut removed = Vec::new();
        for parent in parents {
            let Ok(entries) = std::fs::read_dir(parent) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let Some(pid) = name
                    .strip_prefix("meshbench-")
                    .and_then(|rest| rest.split('-').next())
                    .and_then(|p| p.parse::<u32>().ok())
                else {
                    continue;
                };
                let dir = entry.path();
                let empty = std::fs::read_to_string(dir.join("cgroup.procs"))
                    .map(|t| t.trim().is_empty())
                    .unwrap_or(true);
                if !Path::new(&format!("/proc/{pid}")).exists()
                    && empty
                    && std::fs::remove_dir(&dir).is_ok()
                {
                    removed.push(dir);
                }
            }
        }
        removed
    }
}

pub(crate) fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    std::fs::write(path, value).map_err(io(path, "write"))
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// `meshbench-<pid>-<n>-<tag>`: unique per process, and findable by the process id of the
/// loadgen that made it (tests look for leftovers by this prefix).
pub fn unique_name(tag: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let tag: String = tag
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(40)
        .collect();
    format!("{}{}-{tag}", name_prefix(std::process::id()), n)
}

/// The prefix of every cgroup created by process `pid`.
pub fn name_prefix(pid: u32) -> String {
    format!("meshbench-{pid}-")
}

#[cfg(test)]
mod tests;
