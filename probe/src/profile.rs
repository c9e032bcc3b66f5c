//! Threshold profiles: the built-in `mesh-node` profile and `--profile FILE.toml` overrides.
//!
//! A profile file names only what it changes; every section and key is optional, unknown
//! keys are refused, and errors say `FILE:LINE:COL: message` on one line.

use serde::Deserialize;
use std::path::Path;

/// Name of the built-in profile.
pub const BUILTIN: &str = "mesh-node";

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}:{col}: {msg}")]
    Syntax {
        path: String,
        line: usize,
        col: usize,
        msg: String,
    },
    #[error("{path}: {field}: {msg}")]
    Invalid {
        path: String,
        field: String,
        msg: String,
    },
}

macro_rules! section {
    ($(#[$m:meta])* $name:ident { $($(#[$fm:meta])* $field:ident : $ty:ty = $def:expr),* $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, Deserialize)]
        #[serde(default, deny_unknown_fields)]
        pub struct $name { $($(#[$fm])* pub $field: $ty),* }
        impl Default for $name {
            fn default() -> Self { Self { $($field: $def),* } }
        }
    };
}

section!(
    /// `[steal]`: CPU steal over the sample window, percent of CPU time.
    Steal { warn_pct: f64 = 0.5, fail_pct: f64 = 2.0 }
);
section!(
    /// `[vcpu]`: per-thread throughput with every vCPU busy, relative to one busy vCPU.
    Vcpu { warn_below: f64 = 0.9, fail_below: f64 = 0.7 }
);
section!(
    /// `[wakeup]`: overshoot of 1 ms timed sleeps (as cyclictest measures), p99 in µs.
    Wakeup { warn_p99_us: f64 = 200.0, fail_p99_us: f64 = 1000.0 }
);
section!(
    /// `[fsync]`: etcd-style 2300-byte write + fdatasync, p99 in ms (etcd's guidance: 10 ms).
    Fsync { warn_p99_ms: f64 = 10.0, fail_p99_ms: f64 = 20.0 }
);
section!(
    /// `[randread]` / `[randwrite]`: 4 KiB O_DIRECT IOPS at queue depth 32.
    Iops { warn_below: f64 = 2000.0, fail_below: f64 = 500.0 }
);
section!(
    /// `[seqwrite]`: sequential write throughput, MB/s.
    Seqwrite { warn_below_mbs: f64 = 100.0, fail_below_mbs: f64 = 20.0 }
);
section!(
    /// `[io]`: size and time bounds of the disk I/O test.
    Io {
        /// Size of the test file in MiB (free space must be at least twice this).
        size_mib: u64 = 128,
        /// Upper bound of etcd-style writes (fio's etcd job writes 22 MiB = 10029 writes).
        fsync_max_writes: u64 = 10029,
        /// Time bound of the etcd-style fdatasync phase, seconds.
        fsync_seconds: f64 = 3.0,
        /// Time bound of each other phase (sequential write, random read, random write), seconds.
        phase_seconds: f64 = 1.5,
        /// Queue depth of the random tests (threads doing pread/pwrite).
        queue_depth: u32 = 32,
    }
);
section!(
    /// `[memory]`: MemAvailable in MiB.
    Memory { warn_available_mib_below: u64 = 1024, fail_available_mib_below: u64 = 256 }
);
section!(
    /// `[kernel]`: minimum kernel versions ("major.minor").
    Kernel { warn_below: String = "4.19".into(), fail_below: String = "3.10".into() }
);
section!(
    /// `[modules]`: kernel modules Istio's iptables traffic redirect needs.
    Modules {
        required: Vec<String> = [
            "br_netfilter", "iptable_nat", "iptable_mangle", "xt_REDIRECT", "xt_owner",
            "xt_conntrack", "xt_tcpudp", "xt_multiport",
        ].iter().map(|s| s.to_string()).collect(),
    }
);
section!(
    /// `[conntrack]`: nf_conntrack_count / nf_conntrack_max, percent.
    Conntrack { warn_pct: f64 = 50.0, fail_pct: f64 = 80.0 }
);
section!(
    /// `[somaxconn]`: net.core.somaxconn.
    Somaxconn { warn_below: u64 = 4096, fail_below: u64 = 1024 }
);
section!(
    /// `[nofile]`: open-file limits: the soft RLIMIT_NOFILE of probe's own process and
    /// fs.file-max.
    Nofile { warn_below: u64 = 65536, fail_below: u64 = 4096 }
);
section!(
    /// `[clocksource]`: clock sources that read the time without a VM exit.
    Clocksource {
        good: Vec<String> = ["tsc", "kvm-clock", "arch_sys_counter"].iter().map(|s| s.to_string()).collect(),
    }
);

section!(
    /// `[timesync]`: the wall clock (distributed start times and timestamps rely on it):
    /// steps of CLOCK_REALTIME per minute, its drift against CLOCK_MONOTONIC_RAW in ppm
    /// (NTP slews at most 500 ppm), and the kernel's maximum error estimate.
    Timesync {
        warn_steps_per_min: f64 = 1.0,
        fail_steps_per_min: f64 = 30.0,
        warn_drift_ppm: f64 = 500.0,
        fail_drift_ppm: f64 = 1000.0,
        warn_max_error_ms: f64 = 100.0,
    }
);

/// All thresholds in force.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Thresholds {
    pub steal: Steal,
    pub vcpu: Vcpu,
    pub wakeup: Wakeup,
    pub fsync: Fsync,
    pub randread: Iops,
    pub randwrite: Iops,
    pub seqwrite: Seqwrite,
    pub io: Io,
    pub memory: Memory,
    pub kernel: Kernel,
    pub modules: Modules,
    pub conntrack: Conntrack,
    pub somaxconn: Somaxconn,
    pub nofile: Nofile,
    pub clocksource: Clocksource,
    pub timesync: Timesync,
}

/// A named set of thresholds.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    pub name: String,
    pub t: Thresholds,
}

impl Default for Profile {
    fn default() -> Self {
        Profile {
            name: BUILTIN.into(),
            t: Thresholds::default(),
        }
    }
}

impl Profile {
    /// The built-in profile with a TOML file's overrides applied.
    pub fn load(path: &Path) -> Result<Profile, ProfileError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ProfileError::Io {
            path: shown.clone(),
            source,
        })?;
        Self::parse(&shown, &text)
    }

    /// Parse profile text; `name` is used in errors and as the profile name.
    pub fn parse(name: &str, text: &str) -> Result<Profile, ProfileError> {
        let t: Thresholds = toml::from_str(text).map_err(|e| {
            let (line, col) = e
                .span()
                .map(|s| meshbench_schema::text::line_col(text, s.start))
                .unwrap_or((1, 1));
            ProfileError::Syntax {
                path: name.to_string(),
                line,
                col,
                msg: e.message().replace('\n', " ").trim().to_string(),
            }
        })?;
        let p = Profile {
            name: name.to_string(),
            t,
        };
        p.validate()?;
        Ok(p)
    }

    fn validate(&self) -> Result<(), ProfileError> {
        let bad = |field: &str, msg: String| ProfileError::Invalid {
            path: self.name.clone(),
            field: field.to_string(),
            msg,
        };
        let t = &self.t;
        // warn/fail pairs, finite and >= 0. Where higher is worse warn must not exceed fail;
        // where lower is worse ("*_below") fail must not exceed warn.
        enum Worse {
            Higher,
            Lower,
        }
        for (field, warn, fail, worse) in [
            ("steal", t.steal.warn_pct, t.steal.fail_pct, Worse::Higher),
            (
                "timesync.steps_per_min",
                t.timesync.warn_steps_per_min,
                t.timesync.fail_steps_per_min,
                Worse::Higher,
            ),
            (
                "timesync.drift_ppm",
                t.timesync.warn_drift_ppm,
                t.timesync.fail_drift_ppm,
                Worse::Higher,
            ),
            (
                "wakeup",
                t.wakeup.warn_p99_us,
                t.wakeup.fail_p99_us,
                Worse::Higher,
            ),
            (
                "fsync",
                t.fsync.warn_p99_ms,
                t.fsync.fail_p99_ms,
                Worse::Higher,
            ),
            (
                "conntrack",
                t.conntrack.warn_pct,
                t.conntrack.fail_pct,
                Worse::Higher,
            ),
            ("vcpu", t.vcpu.warn_below, t.vcpu.fail_below, Worse::Lower),
            (
                "randread",
                t.randread.warn_below,
                t.randread.fail_below,
                Worse::Lower,
            ),
            (
                "randwrite",
                t.randwrite.warn_below,
                t.randwrite.fail_below,
                Worse::Lower,
            ),
            (
                "seqwrite",
                t.seqwrite.warn_below_mbs,
                t.seqwrite.fail_below_mbs,
                Worse::Lower,
            ),
            (
                "memory",
                t.memory.warn_available_mib_below as f64,
                t.memory.fail_available_mib_below as f64,
                Worse::Lower,
            ),
            (
                "somaxconn",
                t.somaxconn.warn_below as f64,
                t.somaxconn.fail_below as f64,
                Worse::Lower,
            ),
            (
                "nofile",
                t.nofile.warn_below as f64,
                t.nofile.fail_below as f64,
                Worse::Lower,
            ),
        ] {
            if !(warn.is_finite() && fail.is_finite() && warn >= 0.0 && fail >= 0.0) {
                return Err(bad(field, "thresholds must be finite and >= 0".into()));
            }
            match worse {
                Worse::Higher if warn > fail => {
                    return Err(bad(field, format!("warn ({warn}) is above fail ({fail})")));
                }
                Worse::Lower if fail > warn => {
                    return Err(bad(
                        field,
                        format!("fail_below ({fail}) is above warn_below ({warn})"),
                    ));
                }
                _ => {}
            }
        }
        let kw = parse_version(&t.kernel.warn_below)
            .ok_or_else(|| bad("kernel.warn_below", "expected \"MAJOR.MINOR\"".into()))?;
        let kf = parse_version(&t.kernel.fail_below)
            .ok_or_else(|| bad("kernel.fail_below", "expected \"MAJOR.MINOR\"".into()))?;
        if kf > kw {
            return Err(bad("kernel", "fail_below is above warn_below".into()));
        }
        if t.io.size_mib == 0 || t.io.size_mib > 64 * 1024 {
            return Err(bad("io.size_mib", "must be between 1 and 65536".into()));
        }
        if !(t.io.phase_seconds > 0.0 && t.io.phase_seconds <= 60.0) {
            return Err(bad("io.phase_seconds", "must be in (0, 60]".into()));
        }
        if !(t.io.fsync_seconds > 0.0 && t.io.fsync_seconds <= 600.0) {
            return Err(bad("io.fsync_seconds", "must be in (0, 600]".into()));
        }
        if t.io.queue_depth == 0 || t.io.queue_depth > 256 {
            return Err(bad("io.queue_depth", "must be between 1 and 256".into()));
        }
        if t.io.fsync_max_writes == 0 {
            return Err(bad("io.fsync_max_writes", "must be at least 1".into()));
        }
        Ok(())
    }
}

