//! Paravirtual drivers: the NIC carrying the default route and the disk backing `--path`.
//!
//! The NIC is the interface of the IPv4 default route in /proc/net/route; its drivers are the
//! `driver` links from `/sys/class/net/IF` (canonical) up to /sys/devices. A virtual
//! interface (bridge, bond, vlan) is followed to its first lower device (`lower_*`,
//! `brif/*`). On a VM an emulated device fails; on bare metal any physical driver passes.

use meshbench_schema::{Finding, Verdict};
use procfs_core::net::RouteEntries;

use super::disk::{driver_chain, resolve};
use super::{finding, skip, text, with_reason, Check, Ctx};
use crate::host::Host;

pub struct VirtioNet;
pub struct VirtioDisk;

const NET_ID: &str = "virtio.net";
const NET_TITLE: &str = "NIC driver";
const DISK_ID: &str = "virtio.disk";
const DISK_TITLE: &str = "Disk driver";

const PV_NET: &[&str] = &[
    "virtio_net",
    "vmxnet3",
    "hv_netvsc",
    "xen-netfront",
    "vif",
    "ena",
    "gve",
    "ixgbevf",
    "iavf",
    "i40evf",
    "mlx5_core",
    "mlx4_core",
];
const EMULATED_NET: &[&str] = &[
    "e1000", "e1000e", "8139cp", "8139too", "pcnet32", "ne2k-pci", "tulip", "rtl8139",
];
const PV_DISK: &[&str] = &[
    "virtio_blk",
    "virtio_scsi",
    "nvme",
    "xen-blkfront",
    "vbd",
    "hv_storvsc",
    "vmw_pvscsi",
];
const EMULATED_DISK: &[&str] = &[
    "ata_piix",
    "ahci",
    "ata_generic",
    "mptspi",
    "mptsas",
    "sym53c8xx",
    "BusLogic",
    "megaraid_sas",
];

/// Which class a driver chain falls in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Paravirtual,
    Emulated,
    Other,
}

pub fn classify(drivers: &[String], pv: &[&str], emulated: &[&str]) -> (Class, Option<String>) {
    if let Some(d) = drivers.iter().find(|d| pv.contains(&d.as_str())) {
        return (Class::Paravirtual, Some(d.clone()));
    }
    if let Some(d) = drivers.iter().find(|d| {
        emulated.contains(&d.as_str()) || d.starts_with("pata_") || d.starts_with("sata_")
    }) {
        return (Class::Emulated, Some(d.clone()));
    }
    (Class::Other, drivers.first().cloned())
}

/// Verdict for a device class on a VM / bare metal / unknown.
pub fn verdict(class: Class, is_vm: Option<bool>) -> Verdict {
    match (class, is_vm) {
        (Class::Paravirtual, _) => Verdict::Pass,
        (_, Some(false)) => Verdict::Pass,
        (Class::Emulated, _) => Verdict::Fail,
        (Class::Other, _) => Verdict::Warn,
    }
}

/// The interface of the IPv4 default route.
pub fn default_route_iface(host: &Host) -> Result<String, String> {
    let routes: RouteEntries = host.parse("/proc/net/route").map_err(|e| e.to_string())?;
    routes
        .0
        .iter()
        .filter(|r| r.destination.is_unspecified() && r.mask.is_unspecified())
        .min_by_key(|r| r.metrics)
        .map(|r| r.iface.clone())
        .ok_or_else(|| "/proc/net/route: no IPv4 default route".to_string())
}

/// Drivers of a network interface; follows virtual interfaces to their lower device.
pub fn nic_drivers(host: &Host, iface: &str, depth: u32) -> Result<(String, Vec<String>), String> {
    let class = format!("/sys/class/net/{iface}");
    let dir = host.canonical(&class).map_err(|e| e.to_string())?;
    let drivers = driver_chain(host, &dir);
    if !drivers.is_empty() || depth > 4 {
        return Ok((iface.to_string(), drivers));
    }
    let entries = host.list_dir(&class).unwrap_or_default();
    let lower = entries
        .iter()
        .find_map(|e| e.strip_prefix("lower_").map(str::to_string))
        .or_else(|| {
            host.list_dir(&format!("{class}/brif"))
                .ok()?
                .into_iter()
                .next()
        });
    match lower {
        Some(l) => nic_drivers(host, &l, depth + 1),
        None => Ok((iface.to_string(), drivers)),
    }
}

/// What a device of one kind is judged against.
pub struct DeviceRule {
    pub id: &'static str,
    pub title: &'static str,
    pub pv: &'static [&'static str],
    pub emulated: &'static [&'static str],
    pub remedy: &'static str,
}

pub const NET_RULE: DeviceRule = DeviceRule {
    id: NET_ID,
    title: NET_TITLE,
    pv: PV_NET,
    emulated: EMULATED_NET,
    remedy: "attach the NIC as virtio-net (model=virtio) or an SR-IOV VF instead of an emulated e1000/rtl8139",
};

pub const DISK_RULE: DeviceRule = DeviceRule {
    id: DISK_ID,
    title: DISK_TITLE,
    pv: PV_DISK,
    emulated: EMULATED_DISK,
    remedy: "attach the disk as virtio-blk, virtio-scsi or NVMe instead of an emulated IDE/SATA/LSI controller",
};

