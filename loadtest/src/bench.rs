//! `loadtest bench` (what `make bench` runs): starts the baseline server,
//! standalone mode and a local cluster (2 edges, 2 routers, private Redis
//! and NATS), runs the standard suite against each with the same client
//! settings, and writes the figures, their ratios to the baseline and
//! the issue-8 targets into `docs/BENCHMARKS.md`. Fan-out of JSON and idle
//! sockets are also run with permessage-deflate offered. Fan-out is also
//! run against a second standalone process and a second cluster with
//! history off, interleaved with the first, for what history costs; and
//! the recovery scenario runs on both systems with history on.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use switchboard_testkit::cluster::Cluster;
use switchboard_testkit::switchboard::{API_KEY, SECRET};
use switchboard_testkit::{Process, binary};

use crate::report::{DEFLATE, Figure, RECOVERY_FIGURES, Report};
use crate::run::{Options, RunError};
use crate::scenario::{Dialect, Scenario};
use crate::summary::Summary;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Profile {
    /// A few minutes: short holds, three repeats of the ratio scenarios.
    Quick,
    /// Adds the 10-minute idle hold and the 10-minute soak.
    Full,
}

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    #[arg(long, env = "BENCH_PROFILE", value_enum, default_value = "quick")]
    pub profile: Profile,
    /// The scenario files the suite starts from.
    #[arg(long, default_value = "loadtest/scenarios")]
    pub scenarios: PathBuf,
    /// The document the table is written into.
    #[arg(long, default_value = "docs/BENCHMARKS.md")]
    pub doc: PathBuf,
    /// Where each run's JSON summary goes.
    #[arg(long, default_value = "target/bench")]
    pub out_dir: PathBuf,
}

/// What the standalone edge and the cluster's edges are started with:
/// one publisher must be able to send more than the default 50 msg/s.
const RATE_FLAGS: [&str; 4] = ["--rate-limit", "1000000", "--rate-burst", "1000000"];

/// What turns history off (`spec/60-recovery.md`): on the command line of
/// standalone mode, in the environment of a cluster's processes.
const HISTORY_OFF_FLAGS: [&str; 2] = ["--history-size", "0"];
const HISTORY_OFF_ENV: (&str, &str) = ("SWITCHBOARD_HISTORY_SIZE", "0");

/// System names of the history-off runs (their JSON summaries' prefix).
const STANDALONE_NO_HISTORY: &str = "standalone-history-off";
const CLUSTER_NO_HISTORY: &str = "cluster-history-off";

/// Runs of `fanout_50k` on each cluster, history on and off: every one
/// holds 500 sockets per cluster for 10 s (60 s in the full profile).
const CLUSTER_HISTORY_REPEATS: usize = 3;

/// Standalone flags of the history-off process: the same rate limits.
fn history_off_flags() -> Vec<&'static str> {
    let mut flags = RATE_FLAGS.to_vec();
    flags.extend_from_slice(&HISTORY_OFF_FLAGS);
    flags
}

