//! The JSON-RPC dialect across a cluster (3 routers, 2 edges, private
//! Redis and NATS): pushes to sockets on both edges, tool calls whose tool
//! socket is on another edge than the router taking the call, and
//! bindings that outlive the router that wrote them.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Value, json};
use switchboard_testkit::WsClient;
use switchboard_testkit::cluster::Cluster;
use switchboard_testkit::http;
use switchboard_testkit::jsonrpc::{
    api_post, app_socket, device_socket, notified, notify_sentinel, user_socket,
};
use switchboard_testkit::switchboard::device_token;

async fn notify_reaches_a_user_on_both_edges(transport: &str) {
    let cluster = Cluster::start(transport, 3, 2).await;
    let mut left = user_socket(cluster.edge(0), "alice", "t1", None).await;
    let mut right = user_socket(cluster.edge(1), "alice", "t1", None).await;
    let mut other_tenant = user_socket(cluster.edge(1), "alice", "t2", None).await;
    for router in 0..3 {
        let reply = api_post(
            cluster.router_api(router),
            "/api/v1/notify",
            "t1",
            &json!({"to": {"user": "alice"}, "type": "n", "data": router}),
        )
        .await;
        assert_eq!(reply.json(), json!({"delivered": 2}), "via router {router}");
        for ws in [&mut left, &mut right] {
            assert_eq!(notified(ws).await, ("n".to_owned(), json!(router)));
        }
    }
    notify_sentinel(
        cluster.router_api(0),
        "t2",
        json!({"user": "alice"}),
        &mut other_tenant,
    )
    .await;
}

/// The tool socket is on edge 1; every router takes a call in turn, so the
/// answer is relayed from the tool topic's owner to the caller's router.
async fn tool_calls_across_edges(transport: &str) {
    let cluster = Cluster::start(transport, 3, 2).await;
    let mut tool = app_socket(cluster.edge(1), "app1", "calc", "t1").await;
    for router in 0..3 {
        let api = cluster.router_api(router);
        let caller = tokio::spawn(async move {
            api_post(
                api,
                "/api/v1/apps/app1/tools/calc/call",
                "t1",
                &json!({"method": "add", "params": [1, router], "timeout_ms": 5000}),
            )
            .await
        });
        let request = tool.recv_json().await;
        assert_eq!(request["params"], json!([1, router]));
        let id = request["id"].clone();
        // A socket of the same tenant, app and tool on the other edge,
        // connected after the call was handed out, answers first with the
        // id it was not sent: refused (and counted), never relayed. Only on
        // the last call, so no later call of this tool is handed to it.
        let _impostor = if router == 2 {
            let mut impostor = app_socket(cluster.edge(0), "app1", "calc", "t1").await;
            let before = refused_answers(&cluster).await;
            impostor
                .send_json(&json!({"jsonrpc": "2.0", "method": "_notify",
                    "params": {"type": "tool.progress", "data": {"id": id, "impostor": true}}}))
                .await;
            impostor
                .send_json(&json!({"jsonrpc": "2.0", "result": "impostor", "id": id}))
                .await;
            wait_refused(&cluster, before + 2.0).await;
            Some(impostor)
        } else {
            None
        };
        tool.send_json(&json!({"jsonrpc": "2.0", "method": "_notify",
            "params": {"type": "tool.progress", "data": {"id": id}}}))
            .await;
        tool.send_json(&json!({"jsonrpc": "2.0", "result": 1 + router, "id": id}))
            .await;
        let reply = caller.await.unwrap();
        assert_eq!(reply.status, 200, "via router {router}");
        let lines = reply.json_lines();
        assert_eq!(
            lines,
            [
                json!({"type": "tool.progress", "data": {"id": id}}),
                json!({"result": 1 + router}),
            ],
            "via router {router}"
        );
    }
    let missing = api_post(
        cluster.router_api(0),
        "/api/v1/apps/app1/tools/other/call",
        "t1",
        &json!({"method": "m"}),
    )
    .await;
    assert_eq!(missing.status, 404);
}

/// Tool answers and notes refused by any router, summed over the cluster.
async fn refused_answers(cluster: &Cluster) -> f64 {
    let mut total = 0.0;
    for router in &cluster.routers {
        let metrics = http::get(router.addr("router-admin"), "/metrics", &[]).await;
        let text = String::from_utf8_lossy(&metrics.body).into_owned();
        for reason in ["wrong_socket", "unknown_call"] {
            total += http::metric(
                &text,
                &format!("switchboard_router_tool_answers_refused_total{{reason=\"{reason}\"}}"),
            );
        }
    }
    total
}

