//! Hypervisor identity, reported as facts from every source available:
//! - CPUID (live root only): the hypervisor bit (leaf 1 ECX[31]) and the signature leaf
//!   0x40000000 (KVMKVMKVM, Microsoft Hv, VMwareVMware, XenVMMXenVMM, TCGTCGTCGTCG, ...);
//! - the `hypervisor` flag of /proc/cpuinfo (the same bit as the kernel saw it: this is
//!   what a fixture root carries);
//! - DMI: /sys/class/dmi/id/{sys_vendor,product_name};
//! - /sys/hypervisor/type (Xen);
//! - kvm-clock among /sys/devices/system/clocksource/clocksource0/available_clocksource;
//! - "firecracker" on /proc/cmdline (Firecracker has no DMI tables).

use meshbench_schema::{Finding, Measurement, Verdict};
use procfs_core::{CpuInfo, FromRead};

use super::{finding, flag, skip, text, with_reason, Check, Ctx};
use crate::host::Host;

pub struct Hypervisor;

const ID: &str = "hypervisor";
const TITLE: &str = "Hypervisor";

/// What was found out about the hypervisor.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HvFacts {
    /// CPUID hypervisor bit (live) or the cpuinfo `hypervisor` flag (fixture).
    pub hypervisor_bit: Option<bool>,
    /// Where `hypervisor_bit` came from: "cpuid" or "/proc/cpuinfo".
    pub bit_source: Option<&'static str>,
    /// CPUID signature leaf, decoded (live only).
    pub cpuid_signature: Option<String>,
    pub dmi_vendor: Option<String>,
    pub dmi_product: Option<String>,
    pub sys_hypervisor: Option<String>,
    pub kvm_clock: bool,
    pub firecracker_cmdline: bool,
}

/// Verdict-relevant conclusion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    BareMetal,
    /// Identified hypervisor, e.g. "KVM", "KVM (Firecracker)", "Hyper-V".
    Vm(String),
    /// A VM whose CPU is emulated in software (QEMU TCG): unfit for a mesh.
    Emulated(String),
    /// The hypervisor bit is set but nothing names the hypervisor.
    UnknownVm,
    /// No source could be read.
    Unknown,
}

impl HvFacts {
    /// True when the host is known to be a VM.
    pub fn is_vm(&self) -> Option<bool> {
        match self.kind() {
            Kind::BareMetal => Some(false),
            Kind::Vm(_) | Kind::Emulated(_) | Kind::UnknownVm => Some(true),
            Kind::Unknown => None,
        }
    }

    /// Conclude from the facts. CPUID wins, then DMI, then /sys/hypervisor, then kvm-clock.
    pub fn kind(&self) -> Kind {
        let fc = |s: &str| {
            if self.firecracker_cmdline {
                format!("{s} (Firecracker)")
            } else {
                s.to_string()
            }
        };
        if let Some(sig) = &self.cpuid_signature {
            match sig.as_str() {
                "KVM" => return Kind::Vm(fc("KVM")),
                "QEMU TCG" => return Kind::Emulated("QEMU TCG (software emulation)".into()),
                s if !s.starts_with("unknown") => return Kind::Vm(s.to_string()),
                _ => {}
            }
        }
        if let Some(v) = dmi_kind(self.dmi_vendor.as_deref(), self.dmi_product.as_deref()) {
            if v == "VirtualBox" || v == "Bochs" {
                return Kind::Emulated(v.into());
            }
            return Kind::Vm(v.into());
        }
        if let Some(h) = &self.sys_hypervisor {
            if !h.is_empty() {
                return Kind::Vm(match h.as_str() {
                    "xen" => "Xen".into(),
                    other => other.to_string(),
                });
            }
        }
        if self.kvm_clock {
            return Kind::Vm(fc("KVM"));
        }
        match self.hypervisor_bit {
            Some(true) => Kind::UnknownVm,
            Some(false) => Kind::BareMetal,
            None => Kind::Unknown,
        }
    }
}

