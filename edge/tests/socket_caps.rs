//! What clients cannot grow on an edge (`00-common.md`, "Frames"): the
//! close-code label of the close metric, and the number of sockets that
//! have yet to authenticate. Played against a standalone edge process.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use switchboard_testkit::cluster::wait_metric;
use switchboard_testkit::http::metric;
use switchboard_testkit::im::{self, ImClient, SOCKET, is_status_for, status_of};
use switchboard_testkit::switchboard;
use switchboard_testkit::{Process, WsClient};

async fn standalone(extra: &[&str]) -> Process {
    let process = switchboard::standalone(extra);
    switchboard::wait_ready(process.addr("edge-admin")).await;
    process
}

/// The `code` labels of `switchboard_edge_closes_total` in `text`.
fn close_code_labels(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|line| line.strip_prefix("switchboard_edge_closes_total{code=\""))
        .filter_map(|rest| rest.split_once('"'))
        .map(|(code, _)| code.to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_close_codes_from_clients_are_counted_as_other() {
    let process = standalone(&[]).await;
    let edge = process.addr("edge");
    // 50 distinct codes a client may send (3000-4999 are for applications)
    // and the edge echoes.
    for i in 0..50u16 {
        let code = 3001 + i * 37;
        let room = format!("room-{i}");
        let mut ws = switchboard::join_group(edge, "t1", &room, "alice", None).await;
        ws.close_with(code).await;
        assert_eq!(ws.recv_close(Duration::from_secs(5)).await.0, code);
    }
    let text = wait_metric(
        process.addr("edge-admin"),
        r#"switchboard_edge_closes_total{code="other"}"#,
        50.0,
    )
    .await;
    let known: BTreeSet<String> = [
        "1000", "1001", "1002", "1003", "1006", "1007", "1008", "1009", "1011", "1013", "4401",
        "other",
    ]
    .map(str::to_owned)
    .into();
    let labels = close_code_labels(&text);
    assert!(labels.contains("other"), "{labels:?}");
    assert!(labels.is_subset(&known), "unexpected labels: {labels:?}");
}

/// Sends an unregistered message on `ws`; the socket is open and answered
/// when the reply is the 402 that asks it to register first.
async fn answered_unregistered(ws: &mut WsClient, id: &str) {
    ws.send_json(&im::text(id, "alice", "bob", "hi")).await;
    let reply = ws.recv_json_until(|m| is_status_for(m, id)).await;
    assert_eq!(status_of(&reply).0, 402, "{reply}");
}

/// An IM socket that is upgraded and then closed with 1008 at once.
async fn closed_at_the_cap(edge: SocketAddr) {
    let mut ws = ImClient::open(edge, SOCKET).await;
    let (code, reason) = ws.recv_close(Duration::from_secs(5)).await;
    assert_eq!(code, 1008, "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_sockets_are_capped() {
    let process = standalone(&["--max-unauthenticated-sockets", "2"]).await;
    let edge = process.addr("edge");
    let gauge = "switchboard_edge_unauthenticated_sockets";
    let session_id = im::session_id(edge, "acme", "alice", None).await;

    let mut first = ImClient::open(edge, SOCKET).await;
    answered_unregistered(&mut first, "a1").await;
    let mut second = ImClient::open(edge, SOCKET).await;
    answered_unregistered(&mut second, "b1").await;
    wait_metric(process.addr("edge-admin"), gauge, 2.0).await;

    // The third is over the cap.
    closed_at_the_cap(edge).await;

    // Once the first registers, there is room for one more, and no more.
    first
        .send_json(&im::register("a2", "alice", &session_id))
        .await;
    let reply = first.recv_json_until(|m| is_status_for(m, "a2")).await;
    assert_eq!(status_of(&reply).0, 200, "{reply}");
    wait_metric(process.addr("edge-admin"), gauge, 1.0).await;
    let mut third = ImClient::open(edge, SOCKET).await;
    answered_unregistered(&mut third, "c1").await;
    closed_at_the_cap(edge).await;

    // A socket that closes gives its place up too.
    second.close().await;
    wait_metric(process.addr("edge-admin"), gauge, 1.0).await;
    let mut fourth = ImClient::open(edge, SOCKET).await;
    answered_unregistered(&mut fourth, "d1").await;

    let text = wait_metric(process.addr("edge-admin"), gauge, 2.0).await;
    let refused = "switchboard_edge_unauthenticated_refused_total";
    assert_eq!(metric(&text, refused), 2.0, "{text}");
    // The registered socket still works.
    let mut alice = ImClient {
        ws: first,
        user: "alice".to_owned(),
        session_id,
    };
    alice.send_text("a3", "bob", "hi").await;
}
