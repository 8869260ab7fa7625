//! Thresholds such as `p99_ms < 10`, `errors < 0.1%` or
//! `connect.p95_ms <= 50`: a metric of the summary, a comparison, a number.

use std::fmt;
use std::str::FromStr;

/// Why a threshold did not parse.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ThresholdError {
    #[error("threshold `{0}`: expected `<metric> <op> <number>`, e.g. `p99_ms < 10`")]
    Shape(String),
    #[error("threshold `{text}`: unknown metric `{metric}` (known: {known})")]
    Metric {
        text: String,
        metric: String,
        known: String,
    },
    #[error("threshold `{0}`: the operator must be one of < <= > >= ==")]
    Operator(String),
    #[error("threshold `{0}`: not a number")]
    Number(String),
    #[error("threshold `{0}`: a percentage only suits a ratio metric")]
    Percent(String),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Op {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
}

impl Op {
    fn holds(self, left: f64, right: f64) -> bool {
        match self {
            Op::Lt => left < right,
            Op::Le => left <= right,
            Op::Gt => left > right,
            Op::Ge => left >= right,
            Op::Eq => (left - right).abs() < f64::EPSILON,
        }
    }

    fn text(self) -> &'static str {
        match self {
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Eq => "==",
        }
    }
}

/// Metrics that are fractions (0.001 = 0.1 %).
pub const RATIO_METRICS: &[&str] = &[
    "errors",
    "delivered",
    "rss_drift",
    "held",
    "recovered",
    "replayed",
];

/// Metrics that are plain numbers.
pub const NUMBER_METRICS: &[&str] = &[
    "error_count",
    "unexpected_closes",
    "connections",
    "connect_failures",
    "connect_rate",
    "sent",
    "received",
    "sent_per_s",
    "deliveries_per_s",
    "dropped",
    "rss_per_socket_kib",
    "reconnects",
    "reconnect_failures",
    "missed",
    "gaps",
    "duplicates",
];

/// Latency trends, `<trend>.<stat>_ms`; a bare `<stat>_ms` is `delivery`.
pub const TRENDS: &[&str] = &["delivery", "connect", "ack", "receipt", "request", "replay"];
pub const STATS: &[&str] = &["min", "avg", "med", "p90", "p95", "p99", "max"];

/// One parsed threshold.
#[derive(Debug, Clone, PartialEq)]
pub struct Threshold {
    pub text: String,
    pub metric: String,
    pub op: Op,
    /// Compared value, already divided by 100 when written as a percentage.
    pub value: f64,
    pub percent: bool,
}

fn known_metric(metric: &str) -> bool {
    if RATIO_METRICS.contains(&metric) || NUMBER_METRICS.contains(&metric) {
        return true;
    }
    let (trend, stat) = metric.split_once('.').unwrap_or(("delivery", metric));
    TRENDS.contains(&trend)
        && stat
            .strip_suffix("_ms")
            .is_some_and(|stat| STATS.contains(&stat))
}

impl FromStr for Threshold {
    type Err = ThresholdError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let owned = text.to_owned();
        let parts: Vec<&str> = text.split_whitespace().collect();
        let [metric, op, number] = parts[..] else {
            return Err(ThresholdError::Shape(owned));
        };
        if !known_metric(metric) {
            let mut known: Vec<String> = RATIO_METRICS
                .iter()
                .chain(NUMBER_METRICS)
                .map(|s| (*s).to_owned())
                .collect();
            known.push("[trend.]<stat>_ms".to_owned());
            return Err(ThresholdError::Metric {
                text: owned,
                metric: metric.to_owned(),
                known: known.join(", "),
            });
        }
        let op = match op {
            "<" => Op::Lt,
            "<=" => Op::Le,
            ">" => Op::Gt,
            ">=" => Op::Ge,
            "==" => Op::Eq,
            _ => return Err(ThresholdError::Operator(owned)),
        };
        let (digits, percent) = match number.strip_suffix('%') {
            Some(digits) => (digits, true),
            None => (number, false),
        };
        let mut value: f64 = digits
            .parse()
            .ok()
            .filter(|v: &f64| v.is_finite())
            .ok_or_else(|| ThresholdError::Number(owned.clone()))?;
        if percent {
            if !RATIO_METRICS.contains(&metric) {
                return Err(ThresholdError::Percent(owned));
            }
            value /= 100.0;
        }
        Ok(Self {
            text: owned,
            metric: metric.to_owned(),
            op,
            value,
            percent,
        })
    }
}

