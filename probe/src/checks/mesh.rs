//! Mesh readiness: what the kernel must offer to sidecars and their iptables traffic
//! redirect (Istio's istio-init / istio-cni).
//!
//! Module sources, in order: loaded (/proc/modules, /sys/module/NAME), built in
//! (/lib/modules/RELEASE/modules.builtin, or `=y` in /proc/config.gz or
//! /boot/config-RELEASE), loadable (modules.dep, or `=m` in the config).

use meshbench_schema::{Finding, Verdict};
use procfs_core::process::Limits;
use procfs_core::{ConfigSetting, FromBufRead, KernelConfig, KernelModules};
use std::collections::HashMap;

use super::{above, below, finding, flag, fmt_num, num, skip, text, with_reason, Check, Ctx};
use crate::host::Host;
use crate::profile::{parse_version, Thresholds};

/// A check made of its (id, title), a thresholds text and a function giving its one
/// finding.
macro_rules! check {
    ($name:ident, $about:expr, |$t:ident| $th:expr, |$ctx:ident, $th2:ident| $body:expr) => {
        pub struct $name;
        impl Check for $name {
            describe!($about.0, $about.1, |$t: &Thresholds| -> String { $th });
            fn run(&self, $ctx: &Ctx) -> Vec<Finding> {
                let $th2 = self.thresholds($ctx.t());
                vec![$body]
            }
        }
    };
}

// ---------------------------------------------------------------- kernel version

const KERNEL: (&str, &str) = ("mesh.kernel", "Kernel version");

check!(
    KernelVersion,
    KERNEL,
    |t| format!(
        "warn < {}, fail < {}",
        t.kernel.warn_below, t.kernel.fail_below
    ),
    |ctx, th| kernel(ctx, th)
);

fn kernel(ctx: &Ctx, th: String) -> Finding {
    let (id, title) = KERNEL;
    let rel = match ctx.host.read_trim("/proc/sys/kernel/osrelease") {
        Ok(r) => r,
        Err(e) => return skip(id, title, th, e.to_string()),
    };
    let Some(v) = parse_version(&rel) else {
        return skip(
            id,
            title,
            th,
            format!("/proc/sys/kernel/osrelease: cannot read a version from {rel:?}"),
        );
    };
    let t = ctx.t();
    let w = parse_version(&t.kernel.warn_below).unwrap_or((0, 0));
    let f = parse_version(&t.kernel.fail_below).unwrap_or((0, 0));
    let verdict = if v < f {
        Verdict::Fail
    } else if v < w {
        Verdict::Warn
    } else {
        Verdict::Pass
    };
    finding(id, title, verdict, rel.clone(), th,
        "upgrade the kernel: eBPF, conntrack and iptables features the mesh relies on need a recent one",
        vec![text("kernel", rel)])
}

// ---------------------------------------------------------------- modules

/// Where a module was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ModState {
    Missing,
    Loadable,
    Builtin,
    Loaded,
}

/// The kernel config symbol that builds a module.
pub fn config_symbol(module: &str) -> Option<&'static str> {
    Some(match module {
        "br_netfilter" => "CONFIG_BRIDGE_NETFILTER",
        "iptable_nat" => "CONFIG_IP_NF_NAT",
        "iptable_mangle" => "CONFIG_IP_NF_MANGLE",
        "iptable_filter" => "CONFIG_IP_NF_FILTER",
        "xt_REDIRECT" => "CONFIG_NETFILTER_XT_TARGET_REDIRECT",
        "xt_owner" => "CONFIG_NETFILTER_XT_MATCH_OWNER",
        "xt_conntrack" => "CONFIG_NETFILTER_XT_MATCH_CONNTRACK",
        // xt_tcpudp is part of x_tables itself
        "xt_tcpudp" => "CONFIG_NETFILTER_XTABLES",
        "xt_multiport" => "CONFIG_NETFILTER_XT_MATCH_MULTIPORT",
        "xt_mark" => "CONFIG_NETFILTER_XT_MARK",
        "nf_conntrack" => "CONFIG_NF_CONNTRACK",
        "ip_tables" => "CONFIG_IP_NF_IPTABLES",
        _ => return None,
    })
}

