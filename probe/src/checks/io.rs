//! Disk I/O on `--path`, in temporary files that are always removed (see `cleanup`).
//!
//! - etcd-style: 2300-byte appending writes, each followed by `fdatasync`, queue depth 1;
//!   the `fdatasync` latency is recorded (what fio reports as `sync` latency and etcd as
//!   `wal_fsync_duration_seconds`). The file is preallocated (as etcd and fio do). Bounded
//!   by `io.fsync_max_writes` (fio's etcd job: 22 MiB / 2300 B = 10029) and
//!   `io.fsync_seconds`.
//! - sequential write: 1 MiB `O_DIRECT` writes up to `io.size_mib`, then `fdatasync`,
//!   bounded by `io.phase_seconds`; this also lays the file out for the random tests.
//! - 4 KiB random read, then random write, `O_DIRECT`, queue depth `io.queue_depth`
//!   (32), for `io.phase_seconds`. Engine `io_uring`: ONE thread keeps that many reads or
//!   writes in flight through an io_uring (one aligned buffer per slot), like fio's
//!   libaio/io_uring engines; latency per I/O (submission to completion) in an HDR
//!   histogram (ns). Fallback engine `threads`, when io_uring cannot be set up (old kernel,
//!   seccomp, `IORING_OP_READ` unsupported): that many threads each doing blocking
//!   `pread`/`pwrite` on the shared file descriptor, histograms merged with `add`. The
//!   finding's reason names the engine used (and why io_uring was not).
//!
//! Refuses to run when free space is below twice `io.size_mib`. O_DIRECT needs aligned
//! buffers: a Vec with 4 KiB of slack and its aligned sub-slice. The only `unsafe` is
//! pushing an io_uring submission (see `push_rw`).

use hdrhistogram::Histogram;
use io_uring::{opcode, squeue, types, IoUring};
use meshbench_schema::{Finding, Verdict};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use super::{above, below, finding, fmt_num, num, skip, with_reason, Check, Ctx, NOT_LIVE};
use crate::cleanup::TempFile;
use crate::profile::{Io, Thresholds};

pub struct DiskIo;

pub const FSYNC_ID: &str = "disk.fsync";
pub const RANDREAD_ID: &str = "disk.randread";
pub const RANDWRITE_ID: &str = "disk.randwrite";
pub const SEQWRITE_ID: &str = "disk.seqwrite";
const ALIGN: usize = 4096;
const BLOCK: usize = 4096;
const SEQ_BLOCK: usize = 1 << 20;
const FSYNC_TITLE: &str = "etcd-style fdatasync";
const RANDREAD_TITLE: &str = "4k random read";
const RANDWRITE_TITLE: &str = "4k random write";
const SEQWRITE_TITLE: &str = "Sequential write";
/// The etcd WAL entry size used by fio's etcd job.
pub const ETCD_WRITE: usize = 2300;

/// A buffer whose usable part is aligned for O_DIRECT.
struct Aligned {
    buf: Vec<u8>,
    off: usize,
    len: usize,
}

impl Aligned {
    fn new(len: usize, fill: u8) -> Aligned {
        let buf = vec![fill; len + ALIGN];
        let off = buf.as_ptr().align_offset(ALIGN);
        Aligned { buf, off, len }
    }
    fn get(&self) -> &[u8] {
        &self.buf[self.off..self.off + self.len]
    }
    fn get_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.off..self.off + self.len]
    }
}

fn new_hist() -> Histogram<u64> {
    // 1 ns .. 60 s, 3 significant digits.
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("static histogram bounds are valid")
}

fn ns(d: Duration) -> u64 {
    (d.as_nanos() as u64).max(1)
}

/// xorshift64*: enough randomness to pick offsets, no dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// The etcd-style test's result.
#[derive(Debug)]
pub struct FsyncResult {
    pub hist: Histogram<u64>,
    pub elapsed: Duration,
    /// Whether the file could be preallocated (posix_fallocate).
    pub preallocated: bool,
}

/// Sequential write result.
#[derive(Debug, Clone, Copy)]
pub struct SeqResult {
    pub bytes: u64,
    pub elapsed: Duration,
    pub direct: bool,
}

