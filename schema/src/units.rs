//! The value types every scenario, flag and expression writes the same way: durations
//! (`250ms`, `30s`, `1m30s`, `1.5s`) and Kubernetes quantities (`100m`, `0.5`, `2` CPUs;
//! `128Mi` of memory). One parser each, used by loadgen's scenarios and `--set`, its
//! flags, the SLO expressions of [`crate::slo`] and report's gates.

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use std::fmt;
use std::time::Duration;

/// A duration: humantime syntax (`30s`, `250ms`, `1m30s`, `1m 30s`, `2h`), a decimal
/// number of one unit (`1.5s`, `0.25 ms`), or `0`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Dur(pub Duration);

/// Units of a decimal duration, in seconds (the names humantime knows for them).
const UNITS: [(&[&str], f64); 7] = [
    (&["ns", "nsec"], 1e-9),
    (&["us", "µs", "usec"], 1e-6),
    (&["ms", "msec"], 1e-3),
    (&["s", "sec", "second", "seconds"], 1.0),
    (&["m", "min", "minute", "minutes"], 60.0),
    (&["h", "hr", "hour", "hours"], 3600.0),
    (&["d", "day", "days"], 86400.0),
];

impl Dur {
    pub fn parse(s: &str) -> Result<Self, String> {
        let t = s.trim();
        if t == "0" {
            return Ok(Dur(Duration::ZERO));
        }
        if let Ok(d) = humantime::parse_duration(t) {
            return Ok(Dur(d));
        }
        let bad =
            || format!("invalid duration `{s}`; expected e.g. `30s`, `250ms`, `1m30s`, `1.5s`");
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let (num, unit) = t.split_at(split);
        let v: f64 = num.parse().map_err(|_| bad())?;
        let scale = UNITS
            .iter()
            .find(|(names, _)| names.contains(&unit.trim()))
            .map(|(_, k)| *k)
            .ok_or_else(bad)?;
        Duration::try_from_secs_f64(v * scale)
            .map(Dur)
            .map_err(|_| bad())
    }

    /// Microseconds, as histograms and thresholds count.
    pub fn as_us(self) -> f64 {
        self.0.as_secs_f64() * 1e6
    }
}

impl std::str::FromStr for Dur {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Dur::parse(s)
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_zero() {
            return f.write_str("0s");
        }
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
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Dur, E> {
                self.visit_i64(i64::try_from(v).unwrap_or(i64::MAX))
            }
        }
        d.deserialize_any(V)
    }
}

/// A quantity that is not what Kubernetes accepts for the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct QuantityError(pub String);

/// The highest CPU limit taken as plausible (1000 cores), in millicores.
pub const MAX_CPU_MILLIS: u64 = 1_000_000;

/// Parse a Kubernetes CPU quantity to millicores: `100m`, `0.5`, `2`, `.25`. As
/// Kubernetes does, a fraction finer than one millicore is rounded up; a limit is at
/// least 1m. (`"none"` is the caller's business.)
pub fn parse_cpu_millis(s: &str) -> Result<u64, QuantityError> {
    let t = s.trim();
    let bad = || {
        QuantityError(format!(
            "`{s}` is not a CPU quantity (expected e.g. \"100m\", \"0.5\", \"2\", or \"none\")"
        ))
    };
    if t.is_empty() {
        return Err(bad());
    }
    let millis = if let Some(m) = t.strip_suffix('m') {
        if m.is_empty() || !m.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        m.parse::<u64>().map_err(|_| bad())?
    } else {
        cores_to_millis(t).ok_or_else(bad)?
    };
    if millis == 0 {
        return Err(QuantityError(format!(
            "`{s}`: a CPU limit must be at least 1m (use \"none\" for no limit)"
        )));
    }
    if millis > MAX_CPU_MILLIS {
        return Err(QuantityError(format!(
            "`{s}`: a CPU limit above 1000 cores is not plausible"
        )));
    }
    Ok(millis)
}

/// Cores written as a decimal number ("0.5", "2", "1.25") to millicores, rounding up.
fn cores_to_millis(t: &str) -> Option<u64> {
    let (int, frac) = t.split_once('.').unwrap_or((t, ""));
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    if !int.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let int: u64 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let mut millis = int.checked_mul(1000)?;
    let digits: Vec<u64> = frac.bytes().map(|b| u64::from(b - b'0')).collect();
    for (i, d) in digits.iter().take(3).enumerate() {
        millis += d * 10u64.pow(2 - i as u32);
    }
    if digits.iter().skip(3).any(|&d| d != 0) {
        millis += 1;
    }
    Some(millis)
}