fn norm(m: &str) -> String {
    m.replace('-', "_")
}

/// The module name of a modules.builtin / modules.dep path ("kernel/net/.../xt_owner.ko.zst").
fn ko_name(path: &str) -> Option<String> {
    let file = path.rsplit('/').next()?;
    let name = file.split(".ko").next()?;
    file.contains(".ko").then(|| norm(name))
}

/// Everything known about modules on a host, with the sources that were read.
#[derive(Debug, Default)]
pub struct ModuleFacts {
    pub loaded: Option<Vec<String>>,
    pub sys_module: Option<Vec<String>>,
    pub builtin: Option<Vec<String>>,
    pub loadable: Option<Vec<String>>,
    pub config: Option<HashMap<String, ConfigSetting>>,
    pub sources: Vec<String>,
}

impl ModuleFacts {
    pub fn read(host: &Host) -> ModuleFacts {
        let mut f = ModuleFacts::default();
        if let Ok(m) = host.parse::<KernelModules>("/proc/modules") {
            f.loaded = Some(m.0.keys().map(|k| norm(k)).collect());
            f.sources.push("/proc/modules".into());
        }
        if let Ok(names) = host.list_dir("/sys/module") {
            f.sys_module = Some(names.iter().map(|n| norm(n)).collect());
            f.sources.push("/sys/module".into());
        }
        let rel = host
            .read_trim("/proc/sys/kernel/osrelease")
            .unwrap_or_default();
        let lines = |p: &str| -> Option<Vec<String>> {
            let text = host.read(p).ok()?;
            Some(
                text.lines()
                    .filter_map(|l| ko_name(l.split(':').next().unwrap_or("")))
                    .collect(),
            )
        };
        let builtin_path = format!("/lib/modules/{rel}/modules.builtin");
        if let Some(b) = lines(&builtin_path) {
            f.builtin = Some(b);
            f.sources.push(builtin_path);
        }
        let dep_path = format!("/lib/modules/{rel}/modules.dep");
        if let Some(d) = lines(&dep_path) {
            f.loadable = Some(d);
            f.sources.push(dep_path);
        }
        let boot = format!("/boot/config-{rel}");
        let cfg_text = host
            .read_gz("/proc/config.gz")
            .map(|t| (t, "/proc/config.gz".to_string()))
            .or_else(|_| host.read(&boot).map(|t| (t, boot.clone())));
        if let Ok((t, src)) = cfg_text {
            if let Ok(c) = KernelConfig::from_buf_read(t.as_bytes()) {
                f.config = Some(c.0);
                f.sources.push(src);
            }
        }
        f
    }

    pub fn has_sources(&self) -> bool {
        self.loaded.is_some()
            || self.builtin.is_some()
            || self.loadable.is_some()
            || self.config.is_some()
    }

    pub fn state(&self, module: &str) -> ModState {
        let m = norm(module);
        let contains = |v: &Option<Vec<String>>| v.as_ref().is_some_and(|v| v.contains(&m));
        let cfg = config_symbol(module).and_then(|s| self.config.as_ref()?.get(s));
        if contains(&self.loaded) {
            return ModState::Loaded;
        }
        if contains(&self.builtin) || cfg == Some(&ConfigSetting::Yes) {
            return ModState::Builtin;
        }
        // /sys/module/NAME without /proc/modules: loaded, or built in with parameters
        if contains(&self.sys_module) {
            return if self.loaded.is_some() {
                ModState::Builtin
            } else {
                ModState::Loaded
            };
        }
        if contains(&self.loadable) || cfg == Some(&ConfigSetting::Module) {
            return ModState::Loadable;
        }
        ModState::Missing
    }
}

