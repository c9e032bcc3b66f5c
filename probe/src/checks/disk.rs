//! The block device behind `--path`, and its queue settings.
//!
//! Resolution: the device number of `--path` (live root: `stat(2)`'s `st_dev`; a fixture
//! root, or a live filesystem with an anonymous device such as overlayfs: the longest
//! matching mount point of `/proc/self/mountinfo`, its `MAJ:MIN` or its `/dev/NAME` source)
//! -> `/sys/dev/block/MAJ:MIN` (a symlink into /sys/devices) -> a partition's parent ->
//! a device-mapper device's `slaves/` (recursively). The driver chain is every `driver`
//! link from the disk's directory up to /sys/devices (e.g. `sd`, `virtio_scsi`,
//! `virtio-pci`), so a SCSI disk is told apart by its host adapter.

use meshbench_schema::{Finding, Verdict};
use procfs_core::process::MountInfos;

use super::{finding, num, skip, text, with_reason, Check, Ctx};
use crate::host::{base, parent, Host};

pub struct DiskDevice;

const ID: &str = "disk.device";
const TITLE: &str = "Disk device";

/// The disk behind a path.
#[derive(Debug, Clone, PartialEq)]
pub struct Disk {
    /// MAJ:MIN of the filesystem.
    pub dev: String,
    /// How the device number was found ("stat" or "mountinfo").
    pub dev_source: &'static str,
    /// Canonical /sys path of the whole disk.
    pub sys_path: String,
    /// Kernel name, e.g. "vda", "nvme0n1", "sda".
    pub name: String,
    /// The path of names from the filesystem's device to the disk, e.g. ["dm-0", "vda2", "vda"].
    pub chain: Vec<String>,
    /// Every driver from the disk up to the bus, nearest first.
    pub drivers: Vec<String>,
}

impl Disk {
    /// "NVMe", "virtio-blk", "virtio-scsi", "SATA/IDE (ATA)", "SCSI", "Xen PV", ...
    pub fn kind(&self) -> &'static str {
        disk_kind(&self.drivers, &self.name)
    }
}

/// Classify a disk by its driver chain (and name as a last resort).
pub fn disk_kind(drivers: &[String], name: &str) -> &'static str {
    let has = |d: &str| drivers.iter().any(|x| x == d);
    let has_prefix = |p: &str| drivers.iter().any(|x| x.starts_with(p));
    if has("nvme") {
        "NVMe"
    } else if has("virtio_blk") {
        "virtio-blk"
    } else if has("virtio_scsi") {
        "virtio-scsi"
    } else if has("xen-blkfront") || has("xen_blkfront") || has("vbd") {
        "Xen PV"
    } else if has("hv_storvsc") {
        "Hyper-V storvsc"
    } else if has("vmw_pvscsi") {
        "VMware PVSCSI"
    } else if has("ahci")
        || has("ata_piix")
        || has("ata_generic")
        || has_prefix("pata_")
        || has_prefix("sata_")
    {
        "SATA/IDE (ATA)"
    } else if has("sd") || has("mptspi") || has("sym53c8xx") || has("mptsas") {
        "SCSI"
    } else if name.starts_with("nvme") {
        "NVMe"
    } else if name.starts_with("vd") {
        "virtio-blk"
    } else {
        "unknown"
    }
}

/// The device number (MAJ:MIN) of the filesystem holding `path`, from mountinfo.
fn dev_from_mountinfo(host: &Host, path: &str) -> Result<String, String> {
    let infos: MountInfos = host
        .parse("/proc/self/mountinfo")
        .map_err(|e| e.to_string())?;
    let mut best: Option<&procfs_core::process::MountInfo> = None;
    for m in &infos.0 {
        let mp = m.mount_point.to_string_lossy();
        let matches =
            path == mp || mp == "/" || path.starts_with(&format!("{}/", mp.trim_end_matches('/')));
        if matches
            && best
                .is_none_or(|b| b.mount_point.as_os_str().len() <= m.mount_point.as_os_str().len())
        {
            best = Some(m);
        }
    }
    let m = best.ok_or_else(|| format!("/proc/self/mountinfo: no mount holds {path}"))?;
    if !m.majmin.starts_with("0:") {
        return Ok(m.majmin.clone());
    }
    // Anonymous device (overlayfs, btrfs subvolume, ...): try the mount source.
    if let Some(src) = m
        .mount_source
        .as_deref()
        .and_then(|s| s.strip_prefix("/dev/"))
    {
        let name = base(src);
        if let Ok(d) = host.read_trim(&format!("/sys/class/block/{name}/dev")) {
            return Ok(d);
        }
    }
    Err(format!(
        "{path} is on {} ({}), which has no block device",
        m.mount_point.display(),
        m.fs_type
    ))
}

