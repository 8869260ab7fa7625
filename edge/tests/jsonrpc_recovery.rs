//! History and recovery in the JSON-RPC dialect, end to end: pushes to a
//! user, a conversation, a device and an app channel carry their
//! positions; a socket that comes back with them gets what it missed
//! (then live, nothing twice); what cannot be recovered says so; the
//! server API reads these histories in its caller's tenant only. Each
//! scenario runs against the in-memory store and a private redis-server.

use serde_json::{Value, json};
use switchboard_testkit::WsClient;
use switchboard_testkit::http::post_json;
use switchboard_testkit::jsonrpc::{
    api_post, app_sentinel, app_socket, assert_error, assert_ok, call, device_socket,
    notify_sentinel, ready, user_socket,
};
use switchboard_testkit::switchboard::{API_KEY, device_token, token};

switchboard_testkit::standalone_env!();

impl Env {
    /// A user socket connecting with `query` (`&since_user=…`), not yet read.
    async fn user_with(&self, tenant: &str, user: &str, query: &str) -> WsClient {
        let token = token(user, "user", tenant, None);
        WsClient::open(&format!("ws://{}/v3/wss?token={token}{query}", self.edge())).await
    }

    async fn device_with(&self, tenant: &str, hd: &str, owner: &str, query: &str) -> WsClient {
        let token = device_token(hd, Some(owner), tenant);
        WsClient::open(&format!(
            "ws://{}/v3/wss/{hd}?token={token}{query}",
            self.edge()
        ))
        .await
    }

    /// `POST /api/v1/notify` to `to` in `tenant`.
    async fn notify(&self, tenant: &str, to: Value, kind: &str, data: Value) {
        let reply = api_post(
            self.api(),
            "/api/v1/notify",
            tenant,
            &json!({"to": to, "type": kind, "data": data}),
        )
        .await;
        assert_eq!(reply.status, 200, "{:?}", reply.body);
    }

    async fn publish(&self, tenant: &str, app: &str, channel: &str, message: Value) {
        let reply = api_post(
            self.api(),
            &format!("/api/v1/apps/{app}/publish"),
            tenant,
            &json!({"channel": channel, "message": message}),
        )
        .await;
        assert_eq!(reply.status, 200, "{:?}", reply.body);
    }

    async fn history(&self, tenant: &str, query: &str) -> (u16, Value) {
        switchboard_testkit::switchboard::history(self.api(), tenant, query).await
    }

    /// The epoch of `topic`'s history in `tenant`.
    async fn epoch(&self, tenant: &str, topic: &str) -> String {
        let (status, history) = self.history(tenant, &format!("topic={topic}")).await;
        assert_eq!(status, 200, "{history}");
        history["epoch"].as_str().unwrap().to_owned()
    }
}

/// The next `_notify`'s params.
async fn pushed(ws: &mut WsClient) -> Value {
    let frame = ws.recv_json().await;
    assert_eq!(frame["method"], "_notify", "{frame}");
    frame["params"].clone()
}

fn position(params: &Value) -> (String, u64) {
    (
        params["epoch"].as_str().expect("an epoch").to_owned(),
        params["offset"].as_u64().expect("an offset"),
    )
}