/// The modules finding from facts.
pub fn judge_modules(facts: &ModuleFacts, required: &[String], th: String) -> Finding {
    let (id, title) = MODULES;
    if !facts.has_sources() {
        return skip(id, title, th,
            "no module source readable: /proc/modules, /lib/modules/RELEASE/modules.{builtin,dep}, /proc/config.gz, /boot/config-RELEASE");
    }
    let mut missing = vec![];
    let mut loadable = vec![];
    let mut ms = vec![];
    for m in required {
        let s = facts.state(m);
        ms.push(text(
            &format!("module_{m}"),
            match s {
                ModState::Loaded => "loaded",
                ModState::Builtin => "builtin",
                ModState::Loadable => "loadable",
                ModState::Missing => "missing",
            },
        ));
        match s {
            ModState::Missing => missing.push(m.as_str()),
            ModState::Loadable => loadable.push(m.as_str()),
            _ => {}
        }
    }
    let ok = required.len() - missing.len() - loadable.len();
    let (verdict, value, remedy) = if !missing.is_empty() {
        (Verdict::Fail, format!("missing: {}", missing.join(", ")),
         "install a kernel with these netfilter modules (linux-modules-extra) or use an image that builds them in")
    } else if !loadable.is_empty() {
        (Verdict::Warn, format!("not loaded: {}", loadable.join(", ")),
         "load them at boot: list them in /etc/modules-load.d/istio.conf (istio-init may lack CAP_SYS_MODULE)")
    } else {
        (
            Verdict::Pass,
            format!("{ok}/{} loaded or built in", required.len()),
            "",
        )
    };
    with_reason(
        finding(id, title, verdict, value, th, remedy, ms),
        format!("sources: {}", facts.sources.join(", ")),
    )
}

const MODULES: (&str, &str) = ("mesh.modules", "Traffic-redirect modules");

check!(
    Modules,
    MODULES,
    |t| format!(
        "fail: any missing; warn: any only loadable ({})",
        t.modules.required.join(", ")
    ),
    |ctx, th| judge_modules(&ModuleFacts::read(&ctx.host), &ctx.t().modules.required, th)
);

// ---------------------------------------------------------------- sysctls

const IP_FORWARD: (&str, &str) = ("mesh.ip_forward", "IPv4 forwarding");

check!(
    IpForward,
    IP_FORWARD,
    |_t| "fail: net.ipv4.ip_forward = 0".into(),
    |ctx, th| {
        let (id, title) = IP_FORWARD;
        match ctx.host.read_u64("/proc/sys/net/ipv4/ip_forward") {
            Ok(v) => finding(
                id,
                title,
                if v == 1 { Verdict::Pass } else { Verdict::Fail },
                format!("net.ipv4.ip_forward = {v}"),
                th,
                "sysctl -w net.ipv4.ip_forward=1 (and persist it in /etc/sysctl.d/)",
                vec![num("ip_forward", v as f64, "")],
            ),
            Err(e) => skip(id, title, th, e.to_string()),
        }
    }
);

const SWAP: (&str, &str) = ("mesh.swap", "Swap");

check!(Swap, SWAP, |_t| "warn: swap active".into(), |ctx, th| {
    let (id, title) = SWAP;
    match ctx.host.read("/proc/swaps") {
        Ok(s) => {
            let devices: Vec<&str> = s
                .lines()
                .skip(1)
                .filter_map(|l| l.split_whitespace().next())
                .collect();
            let on = !devices.is_empty();
            let f = finding(id, title, if on { Verdict::Warn } else { Verdict::Pass },
                    if on { format!("on ({})", devices.join(", ")) } else { "off".into() }, th,
                    "swapoff -a and remove swap from /etc/fstab (kubelet expects no swap unless NodeSwap is configured)",
                    vec![flag("swap_active", on)]);
            f
        }
        Err(e) => skip(id, title, th, e.to_string()),
    }
});

