//! The gates' expressions: SLOs (`p99<50ms`, the grammar of `meshbench_schema::slo`, which
//! loadgen checks scenarios with) and regression limits (`p99=+10%`: an allowed rise of a
//! latency statistic; `capacity=10%`: an allowed drop of the capacity a `[search]`
//! found).

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

/// The metric name of a capacity regression limit (`capacity=10%`).
pub const CAPACITY: &str = "capacity";

/// A regression limit such as `p99=+10%` or `capacity=10%`.
#[derive(Debug, Clone, PartialEq)]
pub struct MaxRegression {
    pub expr: String,
    /// p50, p90, p99, p99.9, max, or [`CAPACITY`].
    pub metric: &'static str,
    /// Allowed relative change for the worse (0.10 for 10 %): an increase of a latency
    /// statistic, a drop of the capacity.
    pub max: f64,
}

impl MaxRegression {
    /// Whether this limit is on a search's capacity (a regression is a drop).
    pub fn is_capacity(&self) -> bool {
        self.metric == CAPACITY
    }
}

pub fn parse_max_regression(expr: &str) -> Result<MaxRegression, ReportError> {
    const KIND: &str = "max-regression";
    let e = expr.trim();
    let (name, value) = e.split_once('=').ok_or_else(|| {
        expr_err(
            KIND,
            expr,
            "expected METRIC=+PERCENT%, e.g. p99=+10%, or capacity=PERCENT%, e.g. capacity=10%",
        )
    })?;
    let name = name.trim();
    let v = value.trim();
    if name == CAPACITY {
        // a capacity regression is a drop: `10%` or `-10%`; `+10%` would read as a rise
        let pct = v
            .strip_suffix('%')
            .map(|p| p.trim().trim_start_matches('-'))
            .filter(|p| !p.starts_with('+'))
            .and_then(|p| p.parse::<f64>().ok())
            .filter(|p| p.is_finite() && (0.0..100.0).contains(p))
            .ok_or_else(|| {
                expr_err(
                    KIND,
                    expr,
                    format!(
                        "'{v}' is not an allowed drop such as 10% or -10% (a capacity regression is a drop, below 100%)"
                    ),
                )
            })?;
        return Ok(MaxRegression {
            expr: e.to_string(),
            metric: CAPACITY,
            max: pct / 100.0,
        });
    }
    let metric = crate::compare::METRICS
        .iter()
        .find(|&&m| m == name)
        .copied()
        .ok_or_else(|| {
            expr_err(
                KIND,
                expr,
                format!(
                    "unknown metric '{name}' (known: {}, {CAPACITY})",
                    crate::compare::METRICS.join(", ")
                ),
            )
        })?;
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
        let c = parse_max_regression("capacity=10%").unwrap();
        assert!(c.is_capacity() && !r.is_capacity());
        assert_eq!((c.metric, c.max), (CAPACITY, 0.10));
        assert_eq!(parse_max_regression(" capacity = -5% ").unwrap().max, 0.05);
        for bad in [
            "capacity=+10%",
            "capacity=10",
            "capacity=100%",
            "capacity=x%",
        ] {
            let e = parse_max_regression(bad).unwrap_err().to_string();
            assert!(e.contains("capacity regression is a drop"), "{bad}: {e}");
        }
    }
}