/// How the random I/O was issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// One thread keeping `queue_depth` requests in flight through an io_uring.
    IoUring,
    /// `queue_depth` threads each blocking in `pread`/`pwrite` (fallback).
    Threads,
}

impl Engine {
    pub fn name(self) -> &'static str {
        match self {
            Engine::IoUring => "io_uring",
            Engine::Threads => "threads",
        }
    }
}

/// Random I/O result.
#[derive(Debug)]
pub struct RandResult {
    pub hist: Histogram<u64>,
    pub ops: u64,
    pub elapsed: Duration,
    pub engine: Engine,
    /// Why io_uring was not used, when `engine` is `Threads`.
    pub fallback: Option<String>,
}

impl RandResult {
    pub fn iops(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Everything the I/O test measured; a phase that could not run holds its error.
#[derive(Debug)]
pub struct IoResults {
    pub fsync: Result<FsyncResult, String>,
    pub seq: Result<SeqResult, String>,
    pub randread: Result<RandResult, String>,
    pub randwrite: Result<RandResult, String>,
}

fn err(path: &Path, what: &str, e: std::io::Error) -> String {
    format!("{}: {what}: {e}", path.display())
}

/// etcd-style: 2300-byte writes, each followed by fdatasync.
pub fn fsync_test(dir: &Path, max_writes: u64, limit: Duration) -> Result<FsyncResult, String> {
    let t = TempFile::create(dir, "wal", 0).map_err(|e| err(dir, "create", e))?;
    // Preallocate like etcd's WAL (64 MB segments) and fio (fallocate=native): the writes
    // then fill unwritten extents, as they do in production.
    let preallocated = {
        use std::os::fd::AsRawFd;
        // max_writes comes from the profile: saturate rather than overflow
        let len = max_writes
            .saturating_mul(ETCD_WRITE as u64)
            .min(libc::off_t::MAX as u64) as libc::off_t;
        nix::fcntl::posix_fallocate(t.file.as_raw_fd(), 0, len).is_ok()
    };
    let data = vec![0x5au8; ETCD_WRITE];
    let mut hist = new_hist();
    let start = Instant::now();
    let mut off = 0u64;
    for _ in 0..max_writes {
        t.file
            .write_all_at(&data, off)
            .map_err(|e| err(t.path(), "write", e))?;
        off += ETCD_WRITE as u64;
        let s = Instant::now();
        t.file
            .sync_data()
            .map_err(|e| err(t.path(), "fdatasync", e))?;
        hist.saturating_record(ns(s.elapsed()));
        if start.elapsed() >= limit {
            break;
        }
    }
    Ok(FsyncResult {
        hist,
        elapsed: start.elapsed(),
        preallocated,
    })
}

/// Sequential O_DIRECT write of up to `size` bytes (falls back to buffered writes when the
/// filesystem refuses O_DIRECT), then fdatasync. Returns the open file for the random tests.
pub fn seq_test(dir: &Path, size: u64, limit: Duration) -> Result<(TempFile, SeqResult), String> {
    let (t, direct) = match TempFile::create(dir, "data", libc::O_DIRECT) {
        Ok(t) => (t, true),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => (
            TempFile::create(dir, "data", 0).map_err(|e| err(dir, "create", e))?,
            false,
        ),
        Err(e) => return Err(err(dir, "create with O_DIRECT", e)),
    };
    let buf = Aligned::new(SEQ_BLOCK, 0xa5);
    let start = Instant::now();
    let mut off = 0u64;
    while off + SEQ_BLOCK as u64 <= size {
        match t.file.write_all_at(buf.get(), off) {
            Ok(()) => {}
            Err(e) if off == 0 && e.raw_os_error() == Some(libc::EINVAL) => {
                return Err(err(t.path(), "O_DIRECT write refused", e));
            }
            Err(e) => return Err(err(t.path(), "write", e)),
        }
        off += SEQ_BLOCK as u64;
        if start.elapsed() >= limit {
            break;
        }
    }
    t.file
        .sync_data()
        .map_err(|e| err(t.path(), "fdatasync", e))?;
    let r = SeqResult {
        bytes: off,
        elapsed: start.elapsed(),
        direct,
    };
    Ok((t, r))
}

/// 4 KiB random reads or writes at queue depth `qd` over the first `bytes` of the file:
/// through io_uring from one thread, or with `qd` blocking threads when io_uring cannot be
/// set up.
pub fn rand_test(
    t: &TempFile,
    bytes: u64,
    qd: u32,
    write: bool,
    limit: Duration,
) -> Result<RandResult, String> {
    block_count(t, bytes)?;
    match rand_uring(t, bytes, qd, write, limit) {
        Ok(r) => Ok(r),
        Err(UringError::Io(e)) => Err(e),
        Err(UringError::Setup(why)) => {
            let mut r = rand_threads(t, bytes, qd, write, limit)?;
            r.fallback = Some(why);
            Ok(r)
        }
    }
}

/// How many 4 KiB blocks of the test file the random phases may touch (at least one).
fn block_count(t: &TempFile, bytes: u64) -> Result<u64, String> {
    match bytes / BLOCK as u64 {
        0 => Err(format!(
            "{}: nothing was written to read back",
            t.path().display()
        )),
        n => Ok(n),
    }
}

/// Why the io_uring engine did not measure.
#[derive(Debug)]
pub enum UringError {
    /// io_uring is unavailable here: fall back to threads.
    Setup(String),
    /// An I/O failed: the phase's error, as with the threads engine.
    Io(String),
}

fn seed(slot: u64, bytes: u64) -> u64 {
    0x9e37_79b9_7f4a_7c15 ^ ((slot + 1) << 32) ^ bytes
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
                    Ok(()) => inflight += 1,
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

/// Free space check: `Err` with the figures when below twice the test size.
pub fn check_space(dir: &Path, size: u64) -> Result<u64, String> {
    let st =
        nix::sys::statvfs::statvfs(dir).map_err(|e| format!("{}: statvfs: {e}", dir.display()))?;
    let free = (st.blocks_available() as u64).saturating_mul(st.fragment_size() as u64);
    if free < size.saturating_mul(2) {
        return Err(format!(
            "refused: {} has {} MiB free, less than twice the test size ({} MiB)",
            dir.display(),
            free >> 20,
            size >> 20
        ));
    }
    Ok(free)
}

/// Run every phase. Temporary files are removed when this returns (or on a signal).
pub fn run_io(dir: &Path, cfg: &Io) -> Result<IoResults, String> {
    let size = cfg.size_mib << 20;
    check_space(dir, size)?;
    let phase = Duration::from_secs_f64(cfg.phase_seconds);
    let fsync = fsync_test(
        dir,
        cfg.fsync_max_writes,
        Duration::from_secs_f64(cfg.fsync_seconds),
    );
    let (seq, randread, randwrite) = match seq_test(dir, size, phase) {
        Ok((t, s)) => {
            let rr = rand_test(&t, s.bytes, cfg.queue_depth, false, phase);
            let rw = rand_test(&t, s.bytes, cfg.queue_depth, true, phase);
            drop(t);
            (Ok(s), rr, rw)
        }
        Err(e) => (Err(e.clone()), Err(e.clone()), Err(e)),
    };
    Ok(IoResults {
        fsync,
        seq,
        randread,
        randwrite,
    })
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}
fn us(ns: u64) -> f64 {
    ns as f64 / 1e3
}

fn th_fsync(t: &Thresholds) -> String {
    format!(
        "p99 warn > {} ms, fail > {} ms",
        t.fsync.warn_p99_ms, t.fsync.fail_p99_ms
    )
}
fn th_iops(t: &crate::profile::Iops) -> String {
    format!("warn < {} IOPS, fail < {} IOPS", t.warn_below, t.fail_below)
}
fn th_seq(t: &Thresholds) -> String {
    format!(
        "warn < {} MB/s, fail < {} MB/s",
        t.seqwrite.warn_below_mbs, t.seqwrite.fail_below_mbs
    )
}

/// Findings for measured results.
pub fn judge(r: &IoResults, t: &Thresholds, cfg: &Io) -> Vec<Finding> {
    let mut out = vec![];
    out.push(match &r.fsync {
        Ok(f) => {
            let h = &f.hist;
            let (p50, p99, max) = (
                ms(h.value_at_quantile(0.5)),
                ms(h.value_at_quantile(0.99)),
                ms(h.max()),
            );
            with_reason(
                finding(
                    FSYNC_ID,
                    FSYNC_TITLE,
                    fsync_verdict(p99, t),
                    format!("p99 {} ms (p50 {}, max {})", fmt_num(p99), fmt_num(p50), fmt_num(max)),
                    th_fsync(t),
                    "etcd and access logs need fast flushes: use local NVMe/SSD or a provisioned-IOPS volume",
                    vec![
                        num("fdatasync_p50_ms", p50, "ms"),
                        num("fdatasync_p99_ms", p99, "ms"),
                        num("fdatasync_max_ms", max, "ms"),
                        num("fdatasync_count", h.len() as f64, ""),
                    ],
                ),
                format!(
                    "{} writes of {ETCD_WRITE} B + fdatasync in {:.1} s, queue depth 1, file {}",
                    h.len(),
                    f.elapsed.as_secs_f64(),
                    if f.preallocated { "preallocated" } else { "not preallocated (fallocate refused)" }
                ),
            )
        }
        Err(e) => skip(FSYNC_ID, FSYNC_TITLE, th_fsync(t), e.clone()),
    });
    let rand = |id: &str,
                title: &str,
                rr: &Result<RandResult, String>,
                th: &crate::profile::Iops| match rr {
        Ok(x) => {
            let iops = x.iops();
            let h = &x.hist;
            let (p50, p99, max) = (
                us(h.value_at_quantile(0.5)),
                us(h.value_at_quantile(0.99)),
                us(h.max()),
            );
            let prefix = id.trim_start_matches("disk.");
            with_reason(
                finding(
                    id,
                    title,
                    below(iops, th.warn_below, th.fail_below),
                    format!(
                        "{} IOPS (p50 {} µs, p99 {} µs)",
                        fmt_num(iops),
                        fmt_num(p50),
                        fmt_num(p99)
                    ),
                    th_iops(th),
                    "slow random I/O: use local NVMe/SSD or raise the volume's provisioned IOPS",
                    vec![
                        num(&format!("{prefix}_iops"), iops, "IOPS"),
                        num(&format!("{prefix}_p50_us"), p50, "us"),
                        num(&format!("{prefix}_p99_us"), p99, "us"),
                        num(&format!("{prefix}_max_us"), max, "us"),
                    ],
                ),
                format!(
                    "4 KiB O_DIRECT, queue depth {} (engine {}), {} ops in {:.1} s",
                    cfg.queue_depth,
                    match (x.engine, &x.fallback) {
                        (Engine::IoUring, _) => "io_uring: one thread".to_string(),
                        (Engine::Threads, None) =>
                            format!("threads: {} threads, pread/pwrite", cfg.queue_depth),
                        (Engine::Threads, Some(why)) =>
                            format!("threads: {} threads, pread/pwrite; {why}", cfg.queue_depth),
                    },
                    x.ops,
                    x.elapsed.as_secs_f64()
                ),
            )
        }
        Err(e) => skip(id, title, th_iops(th), e.clone()),
    };
    out.push(rand(RANDREAD_ID, RANDREAD_TITLE, &r.randread, &t.randread));
    out.push(rand(
        RANDWRITE_ID,
        RANDWRITE_TITLE,
        &r.randwrite,
        &t.randwrite,
    ));
    out.push(match &r.seq {
        Ok(s) => {
            let mbs = s.bytes as f64 / 1e6 / s.elapsed.as_secs_f64().max(1e-9);
            with_reason(
                finding(
                    SEQWRITE_ID,
                    SEQWRITE_TITLE,
                    below(mbs, t.seqwrite.warn_below_mbs, t.seqwrite.fail_below_mbs),
                    format!("{} MB/s", fmt_num(mbs)),
                    th_seq(t),
                    "slow sequential writes: check the volume type and its throughput cap",
                    vec![num("seqwrite_mbs", mbs, "MB/s")],
                ),
                format!(
                    "{} MiB in 1 MiB {} writes + fdatasync in {:.2} s",
                    s.bytes >> 20,
                    if s.direct {
                        "O_DIRECT"
                    } else {
                        "buffered (O_DIRECT refused)"
                    },
                    s.elapsed.as_secs_f64()
                ),
            )
        }
        Err(e) => skip(SEQWRITE_ID, SEQWRITE_TITLE, th_seq(t), e.clone()),
    });
    out
}

fn skip_all(t: &Thresholds, reason: &str) -> Vec<Finding> {
    vec![
        skip(FSYNC_ID, FSYNC_TITLE, th_fsync(t), reason),
        skip(RANDREAD_ID, RANDREAD_TITLE, th_iops(&t.randread), reason),
        skip(RANDWRITE_ID, RANDWRITE_TITLE, th_iops(&t.randwrite), reason),
        skip(SEQWRITE_ID, SEQWRITE_TITLE, th_seq(t), reason),
    ]
}

fn thresholds(t: &Thresholds) -> String {
    format!(
        "fdatasync {}; randread {}; randwrite {}; seqwrite {}; test file {} MiB, \
         <= {} fdatasyncs in <= {} s, {} s per other phase, queue depth {}",
        th_fsync(t),
        th_iops(&t.randread),
        th_iops(&t.randwrite),
        th_seq(t),
        t.io.size_mib,
        t.io.fsync_max_writes,
        t.io.fsync_seconds,
        t.io.phase_seconds,
        t.io.queue_depth
    )
}

impl Check for DiskIo {
    describe!("disk.io", "Disk I/O", thresholds);
    fn finding_ids(&self) -> Vec<&'static str> {
        vec![FSYNC_ID, RANDREAD_ID, RANDWRITE_ID, SEQWRITE_ID]
    }
    fn live_only(&self) -> bool {
        true
    }
    fn run(&self, ctx: &Ctx) -> Vec<Finding> {
        let t = ctx.t();
        if !ctx.io {
            return skip_all(
                t,
                if ctx.quick {
                    "not run with --quick"
                } else {
                    "not run with --no-io"
                },
            );
        }
        if !ctx.host.is_live() {
            return skip_all(t, NOT_LIVE);
        }
        match run_io(Path::new(&ctx.path), &t.io) {
            Ok(r) => judge(&r, t, &t.io),
            Err(e) => skip_all(t, &e),
        }
    }
}

/// Verdict of an fdatasync p99 in ms.
pub fn fsync_verdict(p99_ms: f64, t: &Thresholds) -> Verdict {
    above(p99_ms, t.fsync.warn_p99_ms, t.fsync.fail_p99_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hist_ms(values: &[f64]) -> Histogram<u64> {
        let mut h = new_hist();
        for v in values {
            h.record((v * 1e6) as u64).unwrap();
        }
        h
    }

    fn results(fsync_ms: &[f64], iops_ops: u64) -> IoResults {
        IoResults {
            fsync: Ok(FsyncResult {
                hist: hist_ms(fsync_ms),
                elapsed: Duration::from_secs(1),
                preallocated: true,
            }),
            seq: Ok(SeqResult {
                bytes: 200 << 20,
                elapsed: Duration::from_secs(1),
                direct: true,
            }),
            randread: Ok(RandResult {
                hist: hist_ms(&[0.1, 0.2]),
                ops: iops_ops,
                elapsed: Duration::from_secs(1),
                engine: Engine::IoUring,
                fallback: None,
            }),
            randwrite: Err("x: pwrite: Input/output error".into()),
        }
    }

    #[test]
    fn recorded_latencies_give_each_verdict() {
        let t = Thresholds::default();
        let cfg = Io::default();
        let mut fast = vec![1.0; 99];
        fast.push(50.0);
        let f = judge(&results(&fast, 10_000), &t, &cfg);
        assert_eq!(f[0].check, FSYNC_ID);
        assert_eq!(f[0].verdict, Verdict::Pass, "{:?}", f[0]);
        let f = judge(&results(&[15.0; 100], 1000), &t, &cfg);
        assert_eq!(f[0].verdict, Verdict::Warn);
        assert_eq!(f[1].verdict, Verdict::Warn, "{:?}", f[1]);
        let f = judge(&results(&[25.0; 100], 100), &t, &cfg);
        assert_eq!(f[0].verdict, Verdict::Fail);
        assert_eq!(f[1].verdict, Verdict::Fail);
        assert_eq!(f[2].verdict, Verdict::Skip);
        assert!(f[2].reason.as_ref().unwrap().contains("pwrite"));
        assert_eq!(f[3].verdict, Verdict::Pass);
        assert_eq!(fsync_verdict(10.5, &t), Verdict::Warn);
        assert!(f[1].reason.as_ref().unwrap().contains("engine io_uring"));
    }

    #[test]
    fn the_reason_names_the_fallback_engine_and_why() {
        let t = Thresholds::default();
        let cfg = Io::default();
        let mut r = results(&[1.0], 10_000);
        if let Ok(x) = r.randread.as_mut() {
            x.engine = Engine::Threads;
            x.fallback = Some("io_uring setup: Operation not permitted".into());
        }
        let f = judge(&r, &t, &cfg);
        let reason = f[1].reason.as_ref().unwrap();
        assert!(reason.contains("engine threads: 32 threads"), "{reason}");
        assert!(
            reason.contains("io_uring setup: Operation not permitted"),
            "{reason}"
        );
    }

    #[test]
    fn io_uring_engine_measures_reads_and_writes() {
        let dir = tempfile::tempdir().unwrap();
        let (t, s) = seq_test(dir.path(), 2 << 20, Duration::from_secs(5)).unwrap();
        for write in [false, true] {
            match rand_uring(&t, s.bytes, 8, write, Duration::from_millis(100)) {
                Ok(r) => {
                    assert_eq!(r.engine, Engine::IoUring);
                    assert!(r.ops > 0 && r.iops() > 0.0, "{r:?}");
                    assert_eq!(r.hist.len(), r.ops);
                }
                Err(UringError::Setup(why)) => {
                    println!("skipped: io_uring unavailable here: {why}");
                    return;
                }
                Err(UringError::Io(e)) => panic!("io_uring {write}: {e}"),
            }
            // the public entry point picks io_uring too
            let r = rand_test(&t, s.bytes, 8, write, Duration::from_millis(50)).unwrap();
            assert_eq!(r.engine, Engine::IoUring);
        }
        drop(t);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn threads_engine_still_measures() {
        let dir = tempfile::tempdir().unwrap();
        let (t, s) = seq_test(dir.path(), 2 << 20, Duration::from_secs(5)).unwrap();
        let r = rand_threads(&t, s.bytes, 4, false, Duration::from_millis(50)).unwrap();
        assert_eq!(r.engine, Engine::Threads);
        assert!(r.ops > 0 && r.hist.len() == r.ops);
    }

    #[test]
    fn aligned_buffers_are_aligned() {
        for len in [BLOCK, SEQ_BLOCK] {
            let mut a = Aligned::new(len, 1);
            assert_eq!(a.get().as_ptr() as usize % ALIGN, 0);
            assert_eq!(a.get_mut().len(), len);
        }
    }

    #[test]
    fn tiny_real_run_measures_and_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = Io {
            size_mib: 4,
            fsync_max_writes: 20,
            fsync_seconds: 0.5,
            phase_seconds: 0.1,
            queue_depth: 4,
        };
        let r = run_io(dir.path(), &cfg).unwrap();
        let f = r.fsync.as_ref().unwrap();
        assert!(!f.hist.is_empty() && f.hist.len() <= 20);
        let s = r.seq.as_ref().unwrap();
        assert!(s.bytes >= 1 << 20 && s.bytes <= 4 << 20);
        assert!(r.randread.as_ref().unwrap().ops > 0);
        assert!(r.randwrite.as_ref().unwrap().ops > 0);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_huge_write_bound_neither_overflows_nor_leaves_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = fsync_test(dir.path(), u64::MAX, Duration::from_millis(20)).unwrap();
        assert!(!f.hist.is_empty());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn refuses_when_free_space_is_short() {
        let dir = tempfile::tempdir().unwrap();
        let e = check_space(dir.path(), u64::MAX / 4).unwrap_err();
        assert!(e.starts_with("refused: "), "{e}");
        assert!(check_space(dir.path(), 1 << 20).is_ok());
    }
}
