//! Cluster trust in the rendered chart: NetworkPolicies on by default that
//! admit only this release's edges and routers to the routers' gRPC port;
//! the cluster secret in every edge and router; mutual TLS mounted from a
//! Secret; an existing Secret used as it is; generation refused when
//! asked to be.

use serde_json::{Value, json};
use switchboard_testkit::manifests::merge_values;

use super::render::{self, NAMESPACE, Pod, admits, named, of_kind, policies_for, require_helm};

/// The one NetworkPolicy that selects `pod`.
fn policy_of<'a>(objects: &'a [Value], pod: &Pod) -> &'a Value {
    let policies = policies_for(objects, pod);
    assert_eq!(policies.len(), 1, "policies selecting the {}", pod.what);
    policies[0]
}

/// Pods that are no edge or router of this release, with labels an
/// intruder could give them.
fn strangers(edge: &Pod) -> Vec<Pod> {
    let mut other_release = edge.labels.clone();
    other_release["app.kubernetes.io/instance"] = json!("other");
    vec![
        Pod::new(
            "backend in the namespace",
            NAMESPACE,
            json!({"app": "backend"}),
        ),
        Pod::new(
            "edge look-alike in another namespace",
            "intruders",
            edge.labels.clone(),
        ),
        Pod::new("edge of another release", NAMESPACE, other_release),
        Pod::new(
            "monitoring pod",
            "monitoring",
            json!({"app.kubernetes.io/name": "prometheus"}),
        ),
    ]
}

#[test]
fn network_policies_render_by_default_and_fence_the_router_grpc_port() {
    let helm = require_helm!();
    let objects = helm.objects(&["two-pools"], &json!({}));
    let edge = Pod::of("edge", named(&objects, "Deployment", "switchboard-edge"));
    let routers: Vec<Pod> = ["default", "vip"]
        .iter()
        .map(|pool| {
            Pod::of(
                "router",
                named(
                    &objects,
                    "Deployment",
                    &format!("switchboard-router-{pool}"),
                ),
            )
        })
        .collect();
    for policy in of_kind(&objects, "NetworkPolicy") {
        for rule in policy["spec"]["ingress"].as_array().expect("ingress rules") {
            assert!(rule["ports"].is_array(), "a rule for every port: {rule}");
        }
        assert_eq!(policy["spec"]["policyTypes"], json!(["Ingress"]));
    }
    for router in &routers {
        let policy = policy_of(&objects, router);
        assert!(admits(policy, &edge, "grpc"), "edges attach");
        for peer in &routers {
            assert!(admits(policy, peer, "grpc"), "routers forward");
        }
        for stranger in strangers(&edge) {
            assert!(
                !admits(policy, &stranger, "grpc"),
                "the {} reaches router gRPC",
                stranger.what
            );
        }
        // The server API: the release namespace by default, nothing else.
        let backend = &strangers(&edge)[0];
        assert!(admits(policy, backend, "api"));
        let outsider = Pod::new("outsider", "elsewhere", json!({"app": "backend"}));
        assert!(!admits(policy, &outsider, "api"));
        // Metrics from the monitoring namespace only.
        let prometheus = &strangers(&edge)[3];
        assert!(admits(policy, prometheus, "admin"));
        assert!(!admits(policy, backend, "admin"));
    }
    let edge_policy = policy_of(&objects, &edge);
    let client = Pod::new("client", "anywhere", json!({}));
    assert!(admits(edge_policy, &client, "ws"), "clients reach edges");
    assert!(!admits(edge_policy, &client, "admin"));
}

