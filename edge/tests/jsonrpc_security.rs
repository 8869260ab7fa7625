//! The JSON-RPC dialect under attack, with real processes on the memory
//! store and on a private `redis-server`: tool answers from sockets the
//! call was not sent to, and tenant B's sockets and service token reaching
//! for tenant A's pushes, streams, app keys and channels, tool calls and
//! conversations. Absence is proven with a sentinel: after what must not
//! arrive, something that must arrive is sent on the same path, and it is
//! the first thing heard.

use std::time::Duration;

use serde_json::{Value, json};
use switchboard_testkit::WsClient;
use switchboard_testkit::http::{self, Reply};
use switchboard_testkit::jsonrpc::{
    app_socket, assert_error, assert_ok, call, device_socket, notified, service_post, user_socket,
};

const A: &str = "tenant-a";
const B: &str = "tenant-b";

switchboard_testkit::standalone_env!();

impl Env {
    /// A POST with `tenant`'s service token.
    async fn post(&self, tenant: &str, path: &str, body: &Value) -> Reply {
        service_post(self.api(), path, tenant, body).await
    }

    async fn refused_answers(&self) -> f64 {
        let metrics = http::get(self.0.process.addr("edge-admin"), "/metrics", &[]).await;
        let text = String::from_utf8_lossy(&metrics.body).into_owned();
        ["wrong_socket", "unknown_call"]
            .iter()
            .map(|reason| {
                http::metric(
                    &text,
                    &format!(
                        "switchboard_router_tool_answers_refused_total{{reason=\"{reason}\"}}"
                    ),
                )
            })
            .sum()
    }

