//! When a dependency fails (`00-common.md`): Redis paused or killed and
//! restarted, NATS killed and restarted under both transports, a router
//! frozen, an edge cut off by the network (a namespace). Real
//! servers, real processes; every wait is on an event (a reply, a metric,
//! a readiness change) with a generous correctness limit.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use switchboard_testkit::cluster::{Cluster, scrape, wait_metric};
use switchboard_testkit::http::{self, metric};
use switchboard_testkit::netns::TestHost;
use switchboard_testkit::switchboard;
use switchboard_testkit::switchboard::{Standalone, join_group, until_one_crosses};
use switchboard_testkit::ws::Event;
use switchboard_testkit::{NatsServer, RedisServer, WsClient, binary};

/// Long enough for any correctness wait here; never a speed target.
const LIMIT: Duration = Duration::from_secs(30);

/// The next JSON message within `limit` that satisfies `wanted`.
async fn recv_within(ws: &mut WsClient, limit: Duration, wanted: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match ws.recv(left).await {
            Some(Event::Text(text)) => {
                let value: Value = serde_json::from_str(&text).expect("JSON");
                if wanted(&value) {
                    return value;
                }
            }
            other => panic!("expected a matching message within {limit:?}, got {other:?}"),
        }
    }
}

async fn presence_answer(ws: &mut WsClient, limit: Duration) -> Value {
    ws.send_json(&json!({"msg_type":"presence","target":"echo"}))
        .await;
    recv_within(ws, limit, |m| {
        m["target"] == "echo" && (m["msg_type"] == "presence" || m["msg_type"] == "error")
    })
    .await
}

async fn readyz(admin: SocketAddr) -> u16 {
    http::get(admin, "/readyz", &[]).await.status
}

