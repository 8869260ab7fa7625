//! `loadtest run FILE --pairs N`: the scenario N times with its abusers
//! and N times without, alternately, so both halves see the same machine
//! through the same noise; the medians of each half and the ratio of the
//! normal clients' p99 inside the abuse window.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::{AbuseRss, KindSummary};
use crate::summary::Summary;

/// The figures of one run that the comparison needs.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RunFigures {
    pub abusers: bool,
    /// Normal clients' received / expected over the whole run.
    pub delivered: Option<f64>,
    /// Normal clients' p99 for messages sent inside the abuse window.
    pub window_p99_ms: Option<f64>,
    /// Normal clients' p99 over the whole measured phase.
    pub p99_ms: Option<f64>,
    pub errors: u64,
    pub unexpected_closes: u64,
    pub rss: Option<AbuseRss>,
}

impl RunFigures {
    pub fn of(summary: &Summary, abusers: bool) -> Self {
        let abuse = summary.abuse.as_ref();
        Self {
            abusers,
            delivered: summary.metric("delivered"),
            window_p99_ms: summary.metric("window.p99_ms"),
            p99_ms: summary.metric("p99_ms"),
            errors: summary.counts.errors,
            unexpected_closes: summary.counts.unexpected_closes,
            rss: abuse.and_then(|a| a.rss.clone()),
        }
    }
}

/// Medians of one half.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Medians {
    pub runs: usize,
    pub delivered: Option<f64>,
    pub window_p99_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub rss_baseline_kib: Option<f64>,
    pub rss_peak_kib: Option<f64>,
    pub rss_after_kib: Option<f64>,
}

/// Both halves side by side.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Comparison {
    pub runs: Vec<RunFigures>,
    pub with_abusers: Medians,
    pub without_abusers: Medians,
    /// Median window p99 with abusers over the median without.
    pub window_p99_ratio: Option<f64>,
    /// What the abusers met, over every run with them.
    pub abuse: BTreeMap<String, KindSummary>,
}

/// The median of the values present (mean of the middle two if even).
pub fn median(values: impl IntoIterator<Item = Option<f64>>) -> Option<f64> {
    let mut v: Vec<f64> = values
        .into_iter()
        .flatten()
        .filter(|x| x.is_finite())
        .collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    })
}

fn medians<'a>(runs: impl Iterator<Item = &'a RunFigures> + Clone) -> Medians {
    let rss = |f: fn(&AbuseRss) -> u64| {
        median(
            runs.clone()
                .map(move |r| r.rss.as_ref().map(|m| f(m) as f64)),
        )
    };
    Medians {
        runs: runs.clone().count(),
        delivered: median(runs.clone().map(|r| r.delivered)),
        window_p99_ms: median(runs.clone().map(|r| r.window_p99_ms)),
        p99_ms: median(runs.clone().map(|r| r.p99_ms)),
        rss_baseline_kib: rss(|m| m.baseline_kib),
        rss_peak_kib: rss(|m| m.peak_kib),
        rss_after_kib: rss(|m| m.after_kib),
    }
}

impl Comparison {
    /// Compares `runs` (in the order they ran) and the abuse summaries of
    /// the runs with abusers.
    pub fn new(runs: Vec<RunFigures>, abused: &[&Summary]) -> Self {
        let with_abusers = medians(runs.iter().filter(|r| r.abusers));
        let without_abusers = medians(runs.iter().filter(|r| !r.abusers));
        let window_p99_ratio = match (with_abusers.window_p99_ms, without_abusers.window_p99_ms) {
            (Some(with), Some(without)) if without > 0.0 => Some(with / without),
            _ => None,
        };
        let mut abuse: BTreeMap<String, KindSummary> = BTreeMap::new();
        for summary in abused {
            for (kind, k) in summary.abuse.iter().flat_map(|a| &a.kinds) {
                abuse.entry(kind.clone()).or_default().merge(k);
            }
        }
        Self {
            runs,
            with_abusers,
            without_abusers,
            window_p99_ratio,
            abuse,
        }
    }

