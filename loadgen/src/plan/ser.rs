//! How the typed plan's http values appear in run.json's `plan`.

use serde::ser::{SerializeSeq, Serializer};
use std::fmt::Display;

pub fn display<T: Display, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

pub fn opt_display<T: Display, S: Serializer>(v: &Option<T>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => s.collect_str(v),
        None => s.serialize_none(),
    }
}

/// `[[name, value], ...]`, values as text where they are text.
pub fn headers<S: Serializer>(h: &http::HeaderMap, s: S) -> Result<S::Ok, S::Error> {
    let mut seq = s.serialize_seq(Some(h.len()))?;
    for (k, v) in h {
        seq.serialize_element(&(k.as_str(), String::from_utf8_lossy(v.as_bytes())))?;
    }
    seq.end()
}

pub fn bytes<S: Serializer>(b: &bytes::Bytes, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&String::from_utf8_lossy(b))
}

pub fn slos<S: Serializer>(v: &[meshbench_schema::slo::Slo], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().map(|x| x.expr.as_str()))
}
