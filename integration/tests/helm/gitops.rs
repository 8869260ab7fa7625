//! What a render decides without a cluster: secrets that are the same at
//! every `helm template` (derived from `auth.seed`) or a refusal that says
//! what to set; checksums that follow what each component reads (its own
//! settings file, the Secret keys it uses); pods spread over zones and
//! nodes; the edge HPA's metrics; the in-cluster Redis and NATS pinned,
//! probed and given requests.

use serde_json::{Value, json};
use switchboard_testkit::manifests;

use super::render::{self, CHART, named, of_kind, require_helm, selects};

fn annotations(objects: &[Value], deployment: &str) -> Value {
    named(objects, "Deployment", deployment)["spec"]["template"]["metadata"]["annotations"].clone()
}

fn checksum(objects: &[Value], deployment: &str, which: &str) -> String {
    annotations(objects, deployment)[format!("checksum/{which}")]
        .as_str()
        .unwrap_or_else(|| panic!("{deployment} has no checksum/{which}"))
        .to_owned()
}

#[test]
fn helm_template_renders_the_same_secrets_every_time_or_refuses() {
    let helm = require_helm!();
    // Every rendering here starts from render::SEED.
    let first = helm.objects(&["default"], &json!({}));
    let second = helm.objects(&["default"], &json!({}));
    for secret in ["switchboard-auth", "switchboard-nats-users"] {
        assert_eq!(
            named(&first, "Secret", secret),
            named(&second, "Secret", secret),
            "{secret} changes between two renders"
        );
    }
    let auth = named(&first, "Secret", "switchboard-auth");
    let values: Vec<String> = ["jwt-secret", "api-key", "cluster-secret"]
        .iter()
        .map(|key| render::secret_data(auth, key).expect(key))
        .collect();
    assert!(values.iter().all(|v| v.len() >= 32), "{values:?}");
    assert!(
        values[0] != values[1] && values[1] != values[2] && values[0] != values[2],
        "one value per key"
    );
    let users = named(&first, "Secret", "switchboard-nats-users");
    for user in ["switchboard", "backend-default"] {
        let password = render::secret_data(users, user).expect(user);
        assert!(
            password.starts_with(|c: char| c.is_ascii_alphabetic()),
            "NATS reads passwords as config text: {password}"
        );
        assert!(!values.contains(&password));
    }
    // Another seed, other secrets, and pods that restart for them.
    let reseeded = helm.objects(
        &["default"],
        &json!({"auth": {"seed": "another-seed-of-at-least-32-characters"}}),
    );
    assert_ne!(
        render::secret_data(named(&reseeded, "Secret", "switchboard-auth"), "jwt-secret"),
        Some(values[0].clone())
    );
    for deployment in ["switchboard-edge", "switchboard-router-default"] {
        for which in ["auth", "nats-users"] {
            assert_ne!(
                checksum(&first, deployment, which),
                checksum(&reseeded, deployment, which),
                "{deployment} checksum/{which}"
            );
        }
    }
    assert_ne!(
        checksum(&first, "switchboard-nats", "nats-users"),
        checksum(&reseeded, "switchboard-nats", "nats-users"),
        "NATS restarts for new passwords"
    );

    // Nothing to derive from and no cluster to read: refused, saying what to set.
    let mut bare = render::external_backends();
    bare["auth"] = json!({"seed": ""});
    let refused = helm
        .render(&[], &bare)
        .expect_err("random secrets under helm template");
    for wanted in [
        "cannot read the cluster",
        "auth.existingSecret",
        "auth.seed",
    ] {
        assert!(refused.contains(wanted), "{wanted}: {refused}");
    }
    let refused = helm
        .render(
            &["default"],
            &json!({"auth": {"seed": "", "existingSecret": "mine"}}),
        )
        .expect_err("random NATS passwords under helm template");
    assert!(
        refused.contains("nats.inCluster") && refused.contains("auth.seed"),
        "{refused}"
    );
    // Every value given renders without a seed.
    let given = json!({"auth": {"jwtSecret": "j".repeat(32), "apiKey": "k".repeat(32),
        "clusterSecret": "c".repeat(32)}});
    let mut overlay = render::external_backends();
    overlay["auth"] = given["auth"].clone();
    overlay["auth"]["seed"] = json!("");
    let objects = helm.objects(&[], &overlay);
    assert_eq!(
        render::secret_data(named(&objects, "Secret", "switchboard-auth"), "api-key"),
        Some("k".repeat(32))
    );
}