    /// The text printed after the runs.
    pub fn render(&self) -> String {
        let pct = |v: Option<f64>| v.map_or("-".into(), |d| format!("{:.3} %", d * 100.0));
        let ms = |v: Option<f64>| v.map_or("-".into(), |d| format!("{d:.2} ms"));
        let mib = |v: Option<f64>| v.map_or("-".into(), |k| format!("{:.1} MiB", k / 1024.0));
        let mut out = String::from(
            "\n  abuse comparison\n\n  run | abusers | delivered | window p99 | p99 | RSS baseline / peak / after | errors | unexpected closes\n",
        );
        for (n, r) in self.runs.iter().enumerate() {
            let rss = r.rss.as_ref().map_or("-".to_owned(), |m| {
                format!(
                    "{} / {} / {}",
                    mib(Some(m.baseline_kib as f64)),
                    mib(Some(m.peak_kib as f64)),
                    mib(Some(m.after_kib as f64))
                )
            });
            let _ = writeln!(
                out,
                "  {} | {} | {} | {} | {} | {rss} | {} | {}",
                n + 1,
                if r.abusers { "yes" } else { "no" },
                pct(r.delivered),
                ms(r.window_p99_ms),
                ms(r.p99_ms),
                r.errors,
                r.unexpected_closes
            );
        }
        for (name, m) in [
            ("with abusers", &self.with_abusers),
            ("without", &self.without_abusers),
        ] {
            let _ = writeln!(
                out,
                "\n  median {name} ({} runs): delivered {}, window p99 {}, p99 {}, RSS {} / {} / {}",
                m.runs,
                pct(m.delivered),
                ms(m.window_p99_ms),
                ms(m.p99_ms),
                mib(m.rss_baseline_kib),
                mib(m.rss_peak_kib),
                mib(m.rss_after_kib)
            );
        }
        let _ = writeln!(
            out,
            "\n  window p99 ratio (with / without): {}",
            self.window_p99_ratio
                .map_or("-".into(), |r| format!("{r:.2}"))
        );
        for (kind, k) in &self.abuse {
            let _ = writeln!(out, "  {kind}: {}", k.render());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_skip_missing_values() {
        assert_eq!(median([Some(3.0), None, Some(1.0), Some(2.0)]), Some(2.0));
        assert_eq!(median([Some(4.0), Some(1.0)]), Some(2.5));
        assert_eq!(median([None, Some(f64::NAN)]), None);
    }

    fn run(abusers: bool, p99: f64, after: u64) -> RunFigures {
        RunFigures {
            abusers,
            delivered: Some(1.0),
            window_p99_ms: Some(p99),
            p99_ms: Some(p99),
            rss: Some(AbuseRss {
                baseline_kib: 1000,
                peak_kib: 2000,
                after_kib: after,
            }),
            ..RunFigures::default()
        }
    }

    #[test]
    fn halves_are_compared_by_their_medians() {
        let runs = vec![
            run(true, 12.0, 1100),
            run(false, 10.0, 1000),
            run(true, 30.0, 1050),
            run(false, 8.0, 1000),
            run(true, 13.0, 1010),
            run(false, 9.0, 1020),
        ];
        let c = Comparison::new(runs, &[]);
        assert_eq!(c.with_abusers.runs, 3);
        assert_eq!(c.with_abusers.window_p99_ms, Some(13.0));
        assert_eq!(c.without_abusers.window_p99_ms, Some(9.0));
        assert_eq!(c.window_p99_ratio, Some(13.0 / 9.0));
        assert_eq!(c.with_abusers.rss_after_kib, Some(1050.0));
        assert_eq!(c.without_abusers.rss_after_kib, Some(1000.0));
        let text = c.render();
        assert!(
            text.contains("window p99 ratio (with / without): 1.44"),
            "{text}"
        );
    }
}
