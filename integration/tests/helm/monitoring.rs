//! The alert rules and dashboards as operators meet them: every alert
//! links a runbook that exists in docs/operations.md, critical alerts
//! outlast a rolling deploy, edges down and a pool without routers are
//! alerted on; every dashboard query follows the job and instance
//! variables and rates over `$__rate_interval`.

use serde_json::Value;
use switchboard_testkit::manifests;

const ALERTS: &str = "deploy/prometheus/alerts.yml";
const DOCS: &str = "docs/operations.md";

/// GitHub's anchor for a Markdown heading.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// Anchors of the headings under `## Runbooks` (up to the next `## `).
fn runbook_anchors() -> Vec<String> {
    let docs = manifests::read(DOCS);
    let section = docs
        .split("\n## Runbooks\n")
        .nth(1)
        .unwrap_or_else(|| panic!("{DOCS} has no \"## Runbooks\" section"));
    let section = section.split("\n## ").next().unwrap_or_default();
    section
        .lines()
        .filter_map(|l| l.strip_prefix("### "))
        .map(slug)
        .collect()
}

fn rules() -> Vec<Value> {
    manifests::yaml(ALERTS)["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().expect("rules").clone())
        .collect()
}

/// A Prometheus duration in seconds (`30s`, `5m`, `1h`).
fn seconds(duration: &str) -> u64 {
    let (number, unit) = duration.split_at(duration.len() - 1);
    let n: u64 = number
        .parse()
        .unwrap_or_else(|_| panic!("duration {duration}"));
    n * match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => panic!("duration {duration}"),
    }
}

#[test]
fn every_alert_links_its_runbook() {
    let anchors = runbook_anchors();
    let rules = rules();
    assert!(rules.len() >= 10, "{} rules", rules.len());
    for rule in &rules {
        let name = rule["alert"].as_str().expect("alert name");
        let url = rule["annotations"]["runbook_url"]
            .as_str()
            .unwrap_or_else(|| panic!("{name} has no runbook_url"));
        let (page, anchor) = url
            .split_once('#')
            .unwrap_or_else(|| panic!("{name}: {url} has no anchor"));
        assert!(page.ends_with(DOCS), "{name}: {url}");
        assert_eq!(anchor, name.to_lowercase(), "{name}: one anchor per alert");
        assert!(
            anchors.iter().any(|a| a == anchor),
            "{name}: {DOCS} has no runbook heading for #{anchor} (has {anchors:?})"
        );
    }
    assert_eq!(
        anchors.len(),
        rules.len(),
        "one runbook per alert: {anchors:?}"
    );
}

#[test]
fn alerts_outlast_a_deploy_and_cover_edges_and_pools() {
    let rules = rules();
    for rule in &rules {
        let name = rule["alert"].as_str().expect("alert name");
        let severity = rule["labels"]["severity"].as_str().expect("severity");
        let wait = rule["for"].as_str().map(seconds).unwrap_or(0);
        match severity {
            "critical" => assert!(
                wait >= 120,
                "{name}: critical after {wait} s flaps in deploys"
            ),
            "warning" => assert!(wait >= 300, "{name}: warning after {wait} s"),
            "info" => {}
            other => panic!("{name}: severity {other}"),
        }
    }
    let expr = |name: &str| -> String {
        rules
            .iter()
            .find(|r| r["alert"] == name)
            .unwrap_or_else(|| panic!("no alert {name}"))["expr"]
            .as_str()
            .expect("expr")
            .to_owned()
    };
    assert!(expr("SwitchboardEdgeDown").contains(r#"up{job="switchboard-edge"}"#));
    assert!(expr("SwitchboardNoEdges").starts_with("absent("));
    let pool = expr("SwitchboardPoolWithoutRouters");
    assert!(
        pool.contains("by (pool)") && pool.contains("absent("),
        "{pool}"
    );
}

fn dashboards() -> Vec<(String, Value)> {
    manifests::files("deploy/grafana/dashboards", ".json")
        .into_iter()
        .map(|p| (p.display().to_string(), manifests::json(&p)))
        .collect()
}

#[test]
fn dashboards_follow_job_and_instance_and_rate_over_the_rate_interval() {
    let all = dashboards();
    assert!(all.len() >= 3);
    for (path, dashboard) in all {
        let variables: Vec<_> = dashboard["templating"]["list"]
            .as_array()
            .expect("variables")
            .iter()
            .map(|v| {
                (
                    v["name"].as_str().unwrap_or_default(),
                    v["type"].as_str().unwrap_or_default(),
                )
            })
            .collect();
        for wanted in [
            ("job", "query"),
            ("instance", "query"),
            ("filters", "adhoc"),
        ] {
            assert!(
                variables.contains(&wanted),
                "{path}: no {wanted:?} in {variables:?}"
            );
        }
        for panel in dashboard["panels"].as_array().expect("panels") {
            for target in panel["targets"].as_array().into_iter().flatten() {
                let expr = target["expr"].as_str().unwrap_or_default();
                for selector in expr.split("switchboard_").skip(1) {
                    let matchers = selector
                        .split_once('{')
                        .and_then(|(name, rest)| {
                            name.chars()
                                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                                .then(|| rest.split('}').next().unwrap_or_default())
                        })
                        .unwrap_or_else(|| panic!("{path}: a selector without matchers in {expr}"));
                    assert!(
                        matchers.contains(r#"job=~"$job""#)
                            && matchers.contains(r#"instance=~"$instance""#),
                        "{path}: {expr}"
                    );
                }
                assert!(!expr.contains("[1m]"), "{path}: fixed window in {expr}");
                let mut rest = expr;
                while let Some(at) = rest.find("rate(") {
                    rest = &rest[at + "rate(".len()..];
                    let window = rest.split('[').nth(1).and_then(|w| w.split(']').next());
                    assert_eq!(window, Some("$__rate_interval"), "{path}: {expr}");
                }
            }
        }
    }
}

#[test]
fn anchors_are_githubs() {
    assert_eq!(slug("SwitchboardRouterDown"), "switchboardrouterdown");
    assert_eq!(slug("Edge HPA: sockets, memory"), "edge-hpa-sockets-memory");
}