const CONNTRACK: (&str, &str) = ("mesh.conntrack", "Conntrack table use");

check!(
    Conntrack,
    CONNTRACK,
    |t| format!(
        "warn > {} %, fail > {} % of nf_conntrack_max",
        t.conntrack.warn_pct, t.conntrack.fail_pct
    ),
    |ctx, th| {
        let (id, title) = CONNTRACK;
        let read = || -> Result<(u64, u64), String> {
            let c = ctx
                .host
                .read_u64("/proc/sys/net/netfilter/nf_conntrack_count")
                .map_err(|e| e.to_string())?;
            let m = ctx
                .host
                .read_u64("/proc/sys/net/netfilter/nf_conntrack_max")
                .map_err(|e| e.to_string())?;
            Ok((c, m))
        };
        match read() {
            Ok((_, 0)) => skip(
                id,
                title,
                th,
                "/proc/sys/net/netfilter/nf_conntrack_max is 0",
            ),
            Ok((c, m)) => {
                let pct = c as f64 * 100.0 / m as f64;
                let t = &ctx.t().conntrack;
                finding(id, title, above(pct, t.warn_pct, t.fail_pct),
                    format!("{c} / {m} ({} %)", fmt_num(pct)), th,
                    "raise net.netfilter.nf_conntrack_max (sidecars double the connections per request)",
                    vec![num("conntrack_count", c as f64, ""), num("conntrack_max", m as f64, ""), num("conntrack_pct", pct, "%")])
            }
            Err(e) => skip(id, title, th, format!("{e} (nf_conntrack not loaded?)")),
        }
    }
);

const SOMAXCONN: (&str, &str) = ("mesh.somaxconn", "Listen backlog");

check!(
    Somaxconn,
    SOMAXCONN,
    |t| format!(
        "warn < {}, fail < {}",
        t.somaxconn.warn_below, t.somaxconn.fail_below
    ),
    |ctx, th| {
        let (id, title) = SOMAXCONN;
        match ctx.host.read_u64("/proc/sys/net/core/somaxconn") {
            Ok(v) => {
                let t = &ctx.t().somaxconn;
                finding(id, title, below(v as f64, t.warn_below as f64, t.fail_below as f64),
                    format!("net.core.somaxconn = {v}"), th,
                    "sysctl -w net.core.somaxconn=4096 (Envoy listeners accept bursts of connections)",
                    vec![num("somaxconn", v as f64, "")])
            }
            Err(e) => skip(id, title, th, e.to_string()),
        }
    }
);

const NOFILE: (&str, &str) = ("mesh.nofile", "Open-file limits");

check!(
    Nofile,
    NOFILE,
    |t| format!(
        "soft RLIMIT_NOFILE and fs.file-max: warn < {}, fail < {}",
        t.nofile.warn_below, t.nofile.fail_below
    ),
    |ctx, th| nofile(ctx, th)
);

/// The first line of a `/proc/<pid>/limits` text with too few fields to be a limit: a name,
/// the soft and hard limit, and (except for the two priorities) the units (a blank line
/// has none).
pub fn short_limits_line(text: &str) -> Option<&str> {
    text.lines().map(str::trim).find(|line| {
        if line.starts_with("Limit") {
            return false;
        }
        // "Max nice priority" + soft + hard (no units); at least "Max <name>" + soft + hard
        // + units for the others: five fields either way
        line.split_whitespace().count() < 5
    })
}

