//! The fallback engine of the random I/O phases: `queue_depth` threads, each doing
//! blocking `pread`/`pwrite` on the shared file, histograms merged with `add`.

use super::{block_count, err, new_hist, ns, seed, Aligned, Engine, RandResult, Rng, BLOCK};
use crate::cleanup::TempFile;
use hdrhistogram::Histogram;
use std::os::unix::fs::FileExt;
use std::sync::Barrier;
use std::time::{Duration, Instant};

/// The fallback engine: `qd` threads each blocking in `pread`/`pwrite`.
pub fn rand_threads(
    t: &TempFile,
    bytes: u64,
    qd: u32,
    write: bool,
    limit: Duration,
) -> Result<RandResult, String> {
    let blocks = block_count(t, bytes)?;
    let barrier = Barrier::new(qd as usize);
    let results: Vec<ThreadResult> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..qd)
            .map(|i| {
                let barrier = &barrier;
                s.spawn(move || {
                    let mut rng = Rng(seed(i as u64, bytes));
                    let mut buf = Aligned::new(BLOCK, i as u8);
                    let mut hist = new_hist();
                    let mut ops = 0u64;
                    barrier.wait();
                    let start = Instant::now();
                    while start.elapsed() < limit {
                        let off = (rng.next() % blocks) * BLOCK as u64;
                        let s0 = Instant::now();
                        let r = if write {
                            t.file.write_all_at(buf.get(), off)
                        } else {
                            t.file.read_exact_at(buf.get_mut(), off)
                        };
                        r.map_err(|e| err(t.path(), if write { "pwrite" } else { "pread" }, e))?;
                        hist.saturating_record(ns(s0.elapsed()));
                        ops += 1;
                    }
                    Ok((hist, ops, start.elapsed()))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("an I/O thread panicked".into()))
            })
            .collect()
    });
    let mut hist = new_hist();
    let mut ops = 0;
    let mut elapsed = Duration::ZERO;
    for r in results {
        let (h, o, e) = r?;
        hist.add(&h)
            .map_err(|e| format!("merging histograms: {e:?}"))?;
        ops += o;
        elapsed = elapsed.max(e);
    }
    Ok(RandResult {
        hist,
        ops,
        elapsed,
        engine: Engine::Threads,
        fallback: None,
    })
}

/// One I/O thread's histogram, operations and elapsed time.
type ThreadResult = Result<(Histogram<u64>, u64, Duration), String>;
