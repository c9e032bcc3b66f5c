//! `--prometheus FILE`: node_exporter textfile-collector format, written atomically.
//!
//! Families:
//! - `meshbench_probe_verdict{check}`: 0 pass, 1 warn, 2 fail, 3 skip;
//! - `meshbench_probe_<measurement>{check}` for every numeric or boolean measurement
//!   (in base units: `_us`/`_ms` measurements as `_seconds`, `_per_s` as `_per_second`;
//!   a name ending in a suffix Prometheus reserves, like `_count`, gets `_value`)
//!   (booleans as 0/1); per-vCPU measurements `cpuN_<name>` become
//!   `meshbench_probe_cpu_<name>{check,cpu="N"}`;
//! - `meshbench_probe_fact{check,name,value} 1` for text facts (driver, hypervisor, ...);
//! - `meshbench_probe_duration_seconds`, `meshbench_probe_last_run_timestamp_seconds`.

use meshbench_schema::{MeasuredValue, ProbeReport, Verdict};
use std::collections::BTreeMap;

pub fn verdict_value(v: Verdict) -> u8 {
    match v {
        Verdict::Pass => 0,
        Verdict::Warn => 1,
        Verdict::Fail => 2,
        Verdict::Skip => 3,
    }
}

/// Escape a label value (backslash, double quote, newline).
pub fn escape_label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A metric-name-safe version of a measurement name.
/// Prometheus names carry base units: a measurement named in µs, ms or ns becomes
/// `_seconds` (value scaled), `_per_s` becomes `_per_second`, KiB/MiB/kB/MB/GB `_bytes`.
/// Returns the name and the factor for its value.
pub fn base_unit(name: &str) -> (String, f64) {
    const UNITS: [(&str, &str, f64); 9] = [
        ("_us", "_seconds", 1e-6),
        ("_ms", "_seconds", 1e-3),
        ("_ns", "_seconds", 1e-9),
        ("_per_s", "_per_second", 1.0),
        ("_kib", "_bytes", 1024.0),
        ("_mib", "_bytes", 1_048_576.0),
        ("_kb", "_bytes", 1e3),
        ("_mb", "_bytes", 1e6),
        ("_gb", "_bytes", 1e9),
    ];
    for (suffix, to, factor) in UNITS {
        if let Some(stem) = name.strip_suffix(suffix) {
            return (format!("{stem}{to}"), factor);
        }
    }
    (name.to_string(), 1.0)
}

pub fn sanitize(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let s = if s.starts_with(|c: char| c.is_ascii_digit()) {
        format!("_{s}")
    } else {
        s
    };
    // every family here is a gauge: the suffixes Prometheus reserves for counters,
    // histograms and summaries (promtool check metrics refuses them on a gauge) get `_value`
    if ["_count", "_sum", "_bucket", "_total", "_created", "_info"]
        .iter()
        .any(|suffix| s.ends_with(suffix))
    {
        format!("{s}_value")
    } else {
        s
    }
}

fn fmt_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else {
        format!("{v}")
    }
}

struct Family {
    help: String,
    samples: Vec<String>,
}