fn nofile(ctx: &Ctx, th: String) -> Finding {
    let (id, title) = NOFILE;
    let file_max = match ctx.host.read_u64("/proc/sys/fs/file-max") {
        Ok(v) => v,
        Err(e) => return skip(id, title, th, e.to_string()),
    };
    // procfs-core's parser indexes fields without checking that a line has them (it
    // underflows on a short line): such a file is refused here first
    // (bytes: procfs-core reads the lines before any that is not UTF-8)
    if let Ok(bytes) = ctx.host.read_bytes("/proc/self/limits") {
        let text = String::from_utf8_lossy(&bytes);
        if let Some(bad) = short_limits_line(&text) {
            return skip(
                id,
                title,
                th,
                format!(
                    "/proc/self/limits: cannot parse the line `{}`",
                    crate::host::excerpt(bad)
                ),
            );
        }
    }
    let soft = match ctx.host.parse::<Limits>("/proc/self/limits") {
        Ok(l) => match l.max_open_files.soft_limit {
            procfs_core::process::LimitValue::Unlimited => u64::MAX,
            procfs_core::process::LimitValue::Value(v) => v,
        },
        Err(e) => return skip(id, title, th, e.to_string()),
    };
    let t = &ctx.t().nofile;
    let lowest = soft.min(file_max);
    let v = below(lowest as f64, t.warn_below as f64, t.fail_below as f64);
    with_reason(
        finding(
            id,
            title,
            v,
            format!("nofile {soft}, file-max {file_max}"),
            th,
            "raise LimitNOFILE for the container runtime/kubelet (e.g. 1048576) and fs.file-max",
            vec![
                num("nofile_soft", soft as f64, ""),
                num("file_max", file_max as f64, ""),
            ],
        ),
        "the soft limit is probe's own, as inherited from the shell or unit that started it",
    )
}

// ---------------------------------------------------------------- clock, THP, governor

const CLOCKSOURCE: (&str, &str) = ("mesh.clocksource", "Clock source");

check!(
    Clocksource,
    CLOCKSOURCE,
    |t| format!("warn: not one of {}", t.clocksource.good.join(", ")),
    |ctx, th| {
        let (id, title) = CLOCKSOURCE;
        match ctx
            .host
            .read_trim("/sys/devices/system/clocksource/clocksource0/current_clocksource")
        {
            Ok(cs) => {
                let good = ctx.t().clocksource.good.contains(&cs);
                finding(id, title, if good { Verdict::Pass } else { Verdict::Warn }, cs.clone(), th,
                    "use tsc or kvm-clock: hpet/acpi_pm make every timestamp a VM exit (echo tsc > .../current_clocksource)",
                    vec![text("clocksource", cs)])
            }
            Err(e) => skip(id, title, th, e.to_string()),
        }
    }
);

const THP: (&str, &str) = ("mesh.thp", "Transparent huge pages");

check!(Thp, THP, |_t| "warn: always".into(), |ctx, th| {
    let (id, title) = THP;
    match ctx
        .host
        .read_trim("/sys/kernel/mm/transparent_hugepage/enabled")
    {
        Ok(s) => {
            let sel = super::disk::selected_scheduler(&s);
            finding(
                id,
                title,
                if sel == "always" {
                    Verdict::Warn
                } else {
                    Verdict::Pass
                },
                sel.clone(),
                th,
                "set transparent_hugepage=madvise: compaction stalls show up as tail latency",
                vec![text("thp", sel)],
            )
        }
        Err(e) => skip(id, title, th, e.to_string()),
    }
});

const GOVERNOR: (&str, &str) = ("mesh.governor", "CPU frequency governor");

check!(
    Governor,
    GOVERNOR,
    |_t| "warn: not performance on every CPU".into(),
    |ctx, th| governor(ctx, th)
);

