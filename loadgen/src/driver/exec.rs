//! Running a driver's commands: each in its own process group, with a timeout and the
//! run's stop signal (either kills the whole group), its output bounded and kept in the
//! run directory (`driver/NNN-<label>.log`: the command line, the MESHBENCH_* environment,
//! the exit status, the time it took, stdout and stderr).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

/// Most output kept of one stream of one command.
pub const MAX_OUTPUT: usize = 1 << 20;

/// One command, run.
#[derive(Debug, Clone)]
pub struct Ran {
    pub cmdline: String,
    /// Exit code; `None` when it was killed (timeout, stop) or could not start.
    pub status: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub secs: f64,
    pub timed_out: bool,
    pub interrupted: bool,
    /// It could not be started at all (not found, not executable).
    pub spawn_error: Option<String>,
}

impl Ran {
    pub fn ok(&self) -> bool {
        self.status == Some(0)
    }

    /// One line on why it did not succeed, with the tail of its stderr.
    pub fn failure(&self, timeout: Duration) -> String {
        let tail = |s: &str| {
            let t = s.trim();
            let start = t.len().saturating_sub(300);
            let start = (start..=t.len())
                .find(|&i| t.is_char_boundary(i))
                .unwrap_or(t.len());
            meshbench_schema::text::one_line(&t[start..])
        };
        if let Some(e) = &self.spawn_error {
            return format!("`{}` could not be started: {e}", self.cmdline);
        }
        if self.interrupted {
            return format!("`{}` was stopped by the interrupt", self.cmdline);
        }
        if self.timed_out {
            return format!(
                "`{}` did not finish within {} and was killed",
                self.cmdline,
                humantime::format_duration(timeout)
            );
        }
        let err = tail(&self.stderr);
        format!(
            "`{}` exited with {}{}",
            self.cmdline,
            self.status
                .map_or("a signal".to_string(), |c| format!("status {c}")),
            if err.is_empty() {
                String::new()
            } else {
                format!(": {err}")
            }
        )
    }
}

/// Runs commands for one driver, logging each into `log_dir`.
pub struct Exec {
    log_dir: PathBuf,
    seq: u32,
    stop: watch::Receiver<bool>,
}

/// What to run.
pub struct Cmd<'a> {
    pub label: &'a str,
    pub program: &'a str,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub stdin: Option<Vec<u8>>,
    pub cwd: Option<&'a Path>,
    pub timeout: Duration,
}

async fn read_bounded<R: tokio::io::AsyncRead + Unpin>(r: Option<R>) -> String {
    let Some(r) = r else { return String::new() };
    let mut buf = Vec::new();
    let _ = r.take(MAX_OUTPUT as u64).read_to_end(&mut buf).await;
    String::from_utf8_lossy(&buf).into_owned()
}

fn kill_group(pid: Option<u32>) {
    if let Some(pid) = pid {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

impl Exec {
    pub fn new(log_dir: PathBuf, stop: watch::Receiver<bool>) -> Exec {
        Exec {
            log_dir,
            seq: 0,
            stop,
        }
    }

    pub fn log_dir(&self) -> &Path {
        &self.log_dir
    }

    /// Whether the run was told to stop.
    pub fn stopped(&self) -> bool {
        *self.stop.borrow()
    }

    /// Sleep `d`, or less when the run is told to stop (then `false`).
    pub async fn sleep(&mut self, d: Duration) -> bool {
        let mut stop = self.stop.clone();
        tokio::select! {
            _ = tokio::time::sleep(d) => true,
            _ = stop.wait_for(|s| *s) => false,
        }
    }

    pub async fn run(&mut self, c: Cmd<'_>) -> Ran {
        let cmdline = std::iter::once(c.program.to_string())
            .chain(c.args.iter().map(|a| shell_quote(a)))
            .collect::<Vec<_>>()
            .join(" ");
        let t0 = Instant::now();
        let mut cmd = tokio::process::Command::new(c.program);
        cmd.args(&c.args)
            .envs(c.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(if c.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        if let Some(d) = c.cwd {
            cmd.current_dir(d);
        }
        let mut ran = Ran {
            cmdline,
            status: None,
            stdout: String::new(),
            stderr: String::new(),
            secs: 0.0,
            timed_out: false,
            interrupted: false,
            spawn_error: None,
        };
        match cmd.spawn() {
            Err(e) => ran.spawn_error = Some(e.to_string()),
            Ok(mut child) => {
                let pid = child.id();
                if let (Some(input), Some(mut w)) = (c.stdin.clone(), child.stdin.take()) {
                    tokio::spawn(async move {
                        let _ = w.write_all(&input).await;
                    });
                }
                let out = tokio::spawn(read_bounded(child.stdout.take()));
                let err = tokio::spawn(read_bounded(child.stderr.take()));
                let mut stop = self.stop.clone();
                let already = *stop.borrow();
                tokio::select! {
                    s = child.wait() => ran.status = s.ok().and_then(|s| s.code()),
                    _ = tokio::time::sleep(c.timeout) => {
                        ran.timed_out = true;
                        kill_group(pid);
                        let _ = child.wait().await;
                    }
                    _ = stop.wait_for(|s| *s), if !already => {
                        ran.interrupted = true;
                        kill_group(pid);
                        let _ = child.wait().await;
                    }
                }
                // the group may hold the pipes open: what was read so far is kept
                kill_group(pid);
                ran.stdout = out.await.unwrap_or_default();
                ran.stderr = err.await.unwrap_or_default();
            }
        }
        ran.secs = t0.elapsed().as_secs_f64();
        self.log(&c, &ran);
        ran
    }

    fn log(&mut self, c: &Cmd<'_>, ran: &Ran) {
        self.seq += 1;
        let name = format!(
            "{:03}-{}.log",
            self.seq,
            c.label
                .chars()
                .map(|ch| if ch.is_ascii_alphanumeric() || ch == '-' {
                    ch
                } else {
                    '_'
                })
                .collect::<String>()
        );
        let env: String = c.env.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
        let text = format!(
            "$ {}\n{env}exit: {}{}{}\nseconds: {:.3}\n--- stdout\n{}\n--- stderr\n{}\n",
            ran.cmdline,
            ran.status.map_or("-".into(), |s| s.to_string()),
            if ran.timed_out {
                " (timed out, killed)"
            } else {
                ""
            },
            if ran.interrupted {
                " (interrupted, killed)"
            } else {
                ""
            },
            ran.secs,
            ran.stdout,
            ran.stderr
        );
        let _ = std::fs::create_dir_all(&self.log_dir);
        let _ = meshbench_schema::write_atomic(&self.log_dir.join(name), text.as_bytes());
    }
}

/// `arg` as a POSIX shell word (for the logs and `--dry-run`).
pub fn shell_quote(arg: &str) -> String {
    if !arg.is_empty()
        && arg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,@%+".contains(&b))
    {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', "'\\''"))
    }
}