async fn pushes_carry_their_stream_and_position(env: Env) {
    let mut alice = user_socket(env.edge(), "alice", "acme", Some("c1")).await;
    let mut hd = device_socket(env.edge(), "hd1", Some("alice"), "acme").await;
    let bound = call(
        &mut hd,
        "hardwares.switchConvId",
        json!({"convId": "c1"}),
        json!(1),
    )
    .await;
    let data = assert_ok(&bound, &json!(1));
    assert!(
        bound.get("epoch").is_none() && data.get("epoch").is_none(),
        "{bound}"
    );
    for n in 1..=2 {
        env.notify("acme", json!({"user": "alice"}), "note", json!(n))
            .await;
    }
    let mut seen = Vec::new();
    for _ in 0..2 {
        let params = pushed(&mut alice).await;
        assert_eq!(params["stream"], "user", "{params}");
        seen.push((params["data"].clone(), position(&params)));
    }
    let epoch = seen[0].1.0.clone();
    assert!(
        epoch.len() == 8 && epoch.bytes().all(|b| b.is_ascii_alphanumeric()),
        "{epoch}"
    );
    assert_eq!(
        seen,
        vec![
            (json!(1), (epoch.clone(), 1)),
            (json!(2), (epoch.clone(), 2))
        ]
    );
    // A conversation's push is one message of its history, on the user's
    // socket and the bound device's alike.
    env.notify("acme", json!({"conv": "c1"}), "answer", json!("a"))
        .await;
    let on_user = pushed(&mut alice).await;
    let on_device = pushed(&mut hd).await;
    assert_eq!(on_user, on_device);
    assert_eq!(on_user["stream"], "conv");
    assert_eq!(on_user["type"], "answer");
    let (conv_epoch, offset) = position(&on_user);
    assert_eq!(offset, 1);
    assert_ne!(conv_epoch, epoch, "each stream has its own epoch");
    // Stream chunks carry positions like any other push.
    let chunk = api_post(
        env.api(),
        "/api/v1/stream",
        "acme",
        &json!({"to": {"conv": "c1"}, "streamId": "s1", "seq": 0, "delta": "hi", "done": true}),
    )
    .await;
    assert_eq!(chunk.json(), json!({"delivered": 2}));
    let chunk = pushed(&mut hd).await;
    assert_eq!(chunk["type"], "stream");
    assert_eq!(position(&chunk), (conv_epoch.clone(), 2));
    assert_eq!(position(&pushed(&mut alice).await), (conv_epoch, 2));
    // A device's own pushes, and device.status (to its conversation).
    env.notify("acme", json!({"device": "hd1"}), "cmd", json!({}))
        .await;
    let cmd = pushed(&mut hd).await;
    assert_eq!(
        (cmd["stream"].as_str(), position(&cmd).1),
        (Some("device"), 1)
    );
    let status = call(&mut hd, "device.status", json!({"battery": 5}), json!("st")).await;
    let status = if status.get("id").is_some() {
        assert_ok(&status, &json!("st"));
        pushed(&mut hd).await
    } else {
        let params = status["params"].clone();
        assert_ok(&hd.recv_json().await, &json!("st"));
        params
    };
    assert_eq!(
        (status["stream"].as_str(), position(&status).1),
        (Some("conv"), 3)
    );
    let on_user = pushed(&mut alice).await;
    assert_eq!(on_user, status, "the owner bound to it hears it once");
    // Pong and answers carry nothing.
    alice.send_text("ping").await;
    assert_eq!(alice.recv_text().await, "pong");
}

async fn a_user_gets_what_it_missed_then_live(env: Env) {
    let mut alice = user_socket(env.edge(), "alice", "acme", None).await;
    env.notify("acme", json!({"user": "alice"}), "n", json!(0))
        .await;
    let (epoch, seen) = position(&pushed(&mut alice).await);
    alice.close().await;
    for n in 1..=3 {
        env.notify("acme", json!({"user": "alice"}), "n", json!(n))
            .await;
    }
    let mut back = env
        .user_with("acme", "alice", &format!("&since_user={epoch}:{seen}"))
        .await;
    let recovery = pushed(&mut back).await;
    assert_eq!(recovery["type"], "recovery");
    assert_eq!(
        recovery["data"],
        json!({"stream": "user", "recovered": true, "missed": 3, "epoch": epoch, "offset": seen + 3})
    );
    for n in 1..=3 {
        let params = pushed(&mut back).await;
        assert_eq!(params["data"], json!(n));
        assert_eq!(position(&params), (epoch.clone(), seen + n));
    }
    env.notify("acme", json!({"user": "alice"}), "n", json!("live"))
        .await;
    let live = pushed(&mut back).await;
    assert_eq!(
        (live["data"].clone(), position(&live)),
        (json!("live"), (epoch, seen + 4))
    );
    // Nothing came twice: the next frame is a fresh sentinel.
    notify_sentinel(env.api(), "acme", json!({"user": "alice"}), &mut back).await;
}

async fn a_user_recovers_its_conversation(env: Env) {
    let mut bob = user_socket(env.edge(), "bob", "acme", Some("c5")).await;
    env.notify("acme", json!({"conv": "c5"}), "a", json!(1))
        .await;
    let (epoch, seen) = position(&pushed(&mut bob).await);
    bob.close().await;
    env.notify("acme", json!({"conv": "c5"}), "a", json!(2))
        .await;
    let mut back = env
        .user_with(
            "acme",
            "bob",
            &format!("&convId=c5&since_conv={epoch}:{seen}"),
        )
        .await;
    let recovery = pushed(&mut back).await;
    assert_eq!(
        recovery["data"],
        json!({"stream": "conv", "recovered": true, "missed": 1, "epoch": epoch, "offset": 2})
    );
    assert_eq!(position(&pushed(&mut back).await), (epoch, 2));
    notify_sentinel(env.api(), "acme", json!({"conv": "c5"}), &mut back).await;
}

