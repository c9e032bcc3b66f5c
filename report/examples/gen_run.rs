//! Writes a synthetic matrix run (run.json + one .hlog per cell) for benchmarks and for
//! looking at a report without running loadgen:
//!
//!     cargo run -p meshbench-report --example gen_run -- OUT_DIR [CPUS] [LOGS] [SECONDS]
//!
//! CPUS x LOGS cells (default 4 x 3 = 12: 100m, 250m, 500m, no limit x off, buffered,
//! sync), SECONDS per cell (default 30) at 200 requests/s.
#[path = "../tests/common/mod.rs"]
mod common;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(out) = args.first() else {
        eprintln!("usage: gen_run OUT_DIR [CPUS] [LOGS] [SECONDS]");
        std::process::exit(2);
    };
    let n = |i: usize, d: usize| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(d);
    let all_cpus = [
        Some(100),
        Some(250),
        Some(500),
        Some(1000),
        Some(2000),
        None,
    ];
    let all_logs = ["off", "buffered", "sync"];
    let ncpu = n(1, 4).clamp(1, all_cpus.len());
    let mut cpus: Vec<Option<u64>> = all_cpus[..ncpu - 1].to_vec();
    cpus.push(None);
    let logs = &all_logs[..n(2, 3).clamp(1, 3)];
    let mut specs = common::matrix(&cpus, logs);
    for s in &mut specs {
        s.seconds = n(3, 30);
    }
    common::write_run(std::path::Path::new(out), "canary", &specs);
    println!("{out}: {} cells", specs.len());
}