#[test]
fn network_policies_follow_their_values_and_can_be_turned_off() {
    let helm = require_helm!();
    // The example's metricsFrom is an ipBlock, which these checks cannot
    // evaluate by labels: it is kept on the admin rule, then left out.
    let example = helm.objects(&["secure"], &json!({}));
    let example_router = Pod::of(
        "router",
        named(&example, "Deployment", "switchboard-router-default"),
    );
    let admin_peers = policy_of(&example, &example_router)["spec"]["ingress"]
        .as_array()
        .expect("rules")
        .iter()
        .find(|rule| rule["ports"][0]["port"] == "admin")
        .expect("admin rule")["from"]
        .clone();
    assert!(
        admin_peers
            .as_array()
            .expect("peers")
            .contains(&json!({"ipBlock": {"cidr": "10.0.0.0/24"}})),
        "{admin_peers}"
    );
    let objects = helm.objects(&["secure"], &json!({"networkPolicy": {"metricsFrom": []}}));
    let edge = Pod::of("edge", named(&objects, "Deployment", "switchboard-edge"));
    let router = Pod::of(
        "router",
        named(&objects, "Deployment", "switchboard-router-default"),
    );
    let policy = policy_of(&objects, &router);
    let backend = Pod::new("backend", "backends", json!({"app": "backend"}));
    let neighbour = Pod::new("neighbour", NAMESPACE, json!({"app": "backend"}));
    assert!(admits(policy, &backend, "api"), "apiFrom: backends");
    assert!(
        !admits(policy, &neighbour, "api"),
        "apiFrom replaced the default"
    );
    assert!(!admits(policy, &backend, "grpc"), "apiFrom opens no gRPC");
    assert!(admits(policy, &edge, "grpc"));
    let observer = Pod::new("observer", "observability", json!({}));
    assert!(admits(policy, &observer, "admin"));
    assert!(!admits(
        policy,
        &Pod::new("m", "monitoring", json!({})),
        "admin"
    ));

    // In-cluster Redis: routers only; NATS: edges and routers.
    let objects = helm.objects(&["default"], &json!({}));
    let edge = Pod::of("edge", named(&objects, "Deployment", "switchboard-edge"));
    let router = Pod::of(
        "router",
        named(&objects, "Deployment", "switchboard-router-default"),
    );
    let redis = Pod::of("redis", named(&objects, "Deployment", "switchboard-redis"));
    let redis_policy = policy_of(&objects, &redis);
    assert!(admits(redis_policy, &router, "redis"));
    assert!(!admits(redis_policy, &edge, "redis"));
    let nats = Pod::of("nats", named(&objects, "Deployment", "switchboard-nats"));
    let nats_policy = policy_of(&objects, &nats);
    assert!(admits(nats_policy, &edge, "nats") && admits(nats_policy, &router, "nats"));
    let outsider = Pod::new("outsider", "elsewhere", json!({}));
    assert!(!admits(nats_policy, &outsider, "nats"));

    let off = helm.objects(
        &["two-pools"],
        &json!({"networkPolicy": {"enabled": false}}),
    );
    assert!(of_kind(&off, "NetworkPolicy").is_empty());
}

/// The Secret (name, key) an env entry reads.
fn secret_ref(entry: Option<&Value>) -> (String, String) {
    let reference = &entry.expect("env entry")["valueFrom"]["secretKeyRef"];
    (
        reference["name"].as_str().expect("secret name").to_owned(),
        reference["key"].as_str().expect("secret key").to_owned(),
    )
}

#[test]
fn the_cluster_secret_reaches_every_edge_and_router() {
    let helm = require_helm!();
    let objects = helm.objects(&["two-pools"], &json!({}));
    let workloads = render::workloads(&objects);
    let components: Vec<_> = workloads.iter().map(|(c, _)| c.as_str()).collect();
    assert_eq!(components, ["edge", "router", "router"]);
    let secret = named(&objects, "Secret", "switchboard-auth");
    let generated = render::secret_data(secret, "cluster-secret").expect("cluster-secret");
    assert!(generated.len() >= 16, "{} bytes", generated.len());
    for (component, deployment) in &workloads {
        let (name, key) = secret_ref(render::env(deployment, "SWITCHBOARD_CLUSTER_SECRET"));
        assert_eq!(
            (name.as_str(), key.as_str()),
            ("switchboard-auth", "cluster-secret"),
            "{component}"
        );
    }
    // Given in the values, it is used as it is; shorter than 16 bytes, refused.
    let given = "a-cluster-secret-of-32-bytes-ok!";
    let objects = helm.objects(&["two-pools"], &json!({"auth": {"clusterSecret": given}}));
    let secret = named(&objects, "Secret", "switchboard-auth");
    assert_eq!(
        render::secret_data(secret, "cluster-secret").as_deref(),
        Some(given)
    );
    let short = helm.render(
        &["two-pools"],
        &json!({"auth": {"clusterSecret": "too-short"}}),
    );
    assert!(short.is_err_and(|e| e.contains("clusterSecret")));
}

