//! The cluster: 3 routers and 2 edges as separate processes with private
//! Redis and NATS, checked with real WebSocket clients. Every scenario
//! runs over the gRPC and the NATS transport.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use switchboard_testkit::WsClient;
use switchboard_testkit::cluster::{Cluster, scrape};
use switchboard_testkit::http::{self, metric};
use switchboard_testkit::switchboard::{API_KEY, join_group, token};
use switchboard_testkit::ws::Event;

/// Groups spread over the routers; enough that every router owns some.
const GROUPS: usize = 12;

/// A client on edge 0 and one on edge 1 in each group.
struct Pairs {
    left: Vec<WsClient>,
    right: Vec<WsClient>,
}

fn group(i: usize) -> String {
    format!("group_{i}")
}

async fn pairs(cluster: &Cluster, tenant: &str) -> Pairs {
    let mut left = Vec::new();
    let mut right = Vec::new();
    for i in 0..GROUPS {
        let mut a = join_group(
            cluster.edge(0),
            tenant,
            &group(i),
            &format!("left_{i}"),
            None,
        )
        .await;
        let b = join_group(
            cluster.edge(1),
            tenant,
            &group(i),
            &format!("right_{i}"),
            None,
        )
        .await;
        // Left sees right join: presence crosses edges.
        let joined = a
            .recv_json_until(|m| {
                m["payload"]["event"] == "join" && m["payload"]["client_id"] == format!("right_{i}")
            })
            .await;
        assert_eq!(joined["payload"]["count"], 2);
        left.push(a);
        right.push(b);
    }
    Pairs { left, right }
}

fn is_text(m: &Value, text: &str) -> bool {
    m["msg_type"] == "msg" && m["msg"] == text
}

/// Sends from left to right in every group and waits for each delivery.
async fn exchange(pairs: &mut Pairs, text: &str) {
    for (a, b) in pairs.left.iter_mut().zip(pairs.right.iter_mut()) {
        a.send_json(&json!({"msg_type":"msg","target":"group","msg":text}))
            .await;
        let got = b.recv_json_until(|m| is_text(m, text)).await;
        assert_eq!(got["msg"], text);
    }
}

async fn router_publishes(cluster: &Cluster, i: usize) -> f64 {
    let text = scrape(cluster.routers[i].addr("router-admin")).await;
    metric(
        &text,
        r#"switchboard_router_publishes_total{kind="TOPIC_KIND_GROUP"}"#,
    )
}

async fn groups_and_presence_across_edges(transport: &str) {
    let cluster = Cluster::start(transport, 3, 2).await;
    let mut pairs = pairs(&cluster, "t1").await;
    exchange(&mut pairs, "hello across").await;
    for i in 0..3 {
        assert!(
            router_publishes(&cluster, i).await > 0.0,
            "router {i} owns no group"
        );
    }
    // Direct and broadcast cross edges too.
    pairs.left[0]
        .send_json(&json!({"msg_type":"msg","target":"direct","to_id":"right_5","msg":"dm"}))
        .await;
    assert_eq!(
        pairs.right[5].recv_json_until(|m| is_text(m, "dm")).await["from_id"],
        "left_0"
    );
    let mut admin = join_group(cluster.edge(1), "t1", "ops", "admin", Some("broadcast")).await;
    admin
        .send_json(&json!({"msg_type":"msg","target":"broadcast","msg":"all hands"}))
        .await;
    for ws in pairs.left.iter_mut().chain(pairs.right.iter_mut()) {
        ws.recv_json_until(|m| is_text(m, "all hands")).await;
    }
    // Presence queries answer from any edge.
    pairs.right[3]
        .send_json(&json!({"msg_type":"presence","target":"echo"}))
        .await;
    let answer = pairs.right[3]
        .recv_json_until(|m| m["target"] == "echo")
        .await;
    assert_eq!(answer["payload"]["members"], json!(["left_3", "right_3"]));
}

