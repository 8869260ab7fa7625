//! The frame layer judged from outside: the Autobahn TestSuite's
//! `wstest -m fuzzingclient` against the conformance echo route of a
//! standalone edge. The echo route runs through the same connection code
//! as every dialect, so what passes here holds for all of them.
//!
//! `wstest` runs under Python 2.7 (`pip install autobahntestsuite` there);
//! the test finds it through `WSTEST`, `~/.local/bin/wstest` or `PATH`, and
//! is skipped without it unless `SWITCHBOARD_REQUIRE_TOOLS` is set (CI sets
//! it, and installs the suite).

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use switchboard_testkit::switchboard;

const ECHO: &str = "/conformance/echo";

fn wstest() -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(given) = std::env::var_os("WSTEST") {
        candidates.push(given.into());
    }
    if let Some(home) = std::env::var_os("HOME") {
        candidates.push(PathBuf::from(home).join(".local/bin/wstest"));
    }
    candidates.push("wstest".into());
    candidates.into_iter().find(|program| {
        Command::new(program)
            .arg("--autobahnversion")
            .output()
            .is_ok_and(|out| out.status.success())
    })
}

/// Runs `cases` against `url`; the per-case results of the report.
fn fuzzingclient(program: &PathBuf, url: &str, cases: &[&str]) -> serde_json::Map<String, Value> {
    let dir = std::env::temp_dir().join(format!("sb-autobahn-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let spec = json!({
        "outdir": dir.join("reports").display().to_string(),
        "servers": [{"agent": "switchboard", "url": url}],
        "cases": cases,
        "exclude-cases": [],
        "exclude-agent-cases": {}
    });
    let spec_file = dir.join("fuzzingclient.json");
    std::fs::write(&spec_file, spec.to_string()).unwrap();
    let out = Command::new(program)
        .args(["-m", "fuzzingclient", "-s"])
        .arg(&spec_file)
        .current_dir(&dir)
        .output()
        .expect("run wstest");
    assert!(
        out.status.success(),
        "wstest failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let index = std::fs::read_to_string(dir.join("reports/index.json")).expect("a report");
    let index: Value = serde_json::from_str(&index).expect("report JSON");
    let results = index["switchboard"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    results
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autobahn_fuzzingclient_finds_no_failure() {
    let Some(program) = wstest() else {
        assert!(
            std::env::var_os("SWITCHBOARD_REQUIRE_TOOLS").is_none(),
            "wstest (autobahntestsuite under Python 2.7) is required here"
        );
        eprintln!("skipped: wstest is not installed (pip install autobahntestsuite, Python 2.7)");
        return;
    };
    // The suite's largest messages are 16 MiB, and it sends faster than a
    // client should: the limits are raised, the code under test is not.
    let process = switchboard::standalone(&[
        "--conformance-echo-path",
        ECHO,
        "--max-message-size",
        "16777216",
        "--outbound-bytes",
        "67108864",
        "--rate-limit",
        "1000000",
        "--rate-burst",
        "1000000",
    ]);
    switchboard::wait_ready(process.addr("edge-admin")).await;
    let url = format!("ws://{}{ECHO}", process.addr("edge"));
    let cases = [
        "1.*", "2.*", "3.*", "4.*", "5.*", "6.*", "7.*", "9.*", "10.*",
    ];
    let results = tokio::time::timeout(
        Duration::from_secs(900),
        tokio::task::spawn_blocking(move || fuzzingclient(&program, &url, &cases)),
    )
    .await
    .expect("the suite finishes")
    .unwrap();
    // 1.* to 10.* but 8 (which has none) hold 301 cases, the deflate part
    // 32 more: the run cannot pass by running nothing.
    assert!(results.len() >= 330, "only {} cases ran", results.len());
    assert!(
        results.keys().any(|case| case.starts_with("13.7.")),
        "the deflate cases ran"
    );
    let mut failed = Vec::new();
    for (case, result) in &results {
        let behavior = result["behavior"].as_str().unwrap_or_default();
        let close = result["behaviorClose"].as_str().unwrap_or_default();
        let fine = ["OK", "NON-STRICT", "INFORMATIONAL"].contains(&behavior)
            && ["OK", "INFORMATIONAL"].contains(&close);
        if !fine {
            failed.push(format!("{case}: {behavior} / {close}"));
        }
    }
    assert!(failed.is_empty(), "Autobahn cases not passed: {failed:#?}");
}

/// The echo route exists only when configured, echoes binary as binary,
/// and every other route still refuses binary frames with 1003.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_echo_route_is_off_by_default_and_only_it_takes_binary() {
    let plain = switchboard::standalone(&[]);
    switchboard::wait_ready(plain.addr("edge-admin")).await;
    let answer = switchboard_testkit::http::get(plain.addr("edge"), ECHO, &[]).await;
    assert_eq!(answer.status, 404, "no echo route unless configured");

    let process = switchboard::standalone(&["--conformance-echo-path", ECHO]);
    switchboard::wait_ready(process.addr("edge-admin")).await;
    let mut ws =
        switchboard_testkit::WsClient::open(&format!("ws://{}{ECHO}", process.addr("edge"))).await;
    ws.send_text("hello").await;
    assert_eq!(ws.recv_text().await, "hello");
    ws.send_binary(&[0, 1, 2, 255]).await;
    assert_eq!(ws.recv_binary().await, vec![0, 1, 2, 255]);
    // Another route on the same edge still closes binary with 1003.
    let group = switchboard_testkit::dialects::Dialect::Group
        .open(process.addr("edge"), "binary")
        .await;
    let mut group = group;
    group.send_binary(b"\x00").await;
    assert_eq!(group.recv_close(Duration::from_secs(10)).await.0, 1003);
}
