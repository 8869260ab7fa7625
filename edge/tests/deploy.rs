//! The deployment files speak of metrics that exist: every `switchboard_*`
//! name in the Grafana dashboards and the Prometheus alert rules is
//! exported by a running edge and router, after some traffic.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use switchboard_testkit::RedisServer;
use switchboard_testkit::http;
use switchboard_testkit::switchboard::{self, join_group, token};

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// `switchboard_*` names in `text`, histogram suffixes removed.
fn referenced(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(found) = text[i..].find("switchboard_") {
        let start = i + found;
        let end = start
            + text[start..]
                .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
                .unwrap_or(text.len() - start);
        // Skip words that merely contain the prefix (e.g. job names).
        let preceded = start > 0
            && (bytes[start - 1].is_ascii_alphanumeric()
                || matches!(bytes[start - 1], b'-' | b'_'));
        let name = &text[start..end];
        // `switchboard_*` in prose names no metric.
        if !preceded && name.len() > "switchboard_".len() {
            names.insert(base_name(name).to_owned());
        }
        i = end.max(start + 1);
    }
    names
}

fn base_name(name: &str) -> &str {
    ["_bucket", "_sum", "_count"]
        .iter()
        .find_map(|suffix| name.strip_suffix(suffix))
        .unwrap_or(name)
}

/// Base names of the series in a Prometheus text exposition.
fn exported(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(|name| base_name(name).to_owned())
        .collect()
}

fn dashboards() -> Vec<(PathBuf, String)> {
    let dir = deploy().join("grafana/dashboards");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("dashboards folder")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            (p, text)
        })
        .collect()
}

#[test]
fn dashboards_parse_and_every_panel_has_a_query() {
    let all = dashboards();
    assert!(!all.is_empty());
    for (path, text) in all {
        let dashboard: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
        assert!(dashboard["uid"].is_string(), "{}", path.display());
        let panels = dashboard["panels"].as_array().expect("panels");
        assert!(!panels.is_empty());
        for panel in panels {
            let expr = panel["targets"][0]["expr"].as_str().unwrap_or_default();
            assert!(
                expr.contains("switchboard_"),
                "{}: {}",
                path.display(),
                panel["title"]
            );
        }
    }
}

#[tokio::test]
async fn every_metric_in_dashboards_and_alerts_is_exported() {
    let redis = RedisServer::start().await;
    let edge = switchboard::standalone(&["--redis-url", &redis.url()]);
    switchboard::wait_ready(edge.addr("edge-admin")).await;
    // Traffic, so histograms have samples.
    let mut ws = join_group(edge.addr("edge"), "t1", "room", "alice", None).await;
    let service = format!("Bearer {}", token("backend", "service", "t1", None));
    let reply = http::post_json(
        edge.addr("router-api"),
        "/api/v1/groups/room/messages",
        &[("authorization", &service)],
        &json!({"msg_type":"msg","target":"group","msg":"hi"}),
    )
    .await;
    assert_eq!(reply.json()["delivered"], 1);
    ws.recv_json_until(|m| m["msg"] == "hi").await;

    let mut available = BTreeSet::new();
    for admin in ["edge-admin", "router-admin"] {
        let text =
            String::from_utf8_lossy(&http::get(edge.addr(admin), "/metrics", &[]).await.body)
                .into_owned();
        available.extend(exported(&text));
    }
    let mut wanted =
        referenced(&std::fs::read_to_string(deploy().join("prometheus/alerts.yml")).unwrap());
    for (_, text) in dashboards() {
        wanted.extend(referenced(&text));
    }
    assert!(wanted.len() >= 15, "the files name metrics: {wanted:?}");
    let missing: Vec<_> = wanted.difference(&available).collect();
    assert!(missing.is_empty(), "named but not exported: {missing:?}");
}

#[test]
fn name_extraction() {
    let text = r#"rate(switchboard_api_request_seconds_bucket[5m]) job="switchboard-router" x_switchboard_y"#;
    assert_eq!(
        referenced(text),
        BTreeSet::from(["switchboard_api_request_seconds".to_owned()])
    );
    assert_eq!(
        exported("# HELP x\nswitchboard_a{b=\"c\"} 1\nswitchboard_h_bucket{le=\"1\"} 0\n"),
        BTreeSet::from(["switchboard_a".to_owned(), "switchboard_h".to_owned()])
    );
}