/// "5.15.0-91-generic" -> (5, 15).
pub fn parse_version(s: &str) -> Option<(u32, u32)> {
    let mut it = s.split(|c: char| !c.is_ascii_digit());
    let major = it.next()?.parse().ok()?;
    let minor = it.next().and_then(|m| m.parse().ok()).unwrap_or(0);
    Some((major, minor))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_the_builtin_profile() {
        let p = Profile::parse("p.toml", "").unwrap();
        assert_eq!(p.t, Thresholds::default());
        assert_eq!(p.name, "p.toml");
    }

    #[test]
    fn overrides_apply_and_keep_other_defaults() {
        let p = Profile::parse("p.toml", "[steal]\nwarn_pct = 1.0\n").unwrap();
        assert_eq!(p.t.steal.warn_pct, 1.0);
        assert_eq!(p.t.steal.fail_pct, 2.0);
        assert_eq!(p.t.fsync.warn_p99_ms, 10.0);
    }

    #[test]
    fn unknown_key_names_file_line_and_column() {
        let e = Profile::parse("p.toml", "[steal]\nwarn_pct = 1.0\nwarm_pct = 2\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("p.toml:3:1: "), "{e}");
        assert!(e.contains("warm_pct"), "{e}");
        assert!(!e.contains('\n'), "{e}");
    }

    #[test]
    fn wrong_type_and_inverted_thresholds_are_refused() {
        let e = Profile::parse("p.toml", "[fsync]\nwarn_p99_ms = \"ten\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("p.toml:2:"), "{e}");
        let e = Profile::parse("p.toml", "[steal]\nwarn_pct = 3.0\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("steal") && e.contains("above"), "{e}");
        let e = Profile::parse("p.toml", "[kernel]\nwarn_below = \"new\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("kernel.warn_below"), "{e}");
    }

    #[test]
    fn columns_count_characters() {
        let e = Profile::parse("p.toml", "[steal]\nwarn_pct = \"é\" x\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("p.toml:2:16: "), "{e}");
    }

    #[test]
    fn versions() {
        assert_eq!(parse_version("6.18.44-fc-v595"), Some((6, 18)));
        assert_eq!(parse_version("4.19"), Some((4, 19)));
        assert_eq!(parse_version("5"), Some((5, 0)));
        assert_eq!(parse_version("abc"), None);
    }
}
