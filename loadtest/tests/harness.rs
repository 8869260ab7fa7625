//! The harness against real servers: a standalone edge and the baseline,
//! each a process on an ephemeral port.

mod common;

use common::{options, scenario};

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use loadtest::run::{Options, RunError, run};
use loadtest::scenario::Dialect;
use loadtest::summary::Summary;
use switchboard_testkit::Process;
use switchboard_testkit::switchboard::{SECRET, Standalone};

fn baseline() -> Process {
    Process::start(
        PathBuf::from(env!("CARGO_BIN_EXE_baseline")),
        &["--addr", "127.0.0.1:0"],
        &[],
        &["baseline"],
    )
}

fn scenario_file(text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("loadtest-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("s{}.toml", loadtest::run::run_id()));
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test]
async fn echo_and_fanout_against_standalone_deliver_everything() {
    let edge = Standalone::memory(&["--rate-limit", "10000", "--rate-burst", "10000"])
        .await
        .process;
    let url = format!("ws://{}", edge.addr("edge"));

    let echo = scenario(
        "kind='echo'\nvus=4\nduration='1s'\nthresholds=['delivered >= 100%', 'errors == 0']\n[message]\nrate=20\n",
        &url,
    );
    let mut summary = run(&echo, &options()).await.unwrap();
    assert_eq!(summary.counts.connections, 4);
    assert_eq!(summary.counts.sent, 80);
    assert_eq!((summary.counts.received, summary.counts.expected), (80, 80));
    assert!(
        summary.judge(&echo.thresholds().unwrap()),
        "{}",
        summary.render()
    );
    assert_eq!(summary.trends["delivery"].count, 80);

    let fanout = scenario(
        "kind='fanout'\nvus=10\nduration='1s'\n[message]\nrate=10\npublishers=2\n",
        &url,
    );
    let summary = run(&fanout, &options()).await.unwrap();
    // 2 publishers x 10 messages reach all 12 members, publishers included.
    assert_eq!(summary.counts.expected, 240);
    assert_eq!(summary.counts.received, 240, "{}", summary.render());
    assert_eq!(summary.counts.errors, 0, "{:?}", summary.error_samples);
    assert_eq!(summary.counts.unexpected_closes, 0);
}

#[tokio::test]
async fn idle_sockets_are_held_and_server_memory_is_watched() {
    let edge = Standalone::memory(&[]).await.process;
    let idle = scenario(
        "kind='idle'\nvus=20\ngroup_size=5\nheartbeat='200ms'\nduration='1s'\nstages=[{duration='500ms',target=20}]\n",
        &format!("ws://{}", edge.addr("edge")),
    );
    let options = Options {
        watch_pid: Some(edge.pid()),
        ..options()
    };
    let summary = run(&idle, &options).await.unwrap();
    assert_eq!(
        (summary.counts.open_at_end, summary.counts.planned_open),
        (20, 20)
    );
    assert_eq!(summary.metric("held"), Some(1.0));
    let rss = summary.rss.expect("memory was watched");
    assert!(rss.per_socket_kib.is_some());
    let marks: Vec<&str> = rss.marks.iter().map(|(m, _)| m.as_str()).collect();
    assert_eq!(marks, ["start", "connected", "measure", "end"]);
}

#[tokio::test]
async fn the_baseline_echoes_broadcasts_and_refuses_other_routes() {
    let server = baseline();
    let url = format!("ws://{}", server.addr("baseline"));
    let mut fanout = scenario(
        "kind='fanout'\nvus=5\nduration='1s'\n[message]\nrate=10\n",
        &url,
    );
    fanout.dialect = Some(Dialect::Raw);
    let summary = run(&fanout, &Options::default()).await.unwrap();
    assert_eq!((summary.counts.received, summary.counts.expected), (60, 60));

    // The group dialect's route does not exist there: a clear refusal, at once.
    fanout.dialect = Some(Dialect::Group);
    let started = std::time::Instant::now();
    match run(&fanout, &options()).await {
        Err(RunError::Unsupported(why)) => assert!(why.contains("404"), "{why}"),
        other => panic!("expected unsupported, got {:?}", other.map(|s| s.counts)),
    }
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes_json_summaries_and_several_processes() {
    let edge = Standalone::memory(&["--rate-limit", "10000", "--rate-burst", "10000"])
        .await
        .process;
    let url = format!("ws://{}", edge.addr("edge"));
    let file = scenario_file(
        "name='fanout'\nkind='fanout'\nvus=6\nduration='1s'\nsettle='300ms'\nthresholds=['delivered >= 100%']\n[message]\nrate=10\n",
    );
    let out = file.with_extension("json");
    let loadtest = env!("CARGO_BIN_EXE_loadtest");
    let status = Command::new(loadtest)
        .args([
            "run",
            file.to_str().unwrap(),
            "--target",
            &url,
            "--quiet",
            "--procs",
            "2",
        ])
        .args(["--out", out.to_str().unwrap()])
        .env("SWITCHBOARD_JWT_SECRET", SECRET)
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(0));
    let summary: Summary = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(summary.processes, 2);
    assert_eq!(summary.counts.connections, 7);
    assert_eq!((summary.counts.received, summary.counts.expected), (70, 70));

    // A threshold that cannot hold: exit 99, like k6.
    let failing = scenario_file(
        "name='echo'\nkind='echo'\nvus=2\nduration='500ms'\nsettle='100ms'\nthresholds=['p99_ms < 0']\n",
    );
    let status = Command::new(loadtest)
        .args([
            "run",
            failing.to_str().unwrap(),
            "--target",
            &url,
            "--quiet",
        ])
        .env("SWITCHBOARD_JWT_SECRET", SECRET)
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(99));

    // A dialect the target does not serve: exit 3, with no wait.
    let status = Command::new(loadtest)
        .args([
            "run",
            failing.to_str().unwrap(),
            "--target",
            &url,
            "--quiet",
            "--dialect",
            "raw",
        ])
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(3));
}