async fn a_device_recovers_its_conversation(env: Env) {
    let _alice = user_socket(env.edge(), "alice", "acme", Some("c9")).await;
    let mut hd = device_socket(env.edge(), "hd9", Some("alice"), "acme").await;
    let bound = call(
        &mut hd,
        "hardwares.switchConvId",
        json!({"convId": "c9"}),
        json!(1),
    )
    .await;
    assert_ok(&bound, &json!(1));
    env.notify("acme", json!({"conv": "c9"}), "a", json!(1))
        .await;
    let first = pushed(&mut hd).await;
    assert_eq!(first["stream"], "conv");
    let (epoch, seen) = position(&first);
    env.notify("acme", json!({"device": "hd9"}), "d", json!(1))
        .await;
    let (device_epoch, device_seen) = position(&pushed(&mut hd).await);
    hd.close().await;
    for n in 2..=3 {
        env.notify("acme", json!({"conv": "c9"}), "a", json!(n))
            .await;
    }
    env.notify("acme", json!({"device": "hd9"}), "d", json!(2))
        .await;
    // The binding survives: the device comes back to c9 and recovers it.
    let mut back = env
        .device_with(
            "acme",
            "hd9",
            "alice",
            &format!("&since_conv={epoch}:{seen}&since_device={device_epoch}:{device_seen}"),
        )
        .await;
    let mut frames = Vec::new();
    for _ in 0..5 {
        frames.push(pushed(&mut back).await);
    }
    let conv: Vec<&Value> = frames
        .iter()
        .filter(|p| p["stream"] == "conv" || p["data"]["stream"] == "conv")
        .collect();
    assert_eq!(conv.len(), 3, "{frames:?}");
    assert_eq!(
        conv[0]["data"],
        json!({"stream": "conv", "recovered": true, "missed": 2, "epoch": epoch, "offset": 3})
    );
    assert_eq!(position(conv[1]), (epoch.clone(), 2));
    assert_eq!(position(conv[2]), (epoch.clone(), 3));
    let device: Vec<&Value> = frames
        .iter()
        .filter(|p| p["stream"] == "device" || p["data"]["stream"] == "device")
        .collect();
    assert_eq!(device.len(), 2, "{frames:?}");
    assert_eq!(device[0]["data"]["missed"], 1);
    assert_eq!(position(device[1]), (device_epoch, 2));
    // Live after the replay, once.
    env.notify("acme", json!({"conv": "c9"}), "a", json!("live"))
        .await;
    let live = pushed(&mut back).await;
    assert_eq!(
        (live["data"].clone(), position(&live)),
        (json!("live"), (epoch, 4))
    );
    notify_sentinel(env.api(), "acme", json!({"device": "hd9"}), &mut back).await;
}

async fn an_app_subscribes_with_since(env: Env) {
    let mut app = app_socket(env.edge(), "app1", "tool1", "acme").await;
    let sub = call(&mut app, "subscribe", json!({"channel": "news"}), json!(1)).await;
    assert_eq!(assert_ok(&sub, &json!(1)), json!({"channel": "news"}));
    env.publish("acme", "app1", "news", json!("m1")).await;
    let first = pushed(&mut app).await;
    assert_eq!(first["data"], json!({"channel": "news", "message": "m1"}));
    assert_eq!(first["stream"], "channel");
    let (epoch, seen) = position(&first);
    app.close().await;
    for m in ["m2", "m3"] {
        env.publish("acme", "app1", "news", json!(m)).await;
    }
    let mut back = app_socket(env.edge(), "app1", "tool1", "acme").await;
    let sub = call(
        &mut back,
        "subscribe",
        json!({"channel": "news", "since": {"epoch": epoch, "offset": seen}}),
        json!("s"),
    )
    .await;
    assert_eq!(
        assert_ok(&sub, &json!("s")),
        json!({"channel": "news", "stream": "channel", "recovered": true, "missed": 2,
            "epoch": epoch, "offset": 3})
    );
    for (m, offset) in [("m2", 2), ("m3", 3)] {
        let params = pushed(&mut back).await;
        assert_eq!(params["data"]["message"], m);
        assert_eq!(position(&params), (epoch.clone(), offset));
    }
    // A message from an app socket goes into the same history, live.
    let mut writer = app_socket(env.edge(), "app1", "tool2", "acme").await;
    let published = call(
        &mut writer,
        "redis.publish",
        json!({"channel": "news", "message": "m4"}),
        json!(2),
    )
    .await;
    // The closed socket may not be gone from the router yet: one or two.
    assert!(assert_ok(&published, &json!(2))["receivers"].as_u64() >= Some(1));
    let live = pushed(&mut back).await;
    assert_eq!(live["data"]["message"], "m4");
    assert_eq!(position(&live), (epoch, 4));
}

