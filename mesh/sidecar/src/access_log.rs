//! The access log, as Envoy writes it: one line per request in Envoy's default format
//! ([`ENVOY_DEFAULT_FORMAT`]); `off`, `buffered` (flushed once a second or every 64 KiB,
//! as Envoy does) or `sync` (each line written and `fdatasync`ed before the response).

use crate::{AccessLogMode, SidecarError};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// Envoy's default access-log format, which every line follows.
pub const ENVOY_DEFAULT_FORMAT: &str = "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" %RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" \"%REQ(X-REQUEST-ID)%\" \"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\"\\n";

/// Buffered access logs are flushed at least this often (Envoy's `file_flush_interval_msec`).
pub const LOG_FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// ... and whenever this much is buffered (Envoy's 64 KiB flush threshold).
pub const LOG_FLUSH_BYTES: usize = 64 * 1024;

/// The fields of one access-log line, in [`ENVOY_DEFAULT_FORMAT`] order.
pub(crate) struct Entry<'a> {
    pub start: SystemTime,
    pub method: &'a str,
    pub path: &'a str,
    pub protocol: &'a str,
    pub status: u16,
    pub flags: &'a str,
    pub bytes_received: usize,
    pub bytes_sent: u64,
    pub duration_ms: u128,
    pub upstream_ms: Option<u128>,
    pub forwarded_for: &'a str,
    pub user_agent: &'a str,
    pub request_id: &'a str,
    pub authority: &'a str,
    pub upstream_host: &'a str,
}

impl Entry<'_> {
    /// The line, newline included.
    pub fn line(&self) -> String {
        format!(
            "[{}] \"{} {} {}\" {} {} {} {} {} {} \"{}\" \"{}\" \"{}\" \"{}\" \"{}\"\n",
            humantime::format_rfc3339_millis(self.start),
            self.method,
            self.path,
            self.protocol,
            self.status,
            self.flags,
            self.bytes_received,
            self.bytes_sent,
            self.duration_ms,
            self.upstream_ms
                .map(|t| t.to_string())
                .unwrap_or_else(|| "-".into()),
            self.forwarded_for,
            self.user_agent,
            self.request_id,
            self.authority,
            self.upstream_host,
        )
    }
}

/// The access-log writer shared by all connections.
pub struct AccessLog {
    mode: AccessLogMode,
    inner: Mutex<LogInner>,
    lines: AtomicU64,
}

struct LogInner {
    file: Option<std::fs::File>,
    buf: Vec<u8>,
    error: Option<String>,
}

impl AccessLog {
    pub fn open(mode: AccessLogMode, path: Option<&Path>) -> Result<AccessLog, SidecarError> {
        let file = match (mode, path) {
            (AccessLogMode::Off, _) => None,
            (_, None) => {
                return Err(SidecarError::Config(format!(
                    "access_log = \"{}\" needs access_log_path",
                    mode.as_str()
                )))
            }
            (_, Some(p)) => Some(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .map_err(|source| SidecarError::Io {
                        path: p.into(),
                        source,
                    })?,
            ),
        };
        Ok(AccessLog {
            mode,
            inner: Mutex::new(LogInner {
                file,
                buf: Vec::with_capacity(LOG_FLUSH_BYTES),
                error: None,
            }),
            lines: AtomicU64::new(0),
        })
    }

    pub fn mode(&self) -> AccessLogMode {
        self.mode
    }

    /// Lines logged so far.
    pub fn lines(&self) -> u64 {
        self.lines.load(Ordering::Relaxed)
    }

    pub(crate) fn write(&self, line: &[u8]) {
        if self.mode == AccessLogMode::Off {
            return;
        }
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let g = &mut *g;
        match self.mode {
            AccessLogMode::Off => {}
            AccessLogMode::Buffered => {
                g.buf.extend_from_slice(line);
                if g.buf.len() >= LOG_FLUSH_BYTES {
                    flush_inner(g);
                }
            }
            AccessLogMode::Sync => {
                if let Some(f) = g.file.as_mut() {
                    if let Err(e) = f.write_all(line).and_then(|_| f.sync_data()) {
                        g.error.get_or_insert(e.to_string());
                    }
                }
            }
        }
        self.lines.fetch_add(1, Ordering::Relaxed);
    }

    /// Write out what is buffered.
    pub fn flush(&self) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        flush_inner(&mut g);
    }

    /// The first write error, if any.
    pub fn error(&self) -> Option<String> {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .error
            .clone()
    }
}

fn flush_inner(g: &mut LogInner) {
    if g.buf.is_empty() {
        return;
    }
    if let Some(f) = g.file.as_mut() {
        if let Err(e) = f.write_all(&g.buf) {
            g.error.get_or_insert(e.to_string());
        }
    }
    g.buf.clear();
}