/// A VM vendor from DMI strings, or None for a physical machine (or no DMI).
pub fn dmi_kind(vendor: Option<&str>, product: Option<&str>) -> Option<&'static str> {
    let v = vendor.unwrap_or("").to_ascii_lowercase();
    let p = product.unwrap_or("").to_ascii_lowercase();
    let any = |needle: &str| v.contains(needle) || p.contains(needle);
    Some(if any("vmware") {
        "VMware"
    } else if any("virtualbox") || v.contains("innotek") {
        "VirtualBox"
    } else if v.contains("microsoft") && p.contains("virtual") {
        "Hyper-V"
    } else if any("xen") {
        "Xen"
    } else if any("amazon ec2") {
        "KVM (AWS Nitro)"
    } else if any("google compute engine") || v == "google" {
        "KVM (Google Compute Engine)"
    } else if any("qemu") || p.starts_with("standard pc") {
        "KVM/QEMU"
    } else if any("openstack") || any("kvm") || any("digitalocean") || any("hetzner") {
        "KVM"
    } else if any("bochs") {
        "Bochs"
    } else if any("parallels") {
        "Parallels"
    } else {
        return None;
    })
}

/// Gather the facts under a root. CPUID only when the root is the live host.
pub fn detect(host: &Host) -> HvFacts {
    let mut f = HvFacts::default();
    if host.is_live() {
        let cpuid = raw_cpuid::CpuId::new();
        if let Some(fi) = cpuid.get_feature_info() {
            f.hypervisor_bit = Some(fi.has_hypervisor());
            f.bit_source = Some("cpuid");
        }
        if let Some(hi) = cpuid.get_hypervisor_info() {
            use raw_cpuid::Hypervisor as H;
            f.cpuid_signature = Some(match hi.identify() {
                H::KVM => "KVM".into(),
                H::HyperV => "Hyper-V".into(),
                H::VMware => "VMware".into(),
                H::Xen => "Xen".into(),
                H::QEMU => "QEMU TCG".into(),
                H::Bhyve => "bhyve".into(),
                H::QNX => "QNX".into(),
                H::ACRN => "ACRN".into(),
                H::Unknown(b, c, d) => format!("unknown ({b:08x} {c:08x} {d:08x})"),
            });
        }
    }
    if f.hypervisor_bit.is_none() {
        if let Ok(bytes) = host.read_bytes("/proc/cpuinfo") {
            if let Ok(ci) = CpuInfo::from_read(&bytes[..]) {
                if let Some(flags) = ci.flags(0) {
                    f.hypervisor_bit = Some(flags.contains(&"hypervisor"));
                    f.bit_source = Some("/proc/cpuinfo");
                }
            }
        }
    }
    f.dmi_vendor = host.read_trim("/sys/class/dmi/id/sys_vendor").ok();
    f.dmi_product = host.read_trim("/sys/class/dmi/id/product_name").ok();
    f.sys_hypervisor = host.read_trim("/sys/hypervisor/type").ok();
    f.kvm_clock = host
        .read("/sys/devices/system/clocksource/clocksource0/available_clocksource")
        .map(|s| s.split_whitespace().any(|c| c == "kvm-clock"))
        .unwrap_or(false);
    f.firecracker_cmdline = host
        .read("/proc/cmdline")
        .map(|s| s.contains("firecracker"))
        .unwrap_or(false);
    f
}

