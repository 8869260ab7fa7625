//! The Helm chart without Kubernetes: `values.schema.json` accepts the
//! defaults and every `ci/*-values.yaml` example (merged over the defaults
//! as Helm does) and refuses broken values; the settings and environment
//! variables the chart passes are ones the binaries know; the chart's
//! copies of the dashboards and alert rules equal `deploy/`'s.
//!
//! With a `helm` binary (skipped without one):
//! - `render`: the chart rendered by `helm template`, read back as data;
//! - `trust`: NetworkPolicies, the cluster secret, mutual TLS, existing
//!   Secrets in the rendered objects;
//! - `nats_users`: the in-cluster NATS's users and permissions against a
//!   real nats-server;
//! - `gitops`: secrets stable under `helm template` (or refused), checksums
//!   per component, topology spread, the edge HPA, the in-cluster backends.
//!
//! Without Kubernetes or helm: `monitoring` (runbooks, alert durations,
//! dashboard variables). With promtool, kubernetes-validate and hadolint
//! (each skipped without): `tools`.

#[path = "helm/gitops.rs"]
mod gitops;
#[path = "helm/monitoring.rs"]
mod monitoring;
#[path = "helm/nats_users.rs"]
mod nats_users;
#[path = "helm/render.rs"]
mod render;
#[path = "helm/tools.rs"]
mod tools;
#[path = "helm/trust.rs"]
mod trust;

use std::collections::BTreeSet;
use std::ffi::OsString;

use clap::CommandFactory;
use serde_json::{Value, json};
use switchboard_common::config;
use switchboard_edge::EdgeSettings;
use switchboard_router::RouterSettings;
use switchboard_testkit::manifests::{self, merge_values, schema_errors};

const CHART: &str = "helm/switchboard";

fn schema() -> Value {
    manifests::json(format!("{CHART}/values.schema.json"))
}

fn defaults() -> Value {
    manifests::yaml(format!("{CHART}/values.yaml"))
}

/// `(file name, defaults merged with the example)` for each CI example.
fn ci_examples() -> Vec<(String, Value)> {
    let defaults = defaults();
    manifests::files(format!("{CHART}/ci"), "-values.yaml")
        .into_iter()
        .map(|path| {
            let overlay = manifests::yaml(&path);
            (
                path.display().to_string(),
                merge_values(&defaults, &overlay),
            )
        })
        .collect()
}

#[test]
fn chart_files_parse() {
    let chart = manifests::yaml(format!("{CHART}/Chart.yaml"));
    assert_eq!(chart["name"], "switchboard");
    assert_eq!(chart["apiVersion"], "v2");
    assert!(defaults()["routerPools"].is_array());
}

#[test]
fn schema_accepts_the_defaults_and_every_ci_example() {
    let schema = schema();
    let errors = schema_errors(&schema, &defaults());
    assert!(errors.is_empty(), "values.yaml: {errors:?}");
    let examples = ci_examples();
    let names: Vec<_> = examples.iter().map(|(name, _)| name.as_str()).collect();
    for wanted in ["default", "two-pools", "production", "secure"] {
        assert!(
            names
                .iter()
                .any(|n| n.ends_with(&format!("/{wanted}-values.yaml"))),
            "no ci/{wanted}-values.yaml in {names:?}"
        );
    }
    for (name, values) in &examples {
        let errors = schema_errors(&schema, values);
        assert!(errors.is_empty(), "{name}: {errors:?}");
    }
}

#[test]
fn the_two_pools_example_declares_two_pools() {
    let (_, values) = ci_examples()
        .into_iter()
        .find(|(name, _)| name.ends_with("/two-pools-values.yaml"))
        .expect("two-pools example");
    let pools = values["routerPools"].as_array().expect("pools");
    let names: Vec<_> = pools.iter().filter_map(|p| p["name"].as_str()).collect();
    assert_eq!(names, ["default", "vip"]);
    assert_eq!(pools[1]["tenants"], json!(["acme", "globex"]));
}

#[test]
fn schema_accepts_the_trust_values() {
    let accepted = json!({
        "auth": {"clusterSecret": "0123456789abcdef", "generate": false,
                 "jwt": {"audience": "switchboard", "issuer": "https://auth.example.com/", "maxLifetime": "12h"}},
        "cluster": {"tls": {"enabled": true, "existingSecret": "cluster-tls",
                            "keys": {"cert": "cert.pem", "key": "key.pem", "ca": "ca.pem"}}},
        "nats": {"credentials": {"tokenSecret": "nats"}, "inCluster": {"backendTenants": ["acme", "globex_2"]}},
        "networkPolicy": {"enabled": false, "monitoringNamespace": "", "metricsFrom": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]}
    });
    let values = merge_values(&defaults(), &accepted);
    let errors = schema_errors(&schema(), &values);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(
        defaults()["networkPolicy"]["enabled"],
        true,
        "on by default"
    );
}