/// Sockets that drop and return get exactly what they missed; with
/// history off nothing is recovered and the thresholds say so.
#[tokio::test]
async fn dropped_subscribers_recover_what_they_missed_and_only_with_history() {
    let text = "kind='recovery'\nvus=12\ngroups=2\nduration='4s'\ndrain='2s'\n\
        thresholds=['recovered >= 100%', 'gaps == 0', 'duplicates == 0', 'replayed >= 100%']\n\
        [message]\nrate=20\n[recovery]\ndrop=4\nat='1s'\nspread='500ms'\naway='1s'\n";
    let flags = ["--rate-limit", "10000", "--rate-burst", "10000"];
    let edge = Standalone::memory(&flags).await.process;
    let recovery = scenario(text, &format!("ws://{}", edge.addr("edge")));
    let mut summary = run(&recovery, &options()).await.unwrap();
    let r = summary.recovery.clone().expect("recovery figures");
    assert_eq!((r.dropped, r.reconnects, r.recovered), (4, 4, 4), "{r:?}");
    // Away 1 s at 20 msg/s: about 20 missed each, every one replayed.
    assert!(r.missed >= 4 * 15, "{r:?}");
    assert_eq!((r.replayed, r.server_missed), (r.missed, r.missed));
    assert_eq!((r.gaps, r.duplicates), (0, 0));
    assert_eq!(summary.trends["replay"].count, 4);
    assert_eq!(summary.counts.unexpected_closes, 0);
    assert_eq!(summary.counts.open_at_end, 14);
    assert_eq!(
        summary.counts.received,
        summary.counts.expected,
        "{}",
        summary.render()
    );
    assert!(
        summary.judge(&recovery.thresholds().unwrap()),
        "{}",
        summary.render()
    );

    let mut off_flags = flags.to_vec();
    off_flags.extend(["--history-size", "0"]);
    let off = Standalone::memory(&off_flags).await.process;
    let recovery = scenario(text, &format!("ws://{}", off.addr("edge")));
    let mut summary = run(&recovery, &options()).await.unwrap();
    let r = summary.recovery.clone().expect("recovery figures");
    assert_eq!((r.reconnects, r.recovered), (4, 0), "{r:?}");
    assert!(summary.counts.received < summary.counts.expected);
    assert!(!summary.judge(&recovery.thresholds().unwrap()));
}