async fn api_calls_on_any_router(transport: &str) {
    let cluster = Cluster::start(transport, 3, 2).await;
    let mut pairs = pairs(&cluster, "t1").await;
    let service = format!("Bearer {}", token("backend", "service", "t1", None));
    for i in 0..GROUPS {
        let router = i % 3;
        let reply = http::post_json(
            cluster.router_api(router),
            &format!("/api/v1/groups/{}/messages", group(i)),
            &[("authorization", &service)],
            &json!({"msg_type":"msg","target":"group","msg":"from api"}),
        )
        .await;
        assert_eq!(
            reply.json(),
            json!({"delivered": 2}),
            "group {i} via router {router}"
        );
        for ws in [&mut pairs.left[i], &mut pairs.right[i]] {
            assert_eq!(
                ws.recv_json_until(|m| is_text(m, "from api")).await["from_id"],
                "server"
            );
        }
        let presence = http::get(
            cluster.router_api((router + 1) % 3),
            &format!("/api/v1/groups/{}/presence", group(i)),
            &[("authorization", &service)],
        )
        .await;
        assert_eq!(presence.json()["count"], 2);
    }
    let reply = http::post_json(
        cluster.router_api(2),
        "/api/v1/broadcast",
        &[("authorization", &service)],
        &json!({"msg_type":"cmd","cmd":"RELOAD"}),
    )
    .await;
    assert_eq!(reply.json(), json!({"delivered": 2 * GROUPS}));
    // The cluster's shape is the operator's to see: the API key without
    // X-Tenant.
    let operator = format!("Bearer {API_KEY}");
    let stats = http::get(
        cluster.router_api(0),
        "/api/v1/stats",
        &[("authorization", &operator)],
    )
    .await;
    assert_eq!(stats.json()["routers"].as_array().map(Vec::len), Some(3));
    let tenant_view = http::get(
        cluster.router_api(0),
        "/api/v1/stats",
        &[("authorization", &service)],
    )
    .await
    .json();
    assert!(tenant_view.get("routers").is_none(), "{tenant_view}");
}

/// Keeps sending in every group until each has delivered once after `since`.
async fn wait_every_group_delivers(pairs: &mut Pairs, since: Instant, bound: Duration) -> Duration {
    let mut pending: Vec<usize> = (0..GROUPS).collect();
    let mut round = 0;
    while !pending.is_empty() {
        assert!(
            since.elapsed() < bound,
            "groups {pending:?} never delivered again"
        );
        round += 1;
        let text = format!("probe {round}");
        for &i in &pending {
            pairs.left[i]
                .send_json(&json!({"msg_type":"msg","target":"group","msg":text}))
                .await;
        }
        let mut still = Vec::new();
        // One short window for the whole round keeps the measurement fine.
        let deadline = tokio::time::Instant::now() + Duration::from_millis(100);
        for &i in &pending {
            let mut delivered = false;
            loop {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                let Some(event) = pairs.right[i]
                    .recv(left.max(Duration::from_millis(1)))
                    .await
                else {
                    break;
                };
                match event {
                    Event::Text(t) => {
                        let m: Value = serde_json::from_str(&t).unwrap();
                        assert_ne!(m["payload"]["event"], "leave", "no one left: {m}");
                        assert_ne!(m["payload"]["event"], "join", "no one re-joined: {m}");
                        if m["msg_type"] == "msg"
                            && m["msg"].as_str().is_some_and(|s| s.starts_with("probe"))
                        {
                            delivered = true;
                            break;
                        }
                    }
                    other => panic!("socket of group {i} closed: {other:?}"),
                }
            }
            if !delivered {
                still.push(i);
            }
        }
        pending = still;
    }
    since.elapsed()
}

/// How long a test waits for the cluster to heal: a correctness bound,
/// never a speed target (those are measured by the benchmarks).
const FAILOVER_LIMIT: Duration = Duration::from_secs(60);

async fn router_killed(transport: &str) {
    let mut cluster = Cluster::start(transport, 3, 2).await;
    let mut pairs = pairs(&cluster, "t1").await;
    exchange(&mut pairs, "before").await;
    let killed = Instant::now();
    cluster.routers[0].signal("KILL");
    // A correctness bound, far past the membership timeout; how fast
    // failover is belongs to the benchmarks.
    let resumed = wait_every_group_delivers(&mut pairs, killed, FAILOVER_LIMIT).await;
    println!("{transport}: every group delivered again {resumed:?} after kill -9");
    // Sockets on both edges stayed open; their errors while the owner was
    // gone were `internal`, never a close.
    for ws in pairs.left.iter_mut().chain(pairs.right.iter_mut()) {
        ws.send_json(&json!({"msg_type":"msg","target":"echo","msg":"still open"}))
            .await;
        let echoed = ws
            .recv_json_until(|m| m["target"] == "echo" && m["msg_type"] != "error")
            .await;
        assert_eq!(echoed["msg"], "still open");
    }
    cluster.wait_links(2).await;
    exchange(&mut pairs, "after").await;
    let _ = cluster.routers[0].wait_exit(Duration::from_secs(1));
}

async fn router_joins(transport: &str) {
    let mut cluster = Cluster::start(transport, 2, 2).await;
    let mut pairs = pairs(&cluster, "t1").await;
    exchange(&mut pairs, "two routers").await;
    cluster.add_router("default");
    cluster.wait_links(3).await;
    let since = Instant::now();
    wait_every_group_delivers(&mut pairs, since, FAILOVER_LIMIT).await;
    exchange(&mut pairs, "three routers").await;
    assert!(
        router_publishes(&cluster, 2).await > 0.0,
        "the new router took some groups"
    );
}

