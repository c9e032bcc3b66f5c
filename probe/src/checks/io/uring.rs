//! The io_uring engine of the random I/O phases: ONE thread keeps `queue_depth` reads or
//! writes in flight (one aligned O_DIRECT buffer per slot), as fio's io_uring engine does,
//! and, like fio by default, submits each replacement I/O as soon as its slot completes.
//! Pushing a submission is the crate's only `unsafe` (see `push_rw`).

use super::{block_count, err, new_hist, ns, seed, Aligned, Engine, RandResult, Rng, BLOCK};
use crate::cleanup::TempFile;
use io_uring::{opcode, squeue, types, IoUring};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// Why the io_uring engine did not measure.
#[derive(Debug)]
pub enum UringError {
    /// io_uring is unavailable here: fall back to threads.
    Setup(String),
    /// An I/O failed: the phase's error, as with the threads engine.
    Io(String),
}

/// Queue one 4 KiB read into (or write from) `buf` at `off`, tagged with `slot`.
#[allow(unsafe_code)]
fn push_rw(
    ring: &mut IoUring,
    fd: types::Fd,
    buf: &mut Aligned,
    off: u64,
    write: bool,
    slot: usize,
) -> Result<(), squeue::PushError> {
    let b = buf.get_mut();
    let entry = if write {
        opcode::Write::new(fd, b.as_ptr(), BLOCK as u32)
            .offset(off)
            .build()
    } else {
        opcode::Read::new(fd, b.as_mut_ptr(), BLOCK as u32)
            .offset(off)
            .build()
    }
    .user_data(slot as u64);
    // SAFETY: the kernel uses `buf` (BLOCK bytes) and `fd` until the op completes. The
    // only caller, `rand_uring`, owns the slot buffers and `&TempFile` for its whole
    // run, pushes a slot again only after reaping that slot's completion (so no two ops
    // share a buffer), and never returns while an op is in flight: it drains the ring
    // until `inflight == 0`, and if the ring itself fails so that it cannot be drained it
    // leaks the buffers (`mem::forget`) instead of freeing memory the kernel may still
    // write. The file outlives the call (`&TempFile` borrow).
    unsafe { ring.submission().push(&entry) }
}

/// The io_uring engine: one thread, `qd` 4 KiB requests in flight.
pub fn rand_uring(
    t: &TempFile,
    bytes: u64,
    qd: u32,
    write: bool,
    limit: Duration,
) -> Result<RandResult, UringError> {
    let blocks = block_count(t, bytes).map_err(UringError::Io)?;
    let qd = qd.max(1) as usize;
    let setup = |what: &str, e: std::io::Error| UringError::Setup(format!("io_uring {what}: {e}"));
    let entries = (qd as u32).next_power_of_two();
    // Completions are reaped only by this thread, in `submit_and_wait`: let the kernel run
    // their task work then rather than interrupting us (Linux 6.1+); plain setup otherwise.
    let mut ring = IoUring::builder()
        .setup_single_issuer()
        .setup_coop_taskrun()
        .setup_defer_taskrun()
        .build(entries)
        .or_else(|_| IoUring::new(entries))
        .map_err(|e| setup("setup", e))?;
    let mut probe = io_uring::Probe::new();
    ring.submitter()
        .register_probe(&mut probe)
        .map_err(|e| setup("probe", e))?;
    let code = if write {
        opcode::Write::CODE
    } else {
        opcode::Read::CODE
    };
    if !probe.is_supported(code) {
        return Err(UringError::Setup(format!(
            "io_uring: IORING_OP_{} unsupported",
            if write { "WRITE" } else { "READ" }
        )));
    }
    let fd = types::Fd(t.file.as_raw_fd());
    let what = if write {
        "io_uring write"
    } else {
        "io_uring read"
    };
    let mut bufs: Vec<Aligned> = (0..qd).map(|i| Aligned::new(BLOCK, i as u8)).collect();
    let mut rng = Rng(seed(0, bytes));
    let mut hist = new_hist();
    let mut ops = 0u64;
    let mut inflight = 0usize;
    let mut failure: Option<String> = None;
    let mut done: Vec<(usize, i32)> = Vec::with_capacity(qd);
    let start = Instant::now();
    let mut started = vec![start; qd];
    for (slot, buf) in bufs.iter_mut().enumerate() {
        let off = (rng.next() % blocks) * BLOCK as u64;
        started[slot] = Instant::now();
        if let Err(e) = push_rw(&mut ring, fd, buf, off, write, slot) {
            failure = Some(format!("{what}: queue full: {e}"));
            break;
        }
        inflight += 1;
    }
    while inflight > 0 {
        match ring.submit_and_wait(1) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            Err(e) => {
                // Cannot tell what is still in flight: leak the buffers rather than free
                // memory the kernel may still write into.
                std::mem::forget(bufs);
                return Err(UringError::Io(err(t.path(), what, e)));
            }
        }
        done.clear();
        done.extend(
            ring.completion()
                .map(|c| (c.user_data() as usize, c.result())),
        );
        for &(slot, res) in &done {
            inflight -= 1;
            if res < 0 {
                let e = std::io::Error::from_raw_os_error(-res);
                failure.get_or_insert_with(|| err(t.path(), what, e));
                continue;
            }
            if res as usize != BLOCK {
                failure.get_or_insert_with(|| {
                    format!(
                        "{}: {what}: short transfer ({res} of {BLOCK} bytes)",
                        t.path().display()
                    )
                });
                continue;
            }
            hist.saturating_record(ns(started[slot].elapsed()));
            ops += 1;
            if failure.is_none() && start.elapsed() < limit {
                let off = (rng.next() % blocks) * BLOCK as u64;
                started[slot] = Instant::now();
                match push_rw(&mut ring, fd, &mut bufs[slot], off, write, slot) {
                    Ok(()) => {
                        inflight += 1;
                        // To the device at once, one at a time, as fio does by default
                        // (iodepth_batch_submit=1): held back until the next wait and sent
                        // as a batch, the reads took ~25 % longer each on a virtio disk
                        // (bench/probe.sh, BENCHMARKS.md). An error here leaves the entry
                        // queued; the next `submit_and_wait` sends it or reports it.
                        let _ = ring.submit();
                    }
                    Err(e) => failure = Some(format!("{what}: queue full: {e}")),
                }
            }
        }
    }
    let elapsed = start.elapsed();
    // Nothing is in flight any more: the buffers may drop.
    drop(bufs);
    if let Some(e) = failure {
        return Err(UringError::Io(e));
    }
    Ok(RandResult {
        hist,
        ops,
        elapsed,
        engine: Engine::IoUring,
        fallback: None,
    })
}
