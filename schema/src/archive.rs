//! A run's results as lines of text, for where the only way out of a machine is its log (a
//! Kubernetes pod's `kubectl logs`): `loadgen run --log-results` writes one archive at the
//! end of its output, `report unpack LOG...` writes the run directories back, byte for byte.
//!
//! What is archived: the files `report merge` and every `report` command read — run.json
//! and the interval logs (`*.hlog`) at the top of the run directory. Never the embedded
//! mesh's keys and access logs, nor the rendered report.
//!
//! Every line starts with [`MARKER`] and a word, so the archive is found wherever a log
//! collector put it: behind `kubectl logs --prefix` or `--timestamps` prefixes, between
//! other output lines, several archives in one file:
//!
//! ```text
//! meshbench-archive-v1 begin worker-2
//! meshbench-archive-v1 file run.json 20418
//! meshbench-archive-v1 data H4sIAAAAAAAA/+1d... (base64 of the file's gzip, 76 characters a line)
//! meshbench-archive-v1 file cell-0.hlog 5120
//! meshbench-archive-v1 data ...
//! meshbench-archive-v1 end 2
//! ```
//!
//! gzip's CRC-32 and length and the declared size check each file; `end` and its count
//! check the archive. A log cut short (kubelet rotates container logs at 10 MiB by default)
//! gives back the files that were whole and says which were not.

use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use flate2::write::{GzDecoder, GzEncoder};

use crate::files::SchemaError;
use crate::RUN_FILE;

/// First word of every archive line; the version is in it.
pub const MARKER: &str = "meshbench-archive-v1";
/// Bytes of gzip per `data` line: 57 bytes are 76 base64 characters, without padding but
/// on the last line.
const CHUNK: usize = 57;
/// Most bytes one archived file may decode to (a run's interval logs are far smaller).
pub const MAX_FILE_BYTES: u64 = 1 << 30;

/// Whether `name` may be archived and unpacked: a plain file name, no path.
fn plain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && name != "."
        && name != ".."
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

/// The files of `dir` that an archive holds: run.json first, then every `*.hlog`, by name.
pub fn archived_files(dir: &Path) -> Result<Vec<String>, SchemaError> {
    let io = |source| SchemaError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut names = Vec::new();
    for e in std::fs::read_dir(dir).map_err(io)? {
        let e = e.map_err(io)?;
        let name = e.file_name().to_string_lossy().into_owned();
        if !e.file_type().map_err(io)?.is_file() || !plain_name(&name) {
            continue;
        }
        if name.ends_with(".hlog") {
            names.push(name);
        }
    }
    names.sort();
    if dir.join(RUN_FILE).is_file() {
        names.insert(0, RUN_FILE.to_string());
    }
    Ok(names)
}

/// base64 lines of [`CHUNK`] bytes each, every one behind the marker.
struct DataLines<'a, W: Write> {
    out: &'a mut W,
    buf: Vec<u8>,
}

impl<W: Write> DataLines<'_, W> {
    fn line(&mut self, n: usize) -> std::io::Result<()> {
        let b64 = base64::engine::general_purpose::STANDARD.encode(&self.buf[..n]);
        writeln!(self.out, "{MARKER} data {b64}")?;
        self.buf.drain(..n);
        Ok(())
    }
    fn finish(mut self) -> std::io::Result<()> {
        if !self.buf.is_empty() {
            self.line(self.buf.len())?;
        }
        Ok(())
    }
}

impl<W: Write> Write for DataLines<'_, W> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        while self.buf.len() >= CHUNK {
            self.line(CHUNK)?;
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Write the archive of run directory `dir`, named `label`, to `out`; returns how many
/// files it holds.
pub fn write_archive(dir: &Path, label: &str, out: &mut impl Write) -> Result<usize, SchemaError> {
    assert!(
        plain_name(label),
        "archive label {label:?} is not a plain name"
    );
    let files = archived_files(dir)?;
    let wio = |source| SchemaError::Io {
        path: PathBuf::from("<archive output>"),
        source,
    };
    writeln!(out, "{MARKER} begin {label}").map_err(wio)?;
    for name in &files {
        let path = dir.join(name);
        let rio = |source| SchemaError::Io {
            path: path.clone(),
            source,
        };
        let (mut f, meta) = crate::files::open_regular(&path).map_err(rio)?;
        writeln!(out, "{MARKER} file {name} {}", meta.len()).map_err(wio)?;
        let mut lines = DataLines {
            out: &mut *out,
            buf: Vec::with_capacity(CHUNK * 2),
        };
        let mut gz = GzEncoder::new(&mut lines, flate2::Compression::default());
        let copied = std::io::copy(&mut f, &mut gz).map_err(rio)?;
        if copied != meta.len() {
            return Err(rio(std::io::Error::other(format!(
                "changed while archived: {copied} bytes read, {} stated",
                meta.len()
            ))));
        }
        gz.finish().map_err(wio)?;
        lines.finish().map_err(wio)?;
    }
    writeln!(out, "{MARKER} end {}", files.len()).map_err(wio)?;
    out.flush().map_err(wio)?;
    Ok(files.len())
}