/// The finding for a device's driver chain.
pub fn judge(rule: &DeviceRule, what: &str, drivers: &[String], is_vm: Option<bool>) -> Finding {
    let (id, title, remedy) = (rule.id, rule.title, rule.remedy);
    let (class, driver) = classify(drivers, rule.pv, rule.emulated);
    let v = verdict(class, is_vm);
    let driver = driver.unwrap_or_else(|| "no driver".into());
    let kind = match (class, is_vm) {
        (_, Some(false)) => "physical",
        (Class::Paravirtual, _) => "paravirtual",
        (Class::Emulated, _) => "emulated",
        (Class::Other, _) => "unknown",
    };
    let f = finding(
        id,
        title,
        v,
        format!("{what}: {driver} ({kind})"),
        THRESHOLDS,
        remedy,
        vec![
            text("device", what),
            text("driver", driver.clone()),
            text("driver_class", kind),
            text("drivers", drivers.join(",")),
        ],
    );
    with_reason(f, format!("driver chain: {}", drivers.join(" -> ")))
}

const THRESHOLDS: &str = "VM: fail on an emulated device, warn on an unknown driver";

impl Check for VirtioNet {
    describe!(NET_ID, NET_TITLE, |_| THRESHOLDS.to_string());
    fn run(&self, ctx: &Ctx) -> Vec<Finding> {
        let r = default_route_iface(&ctx.host).and_then(|i| nic_drivers(&ctx.host, &i, 0));
        match r {
            Ok((iface, drivers)) => {
                vec![judge(&NET_RULE, &iface, &drivers, ctx.hypervisor().is_vm())]
            }
            Err(e) => vec![skip(NET_ID, NET_TITLE, THRESHOLDS, e)],
        }
    }
}

impl Check for VirtioDisk {
    describe!(DISK_ID, DISK_TITLE, |_| THRESHOLDS.to_string());
    fn run(&self, ctx: &Ctx) -> Vec<Finding> {
        match resolve(&ctx.host, &ctx.path) {
            Ok(d) => vec![judge(
                &DISK_RULE,
                &d.name,
                &d.drivers,
                ctx.hypervisor().is_vm(),
            )],
            Err(e) => vec![skip(DISK_ID, DISK_TITLE, THRESHOLDS, e)],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn bridge_is_followed_to_its_port() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        let mk = |p: &str| std::fs::create_dir_all(r.join(p)).unwrap();
        let ln = |t: &str, p: &str| std::os::unix::fs::symlink(t, r.join(p)).unwrap();
        mk("sys/devices/virtual/net/br0/brif");
        mk("sys/devices/pci0000:00/0000:00:03.0/virtio2/net/ens3");
        mk("sys/class/net");
        mk("proc/net");
        std::fs::write(
            r.join("proc/net/route"),
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\nbr0\t00000000\t0100000A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n",
        )
        .unwrap();
        ln("../../devices/virtual/net/br0", "sys/class/net/br0");
        ln(
            "../../devices/pci0000:00/0000:00:03.0/virtio2/net/ens3",
            "sys/class/net/ens3",
        );
        ln(
            "../../../../devices/pci0000:00/0000:00:03.0/virtio2/net/ens3",
            "sys/devices/virtual/net/br0/brif/ens3",
        );
        ln(
            "../../../../bus/virtio/drivers/virtio_net",
            "sys/devices/pci0000:00/0000:00:03.0/virtio2/driver",
        );
        let h = Host::new(r).unwrap();
        assert_eq!(default_route_iface(&h).unwrap(), "br0");
        let (iface, drivers) = nic_drivers(&h, "br0", 0).unwrap();
        assert_eq!(iface, "ens3");
        assert_eq!(drivers, ["virtio_net"]);
        let f = judge(&NET_RULE, &iface, &drivers, Some(true));
        assert_eq!(f.verdict, Verdict::Pass);
    }

    #[test]
    fn classes_and_verdicts() {
        assert_eq!(
            classify(&v(&["virtio_net", "virtio-pci"]), PV_NET, EMULATED_NET).0,
            Class::Paravirtual
        );
        assert_eq!(
            classify(&v(&["e1000"]), PV_NET, EMULATED_NET).0,
            Class::Emulated
        );
        assert_eq!(
            classify(&v(&["sd", "pata_acpi"]), PV_DISK, EMULATED_DISK).0,
            Class::Emulated
        );
        assert_eq!(
            classify(&v(&["sd", "virtio_scsi"]), PV_DISK, EMULATED_DISK)
                .1
                .as_deref(),
            Some("virtio_scsi")
        );
        assert_eq!(verdict(Class::Emulated, Some(true)), Verdict::Fail);
        assert_eq!(verdict(Class::Emulated, Some(false)), Verdict::Pass);
        assert_eq!(verdict(Class::Other, Some(true)), Verdict::Warn);
        assert_eq!(verdict(Class::Other, None), Verdict::Warn);
        assert_eq!(verdict(Class::Paravirtual, None), Verdict::Pass);
    }
}