#[test]
fn schema_refuses_broken_values() {
    let schema = schema();
    let defaults = defaults();
    let pool =
        |name: &str, tenants: Value| json!({"name": name, "tenants": tenants, "replicas": 1});
    let broken = [
        (
            "no default pool",
            json!({"routerPools": [pool("vip", json!(["acme"]))]}),
        ),
        (
            "pool name that is no DNS label",
            json!({"routerPools": [pool("default", json!([])), pool("VIP_pool", json!([]))]}),
        ),
        (
            "tenant with a space",
            json!({"routerPools": [pool("default", json!(["a b"]))]}),
        ),
        (
            "pool without replicas",
            json!({"routerPools": [{"name": "default", "tenants": []}]}),
        ),
        (
            "setting the chart owns",
            json!({"edge": {"config": {"drain-timeout": "5s"}}}),
        ),
        (
            "setting no edge has",
            json!({"edge": {"config": {"max-msg-size": 1}}}),
        ),
        (
            "duration that is none",
            json!({"edge": {"config": {"idle-timeout": "soon"}}}),
        ),
        (
            "router setting on the edge",
            json!({"edge": {"config": {"presence-ttl": "90s"}}}),
        ),
        (
            "unknown transport",
            json!({"cluster": {"transport": "http"}}),
        ),
        ("misspelt top-level key", json!({"routerPool": []})),
        (
            "redis URL of another scheme",
            json!({"redis": {"url": "http://redis:6379"}}),
        ),
        (
            "minAvailable and maxUnavailable together",
            json!({"edge": {"podDisruptionBudget": {"enabled": true, "minAvailable": 1, "maxUnavailable": 1}}}),
        ),
        (
            "cluster secret shorter than 16 bytes",
            json!({"auth": {"clusterSecret": "fifteen-bytes!!"}}),
        ),
        (
            "existing Secret without a cluster secret key",
            json!({"auth": {"existingSecretKeys": {"clusterSecret": ""}}}),
        ),
        ("generate as a string", json!({"auth": {"generate": "no"}})),
        (
            "token lifetime that is no duration",
            json!({"auth": {"jwt": {"maxLifetime": "a day"}}}),
        ),
        (
            "unknown token check",
            json!({"auth": {"jwt": {"subject": "x"}}}),
        ),
        (
            "TLS without its Secret",
            json!({"cluster": {"tls": {"enabled": true}}}),
        ),
        (
            "TLS switch as a string",
            json!({"cluster": {"tls": {"enabled": "true", "existingSecret": "t"}}}),
        ),
        (
            "TLS Secret key left empty",
            json!({"cluster": {"tls": {"keys": {"cert": "", "key": "tls.key", "ca": "ca.crt"}}}}),
        ),
        (
            "NATS creds file and token together",
            json!({"nats": {"credentials": {"credsSecret": "c", "tokenSecret": "t"}}}),
        ),
        (
            "backend tenant that is no subject token",
            json!({"nats": {"inCluster": {"backendTenants": ["acme.eu"]}}}),
        ),
        (
            "NetworkPolicy switch as a string",
            json!({"networkPolicy": {"enabled": "false"}}),
        ),
        (
            "monitoring namespace that is no DNS label",
            json!({"networkPolicy": {"monitoringNamespace": "Monitoring"}}),
        ),
        (
            "NetworkPolicy peers as a map",
            json!({"networkPolicy": {"apiFrom": {"podSelector": {}}}}),
        ),
    ];
    for (what, overlay) in broken {
        let values = merge_values(&defaults, &overlay);
        assert!(
            !schema_errors(&schema, &values).is_empty(),
            "the schema accepts a {what}: {overlay}"
        );
    }
}

/// Long flag names of a command's settings.
fn flags(command: &clap::Command) -> BTreeSet<String> {
    command
        .get_arguments()
        .filter_map(|a| a.get_long().map(str::to_owned))
        .collect()
}

/// Environment variables a command's settings read.
fn env_names(command: &clap::Command) -> BTreeSet<String> {
    command
        .get_arguments()
        .filter_map(|a| a.get_env().map(|e| e.to_string_lossy().into_owned()))
        .collect()
}

/// The keys `values.schema.json` allows under `<component>.config`.
fn schema_config_keys(component: &str) -> BTreeSet<String> {
    schema()["properties"][component]["properties"]["config"]["properties"]
        .as_object()
        .expect("config properties")
        .keys()
        .cloned()
        .collect()
}

#[test]
fn config_keys_the_schema_allows_are_real_flags() {
    for (component, command) in [
        ("edge", EdgeSettings::command()),
        ("router", RouterSettings::command()),
    ] {
        let keys = schema_config_keys(component);
        assert!(keys.len() >= 3, "{component}: {keys:?}");
        let flags = flags(&command);
        let unknown: Vec<_> = keys.difference(&flags).collect();
        assert!(
            unknown.is_empty(),
            "{component}.config allows unknown flags {unknown:?}"
        );
        // The chart sets these itself, through the environment.
        for owned in [
            "drain-timeout",
            "nats-url",
            "tenant-pools",
            "log-format",
            "pool",
        ] {
            assert!(!keys.contains(owned), "{component}.config allows `{owned}`");
        }
    }
}

