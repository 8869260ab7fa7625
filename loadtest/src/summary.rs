//! The end-of-run summary: counts, latency trends, server memory and
//! threshold verdicts; printed like k6's and written as JSON (`--out`).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::abuse::AbuseSummary;
use crate::recovery::RecoverySummary;
use crate::rss::RssSummary;
use crate::stats::{Stats, Trend, TrendSummary};
use crate::threshold::{self, Threshold, Verdict};

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Counts {
    pub connections: u64,
    pub connect_failures: u64,
    pub sent: u64,
    pub received: u64,
    pub expected: u64,
    pub errors: u64,
    pub unexpected_closes: u64,
    /// Sockets open when the measured phase ended.
    pub open_at_end: u64,
    /// Sockets the plan opened and meant to hold.
    pub planned_open: u64,
    /// Sockets whose upgrade agreed to permessage-deflate.
    #[serde(default)]
    pub negotiated: u64,
    /// Bytes on the wire of every data message received.
    #[serde(default)]
    pub wire_bytes: u64,
    /// Bytes on the wire of the deliveries (stamped messages), and their
    /// payload bytes once inflated.
    #[serde(default)]
    pub delivered_wire_bytes: u64,
    #[serde(default)]
    pub delivered_bytes: u64,
    /// Deliveries that came compressed.
    #[serde(default)]
    pub compressed: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Summary {
    pub scenario: String,
    pub kind: String,
    pub dialect: String,
    pub targets: Vec<String>,
    pub vus: usize,
    pub processes: usize,
    /// Time spent opening sockets (the ramp).
    pub connect_secs: f64,
    /// Length of the measured phase.
    pub measure_secs: f64,
    /// From the measured phase's start to the last receipt.
    pub delivery_secs: f64,
    pub counts: Counts,
    /// Whether the sockets offered permessage-deflate.
    #[serde(default)]
    pub compression: bool,
    /// CPU time (user + system) the watched server spent from the
    /// measured phase's start to the end of the drain, in seconds.
    #[serde(default)]
    pub server_cpu_secs: Option<f64>,
    /// The same for the harness itself (every process, added up).
    #[serde(default)]
    pub client_cpu_secs: Option<f64>,
    pub trends: BTreeMap<String, TrendSummary>,
    pub rss: Option<RssSummary>,
    /// What the abusers met, when the scenario has an `[abuse]` table.
    #[serde(default)]
    pub abuse: Option<AbuseSummary>,
    /// Drops and returns, when the scenario is of kind `recovery`.
    #[serde(default)]
    pub recovery: Option<RecoverySummary>,
    /// A few error replies, to say what went wrong.
    pub error_samples: Vec<String>,
    pub thresholds: Vec<Verdict>,
}

impl Summary {
    /// Counts and trends from a finished run's stats.
    pub fn collect(&mut self, stats: &Stats) {
        self.counts.connections = Stats::get(&stats.connections);
        self.counts.connect_failures = Stats::get(&stats.connect_failures);
        self.counts.sent = Stats::get(&stats.sent);
        self.counts.received = Stats::get(&stats.received);
        self.counts.expected = Stats::get(&stats.expected);
        self.counts.errors = Stats::get(&stats.errors);
        self.counts.unexpected_closes = Stats::get(&stats.unexpected_closes);
        self.counts.negotiated = Stats::get(&stats.negotiated);
        self.counts.wire_bytes = Stats::get(&stats.wire_bytes);
        self.counts.delivered_wire_bytes = Stats::get(&stats.delivered_wire_bytes);
        self.counts.delivered_bytes = Stats::get(&stats.delivered_bytes);
        self.counts.compressed = Stats::get(&stats.compressed_deliveries);
        for trend in Trend::ALL {
            let t = TrendSummary::from_histogram(&stats.histogram(trend));
            if t.count > 0 {
                self.trends.insert(trend.name().to_owned(), t);
            }
        }
        self.error_samples = stats.error_samples();
    }

    /// Adds another process's summary of the same run.
    pub fn merge(&mut self, other: &Summary) {
        let c = &mut self.counts;
        let o = &other.counts;
        c.connections += o.connections;
        c.connect_failures += o.connect_failures;
        c.sent += o.sent;
        c.received += o.received;
        c.expected += o.expected;
        c.errors += o.errors;
        c.unexpected_closes += o.unexpected_closes;
        c.open_at_end += o.open_at_end;
        c.planned_open += o.planned_open;
        c.negotiated += o.negotiated;
        c.wire_bytes += o.wire_bytes;
        c.delivered_wire_bytes += o.delivered_wire_bytes;
        c.delivered_bytes += o.delivered_bytes;
        c.compressed += o.compressed;
        self.compression |= other.compression;
        // Every process watches the same server: its time is not a share.
        self.server_cpu_secs = match (self.server_cpu_secs, other.server_cpu_secs) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        self.client_cpu_secs = match (self.client_cpu_secs, other.client_cpu_secs) {
            (Some(a), Some(b)) => Some(a + b),
            (a, b) => a.or(b),
        };
        self.connect_secs = self.connect_secs.max(other.connect_secs);
        self.measure_secs = self.measure_secs.max(other.measure_secs);
        self.delivery_secs = self.delivery_secs.max(other.delivery_secs);
        for (name, theirs) in &other.trends {
            let mut h = self
                .trends
                .get(name)
                .map(TrendSummary::to_histogram)
                .unwrap_or_else(crate::stats::histogram);
            let _ = h.add(theirs.to_histogram());
            self.trends
                .insert(name.clone(), TrendSummary::from_histogram(&h));
        }
        match (&mut self.abuse, &other.abuse) {
            (Some(mine), Some(theirs)) => mine.merge(theirs),
            (None, Some(theirs)) => self.abuse = Some(theirs.clone()),
            _ => {}
        }
        match (&mut self.recovery, &other.recovery) {
            (Some(mine), Some(theirs)) => mine.merge(theirs),
            (None, Some(theirs)) => self.recovery = Some(theirs.clone()),
            _ => {}
        }
        for sample in &other.error_samples {
            if self.error_samples.len() < 5 {
                self.error_samples.push(sample.clone());
            }
        }
    }

    /// A metric by its threshold name; `None` when the run did not make it.
    pub fn metric(&self, name: &str) -> Option<f64> {
        let c = &self.counts;
        let per = |n: u64, secs: f64| (secs > 0.0).then(|| n as f64 / secs);
        Some(match name {
            "errors" => {
                let attempts = c.sent + c.connections + c.connect_failures;
                (c.errors + c.connect_failures) as f64 / attempts.max(1) as f64
            }
            "delivered" => return (c.expected > 0).then(|| c.received as f64 / c.expected as f64),
            "held" => {
                return (c.planned_open > 0).then(|| c.open_at_end as f64 / c.planned_open as f64);
            }
            "dropped" => c.planned_open.saturating_sub(c.open_at_end) as f64,
            "rss_drift" => return self.rss.as_ref()?.drift,
            "rss_per_socket_kib" => return self.rss.as_ref()?.per_socket_kib,
            "rss_after_abuse" => return self.abuse.as_ref()?.rss.as_ref()?.growth(),
            "error_count" => c.errors as f64,
            "unexpected_closes" => c.unexpected_closes as f64,
            "connections" => c.connections as f64,
            "connect_failures" => c.connect_failures as f64,
            "connect_rate" => return per(c.connections, self.connect_secs),
            "sent" => c.sent as f64,
            "received" => c.received as f64,
            "sent_per_s" => return per(c.sent, self.measure_secs),
            "deliveries_per_s" => return per(c.received, self.delivery_secs),
            "negotiated" => {
                return (c.connections > 0).then(|| c.negotiated as f64 / c.connections as f64);
            }
            "wire_bytes_per_delivery" => {
                return (c.received > 0).then(|| c.delivered_wire_bytes as f64 / c.received as f64);
            }
            "bytes_per_delivery" => {
                return (c.received > 0).then(|| c.delivered_bytes as f64 / c.received as f64);
            }
            "compressed" => {
                return (c.received > 0).then(|| c.compressed as f64 / c.received as f64);
            }
            "server_cpu_us_per_delivery" => {
                let secs = self.server_cpu_secs?;
                return (c.received > 0).then(|| secs * 1e6 / c.received as f64);
            }
            "recovered" => return self.recovery.as_ref()?.recovered_ratio(),
            "replayed" => return self.recovery.as_ref()?.replayed_ratio(),
            "reconnects" => self.recovery.as_ref()?.reconnects as f64,
            "reconnect_failures" => self.recovery.as_ref()?.reconnect_failures as f64,
            "missed" => self.recovery.as_ref()?.missed as f64,
            "gaps" => self.recovery.as_ref()?.gaps as f64,
            "duplicates" => self.recovery.as_ref()?.duplicates as f64,
            "client_cpu_us_per_delivery" => {
                let secs = self.client_cpu_secs?;
                return (c.received > 0).then(|| secs * 1e6 / c.received as f64);
            }
            _ => {
                let (trend, stat) = name.split_once('.').unwrap_or(("delivery", name));
                let stat = stat.strip_suffix("_ms")?;
                return self.trends.get(trend)?.stat(stat);
            }
        })
    }

    /// Evaluates `thresholds` and keeps the verdicts; true when all pass.
    pub fn judge(&mut self, thresholds: &[Threshold]) -> bool {
        self.thresholds = threshold::evaluate(thresholds, |m| self.metric(m));
        self.thresholds.iter().all(|v| v.passed)
    }

    /// The k6-like text summary.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let line = |out: &mut String, name: &str, value: String| {
            let dots = ".".repeat(34usize.saturating_sub(name.len()));
            let _ = writeln!(out, "     {name}{dots}: {value}");
        };
        let c = &self.counts;
        let _ = writeln!(
            out,
            "\n  scenario: {} ({} over {}, {} vus{})\n",
            self.scenario,
            self.kind,
            self.dialect,
            self.vus,
            if self.processes > 1 {
                format!(", {} processes", self.processes)
            } else {
                String::new()
            }
        );
        let _ = writeln!(out, "  targets: {}\n", self.targets.join(", "));
        let rate = |v: Option<f64>| v.map_or("-".to_owned(), |r| format!("{r:.1}/s"));
        line(
            &mut out,
            "ws_sessions",
            format!(
                "{} opened, {} failed, {} in {:.2}s",
                c.connections,
                c.connect_failures,
                rate(self.metric("connect_rate")),
                self.connect_secs
            ),
        );
        if c.planned_open > 0 {
            line(
                &mut out,
                "ws_sessions_held",
                format!("{}/{} at the end", c.open_at_end, c.planned_open),
            );
        }
        line(
            &mut out,
            "ws_unexpected_closes",
            c.unexpected_closes.to_string(),
        );
        line(
            &mut out,
            "ws_msgs_sent",
            format!("{} {}", c.sent, rate(self.metric("sent_per_s"))),
        );
        let delivered = self.metric("delivered").map_or(String::new(), |d| {
            format!(" ({:.3}% of {} expected)", d * 100.0, c.expected)
        });
        line(
            &mut out,
            "ws_msgs_received",
            format!(
                "{} {}{delivered}",
                c.received,
                rate(self.metric("deliveries_per_s"))
            ),
        );
        if self.compression {
            line(
                &mut out,
                "ws_deflate_negotiated",
                format!("{} of {} sockets", c.negotiated, c.connections),
            );
        }
        if c.received > 0 && c.delivered_wire_bytes > 0 {
            let per = |n: u64| n as f64 / c.received as f64;
            line(
                &mut out,
                "ws_bytes_per_delivery",
                format!(
                    "{:.1} on the wire, {:.1} read ({:.1}% compressed)",
                    per(c.delivered_wire_bytes),
                    per(c.delivered_bytes),
                    per(c.compressed) * 100.0
                ),
            );
        }
        line(&mut out, "ws_wire_bytes_received", c.wire_bytes.to_string());
        for (name, secs, metric) in [
            (
                "server_cpu",
                self.server_cpu_secs,
                "server_cpu_us_per_delivery",
            ),
            (
                "harness_cpu",
                self.client_cpu_secs,
                "client_cpu_us_per_delivery",
            ),
        ] {
            if let Some(secs) = secs {
                let per = self
                    .metric(metric)
                    .map_or(String::new(), |us| format!(", {us:.2} µs per delivery"));
                line(&mut out, name, format!("{secs:.2} s{per}"));
            }
        }
        line(
            &mut out,
            "errors",
            format!(
                "{} {:.3}%",
                c.errors,
                self.metric("errors").unwrap_or(0.0) * 100.0
            ),
        );
        for (name, t) in &self.trends {
            line(
                &mut out,
                &format!("{name}_latency"),
                format!(
                    "avg={:.2}ms min={:.2}ms med={:.2}ms p(90)={:.2}ms p(95)={:.2}ms p(99)={:.2}ms max={:.2}ms n={}",
                    t.avg_ms, t.min_ms, t.med_ms, t.p90_ms, t.p95_ms, t.p99_ms, t.max_ms, t.count
                ),
            );
        }
        if let Some(rss) = &self.rss {
            let per = rss
                .per_socket_kib
                .map_or(String::new(), |k| format!(", {k:.2} KiB per socket"));
            let drift = rss
                .drift
                .map_or(String::new(), |d| format!(", drift {:.2}%", d * 100.0));
            let marks: Vec<String> = rss
                .marks
                .iter()
                .map(|(m, k)| format!("{m} {:.1} MiB", *k as f64 / 1024.0))
                .collect();
            line(
                &mut out,
                "server_rss",
                format!("{}{per}{drift} (pid {})", marks.join(", "), rss.pid),
            );
        }
        if let Some(abuse) = &self.abuse {
            line(
                &mut out,
                "abuse_window",
                format!(
                    "{:.1}s to {:.1}s of the measured phase",
                    abuse.start_secs, abuse.stop_secs
                ),
            );
            for (kind, k) in &abuse.kinds {
                line(&mut out, &format!("abuse_{kind}"), k.render());
            }
            for (series, n) in &abuse.server {
                line(&mut out, "abuse_server_counter", format!("{series} +{n}"));
            }
            if let Some(rss) = &abuse.rss {
                let growth = rss
                    .growth()
                    .map_or(String::new(), |g| format!(" ({:+.2}%)", g * 100.0));
                line(
                    &mut out,
                    "abuse_server_rss",
                    format!(
                        "baseline {:.1} MiB, peak {:.1} MiB, after {:.1} MiB{growth}",
                        rss.baseline_kib as f64 / 1024.0,
                        rss.peak_kib as f64 / 1024.0,
                        rss.after_kib as f64 / 1024.0
                    ),
                );
            }
        }
        if let Some(r) = &self.recovery {
            let ratio = |v: Option<f64>| v.map_or("-".to_owned(), |r| format!("{:.2}%", r * 100.0));
            line(
                &mut out,
                "recovery_reconnects",
                format!(
                    "{} of {} dropped, {} failed, {} without a position",
                    r.reconnects, r.dropped, r.reconnect_failures, r.unpositioned
                ),
            );
            line(
                &mut out,
                "recovery_recovered",
                format!(
                    "{} of {} ({}), {} answers",
                    r.recovered,
                    r.reconnects,
                    ratio(r.recovered_ratio()),
                    r.answers
                ),
            );
            line(
                &mut out,
                "recovery_messages",
                format!(
                    "{} missed ({} by the server's count), {} replayed ({})",
                    r.missed,
                    r.server_missed,
                    r.replayed,
                    ratio(r.replayed_ratio())
                ),
            );
            line(
                &mut out,
                "recovery_offsets",
                format!(
                    "{} gaps, {} duplicates, {} epoch changes",
                    r.gaps, r.duplicates, r.epoch_changes
                ),
            );
        }
        for sample in &self.error_samples {
            let _ = writeln!(out, "     error sample: {sample}");
        }
        if !self.thresholds.is_empty() {
            let _ = writeln!(out);
            for v in &self.thresholds {
                let mark = if v.passed { "✓" } else { "✗" };
                let actual = v
                    .actual
                    .map_or("not measured".to_owned(), |a| format!("{a:.4}"));
                let _ = writeln!(out, "   {mark} {} (actual {actual})", v.threshold);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(received: u64, latencies: &[u64]) -> Summary {
        let stats = Stats::new();
        Stats::add(&stats.sent, 100);
        Stats::add(&stats.connections, 10);
        Stats::add(&stats.expected, 1000);
        Stats::add(&stats.received, received);
        for (i, l) in latencies.iter().enumerate() {
            stats.record(Trend::Delivery, i, *l);
        }
        let mut s = Summary {
            measure_secs: 10.0,
            delivery_secs: 10.0,
            connect_secs: 2.0,
            ..Summary::default()
        };
        s.collect(&stats);
        s
    }

    #[test]
    fn metrics_come_from_counts_and_trends() {
        let s = summary(990, &[1000, 2000, 3000]);
        assert_eq!(s.metric("delivered"), Some(0.99));
        assert_eq!(s.metric("deliveries_per_s"), Some(99.0));
        assert_eq!(s.metric("connect_rate"), Some(5.0));
        assert_eq!(s.metric("errors"), Some(0.0));
        // Three significant digits: values come back within 0.1 %.
        assert!((s.metric("max_ms").unwrap() - 3.0).abs() < 0.005);
        assert!((s.metric("delivery.min_ms").unwrap() - 1.0).abs() < 0.002);
        assert_eq!(s.metric("receipt.p99_ms"), None);
        assert_eq!(s.metric("held"), None);
        assert_eq!(s.metric("rss_drift"), None);
        assert_eq!(s.metric("recovered"), None, "no recovery run");
        assert_eq!(s.metric("gaps"), None);
    }

    #[test]
    fn recovery_figures_are_metrics_and_merge() {
        let mut a = summary(1000, &[1000]);
        a.recovery = Some(RecoverySummary {
            dropped: 2,
            reconnects: 2,
            recovered: 1,
            missed: 80,
            replayed: 80,
            duplicates: 1,
            ..RecoverySummary::default()
        });
        assert_eq!(a.metric("recovered"), Some(0.5));
        assert_eq!(a.metric("replayed"), Some(1.0));
        assert_eq!(a.metric("duplicates"), Some(1.0));
        assert_eq!(a.metric("gaps"), Some(0.0));
        let mut b = summary(1000, &[1000]);
        b.recovery = a.recovery.clone().map(|r| RecoverySummary {
            recovered: 2,
            replayed: 40,
            ..r
        });
        a.merge(&b);
        assert_eq!(a.metric("recovered"), Some(0.75));
        assert_eq!(a.metric("replayed"), Some(0.75));
        let text = a.render();
        assert!(text.contains("recovery_recovered"), "{text}");
        assert!(text.contains("2 duplicates"), "{text}");
    }

    #[test]
    fn merging_adds_counts_and_histograms() {
        let mut a = summary(500, &[1000; 99]);
        let b = summary(490, &[9000]);
        a.merge(&b);
        assert_eq!(a.counts.received, 990);
        assert_eq!(a.counts.expected, 2000);
        let t = &a.trends["delivery"];
        assert_eq!(t.count, 100);
        assert!((t.max_ms - 9.0).abs() < 0.01);
        assert!((t.p99_ms - 1.0).abs() < 0.01);
    }

    #[test]
    fn judging_and_rendering() {
        let mut s = summary(1000, &[500, 800]);
        let rules: Vec<Threshold> = [
            "p99_ms < 10",
            "delivered >= 100%",
            "errors < 0.1%",
            "held >= 99%",
        ]
        .iter()
        .map(|t| t.parse().unwrap())
        .collect();
        assert!(!s.judge(&rules), "held was never measured");
        assert!(s.judge(&rules[..3]));
        let text = s.render();
        assert!(text.contains("ws_msgs_received"), "{text}");
        assert!(text.contains("✓ p99_ms < 10"), "{text}");
        let json = serde_json::to_string(&s).unwrap();
        let back: Summary = serde_json::from_str(&json).unwrap();
        assert_eq!(back.counts, s.counts);
    }
}
