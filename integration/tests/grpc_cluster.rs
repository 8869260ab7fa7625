//! Edge and router as separate processes over gRPC, with a private
//! redis-server as the store: fan-out crosses the transport once per edge,
//! presence lives in Redis, and an edge survives its router restarting.

use std::time::Duration;

use serde_json::json;
use switchboard_testkit::RedisServer;
use switchboard_testkit::cluster::scrape;
use switchboard_testkit::http::metric;
use switchboard_testkit::switchboard::{self, join_group};

#[tokio::test]
async fn one_delivery_per_edge_for_many_sockets() {
    let redis = RedisServer::start().await;
    let router = switchboard::router(&["--redis-url", &redis.url()], &[]);
    let edge_a = switchboard::edge(&[router.addr("router-grpc")], &[]);
    let edge_b = switchboard::edge(&[router.addr("router-grpc")], &[]);
    switchboard::wait_ready(edge_a.addr("edge-admin")).await;
    switchboard::wait_ready(edge_b.addr("edge-admin")).await;

    const ON_A: usize = 40;
    let mut sockets = Vec::new();
    for i in 0..ON_A {
        sockets.push(
            join_group(
                edge_a.addr("edge"),
                "t1",
                "big_room",
                &format!("a_{i}"),
                None,
            )
            .await,
        );
    }
    let mut on_b = join_group(edge_b.addr("edge"), "t1", "big_room", "b_0", None).await;
    // Presence events go out in join order: once every socket has seen the
    // last join, none is left in flight to disturb the counts below.
    for ws in &mut sockets {
        ws.recv_json_until(|m| {
            m["payload"]["event"] == "join" && m["payload"]["client_id"] == "b_0"
        })
        .await;
    }

    let router_admin = router.addr("router-admin");
    let before = scrape(router_admin).await;
    let edge_before = scrape(edge_a.addr("edge-admin")).await;
    on_b.send_json(&json!({"msg_type":"msg","target":"group","msg":"fan out"}))
        .await;
    for ws in sockets.iter_mut().chain(std::iter::once(&mut on_b)) {
        let m = ws.recv_json_until(|m| m["msg_type"] == "msg").await;
        assert_eq!(m["msg"], "fan out");
        assert_eq!(m["from_id"], "b_0");
    }
    let after = scrape(router_admin).await;
    let edge_after = scrape(edge_a.addr("edge-admin")).await;
    let frames = metric(&after, "switchboard_router_deliveries_total")
        - metric(&before, "switchboard_router_deliveries_total");
    let sockets_reached = metric(&after, "switchboard_router_delivered_sockets_total")
        - metric(&before, "switchboard_router_delivered_sockets_total");
    assert_eq!(frames, 2.0, "one delivery frame per edge, not per socket");
    assert_eq!(sockets_reached, (ON_A + 1) as f64);
    let edge_frames = metric(&edge_after, "switchboard_edge_deliveries_total")
        - metric(&edge_before, "switchboard_edge_deliveries_total");
    assert_eq!(
        edge_frames, 1.0,
        "edge A received one frame for its {ON_A} sockets"
    );
}

#[tokio::test]
async fn presence_is_kept_in_redis_and_an_edge_survives_a_router_restart() {
    let redis = RedisServer::start().await;
    let mut router = switchboard::router(&["--redis-url", &redis.url()], &[]);
    let grpc = router.addr("router-grpc");
    let edge = switchboard::edge(&[grpc], &[]);
    switchboard::wait_ready(edge.addr("edge-admin")).await;
    let mut alice = join_group(edge.addr("edge"), "t1", "room", "alice", None).await;
    let mut bob = join_group(edge.addr("edge"), "t1", "room", "bob", None).await;
    alice
        .recv_json_until(|m| m["payload"]["client_id"] == "bob")
        .await;

    // The presence set is in Redis under the tenant's hash tag.
    let members = redis_cli(&redis, &["ZRANGE", "sb:{t1}:presence:room", "0", "-1"]);
    assert_eq!(members, "alice\nbob");

    // The router dies and comes back on the same address.
    router.signal("KILL");
    router.wait_exit(Duration::from_secs(5));
    let grpc_port = grpc.to_string();
    let _router = switchboard::router(
        &["--grpc-addr", &grpc_port, "--redis-url", &redis.url()],
        &[],
    );
    // Sockets stayed open; once the edge replays, group delivery resumes
    // and no one re-joins (presence survived in Redis).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        alice
            .send_json(&json!({"msg_type":"msg","target":"group","msg":"anyone?"}))
            .await;
        if let Some(switchboard_testkit::ws::Event::Text(text)) =
            bob.recv(Duration::from_millis(300)).await
        {
            let m: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_ne!(
                m["payload"]["event"], "join",
                "replay must not announce joins: {m}"
            );
            if m["msg"] == "anyone?" {
                break;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "delivery never resumed"
        );
    }
    // While the router was down alice was told her messages were lost.
    alice
        .send_json(&json!({"msg_type":"presence","target":"echo"}))
        .await;
    let answer = alice
        .recv_json_until(|m| {
            if m["msg_type"] == "error" {
                assert_eq!(m["payload"]["code"], "internal", "{m}");
            }
            m["msg_type"] == "presence" && m["target"] == "echo"
        })
        .await;
    assert_eq!(
        answer["payload"]["members"],
        json!(["alice", "bob"]),
        "{answer}"
    );
}

fn redis_cli(redis: &RedisServer, args: &[&str]) -> String {
    let out = std::process::Command::new("redis-cli")
        .args(["-p", &redis.port().to_string()])
        .args(args)
        .output()
        .expect("redis-cli");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}