/// One archive found in a log, written back.
#[derive(Debug, Clone, PartialEq)]
pub struct Unpacked {
    pub label: String,
    pub dir: PathBuf,
    /// The files written back whole, in archive order.
    pub files: Vec<String>,
    /// Why the archive is not whole (its end, or a file's end, is missing); `None` when
    /// it is.
    pub incomplete: Option<String>,
}

/// What one log gave back.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Unpack {
    pub archives: Vec<Unpacked>,
    /// The first of archive lines found outside any archive: the log lost its start, and
    /// with it the archive's `begin` (after a rotation kubelet keeps only the newest part
    /// of a container's log). They were skipped.
    pub orphaned_from: Option<usize>,
}

/// Most bytes one `unpack` writes back in all (the sum of the files' stated sizes).
pub const MAX_UNPACK_BYTES: u64 = 4 << 30;

/// A file being written back.
struct Open {
    name: String,
    size: u64,
    tmp: PathBuf,
    gz: GzDecoder<std::io::BufWriter<std::fs::File>>,
    line: usize,
}

/// Where the reading of a log stands.
#[derive(Default)]
struct State {
    got: Unpack,
    cur: Option<(Unpacked, Option<Open>)>,
    stated: u64,
}

/// Write back every archive in `log` into `out/<label>/` (each directory must not exist
/// yet). Malformed lines are an error naming the log and line (what was whole before it
/// stays written back; no partial file is left); a log that ends inside an archive gives
/// back its whole files and says what is missing (`incomplete`); archive lines before
/// any `begin` (a log that lost its start) are skipped and said (`orphaned_from`).
pub fn unpack(log: &Path, out: &Path) -> Result<Unpack, SchemaError> {
    let mut st = State::default();
    let result = read_log(log, out, &mut st);
    if let Some((_, Some(o))) = &st.cur {
        if result.is_err() {
            let _ = std::fs::remove_file(&o.tmp);
        }
    }
    result?;
    if let Some((mut u, open)) = st.cur.take() {
        // the file the log ends in is whole when its gzip trailer and size say so
        let cut = match open {
            None => "the log ends before the archive's end".to_string(),
            Some(o) => {
                let (name, line) = (o.name.clone(), o.line);
                match close(o, &mut u) {
                    Ok(()) => "the log ends before the archive's end".to_string(),
                    Err(why) => format!("the log ends inside {name} (from line {line}): {why}"),
                }
            }
        };
        u.incomplete = Some(format!(
            "{cut}; {} whole file(s) came back (a container log rotated or cut short?)",
            u.files.len()
        ));
        st.got.archives.push(u);
    }
    Ok(st.got)
}