/// Resolve the disk behind `path` (a host path under the root).
pub fn resolve(host: &Host, path: &str) -> Result<Disk, String> {
    let mut dev_source = "mountinfo";
    let mut dev = None;
    if host.is_live() {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(path).map_err(|e| format!("{path}: {e}"))?;
        let d = meta.dev();
        let (maj, min) = (nix::sys::stat::major(d), nix::sys::stat::minor(d));
        if maj != 0 {
            dev = Some(format!("{maj}:{min}"));
            dev_source = "stat";
        }
    }
    let dev = match dev {
        Some(d) => d,
        None => dev_from_mountinfo(host, path)?,
    };
    let link = format!("/sys/dev/block/{dev}");
    let start = host.canonical(&link).map_err(|e| e.to_string())?;
    let mut chain = vec![base(&start).to_string()];
    let sys_path = whole_disk(host, &start, &mut chain, 0)?;
    let name = base(&sys_path).to_string();
    let drivers = driver_chain(host, &sys_path);
    Ok(Disk {
        dev,
        dev_source,
        sys_path,
        name,
        chain,
        drivers,
    })
}

/// Partition -> parent; dm-* -> its first slave, recursively.
fn whole_disk(
    host: &Host,
    dir: &str,
    chain: &mut Vec<String>,
    depth: u32,
) -> Result<String, String> {
    if depth > 8 {
        return Err(format!("{dir}: device stack too deep"));
    }
    if host.exists(&format!("{dir}/partition")) {
        let p = parent(dir).ok_or_else(|| format!("{dir}: partition without a parent"))?;
        chain.push(base(p).to_string());
        return whole_disk(host, p, chain, depth + 1);
    }
    let slaves_dir = format!("{dir}/slaves");
    if let Ok(slaves) = host.list_dir(&slaves_dir) {
        if let Some(first) = slaves.first() {
            let next = host
                .canonical(&format!("{slaves_dir}/{first}"))
                .map_err(|e| e.to_string())?;
            chain.push(base(&next).to_string());
            return whole_disk(host, &next, chain, depth + 1);
        }
    }
    Ok(dir.to_string())
}

/// Every `driver` link from `dir` up to /sys/devices, nearest first.
pub fn driver_chain(host: &Host, dir: &str) -> Vec<String> {
    let mut out = vec![];
    let mut cur = Some(dir);
    while let Some(d) = cur {
        if d == "/sys/devices" || d == "/sys" || d == "/" {
            break;
        }
        if let Ok(name) = host.link_name(&format!("{d}/driver")) {
            out.push(name);
        }
        cur = parent(d);
    }
    out
}

/// The selected I/O scheduler: "none [mq-deadline] kyber" -> "mq-deadline".
pub fn selected_scheduler(s: &str) -> String {
    s.split_whitespace()
        .find(|w| w.starts_with('['))
        .map(|w| w.trim_matches(|c| c == '[' || c == ']').to_string())
        .unwrap_or_else(|| s.trim().to_string())
}

/// Queue settings of a disk.
#[derive(Debug, Clone, PartialEq)]
pub struct Queue {
    pub rotational: Option<bool>,
    pub scheduler: Option<String>,
    pub nr_requests: Option<u64>,
    pub write_cache: Option<String>,
}

pub fn read_queue(host: &Host, sys_path: &str) -> Queue {
    let q = |a: &str| format!("{sys_path}/queue/{a}");
    Queue {
        rotational: host.read_u64(&q("rotational")).ok().map(|v| v == 1),
        scheduler: host
            .read_trim(&q("scheduler"))
            .ok()
            .map(|s| selected_scheduler(&s)),
        nr_requests: host.read_u64(&q("nr_requests")).ok(),
        write_cache: host.read_trim(&q("write_cache")).ok(),
    }
}

