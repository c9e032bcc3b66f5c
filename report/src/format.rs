//! Small formatting helpers shared by the printers.

pub use meshbench_schema::text::us;

/// A relative change as a signed percentage ("+12.3 %").
pub fn change(ratio: f64) -> String {
    if ratio.is_finite() {
        format!("{:+.1} %", ratio * 100.0)
    } else {
        "n/a".to_string()
    }
}

/// A rate in requests per second.
pub fn rate(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}/s")
    } else {
        format!("{v:.1}/s")
    }
}

/// A string usable as a file-name stem: ASCII alphanumerics, `-` and `_`; anything else
/// becomes `_` (e.g. `cpu=100m,log=off` -> `cpu_100m_log_off`).
pub fn slug(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() {
        out.push('_');
    }
    out
}

/// Escape text for HTML element content and attribute values.
pub fn html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Escape text for a markdown table cell.
pub fn md(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// Sidecar CPU limit label: the scenario's quantity, or "no limit".
pub fn cpu_label(millis: Option<u64>, raw: Option<&str>) -> String {
    match (raw, millis) {
        (Some(r), _) => r.to_string(),
        (None, Some(m)) => format!("{m}m"),
        (None, None) => "no limit".to_string(),
    }
}

/// A worker's clock in a few words: "clock synchronised (est. error 0.2 ms), 0 steps".
pub fn clock(c: &meshbench_schema::ClockFacts) -> String {
    let mut s = match c.synchronised {
        Some(true) => "clock synchronised".to_string(),
        Some(false) => "clock NOT synchronised".to_string(),
        None => "clock state unknown".to_string(),
    };
    if let Some(e) = c.est_error_us {
        s.push_str(&format!(" (est. error {:.1} ms)", e as f64 / 1000.0));
    }
    if let Some(n) = c.steps {
        s.push_str(&format!(", {n} step(s) during the run"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_switch_at_boundaries() {
        assert_eq!(us(850.0), "850 µs");
        assert_eq!(us(1234.0), "1.23 ms");
        assert_eq!(us(45_600.0), "45.6 ms");
        assert_eq!(us(2_500_000.0), "2.50 s");
        assert_eq!(change(0.123), "+12.3 %");
        assert_eq!(change(-0.3), "-30.0 %");
    }

    #[test]
    fn slugs_are_file_safe() {
        assert_eq!(slug("cpu=100m,log=off"), "cpu_100m_log_off");
        assert_eq!(slug("../x"), "___x");
        assert_eq!(html("<a href=\"x\">&"), "&lt;a href=&quot;x&quot;&gt;&amp;");
    }
}
