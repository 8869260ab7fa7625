//! The deployment files speak of metrics that exist: every `switchboard_*`
//! name in the Grafana dashboards and the Prometheus alert rules (and the
//! Helm chart's copy of them) is exported by a running edge and router,
//! after some traffic, and every label they group or filter by is one
//! those metrics carry or the scrape adds. The compose file parses, names
//! files that exist, ships no fixed secret (each comes from the `.env` the
//! user creates, which `.env.example` lists) and runs NATS with the shipped
//! configuration, whose users' passwords it passes from the same `.env`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use switchboard_testkit::RedisServer;
use switchboard_testkit::http;
use switchboard_testkit::manifests;
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

/// Label names of the series in a Prometheus text exposition. Values are
/// quoted and may hold `,` or `}` (routes do), so they are skipped as strings.
fn exported_labels(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((_, mut rest)) = line.split_once('{') else {
            continue;
        };
        while let Some((name, after)) = rest.split_once("=\"") {
            names.insert(name.trim_start_matches(',').trim().to_owned());
            let mut escaped = false;
            let close = after.char_indices().find(|&(_, c)| {
                let found = c == '"' && !escaped;
                escaped = c == '\\' && !escaped;
                found
            });
            let Some((at, _)) = close else { break };
            rest = &after[at + 1..];
            if rest.starts_with('}') {
                break;
            }
        }
    }
    names
}

/// Labels a PromQL expression groups by (`by (…)`) or selects on (`{…}`).
fn used_labels(expr: &str) -> BTreeSet<String> {
    let mut labels = BTreeSet::new();
    let mut rest = expr;
    while let Some(at) = rest.find(" by (") {
        let inner = &rest[at + " by (".len()..];
        let end = inner.find(')').unwrap_or(inner.len());
        labels.extend(inner[..end].split(',').map(|l| l.trim().to_owned()));
        rest = &inner[end..];
    }
    let mut rest = expr;
    while let Some(at) = rest.find('{') {
        let inner = &rest[at + 1..];
        let end = inner.find('}').unwrap_or(inner.len());
        for matcher in inner[..end].split(',') {
            let name = matcher.split(['=', '!']).next().unwrap_or_default().trim();
            labels.insert(name.to_owned());
        }
        rest = &inner[end..];
    }
    if let Some(args) = expr.strip_prefix("label_values(") {
        let label = args
            .trim_end_matches(')')
            .rsplit(',')
            .next()
            .unwrap_or_default();
        labels.insert(label.trim().to_owned());
    }
    labels.retain(|l| !l.is_empty());
    labels
}

/// Every PromQL expression and variable query in a dashboard.
fn dashboard_queries(dashboard: &Value, out: &mut Vec<String>) {
    match dashboard {
        Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("expr" | "definition", Value::String(q)) => out.push(q.clone()),
                    _ => dashboard_queries(value, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| dashboard_queries(v, out)),
        _ => {}
    }
}

/// The alert rule files: the one Prometheus loads and the chart's copy.
const ALERT_FILES: [&str; 2] = [
    "deploy/prometheus/alerts.yml",
    "helm/switchboard/files/alerts.yml",
];

