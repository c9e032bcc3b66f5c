//! Kubernetes resource quantities, as `limits.cpu` and `limits.memory` are written.
//!
//! CPU: `100m` (millicores), `0.5`, `2` (cores). Kubernetes turns a CPU limit into a CFS
//! quota of `millicores * 100` µs per 100 000 µs period ([`cfs_quota_us`]).
//! Memory: plain bytes or a binary/decimal suffix (`128Mi`, `1G`).

/// The CFS period Kubernetes uses (kubelet's default `cpu-cfs-quota-period`), in µs.
pub const CFS_PERIOD_US: u64 = 100_000;

/// A CPU quantity that is not a Kubernetes CPU quantity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct QuantityError(pub String);

/// Parse a CPU quantity to millicores. `"none"`/`"unlimited"` are handled by callers.
///
/// Like Kubernetes, fractions finer than one millicore are rounded up, and a limit must be
/// at least 1m.
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
        parse_cores_millis(t).ok_or_else(bad)?
    };
    if millis == 0 {
        return Err(QuantityError(format!(
            "`{s}`: a CPU limit must be at least 1m (use \"none\" for no limit)"
        )));
    }
    if millis > 1_000_000 {
        return Err(QuantityError(format!(
            "`{s}`: a CPU limit above 1000 cores is not plausible"
        )));
    }
    Ok(millis)
}

/// Cores written as a decimal number ("0.5", "2", "1.25") to millicores, rounding up.
fn parse_cores_millis(t: &str) -> Option<u64> {
    let (int, frac) = match t.split_once('.') {
        Some((i, f)) => (i, f),
        None => (t, ""),
    };
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
        millis += 1; // Kubernetes rounds sub-millicore precision up
    }
    Some(millis)
}

/// Format millicores the way Kubernetes prints them: "100m", "2" for whole cores.
pub fn format_cpu_millis(millis: u64) -> String {
    if millis.is_multiple_of(1000) {
        format!("{}", millis / 1000)
    } else {
        format!("{millis}m")
    }
}

/// The CFS quota (µs per [`CFS_PERIOD_US`]) Kubernetes writes for a CPU limit.
/// `100m` → 10 000 µs; `2` → 200 000 µs. Kubernetes' minimum quota is 1000 µs.
pub fn cfs_quota_us(millis: u64) -> u64 {
    (millis * CFS_PERIOD_US / 1000).max(1000)
}

/// Parse a memory quantity to bytes: `134217728`, `128Mi`, `1Gi`, `500M`, `1G`, `64Ki`, `64k`.
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
    fn cpu_quantities_parse_as_kubernetes_does() {
        assert_eq!(parse_cpu_millis("100m"), Ok(100));
        assert_eq!(parse_cpu_millis("2000m"), Ok(2000));
        assert_eq!(parse_cpu_millis("0.5"), Ok(500));
        assert_eq!(parse_cpu_millis(".25"), Ok(250));
        assert_eq!(parse_cpu_millis("2"), Ok(2000));
        assert_eq!(parse_cpu_millis("1.5"), Ok(1500));
        assert_eq!(parse_cpu_millis("0.0001"), Ok(1)); // rounded up
        for bad in [
            "lots", "", "m", "1.2.3", "-1", "100 m", "1e3", "0", "0m", "0.0",
        ] {
            assert!(parse_cpu_millis(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn kubernetes_cfs_mapping() {
        assert_eq!(CFS_PERIOD_US, 100_000);
        assert_eq!(cfs_quota_us(100), 10_000);
        assert_eq!(cfs_quota_us(500), 50_000);
        assert_eq!(cfs_quota_us(2000), 200_000);
        assert_eq!(cfs_quota_us(1), 1000); // kubelet's minimum quota
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