async fn edge_killed(transport: &str) {
    let cluster = Cluster::start(transport, 3, 2).await;
    let mut pairs = pairs(&cluster, "t1").await;
    let killed = Instant::now();
    cluster.edges[1].signal("KILL");
    for (i, ws) in pairs.left.iter_mut().enumerate() {
        let right = format!("right_{i}");
        let leave = loop {
            let left = FAILOVER_LIMIT.saturating_sub(killed.elapsed());
            match ws.recv(left).await {
                Some(Event::Text(text)) => {
                    let m: Value = serde_json::from_str(&text).unwrap();
                    if m["payload"]["event"] == "leave"
                        && m["payload"]["client_id"] == right.as_str()
                    {
                        break m;
                    }
                }
                other => panic!("group {i}: no leave for {right}: {other:?}"),
            }
        };
        assert_eq!(leave["payload"]["count"], 1);
    }
    let took = killed.elapsed();
    println!("{transport}: presence leaves for a killed edge after {took:?}");
    drop(pairs.right);
}

async fn tenant_pool(transport: &str) {
    let cluster = Cluster::with_pools(
        transport,
        &["default", "default", "vip"],
        "vip_tenant=vip",
        2,
    )
    .await;
    let mut vip = pairs(&cluster, "vip_tenant").await;
    let mut normal = pairs(&cluster, "t1").await;
    exchange(&mut vip, "vip hello").await;
    exchange(&mut normal, "normal hello").await;
    // Each tenant's service token reads its own tenant's counts per router.
    let counts = |tenant: &'static str| {
        let service = format!("Bearer {}", token("backend", "service", tenant, None));
        let cluster = &cluster;
        async move {
            let mut connections = Vec::new();
            for i in 0..3 {
                let stats = http::get(
                    cluster.router_api(i),
                    "/api/v1/stats",
                    &[("authorization", &service)],
                )
                .await;
                connections.push(stats.json()["total_connections"].as_i64().unwrap_or(-1));
            }
            connections
        }
    };
    let vip_counts = counts("vip_tenant").await;
    let t1_counts = counts("t1").await;
    // Every vip socket lives on the vip router only, and no other does.
    assert_eq!(
        vip_counts,
        vec![0, 0, (2 * GROUPS) as i64],
        "{vip_counts:?}"
    );
    assert_eq!(t1_counts[2], 0, "{t1_counts:?}");
    assert!(
        t1_counts[0] + t1_counts[1] >= (2 * GROUPS) as i64,
        "{t1_counts:?}"
    );
    let vip_publishes = router_publishes(&cluster, 2).await;
    assert_eq!(
        vip_publishes, GROUPS as f64,
        "the vip router saw only vip groups"
    );
}

switchboard_testkit::over_both_transports! {
    groups_and_presence_across_edges;
    api_calls_on_any_router;
    router_killed;
    router_joins;
    edge_killed;
    tenant_pool;
}

/// The IoT topics of one event, and the routers owning them.
fn iot_owners(tenant: &str, code: &str, device: &str) -> Vec<String> {
    use switchboard_cluster::TenantPools;
    use switchboard_proto::iot::Shape;
    let view = switchboard_testkit::views::three_routers();
    let shapes = [
        Shape::Device {
            product: "prod".into(),
            device: device.into(),
        },
        Shape::Property {
            product: "prod".into(),
            device: device.into(),
            identifier: "power".into(),
        },
        Shape::Project {
            project: "proj".into(),
        },
        Shape::Area {
            project: "proj".into(),
            area: "area".into(),
        },
    ];
    shapes
        .iter()
        .map(|shape| {
            let hash = switchboard_proto::ownership::topic_hash(
                tenant,
                switchboard_proto::TopicKind::Iot,
                &shape.topic_name(code),
            );
            view.owner(&TenantPools::default(), tenant, hash)
                .unwrap()
                .id
                .clone()
        })
        .collect()
}

async fn iot_connect(cluster: &Cluster, edge: usize) -> WsClient {
    let token = token("viewer", "user", "t1", None);
    let url = format!(
        "ws://{}/api/v1/system/common/websocket/connect?app-code=console&token={token}",
        cluster.edge(edge)
    );
    let mut ws = WsClient::open(&url).await;
    assert_eq!(ws.recv_json().await["code"], 200);
    ws
}

async fn iot_subscribe(ws: &mut WsClient, code: &str, params: Value) {
    ws.send_json(&json!({"type":"up.sub","body":{"code":code,"params":params}}))
        .await;
    assert_eq!(ws.recv_json().await["code"], 200);
}

