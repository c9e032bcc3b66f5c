//! The gates' expressions: SLOs (`p99<50ms`, the grammar of `meshbench_schema::slo`, which
//! loadgen checks scenarios with) and regression limits (`p99=+10%`).

use super::Slo;
use crate::ReportError;

fn expr_err(kind: &'static str, expr: &str, msg: impl Into<String>) -> ReportError {
    ReportError::Expr {
        kind,
        expr: expr.to_string(),
        msg: msg.into(),
    }
}

/// Parse an SLO expression (the grammar of `meshbench_schema::slo`, which loadgen checks
/// scenarios with).
pub fn parse_slo(expr: &str) -> Result<Slo, ReportError> {
    Slo::parse(expr).map_err(|e| expr_err("SLO", &e.expr, e.msg))
}

/// A regression limit such as `p99=+10%`.
#[derive(Debug, Clone, PartialEq)]
pub struct MaxRegression {
    pub expr: String,
    /// p50, p90, p99, p99.9 or max.
    pub metric: &'static str,
    /// Allowed relative increase (0.10 for +10 %).
    pub max: f64,
}

pub fn parse_max_regression(expr: &str) -> Result<MaxRegression, ReportError> {
    const KIND: &str = "max-regression";
    let e = expr.trim();
    let (name, value) = e
        .split_once('=')
        .ok_or_else(|| expr_err(KIND, expr, "expected METRIC=+PERCENT%, e.g. p99=+10%"))?;
    let name = name.trim();
    let metric = crate::compare::METRICS
        .iter()
        .find(|&&m| m == name)
        .copied()
        .ok_or_else(|| {
            expr_err(
                KIND,
                expr,
                format!(
                    "unknown metric '{name}' (known: {})",
                    crate::compare::METRICS.join(", ")
                ),
            )
        })?;
    let v = value.trim();
    let pct = v
        .strip_suffix('%')
        .map(|p| p.trim().trim_start_matches('+'))
        .and_then(|p| p.parse::<f64>().ok())
        .filter(|p| p.is_finite() && *p >= 0.0)
        .ok_or_else(|| {
            expr_err(
                KIND,
                expr,
                format!("'{v}' is not a percentage such as +10%"),
            )
        })?;
    Ok(MaxRegression {
        expr: e.to_string(),
        metric,
        max: pct / 100.0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slo_errors_name_the_expression() {
        let e = parse_slo("p99<fast").unwrap_err().to_string();
        assert!(e.starts_with("SLO 'p99<fast': "), "{e}");
        assert_eq!(parse_slo("p99<1m").unwrap().threshold, 60e6);
    }

    #[test]
    fn regression_expressions_parse() {
        let r = parse_max_regression("p99=+10%").unwrap();
        assert_eq!((r.metric, r.max), ("p99", 0.10));
        assert_eq!(parse_max_regression("p99.9=5%").unwrap().max, 0.05);
        for bad in ["p99+10%", "p99=10", "p42=+10%", "p99=+x%"] {
            assert!(parse_max_regression(bad).is_err(), "{bad}");
        }
    }
}