#[test]
fn checksums_follow_what_each_component_reads() {
    let helm = require_helm!();
    let base = helm.objects(&["two-pools"], &json!({}));
    let render_with = |overlay: Value| helm.objects(&["two-pools"], &overlay);
    let workloads = [
        "switchboard-edge",
        "switchboard-router-default",
        "switchboard-router-vip",
    ];
    let changed = |other: &[Value], which: &str| -> Vec<&str> {
        workloads
            .iter()
            .copied()
            .filter(|d| checksum(&base, d, which) != checksum(other, d, which))
            .collect()
    };
    let routers = ["switchboard-router-default", "switchboard-router-vip"];

    // A router setting restarts routers only: the edge's pod is untouched.
    let router_setting = render_with(json!({"router": {"config": {"presence-ttl": "300s"}}}));
    assert_eq!(changed(&router_setting, "config"), routers);
    assert_eq!(
        named(&base, "Deployment", "switchboard-edge")["spec"]["template"],
        named(&router_setting, "Deployment", "switchboard-edge")["spec"]["template"],
        "a router setting changes the edge's pod"
    );
    // And an edge setting restarts edges only.
    let edge_setting = render_with(json!({"edge": {"config": {"idle-timeout": "120s"}}}));
    assert_eq!(changed(&edge_setting, "config"), ["switchboard-edge"]);
    for router in routers {
        assert_eq!(
            named(&base, "Deployment", router)["spec"]["template"],
            named(&edge_setting, "Deployment", router)["spec"]["template"],
            "an edge setting changes {router}'s pod"
        );
    }
    // Each reads its own ConfigMap, which holds its own file only.
    let edge_config = named(&base, "ConfigMap", "switchboard-edge-config");
    let router_config = named(&base, "ConfigMap", "switchboard-router-config");
    assert_eq!(
        edge_config["data"],
        json!({"edge.toml": "idle-timeout = \"90s\"\nmax-message-size = 131072\n"})
    );
    assert_eq!(
        router_config["data"],
        json!({"router.toml": "presence-ttl = \"120s\"\n"})
    );
    for (deployment, config) in [
        ("switchboard-edge", "switchboard-edge-config"),
        ("switchboard-router-vip", "switchboard-router-config"),
    ] {
        let volumes =
            &named(&base, "Deployment", deployment)["spec"]["template"]["spec"]["volumes"];
        assert_eq!(volumes[0]["configMap"]["name"], config, "{deployment}");
    }

    // The checksum hashes the Secret's content: a new API key (which only
    // routers read) restarts routers; a new JWT secret restarts everyone.
    let api_key = render_with(json!({"auth": {"apiKey": "a-new-api-key-for-the-routers"}}));
    assert_eq!(changed(&api_key, "auth"), routers);
    let jwt = render_with(json!({"auth": {"jwtSecret": "a-new-jwt-secret-for-everyone"}}));
    assert_eq!(changed(&jwt, "auth"), workloads);
    // A Secret of one's own: the checksum follows its name (helm template
    // cannot read its content; helm upgrade reads it).
    let own = render_with(json!({"auth": {"existingSecret": "mine"}}));
    let other = render_with(json!({"auth": {"existingSecret": "theirs"}}));
    assert!(of_kind(&own, "Secret").is_empty());
    assert_eq!(changed(&own, "auth"), workloads);
    assert_ne!(
        checksum(&own, "switchboard-edge", "auth"),
        checksum(&other, "switchboard-edge", "auth")
    );
}

