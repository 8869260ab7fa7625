//! The edge's own count of what it did to its sockets, read from its
//! admin `/metrics` page before the abusers join and at the end of the
//! run: closes by code, slow-consumer closes, rate-limited messages,
//! refused unauthenticated sockets and upgrades. A socket that never reads
//! may never see its 1013 close frame; the edge's counter still does.

use std::collections::BTreeMap;

use crate::client::Target;
use crate::http::HttpClient;

/// Counters whose change over the abuse window is reported.
const COUNTERS: [&str; 5] = [
    "switchboard_edge_closes_total",
    "switchboard_edge_slow_consumer_closes_total",
    "switchboard_edge_rate_limited_total",
    "switchboard_edge_unauthenticated_refused_total",
    "switchboard_edge_rejected_upgrades_total",
];

/// Series (`name{labels}`) and their values.
pub type Counters = BTreeMap<String, f64>;

/// Why the metrics page could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ScrapeError {
    #[error("metrics URL {0}: {1}")]
    Url(String, String),
    #[error("GET {0}: {1}")]
    Get(String, String),
}

/// The counters of [`COUNTERS`] on a Prometheus text page; series that
/// differ only in the `dialect` label are added up, so closes read by code.
pub fn parse(page: &str) -> Counters {
    let mut out = Counters::new();
    for line in page.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.trim().parse::<f64>() else {
            continue;
        };
        let name = series.split('{').next().unwrap_or(series);
        if !COUNTERS.contains(&name) {
            continue;
        }
        let labels: Vec<&str> = series
            .strip_prefix(name)
            .and_then(|l| l.strip_prefix('{'))
            .and_then(|l| l.strip_suffix('}'))
            .map(|l| {
                l.split(',')
                    .filter(|kv| !kv.starts_with("dialect="))
                    .collect()
            })
            .unwrap_or_default();
        let key = if labels.is_empty() {
            name.to_owned()
        } else {
            format!("{name}{{{}}}", labels.join(","))
        };
        *out.entry(key).or_default() += value;
    }
    out
}

/// What grew from `before` to `after` (series that did not are left out).
pub fn growth(before: &Counters, after: &Counters) -> BTreeMap<String, u64> {
    after
        .iter()
        .filter_map(|(series, now)| {
            let grew = now - before.get(series).copied().unwrap_or(0.0);
            (grew >= 1.0).then(|| (series.clone(), grew.round() as u64))
        })
        .collect()
}

/// Reads the page at `url` (`http://host:port/metrics`).
pub async fn scrape(url: &str) -> Result<Counters, ScrapeError> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| ScrapeError::Url(url.to_owned(), "not http://".into()))?;
    let (host, path) = match rest.find('/') {
        Some(at) => (&rest[..at], &rest[at..]),
        None => (rest, "/metrics"),
    };
    let target = Target::parse(&format!("http://{host}"))
        .map_err(|e| ScrapeError::Url(url.to_owned(), e.to_string()))?;
    let get = |e: String| ScrapeError::Get(url.to_owned(), e);
    let mut http = HttpClient::connect(&target)
        .await
        .map_err(|e| get(e.to_string()))?;
    let answer = http
        .send("GET", path, &[], bytes::Bytes::new())
        .await
        .map_err(|e| get(e.to_string()))?;
    if answer.status != 200 {
        return Err(get(format!("HTTP {}", answer.status)));
    }
    Ok(parse(&String::from_utf8_lossy(&answer.body)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = "# TYPE switchboard_edge_closes_total counter\n\
        switchboard_edge_closes_total{code=\"1009\"} 4\n\
        switchboard_edge_closes_total{code=\"1013\"} 1\n\
        switchboard_edge_slow_consumer_closes_total{dialect=\"group\"} 1\n\
        switchboard_edge_slow_consumer_closes_total{dialect=\"iot\"} 2\n\
        switchboard_edge_rate_limited_total 7\n\
        switchboard_edge_connections{dialect=\"group\"} 12\n";

    #[test]
    fn reads_the_counters_it_reports_and_adds_dialects_up() {
        let c = parse(PAGE);
        assert_eq!(c["switchboard_edge_closes_total{code=\"1009\"}"], 4.0);
        assert_eq!(c["switchboard_edge_slow_consumer_closes_total"], 3.0);
        assert_eq!(c["switchboard_edge_rate_limited_total"], 7.0);
        assert!(!c.keys().any(|k| k.contains("edge_connections{")));
    }

    #[test]
    fn growth_leaves_out_what_stayed() {
        let before = parse(PAGE);
        let mut after = before.clone();
        *after
            .get_mut("switchboard_edge_closes_total{code=\"1009\"}")
            .unwrap() += 3.0;
        after.insert("switchboard_edge_closes_total{code=\"1003\"}".into(), 2.0);
        let g = growth(&before, &after);
        assert_eq!(g.len(), 2);
        assert_eq!(g["switchboard_edge_closes_total{code=\"1009\"}"], 3);
        assert_eq!(g["switchboard_edge_closes_total{code=\"1003\"}"], 2);
    }
}