#[test]
fn an_existing_secret_is_used_and_generation_can_be_refused() {
    let helm = require_helm!();
    let objects = helm.objects(
        &["secure"],
        &json!({"auth": {"existingSecretKeys": {"clusterSecret": "trust"}}}),
    );
    assert!(
        of_kind(&objects, "Secret").is_empty(),
        "the chart renders no Secret of its own"
    );
    for (component, deployment) in render::workloads(&objects) {
        for (variable, key) in [
            ("SWITCHBOARD_CLUSTER_SECRET", "trust"),
            ("SWITCHBOARD_JWT_SECRET", "jwt-secret"),
        ] {
            let (name, read) = secret_ref(render::env(deployment, variable));
            assert_eq!(
                (name.as_str(), read.as_str()),
                ("switchboard-auth", key),
                "{component} {variable}"
            );
        }
        if component == "router" {
            let (name, key) = secret_ref(render::env(deployment, "SWITCHBOARD_API_KEY"));
            assert_eq!(
                (name.as_str(), key.as_str()),
                ("switchboard-auth", "api-key")
            );
        }
    }
    // Without the Secret, a seed or generation, the render stops and says why.
    let refused = helm
        .render(
            &["secure"],
            &json!({"auth": {"existingSecret": "", "seed": ""}}),
        )
        .expect_err("renders without any secret");
    assert!(
        refused.contains("auth.generate is false") && refused.contains("auth.existingSecret"),
        "{refused}"
    );
    // Every value given: renders with generation off, and the same each time.
    let values = json!({"auth": {"existingSecret": "", "jwtSecret": "j".repeat(32),
        "apiKey": "k".repeat(32), "clusterSecret": "c".repeat(32)}});
    let first = helm.objects(&["secure"], &values);
    let second = helm.objects(&["secure"], &values);
    assert_eq!(
        named(&first, "Secret", "switchboard-auth"),
        named(&second, "Secret", "switchboard-auth")
    );
}

/// The file a pod's volume `name` puts at `path`, as `(Secret, key)`:
/// plain secret volumes and projected ones alike.
fn projected_file(pod: &Value, name: &str, path: &str) -> Option<(String, String)> {
    let volume = pod["volumes"]
        .as_array()?
        .iter()
        .find(|v| v["name"] == name)?;
    let sources: Vec<(&Value, &Value)> = match volume.get("projected") {
        Some(projected) => projected["sources"]
            .as_array()?
            .iter()
            .map(|source| (&source["secret"]["name"], &source["secret"]["items"]))
            .collect(),
        None => vec![(&volume["secret"]["secretName"], &volume["secret"]["items"])],
    };
    let mut found = Vec::new();
    for (secret, items) in sources {
        for item in items.as_array().into_iter().flatten() {
            if item["path"] == path {
                let name = secret.as_str().unwrap_or_default().to_owned();
                found.push((name, item["key"].as_str().unwrap_or_default().to_owned()));
            }
        }
    }
    assert!(
        found.len() <= 1,
        "{name}: {path} projected twice: {found:?}"
    );
    found.pop()
}

/// Checks that `deployment` mounts the TLS files read-only from `secret`
/// and points the three variables at them.
fn assert_tls_mounted(component: &str, deployment: &Value, secret: &str) {
    let pod = &deployment["spec"]["template"]["spec"];
    let mounts = render::container(deployment)["volumeMounts"]
        .as_array()
        .expect("mounts");
    for (variable, file) in [
        ("SWITCHBOARD_TLS_CERT", "tls.crt"),
        ("SWITCHBOARD_TLS_KEY", "tls.key"),
        ("SWITCHBOARD_TLS_CA", "ca.crt"),
    ] {
        let path = render::env_value(deployment, variable)
            .unwrap_or_else(|| panic!("{component}: no {variable}"));
        let mount = mounts
            .iter()
            .find(|m| {
                m["mountPath"]
                    .as_str()
                    .is_some_and(|dir| path.strip_prefix(dir) == Some(&format!("/{file}")))
            })
            .unwrap_or_else(|| panic!("{component}: {path} is in no mounted volume"));
        assert_eq!(mount["readOnly"], true, "{component}");
        assert!(
            !path.starts_with("/etc/switchboard/"),
            "{component}: inside the ConfigMap's mount"
        );
        let name = mount["name"].as_str().expect("volume name");
        assert_eq!(
            projected_file(pod, name, file),
            Some((secret.to_owned(), file.to_owned())),
            "{component}: {file}"
        );
    }
}