fn read_log(log: &Path, out: &Path, st: &mut State) -> Result<(), SchemaError> {
    let bad = |line: usize, msg: String| SchemaError::Io {
        path: log.to_path_buf(),
        source: std::io::Error::other(format!("line {line}: {msg}")),
    };
    let (f, _) = crate::files::open_regular(log).map_err(|source| SchemaError::Io {
        path: log.to_path_buf(),
        source,
    })?;
    let mut reader = std::io::BufReader::new(f);
    let mut buf = Vec::new();
    let mut n = 0usize;
    let mut at_line_start = true;
    loop {
        buf.clear();
        // a line longer than any archive line is someone else's; read it in bounded pieces
        let got = (&mut reader)
            .take(64 << 10)
            .read_until(b'\n', &mut buf)
            .map_err(|source| SchemaError::Io {
                path: log.to_path_buf(),
                source,
            })?;
        if got == 0 {
            break;
        }
        if at_line_start {
            n += 1;
        }
        at_line_start = buf.last() == Some(&b'\n');
        if !at_line_start && got < 64 << 10 {
            // the log's last line, cut where the log was cut: not an archive line to trust
            break;
        }
        let Some(at) = find(&buf, MARKER.as_bytes()) else {
            continue;
        };
        let Ok(text) = std::str::from_utf8(&buf[at + MARKER.len()..]) else {
            return Err(bad(n, "an archive line that is not text".into()));
        };
        let mut words = text.split_whitespace();
        let word = words.next();
        if word != Some("begin") && st.cur.is_none() {
            // its begin was lost with the start of the log
            st.got.orphaned_from.get_or_insert(n);
            continue;
        }
        match (word, st.cur.as_mut()) {
            (Some("begin"), None) => {
                let label = words.next().unwrap_or_default();
                if !plain_name(label) {
                    return Err(bad(
                        n,
                        format!("archive name `{label}` is not a plain name"),
                    ));
                }
                let dir = out.join(label);
                std::fs::create_dir_all(out).map_err(|source| SchemaError::Io {
                    path: out.to_path_buf(),
                    source,
                })?;
                std::fs::create_dir(&dir).map_err(|source| SchemaError::Io {
                    path: dir.clone(),
                    source,
                })?;
                st.cur = Some((
                    Unpacked {
                        label: label.to_string(),
                        dir,
                        files: vec![],
                        incomplete: None,
                    },
                    None,
                ));
            }
            (Some("begin"), Some((u, _))) => {
                return Err(bad(
                    n,
                    format!(
                        "archive `{}` begins again before its end (two logs run together?)",
                        u.label
                    ),
                ))
            }
            (Some("file"), Some((u, open))) => {
                if let Some(o) = open.take() {
                    close(o, u).map_err(|m| bad(n, m))?;
                }
                let (Some(name), Some(size)) = (words.next(), words.next()) else {
                    return Err(bad(n, "`file` needs a name and a size".into()));
                };
                if !plain_name(name) {
                    return Err(bad(n, format!("file name `{name}` is not a plain name")));
                }
                if u.files.iter().any(|f| f == name) {
                    return Err(bad(n, format!("{name} is in archive `{}` twice", u.label)));
                }
                let size: u64 = size
                    .parse()
                    .ok()
                    .filter(|&s| s <= MAX_FILE_BYTES)
                    .ok_or_else(|| {
                        bad(
                            n,
                            format!("file size `{size}` is not a size up to {MAX_FILE_BYTES}"),
                        )
                    })?;
                st.stated += size;
                if st.stated > MAX_UNPACK_BYTES {
                    return Err(bad(
                        n,
                        format!("more than {MAX_UNPACK_BYTES} bytes in all: not written back"),
                    ));
                }
                let tmp = u.dir.join(format!(".{name}.unpack"));
                let file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&tmp)
                    .map_err(|source| SchemaError::Io {
                        path: tmp.clone(),
                        source,
                    })?;
                *open = Some(Open {
                    name: name.to_string(),
                    size,
                    tmp,
                    gz: GzDecoder::new(std::io::BufWriter::new(file)),
                    line: n,
                });
            }
            (Some("data"), Some((_, Some(o)))) => {
                let b64 = words.next().unwrap_or_default();
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .map_err(|e| bad(n, format!("{}: data is not base64: {e}", o.name)))?;
                o.gz.write_all(&bytes)
                    .map_err(|e| bad(n, format!("{}: not a gzip stream: {e}", o.name)))?;
                if o.gz.get_ref().get_ref().metadata().map_or(0, |m| m.len()) > o.size + (1 << 20) {
                    return Err(bad(
                        n,
                        format!("{}: longer than its stated {} bytes", o.name, o.size),
                    ));
                }
            }
            (Some("data"), Some((_, None))) => {
                return Err(bad(n, "`data` before any `file`".into()))
            }
            (Some("end"), Some((u, open))) => {
                if let Some(o) = open.take() {
                    close(o, u).map_err(|m| bad(n, m))?;
                }
                let count: Option<usize> = words.next().and_then(|c| c.parse().ok());
                if count != Some(u.files.len()) {
                    return Err(bad(
                        n,
                        format!(
                            "archive `{}` ends saying {} file(s), {} were in it",
                            u.label,
                            count.map_or("?".into(), |c| c.to_string()),
                            u.files.len()
                        ),
                    ));
                }
                let (u, _) = st.cur.take().expect("an archive is open");
                st.got.archives.push(u);
            }
            (word, _) => {
                return Err(bad(
                    n,
                    format!("unknown archive line `{}`", word.unwrap_or_default()),
                ))
            }
        }
    }
    Ok(())
}