async fn another_epoch_is_not_recovered(env: Env) {
    env.notify("acme", json!({"user": "carol"}), "n", json!(1))
        .await;
    let epoch = env.epoch("acme", "user:carol").await;
    let mut carol = env
        .user_with("acme", "carol", "&since_user=0123456789abcdef:1")
        .await;
    let recovery = pushed(&mut carol).await;
    assert_eq!(
        recovery["data"],
        json!({"stream": "user", "recovered": false, "missed": 0, "epoch": epoch, "offset": 1})
    );
    env.notify("acme", json!({"user": "carol"}), "n", json!(2))
        .await;
    let live = pushed(&mut carol).await;
    assert_eq!(
        (live["data"].clone(), position(&live)),
        (json!(2), (epoch, 2))
    );
    // The same for a channel: the answer says so, nothing follows.
    env.publish("acme", "app2", "c", json!(1)).await;
    let mut app = app_socket(env.edge(), "app2", "t", "acme").await;
    let sub = call(
        &mut app,
        "subscribe",
        json!({"channel": "c", "since": {"epoch": "0123456789abcdef", "offset": 0}}),
        json!(3),
    )
    .await;
    let data = assert_ok(&sub, &json!(3));
    assert_eq!(
        (data["recovered"].clone(), data["missed"].clone()),
        (json!(false), json!(0))
    );
    env.publish("acme", "app2", "c", json!(2)).await;
    assert_eq!(pushed(&mut app).await["data"]["message"], 2);
}

async fn a_position_ahead_is_a_validation_error(env: Env) {
    env.notify("acme", json!({"user": "dave"}), "n", json!(1))
        .await;
    let epoch = env.epoch("acme", "user:dave").await;
    let mut dave = env
        .user_with("acme", "dave", &format!("&since_user={epoch}:99"))
        .await;
    let error = dave.recv_json().await;
    assert_error(&error, -32602, &Value::Null);
    assert!(
        error["error"]["data"]
            .as_str()
            .unwrap()
            .contains("since_user"),
        "{error}"
    );
    // The socket stays and goes on live.
    env.notify("acme", json!({"user": "dave"}), "n", json!(2))
        .await;
    assert_eq!(position(&pushed(&mut dave).await), (epoch, 2));
    env.publish("acme", "app3", "c", json!(1)).await;
    let epoch = env.epoch("acme", "channel:app3:c").await;
    let mut app = app_socket(env.edge(), "app3", "t", "acme").await;
    let sub = call(
        &mut app,
        "subscribe",
        json!({"channel": "c", "since": {"epoch": epoch, "offset": 5}}),
        json!(4),
    )
    .await;
    assert_error(&sub, -32602, &json!(4));
    // The refused call subscribed nothing: what is published next does not
    // reach the socket, and a plain subscribe is a new subscription.
    env.publish("acme", "app3", "c", json!("while refused"))
        .await;
    let sub = call(&mut app, "subscribe", json!({"channel": "c"}), json!(5)).await;
    assert_eq!(assert_ok(&sub, &json!(5)), json!({"channel": "c"}));
    env.publish("acme", "app3", "c", json!("live")).await;
    let live = pushed(&mut app).await;
    assert_eq!(
        (live["data"]["message"].clone(), position(&live)),
        (json!("live"), (epoch, 3))
    );
}