async fn iot_one_copy_across_owners(transport: &str) {
    let cluster = Cluster::start(transport, 3, 2).await;
    let code = "devicePropertyReport";
    // A device whose four matching topics live on at least two routers.
    let device = (0..100)
        .map(|i| format!("dev_{i}"))
        .find(|d| {
            let mut owners = iot_owners("t1", code, d);
            owners.sort();
            owners.dedup();
            owners.len() >= 2
        })
        .expect("some device spreads over routers");
    let mut sockets = Vec::new();
    for edge in 0..2 {
        let mut ws = iot_connect(&cluster, edge).await;
        iot_subscribe(
            &mut ws,
            code,
            json!({"productID":"prod","deviceName":device}),
        )
        .await;
        iot_subscribe(
            &mut ws,
            code,
            json!({"productID":"prod","deviceName":device,"identifier":"power"}),
        )
        .await;
        iot_subscribe(&mut ws, code, json!({"projectID":"proj"})).await;
        iot_subscribe(&mut ws, code, json!({"projectID":"proj","areaID":"area"})).await;
        sockets.push(ws);
    }
    let service = format!("Bearer {}", token("backend", "service", "t1", None));
    for router in 0..3 {
        let event = json!({"code":code,"projectID":"proj","areaID":"area",
            "body":{"device":{"productID":"prod","deviceName":device},"identifier":"power","param":{"power":router}}});
        let reply = http::post_json(
            cluster.router_api(router),
            "/api/v1/iot/events",
            &[("authorization", &service)],
            &event,
        )
        .await;
        assert_eq!(reply.json(), json!({"delivered": 2}), "via router {router}");
        // One copy: the next event, not a second copy, comes next (the
        // last one is followed by the sentinel below).
        for ws in &mut sockets {
            let push = ws.recv_json().await;
            assert_eq!(push["body"]["param"]["power"], router, "{push}");
        }
    }
    let sentinel = json!({"code":code,"projectID":"proj","areaID":"area",
        "body":{"device":{"productID":"prod","deviceName":device},"identifier":"power","param":{"power":"sentinel"}}});
    let reply = http::post_json(
        cluster.router_api(0),
        "/api/v1/iot/events",
        &[("authorization", &service)],
        &sentinel,
    )
    .await;
    assert_eq!(reply.json(), json!({"delivered": 2}));
    for ws in &mut sockets {
        let push = ws.recv_json().await;
        assert_eq!(push["body"]["param"]["power"], "sentinel", "{push}");
    }
}

async fn iot_events_over_nats(transport: &str) {
    let cluster = Cluster::start(transport, 3, 2).await;
    let mut ws = iot_connect(&cluster, 1).await;
    iot_subscribe(
        &mut ws,
        "deviceConn",
        json!({"productID":"prod","deviceName":"d1"}),
    )
    .await;
    let client = async_nats::connect(cluster.nats.url()).await.unwrap();
    // The tenant is the subject's token. A bad message is answered and
    // does not stop the consumer.
    let subject = "switchboard.api.t1.iot.events";
    let bad = client
        .request(subject, r#"{"code":"deviceConn"}"#.into())
        .await
        .unwrap();
    let bad: Value = serde_json::from_slice(&bad.payload).unwrap();
    assert_eq!(bad["error"]["field"], "body");
    let garbage = client.request(subject, "not json".into()).await.unwrap();
    let garbage: Value = serde_json::from_slice(&garbage.payload).unwrap();
    assert_eq!(garbage["error"]["code"], "invalid_json");
    let event = json!({"code":"deviceConn","body":{"device":{"productID":"prod","deviceName":"d1"},"online":true}});
    let reply = client
        .request(subject, event.to_string().into())
        .await
        .unwrap();
    let reply: Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(reply, json!({"delivered": 1}));
    let push = ws.recv_json().await;
    assert_eq!(push["body"]["online"], true);
    // Fire-and-forget publishing works too; a body may repeat its tenant.
    let mut repeated = event.clone();
    repeated["tenant"] = json!("t1");
    client
        .publish(subject, repeated.to_string().into())
        .await
        .unwrap();
    assert_eq!(ws.recv_json().await["path"], "deviceConn");
    // Once: the next push is the sentinel, not a second copy.
    let mut sentinel = event.clone();
    sentinel["body"]["online"] = json!("sentinel");
    client
        .request(subject, sentinel.to_string().into())
        .await
        .unwrap();
    assert_eq!(ws.recv_json().await["body"]["online"], "sentinel");
}

mod iot_grpc {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_copy_across_owners() {
        super::iot_one_copy_across_owners("grpc").await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn events_over_nats() {
        super::iot_events_over_nats("grpc").await;
    }
}

mod iot_nats {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_copy_across_owners() {
        super::iot_one_copy_across_owners("nats").await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn events_over_nats() {
        super::iot_events_over_nats("nats").await;
    }
}
