//! The scenario file: a raw serde mirror of the TOML (`deny_unknown_fields`), loaded with
//! `--set key.path=value` overrides applied, and the [`Source`] that turns byte spans into
//! `file:line:col` (or `--set key`) locations for error messages.
//!
//! New top-level sections are added as new `Option<...>` fields of [`Scenario`]; fields that
//! are validated after deserialization are `Spanned` so their errors carry a position.

use crate::units::{CpuQuantity, Dur};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use toml::Spanned;

/// A scenario error: one line, with the place it came from.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// `file:line:col: message` or `--set key.path: message`.
    #[error("{location}: {message}")]
    At { location: String, message: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The whole scenario as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Defaults to the file stem.
    pub name: Option<Spanned<String>>,
    pub description: Option<String>,
    #[serde(default)]
    pub target: TargetSection,
    #[serde(default)]
    pub load: LoadSection,
    /// The built-in app server, started in-process for the run (see `loadgen serve`).
    pub app: Option<Spanned<AppSection>>,
    /// Service-level objectives, e.g. `["p99<50ms", "errors<0.1%"]`.
    #[serde(default)]
    pub slo: Vec<Spanned<String>>,
    /// The embedded mesh (apps + sidecar), validated by `meshbench-mesh`.
    pub mesh: Option<Spanned<mesh::scenario::RawMesh>>,
    /// The settings matrix: sidecar CPU limits x access-log modes (x rates x connections).
    pub matrix: Option<Spanned<mesh::scenario::RawMatrix>>,
    /// Canary-split weights and STRICT mTLS, for the embedded or a real mesh.
    pub checks: Option<Spanned<mesh::scenario::RawChecks>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetSection {
    /// `http://host:port/path` or `https://...`; omitted when `[app]` provides the target.
    pub url: Option<Spanned<String>>,
    pub method: Option<Spanned<String>>,
    /// Overrides the path (and query) of `url`.
    pub path: Option<Spanned<String>>,
    #[serde(default)]
    pub headers: BTreeMap<String, Spanned<String>>,
    pub body: Option<String>,
    pub protocol: Option<ProtocolRaw>,
    /// Per-request timeout (default 5s).
    pub timeout: Option<Spanned<Dur>>,
    /// TCP connect + TLS handshake timeout (default: the request timeout).
    pub connect_timeout: Option<Spanned<Dur>>,
    /// Response header whose value names the subset that answered (e.g. `x-version`).
    pub subset_header: Option<Spanned<String>>,
    pub tls: Option<Spanned<TlsSection>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProtocolRaw {
    Http1,
    Http2,
    Auto,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// CA bundle (PEM) that verifies the server; default: the system bundle.
    pub ca: Option<Spanned<String>>,
    /// Client certificate chain (PEM), for mTLS.
    pub cert: Option<Spanned<String>>,
    /// Client private key (PEM), for mTLS.
    pub key: Option<Spanned<String>>,
    /// Name sent in SNI and verified against the certificate (default: the URL host).
    pub server_name: Option<Spanned<String>>,
    /// A SAN the server certificate must carry: a URI (`spiffe://...`) or a DNS name.
    pub expected_identity: Option<Spanned<String>>,
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModeRaw {
    Open,
    Closed,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadSection {
    pub mode: Option<ModeRaw>,
    /// Requests per second (open loop; required there).
    pub rate: Option<Spanned<f64>>,
    /// Keep-alive connections (default 4).
    pub connections: Option<Spanned<i64>>,
    /// Measured duration (warmup excluded).
    pub duration: Option<Spanned<Dur>>,
    /// Measured request count (warmup excluded).
    pub requests: Option<Spanned<i64>>,
    pub warmup: Option<Spanned<Dur>>,
    /// Closed loop: pause between a response and the next request on a connection.
    pub think_time: Option<Spanned<Dur>>,
    /// HTTP/2: concurrent streams per connection (default 16). HTTP/1.1 always uses 1.
    pub max_in_flight: Option<Spanned<i64>>,
    /// Engine threads (default: available CPUs).
    pub threads: Option<Spanned<i64>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DistRaw {
    Fixed,
    Exp,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppSection {
    pub service_time: Option<Dur>,
    pub service_time_dist: Option<DistRaw>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    pub body_bytes: Option<Spanned<i64>>,
    pub stall: Option<Dur>,
    pub stall_every: Option<Dur>,
}

/// Keep CpuQuantity reachable for sections added later (matrix, mesh).
pub type Cpu = CpuQuantity;

/// One `--set key.path=value` as applied to the document.
#[derive(Debug, Clone)]
struct Override {
    key: String,
    /// Span of the key and value in the patched text.
    span: Range<usize>,
}

/// The scenario text (with overrides applied) and how to name a place in it.
#[derive(Debug, Clone)]
pub struct Source {
    pub path: PathBuf,
    original: String,
    patched: String,
    overrides: Vec<Override>,
}

/// Where a span came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    File { line: usize, col: usize },
    Set(String),
}

impl Source {
    /// A source with no overrides (used by tests and `validate`).
    pub fn new(path: impl Into<PathBuf>, text: impl Into<String>) -> Self {
        let text = text.into();
        Source {
            path: path.into(),
            original: text.clone(),
            patched: text,
            overrides: vec![],
        }
    }

    /// Read `path` and apply `sets` (each `key.path=value`).
    pub fn load(path: &Path, sets: &[String]) -> Result<Source, ScenarioError> {
        let original = std::fs::read_to_string(path).map_err(|source| ScenarioError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let mut src = Source::new(path, original);
        src.apply_sets(sets)?;
        Ok(src)
    }

    pub fn text(&self) -> &str {
        &self.patched
    }

    /// The directory relative paths in the file are resolved against.
    pub fn dir(&self) -> PathBuf {
        match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        }
    }

    fn apply_sets(&mut self, sets: &[String]) -> Result<(), ScenarioError> {
        if sets.is_empty() {
            return Ok(());
        }
        let set_err = |key: &str, message: String| ScenarioError::At {
            location: format!("--set {key}"),
            message,
        };
        let mut doc: toml_edit::DocumentMut = self.original.parse().map_err(|e| {
            // The file itself does not parse: report that with its position.
            let e: toml_edit::TomlError = e;
            self.error_at(e.span().unwrap_or(0..0), e.message().trim().to_string())
        })?;
        let mut keys = Vec::new();
        for set in sets {
            let Some((key, value)) = set.split_once('=') else {
                return Err(set_err(set, "expected key.path=value".into()));
            };
            let key = key.trim();
            let parts: Vec<&str> = key.split('.').map(str::trim).collect();
            if parts.iter().any(|p| p.is_empty()) {
                return Err(set_err(key, "expected key.path=value".into()));
            }
            let value: toml_edit::Value = match value.trim().parse::<toml_edit::Value>() {
                Ok(v) => v,
                Err(_) => toml_edit::Value::from(value.trim()),
            };
            let mut table = doc.as_table_mut() as &mut dyn toml_edit::TableLike;
            for (i, part) in parts[..parts.len() - 1].iter().enumerate() {
                let entry = table
                    .entry(part)
                    .or_insert(toml_edit::Item::Table(toml_edit::Table::new()));
                table = entry.as_table_like_mut().ok_or_else(|| {
                    set_err(key, format!("`{}` is not a table", parts[..=i].join(".")))
                })?;
            }
            let last = parts[parts.len() - 1];
            table.insert(last, toml_edit::Item::Value(value.decorated(" ", "")));
            keys.push(key.to_string());
        }
        self.patched = doc.to_string();
        // Locate each override in the patched text.
        let im: toml_edit::ImDocument<String> = toml_edit::ImDocument::parse(self.patched.clone())
            .map_err(|e| set_err(&keys.join(","), e.message().trim().to_string()))?;
        for key in keys {
            let parts: Vec<&str> = key.split('.').map(str::trim).collect();
            let mut table: &dyn toml_edit::TableLike = im.as_table();
            for part in &parts[..parts.len() - 1] {
                match table.get(part).and_then(|i| i.as_table_like()) {
                    Some(t) => table = t,
                    None => break,
                }
            }
            let last = parts[parts.len() - 1];
            let mut span: Option<Range<usize>> = None;
            if let Some((k, item)) = table.get_key_value(last) {
                for s in [k.span(), item.span()].into_iter().flatten() {
                    span = Some(match span {
                        Some(r) => r.start.min(s.start)..r.end.max(s.end),
                        None => s,
                    });
                }
            }
            if let Some(span) = span {
                self.overrides.push(Override { key, span });
            }
        }
        Ok(())
    }

    /// Where the byte span `span` of the patched text came from.
    pub fn origin(&self, span: &Range<usize>) -> Origin {
        // Later overrides win, so search from the back.
        for o in self.overrides.iter().rev() {
            if span.start >= o.span.start && span.start < o.span.end.max(o.span.start + 1) {
                return Origin::Set(o.key.clone());
            }
        }
        let (line, col) = line_col(&self.patched, span.start);
        let line = if self.overrides.is_empty() {
            line
        } else {
            map_line(&self.patched, &self.original, line)
        };
        Origin::File { line, col }
    }

    /// A one-line error at `span`.
    pub fn error_at(&self, span: Range<usize>, message: impl Into<String>) -> ScenarioError {
        let location = match self.origin(&span) {
            Origin::File { line, col } => format!("{}:{line}:{col}", self.path.display()),
            Origin::Set(key) => format!("--set {key}"),
        };
        ScenarioError::At {
            location,
            message: message.into(),
        }
    }

    /// An error about the file as a whole (a missing required field).
    pub fn error_file(&self, message: impl Into<String>) -> ScenarioError {
        ScenarioError::At {
            location: self.path.display().to_string(),
            message: message.into(),
        }
    }

    /// Resolve a path written at `span`: relative to the scenario file's directory, or to
    /// the working directory when it came from `--set`.
    pub fn resolve_path(&self, span: &Range<usize>, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            return p.to_path_buf();
        }
        match self.origin(span) {
            Origin::Set(_) => p.to_path_buf(),
            Origin::File { .. } => self.dir().join(p),
        }
    }

    /// Deserialize the (patched) text into a [`Scenario`].
    pub fn parse(&self) -> Result<Scenario, ScenarioError> {
        toml::from_str(&self.patched).map_err(|e| {
            let msg = e.message().trim().replace('\n', " ");
            match e.span() {
                Some(span) => self.error_at(span, msg),
                None => self.error_file(msg),
            }
        })
    }
}

/// 1-based line and column (in characters) of byte offset `at`.
fn line_col(text: &str, at: usize) -> (usize, usize) {
    let at = at.min(text.len());
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let col = text[line_start..at].chars().count() + 1;
    (line, col)
}

/// Map a line of the patched text to the line of the original file it stands for
/// (overrides only replace values in place or append lines to a table).
fn map_line(patched: &str, original: &str, line: usize) -> usize {
    let m: Vec<&str> = patched.lines().collect();
    let o: Vec<&str> = original.lines().collect();
    let (mut i, mut j) = (0usize, 0usize);
    while i < m.len() {
        let mapped = j.min(o.len().saturating_sub(1));
        if i + 1 == line {
            return mapped + 1;
        }
        if j < o.len() && m[i] == o[j] {
            i += 1;
            j += 1;
        } else if j < o.len() && i + 1 < m.len() && m[i + 1] == o[j] {
            i += 1; // inserted line
        } else {
            i += 1;
            j += 1;
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column() {
        let t = "a = 1\n[load]\nrate = 0\n";
        assert_eq!(line_col(t, t.find("0\n").unwrap()), (3, 8));
    }

    #[test]
    fn set_overrides_replace_and_insert() {
        let text = "[load]\nrate = 100 # per second\n\n[target]\nurl = \"http://x/\"\n";
        let mut s = Source::new("x.toml", text);
        s.apply_sets(&[
            "load.rate=250".into(),
            "load.duration=10s".into(),
            "target.headers.x-a=b".into(),
        ])
        .unwrap();
        let sc = s.parse().unwrap();
        assert_eq!(*sc.load.rate.as_ref().unwrap().get_ref(), 250.0);
        assert_eq!(
            sc.load.duration.as_ref().unwrap().get_ref().0,
            std::time::Duration::from_secs(10)
        );
        assert_eq!(sc.target.headers["x-a"].get_ref(), "b");
        // The override is reported as such; an untouched line keeps its file position.
        let rate_span = sc.load.rate.as_ref().unwrap().span();
        assert_eq!(s.origin(&rate_span), Origin::Set("load.rate".into()));
        let url_span = sc.target.url.as_ref().unwrap().span();
        assert_eq!(s.origin(&url_span), Origin::File { line: 5, col: 7 });
    }

    #[test]
    fn bad_set_syntax() {
        let mut s = Source::new("x.toml", "");
        let e = s.apply_sets(&["load.rate".into()]).unwrap_err().to_string();
        assert_eq!(e, "--set load.rate: expected key.path=value");
        let mut s = Source::new("x.toml", "name = \"a\"\n");
        let e = s.apply_sets(&["name.x=1".into()]).unwrap_err().to_string();
        assert_eq!(e, "--set name.x: `name` is not a table");
    }
}
