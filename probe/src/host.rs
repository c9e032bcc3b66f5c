//! Root-relative access to a host's /proc and /sys.
//!
//! Every read of probe goes through a [`Host`], so every check runs on a fixture tree as well
//! as on the live host (`root == "/"`). Paths given to a `Host` are absolute host paths
//! (`/proc/stat`); they are looked up under the root. Symbolic links are resolved
//! lexically *inside* the root ([`Host::canonical`]) before anything is opened, and the
//! file is then opened without following links, so a tree's links (relative or absolute)
//! never reach a file outside it. Only regular files are read (a FIFO would block), at
//! most [`MAX_READ`] bytes (a gzip file: at most [`MAX_GUNZIP`] decompressed), and text
//! from a file is shown only as a bounded, escaped [`excerpt`].

use std::io::Read;
use std::path::{Component, Path, PathBuf};

/// Most bytes read from one file under the root.
pub const MAX_READ: u64 = 4 << 20;
/// Most bytes a gzip file (/proc/config.gz) may decompress to.
pub const MAX_GUNZIP: u64 = 16 << 20;
/// Longest excerpt of a file's text shown in a finding or error.
pub const MAX_EXCERPT: usize = 120;

/// `text` as a file's excerpt may be shown: see [`bounded`], at most [`MAX_EXCERPT`].
pub fn excerpt(text: &str) -> String {
    bounded(text, MAX_EXCERPT)
}

