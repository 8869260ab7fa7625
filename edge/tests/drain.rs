//! Graceful drain: SIGTERM stops upgrades, reports not ready, closes every
//! socket with 1001 after flushing what was queued, and exits 0 — for
//! every dialect, for a cluster edge, and for a router (whose sockets stay
//! open on their edges and move to the other router).

use std::time::Duration;

use serde_json::json;
use switchboard_testkit::cluster::Cluster;
use switchboard_testkit::dialects::ALL;
use switchboard_testkit::switchboard::{self, group_url, join_group, token, until_one_crosses};
use switchboard_testkit::ws::Event;
use switchboard_testkit::{WsClient, http};

#[tokio::test]
async fn sigterm_closes_sockets_with_1001_and_exits_zero() {
    let mut edge = switchboard::standalone(&[]);
    let admin = edge.addr("edge-admin");
    switchboard::wait_ready(admin).await;
    let addr = edge.addr("edge");
    let mut sockets = Vec::new();
    for i in 0..20 {
        let client = format!("client_{i}");
        let token = token(&client, "client", "t1", None);
        let mut ws = WsClient::open(&group_url(addr, "room", &client, &token)).await;
        ws.recv_json_until(|m| m["payload"]["client_id"] == client.as_str())
            .await;
        sockets.push(ws);
    }
    // A message queued right before the signal still arrives before the close.
    sockets[0]
        .send_json(&json!({"msg_type":"msg","target":"echo","msg":"last words"}))
        .await;
    edge.signal("TERM");
    let mut saw_last_words = false;
    for (i, ws) in sockets.iter_mut().enumerate() {
        loop {
            match ws.recv(Duration::from_secs(10)).await {
                Some(switchboard_testkit::ws::Event::Text(text)) => {
                    saw_last_words |= text.contains("last words");
                }
                Some(switchboard_testkit::ws::Event::Close(code, reason)) => {
                    assert_eq!(code, 1001, "socket {i}");
                    assert!(!reason.is_empty(), "the close names a reason");
                    break;
                }
                other => panic!("socket {i}: expected close 1001, got {other:?}"),
            }
        }
    }
    assert!(saw_last_words, "queued frames flush before the close");
    let status = edge.wait_exit(Duration::from_secs(15)).expect("edge exits");
    assert!(status.success(), "exit status {status:?}");
    // Nothing listens any more.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn draining_edge_refuses_upgrades_and_is_not_ready() {
    let edge = switchboard::standalone(&["--drain-timeout", "3s"]);
    let admin = edge.addr("edge-admin");
    switchboard::wait_ready(admin).await;
    let addr = edge.addr("edge");
    let token = token("holder", "client", "t1", None);
    // A socket that never answers the close keeps the drain open for a while.
    let mut holder = WsClient::open(&group_url(addr, "room", "holder", &token)).await;
    holder.recv_json().await;
    edge.signal("TERM");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    let mut saw_not_ready = false;
    while tokio::time::Instant::now() < deadline {
        match tokio::net::TcpStream::connect(admin).await {
            Ok(_) => {
                if http::get(admin, "/readyz", &[]).await.status == 503 {
                    saw_not_ready = true;
                    break;
                }
            }
            Err(_) => break,
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(saw_not_ready, "/readyz reports 503 while draining");
    match WsClient::connect(&group_url(addr, "room", "late", &token)).await {
        Err(refused) => assert!([0, 503].contains(&refused.status), "{refused:?}"),
        Ok(_) => panic!("upgraded while draining"),
    }
}

/// Reads `ws` until its close; returns the code and reason, and whether
/// `marker` arrived before it.
async fn close_of(ws: &mut WsClient, marker: &str) -> (u16, String, bool) {
    let mut saw = false;
    loop {
        match ws.recv(Duration::from_secs(20)).await {
            Some(Event::Text(text)) => saw |= text.contains(marker),
            Some(Event::Close(code, reason)) => return (code, reason, saw),
            other => panic!("expected a close, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dialect_is_drained_with_1001() {
    let mut edge = switchboard::standalone(&[]);
    switchboard::wait_ready(edge.addr("edge-admin")).await;
    let addr = edge.addr("edge");
    let mut sockets = Vec::new();
    for dialect in ALL {
        let mut ws = dialect.open(addr, "drained").await;
        // Each socket has something queued as the signal arrives.
        ws.send_text(&dialect.probe("last-words")).await;
        sockets.push((dialect, ws));
    }
    edge.signal("TERM");
    for (dialect, ws) in &mut sockets {
        let (code, reason, saw) = close_of(ws, "last-words").await;
        assert_eq!(code, 1001, "{dialect:?}");
        assert!(!reason.is_empty(), "{dialect:?}: the close names a reason");
        assert!(
            saw,
            "{dialect:?}: the answer queued before the signal arrived first"
        );
    }
    let status = edge.wait_exit(Duration::from_secs(20)).expect("edge exits");
    assert!(status.success(), "exit status {status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_edge_drains_and_its_clients_leave_their_groups() {
    let mut cluster = Cluster::start("grpc", 2, 2).await;
    let mut stays = join_group(cluster.edge(1), "t1", "room", "stays", None).await;
    let mut goes = join_group(cluster.edge(0), "t1", "room", "goes", None).await;
    stays
        .recv_json_until(|m| m["payload"]["event"] == "join" && m["payload"]["client_id"] == "goes")
        .await;
    cluster.edges[0].signal("TERM");
    let (code, _, _) = close_of(&mut goes, "never").await;
    assert_eq!(code, 1001);
    let status = cluster.edges[0]
        .wait_exit(Duration::from_secs(20))
        .expect("edge exits");
    assert!(status.success(), "exit status {status:?}");
    // The routers drop the drained edge's sockets: a leave, on the other edge.
    let leave = stays
        .recv_json_until(|m| m["payload"]["event"] == "leave")
        .await;
    assert_eq!(leave["payload"]["client_id"], "goes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_drains_and_exits_zero_while_sockets_stay_open() {
    let mut cluster = Cluster::start("grpc", 2, 2).await;
    let mut a = join_group(cluster.edge(0), "t1", "room", "alice", None).await;
    let mut b = join_group(cluster.edge(1), "t1", "room", "bob", None).await;
    cluster.routers[0].signal("TERM");
    let status = cluster.routers[0]
        .wait_exit(Duration::from_secs(30))
        .expect("router exits");
    assert!(status.success(), "exit status {status:?}");
    cluster.routers.remove(0);
    cluster.wait_views(1).await;
    cluster.wait_links(1).await;
    // The same sockets, now served by the remaining router.
    until_one_crosses(&mut a, &mut b, "after-drain").await;
    // Neither socket was closed on the way.
    a.send_json(&json!({"msg_type":"msg","target":"echo","msg":"open"}))
        .await;
    a.recv_json_until(|m| m["msg"] == "open").await;
}