async fn a_malformed_position_is_refused(env: Env) {
    let user = token("erin", "user", "acme", None);
    let url = format!("ws://{}/v3/wss?token={user}&since_user=nocolon", env.edge());
    let Err(refused) = WsClient::connect(&url).await else {
        panic!("upgraded with a malformed position");
    };
    assert_eq!(refused.status, 400);
    assert_eq!(refused.body["error"]["code"], "validation_error");
    assert_eq!(refused.body["error"]["field"], "since_user");
    let device = device_token("hd4", Some("erin"), "acme");
    let url = format!(
        "ws://{}/v3/wss/hd4?token={device}&since_conv=e:-1",
        env.edge()
    );
    let Err(refused) = WsClient::connect(&url).await else {
        panic!("upgraded with a malformed position");
    };
    assert_eq!(refused.body["error"]["field"], "since_conv");
    let mut app = app_socket(env.edge(), "app4", "t", "acme").await;
    for since in [
        json!("e:1"),
        json!({"epoch": "e"}),
        json!({"epoch": "e", "offset": -1}),
    ] {
        let sub = call(
            &mut app,
            "subscribe",
            json!({"channel": "c", "since": since}),
            json!(5),
        )
        .await;
        assert_error(&sub, -32602, &json!(5));
    }
    // Not subscribed by a refused call: a plain subscribe is a new one.
    let sub = call(&mut app, "subscribe", json!({"channel": "c"}), json!(6)).await;
    assert_ok(&sub, &json!(6));
}