#[test]
fn tls_values_mount_the_secret_and_set_the_three_variables() {
    let helm = require_helm!();
    let objects = helm.objects(&["secure"], &json!({}));
    let workloads = render::workloads(&objects);
    assert_eq!(workloads.len(), 2);
    for (component, deployment) in &workloads {
        let pod = &deployment["spec"]["template"]["spec"];
        assert_tls_mounted(component, deployment, "switchboard-cluster-tls");
        // The NATS creds file of the same example, likewise.
        let creds = render::env_value(deployment, "SWITCHBOARD_NATS_CREDS").expect("creds path");
        assert!(creds.ends_with("/nats.creds"), "{creds}");
        assert!(
            pod["volumes"]
                .as_array()
                .expect("volumes")
                .iter()
                .any(|v| v["secret"]["secretName"] == "switchboard-nats"
                    && v["secret"]["items"][0]["key"] == "switchboard.creds")
        );
        assert_eq!(
            render::env_value(deployment, "SWITCHBOARD_JWT_AUDIENCE"),
            Some("switchboard")
        );
        assert_eq!(
            render::env_value(deployment, "SWITCHBOARD_JWT_MAX_LIFETIME"),
            Some("24h")
        );
    }
    // Without TLS values: no variable, no volume; enabled without a Secret: refused.
    let plain = helm.objects(&["two-pools"], &json!({}));
    for (component, deployment) in render::workloads(&plain) {
        assert!(
            render::env(deployment, "SWITCHBOARD_TLS_CERT").is_none(),
            "{component}"
        );
        let volumes = deployment["spec"]["template"]["spec"]["volumes"].to_string();
        assert!(!volumes.contains("cluster-tls"), "{component}: {volumes}");
    }
    let token = helm.objects(
        &["two-pools"],
        &json!({"nats": {"credentials": {"tokenSecret": "nats-token"}}}),
    );
    for (component, deployment) in render::workloads(&token) {
        let (name, key) = secret_ref(render::env(deployment, "SWITCHBOARD_NATS_TOKEN"));
        assert_eq!(
            (name.as_str(), key.as_str()),
            ("nats-token", "nats-token"),
            "{component}"
        );
    }
    // The CA from a Secret of its own, under other key names.
    let bundle = helm.objects(
        &["secure"],
        &json!({"cluster": {"tls": {"caSecret": "cluster-ca-bundle",
            "keys": {"cert": "cert.pem", "key": "key.pem", "ca": "bundle.pem"}}}}),
    );
    for (component, deployment) in render::workloads(&bundle) {
        let pod = &deployment["spec"]["template"]["spec"];
        for (file, secret, key) in [
            ("tls.crt", "switchboard-cluster-tls", "cert.pem"),
            ("tls.key", "switchboard-cluster-tls", "key.pem"),
            ("ca.crt", "cluster-ca-bundle", "bundle.pem"),
        ] {
            assert_eq!(
                projected_file(pod, "cluster-tls", file),
                Some((secret.to_owned(), key.to_owned())),
                "{component}: {file}"
            );
        }
    }
    let refused = helm.render(
        &["two-pools"],
        &json!({"cluster": {"tls": {"enabled": true}}}),
    );
    assert!(refused.is_err_and(|e| e.contains("existingSecret")));
}

#[test]
fn every_ci_example_renders() {
    let helm = require_helm!();
    let defaults = super::defaults();
    for (name, _) in super::ci_examples() {
        let example = name
            .rsplit('/')
            .next()
            .and_then(|f| f.strip_suffix("-values.yaml"))
            .expect("example name");
        let objects = helm.objects(&[example], &json!({}));
        assert!(!render::workloads(&objects).is_empty(), "{name}");
    }
    // And the bare defaults refuse to render without NATS and Redis.
    let bare = helm.render(&[], &json!({}));
    assert!(bare.is_err_and(|e| e.contains("nats")));
    let minimal = merge_values(&defaults, &render::external_backends());
    assert!(minimal["networkPolicy"]["enabled"] == true);
    assert!(!render::workloads(&helm.objects(&[], &render::external_backends())).is_empty());
}
