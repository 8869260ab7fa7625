//! The harness's permessage-deflate client against real servers: what a
//! standalone edge agrees to, its compressed frames inflated, the bytes
//! counted on the wire, and the baseline (no extensions) declining.

mod common;

use common::{options, scenario};

use std::path::PathBuf;
use std::time::Duration;

use loadtest::client::{self, Received, Setup, Target};
use loadtest::deflate::Inflater;
use loadtest::run::{Options, run};
use loadtest::scenario::{Body, Dialect};
use loadtest::wire::{self, Fill, Seen};
use switchboard_testkit::Process;
use switchboard_testkit::switchboard::{Standalone, token};

const LIMIT: Duration = Duration::from_secs(10);

async fn group_socket(target: &Target, client_id: &str, compression: bool) -> client::Socket {
    let path = wire::group::path(
        "g-deflate",
        client_id,
        &token(client_id, "client", "bench", None),
    );
    let setup = Setup {
        compression,
        ..Setup::default()
    };
    client::connect_socket(target, &path, &[], None, LIMIT, setup)
        .await
        .expect("upgrade")
}

/// The next message, with its wire size; fails the test on a close.
async fn next(socket: &mut client::Socket, inflater: Option<&mut Inflater>) -> client::Message {
    match tokio::time::timeout(
        LIMIT,
        client::next_message(&mut socket.reader, &socket.writer, inflater),
    )
    .await
    .expect("a message in time")
    {
        Received::Message(message) => message,
        other => panic!("expected a message, got {other:?}"),
    }
}

#[tokio::test]
async fn the_edge_agrees_and_its_compressed_echoes_inflate() {
    let edge = Standalone::memory(&[]).await;
    let target = Target::parse(&format!("ws://{}", edge.edge())).unwrap();
    let mut socket = group_socket(&target, "c1", true).await;
    let agreed = socket.deflate.expect("the edge takes the offer");
    assert!(agreed.server_no_context_takeover && agreed.client_no_context_takeover);
    assert_eq!(agreed.server_max_window_bits, 15);
    let mut inflater = Inflater::new(agreed);

    // The socket's own presence join is short: sent as it is.
    let join = next(&mut socket, Some(&mut inflater)).await;
    assert!(!join.compressed, "{}", String::from_utf8_lossy(&join.data));

    // A 1 KiB JSON echo is over the edge's 256-byte threshold: compressed.
    let fill = Fill::new(Body::Json, 1024);
    let stamp = 1_700_000_000_000_001;
    client::send_text(&socket.writer, &wire::group::echo(stamp, &fill))
        .await
        .unwrap();
    let echo = next(&mut socket, Some(&mut inflater)).await;
    assert!(echo.compressed);
    assert_eq!(
        wire::classify(Dialect::Group, &echo.data, "c1"),
        Seen::Stamped(stamp)
    );
    let delivered: serde_json::Value = serde_json::from_slice(&echo.data).unwrap();
    let Fill::Json { value, .. } = &fill else {
        unreachable!()
    };
    assert_eq!(&delivered["payload"]["data"], value, "inflated whole");
    assert!(
        (echo.wire_bytes as f64) < echo.data.len() as f64 * 0.8,
        "{} on the wire for {} bytes",
        echo.wire_bytes,
        echo.data.len()
    );

    // Below the threshold nothing is compressed, on the same socket.
    client::send_text(&socket.writer, &wire::group::echo(stamp + 1, &"x".into()))
        .await
        .unwrap();
    let small = next(&mut socket, Some(&mut inflater)).await;
    assert!(!small.compressed);
    assert!(small.data.len() < 256, "{}", small.data.len());
    // RFC 6455 5.2: a 2-byte header below 126 bytes, 4 up to 65,535.
    let header = if small.data.len() < 126 { 2 } else { 4 };
    assert_eq!(small.wire_bytes, small.data.len() as u64 + header);
    assert_eq!(
        wire::classify(Dialect::Group, &small.data, "c1"),
        Seen::Stamped(stamp + 1)
    );

    // Without the offer the same echo comes plain: its wire size is its
    // length plus a 4-byte header.
    let mut plain = group_socket(&target, "c2", false).await;
    assert!(plain.deflate.is_none());
    let _join = next(&mut plain, None).await;
    client::send_text(&plain.writer, &wire::group::echo(stamp + 2, &fill))
        .await
        .unwrap();
    let echo_plain = next(&mut plain, None).await;
    assert!(!echo_plain.compressed);
    assert_eq!(echo_plain.wire_bytes, echo_plain.data.len() as u64 + 4);
    assert!(echo.wire_bytes * 2 < echo_plain.wire_bytes);
}