/// A config map rendered as the chart's ConfigMap template does: one
/// `key = <JSON scalar>` line per entry.
fn render_toml(config: &Value) -> String {
    config
        .as_object()
        .into_iter()
        .flatten()
        .map(|(key, value)| format!("{key} = {value}\n"))
        .collect()
}

/// Loads settings from `toml` through the real config loader.
fn load_with<T: CommandFactory + clap::FromArgMatches>(
    program: &str,
    toml: &str,
) -> Result<T, config::ConfigError> {
    let path = std::env::temp_dir().join(format!(
        "switchboard-chart-{program}-{}-{:?}.toml",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::write(&path, toml).expect("write temp config");
    let args: Vec<OsString> = [program, "--config", path.to_str().expect("utf-8 path")]
        .iter()
        .map(OsString::from)
        .collect();
    let result = config::load_from::<T>(args);
    let _ = std::fs::remove_file(&path);
    result
}

#[test]
fn ci_example_configs_load_into_the_binaries() {
    let mut loaded = 0;
    for (name, values) in ci_examples() {
        let edge = render_toml(&values["edge"]["config"]);
        let settings = load_with::<EdgeSettings>("edge", &edge)
            .unwrap_or_else(|e| panic!("{name}: edge.toml does not load: {e}\n{edge}"));
        if let Some(size) = values["edge"]["config"]["max-message-size"].as_u64() {
            assert_eq!(settings.max_message_size as u64, size, "{name}");
            loaded += 1;
        }
        let router = render_toml(&values["router"]["config"]);
        load_with::<RouterSettings>("router", &router)
            .unwrap_or_else(|e| panic!("{name}: router.toml does not load: {e}\n{router}"));
    }
    assert!(loaded >= 1, "some example sets an edge setting");
    // And the loader refuses what the schema refuses, so the check above can fail.
    assert!(load_with::<EdgeSettings>("edge", "no-such-setting = 1\n").is_err());
    assert!(load_with::<RouterSettings>("router", "shards = \"many\"\n").is_err());
}

#[test]
fn every_environment_variable_the_chart_sets_exists() {
    let known: BTreeSet<String> = env_names(&EdgeSettings::command())
        .union(&env_names(&RouterSettings::command()))
        .cloned()
        .collect();
    let mut used = BTreeSet::new();
    for path in manifests::files(format!("{CHART}/templates"), "") {
        let text = manifests::read(&path);
        let mut rest = text.as_str();
        while let Some(at) = rest.find("SWITCHBOARD_") {
            let name: String = rest[at..]
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            rest = &rest[at + name.len()..];
            used.insert(name);
        }
    }
    for wanted in [
        "SWITCHBOARD_POOL",
        "SWITCHBOARD_TENANT_POOLS",
        "SWITCHBOARD_JWT_SECRET",
        "SWITCHBOARD_ROUTER_ADVERTISE_ADDR",
        "SWITCHBOARD_DRAIN_TIMEOUT",
        "SWITCHBOARD_CLUSTER_SECRET",
        "SWITCHBOARD_TLS_CERT",
        "SWITCHBOARD_TLS_KEY",
        "SWITCHBOARD_TLS_CA",
        "SWITCHBOARD_NATS_CREDS",
        "SWITCHBOARD_NATS_TOKEN",
        "SWITCHBOARD_JWT_AUDIENCE",
        "SWITCHBOARD_JWT_ISSUER",
        "SWITCHBOARD_JWT_MAX_LIFETIME",
    ] {
        assert!(used.contains(wanted), "the chart does not set {wanted}");
    }
    let unknown: Vec<_> = used.difference(&known).collect();
    assert!(
        unknown.is_empty(),
        "the chart sets unknown variables {unknown:?}"
    );
}

#[test]
fn chart_copies_equal_the_deploy_files() {
    let originals = manifests::files("deploy/grafana/dashboards", ".json");
    let copies = manifests::files(format!("{CHART}/files/dashboards"), ".json");
    let names = |paths: &[std::path::PathBuf]| -> Vec<String> {
        paths
            .iter()
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect()
    };
    assert!(originals.len() >= 3, "{originals:?}");
    assert_eq!(
        names(&originals),
        names(&copies),
        "copy deploy/grafana/dashboards/*.json to {CHART}/files/dashboards/"
    );
    for (original, copy) in originals.iter().zip(&copies) {
        assert!(
            manifests::read(original) == manifests::read(copy),
            "{} differs from {}: copy it again",
            copy.display(),
            original.display()
        );
    }
    assert!(
        manifests::read("deploy/prometheus/alerts.yml")
            == manifests::read(format!("{CHART}/files/alerts.yml")),
        "copy deploy/prometheus/alerts.yml to {CHART}/files/alerts.yml"
    );
}