/// `text` with control characters escaped, at most `max` characters (cut with `…`).
pub fn bounded(text: &str, max: usize) -> String {
    let mut out = String::new();
    for (n, c) in text.chars().enumerate() {
        if n == max {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// An error reading a file under the probe root. Always names the host path.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {msg}")]
    Parse { path: String, msg: String },
}

impl HostError {
    /// A parse error; the message is folded onto one line and bounded.
    pub fn parse(path: &str, msg: impl Into<String>) -> Self {
        let msg: String = msg.into();
        HostError::Parse {
            path: path.to_string(),
            msg: excerpt(&msg.split_whitespace().collect::<Vec<_>>().join(" ")),
        }
    }
}

/// The host being probed, seen through its root directory.
#[derive(Debug, Clone)]
pub struct Host {
    root: PathBuf,
}

impl Host {
    /// Open a root. Fails when it is not a readable directory.
    pub fn new(root: impl Into<PathBuf>) -> Result<Self, HostError> {
        let root = root.into();
        let shown = root.display().to_string();
        let io = |source| HostError::Io {
            path: shown.clone(),
            source,
        };
        let meta = std::fs::metadata(&root).map_err(io)?;
        if !meta.is_dir() {
            return Err(HostError::parse(&shown, "not a directory"));
        }
        std::fs::read_dir(&root).map_err(io)?;
        Ok(Host { root })
    }

    /// The root every read goes through.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// True when the root is the live host's `/`: only then can live-only measurements
    /// (CPUID, timing, disk I/O) run.
    pub fn is_live(&self) -> bool {
        self.root == Path::new("/")
    }

    /// The real filesystem path of a host path.
    pub fn path(&self, host_path: &str) -> PathBuf {
        self.root.join(host_path.trim_start_matches('/'))
    }

    fn io_err(host_path: &str, source: std::io::Error) -> HostError {
        HostError::Io {
            path: host_path.to_string(),
            source,
        }
    }

    /// The real path of `host_path` with every symlink resolved inside the root; with
    /// `follow_last = false` the last component itself is not resolved (to read a link).
    fn real(&self, host_path: &str, follow_last: bool) -> Result<PathBuf, HostError> {
        // errors name the path asked for, not the component that was missing
        let named = |e: HostError| match e {
            HostError::Io { source, .. } => Self::io_err(host_path, source),
            other => other,
        };
        if follow_last {
            return Ok(self.path(&self.canonical(host_path).map_err(named)?));
        }
        let name = base(host_path);
        let dir = match parent(host_path) {
            Some(p) => self.canonical(p).map_err(named)?,
            None => "/".to_string(),
        };
        Ok(self.path(&dir).join(name))
    }

    /// Whole file as bytes: a regular file inside the root, at most [`MAX_READ`] bytes.
    pub fn read_bytes(&self, host_path: &str) -> Result<Vec<u8>, HostError> {
        use std::os::unix::fs::OpenOptionsExt;
        let real = self.real(host_path, true)?;
        let f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&real)
            .map_err(|e| Self::io_err(host_path, e))?;
        let meta = f.metadata().map_err(|e| Self::io_err(host_path, e))?;
        if !meta.is_file() {
            return Err(HostError::parse(
                host_path,
                "not a regular file (a FIFO, device or directory is not read)",
            ));
        }
        let mut buf = Vec::new();
        f.take(MAX_READ + 1)
            .read_to_end(&mut buf)
            .map_err(|e| Self::io_err(host_path, e))?;
        if buf.len() as u64 > MAX_READ {
            return Err(HostError::parse(
                host_path,
                format!("larger than the {MAX_READ} bytes probe reads"),
            ));
        }
        Ok(buf)
    }

    /// Whole file as text.
    pub fn read(&self, host_path: &str) -> Result<String, HostError> {
        let bytes = self.read_bytes(host_path)?;
        String::from_utf8(bytes).map_err(|_| HostError::parse(host_path, "not UTF-8 text"))
    }

    /// File text with surrounding whitespace removed (sysfs attributes end in a newline).
    pub fn read_trim(&self, host_path: &str) -> Result<String, HostError> {
        Ok(self.read(host_path)?.trim().to_string())
    }

    /// A file holding one number.
    pub fn read_u64(&self, host_path: &str) -> Result<u64, HostError> {
        let text = self.read_trim(host_path)?;
        text.parse().map_err(|_| {
            HostError::parse(
                host_path,
                format!("expected a number, found {:?}", excerpt(&text)),
            )
        })
    }

    /// A gzip-compressed file (e.g. /proc/config.gz), decompressed.
    pub fn read_gz(&self, host_path: &str) -> Result<String, HostError> {
        let bytes = self.read_bytes(host_path)?;
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&bytes[..])
            .take(MAX_GUNZIP + 1)
            .read_to_end(&mut out)
            .map_err(|e| HostError::parse(host_path, format!("not gzip: {e}")))?;
        if out.len() as u64 > MAX_GUNZIP {
            return Err(HostError::parse(
                host_path,
                format!("decompresses to more than the {MAX_GUNZIP} bytes probe reads"),
            ));
        }
        String::from_utf8(out).map_err(|_| HostError::parse(host_path, "not UTF-8 text"))
    }

    /// Parse a /proc file with procfs-core.
    pub fn parse<T: procfs_core::FromRead>(&self, host_path: &str) -> Result<T, HostError> {
        let bytes = self.read_bytes(host_path)?;
        T::from_read(&bytes[..]).map_err(|e| HostError::parse(host_path, e.to_string()))
    }

    pub fn exists(&self, host_path: &str) -> bool {
        self.real(host_path, false)
            .is_ok_and(|p| std::fs::symlink_metadata(p).is_ok())
    }

    /// Entry names of a directory, sorted.
    pub fn list_dir(&self, host_path: &str) -> Result<Vec<String>, HostError> {
        let rd = std::fs::read_dir(self.real(host_path, true)?)
            .map_err(|e| Self::io_err(host_path, e))?;
        let mut names: Vec<String> = rd
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        Ok(names)
    }

    /// The last path component a symlink points to (e.g. the driver name of
    /// `/sys/class/net/eth0/device/driver`).
    pub fn link_name(&self, host_path: &str) -> Result<String, HostError> {
        let target = std::fs::read_link(self.real(host_path, false)?)
            .map_err(|e| Self::io_err(host_path, e))?;
        target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| HostError::parse(host_path, "symlink without a name"))
    }

    /// Resolve every symlink of a host path inside the root, lexically (like a chroot).
    /// Returns the canonical host path, e.g. `/sys/dev/block/254:0` ->
    /// `/sys/devices/pci0000:00/0000:00:02.0/virtio1/block/vda`.
    pub fn canonical(&self, host_path: &str) -> Result<String, HostError> {
        let mut done: Vec<String> = Vec::new();
        let mut todo: Vec<String> = split(host_path).into_iter().rev().collect();
        let mut hops = 0;
        while let Some(comp) = todo.pop() {
            match comp.as_str() {
                "." => continue,
                ".." => {
                    done.pop();
                    continue;
                }
                _ => {}
            }
            done.push(comp);
            let here = join(&done);
            let real = self.path(&here);
            let meta = std::fs::symlink_metadata(&real).map_err(|e| Self::io_err(&here, e))?;
            if meta.file_type().is_symlink() {
                hops += 1;
                if hops > 40 {
                    return Err(HostError::parse(
                        host_path,
                        "too many levels of symbolic links",
                    ));
                }
                let target = std::fs::read_link(&real).map_err(|e| Self::io_err(&here, e))?;
                done.pop();
                if target.is_absolute() {
                    done.clear();
                }
                let t = target.to_string_lossy().into_owned();
                for c in split(&t).into_iter().rev() {
                    todo.push(c);
                }
            }
        }
        Ok(join(&done))
    }
}

fn split(p: &str) -> Vec<String> {
    Path::new(p)
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect()
}

fn join(parts: &[String]) -> String {
    format!("/{}", parts.join("/"))
}