/// A cluster's environment with history turned off besides.
fn history_off_env(env: &[(&'static str, String)]) -> Vec<(&'static str, String)> {
    let mut off = env.to_vec();
    off.push((HISTORY_OFF_ENV.0, HISTORY_OFF_ENV.1.to_owned()));
    off
}

/// The longest wait for servers to go quiet after closing an idle hold.
const SETTLE: Duration = Duration::from_secs(30);

/// Runs the suite and writes the document.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.out_dir)
        .with_context(|| format!("create {}", args.out_dir.display()))?;
    let quick = args.profile == Profile::Quick;
    let suite = Suite {
        dir: args.scenarios.clone(),
        out: args.out_dir.clone(),
    };
    let mut report = Report::new(if quick { "quick" } else { "full" });

    let baseline = Process::start(
        binary("baseline"),
        &["--addr", "127.0.0.1:0"],
        &[],
        &["baseline"],
    );
    let base_url = format!("ws://{}", baseline.addr("baseline"));
    report.note(edge_nofile_probe());
    let standalone = switchboard_testkit::switchboard::standalone(&RATE_FLAGS);
    let edge_url = format!("ws://{}", standalone.addr("edge"));
    let api_url = format!("http://{}", standalone.addr("router-api"));

    // Idle first, while both servers are fresh: RSS growth per socket.
    let hold = if quick {
        Duration::from_secs(30)
    } else {
        Duration::from_secs(600)
    };
    let mut idle = suite.load("idle")?;
    idle.duration = hold;
    let mut base_idle = idle.clone();
    base_idle.duration = Duration::from_secs(30);
    let b = suite
        .once(
            "baseline",
            &base_idle,
            &base_url,
            Dialect::Raw,
            Some(baseline.pid()),
        )
        .await?;
    let s = suite
        .once(
            "standalone",
            &idle,
            &edge_url,
            Dialect::Group,
            Some(standalone.pid()),
        )
        .await?;
    report.idle(&b, &s, hold);
    crate::rss::settle(&[standalone.pid()], SETTLE).await;

    // Connection rate, echo and fan-out: interleaved repeats, medians.
    let repeats = if quick { 3 } else { 5 };
    let mut connect = suite.load("connect")?;
    connect.duration = Duration::from_secs(5);
    let mut echo = suite.load("echo")?;
    echo.duration = Duration::from_secs(5);
    let mut fanout = suite.load("fanout")?;
    fanout.duration = Duration::from_secs(5);
    // The same group offered more than either server can deliver: what
    // each achieves is its capacity on this machine.
    let mut capacity = fanout.clone();
    capacity.name = "fanout_capacity".into();
    capacity.message.rate = 5000.0;
    capacity.drain = Duration::from_secs(10);
    capacity.thresholds.clear();
    // Fan-out also runs, interleaved, on a second standalone process with
    // history off (the same rate flags): what numbering and keeping each
    // message costs, each side measured beside the same baseline runs.
    let no_history = switchboard_testkit::switchboard::standalone(&history_off_flags());
    let no_history_url = format!("ws://{}", no_history.addr("edge"));
    for (scenario, figures, history_cost) in [
        (
            &connect,
            &[Figure::ConnectRate, Figure::ConnectP99][..],
            false,
        ),
        (&echo, &[Figure::P50, Figure::P99][..], false),
        (
            &fanout,
            &[Figure::DeliveriesPerSec, Figure::P50, Figure::P99][..],
            true,
        ),
        (
            &capacity,
            &[Figure::DeliveriesPerSec, Figure::Delivered][..],
            true,
        ),
    ] {
        let mut base_runs = Vec::new();
        let mut product_runs = Vec::new();
        let mut no_history_runs = Vec::new();
        for _ in 0..repeats {
            base_runs.push(
                suite
                    .once("baseline", scenario, &base_url, Dialect::Raw, None)
                    .await?,
            );
            product_runs.push(
                suite
                    .once("standalone", scenario, &edge_url, Dialect::Group, None)
                    .await?,
            );
            if history_cost {
                no_history_runs.push(
                    suite
                        .once(
                            STANDALONE_NO_HISTORY,
                            scenario,
                            &no_history_url,
                            Dialect::Group,
                            None,
                        )
                        .await?,
                );
            }
        }
        report.compare(
            scenario,
            "standalone",
            figures,
            &product_runs,
            Some(&base_runs),
        );
        if history_cost {
            report.history_cost(
                scenario,
                "standalone",
                figures,
                &product_runs,
                &no_history_runs,
            );
        }
    }
    drop(no_history);

    // permessage-deflate: the same 1 KiB JSON messages to the same group,
    // the sockets offering compression or not, interleaved with the
    // baseline (which implements no extension, so runs uncompressed). Both
    // servers are watched for their CPU time per delivery. Inflating costs
    // the harness a few µs a delivery, so the fixed rate is one it keeps up
    // with; at capacity the harness's own CPU time says what limited it.
    let mut json = suite.load("fanout_json")?;
    json.duration = Duration::from_secs(5);
    json.compression = false;
    let mut json_capacity = json.clone();
    json_capacity.name = "fanout_json_capacity".into();
    json_capacity.message.rate = 5000.0;
    json_capacity.drain = Duration::from_secs(10);
    json_capacity.thresholds.clear();
    for (scenario, figures) in [
        (
            &json,
            &[
                Figure::DeliveriesPerSec,
                Figure::P99,
                Figure::WireBytesPerDelivery,
                Figure::ServerCpuPerDelivery,
            ][..],
        ),
        (
            &json_capacity,
            &[
                Figure::DeliveriesPerSec,
                Figure::Delivered,
                Figure::UnexpectedCloses,
                Figure::WireBytesPerDelivery,
                Figure::ServerCpuPerDelivery,
                Figure::ClientCpuPerDelivery,
            ][..],
        ),
    ] {
        let mut compressed = scenario.clone();
        compressed.compression = true;
        let (mut base_runs, mut plain_runs, mut deflate_runs) =
            (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..repeats {
            base_runs.push(
                suite
                    .once(
                        "baseline",
                        scenario,
                        &base_url,
                        Dialect::Raw,
                        Some(baseline.pid()),
                    )
                    .await?,
            );
            plain_runs.push(
                suite
                    .once(
                        "standalone",
                        scenario,
                        &edge_url,
                        Dialect::Group,
                        Some(standalone.pid()),
                    )
                    .await?,
            );
            deflate_runs.push(
                suite
                    .once(
                        DEFLATE,
                        &compressed,
                        &edge_url,
                        Dialect::Group,
                        Some(standalone.pid()),
                    )
                    .await?,
            );
        }
        report.compare(
            scenario,
            "standalone",
            figures,
            &plain_runs,
            Some(&base_runs),
        );
        let mut with_share = figures.to_vec();
        with_share.insert(0, Figure::Compressed);
        report.compare(
            &compressed,
            DEFLATE,
            &with_share,
            &deflate_runs,
            Some(&base_runs),
        );
        report.deflate_note(scenario);
    }

    // The rest of the suite on standalone mode (no baseline equivalent).
    let mut extras = Vec::new();
    for name in [
        "groups",
        "direct",
        "api_publish",
        "iot_events",
        "jsonrpc_pubsub",
        "im_chat",
    ] {
        let mut scenario = suite.load(name)?;
        scenario.duration = Duration::from_secs(if quick { 5 } else { 20 });
        scenario.api = Some(api_url.clone());
        extras.push(scenario);
    }
    for scenario in &extras {
        suite
            .delivery_figures(
                &mut report,
                "standalone",
                scenario,
                &edge_url,
                Some(standalone.pid()),
            )
            .await?;
    }
    // Subscribers that drop and come back with their history position.
    let mut recovery = suite.load("recovery")?;
    if !quick {
        recovery.duration = Duration::from_secs(20);
    }
    suite
        .recovery_figures(&mut report, "standalone", &recovery, &edge_url)
        .await?;

    if !quick {
        let soak = suite.load("soak")?;
        let s = suite
            .once(
                "standalone",
                &soak,
                &edge_url,
                Dialect::Group,
                Some(standalone.pid()),
            )
            .await?;
        report.soak(&s);
    }
    drop(standalone);

    // Idle sockets that negotiated permessage-deflate, on a fresh process
    // as the plain hold was: RSS growth per socket with compression agreed.
    let fresh = switchboard_testkit::switchboard::standalone(&RATE_FLAGS);
    let mut idle_deflate = idle.clone();
    idle_deflate.duration = Duration::from_secs(30);
    idle_deflate.compression = true;
    let d = suite
        .once(
            DEFLATE,
            &idle_deflate,
            &format!("ws://{}", fresh.addr("edge")),
            Dialect::Group,
            Some(fresh.pid()),
        )
        .await?;
    report.idle_deflate(&b, &d, idle_deflate.duration);
    crate::rss::settle(&[fresh.pid()], SETTLE).await;
    drop(fresh);

    // The cluster: 2 routers, 2 edges over gRPC, private Redis and NATS.
    let env: Vec<(&'static str, String)> = vec![
        ("SWITCHBOARD_RATE_LIMIT", RATE_FLAGS[1].to_owned()),
        ("SWITCHBOARD_RATE_BURST", RATE_FLAGS[3].to_owned()),
    ];
    let cluster = Cluster::with_env("grpc", &["default", "default"], "", 2, &env).await;
    let edges = format!("ws://{},ws://{}", cluster.edge(0), cluster.edge(1));
    let cluster_api = format!("http://{}", cluster.router_api(0));
    let mut latency = suite.load("fanout")?;
    // 500 subscribers x 100 msg/s = 50,000 deliveries a second.
    latency.name = "fanout_50k".into();
    latency.vus = 500;
    latency.message.rate = 100.0;
    latency.duration = Duration::from_secs(if quick { 10 } else { 60 });
    // The same fan-out on a second cluster with history off (its own
    // Redis and NATS), interleaved; it is stopped before the rest of the
    // cluster runs so that they share the machine with one cluster only.
    let no_history = Cluster::with_env(
        "grpc",
        &["default", "default"],
        "",
        2,
        &history_off_env(&env),
    )
    .await;
    let no_history_edges = format!("ws://{},ws://{}", no_history.edge(0), no_history.edge(1));
    let (mut on_runs, mut off_runs) = (Vec::new(), Vec::new());
    for _ in 0..CLUSTER_HISTORY_REPEATS {
        on_runs.push(
            suite
                .once("cluster", &latency, &edges, Dialect::Group, None)
                .await?,
        );
        off_runs.push(
            suite
                .once(
                    CLUSTER_NO_HISTORY,
                    &latency,
                    &no_history_edges,
                    Dialect::Group,
                    None,
                )
                .await?,
        );
    }
    drop(no_history);
    report.cluster_latency(&on_runs);
    report.history_cost(
        &latency,
        "cluster",
        &[
            Figure::DeliveriesPerSec,
            Figure::Delivered,
            Figure::P50,
            Figure::P99,
        ],
        &on_runs,
        &off_runs,
    );
    for scenario in [&connect, &echo, &fanout] {
        let c = suite
            .once("cluster", scenario, &edges, Dialect::Group, None)
            .await?;
        let figures: &[Figure] = match scenario.name.as_str() {
            "connect" => &[Figure::ConnectRate, Figure::ConnectP99],
            "fanout" => &[Figure::DeliveriesPerSec, Figure::P50, Figure::P99],
            _ => &[Figure::P50, Figure::P99],
        };
        report.compare(scenario, "cluster", figures, &[c], None);
    }
    for scenario in &mut extras {
        scenario.api = Some(cluster_api.clone());
        suite
            .delivery_figures(&mut report, "cluster", scenario, &edges, None)
            .await?;
    }
    // Its history is in Redis: returning sockets land on either edge.
    suite
        .recovery_figures(&mut report, "cluster", &recovery, &edges)
        .await?;
    // Edge memory on its own (in standalone mode the router's share of
    // each subscription sits in the same process); last, so closing its
    // sockets disturbs no other figure.
    let mut edge_idle = idle.clone();
    edge_idle.duration = Duration::from_secs(30);
    let e = suite
        .once(
            "cluster",
            &edge_idle,
            &format!("ws://{}", cluster.edge(0)),
            Dialect::Group,
            Some(cluster.edges[0].pid()),
        )
        .await?;
    report.idle_cluster_edge(&e);
    // The other edge, after the same runs, with compression negotiated.
    crate::rss::settle(&[cluster.edges[0].pid(), cluster.edges[1].pid()], SETTLE).await;
    let e1 = suite
        .once(
            "cluster",
            &idle_deflate,
            &format!("ws://{}", cluster.edge(1)),
            Dialect::Group,
            Some(cluster.edges[1].pid()),
        )
        .await?;
    report.idle_cluster_edge_deflate(&e1);
    drop(cluster);
    drop(baseline);

    let text = report.render();
    write_doc(&args.doc, report.profile(), &text)?;
    println!("{text}");
    println!("wrote {}", args.doc.display());
    Ok(())
}

struct Suite {
    dir: PathBuf,
    out: PathBuf,
}

impl Suite {
    fn load(&self, name: &str) -> anyhow::Result<Scenario> {
        Ok(Scenario::load(&self.dir.join(format!("{name}.toml")))?)
    }

    /// One run of `scenario` against `targets` (comma-separated) in `dialect`.
    async fn once(
        &self,
        system: &str,
        scenario: &Scenario,
        targets: &str,
        dialect: Dialect,
        watch: Option<u32>,
    ) -> anyhow::Result<Summary> {
        let mut scenario = scenario.clone();
        scenario.dialect = Some(dialect);
        Ok(self.try_once(system, &scenario, targets, watch).await?)
    }

    /// Runs a scenario that has no baseline and reports its deliveries,
    /// or that the system does not serve it.
    async fn delivery_figures(
        &self,
        report: &mut Report,
        system: &str,
        scenario: &Scenario,
        targets: &str,
        watch: Option<u32>,
    ) -> anyhow::Result<()> {
        match self.try_once(system, scenario, targets, watch).await {
            Ok(summary) => report.compare(
                scenario,
                system,
                &[Figure::DeliveriesPerSec, Figure::Delivered, Figure::P99],
                &[summary],
                None,
            ),
            Err(RunError::Unsupported(why)) => report.unsupported(scenario, system, &why),
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }

    /// Runs the recovery scenario and reports what came back, or that
    /// the system does not serve it.
    async fn recovery_figures(
        &self,
        report: &mut Report,
        system: &str,
        scenario: &Scenario,
        targets: &str,
    ) -> anyhow::Result<()> {
        match self.try_once(system, scenario, targets, None).await {
            Ok(summary) => report.compare(scenario, system, &RECOVERY_FIGURES, &[summary], None),
            Err(RunError::Unsupported(why)) => report.unsupported(scenario, system, &why),
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }

    async fn try_once(
        &self,
        system: &str,
        scenario: &Scenario,
        targets: &str,
        watch: Option<u32>,
    ) -> Result<Summary, RunError> {
        let mut scenario = scenario.clone();
        scenario.targets = targets.split(',').map(str::to_owned).collect();
        let sockets = scenario.sockets();
        for stage in &mut scenario.stages {
            stage.target = stage.target.min(sockets);
        }
        scenario
            .validate()
            .map_err(|e| RunError::Setup(e.to_string()))?;
        let options = Options {
            secret: Some(SECRET.to_owned()),
            api_key: Some(API_KEY.to_owned()),
            watch_pid: watch,
            progress: true,
            ..Options::default()
        };
        eprintln!(
            "bench: {} on {system} ({})",
            scenario.name,
            scenario.dialect().name()
        );
        let mut summary = crate::run::run(&scenario, &options).await?;
        let thresholds = scenario
            .thresholds()
            .map_err(|e| RunError::Setup(e.to_string()))?;
        summary.judge(&thresholds);
        let file = self.out.join(format!(
            "{}-{}-{}.json",
            system.replace(" + ", "-"),
            scenario.name,
            options.run_id
        ));
        if let Ok(json) = serde_json::to_string_pretty(&summary) {
            let _ = std::fs::write(file, json);
        }
        Ok(summary)
    }
}

/// Starts a standalone edge whose soft open-file limit was lowered to
/// 1,024 before `exec`, and reads the limit it runs with: equal means the
/// edge does not raise it itself.
fn edge_nofile_probe() -> String {
    let edge = binary("switchboard");
    let script = r#"ulimit -Sn 1024 && exec "$0" "$@""#;
    let mut args = vec!["-c", script];
    let edge_path = edge.to_string_lossy().into_owned();
    args.push(&edge_path);
    args.extend_from_slice(&switchboard_testkit::switchboard::STANDALONE_ARGS);
    let env = [("SWITCHBOARD_JWT_SECRET", SECRET.to_owned())];
    let probe = Process::start(PathBuf::from("/bin/sh"), &args, &env, &["edge"]);
    let soft = crate::limits::nofile_of(probe.pid());
    let hard = rlimit::Resource::NOFILE.get().map(|(_, h)| h).ok();
    match (soft, hard) {
        (Some(1024), Some(hard)) if hard > 1024 => format!(
            "The edge does not raise its open-file limit: started with a soft limit of 1,024 (hard {hard}), it keeps 1,024. Until it does, start it with `ulimit -n` raised."
        ),
        (Some(soft), _) => {
            format!("The edge started with a soft open-file limit of 1,024 runs with {soft}.")
        }
        _ => "The edge's open-file limit could not be read.".to_owned(),
    }
}

/// Replaces the generated section of `doc` for `profile` (between its
/// markers), or appends it; each profile keeps its own section.
fn write_doc(doc: &Path, profile: &str, section: &str) -> anyhow::Result<()> {
    let begin = format!("<!-- bench:begin {profile} -->");
    let end = format!("<!-- bench:end {profile} -->");
    let text = std::fs::read_to_string(doc).unwrap_or_default();
    let block = format!("{begin}\n{section}\n{end}");
    let new = match (text.find(&begin), text.find(&end)) {
        (Some(b), Some(e)) if e > b => format!("{}{block}{}", &text[..b], &text[e + end.len()..]),
        _ => format!("{}\n{block}\n", text.trim_end()),
    };
    std::fs::write(doc, new).with_context(|| format!("write {}", doc.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generated_section_is_replaced_in_place() {
        let dir = std::env::temp_dir().join(format!("bench-doc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let doc = dir.join("B.md");
        std::fs::write(&doc, "# B\n\nintro\n").unwrap();
        write_doc(&doc, "quick", "one").unwrap();
        write_doc(&doc, "full", "long").unwrap();
        write_doc(&doc, "quick", "two").unwrap();
        let text = std::fs::read_to_string(&doc).unwrap();
        assert_eq!(
            text,
            "# B\n\nintro\n<!-- bench:begin quick -->\ntwo\n<!-- bench:end quick -->\n\
             <!-- bench:begin full -->\nlong\n<!-- bench:end full -->\n"
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn history_off_runs_differ_from_the_others_by_history_only() {
        let flags = history_off_flags();
        assert_eq!(&flags[..RATE_FLAGS.len()], &RATE_FLAGS[..]);
        assert_eq!(&flags[RATE_FLAGS.len()..], ["--history-size", "0"]);
        let env = vec![("SWITCHBOARD_RATE_LIMIT", "1000000".to_owned())];
        let off = history_off_env(&env);
        assert_eq!(off[0], env[0]);
        assert_eq!(off[1], ("SWITCHBOARD_HISTORY_SIZE", "0".to_owned()));
    }

    #[test]
    fn the_recovery_scenario_fits_the_default_history() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
        let s = Scenario::load(&dir.join("recovery.toml")).unwrap();
        let spec = s.recovery.as_ref().expect("[recovery] table");
        // A socket misses what is sent while it is away; more than the
        // default history (100) would make `recovered:true` impossible.
        let missed = s.message.rate * s.message.publishers as f64 * spec.away.as_secs_f64();
        assert!(missed < 100.0, "{missed} messages missed per drop");
        // The full profile lengthens it; the quick one keeps the file's.
        let mut long = s.clone();
        long.duration = Duration::from_secs(20);
        long.validate().unwrap();
    }

    #[test]
    fn every_suite_scenario_parses() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
        let suite = Suite {
            dir,
            out: PathBuf::new(),
        };
        for name in [
            "idle",
            "connect",
            "echo",
            "fanout",
            "groups",
            "direct",
            "api_publish",
            "iot_events",
            "jsonrpc_pubsub",
            "im_chat",
            "soak",
            "fanout_json",
            "recovery",
        ] {
            let s = suite.load(name).unwrap();
            assert_eq!(s.name, name);
            assert!(!s.thresholds.is_empty(), "{name} has no thresholds");
        }
    }
}