    /// Waits until `at_least` tool answers or notes were refused in all.
    async fn wait_refused(&self, at_least: f64) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let refused = self.refused_answers().await;
            if refused >= at_least {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "only {refused} refused answers counted, wanted {at_least}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

switchboard_testkit::against_both_stores! {
    tool_answers_come_only_from_the_socket_called;
    another_tenant_reaches_nothing;
    conversations_of_another_tenant_are_out_of_reach;
}

/// A tool call's progress and answer as `answerer` sends them.
async fn answer(answerer: &mut WsClient, id: &Value, result: Value) {
    answerer
        .send_json(&json!({"jsonrpc": "2.0", "method": "_notify",
            "params": {"type": "tool.progress", "data": {"id": id, "from": result}}}))
        .await;
    answerer
        .send_json(&json!({"jsonrpc": "2.0", "result": result, "id": id}))
        .await;
}

/// Only the socket a call was handed to can answer it or report progress:
/// not a second socket of the same tenant, app and tool, not another tool
/// of the app, not the same app and tool of another tenant, with the id it
/// observed or one it guessed.
async fn tool_answers_come_only_from_the_socket_called(env: Env) {
    let mut called = app_socket(env.edge(), "app1", "search", A).await;
    let api = env.api();
    let caller = tokio::spawn(async move {
        service_post(
            api,
            "/api/v1/apps/app1/tools/search/call",
            A,
            &json!({"method": "run", "timeout_ms": 10_000}),
        )
        .await
    });
    let request = called.recv_json().await;
    let id = request["id"].clone();
    let text = id.as_str().expect("a string id").to_owned();
    let (random, router) = text
        .strip_prefix("sb-")
        .and_then(|rest| rest.split_once('@'))
        .expect("sb-{random}@{router}");
    assert_eq!(random.len(), 32, "128 random bits: {text}");
    let guessed = json!(format!("sb-{}@{router}", "0".repeat(32)));

    // Sockets that may exist but were not sent the call.
    let mut same_tool = app_socket(env.edge(), "app1", "search", A).await;
    let mut other_tool = app_socket(env.edge(), "app1", "other", A).await;
    let mut other_tenant = app_socket(env.edge(), "app1", "search", B).await;
    let before = env.refused_answers().await;
    for (attacker, label) in [
        (&mut same_tool, "same tool"),
        (&mut other_tool, "other tool"),
        (&mut other_tenant, "other tenant"),
    ] {
        answer(attacker, &id, json!(label)).await;
        answer(attacker, &guessed, json!(label)).await;
    }
    // Every one of those twelve frames is refused while the call waits.
    env.wait_refused(before + 12.0).await;
    answer(&mut called, &id, json!("the real answer")).await;
    let reply = caller.await.unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.json_lines(),
        [
            json!({"type": "tool.progress", "data": {"id": id, "from": "the real answer"}}),
            json!({"result": "the real answer"}),
        ],
        "nothing from the other sockets reached the caller"
    );
    // Late answers to a finished call are refused as well.
    answer(&mut same_tool, &id, json!("late")).await;
    env.wait_refused(before + 14.0).await;
}

/// Tenant B's sockets and service token get nothing of tenant A's: not a
/// push to a user, a conversation or a device, not a stream, not an app
/// key or channel message, not a tool call.
async fn another_tenant_reaches_nothing(env: Env) {
    // Tenant A: alice in conversation c1 with her device, an app listening.
    let mut a_user = user_socket(env.edge(), "alice", A, Some("c1")).await;
    let mut a_device = device_socket(env.edge(), "hd1", Some("alice"), A).await;
    let mut a_app = app_socket(env.edge(), "app1", "search", A).await;
    let sub = call(
        &mut a_app,
        "subscribe",
        json!({"channel": "news"}),
        json!(1),
    )
    .await;
    assert_ok(&sub, &json!(1));
    let set = call(
        &mut a_app,
        "redis.set",
        json!({"key": "secret", "value": "a-only"}),
        json!(2),
    )
    .await;
    assert_ok(&set, &json!(2));
    // Tenant B: the same ids everywhere.
    let mut b_user = user_socket(env.edge(), "alice", B, Some("c1")).await;
    let mut b_device = device_socket(env.edge(), "hd1", Some("alice"), B).await;
    let mut b_app = app_socket(env.edge(), "app1", "other", B).await;
    let sub = call(
        &mut b_app,
        "subscribe",
        json!({"channel": "news"}),
        json!(1),
    )
    .await;
    assert_ok(&sub, &json!(1));

    // B's app reads and deletes nothing of A's keys.
    let get = call(&mut b_app, "redis.get", json!({"key": "secret"}), json!(3)).await;
    assert_eq!(assert_ok(&get, &json!(3))["value"], Value::Null);
    let del = call(&mut b_app, "redis.del", json!({"key": "secret"}), json!(4)).await;
    assert_eq!(assert_ok(&del, &json!(4))["deleted"], 0);
    let get = call(&mut a_app, "redis.get", json!({"key": "secret"}), json!(5)).await;
    assert_eq!(assert_ok(&get, &json!(5))["value"], "a-only");

    // B's service token pushes with A's ids: only B's sockets hear it.
    for to in [
        json!({"user": "alice"}),
        json!({"conv": "c1"}),
        json!({"device": "hd1"}),
    ] {
        let reply = env
            .post(B, "/api/v1/notify", &json!({"to": to, "type": "from-b"}))
            .await;
        assert_eq!(reply.status, 200, "{to}");
    }
    let reply = env
        .post(
            B,
            "/api/v1/stream",
            &json!({"to": {"conv": "c1"}, "streamId": "s", "seq": 0, "delta": "b", "done": true}),
        )
        .await;
    assert_eq!(reply.status, 200);
    let reply = env
        .post(
            B,
            "/api/v1/apps/app1/publish",
            &json!({"channel": "news", "message": "from-b"}),
        )
        .await;
    assert_eq!(
        reply.json(),
        json!({"receivers": 1}),
        "B's own subscriber only"
    );
    // Another of B's app sockets publishes on the channel name A listens to.
    let mut b_publisher = app_socket(env.edge(), "app1", "publisher", B).await;
    let published = call(
        &mut b_publisher,
        "redis.publish",
        json!({"channel": "news", "message": "from-b-app"}),
        json!(6),
    )
    .await;
    assert_eq!(assert_ok(&published, &json!(6))["receivers"], 1);
    // B's service token calls A's tool: B has no such tool socket.
    let reply = env
        .post(
            B,
            "/api/v1/apps/app1/tools/search/call",
            &json!({"method": "steal", "timeout_ms": 2000}),
        )
        .await;
    assert_eq!(reply.status, 404, "{:?}", reply.body);
    // And B's service token may not name tenant A.
    let auth = format!(
        "Bearer {}",
        switchboard_testkit::switchboard::token("backend", "service", B, None)
    );
    let cross = http::post_json(
        env.api(),
        "/api/v1/notify",
        &[("authorization", &auth), ("x-tenant", A)],
        &json!({"to": {"user": "alice"}, "type": "from-b"}),
    )
    .await;
    assert_eq!(cross.status, 403);

    // Sentinels from A, on every path B tried: each is the first thing heard.
    for (to, ws) in [
        (json!({"user": "alice"}), &mut a_user),
        (json!({"device": "hd1"}), &mut a_device),
    ] {
        let reply = env
            .post(A, "/api/v1/notify", &json!({"to": to, "type": "sentinel"}))
            .await;
        assert_eq!(reply.json(), json!({"delivered": 1}), "{to}");
        assert_eq!(notified(ws).await.0, "sentinel", "{to}");
    }
    let reply = env
        .post(
            A,
            "/api/v1/stream",
            &json!({"to": {"conv": "c1"}, "streamId": "s", "seq": 0, "delta": "a", "done": true}),
        )
        .await;
    assert_eq!(
        reply.json(),
        json!({"delivered": 2}),
        "alice and her device"
    );
    for ws in [&mut a_user, &mut a_device] {
        let (kind, data) = notified(ws).await;
        assert_eq!((kind.as_str(), &data["delta"]), ("stream", &json!("a")));
    }
    let reply = env
        .post(
            A,
            "/api/v1/apps/app1/publish",
            &json!({"channel": "news", "message": "sentinel"}),
        )
        .await;
    assert_eq!(reply.json(), json!({"receivers": 1}));
    assert_eq!(notified(&mut a_app).await.1["message"], "sentinel");
    let api = env.api();
    let caller = tokio::spawn(async move {
        service_post(
            api,
            "/api/v1/apps/app1/tools/search/call",
            A,
            &json!({"method": "sentinel", "timeout_ms": 5000}),
        )
        .await
    });
    let request = a_app.recv_json().await;
    assert_eq!(
        request["method"], "sentinel",
        "B's call never reached A's tool"
    );
    a_app
        .send_json(&json!({"jsonrpc": "2.0", "result": "ok", "id": request["id"]}))
        .await;
    assert_eq!(caller.await.unwrap().status, 200);

    // B's sockets heard B's pushes only, in the order B sent them.
    let mut b_heard = Vec::new();
    for _ in 0..3 {
        b_heard.push(notified(&mut b_user).await.0);
    }
    assert_eq!(
        b_heard,
        ["from-b", "from-b", "stream"],
        "user and conversation pushes, then the stream"
    );
    let mut d_heard = Vec::new();
    for _ in 0..3 {
        d_heard.push(notified(&mut b_device).await.0);
    }
    assert_eq!(
        d_heard,
        ["from-b", "from-b", "stream"],
        "conversation and device pushes, then the stream"
    );
    for message in ["from-b", "from-b-app"] {
        let (kind, data) = notified(&mut b_app).await;
        assert_eq!(
            (kind.as_str(), &data["message"]),
            ("message", &json!(message))
        );
    }
    // Then A's pushes reached none of them: B's own sentinels come next.
    let reply = env
        .post(
            B,
            "/api/v1/notify",
            &json!({"to": {"conv": "c1"}, "type": "b-sentinel"}),
        )
        .await;
    assert_eq!(reply.json(), json!({"delivered": 2}));
    assert_eq!(notified(&mut b_user).await.0, "b-sentinel");
    assert_eq!(notified(&mut b_device).await.0, "b-sentinel");
    let reply = env
        .post(
            B,
            "/api/v1/apps/app1/publish",
            &json!({"channel": "news", "message": "b-sentinel"}),
        )
        .await;
    assert_eq!(reply.json(), json!({"receivers": 1}));
    assert_eq!(notified(&mut b_app).await.1["message"], "b-sentinel");
}

/// Conversation bindings are per tenant: B's users and devices cannot
/// join A's conversations or move A's devices, and A's conversation ids
/// mean nothing in B.
async fn conversations_of_another_tenant_are_out_of_reach(env: Env) {
    let mut a_alice = user_socket(env.edge(), "alice", A, Some("c1")).await;
    let mut a_device = device_socket(env.edge(), "hd1", Some("alice"), A).await;
    // B's mallory binds "c1": tenant B's own c1, not A's.
    let mut b_mallory = user_socket(env.edge(), "mallory", B, Some("c1")).await;
    // B's mallory tries to move A's device; in B nobody owns an hd1.
    let refused = call(
        &mut b_mallory,
        "hardwares.switchConvId",
        json!({"convId": "c-evil", "hdId": "hd1"}),
        json!(1),
    )
    .await;
    assert_error(&refused, 4401, &json!(1));
    // B's device named hd1, owned by B's mallory, binds B's c1.
    let mut b_device = device_socket(env.edge(), "hd1", Some("mallory"), B).await;
    let bound = call(
        &mut b_device,
        "hardwares.switchConvId",
        json!({"convId": "c1"}),
        json!(2),
    )
    .await;
    assert_ok(&bound, &json!(2));

    // A's conversation reaches A's sockets only: alice and her device.
    let reply = env
        .post(
            A,
            "/api/v1/notify",
            &json!({"to": {"conv": "c1"}, "type": "a-c1"}),
        )
        .await;
    assert_eq!(reply.json(), json!({"delivered": 2}));
    assert_eq!(notified(&mut a_alice).await.0, "a-c1");
    assert_eq!(notified(&mut a_device).await.0, "a-c1");
    // B's c1 reaches B's sockets only, and is the first thing they hear.
    let reply = env
        .post(
            B,
            "/api/v1/notify",
            &json!({"to": {"conv": "c1"}, "type": "b-c1"}),
        )
        .await;
    assert_eq!(reply.json(), json!({"delivered": 2}));
    assert_eq!(notified(&mut b_mallory).await.0, "b-c1");
    assert_eq!(notified(&mut b_device).await.0, "b-c1");
    // A's device was not moved: c-evil is empty in both tenants.
    for tenant in [A, B] {
        let reply = env
            .post(
                tenant,
                "/api/v1/notify",
                &json!({"to": {"conv": "c-evil"}, "type": "x"}),
            )
            .await;
        assert_eq!(reply.json(), json!({"delivered": 0}), "{tenant}");
    }
    // A's device reconnects and is still bound to A's c1 by the store.
    drop(a_device);
    let mut a_device = device_socket(env.edge(), "hd1", Some("alice"), A).await;
    let reply = env
        .post(
            A,
            "/api/v1/notify",
            &json!({"to": {"conv": "c1"}, "type": "again"}),
        )
        .await;
    assert_eq!(reply.json(), json!({"delivered": 2}));
    assert_eq!(notified(&mut a_device).await.0, "again");
    assert_eq!(notified(&mut a_alice).await.0, "again");
}
