//! One slow edge session on the NATS transport never stalls the others: a
//! router queues at most 16,384 frames per session, and a session whose
//! frames pile up past that (here: its key-value requests wait on a
//! paused redis-server while it keeps sending) is dropped and counted,
//! while another edge of the same router keeps its deliveries. The slow
//! session is the edge's own NATS transport, proven with the cluster
//! secret, driven from the test.

use std::time::Duration;

use switchboard_cluster::trust::Gate;
use switchboard_common::trust::ClusterSecret;
use switchboard_edge::transport::Transport;
use switchboard_edge::transport::nats::Nats;
use switchboard_proto::{
    ConnectionOpened, Dialect, EdgeFrame, Heartbeat, KvAction, KvOp, Request, Topic, TopicKind,
    edge_frame, request,
};
use switchboard_testkit::cluster::{Cluster, scrape};
use switchboard_testkit::http::metric;
use switchboard_testkit::switchboard::{CLUSTER_SECRET, join_group};

const DROPPED: &str =
    "switchboard_transport_sessions_dropped_total{transport=\"nats\",reason=\"queue_full\"}";

fn kv_set(correlation_id: u64) -> EdgeFrame {
    edge_frame::Body::Request(Request {
        correlation_id,
        body: Some(request::Body::Kv(KvOp {
            topic: Some(Topic::new("t1", TopicKind::App, "app1")),
            action: KvAction::Set as i32,
            key: format!("k{correlation_id}"),
            value: "v".into(),
            ttl_ms: 0,
        })),
    })
    .into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_nats_session_is_dropped_and_other_edges_go_on() {
    let cluster = Cluster::start("nats", 1, 1).await;
    let router_admin = cluster.routers[0].addr("router-admin");
    let mut alice = join_group(cluster.edge(0), "t1", "room", "alice", None).await;
    let mut bob = join_group(cluster.edge(0), "t1", "room", "bob", None).await;
    let secret = ClusterSecret::parse(CLUSTER_SECRET).expect("the test secret");
    let transport = Nats {
        client: async_nats::connect(cluster.nats.url()).await.expect("NATS"),
        prefix: "switchboard".to_owned(),
        router_id: "router-0".to_owned(),
        gate: Gate::new(Some(secret)),
    };
    let session = transport.open("slow-edge").await.expect("a proven session");
    let opened: EdgeFrame = edge_frame::Body::Opened(ConnectionOpened {
        conn_id: 1,
        tenant: "t1".into(),
        principal: "app1".into(),
        kind: "app".into(),
        dialect: Dialect::Jsonrpc as i32,
    })
    .into();
    session.tx.send(opened).await.expect("send");
    assert_eq!(metric(&scrape(router_admin).await, DROPPED), 0.0);
    // Each request waits on the paused store; the heartbeats behind it
    // pile up in the session's queue.
    cluster.redis.pause();
    for round in 0..8u64 {
        session.tx.send(kv_set(round + 1)).await.expect("send");
        for _ in 0..4_000 {
            let heartbeat: EdgeFrame = edge_frame::Body::Heartbeat(Heartbeat {}).into();
            if session.tx.send(heartbeat).await.is_err() {
                break;
            }
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while metric(&scrape(router_admin).await, DROPPED) < 1.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stalled session was not dropped"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cluster.redis.resume();
    // The real edge's session was never held up: its group still delivers.
    alice
        .send_json(&serde_json::json!({"msg_type":"msg","target":"group","msg":"still here"}))
        .await;
    for ws in [&mut bob, &mut alice] {
        let got = ws.recv_json_until(|m| m["msg_type"] == "msg").await;
        assert_eq!(got["msg"], "still here");
    }
    assert_eq!(metric(&scrape(router_admin).await, DROPPED), 1.0);
}
