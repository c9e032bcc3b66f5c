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
use meshbench_schema::Finding;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

mod judge;
mod threads;
mod uring;

pub use judge::{fsync_verdict, judge};
use judge::{skip_all, thresholds};
pub use threads::rand_threads;
pub use uring::{rand_uring, UringError};

use super::{Check, Ctx, NOT_LIVE};
use crate::cleanup::TempFile;
use crate::profile::Io;

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
pub(super) fn seed(slot: u64, bytes: u64) -> u64 {
    0x9e37_79b9_7f4a_7c15 ^ ((slot + 1) << 32) ^ bytes
}

fn block_count(t: &TempFile, bytes: u64) -> Result<u64, String> {
    match bytes / BLOCK as u64 {
        0 => Err(format!(
            "{}: nothing was written to read back",
            t.path().display()
        )),
        n => Ok(n),
    }
}

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
    // what a SIGKILLed probe left (128 MiB each with the default profile)
    crate::cleanup::remove_stale(dir);
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

#[cfg(test)]
mod tests {
    use super::*;

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