/// Finish a file being written back: the gzip trailer (CRC-32, length) and the stated size
/// must agree; then it takes its name.
fn close(o: Open, u: &mut Unpacked) -> Result<(), String> {
    let Open {
        name,
        size,
        tmp,
        gz,
        ..
    } = o;
    let result = (|| {
        let w = gz
            .finish()
            .map_err(|e| format!("{name}: its gzip stream is broken or cut short: {e}"))?;
        let file = w
            .into_inner()
            .map_err(|e| format!("{name}: {}", e.error()))?;
        file.sync_all().map_err(|e| format!("{name}: {e}"))?;
        let len = file.metadata().map_err(|e| format!("{name}: {e}"))?.len();
        if len != size {
            return Err(format!(
                "{name}: {len} bytes came back, {size} were archived"
            ));
        }
        std::fs::rename(&tmp, u.dir.join(&name)).map_err(|e| format!("{name}: {e}"))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    } else {
        u.files.push(name);
    }
    result
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_dir(dir: &Path) {
        std::fs::write(dir.join("run.json"), b"{\"schema_version\": 1}\n").unwrap();
        // incompressible bytes, several data lines
        let mut x: u64 = 0x9e37_79b9;
        let noise: Vec<u8> = (0..5000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        std::fs::write(dir.join("cell-0.hlog"), &noise).unwrap();
        std::fs::write(dir.join("cell-1.hlog"), b"").unwrap();
        // never archived: keys, the report, hidden files, subdirectories
        std::fs::write(dir.join("report.html"), b"<html>").unwrap();
        std::fs::write(dir.join(".run.json.1.tmp"), b"x").unwrap();
        std::fs::create_dir(dir.join("mesh")).unwrap();
        std::fs::write(dir.join("mesh/client.key"), b"secret").unwrap();
    }

    fn archive(dir: &Path, label: &str) -> String {
        let mut out = Vec::new();
        assert_eq!(write_archive(dir, label, &mut out).unwrap(), 3);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn a_run_comes_back_byte_for_byte_from_a_prefixed_interleaved_log() {
        let src = tempfile::tempdir().unwrap();
        run_dir(src.path());
        let text = archive(src.path(), "worker-2");
        assert!(text
            .lines()
            .all(|l| l.starts_with(MARKER) && l.len() <= 120));
        assert!(!text.contains("secret") && !text.contains("<html>"));
        // as `kubectl logs --timestamps --prefix` shows it, with other output between
        let log: String = text
            .lines()
            .enumerate()
            .map(|(i, l)| {
                let other = if i % 3 == 0 { "progress: 50 %\n" } else { "" };
                format!("{other}[pod/load-2/loadgen] 2026-12-08T05:00:00.{i:06}Z {l}\n")
            })
            .collect();
        let logs = tempfile::tempdir().unwrap();
        let log_path = logs.path().join("pod.log");
        std::fs::write(&log_path, log).unwrap();
        let out = tempfile::tempdir().unwrap();
        let got = unpack(&log_path, &out.path().join("runs")).unwrap();
        assert_eq!((got.archives.len(), got.orphaned_from), (1, None));
        let u = &got.archives[0];
        assert_eq!(u.incomplete, None);
        assert_eq!(u.files, ["run.json", "cell-0.hlog", "cell-1.hlog"]);
        for f in &u.files {
            assert_eq!(
                std::fs::read(u.dir.join(f)).unwrap(),
                std::fs::read(src.path().join(f)).unwrap(),
                "{f}"
            );
        }
        assert_eq!(
            std::fs::read_dir(&u.dir).unwrap().count(),
            3,
            "nothing else"
        );
        // a second unpack into the same place is refused, not merged into it
        let e = unpack(&log_path, &out.path().join("runs")).unwrap_err();
        assert!(e.to_string().contains("worker-2"), "{e}");
    }

    #[test]
    fn a_log_cut_short_gives_back_the_whole_files_and_says_so() {
        let src = tempfile::tempdir().unwrap();
        run_dir(src.path());
        let text = archive(src.path(), "w1");
        // cut in the middle of cell-0.hlog's data
        let lines: Vec<&str> = text.lines().collect();
        let at = lines
            .iter()
            .position(|l| l.contains(" file cell-0.hlog "))
            .unwrap()
            + 3;
        // and in the middle of a line
        let log = lines[..at].join("\n") + "\n" + &lines[at][..30];
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("l"), log).unwrap();
        let got = unpack(&d.path().join("l"), &d.path().join("o"))
            .unwrap()
            .archives;
        assert_eq!(got[0].files, ["run.json"]);
        let why = got[0].incomplete.as_deref().unwrap();
        assert!(why.contains("inside cell-0.hlog"), "{why}");
        assert_eq!(
            std::fs::read_dir(&got[0].dir).unwrap().count(),
            1,
            "no partial file left"
        );
    }

    #[test]
    fn damaged_archives_are_errors_naming_the_log_and_line() {
        let src = tempfile::tempdir().unwrap();
        run_dir(src.path());
        let text = archive(src.path(), "w1");
        // the second data line of cell-0.hlog
        let data_line = text
            .lines()
            .position(|l| l.contains(" file cell-0.hlog "))
            .unwrap()
            + 2;
        let cases: Vec<(String, &str)> = vec![
            // one base64 character changed: gzip's CRC (or its inflate) catches it
            (
                text.lines()
                    .enumerate()
                    .map(|(i, l)| {
                        if i == data_line {
                            let mut c: Vec<char> = l.chars().collect();
                            let k = c.len() - 10;
                            c[k] = if c[k] == 'A' { 'B' } else { 'A' };
                            c.into_iter().collect::<String>() + "\n"
                        } else {
                            format!("{l}\n")
                        }
                    })
                    .collect(),
                "cell-0.hlog",
            ),
            (
                text.replace(" end 3", " end 4"),
                "ends saying 4 file(s), 3 were in it",
            ),
            (
                text.replace(" file cell-1.hlog 0", " file ../../etc/x 0"),
                "not a plain name",
            ),
            (text.replace(" begin w1", " begin .."), "not a plain name"),
            (
                format!("{text}{text}").replacen(&format!("{MARKER} end 3\n"), "", 1),
                "begins again",
            ),
            (
                text.replace(" file run.json ", " file run.json 1"),
                "were archived",
            ),
            (
                text.replacen(" file cell-1.hlog ", " file cell-0.hlog ", 1),
                "cell-0.hlog is in archive `w1` twice",
            ),
        ];
        for (i, (log, want)) in cases.into_iter().enumerate() {
            let d = tempfile::tempdir().unwrap();
            let p = d.path().join("pod.log");
            std::fs::write(&p, log).unwrap();
            let e = unpack(&p, &d.path().join("o")).unwrap_err().to_string();
            assert!(
                e.contains("pod.log: line ") && e.contains(want),
                "case {i}: {e}"
            );
            // no partial file is left behind
            for entry in walk(&d.path().join("o")) {
                assert!(!entry.ends_with(".unpack"), "case {i}: {entry}");
            }
        }
    }

    #[test]
    fn a_log_without_archives_unpacks_nothing() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("pod.log");
        std::fs::write(&p, "listening on 127.0.0.1:8080\nno results here\n").unwrap();
        assert_eq!(unpack(&p, &d.path().join("o")).unwrap(), Unpack::default());
        assert!(!d.path().join("o").exists());
    }

    /// After a rotation kubelet keeps the newest part of a log: an archive whose start was
    /// lost is skipped and said, and a whole one after it still comes back.
    #[test]
    fn a_log_that_lost_its_start_skips_the_headless_archive_and_says_where() {
        let src = tempfile::tempdir().unwrap();
        run_dir(src.path());
        let first = archive(src.path(), "w1");
        let second = archive(src.path(), "w2");
        let headless: String = first.lines().skip(4).map(|l| format!("{l}\n")).collect();
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("pod.log");
        std::fs::write(&p, format!("{headless}some other line\n{second}")).unwrap();
        let got = unpack(&p, &d.path().join("o")).unwrap();
        assert_eq!(got.orphaned_from, Some(1));
        assert_eq!(got.archives.len(), 1);
        assert_eq!(got.archives[0].label, "w2");
        assert_eq!(got.archives[0].incomplete, None);
    }

    fn walk(dir: &Path) -> Vec<String> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p.display().to_string());
            }
        }
        out
    }
}