fn alert_queries() -> Vec<String> {
    let mut out = Vec::new();
    for file in ALERT_FILES {
        let rules = manifests::yaml(file);
        for group in rules["groups"].as_array().expect("groups") {
            for rule in group["rules"].as_array().expect("rules") {
                out.push(rule["expr"].as_str().expect("expr").to_owned());
            }
        }
    }
    out
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
    // Labels the scrape adds: instance and job always, pool from the
    // chart's ServiceMonitor (the router pod's pool) or the compose scrape config.
    let mut labels = BTreeSet::from(["instance", "job", "pool"].map(str::to_owned));
    for admin in ["edge-admin", "router-admin"] {
        let text =
            String::from_utf8_lossy(&http::get(edge.addr(admin), "/metrics", &[]).await.body)
                .into_owned();
        available.extend(exported(&text));
        labels.extend(exported_labels(&text));
    }
    let mut wanted = BTreeSet::new();
    for file in ALERT_FILES {
        wanted.extend(referenced(&manifests::read(file)));
    }
    let mut queries = alert_queries();
    for (_, text) in dashboards() {
        wanted.extend(referenced(&text));
        let dashboard: Value = serde_json::from_str(&text).expect("dashboard JSON");
        dashboard_queries(&dashboard, &mut queries);
    }
    assert!(wanted.len() >= 25, "the files name metrics: {wanted:?}");
    let missing: Vec<_> = wanted.difference(&available).collect();
    assert!(missing.is_empty(), "named but not exported: {missing:?}");

    assert!(queries.len() >= 60, "queries found: {}", queries.len());
    for query in &queries {
        let unknown: Vec<_> = used_labels(query)
            .into_iter()
            .filter(|l| !labels.contains(l))
            .collect();
        assert!(
            unknown.is_empty(),
            "`{query}` uses labels no metric has: {unknown:?}"
        );
    }
}

#[test]
fn compose_file_parses_and_names_files_that_exist() {
    let compose = manifests::yaml("deploy/compose.yaml");
    let services = compose["services"].as_object().expect("services");
    for name in [
        "redis",
        "nats",
        "router-1",
        "router-2",
        "edge-1",
        "edge-2",
        "prometheus",
        "grafana",
    ] {
        assert!(services.contains_key(name), "compose lacks {name}");
    }
    for (name, service) in services {
        // Merge keys (`<<: *router`) resolved: every Switchboard service builds or pulls.
        assert!(
            service["image"].is_string() || service["build"].is_object(),
            "{name} has neither image nor build"
        );
        if let Some(dockerfile) = service["build"]["dockerfile"].as_str() {
            assert!(
                manifests::repo_root().join(dockerfile).is_file(),
                "{name}: {dockerfile}"
            );
        }
        for volume in service["volumes"].as_array().into_iter().flatten() {
            let source = volume
                .as_str()
                .and_then(|v| v.split(':').next())
                .unwrap_or_default();
            assert!(
                deploy().join(source).exists(),
                "{name} mounts missing {source}"
            );
        }
    }
    for router in ["router-1", "router-2"] {
        assert_eq!(
            services[router]["environment"]["SWITCHBOARD_ROUTER_ID"], router,
            "environment merged from the shared block and the service's own"
        );
        assert!(services[router]["environment"]["SWITCHBOARD_NATS_URL"].is_string());
    }
    let prometheus = manifests::yaml("deploy/prometheus/prometheus.yml");
    assert!(
        prometheus["scrape_configs"]
            .as_array()
            .is_some_and(|c| c.len() == 2)
    );
}

/// The `${NAME:?message}` references of `text`: variables that must be set.
fn required_vars(text: &str) -> BTreeSet<String> {
    text.split("${")
        .skip(1)
        .filter_map(|rest| rest.split_once(":?"))
        .map(|(name, _)| name.to_owned())
        .collect()
}

/// The `$NAME` references of a nats-server config that it does not define
/// itself (`NAME = …`): variables it reads from the environment.
fn nats_config_vars(text: &str) -> BTreeSet<String> {
    let defined: BTreeSet<&str> = text
        .lines()
        .filter_map(|line| line.trim().split_once(" = "))
        .map(|(name, _)| name)
        .collect();
    text.lines()
        .filter(|line| !line.trim_start().starts_with('#'))
        .flat_map(|line| line.split('$').skip(1))
        .map(|rest| {
            rest.chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect::<String>()
        })
        .filter(|name| !name.is_empty() && !defined.contains(name.as_str()))
        .collect()
}

