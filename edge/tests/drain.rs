//! Graceful drain: SIGTERM stops upgrades, reports not ready, closes every
//! socket with 1001 after flushing what was queued, and exits 0.

use std::time::Duration;

use serde_json::json;
use switchboard_testkit::WsClient;
use switchboard_testkit::http;
use switchboard_testkit::switchboard::{self, group_url, token};

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
