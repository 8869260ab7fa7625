//! Events per second matched against 100,000 IoT subscriptions, against a
//! baseline of 1,000 subscriptions measured in the same run: matching
//! looks up the event's few topic keys, so unrelated subscriptions should
//! not slow it down.
//!
//! `cargo bench -p switchboard-router --bench iot_match`

use std::sync::Arc;
use std::time::{Duration, Instant};

use switchboard_proto::iot::Shape;
use switchboard_proto::{
    ConnectionOpened, Dialect, EdgeFrame, Payload, Subscribe, Topic, TopicKind, edge_frame,
};
use switchboard_router::topic::TopicKey;
use switchboard_router::{MemoryStore, NodeConfig, RouterNode};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

const CODE: &str = "deviceConn";
const PER_CONN: usize = 10;
const EVENTS: usize = 20_000;
const RUNS: usize = 5;

fn device_topic(device: usize) -> String {
    Shape::Device {
        product: "prod".into(),
        device: format!("dev_{device}"),
    }
    .topic_name(CODE)
}

/// A node with `subscriptions` device subscriptions from one edge, and the
/// edge's sender, which keeps its session open.
async fn node_with(subscriptions: usize) -> (Arc<RouterNode>, mpsc::Sender<EdgeFrame>) {
    let node = RouterNode::start(
        NodeConfig::default(),
        Arc::new(MemoryStore::new(90_000)),
        CancellationToken::new(),
    );
    let (tx, rx) = mpsc::channel(65_536);
    let mut deliveries = node
        .attach("bench-edge".into(), ReceiverStream::new(rx))
        .expect("the only edge");
    tokio::spawn(async move { while deliveries.recv().await.is_some() {} });
    for conn in 0..(subscriptions / PER_CONN) as u64 {
        let opened: EdgeFrame = edge_frame::Body::Opened(ConnectionOpened {
            conn_id: conn,
            tenant: "bench".into(),
            principal: format!("u{conn}"),
            kind: String::new(),
            dialect: Dialect::Iot as i32,
        })
        .into();
        tx.send(opened).await.unwrap();
        for k in 0..PER_CONN {
            let device = conn as usize * PER_CONN + k;
            let frame: EdgeFrame = edge_frame::Body::Subscribe(Subscribe {
                conn_id: conn,
                topic: Some(Topic::new("bench", TopicKind::Iot, &device_topic(device))),
                presence_member: String::new(),
                confirm: 0,
            })
            .into();
            tx.send(frame).await.unwrap();
        }
    }
    // Wait until the last subscription is in place.
    let last = TopicKey::new("bench", TopicKind::Iot, &device_topic(subscriptions - 1));
    while node
        .publish_once(vec![last.clone()], Payload::json(&b"{}"[..]))
        .await
        .unwrap()
        == 0
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (node, tx)
}

/// Events per second: each event matches its device, its project and its
/// area (three topic keys), and reaches one subscribed socket.
async fn events_per_second(node: &RouterNode, subscriptions: usize) -> f64 {
    let payload = Payload::json(&br#"{"code":200,"type":"down.pub"}"#[..]);
    let started = Instant::now();
    for i in 0..EVENTS {
        let device = (i * 7919) % subscriptions;
        let topics = vec![
            TopicKey::new("bench", TopicKind::Iot, &device_topic(device)),
            TopicKey::new(
                "bench",
                TopicKind::Iot,
                &Shape::Project {
                    project: "proj".into(),
                }
                .topic_name(CODE),
            ),
            TopicKey::new(
                "bench",
                TopicKind::Iot,
                &Shape::Area {
                    project: "proj".into(),
                    area: "area".into(),
                }
                .topic_name(CODE),
            ),
        ];
        let delivered = node.publish_once(topics, payload.clone()).await.unwrap();
        assert_eq!(delivered, 1);
    }
    EVENTS as f64 / started.elapsed().as_secs_f64()
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

#[tokio::main]
async fn main() {
    let (baseline, _edge_a) = node_with(1_000).await;
    let (large, _edge_b) = node_with(100_000).await;
    let mut base_runs = Vec::new();
    let mut large_runs = Vec::new();
    // Interleaved, so machine noise hits both alike.
    for _ in 0..RUNS {
        base_runs.push(events_per_second(&baseline, 1_000).await);
        large_runs.push(events_per_second(&large, 100_000).await);
    }
    let (base, large) = (median(base_runs), median(large_runs));
    println!("iot_match: {EVENTS} events x {RUNS} runs, 3 topic keys per event, 1 matching socket");
    println!("  baseline   1,000 subscriptions: {base:>10.0} events/s (median)");
    println!("  large    100,000 subscriptions: {large:>10.0} events/s (median)");
    println!("  ratio large/baseline: {:.2}", large / base);
}