fn governor(ctx: &Ctx, th: String) -> Finding {
    let (id, title) = GOVERNOR;
    let cpus: Vec<String> = match ctx.host.list_dir("/sys/devices/system/cpu") {
        Ok(c) => c
            .into_iter()
            .filter(|n| {
                n.strip_prefix("cpu")
                    .is_some_and(|r| !r.is_empty() && r.bytes().all(|b| b.is_ascii_digit()))
            })
            .collect(),
        Err(e) => return skip(id, title, th, e.to_string()),
    };
    let mut govs: Vec<String> = cpus
        .iter()
        .filter_map(|c| {
            ctx.host
                .read_trim(&format!(
                    "/sys/devices/system/cpu/{c}/cpufreq/scaling_governor"
                ))
                .ok()
        })
        .collect();
    if govs.is_empty() {
        return skip(
            id,
            title,
            th,
            "no cpufreq interface (usual in a VM: the host controls the frequency)",
        );
    }
    govs.sort();
    govs.dedup();
    let all_perf = govs.iter().all(|g| g == "performance");
    finding(
        id,
        title,
        if all_perf {
            Verdict::Pass
        } else {
            Verdict::Warn
        },
        govs.join(", "),
        th,
        "cpupower frequency-set -g performance: ramp-up delays add latency to bursty sidecar work",
        vec![text("governor", govs.join(","))],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_lines_too_short_for_procfs_are_found_before_it_parses_them() {
        let good = "Limit                     Soft Limit           Hard Limit           Units\nMax open files            1024                 524288               files\nMax nice priority         0                    0\n";
        assert_eq!(short_limits_line(good), None);
        // the fuzzer's find: a line of one field made procfs-core subtract below zero
        assert_eq!(
            short_limits_line("Limit x\nMax open files 1024 524288 files\nfiles\n"),
            Some("files")
        );
        assert_eq!(
            short_limits_line(
                "Max open files 1024 524288 files\n\nMax cpu time unlimited unlimited seconds\n"
            ),
            Some("")
        );
        assert_eq!(
            short_limits_line("Max nice priority 0\n"),
            Some("Max nice priority 0")
        );
    }

    #[test]
    fn ko_names() {
        assert_eq!(
            ko_name("kernel/net/netfilter/xt_owner.ko.zst").as_deref(),
            Some("xt_owner")
        );
        assert_eq!(
            ko_name("kernel/net/bridge/br_netfilter.ko").as_deref(),
            Some("br_netfilter")
        );
        assert_eq!(ko_name("not a module"), None);
    }

    #[test]
    fn module_states_from_each_source() {
        let mut f = ModuleFacts {
            loaded: Some(vec!["xt_owner".into()]),
            builtin: Some(vec!["br_netfilter".into()]),
            loadable: Some(vec!["xt_multiport".into(), "xt_owner".into()]),
            ..Default::default()
        };
        let mut cfg = HashMap::new();
        cfg.insert("CONFIG_IP_NF_NAT".to_string(), ConfigSetting::Yes);
        cfg.insert("CONFIG_IP_NF_MANGLE".to_string(), ConfigSetting::Module);
        f.config = Some(cfg);
        assert_eq!(f.state("xt_owner"), ModState::Loaded);
        assert_eq!(f.state("br_netfilter"), ModState::Builtin);
        assert_eq!(f.state("iptable_nat"), ModState::Builtin);
        assert_eq!(f.state("iptable_mangle"), ModState::Loadable);
        assert_eq!(f.state("xt_multiport"), ModState::Loadable);
        assert_eq!(f.state("xt_REDIRECT"), ModState::Missing);
        let req: Vec<String> = ["xt_owner", "br_netfilter"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(judge_modules(&f, &req, "t".into()).verdict, Verdict::Pass);
        let req: Vec<String> = ["xt_owner", "xt_multiport"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(judge_modules(&f, &req, "t".into()).verdict, Verdict::Warn);
        let req: Vec<String> = ["xt_REDIRECT"].iter().map(|s| s.to_string()).collect();
        assert_eq!(judge_modules(&f, &req, "t".into()).verdict, Verdict::Fail);
        assert_eq!(
            judge_modules(&ModuleFacts::default(), &req, "t".into()).verdict,
            Verdict::Skip
        );
    }
}