async fn another_tenants_history_replays_nothing(env: Env) {
    for n in 1..=2 {
        env.notify("acme", json!({"user": "frank"}), "secret", json!(n))
            .await;
    }
    let epoch = env.epoch("acme", "user:frank").await;
    // The same user id in another tenant presents acme's position.
    let mut mallory = env
        .user_with("rival", "frank", &format!("&since_user={epoch}:0"))
        .await;
    let recovery = pushed(&mut mallory).await;
    assert_eq!(recovery["data"]["recovered"], false, "{recovery}");
    assert_eq!(recovery["data"]["missed"], 0);
    assert_ne!(recovery["data"]["epoch"], json!(epoch));
    notify_sentinel(env.api(), "rival", json!({"user": "frank"}), &mut mallory).await;
    let (status, theirs) = env
        .history("rival", &format!("topic=user:frank&since={epoch}:0"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(theirs["recovered"], false, "{theirs}");
    assert_eq!(theirs["messages"], json!([]));
    // The rival's own history holds only its sentinel.
    let (_, theirs) = env.history("rival", "topic=user:frank").await;
    let messages = theirs["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 1, "{theirs}");
    assert_ne!(messages[0]["data"]["params"]["type"], "secret");
}

async fn the_server_api_reads_jsonrpc_histories(env: Env) {
    env.notify("acme", json!({"user": "gina"}), "u", json!(1))
        .await;
    env.notify("acme", json!({"conv": "c7"}), "c", json!(1))
        .await;
    env.notify("acme", json!({"device": "hd7"}), "d", json!(1))
        .await;
    env.publish("acme", "app7", "a:b/c", json!("m")).await;
    for (topic, kind) in [
        ("user:gina", "u"),
        ("conv:c7", "c"),
        ("device:hd7", "d"),
        ("channel:app7:a%3Ab%2Fc", "message"),
    ] {
        let (status, history) = env.history("acme", &format!("topic={topic}")).await;
        assert_eq!(status, 200, "{topic}: {history}");
        assert_eq!(history["offset"], 1, "{topic}: {history}");
        assert_eq!(history["recovered"], true);
        let messages = history["messages"].as_array().unwrap();
        assert_eq!(messages.len(), 1, "{topic}: {history}");
        assert_eq!(messages[0]["offset"], 1);
        assert_eq!(messages[0]["data"]["params"]["type"], kind, "{topic}");
    }
    let (_, channel) = env.history("acme", "topic=channel:app7:a%3Ab%2Fc").await;
    assert_eq!(
        channel["messages"][0]["data"]["params"]["data"]["channel"],
        "a:b/c"
    );
    // Another app's channel of the same name is another history.
    let (_, other) = env.history("acme", "topic=channel:app8:a%3Ab%2Fc").await;
    assert_eq!(other["offset"], 0, "{other}");
    for bad in [
        "user:",
        "user:a%2Fb",
        "conv:a%20b",
        "channel:app7",
        "channel:%3Ax",
        "tool:a",
    ] {
        let (status, error) = env.history("acme", &format!("topic={bad}")).await;
        assert_eq!(status, 400, "{bad}: {error}");
        assert_eq!(error["error"]["field"], "topic", "{bad}");
    }
    let epoch = env.epoch("acme", "conv:c7").await;
    let (status, error) = env
        .history("acme", &format!("topic=conv:c7&since={epoch}:5"))
        .await;
    assert_eq!(status, 400, "{error}");
}

/// A backend that sends a push again with the same `Idempotency-Key`
/// (after a 5xx or a timeout, say) makes no duplicate: a user, a
/// conversation and an app channel each get it once, and its history
/// holds it once.
async fn an_idempotency_key_sent_twice_pushes_once(env: Env) {
    let mut alice = user_socket(env.edge(), "alice", "acme", Some("c9")).await;
    let mut app = app_socket(env.edge(), "app1", "tool1", "acme").await;
    let sub = call(&mut app, "subscribe", json!({"channel": "news"}), json!(1)).await;
    assert_ok(&sub, &json!(1));
    let auth = format!("Bearer {API_KEY}");
    let post = |path: String, key: &'static str, body: Value| {
        let auth = auth.clone();
        let api = env.api();
        async move {
            let headers = [
                ("authorization", auth.as_str()),
                ("x-tenant", "acme"),
                ("idempotency-key", key),
            ];
            let reply = post_json(api, &path, &headers, &body).await;
            (reply.status, reply.json())
        }
    };
    let notify = |to: Value, data: i64| json!({"to": to, "type": "n", "data": data});
    for (to, stream) in [
        (json!({"user": "alice"}), "user"),
        (json!({"conv": "c9"}), "conv"),
    ] {
        let key = if stream == "user" { "u-1" } else { "c-1" };
        let first = post("/api/v1/notify".into(), key, notify(to.clone(), 1)).await;
        assert_eq!(first, (200, json!({"delivered": 1})), "{stream}");
        let again = post("/api/v1/notify".into(), key, notify(to.clone(), 1)).await;
        assert_eq!(again, (200, json!({"delivered": 0})), "{stream}");
        let params = pushed(&mut alice).await;
        assert_eq!(
            (params["stream"].as_str(), params["offset"].as_u64()),
            (Some(stream), Some(1))
        );
    }
    // A key is the caller's tenant's: another tenant sending the same key
    // to a user of the same name suppresses nothing of its own.
    let mut rival = user_socket(env.edge(), "alice", "rival", None).await;
    let reply = post_json(
        env.api(),
        "/api/v1/notify",
        &[
            ("authorization", auth.as_str()),
            ("x-tenant", "rival"),
            ("idempotency-key", "u-1"),
        ],
        &notify(json!({"user": "alice"}), 7),
    )
    .await;
    assert_eq!((reply.status, reply.json()), (200, json!({"delivered": 1})));
    assert_eq!(pushed(&mut rival).await["data"], 7);
    let publish = json!({"channel": "news", "message": "m1"});
    let path = "/api/v1/apps/app1/publish".to_owned();
    let first = post(path.clone(), "p-1", publish.clone()).await;
    assert_eq!(first, (200, json!({"receivers": 1})));
    let again = post(path.clone(), "p-1", publish.clone()).await;
    assert_eq!(again, (200, json!({"receivers": 0})));
    let params = pushed(&mut app).await;
    assert_eq!(params["offset"], 1);
    let (_, history) = env.history("acme", "topic=channel:app1:news").await;
    assert_eq!(history["offset"], 1, "kept once: {history}");
    let bad = post(path, "", publish).await;
    assert_eq!(
        (bad.0, &bad.1["error"]["field"]),
        (400, &json!("Idempotency-Key"))
    );
    // Nothing came twice.
    notify_sentinel(env.api(), "acme", json!({"user": "alice"}), &mut alice).await;
    app_sentinel(env.api(), "acme", "app1", &mut app).await;
}

switchboard_testkit::against_both_stores! {
    an_idempotency_key_sent_twice_pushes_once;
    pushes_carry_their_stream_and_position;
    a_user_gets_what_it_missed_then_live;
    a_user_recovers_its_conversation;
    a_device_recovers_its_conversation;
    an_app_subscribes_with_since;
    another_epoch_is_not_recovered;
    a_position_ahead_is_a_validation_error;
    a_malformed_position_is_refused;
    another_tenants_history_replays_nothing;
    the_server_api_reads_jsonrpc_histories;
}

/// With history off, pushes carry no position and a recovery says
/// nothing could be recovered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_history_off_nothing_is_kept() {
    let env = Env::memory(&["--history-size", "0"]).await;
    let mut alice = env
        .user_with("acme", "alice", "&since_user=0123456789abcdef:4")
        .await;
    let recovery = pushed(&mut alice).await;
    assert_eq!(recovery["data"]["recovered"], false);
    let mut alice = ready(alice).await;
    env.notify("acme", json!({"user": "alice"}), "n", json!(1))
        .await;
    let params = pushed(&mut alice).await;
    assert!(
        params.get("epoch").is_none() && params.get("offset").is_none(),
        "{params}"
    );
}