pub fn render(report: &ProbeReport, unix_time: f64) -> String {
    let mut fams: BTreeMap<String, Family> = BTreeMap::new();
    let mut add = |name: String, help: String, labels: String, value: String| {
        fams.entry(name.clone())
            .or_insert_with(|| Family {
                help,
                samples: vec![],
            })
            .samples
            .push(format!("{name}{{{labels}}} {value}"));
    };
    for f in &report.findings {
        let check = escape_label(&f.check);
        add(
            "meshbench_probe_verdict".into(),
            "Verdict of a probe check: 0 pass, 1 warn, 2 fail, 3 skip.".into(),
            format!("check=\"{check}\""),
            verdict_value(f.verdict).to_string(),
        );
        for m in &f.measurements {
            let (name, factor) = base_unit(&m.name);
            let value = match &m.value {
                MeasuredValue::Number(n) => fmt_value(*n * factor),
                MeasuredValue::Flag(b) => u8::from(*b).to_string(),
                MeasuredValue::Text(t) => {
                    add(
                        "meshbench_probe_fact".into(),
                        "A fact found by a probe check (driver, hypervisor, scheduler, ...)."
                            .into(),
                        format!(
                            "check=\"{check}\",name=\"{}\",value=\"{}\"",
                            escape_label(&m.name),
                            escape_label(t)
                        ),
                        "1".into(),
                    );
                    continue;
                }
            };
            let unit = if factor != 1.0 {
                format!(" Unit: base unit of {} (converted).", m.unit)
            } else if m.unit.is_empty() {
                String::new()
            } else {
                format!(" Unit: {}.", m.unit)
            };
            // cpuN_name -> cpu_name{cpu="N"}
            let per_cpu = name.strip_prefix("cpu").and_then(|rest| {
                let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
                let tail = rest[digits.len()..].strip_prefix('_')?;
                (!digits.is_empty()).then(|| (digits, tail.to_string()))
            });
            match per_cpu {
                Some((n, tail)) => add(
                    format!("meshbench_probe_cpu_{}", sanitize(&tail)),
                    format!("probe measurement {tail} per vCPU.{unit}"),
                    format!("check=\"{check}\",cpu=\"{n}\""),
                    value,
                ),
                None => add(
                    format!("meshbench_probe_{}", sanitize(&name)),
                    format!("probe measurement {}.{unit}", m.name),
                    format!("check=\"{check}\""),
                    value,
                ),
            }
        }
    }
    let mut out = String::new();
    for (name, fam) in &fams {
        out.push_str(&format!(
            "# HELP {name} {}\n# TYPE {name} gauge\n",
            fam.help
        ));
        for s in &fam.samples {
            out.push_str(s);
            out.push('\n');
        }
    }
    out.push_str(&format!(
        "# HELP meshbench_probe_duration_seconds How long the probe run took.\n# TYPE meshbench_probe_duration_seconds gauge\nmeshbench_probe_duration_seconds {}\n",
        fmt_value(report.duration_s)
    ));
    out.push_str(&format!(
        "# HELP meshbench_probe_last_run_timestamp_seconds When the probe run finished (Unix time).\n# TYPE meshbench_probe_last_run_timestamp_seconds gauge\nmeshbench_probe_last_run_timestamp_seconds {}\n",
        fmt_value(unix_time.floor())
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshbench_schema::{Finding, Measurement, ToolInfo, VerdictCounts};

    #[test]
    fn families_labels_and_escaping() {
        let f = Finding {
            check: "cpu.steal".into(),
            title: "CPU steal".into(),
            verdict: Verdict::Warn,
            value: "1 %".into(),
            threshold: String::new(),
            remedy: None,
            reason: None,
            measurements: vec![
                Measurement {
                    name: "steal_pct".into(),
                    value: MeasuredValue::Number(1.5),
                    unit: "%".into(),
                },
                Measurement {
                    name: "cpu1_steal_pct".into(),
                    value: MeasuredValue::Number(3.0),
                    unit: "%".into(),
                },
                Measurement {
                    name: "driver".into(),
                    value: MeasuredValue::Text("vi\"rt".into()),
                    unit: String::new(),
                },
                Measurement {
                    name: "rotational".into(),
                    value: MeasuredValue::Flag(true),
                    unit: String::new(),
                },
            ],
        };
        let r = ProbeReport {
            schema_version: 1,
            tool: ToolInfo::new("probe", "0"),
            node: "n".into(),
            root: "/".into(),
            started_at: "x".into(),
            duration_s: 1.25,
            profile: "mesh-node".into(),
            findings: vec![f],
            counts: VerdictCounts::default(),
        };
        let out = render(&r, 1000.5);
        assert!(
            out.contains("meshbench_probe_verdict{check=\"cpu.steal\"} 1\n"),
            "{out}"
        );
        assert!(
            out.contains("meshbench_probe_steal_pct{check=\"cpu.steal\"} 1.5\n"),
            "{out}"
        );
        assert!(
            out.contains("meshbench_probe_cpu_steal_pct{check=\"cpu.steal\",cpu=\"1\"} 3\n"),
            "{out}"
        );
        assert!(out.contains("value=\"vi\\\"rt\"} 1\n"), "{out}");
        assert!(
            out.contains("meshbench_probe_rotational{check=\"cpu.steal\"} 1\n"),
            "{out}"
        );
        assert!(out.contains("meshbench_probe_last_run_timestamp_seconds 1000\n"));
        // every family has exactly one HELP and TYPE
        for name in ["meshbench_probe_verdict", "meshbench_probe_fact"] {
            assert_eq!(out.matches(&format!("# TYPE {name} gauge")).count(), 1);
        }
    }
}