/// Millicores the way Kubernetes prints them: "100m", "2" for whole cores.
pub fn format_cpu_millis(millis: u64) -> String {
    if millis.is_multiple_of(1000) {
        format!("{}", millis / 1000)
    } else {
        format!("{millis}m")
    }
}

/// Parse a memory quantity to bytes: `134217728`, `128Mi`, `1Gi`, `500M`, `1G`, `64Ki`,
/// `64k`; a sidecar limit is at least 4Mi.
pub fn parse_memory_bytes(s: &str) -> Result<u64, QuantityError> {
    let t = s.trim();
    let bad = || {
        QuantityError(format!(
            "`{s}` is not a memory quantity (expected e.g. \"128Mi\", \"1Gi\", \"500M\")"
        ))
    };
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, suffix) = t.split_at(split);
    if num.is_empty() {
        return Err(bad());
    }
    let n: u64 = num.parse().map_err(|_| bad())?;
    let mult: u64 = match suffix {
        "" => 1,
        "k" => 1000,
        "M" => 1000u64.pow(2),
        "G" => 1000u64.pow(3),
        "T" => 1000u64.pow(4),
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        _ => return Err(bad()),
    };
    let bytes = n.checked_mul(mult).ok_or_else(bad)?;
    if bytes < (4 << 20) {
        return Err(QuantityError(format!(
            "`{s}`: a sidecar memory limit below 4Mi cannot run it"
        )));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_every_form_the_tools_accept() {
        let d = |s| Dur::parse(s).unwrap().0;
        assert_eq!(d("250ms"), Duration::from_millis(250));
        assert_eq!(d("1m 30s"), Duration::from_secs(90));
        assert_eq!(d("1m30s"), Duration::from_secs(90));
        assert_eq!(d("0"), Duration::ZERO);
        assert_eq!(d("1.5s"), Duration::from_millis(1500));
        assert_eq!(d("1.5 s"), Duration::from_millis(1500));
        assert_eq!(d("800us"), Duration::from_micros(800));
        assert_eq!(d("800µs"), Duration::from_micros(800));
        assert_eq!(d("0.25ms"), Duration::from_micros(250));
        for bad in ["5x", "10", "-3ms", "", "1.2.3s", "ms", "1e3s"] {
            assert!(Dur::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Dur::parse("5x")
            .unwrap_err()
            .contains("invalid duration `5x`"));
        assert_eq!(Dur(Duration::from_secs(90)).to_string(), "1m 30s");
        assert_eq!(Dur(Duration::ZERO).to_string(), "0s");
    }

    #[test]
    fn cpu_quantities_parse_as_kubernetes_does() {
        assert_eq!(parse_cpu_millis("100m"), Ok(100));
        assert_eq!(parse_cpu_millis("2000m"), Ok(2000));
        assert_eq!(parse_cpu_millis("0.5"), Ok(500));
        assert_eq!(parse_cpu_millis(".25"), Ok(250));
        assert_eq!(parse_cpu_millis("2"), Ok(2000));
        assert_eq!(parse_cpu_millis("1.5"), Ok(1500));
        assert_eq!(parse_cpu_millis("0.0001"), Ok(1)); // rounded up, as Kubernetes does
        for bad in [
            "lots", "", "m", "1.2.3", "-1", "100 m", "1e3", "0", "0m", "0.0", "1001",
        ] {
            assert!(parse_cpu_millis(bad).is_err(), "{bad:?} should be refused");
        }
        assert_eq!(format_cpu_millis(100), "100m");
        assert_eq!(format_cpu_millis(2000), "2");
    }

    #[test]
    fn memory_quantities() {
        assert_eq!(parse_memory_bytes("128Mi"), Ok(128 << 20));
        assert_eq!(parse_memory_bytes("1G"), Ok(1_000_000_000));
        assert_eq!(parse_memory_bytes("67108864"), Ok(64 << 20));
        assert!(parse_memory_bytes("12 parsecs").is_err());
        assert!(parse_memory_bytes("1Ki").is_err()); // too small to run
    }
}