/// The finding for a set of facts.
pub fn judge(f: &HvFacts) -> Finding {
    let mut ms: Vec<Measurement> = vec![];
    let mut sources = vec![];
    if let Some(b) = f.hypervisor_bit {
        ms.push(flag("hypervisor_bit", b));
        sources.push(format!(
            "hypervisor bit {} ({})",
            if b { "set" } else { "clear" },
            f.bit_source.unwrap_or("?")
        ));
    }
    if let Some(s) = &f.cpuid_signature {
        ms.push(text("cpuid_signature", s.clone()));
        sources.push(format!("CPUID signature {s}"));
    }
    match (&f.dmi_vendor, &f.dmi_product) {
        (None, None) => sources.push("no DMI".into()),
        (v, p) => {
            let v = v.clone().unwrap_or_default();
            let p = p.clone().unwrap_or_default();
            ms.push(text("dmi_sys_vendor", v.clone()));
            ms.push(text("dmi_product_name", p.clone()));
            sources.push(format!("DMI {v} / {p}"));
        }
    }
    if let Some(h) = &f.sys_hypervisor {
        ms.push(text("sys_hypervisor_type", h.clone()));
        sources.push(format!("/sys/hypervisor/type {h}"));
    }
    if f.kvm_clock {
        sources.push("kvm-clock available".into());
    }
    if f.firecracker_cmdline {
        sources.push("firecracker on the kernel command line".into());
    }
    let kind = f.kind();
    let (verdict, value, remedy) = match &kind {
        Kind::BareMetal => (Verdict::Pass, "bare metal".to_string(), ""),
        Kind::Vm(name) => (Verdict::Pass, name.clone(), ""),
        Kind::Emulated(name) => (
            Verdict::Fail,
            name.clone(),
            "the CPU or machine is emulated in software: run on a hardware-accelerated (KVM) VM",
        ),
        Kind::UnknownVm => (
            Verdict::Warn,
            "unidentified hypervisor".to_string(),
            "a hypervisor is present but no source names it: check the instance type with the provider",
        ),
        Kind::Unknown => {
            return skip(
                ID,
                TITLE,
                "facts (fail: software emulation)",
                "no source readable: no CPUID on a fixture root, no /proc/cpuinfo, no DMI, no /sys/hypervisor",
            )
        }
    };
    ms.insert(0, text("hypervisor", value.clone()));
    with_reason(
        finding(
            ID,
            TITLE,
            verdict,
            value,
            "facts (fail: software emulation)",
            remedy,
            ms,
        ),
        sources.join("; "),
    )
}

const THRESHOLDS: &str =
    "facts; warn: unidentified hypervisor; fail: software emulation (QEMU TCG, VirtualBox)";

impl Check for Hypervisor {
    describe!(ID, TITLE, |_| THRESHOLDS.to_string());
    fn run(&self, ctx: &Ctx) -> Vec<Finding> {
        vec![judge(ctx.hypervisor())]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpuid_signature_wins_and_tcg_fails() {
        let f = HvFacts {
            hypervisor_bit: Some(true),
            cpuid_signature: Some("QEMU TCG".into()),
            dmi_vendor: Some("QEMU".into()),
            ..Default::default()
        };
        assert_eq!(judge(&f).verdict, Verdict::Fail);
        let f = HvFacts {
            hypervisor_bit: Some(true),
            cpuid_signature: Some("KVM".into()),
            firecracker_cmdline: true,
            ..Default::default()
        };
        let j = judge(&f);
        assert_eq!(j.verdict, Verdict::Pass);
        assert_eq!(j.value, "KVM (Firecracker)");
    }

    #[test]
    fn dmi_names_clouds() {
        assert_eq!(
            dmi_kind(Some("Amazon EC2"), Some("m5.large")),
            Some("KVM (AWS Nitro)")
        );
        assert_eq!(
            dmi_kind(Some("Microsoft Corporation"), Some("Virtual Machine")),
            Some("Hyper-V")
        );
        assert_eq!(
            dmi_kind(Some("QEMU"), Some("Standard PC (Q35 + ICH9, 2009)")),
            Some("KVM/QEMU")
        );
        assert_eq!(dmi_kind(Some("Dell Inc."), Some("PowerEdge R650")), None);
        assert_eq!(dmi_kind(None, None), None);
    }

    #[test]
    fn unknown_vm_warns_and_no_source_skips() {
        let f = HvFacts {
            hypervisor_bit: Some(true),
            ..Default::default()
        };
        assert_eq!(judge(&f).verdict, Verdict::Warn);
        assert_eq!(judge(&HvFacts::default()).verdict, Verdict::Skip);
        let f = HvFacts {
            hypervisor_bit: Some(false),
            dmi_vendor: Some("Dell Inc.".into()),
            ..Default::default()
        };
        assert_eq!(judge(&f).value, "bare metal");
    }
}