/// The finding for a disk, its queue, and whether the host is a VM.
pub fn judge(d: &Disk, q: &Queue, is_vm: Option<bool>) -> Finding {
    let kind = d.kind();
    let mut problems: Vec<String> = vec![];
    let mut remedies: Vec<&str> = vec![];
    if q.rotational == Some(true) && is_vm == Some(false) {
        problems.push("rotational disk".into());
        remedies.push("put etcd and access logs on an SSD/NVMe");
    }
    let flash = matches!(kind, "NVMe") || q.rotational == Some(false);
    if let Some(s) = &q.scheduler {
        if flash && (s == "bfq" || s == "cfq") {
            problems.push(format!("{s} scheduler on a flash device"));
            remedies.push("use the none (or mq-deadline) scheduler: echo none > /sys/block/DEV/queue/scheduler");
        }
    }
    if let Some(n) = q.nr_requests {
        if n < 32 {
            problems.push(format!("nr_requests {n} < 32"));
            remedies.push("raise /sys/block/DEV/queue/nr_requests");
        }
    }
    let verdict = if problems.is_empty() {
        Verdict::Pass
    } else {
        Verdict::Warn
    };
    let show = |o: &Option<String>| o.clone().unwrap_or_else(|| "?".into());
    let value = format!(
        "{} {} ({}), {}, scheduler {}, nr_requests {}, cache {}",
        d.name,
        kind,
        d.drivers.first().map(String::as_str).unwrap_or("no driver"),
        match q.rotational {
            Some(true) => "rotational",
            Some(false) => "non-rotational",
            None => "rotational ?",
        },
        show(&q.scheduler),
        q.nr_requests
            .map(|n| n.to_string())
            .unwrap_or_else(|| "?".into()),
        show(&q.write_cache),
    );
    let mut ms = vec![
        text("disk", d.name.clone()),
        text("disk_kind", kind),
        text("disk_dev", d.dev.clone()),
        text("disk_drivers", d.drivers.join(",")),
    ];
    if let Some(r) = q.rotational {
        ms.push(super::flag("rotational", r));
    }
    if let Some(s) = &q.scheduler {
        ms.push(text("scheduler", s.clone()));
    }
    if let Some(n) = q.nr_requests {
        ms.push(num("nr_requests", n as f64, ""));
    }
    if let Some(w) = &q.write_cache {
        ms.push(text("write_cache", w.clone()));
    }
    let mut f = finding(
        ID,
        TITLE,
        verdict,
        value,
        THRESHOLDS,
        &remedies.join("; "),
        ms,
    );
    let mut reason = format!(
        "device {} (via {}): {}",
        d.dev,
        d.dev_source,
        d.chain.join(" -> ")
    );
    if !problems.is_empty() {
        reason = format!("{}; {reason}", problems.join(", "));
    }
    f = with_reason(f, reason);
    f
}

const THRESHOLDS: &str = "warn: rotational on bare metal, bfq/cfq on flash, nr_requests < 32";

