//! The scenario text with `--set key.path=value` overrides applied (toml_edit), and how
//! to name a place in it: a byte span becomes `file:line:col`, or `--set key` when the
//! value came from an override.

use super::{Scenario, SpecError};
use meshbench_schema::text::line_col;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// One `--set key.path=value` as applied to the document.
#[derive(Debug, Clone)]
struct Override {
    key: String,
    /// Span of the key and value in the patched text.
    span: Range<usize>,
}

/// Largest scenario file read (1 MiB): a scenario is a page of TOML.
pub const MAX_SCENARIO_BYTES: u64 = 1 << 20;

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
    pub fn load(path: &Path, sets: &[String]) -> Result<Source, SpecError> {
        let io = |source| SpecError::Io {
            path: path.to_path_buf(),
            source,
        };
        let bytes = meshbench_schema::files::read_regular(path, MAX_SCENARIO_BYTES).map_err(io)?;
        let original =
            String::from_utf8(bytes).map_err(|_| io(std::io::Error::other("not UTF-8 text")))?;
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

    /// Apply `--set key.path=value` overrides (each value TOML, else a string).
    pub fn apply_sets(&mut self, sets: &[String]) -> Result<(), SpecError> {
        if sets.is_empty() {
            return Ok(());
        }
        let set_err = |key: &str, message: String| SpecError::At {
            location: format!("--set {key}"),
            message,
        };
        let mut doc: toml_edit::DocumentMut = self.original.parse().map_err(|e| {
            // The file itself does not parse: report that with its position.
            let e: toml_edit::TomlError = e;
            self.error_at(e.span().unwrap_or(0..0), e.message().trim().to_string())
        })?;
        // (the key as given, its parts, the depth of the first table the set created)
        let mut keys: Vec<(String, Vec<String>, Option<usize>)> = Vec::new();
        for set in sets {
            let Some((key, value)) = set.split_once('=') else {
                return Err(set_err(set, "expected key.path=value".into()));
            };
            let key = key.trim();
            // TOML's own key syntax: dots separate, quotes keep dots and spaces in a part
            let parts: Vec<String> = match toml_edit::Key::parse(key) {
                Ok(ks) if !ks.is_empty() && ks.iter().all(|k| !k.get().is_empty()) => {
                    ks.iter().map(|k| k.get().to_string()).collect()
                }
                _ => return Err(set_err(key, "expected key.path=value".into())),
            };
            let value: toml_edit::Value = match value.trim().parse::<toml_edit::Value>() {
                Ok(v) => v,
                Err(_) => toml_edit::Value::from(value.trim()),
            };
            let mut table = doc.as_table_mut() as &mut dyn toml_edit::TableLike;
            let mut created = None;
            for (i, part) in parts[..parts.len() - 1].iter().enumerate() {
                if created.is_none() && !table.contains_key(part) {
                    created = Some(i);
                }
                let entry = table
                    .entry(part)
                    .or_insert(toml_edit::Item::Table(toml_edit::Table::new()));
                table = entry.as_table_like_mut().ok_or_else(|| {
                    set_err(key, format!("`{}` is not a table", parts[..=i].join(".")))
                })?;
            }
            let last = &parts[parts.len() - 1];
            table.insert(last, toml_edit::Item::Value(value.decorated(" ", "")));
            keys.push((key.to_string(), parts, created));
        }
        self.patched = doc.to_string();
        // Locate each override in the patched text: its key and value, and the header of
        // any table it created (so an error about that table names the --set too).
        let all: Vec<&str> = keys.iter().map(|(k, _, _)| k.as_str()).collect();
        let im: toml_edit::ImDocument<String> = toml_edit::ImDocument::parse(self.patched.clone())
            .map_err(|e| set_err(&all.join(","), e.message().trim().to_string()))?;
        for (key, parts, created) in keys {
            let mut span: Option<Range<usize>> = None;
            let mut widen = |s: Range<usize>| {
                span = Some(match span.take() {
                    Some(r) => r.start.min(s.start)..r.end.max(s.end),
                    None => s,
                });
            };
            let mut table: &dyn toml_edit::TableLike = im.as_table();
            let mut found = true;
            for (i, part) in parts[..parts.len() - 1].iter().enumerate() {
                if created == Some(i) {
                    if let Some((k, _)) = table.get_key_value(part) {
                        k.span().into_iter().for_each(&mut widen);
                    }
                }
                match table.get(part).and_then(|i| i.as_table_like()) {
                    Some(t) => table = t,
                    None => {
                        found = false;
                        break;
                    }
                }
            }
            if found {
                if let Some((k, item)) = table.get_key_value(&parts[parts.len() - 1]) {
                    for s in [k.span(), item.span()].into_iter().flatten() {
                        widen(s);
                    }
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
    pub fn error_at(&self, span: Range<usize>, message: impl Into<String>) -> SpecError {
        let location = match self.origin(&span) {
            Origin::File { line, col } => format!("{}:{line}:{col}", self.path.display()),
            Origin::Set(key) => format!("--set {key}"),
        };
        SpecError::At {
            location,
            message: message.into(),
        }
    }

    /// An error about the file as a whole (a missing required field).
    pub fn error_file(&self, message: impl Into<String>) -> SpecError {
        SpecError::At {
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
    pub fn parse(&self) -> Result<Scenario, SpecError> {
        toml::from_str(&self.patched).map_err(|e| {
            let msg = e.message().trim().replace('\n', " ");
            match e.span() {
                Some(span) => self.error_at(span, msg),
                None => self.error_file(msg),
            }
        })
    }
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
    fn errors_in_tables_a_set_created_name_the_set() {
        let text = "[load]\nrate = 1\nduration = \"1s\"\n[target]\nurl = \"http://x/\"\n";
        let mut s = Source::new("x.toml", text);
        s.apply_sets(&["bogus.key=1".into(), "target.headers.\"x-a.b\"=v".into()])
            .unwrap();
        let e = s.parse().unwrap_err().to_string();
        assert_eq!(e, "--set bogus.key: unknown field `bogus`, expected one of `name`, `description`, `target`, `load`, `app`, `slo`, `mesh`, `matrix`, `checks`, `driver`, `search`");
        // a quoted part keeps its dot
        let mut s = Source::new("x.toml", text);
        s.apply_sets(&["target.headers.\"x-a.b\"=v".into()])
            .unwrap();
        let sc = s.parse().unwrap();
        assert_eq!(sc.target.headers["x-a.b"].get_ref(), "v");
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