/// The parent of a canonical host path ("/a/b" -> "/a").
pub fn parent(host_path: &str) -> Option<&str> {
    let trimmed = host_path.trim_end_matches('/');
    let i = trimmed.rfind('/')?;
    if i == 0 {
        if trimmed.len() > 1 {
            Some("/")
        } else {
            None
        }
    } else {
        Some(&trimmed[..i])
    }
}

/// The last component of a host path.
pub fn base(host_path: &str) -> &str {
    host_path
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_resolves_relative_and_absolute_links_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        std::fs::create_dir_all(r.join("sys/devices/x/block/vda/vda1")).unwrap();
        std::fs::create_dir_all(r.join("sys/dev/block")).unwrap();
        std::os::unix::fs::symlink(
            "../../devices/x/block/vda/vda1",
            r.join("sys/dev/block/254:1"),
        )
        .unwrap();
        // an absolute link must stay inside the root
        std::os::unix::fs::symlink("/sys/devices/x/block/vda", r.join("sys/dev/block/254:0"))
            .unwrap();
        let h = Host::new(r).unwrap();
        assert_eq!(
            h.canonical("/sys/dev/block/254:1").unwrap(),
            "/sys/devices/x/block/vda/vda1"
        );
        assert_eq!(
            h.canonical("/sys/dev/block/254:0/vda1").unwrap(),
            "/sys/devices/x/block/vda/vda1"
        );
        assert!(h.canonical("/sys/dev/block/9:9").is_err());
        assert!(!h.is_live());
    }

    #[test]
    fn reads_never_leave_the_root() {
        let outside = tempfile::tempdir().unwrap();
        let secret = outside.path().join("shadow");
        std::fs::write(&secret, "root:$6$secret:19000:0:99999:7:::\n").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        std::fs::create_dir_all(r.join("proc/sys/kernel")).unwrap();
        std::fs::create_dir_all(r.join("etc")).unwrap();
        // an absolute link, a relative link climbing out, a link to a directory outside
        std::os::unix::fs::symlink(&secret, r.join("proc/sys/kernel/hostname")).unwrap();
        std::os::unix::fs::symlink("../../../../../../../../../../..", r.join("proc/up")).unwrap();
        std::os::unix::fs::symlink(outside.path(), r.join("proc/out")).unwrap();
        let h = Host::new(r).unwrap();
        for p in ["/proc/sys/kernel/hostname", "/proc/out/shadow"] {
            let e = h.read(p).unwrap_err().to_string();
            assert!(!e.contains("secret"), "{e}");
        }
        let up = format!("/proc/up{}", secret.display());
        assert!(h.read(&up).is_err());
        assert!(h.list_dir("/proc/out").is_err());
        // a FIFO is refused, not waited on
        nix::unistd::mkfifo(&r.join("proc/stat"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        let e = h.read("/proc/stat").unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
        // an oversized file is refused; a number file's bad content is shown bounded
        std::fs::write(r.join("proc/big"), vec![b'7'; (MAX_READ + 1) as usize]).unwrap();
        assert!(h.read("/proc/big").is_err());
        std::fs::write(r.join("proc/n"), format!("{}\n", "x\u{1b}".repeat(500))).unwrap();
        let e = h.read_u64("/proc/n").unwrap_err().to_string();
        assert!(e.len() < 400 && !e.contains('\u{1b}'), "{e}");
    }

    #[test]
    fn a_gzip_bomb_is_cut_off() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("proc")).unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        let zeros = vec![b'0'; 1 << 20];
        for _ in 0..(MAX_GUNZIP >> 20) + 2 {
            gz.write_all(&zeros).unwrap();
        }
        std::fs::write(dir.path().join("proc/config.gz"), gz.finish().unwrap()).unwrap();
        let h = Host::new(dir.path()).unwrap();
        let e = h.read_gz("/proc/config.gz").unwrap_err().to_string();
        assert!(e.contains("decompresses to more than"), "{e}");
    }

    #[test]
    fn parent_and_base() {
        assert_eq!(parent("/a/b/c"), Some("/a/b"));
        assert_eq!(parent("/a"), Some("/"));
        assert_eq!(parent("/"), None);
        assert_eq!(base("/a/b/vda"), "vda");
    }

    #[test]
    fn errors_name_the_host_path() {
        let dir = tempfile::tempdir().unwrap();
        let h = Host::new(dir.path()).unwrap();
        let e = h.read("/proc/stat").unwrap_err().to_string();
        assert!(e.starts_with("/proc/stat: "), "{e}");
        std::fs::create_dir_all(dir.path().join("proc")).unwrap();
        std::fs::write(dir.path().join("proc/n"), "abc\n").unwrap();
        let e = h.read_u64("/proc/n").unwrap_err().to_string();
        assert!(e.contains("/proc/n") && e.contains("abc"), "{e}");
        assert!(Host::new(dir.path().join("nope")).is_err());
    }
}
