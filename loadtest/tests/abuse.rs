//! Abusers against a standalone edge: each kind is refused the way the
//! spec says, while the normal fan-out clients beside them get every
//! message.

use loadtest::run::{Options, run};
use loadtest::scenario::Scenario;
use switchboard_testkit::switchboard::{SECRET, Standalone};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abusers_are_refused_and_normal_clients_get_every_message() {
    // A cap of 2 unauthenticated sockets, so the third is refused at once
    // rather than after the 10 s registration deadline. Every other limit
    // is the default.
    let edge = Standalone::memory(&["--max-unauthenticated-sockets", "2"])
        .await
        .process;
    let text = "name='abuse'\nkind='fanout'\nvus=5\nduration='5s'\nsettle='300ms'\n\
        [message]\nrate=40\nsize=4096\n\
        [abuse]\nstart='300ms'\nstop='4800ms'\npause='50ms'\nslow_hold='3500ms'\nslow_echo_size=60000\nslow_echo_rate=45\n\
        oversized=1\nmalformed=1\nbatched=1\nslow=1\nunauthenticated=3\n";
    let mut scenario = Scenario::parse("abuse", text).unwrap();
    scenario.targets = vec![format!("ws://{}", edge.addr("edge"))];
    let options = Options {
        secret: Some(SECRET.to_owned()),
        watch_pid: Some(edge.pid()),
        metrics: Some(format!("http://{}/metrics", edge.addr("edge-admin"))),
        ..Options::default()
    };
    let summary = run(&scenario, &options).await.unwrap();
    let report = summary.render();

    // 40 msg/s for 5 s reach the 5 subscribers and the publisher.
    assert_eq!(summary.counts.expected, 6 * 200, "{report}");
    assert_eq!(summary.counts.received, 6 * 200, "{report}");
    assert_eq!(summary.counts.errors, 0, "{report}");
    assert_eq!(summary.counts.unexpected_closes, 0, "{report}");
    assert!(summary.trends["window"].count > 0, "{report}");

    let abuse = summary.abuse.as_ref().expect("abuse summary");
    let kind = |name: &str| &abuse.kinds[name];
    assert!(kind("oversized").closed_with(1009) >= 1, "{report}");
    let malformed = kind("malformed");
    assert!(malformed.closed_with(1003) >= 1, "{report}");
    assert!(malformed.closed_with(1007) >= 1, "{report}");
    assert!(
        malformed.error_replies >= 1,
        "invalid JSON is answered: {report}"
    );
    let batched = kind("batched");
    assert!(
        batched.error_replies >= 1,
        "an over-50 batch is refused: {report}"
    );
    assert!(
        batched.other_frames >= 50,
        "a 50-call batch is answered: {report}"
    );
    // 45 unread echoes of 60 kB a second fill the edge's kernel buffer and
    // the 4 MiB queue bound in about 2 s; the slow socket reads 3.5 s in,
    // within the 5 s the edge gives its close frame.
    assert!(kind("slow").closed_with(1013) >= 1, "{report}");
    let server = |series: &str| abuse.server.get(series).copied().unwrap_or(0);
    assert!(
        server("switchboard_edge_slow_consumer_closes_total") >= 1,
        "{report}"
    );
    assert!(
        server("switchboard_edge_closes_total{code=\"1009\"}") >= 1,
        "{report}"
    );
    assert!(kind("unauthenticated").closed_with(1008) >= 1, "{report}");
    let rss = abuse.rss.as_ref().expect("memory was watched");
    assert!(rss.peak_kib >= rss.baseline_kib && rss.baseline_kib > 0);
    let marks: Vec<&str> = summary
        .rss
        .as_ref()
        .unwrap()
        .marks
        .iter()
        .map(|m| m.0.as_str())
        .collect();
    assert_eq!(
        marks,
        [
            "start",
            "connected",
            "measure",
            "abuse_start",
            "abuse_stop",
            "end"
        ]
    );
}