async fn wait_refused(cluster: &Cluster, at_least: f64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let refused = refused_answers(cluster).await;
        if refused >= at_least {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "only {refused} refused answers counted, wanted {at_least}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

switchboard_testkit::over_both_transports! {
    notify_reaches_a_user_on_both_edges;
    tool_calls_across_edges;
}

/// Devices spread over the routers; enough that the killed router owned
/// some of them.
const DEVICES: usize = 8;

/// How long a test waits for the cluster to heal after a kill: a
/// correctness bound, not a speed target.
const FAILOVER_LIMIT: Duration = Duration::from_secs(60);

/// A device socket on edge 0 whose open went through: until the cluster
/// drops the killed router from its view, its topics answer `-32603`.
async fn device_after_failover(cluster: &Cluster, hd: &str, killed: Instant) -> WsClient {
    let token = device_token(hd, Some("alice"), "t1");
    let url = format!("ws://{}/v3/wss/{hd}?token={token}", cluster.edge(0));
    loop {
        assert!(killed.elapsed() < FAILOVER_LIMIT, "{hd} never opened");
        let mut ws = WsClient::open(&url).await;
        ws.send_text("ping").await;
        if ws.recv_text().await == "pong" {
            return ws;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn bindings_survive_the_router_that_wrote_them() {
    let mut cluster = Cluster::start("grpc", 3, 2).await;
    let _alice = user_socket(cluster.edge(0), "alice", "t1", Some("conv_a")).await;
    let mut devices = Vec::new();
    for i in 0..DEVICES {
        let hd = format!("hd{i}");
        // Each device follows its owner's last conversation.
        let mut device = device_socket(cluster.edge(1), &hd, Some("alice"), "t1").await;
        device
            .send_json(
                &json!({"jsonrpc": "2.0", "method": "hardwares.switchConvId",
                "params": {"convId": format!("conv_{i}")}, "id": i}),
            )
            .await;
        assert_eq!(device.recv_json().await["result"]["code"], 200);
        devices.push(device);
    }
    cluster.routers[0].signal("KILL");
    // Reconnect every device: the binding comes from Redis, not a router.
    drop(devices);
    let killed = Instant::now();
    for i in 0..DEVICES {
        let hd = format!("hd{i}");
        let mut device = device_after_failover(&cluster, &hd, killed).await;
        // Routers see the dead one go at slightly different moments.
        loop {
            assert!(
                killed.elapsed() < FAILOVER_LIMIT,
                "conv_{i} never reached {hd} again"
            );
            let reply = api_post(
                cluster.router_api(1),
                "/api/v1/notify",
                "t1",
                &json!({"to": {"conv": format!("conv_{i}")}, "type": "after"}),
            )
            .await;
            if reply.status == 200 && reply.json()["delivered"] == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(notified(&mut device).await.0, "after");
    }
    let _ = cluster.routers[0].wait_exit(Duration::from_secs(1));
}

/// The NATS subjects of the server API: notify, ordered stream chunks
/// spread over every router by the queue group, app publish, tool calls
/// as request/reply with progress on the reply subject.
#[tokio::test]
async fn server_api_over_nats() {
    let cluster = Cluster::start("grpc", 3, 2).await;
    let mut user = user_socket(cluster.edge(0), "alice", "t1", None).await;
    let mut sub = app_socket(cluster.edge(1), "app1", "t", "t1").await;
    sub.send_json(
        &json!({"jsonrpc": "2.0", "method": "subscribe", "params": {"channel": "c"}, "id": 1}),
    )
    .await;
    assert_eq!(sub.recv_json().await["result"]["code"], 200);
    let client = async_nats::connect(cluster.nats.url()).await.unwrap();
    let request = |subject: &'static str, body: Value| {
        let client = client.clone();
        async move {
            let reply = client
                .request(subject, body.to_string().into())
                .await
                .unwrap();
            serde_json::from_slice::<Value>(&reply.payload).unwrap()
        }
    };

    let reply = request(
        "switchboard.api.t1.notify",
        json!({"to": {"user": "alice"}, "type": "n", "data": 1}),
    )
    .await;
    assert_eq!(reply, json!({"delivered": 1}));
    assert_eq!(notified(&mut user).await, ("n".to_owned(), json!(1)));
    let bad = request("switchboard.api.t1.notify", json!({"type": "n"})).await;
    assert_eq!(bad["error"]["field"], "to");

    // The same push twice with one Idempotency-Key header: one delivery.
    // (A duplicate would come before the stream chunks read below.)
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Idempotency-Key", "push-2");
    for expected in [1, 0] {
        let body = json!({"to": {"user": "alice"}, "type": "n", "data": 2});
        let reply = client
            .request_with_headers(
                "switchboard.api.t1.notify",
                headers.clone(),
                body.to_string().into(),
            )
            .await
            .unwrap();
        let reply: Value = serde_json::from_slice(&reply.payload).unwrap();
        assert_eq!(reply, json!({"delivered": expected}));
    }
    assert_eq!(notified(&mut user).await, ("n".to_owned(), json!(2)));
    let mut bad_key = async_nats::HeaderMap::new();
    bad_key.insert("Idempotency-Key", "with space");
    let reply = client
        .request_with_headers(
            "switchboard.api.t1.notify",
            bad_key,
            json!({"to": {"user": "alice"}, "type": "n", "data": 3})
                .to_string()
                .into(),
        )
        .await
        .unwrap();
    let reply: Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(reply["error"]["field"], "Idempotency-Key", "{reply}");

    // Published back to back, taken by different routers, delivered in order.
    const CHUNKS: u64 = 30;
    for seq in 0..CHUNKS {
        let chunk = json!({"to": {"user": "alice"}, "streamId": "s",
            "seq": seq, "delta": seq, "done": seq == CHUNKS - 1});
        client
            .publish("switchboard.api.t1.stream", chunk.to_string().into())
            .await
            .unwrap();
    }
    for seq in 0..CHUNKS {
        let (kind, data) = notified(&mut user).await;
        assert_eq!(kind, "stream");
        assert_eq!(data["seq"], seq, "{data}");
    }

    let reply = request(
        "switchboard.api.t1.apps.publish",
        json!({"appId": "app1", "channel": "c", "message": "m"}),
    )
    .await;
    assert_eq!(reply, json!({"receivers": 1}));
    assert_eq!(notified(&mut sub).await.1["message"], "m");

    let mut tool = app_socket(cluster.edge(1), "app1", "calc", "t1").await;
    let inbox = client.new_inbox();
    let mut answers = client.subscribe(inbox.clone()).await.unwrap();
    let call = json!({"appId": "app1", "toolId": "calc", "method": "sum", "params": [1, 2]});
    client
        .publish_with_reply(
            "switchboard.api.t1.tools.call",
            inbox,
            call.to_string().into(),
        )
        .await
        .unwrap();
    let asked = tool.recv_json().await;
    let id = asked["id"].clone();
    tool.send_json(&json!({"jsonrpc": "2.0", "method": "_notify",
        "params": {"type": "tool.progress", "data": {"id": id, "pct": 50}}}))
        .await;
    tool.send_json(&json!({"jsonrpc": "2.0", "result": 3, "id": id}))
        .await;
    let mut heard = Vec::new();
    for _ in 0..2 {
        let message = tokio::time::timeout(Duration::from_secs(5), answers.next())
            .await
            .unwrap()
            .unwrap();
        heard.push(serde_json::from_slice::<Value>(&message.payload).unwrap());
    }
    assert_eq!(
        heard,
        [
            json!({"type": "tool.progress", "data": {"id": id, "pct": 50}}),
            json!({"result": 3}),
        ]
    );
    let missing = request(
        "switchboard.api.t1.tools.call",
        json!({"appId": "app1", "toolId": "none", "method": "m"}),
    )
    .await;
    assert_eq!(missing["error"]["code"], "not_found");

    // A backend naming a reply subject in the gateway's own trees gets the
    // call run but no answer published there: a router never becomes a
    // deputy that writes onto internal subjects for a backend.
    let mut spy = client.subscribe("switchboard.>").await.unwrap();
    client.flush().await.unwrap();
    for (i, reply_to) in [
        "switchboard.internal.cluster.leave",
        "switchboard.internal.e.edge-0.router-0",
        "switchboard.api.t1.notify",
    ]
    .into_iter()
    .enumerate()
    {
        let body = json!({"to": {"user": "alice"}, "type": "deputy", "data": i});
        client
            .publish_with_reply(
                "switchboard.api.t1.notify",
                reply_to,
                body.to_string().into(),
            )
            .await
            .unwrap();
        // Handled: alice hears it, so its answer (if any) went out before
        // the next call's.
        assert_eq!(notified(&mut user).await, ("deputy".to_owned(), json!(i)));
    }
    let reply = request(
        "switchboard.api.t1.notify",
        json!({"to": {"user": "alice"}, "type": "sentinel", "data": 0}),
    )
    .await;
    assert_eq!(reply, json!({"delivered": 1}));
    assert_eq!(notified(&mut user).await.0, "sentinel");
    // The spy saw the three calls themselves and then the sentinel call;
    // no answer ever landed on a subject it watches.
    let mut seen = Vec::new();
    while seen.len() < 4 {
        let message = tokio::time::timeout(Duration::from_secs(5), spy.next())
            .await
            .expect("the spy hears the calls")
            .unwrap();
        let subject = message.subject.as_str();
        if subject.starts_with("switchboard.api.") {
            seen.push(serde_json::from_slice::<Value>(&message.payload).unwrap()["type"].clone());
        } else {
            // Membership and forwarding live here too; an answer does not.
            let body = String::from_utf8_lossy(&message.payload);
            assert!(
                subject != "switchboard.internal.cluster.leave" && !body.contains("delivered"),
                "a router answered onto {subject}: {body}"
            );
        }
    }
    assert_eq!(seen, ["deputy", "deputy", "deputy", "sentinel"]);
    let mut refused = 0.0;
    for router in &cluster.routers {
        let text = switchboard_testkit::cluster::scrape(router.addr("router-admin")).await;
        refused += http::metric(
            &text,
            r#"switchboard_api_nats_rejected_total{subject="reply",code="forbidden"}"#,
        );
    }
    assert_eq!(refused, 3.0);
}