#[tokio::test]
async fn an_edge_that_declines_leaves_the_socket_plain() {
    let edge = Standalone::memory(&["--permessage-deflate", "false"]).await;
    let target = Target::parse(&format!("ws://{}", edge.edge())).unwrap();
    let mut socket = group_socket(&target, "c1", true).await;
    assert_eq!(socket.deflate, None);
    let _join = next(&mut socket, None).await;
    let fill = Fill::new(Body::Json, 1024);
    client::send_text(&socket.writer, &wire::group::echo(7, &fill))
        .await
        .unwrap();
    let echo = next(&mut socket, None).await;
    assert!(!echo.compressed);
    assert_eq!(
        wire::classify(Dialect::Group, &echo.data, "c1"),
        Seen::Stamped(7)
    );
}

#[tokio::test]
async fn fanout_runs_count_compressed_deliveries_and_their_wire_bytes() {
    let edge = Standalone::memory(&["--rate-limit", "10000", "--rate-burst", "10000"]).await;
    let url = format!("ws://{}", edge.edge());
    let text = "kind='fanout'\nvus=8\nduration='1s'\n[message]\nrate=20\nsize=1024\nbody='json'\n";
    let mut compressed = scenario(text, &url);
    compressed.compression = true;
    let options = Options {
        watch_pid: Some(edge.process.pid()),
        ..options()
    };
    let on = run(&compressed, &options).await.unwrap();
    let plain = run(&scenario(text, &url), &options).await.unwrap();

    for summary in [&on, &plain] {
        // 20 messages reach all 9 members, the publisher included.
        assert_eq!(
            (summary.counts.received, summary.counts.expected),
            (180, 180),
            "{}",
            summary.render()
        );
        assert_eq!(summary.counts.errors, 0, "{:?}", summary.error_samples);
        assert!(summary.metric("server_cpu_us_per_delivery").is_some());
        assert!(summary.metric("client_cpu_us_per_delivery").is_some());
    }
    assert!(on.compression && !plain.compression);
    assert_eq!(on.counts.negotiated, 9);
    assert_eq!(on.metric("negotiated"), Some(1.0));
    assert_eq!(on.metric("compressed"), Some(1.0));
    assert_eq!(plain.counts.negotiated, 0);
    assert_eq!(plain.metric("compressed"), Some(0.0));
    // What the sockets read is the same either way.
    let read = |s: &loadtest::summary::Summary| s.metric("bytes_per_delivery").unwrap();
    assert!(
        (read(&on) - read(&plain)).abs() < 8.0,
        "{} vs {}",
        read(&on),
        read(&plain)
    );
    // Plain frames of this size have a 4-byte header; compressed ones are
    // much smaller than what they inflate to.
    assert_eq!(
        plain.counts.delivered_wire_bytes,
        plain.counts.delivered_bytes + 4 * plain.counts.received
    );
    let wire = |s: &loadtest::summary::Summary| s.metric("wire_bytes_per_delivery").unwrap();
    assert!(
        wire(&on) < wire(&plain) * 0.7,
        "{} vs {}",
        wire(&on),
        wire(&plain)
    );
    assert!(on.counts.wire_bytes >= on.counts.delivered_wire_bytes);
    assert!(on.render().contains("ws_deflate_negotiated"));
}

#[tokio::test]
async fn the_baseline_declines_and_still_delivers() {
    let server = Process::start(
        PathBuf::from(env!("CARGO_BIN_EXE_baseline")),
        &["--addr", "127.0.0.1:0"],
        &[],
        &["baseline"],
    );
    let mut fanout = scenario(
        "kind='fanout'\nvus=4\nduration='1s'\ncompression=true\n[message]\nrate=10\nsize=1024\nbody='json'\n",
        &format!("ws://{}", server.addr("baseline")),
    );
    fanout.dialect = Some(Dialect::Raw);
    let summary = run(&fanout, &Options::default()).await.unwrap();
    assert_eq!((summary.counts.received, summary.counts.expected), (50, 50));
    assert_eq!(summary.counts.negotiated, 0);
    assert_eq!(summary.counts.compressed, 0);
    assert_eq!(
        summary.counts.delivered_wire_bytes,
        summary.counts.delivered_bytes + 4 * summary.counts.received
    );
}