/// Polls `/readyz` of `admin` until it answers `status`.
async fn wait_readyz(admin: SocketAddr, status: u16) {
    let deadline = Instant::now() + LIMIT;
    while readyz(admin).await != status {
        assert!(
            Instant::now() < deadline,
            "{admin} never answered /readyz {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_paused_then_resumed() {
    let env = Standalone::redis(&[]).await;
    let admin = env.process.addr("router-admin");
    let mut alice = join_group(env.edge(), "t1", "room", "alice", None).await;
    let redis = env.redis.as_ref().expect("a redis-backed standalone");
    redis.pause();
    // A request that needs the store is answered `internal`, not never.
    let asked = Instant::now();
    let reply = presence_answer(&mut alice, LIMIT).await;
    assert_eq!(reply["msg_type"], "error", "{reply}");
    assert_eq!(reply["payload"]["code"], "internal", "{reply}");
    let waited = asked.elapsed();
    assert!(
        waited < Duration::from_secs(15),
        "answered after {waited:?}, past the request timeout"
    );
    wait_readyz(admin, 503).await;
    // Messages that need no store still flow.
    alice
        .send_json(&json!({"msg_type":"msg","target":"echo","msg":"alive"}))
        .await;
    recv_within(&mut alice, LIMIT, |m| m["msg"] == "alive").await;
    redis.resume();
    wait_readyz(admin, 200).await;
    let reply = presence_answer(&mut alice, LIMIT).await;
    assert_eq!(reply["payload"]["members"], json!(["alice"]), "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_then_restarted_empty() {
    let mut env = Standalone::redis(&[]).await;
    let admin = env.process.addr("router-admin");
    let edge = env.edge();
    let mut alice = join_group(edge, "t1", "room", "alice", None).await;
    let redis = env.redis.as_mut().expect("a redis-backed standalone");
    redis.kill();
    let reply = presence_answer(&mut alice, LIMIT).await;
    assert_eq!(reply["payload"]["code"], "internal", "{reply}");
    wait_readyz(admin, 503).await;
    redis.restart().await;
    wait_readyz(admin, 200).await;
    // Without a restart of Switchboard: new sockets join and are present,
    // and the socket that stayed open is present again once it speaks.
    let mut bob = join_group(edge, "t1", "room", "bob", None).await;
    alice
        .send_json(&json!({"msg_type":"heartbeat","target":"echo"}))
        .await;
    recv_within(&mut alice, LIMIT, |m| m["msg_type"] == "heartbeat").await;
    let deadline = Instant::now() + LIMIT;
    loop {
        let reply = presence_answer(&mut bob, LIMIT).await;
        if reply["payload"]["members"] == json!(["alice", "bob"]) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "presence never recovered: {reply}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until every process of `cluster` reports `frozen` for its view.
async fn wait_frozen(cluster: &Cluster, frozen: bool) {
    let admins = cluster
        .routers
        .iter()
        .map(|r| r.addr("router-admin"))
        .chain(cluster.edges.iter().map(|e| e.addr("edge-admin")));
    for admin in admins {
        let deadline = Instant::now() + LIMIT;
        loop {
            let text = scrape(admin).await;
            if (metric(&text, "switchboard_membership_frozen") == 1.0) == frozen {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{admin} never reported frozen={frozen}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Every process's view, as its `switchboard_live_routers`.
async fn live_routers(cluster: &Cluster) -> Vec<f64> {
    let mut live = Vec::new();
    for router in &cluster.routers {
        live.push(metric(
            &scrape(router.addr("router-admin")).await,
            "switchboard_live_routers",
        ));
    }
    for edge in &cluster.edges {
        live.push(metric(
            &scrape(edge.addr("edge-admin")).await,
            "switchboard_live_routers",
        ));
    }
    live
}

/// A group message from `from` reaches `to`, within `limit`.
async fn crosses(from: &mut WsClient, to: &mut WsClient, text: &str, limit: Duration) {
    from.send_json(&json!({"msg_type":"msg","target":"group","msg":text}))
        .await;
    recv_within(to, limit, |m| m["msg"] == text).await;
}

/// NATS dies for longer than the membership expiry and comes back. Over
/// gRPC the data path never stops; over NATS deliveries stop and resume.
/// Either way no view drops the routers and no socket closes.
async fn nats_killed_then_restarted(transport: &str) {
    let mut cluster = Cluster::start(transport, 3, 2).await;
    let mut a = join_group(cluster.edge(0), "t1", "room", "alice", None).await;
    let mut b = join_group(cluster.edge(1), "t1", "room", "bob", None).await;
    crosses(&mut a, &mut b, "before", LIMIT).await;

    cluster.nats.kill();
    wait_frozen(&cluster, true).await;
    // Past the membership expiry (2 s) with the bus silent.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        live_routers(&cluster).await,
        vec![3.0; 5],
        "a silent bus is not a dead router"
    );
    if transport == "grpc" {
        crosses(&mut a, &mut b, "during", LIMIT).await;
    }

    cluster.nats.restart().await;
    wait_frozen(&cluster, false).await;
    cluster.wait_views(3).await;
    // Deliveries resume on the sockets that stayed open (over NATS the
    // links come back first; retry until one message crosses).
    until_one_crosses(&mut a, &mut b, "after").await;
    assert_eq!(live_routers(&cluster).await, vec![3.0; 5]);
}

switchboard_testkit::over_both_transports! {
    nats_killed_then_restarted;
}

/// A router that stops answering (frozen, not dead) is dropped from every
/// view after the membership timeout, its topics move, and when it wakes
/// it rejoins with one session per edge and no duplicate deliveries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_router_is_dropped_then_rejoins_cleanly() {
    let cluster = Cluster::start("grpc", 2, 2).await;
    let mut a = join_group(cluster.edge(0), "t1", "room", "alice", None).await;
    let mut b = join_group(cluster.edge(1), "t1", "room", "bob", None).await;
    cluster.routers[0].signal("STOP");
    // Only router-1 answers scrapes now; views everywhere drop router-0.
    let awake = std::iter::once(cluster.routers[1].addr("router-admin"))
        .chain(cluster.edges.iter().map(|e| e.addr("edge-admin")));
    for admin in awake {
        let deadline = Instant::now() + LIMIT;
        while metric(&scrape(admin).await, "switchboard_live_routers") != 1.0 {
            assert!(Instant::now() < deadline, "{admin} kept the frozen router");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    until_one_crosses(&mut a, &mut b, "while-frozen").await;
    cluster.routers[0].signal("CONT");
    cluster.wait_views(2).await;
    cluster.wait_links(2).await;
    // One session per edge on the woken router, not a stale one beside it.
    let deadline = Instant::now() + LIMIT;
    loop {
        let text = scrape(cluster.routers[0].addr("router-admin")).await;
        if metric(&text, "switchboard_router_edges") == 2.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "router-0 holds {} edge sessions",
            metric(&text, "switchboard_router_edges")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    until_one_crosses(&mut a, &mut b, "after-wake").await;
    // Settled: each message arrives once, in order, then the sentinel.
    for i in 0..20 {
        a.send_json(&json!({"msg_type":"msg","target":"group","msg":format!("once-{i}")}))
            .await;
    }
    a.send_json(&json!({"msg_type":"msg","target":"group","msg":"sentinel"}))
        .await;
    let mut got = Vec::new();
    loop {
        let m = recv_within(&mut b, LIMIT, |m| m["msg_type"] == "msg").await;
        let text = m["msg"].as_str().unwrap_or_default().to_owned();
        if text == "sentinel" {
            break;
        }
        if text.starts_with("once-") {
            got.push(text);
        }
    }
    let expected: Vec<String> = (0..20).map(|i| format!("once-{i}")).collect();
    assert_eq!(got, expected, "every message once, in order");
}

/// An edge cut off from the routers and NATS by the network, while every
/// process stays alive: the routers drop its sockets (their clients leave
/// their groups), and when the network heals it rejoins with one session
/// per router, its clients present again and delivering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_cut_off_by_the_network_is_dropped_then_rejoins() {
    let host = TestHost::create();
    let nats = NatsServer::start_on(&host.host_ip).await;
    let redis = RedisServer::start().await;
    let grpc_bind = format!("{}:0", host.host_ip);
    let routers: Vec<_> = (0..2)
        .map(|i| {
            switchboard::router(
                &["--grpc-addr", &grpc_bind],
                &[
                    ("SWITCHBOARD_ROUTER_ID", format!("router-{i}")),
                    ("SWITCHBOARD_NATS_URL", nats.url()),
                    ("SWITCHBOARD_REDIS_URL", redis.url()),
                ],
            )
        })
        .collect();
    let nats_env = [("SWITCHBOARD_NATS_URL", nats.url())];
    let near = switchboard::edge_with_env(
        &[],
        &[
            nats_env[0].clone(),
            ("SWITCHBOARD_EDGE_ID", "edge-near".to_owned()),
        ],
    );
    // The far edge lives in the namespace: it reaches routers and NATS
    // over the link, and its clients reach it over the same link.
    let mut env = switchboard::common_env();
    env.extend([
        nats_env[0].clone(),
        ("SWITCHBOARD_EDGE_ID", "edge-far".to_owned()),
    ]);
    let far_addr = format!("{}:0", host.ip);
    let far = host.start(
        &binary("edge"),
        &["--addr", &far_addr, "--admin-addr", &far_addr],
        &env,
        &["edge", "edge-admin"],
    );
    for edge in [&near, &far] {
        wait_metric(
            edge.addr("edge-admin"),
            "switchboard_edge_router_links_up",
            2.0,
        )
        .await;
    }
    let mut a = join_group(near.addr("edge"), "t1", "room", "alice", None).await;
    let mut b = join_group(far.addr("edge"), "t1", "room", "bob", None).await;
    a.recv_json_until(|m| m["payload"]["event"] == "join" && m["payload"]["client_id"] == "bob")
        .await;

    let router_ports: Vec<u16> = routers
        .iter()
        .map(|r| r.addr("router-grpc").port())
        .collect();
    let mut cut = router_ports.clone();
    cut.push(nats.port());
    host.cut(&cut);
    // The routers notice the silent link (keepalive) and drop its sockets.
    let leave = recv_within(&mut a, Duration::from_secs(60), |m| {
        m["payload"]["event"] == "leave"
    })
    .await;
    assert_eq!(leave["payload"]["client_id"], "bob");
    for router in &routers {
        wait_metric(router.addr("router-admin"), "switchboard_router_edges", 1.0).await;
    }

    host.heal();
    // The far edge comes back on its own: one session per router, bob
    // present again, messages crossing both ways on the same sockets.
    let join = recv_within(&mut a, Duration::from_secs(60), |m| {
        m["payload"]["event"] == "join"
    })
    .await;
    assert_eq!(join["payload"]["client_id"], "bob");
    for router in &routers {
        wait_metric(router.addr("router-admin"), "switchboard_router_edges", 2.0).await;
    }
    until_one_crosses(&mut b, &mut a, "healed-far").await;
    until_one_crosses(&mut a, &mut b, "healed-near").await;
    for router in &routers {
        let text = scrape(router.addr("router-admin")).await;
        assert_eq!(
            metric(&text, "switchboard_router_edges"),
            2.0,
            "no duplicate sessions"
        );
    }
}