#[test]
fn pods_spread_over_zones_and_nodes_by_default() {
    let helm = require_helm!();
    let objects = helm.objects(&["two-pools"], &json!({}));
    let pods: Vec<(String, Value)> = render::workloads(&objects)
        .into_iter()
        .map(|(_, d)| {
            (
                d["metadata"]["name"].as_str().expect("name").to_owned(),
                d["spec"]["template"]["metadata"]["labels"].clone(),
            )
        })
        .collect();
    assert_eq!(pods.len(), 3);
    for (name, labels) in &pods {
        let spec = &named(&objects, "Deployment", name)["spec"]["template"]["spec"];
        let constraints = spec["topologySpreadConstraints"]
            .as_array()
            .unwrap_or_else(|| panic!("{name} has no topology spread"));
        let keys: Vec<_> = constraints.iter().map(|c| &c["topologyKey"]).collect();
        assert_eq!(
            keys,
            ["topology.kubernetes.io/zone", "kubernetes.io/hostname"],
            "{name}"
        );
        for constraint in constraints {
            assert_eq!(constraint["whenUnsatisfiable"], "ScheduleAnyway", "{name}");
            assert_eq!(constraint["maxSkew"], 1, "{name}");
            // It counts its own pods (its pool's, for a router) and no others.
            for (other, other_labels) in &pods {
                assert_eq!(
                    selects(&constraint["labelSelector"], other_labels),
                    other == name,
                    "{name}'s spread counts {other}'s pods"
                );
            }
            assert!(selects(&constraint["labelSelector"], labels));
        }
    }
    // Overridable: a list of one's own, per pool, or none.
    let own = json!([{"maxSkew": 2, "topologyKey": "example.com/rack",
        "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"a": "b"}}}]);
    let mut pools =
        manifests::yaml(format!("{CHART}/ci/two-pools-values.yaml"))["routerPools"].clone();
    pools[1]["topologySpreadConstraints"] = own.clone();
    let objects = helm.objects(
        &["two-pools"],
        &json!({"edge": {"topologySpreadConstraints": own}, "routerPools": pools}),
    );
    let spread = |name: &str| {
        named(&objects, "Deployment", name)["spec"]["template"]["spec"]["topologySpreadConstraints"]
            .clone()
    };
    assert_eq!(spread("switchboard-edge"), own);
    assert_eq!(spread("switchboard-router-vip"), own);
    assert_eq!(
        spread("switchboard-router-default")
            .as_array()
            .map(Vec::len),
        Some(2)
    );
    let off = helm.objects(
        &["two-pools"],
        &json!({"edge": {"topologySpread": {"enabled": false}},
                "router": {"topologySpread": {"enabled": false}}}),
    );
    for (name, deployment) in render::workloads(&off) {
        assert!(
            deployment["spec"]["template"]["spec"]["topologySpreadConstraints"].is_null(),
            "{name}"
        );
    }
}

#[test]
fn the_edge_hpa_scales_on_cpu_and_optionally_memory_and_sockets() {
    let helm = require_helm!();
    let metrics = |overlay: Value| -> Vec<Value> {
        let objects = helm.objects(&["two-pools"], &overlay);
        named(&objects, "HorizontalPodAutoscaler", "switchboard-edge")["spec"]["metrics"]
            .as_array()
            .expect("metrics")
            .clone()
    };
    let cpu_only = metrics(json!({}));
    assert_eq!(cpu_only.len(), 1, "{cpu_only:?}");
    assert_eq!(cpu_only[0]["resource"]["name"], "cpu");
    let all = metrics(json!({"edge": {"autoscaling": {
        "targetMemoryUtilizationPercentage": 80,
        "connections": {"enabled": true, "targetPerPod": 4000}}}}));
    assert_eq!(all.len(), 3, "{all:?}");
    assert_eq!(all[1]["resource"]["name"], "memory");
    assert_eq!(all[1]["resource"]["target"]["averageUtilization"], 80);
    assert_eq!(
        all[2],
        json!({"type": "Pods", "pods": {
            "metric": {"name": "switchboard_edge_connections"},
            "target": {"type": "AverageValue", "averageValue": "4000"}}})
    );
    // Scale-in is slow: each edge removed sends its sockets away.
    let objects = helm.objects(&["two-pools"], &json!({}));
    let down = &named(&objects, "HorizontalPodAutoscaler", "switchboard-edge")["spec"]["behavior"]
        ["scaleDown"];
    assert!(
        down["stabilizationWindowSeconds"].as_u64() >= Some(300),
        "{down}"
    );
    assert_eq!(
        down["policies"],
        json!([{"type": "Pods", "value": 1, "periodSeconds": 60}])
    );
}

#[test]
fn in_cluster_backends_are_pinned_probed_and_given_requests() {
    let helm = require_helm!();
    let objects = helm.objects(&["default"], &json!({}));
    for name in ["switchboard-redis", "switchboard-nats"] {
        let container = render::container(named(&objects, "Deployment", name));
        let image = container["image"].as_str().expect("image");
        let tag = image.rsplit(':').next().unwrap_or_default();
        let version = tag.split('-').next().unwrap_or_default();
        assert_eq!(
            version
                .split('.')
                .filter(|p| p.parse::<u32>().is_ok())
                .count(),
            3,
            "{name}: {image} is no exact version"
        );
        for probe in ["readinessProbe", "livenessProbe"] {
            assert!(container[probe].is_object(), "{name} has no {probe}");
        }
        let requests = &container["resources"]["requests"];
        assert!(
            requests["cpu"].is_string() && requests["memory"].is_string(),
            "{name}: {requests}"
        );
        assert!(
            container["resources"]["limits"]["memory"].is_string(),
            "{name}"
        );
    }
}

#[test]
fn chart_metadata_says_where_it_runs_and_comes_from() {
    let chart = manifests::yaml(format!("{CHART}/Chart.yaml"));
    assert!(
        chart["kubeVersion"]
            .as_str()
            .is_some_and(|v| v.starts_with(">=")),
        "{}",
        chart["kubeVersion"]
    );
    assert!(
        chart["icon"]
            .as_str()
            .is_some_and(|i| i.starts_with("https://"))
    );
    assert!(chart["sources"].as_array().is_some_and(|s| !s.is_empty()));
    let maintainers = chart["maintainers"].as_array().expect("maintainers");
    assert!(maintainers.iter().all(|m| m["name"].is_string()));
    // The icon the URL names is in the chart.
    let icon = chart["icon"].as_str().unwrap_or_default();
    let path = icon
        .split("/main/")
        .nth(1)
        .expect("a path in the repository");
    assert!(manifests::repo_root().join(path).is_file(), "{path}");
}

#[test]
fn schema_checks_the_new_values() {
    use switchboard_testkit::manifests::{merge_values, schema_errors};
    let schema = super::schema();
    let defaults = super::defaults();
    let accepted = json!({
        "auth": {"seed": "a-seed-of-at-least-thirty-two-characters"},
        "edge": {"autoscaling": {"targetMemoryUtilizationPercentage": 80,
                                 "connections": {"enabled": true, "metricName": "sockets", "targetPerPod": 100}},
                 "topologySpread": {"enabled": true, "maxSkew": 2, "whenUnsatisfiable": "DoNotSchedule",
                                    "topologyKeys": ["kubernetes.io/hostname"]}},
        "routerPools": [{"name": "default", "tenants": [], "replicas": 2,
                         "topologySpreadConstraints": [{"maxSkew": 1}]}],
        "monitoring": {"prometheusRule": {"runbookBaseUrl": "https://docs.example.com/operations.md"}}
    });
    let errors = schema_errors(&schema, &merge_values(&defaults, &accepted));
    assert!(errors.is_empty(), "{errors:?}");
    for (what, broken) in [
        (
            "seed shorter than 32 characters",
            json!({"auth": {"seed": "short"}}),
        ),
        (
            "spread rule that is none",
            json!({"edge": {"topologySpread": {"whenUnsatisfiable": "Maybe"}}}),
        ),
        (
            "spread with no skew",
            json!({"router": {"topologySpread": {"maxSkew": 0}}}),
        ),
        (
            "no sockets per edge",
            json!({"edge": {"autoscaling": {"connections": {"targetPerPod": 0}}}}),
        ),
        (
            "memory target above 100",
            json!({"edge": {"autoscaling": {"targetMemoryUtilizationPercentage": 120}}}),
        ),
        (
            "runbook base that is no URL",
            json!({"monitoring": {"prometheusRule": {"runbookBaseUrl": "docs/"}}}),
        ),
    ] {
        assert!(
            !schema_errors(&schema, &merge_values(&defaults, &broken)).is_empty(),
            "the schema accepts a {what}: {broken}"
        );
    }
}