impl Check for DiskDevice {
    describe!(ID, TITLE, |_| THRESHOLDS.to_string());
    fn run(&self, ctx: &Ctx) -> Vec<Finding> {
        match resolve(&ctx.host, &ctx.path) {
            Ok(d) => {
                let q = read_queue(&ctx.host, &d.sys_path);
                vec![judge(&d, &q, ctx.hypervisor().is_vm())]
            }
            Err(e) => vec![skip(ID, TITLE, THRESHOLDS, e)],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(files: &[(&str, &str)], links: &[(&str, &str)]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for (p, t) in files {
            let p = d.path().join(p.trim_start_matches('/'));
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, t).unwrap();
        }
        for (p, t) in links {
            let p = d.path().join(p.trim_start_matches('/'));
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::os::unix::fs::symlink(t, p).unwrap();
        }
        d
    }

    #[test]
    fn anonymous_device_falls_back_to_the_mount_source() {
        // /var/lib on overlayfs (0:52) is not a block device; the mount source names one.
        let d = tree(
            &[
                (
                    "/proc/self/mountinfo",
                    "1 0 254:1 / / rw - ext4 /dev/vda1 rw\n2 1 0:52 / /var/lib rw - btrfs /dev/vdb rw\n",
                ),
                ("/sys/class/block/vdb/dev", "254:16\n"),
                ("/sys/devices/pci0000:00/0000:00:05.0/virtio3/block/vdb/queue/rotational", "0\n"),
            ],
            &[
                ("/sys/dev/block/254:16", "../../devices/pci0000:00/0000:00:05.0/virtio3/block/vdb"),
                ("/sys/devices/pci0000:00/0000:00:05.0/virtio3/driver", "../../../../bus/virtio/drivers/virtio_blk"),
            ],
        );
        let h = Host::new(d.path()).unwrap();
        let disk = resolve(&h, "/var/lib/etcd").unwrap();
        assert_eq!(disk.dev, "254:16");
        assert_eq!(disk.name, "vdb");
        assert_eq!(disk.kind(), "virtio-blk");
        // the root filesystem: longest prefix is "/"
        let e = resolve(&h, "/srv").unwrap_err();
        assert!(e.contains("/sys/dev/block/254:1"), "{e}");
        // a tmpfs without a /dev source has no disk
        let d2 = tree(
            &[("/proc/self/mountinfo", "1 0 0:30 / / rw - tmpfs tmpfs rw\n")],
            &[],
        );
        let e = resolve(&Host::new(d2.path()).unwrap(), "/var/lib").unwrap_err();
        assert!(e.contains("no block device"), "{e}");
    }

    #[test]
    fn scheduler_selection() {
        assert_eq!(
            selected_scheduler("none [mq-deadline] kyber bfq"),
            "mq-deadline"
        );
        assert_eq!(selected_scheduler("[none] mq-deadline"), "none");
        assert_eq!(selected_scheduler("none"), "none");
    }

    #[test]
    fn kinds_by_driver_chain() {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            disk_kind(&v(&["virtio_blk", "virtio-pci"]), "vda"),
            "virtio-blk"
        );
        assert_eq!(
            disk_kind(&v(&["sd", "virtio_scsi", "virtio-pci"]), "sda"),
            "virtio-scsi"
        );
        assert_eq!(disk_kind(&v(&["sd", "ahci"]), "sda"), "SATA/IDE (ATA)");
        assert_eq!(disk_kind(&v(&["sd", "ata_piix"]), "sda"), "SATA/IDE (ATA)");
        assert_eq!(disk_kind(&v(&["nvme"]), "nvme0n1"), "NVMe");
        assert_eq!(disk_kind(&v(&[]), "xyz"), "unknown");
    }

    fn disk(kind_driver: &str) -> Disk {
        Disk {
            dev: "8:0".into(),
            dev_source: "mountinfo",
            sys_path: "/sys/x".into(),
            name: "sda".into(),
            chain: vec!["sda1".into(), "sda".into()],
            drivers: vec![kind_driver.into()],
        }
    }

    #[test]
    fn verdicts() {
        let good = Queue {
            rotational: Some(false),
            scheduler: Some("none".into()),
            nr_requests: Some(1023),
            write_cache: Some("write back".into()),
        };
        assert_eq!(
            judge(&disk("nvme"), &good, Some(false)).verdict,
            Verdict::Pass
        );
        let spinning = Queue {
            rotational: Some(true),
            ..good.clone()
        };
        // a VM's virtual disk often says rotational: not held against it
        assert_eq!(
            judge(&disk("virtio_blk"), &spinning, Some(true)).verdict,
            Verdict::Pass
        );
        let f = judge(&disk("ahci"), &spinning, Some(false));
        assert_eq!(f.verdict, Verdict::Warn);
        assert!(f.remedy.unwrap().contains("SSD"));
        let bfq = Queue {
            scheduler: Some("bfq".into()),
            ..good
        };
        assert_eq!(
            judge(&disk("nvme"), &bfq, Some(false)).verdict,
            Verdict::Warn
        );
    }
}
