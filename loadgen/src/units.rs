//! Value types of the scenario language that parse from strings: durations (`250ms`, `30s`)
//! and Kubernetes CPU quantities (`100m`, `0.5`, `2`). Each deserializes with a message that
//! says what was expected, so the TOML parser attaches the value's position to the error.

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use std::fmt;
use std::time::Duration;

/// A duration written like `30s`, `250ms`, `1m 30s` (humantime syntax).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dur(pub Duration);

impl Dur {
    pub fn parse(s: &str) -> Result<Self, String> {
        let t = s.trim();
        if t == "0" {
            return Ok(Dur(Duration::ZERO));
        }
        humantime::parse_duration(t)
            .map(Dur)
            .map_err(|e| format!("invalid duration `{s}` ({e}); expected e.g. `30s`, `250ms`"))
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Dur;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration string such as \"30s\" or \"250ms\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Dur, E> {
                Dur::parse(v).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Dur, E> {
                if v == 0 {
                    Ok(Dur(Duration::ZERO))
                } else {
                    Err(E::custom(format!(
                        "invalid duration `{v}`: a unit is required, e.g. \"{v}s\" or \"{v}ms\""
                    )))
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// A Kubernetes CPU quantity: `100m` (millicores), `0.5`, `2`. Stored in millicores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuQuantity {
    /// As written, e.g. "100m".
    pub text: String,
    pub millis: u64,
}

impl CpuQuantity {
    pub fn parse(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let bad =
            || format!("invalid CPU quantity `{s}`; expected e.g. \"100m\", \"0.5\" or \"2\"");
        let millis = if let Some(m) = t.strip_suffix('m') {
            m.parse::<u64>().map_err(|_| bad())?
        } else {
            let cores: f64 = t.parse().map_err(|_| bad())?;
            if !cores.is_finite() || cores < 0.0 {
                return Err(bad());
            }
            let m = cores * 1000.0;
            if (m - m.round()).abs() > 1e-6 {
                return Err(format!(
                    "invalid CPU quantity `{s}`: finer than 1m (one millicore)"
                ));
            }
            m.round() as u64
        };
        if millis == 0 {
            return Err(format!("invalid CPU quantity `{s}`: must be > 0"));
        }
        Ok(CpuQuantity {
            text: t.to_string(),
            millis,
        })
    }
}

impl Serialize for CpuQuantity {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for CpuQuantity {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = CpuQuantity;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a CPU quantity such as \"100m\", \"0.5\" or 2")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<CpuQuantity, E> {
                CpuQuantity::parse(v).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<CpuQuantity, E> {
                CpuQuantity::parse(&v.to_string()).map_err(E::custom)
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<CpuQuantity, E> {
                CpuQuantity::parse(&v.to_string()).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(Dur::parse("250ms").unwrap().0, Duration::from_millis(250));
        assert_eq!(Dur::parse("1m 30s").unwrap().0, Duration::from_secs(90));
        assert_eq!(Dur::parse("0").unwrap().0, Duration::ZERO);
        assert!(Dur::parse("5x")
            .unwrap_err()
            .contains("invalid duration `5x`"));
        assert!(Dur::parse("10").is_err());
    }

    #[test]
    fn cpu_quantities() {
        assert_eq!(CpuQuantity::parse("100m").unwrap().millis, 100);
        assert_eq!(CpuQuantity::parse("0.5").unwrap().millis, 500);
        assert_eq!(CpuQuantity::parse("2").unwrap().millis, 2000);
        assert!(CpuQuantity::parse("0.0001").is_err());
        assert!(CpuQuantity::parse("abc").is_err());
        assert!(CpuQuantity::parse("0m").is_err());
        assert!(CpuQuantity::parse("-1").is_err());
    }
}