impl Threshold {
    /// Whether `actual` (the metric's value; `None` when the run did not
    /// produce it) passes. A missing metric fails: a rule that cannot be
    /// checked must not pass silently.
    pub fn passes(&self, actual: Option<f64>) -> bool {
        actual.is_some_and(|a| a.is_finite() && self.op.holds(a, self.value))
    }

    /// The value as the threshold wrote it (percent or plain).
    pub fn show(&self, actual: Option<f64>) -> String {
        match actual {
            None => "not measured".to_owned(),
            Some(a) if self.percent => format!("{:.3}%", a * 100.0),
            Some(a) => format!("{a:.3}"),
        }
    }
}

impl fmt::Display for Threshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let value = if self.percent {
            format!("{}%", self.value * 100.0)
        } else {
            self.value.to_string()
        };
        write!(f, "{} {} {}", self.metric, self.op.text(), value)
    }
}

/// The outcome of one threshold.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Verdict {
    pub threshold: String,
    pub actual: Option<f64>,
    pub passed: bool,
}

/// Checks every threshold with `lookup` giving metric values.
pub fn evaluate(thresholds: &[Threshold], lookup: impl Fn(&str) -> Option<f64>) -> Vec<Verdict> {
    thresholds
        .iter()
        .map(|t| {
            let actual = lookup(&t.metric);
            Verdict {
                threshold: t.text.clone(),
                actual,
                passed: t.passes(actual),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(text: &str) -> Threshold {
        text.parse().unwrap()
    }

    #[test]
    fn parses_numbers_percentages_and_trends() {
        let p99 = t("p99_ms < 10");
        assert_eq!(
            (p99.metric.as_str(), p99.op, p99.value),
            ("p99_ms", Op::Lt, 10.0)
        );
        let errors = t("errors < 0.1%");
        assert!((errors.value - 0.001).abs() < 1e-12);
        assert!(errors.percent);
        assert_eq!(t("connect.p95_ms <= 50").metric, "connect.p95_ms");
        assert_eq!(t("replay.p99_ms < 500").metric, "replay.p99_ms");
        assert_eq!(t("recovered >= 100%").value, 1.0);
        assert_eq!(t("gaps == 0").op, Op::Eq);
        assert_eq!(t("connect_rate >= 5000").op, Op::Ge);
        assert_eq!(t("delivered == 100%").value, 1.0);
        assert_eq!(errors.to_string(), "errors < 0.1%");
    }

    #[test]
    fn refuses_what_it_cannot_check() {
        assert!(matches!(
            "p99_ms<10".parse::<Threshold>(),
            Err(ThresholdError::Shape(_))
        ));
        assert!(matches!(
            "p42_ms < 10".parse::<Threshold>(),
            Err(ThresholdError::Metric { .. })
        ));
        assert!(matches!(
            "warp.p99_ms < 1".parse::<Threshold>(),
            Err(ThresholdError::Metric { .. })
        ));
        assert!(matches!(
            "p99_ms ~ 10".parse::<Threshold>(),
            Err(ThresholdError::Operator(_))
        ));
        assert!(matches!(
            "p99_ms < ten".parse::<Threshold>(),
            Err(ThresholdError::Number(_))
        ));
        assert!(matches!(
            "p99_ms < NaN".parse::<Threshold>(),
            Err(ThresholdError::Number(_))
        ));
        assert!(matches!(
            "p99_ms < 10%".parse::<Threshold>(),
            Err(ThresholdError::Percent(_))
        ));
    }

    #[test]
    fn evaluation_compares_and_fails_what_is_missing() {
        let rules = [
            t("p99_ms < 10"),
            t("errors < 0.1%"),
            t("connect_rate >= 5000"),
            t("held >= 100%"),
        ];
        let verdicts = evaluate(&rules, |metric| match metric {
            "p99_ms" => Some(9.99),
            "errors" => Some(0.001),
            "held" => Some(1.0),
            _ => None,
        });
        let passed: Vec<bool> = verdicts.iter().map(|v| v.passed).collect();
        // 0.1% is not below 0.1%; connect_rate was never measured.
        assert_eq!(passed, [true, false, false, true]);
        assert!(!t("p99_ms < 10").passes(Some(f64::NAN)));
        assert_eq!(t("errors < 1%").show(Some(0.0123)), "1.230%");
        assert_eq!(t("p99_ms < 1").show(None), "not measured");
    }
}