#[test]
fn compose_takes_every_secret_from_the_env_file() {
    let text = manifests::read("deploy/compose.yaml");
    assert!(!text.contains("change-me"), "a fixed secret is back");
    let compose = manifests::yaml("deploy/compose.yaml");
    let services = &compose["services"];
    for process in ["router-1", "router-2", "edge-1", "edge-2"] {
        let env = &services[process]["environment"];
        for secret in [
            "SWITCHBOARD_JWT_SECRET",
            "SWITCHBOARD_API_KEY",
            "SWITCHBOARD_CLUSTER_SECRET",
        ] {
            let value = env[secret].as_str().unwrap_or_default();
            assert!(
                value.starts_with(&format!("${{{secret}:?")),
                "{process}: {secret} must be required from .env, is {value:?}"
            );
        }
        let url = env["SWITCHBOARD_NATS_URL"].as_str().unwrap_or_default();
        assert!(
            url.starts_with("nats://switchboard:${SWITCHBOARD_NATS_PASSWORD:?"),
            "{process} logs in to NATS as the cluster user: {url}"
        );
    }
    // NATS runs the shipped configuration and gets every password it reads.
    let nats = &services["nats"];
    let mounted = nats["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .find(|v| v.starts_with("./nats/nats-server.conf:"))
        .expect("the nats service mounts nats/nats-server.conf");
    let target = mounted.split(':').nth(1).unwrap_or_default();
    let command: Vec<&str> = nats["command"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(command, ["--config", target], "nats runs the mounted file");
    let wanted = nats_config_vars(&manifests::read("deploy/nats/nats-server.conf"));
    assert_eq!(
        wanted,
        BTreeSet::from(
            [
                "SWITCHBOARD_NATS_PASSWORD",
                "SWITCHBOARD_NATS_BACKEND_DEFAULT_PASSWORD",
                "SWITCHBOARD_NATS_BACKEND_ACME_PASSWORD",
            ]
            .map(str::to_owned)
        ),
        "the config's passwords (and only those) come from the environment"
    );
    for var in &wanted {
        let value = nats["environment"][var].as_str().unwrap_or_default();
        assert!(
            value.starts_with(&format!("${{{var}:?")),
            "nats: {var} must be required from .env, is {value:?}"
        );
    }
    // The example lists every variable compose requires, with no value.
    let example = manifests::read("deploy/.env.example");
    let listed: BTreeSet<String> = example
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(name, value)| {
            assert!(value.is_empty(), "{name} has a value in .env.example");
            name.to_owned()
        })
        .collect();
    assert_eq!(listed, required_vars(&text));
}

#[test]
fn name_extraction() {
    assert_eq!(
        required_vars("a: ${X:?set X} ${Y:-d} nats://u:${P:?p}@h"),
        BTreeSet::from(["X".to_owned(), "P".to_owned()])
    );
    assert_eq!(
        nats_config_vars("# $NOT\nOWN = {a: 1}\npassword: $PW_1\nx: {p: $B, q: $OWN}\n"),
        BTreeSet::from(["PW_1".to_owned(), "B".to_owned()])
    );
    let text = r#"rate(switchboard_api_request_seconds_bucket[5m]) job="switchboard-router" x_switchboard_y"#;
    assert_eq!(
        referenced(text),
        BTreeSet::from(["switchboard_api_request_seconds".to_owned()])
    );
    assert_eq!(
        exported("# HELP x\nswitchboard_a{b=\"c\"} 1\nswitchboard_h_bucket{le=\"1\"} 0\n"),
        BTreeSet::from(["switchboard_a".to_owned(), "switchboard_h".to_owned()])
    );
    assert_eq!(
        exported_labels(
            "switchboard_a{b=\"c,}\\\"x\",d=\"{e}\"} 1\nswitchboard_f 2\nswitchboard_g{h=\"\"} 0\n"
        ),
        BTreeSet::from(["b", "d", "h"].map(str::to_owned))
    );
    assert_eq!(
        used_labels("label_values(switchboard_router_edges, pool)"),
        BTreeSet::from(["pool".to_owned()])
    );
    assert_eq!(
        used_labels(
            r#"histogram_quantile(0.99, sum by (pool, le) (rate(x_bucket{pool=~"$pool",status!="2"}[5m])))"#
        ),
        BTreeSet::from(["le", "pool", "status"].map(str::to_owned))
    );
}
