//! Memory: total and available (MemAvailable of /proc/meminfo).

use meshbench_schema::Finding;
use procfs_core::Meminfo;

use super::{below, finding, num, skip, Check, Ctx};
use crate::profile::Thresholds;

pub struct Memory;

const ID: &str = "memory";
const TITLE: &str = "Memory";

fn thresholds(t: &Thresholds) -> String {
    format!(
        "available: warn < {} MiB, fail < {} MiB",
        t.memory.warn_available_mib_below, t.memory.fail_available_mib_below
    )
}

impl Check for Memory {
    describe!(ID, TITLE, thresholds);
    fn run(&self, ctx: &Ctx) -> Vec<Finding> {
        let th = thresholds(ctx.t());
        let m: Meminfo = match ctx.host.parse("/proc/meminfo") {
            Ok(m) => m,
            Err(e) => return vec![skip(ID, TITLE, th, e.to_string())],
        };
        let Some(avail) = m.mem_available else {
            return vec![skip(
                ID,
                TITLE,
                th,
                "/proc/meminfo: no MemAvailable (kernel older than 3.14)",
            )];
        };
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        let (total, avail) = (mib(m.mem_total), mib(avail));
        let t = &ctx.t().memory;
        vec![finding(
            ID,
            TITLE,
            below(
                avail,
                t.warn_available_mib_below as f64,
                t.fail_available_mib_below as f64,
            ),
            format!("{avail:.0} MiB available of {total:.0} MiB"),
            th,
            "free memory or choose a larger instance: each sidecar needs 50-150 MiB",
            vec![
                num("mem_total_mib", total, "MiB"),
                num("mem_available_mib", avail, "MiB"),
            ],
        )]
    }
}
