//! The JSON-RPC dialect end to end with a real WebSocket client: user, app
//! and hardware sockets, every error code, conversations, pushes, streams
//! and tool calls. The behaviour tests run against the memory store and
//! against a private `redis-server`.

use std::time::Duration;

use serde_json::{Value, json};
use switchboard_testkit::WsClient;
use switchboard_testkit::http::{self, Reply};
use switchboard_testkit::im::ImClient;
use switchboard_testkit::jsonrpc::{
    api_post, api_put_owner, app_sentinel, app_socket, assert_error, assert_ok, call,
    device_socket, notified, notify_sentinel, user_socket, user_socket_refused_conv,
};
use switchboard_testkit::switchboard::{
    self, API_KEY, app_token, device_token, token, token_shaped,
};

switchboard_testkit::standalone_env!();

impl Env {
    async fn user(&self, user: &str, conv: Option<&str>) -> WsClient {
        user_socket(self.edge(), user, "default", conv).await
    }

    async fn app(&self, app: &str, tool: &str) -> WsClient {
        app_socket(self.edge(), app, tool, "default").await
    }

    async fn device(&self, hd: &str, owner: Option<&str>) -> WsClient {
        device_socket(self.edge(), hd, owner, "default").await
    }

    async fn post(&self, path: &str, body: &Value) -> Reply {
        api_post(self.api(), path, "default", body).await
    }
}

switchboard_testkit::against_both_stores! {
    app_keys;
    app_keys_expire;
    app_keys_are_private_to_app_and_tenant;
    app_channels;
    conversations_and_pushes;
    the_server_api_sets_conversation_owners;
    devices_bind_only_where_their_owner_may;
    hardware_binds_to_its_owners_conversation;
    switching_another_users_device_is_refused;
    device_status_is_stored_and_pushed;
}

async fn app_keys(env: Env) {
    let mut app = env.app("app1", "tool1").await;
    let data = call(&mut app, "redis.get", json!({"key": "k"}), json!("g1")).await;
    assert_eq!(
        assert_ok(&data, &json!("g1")),
        json!({"key": "k", "value": null})
    );
    let set = call(
        &mut app,
        "redis.set",
        json!({"key": "k", "value": "v"}),
        json!(2),
    )
    .await;
    assert_eq!(assert_ok(&set, &json!(2)), json!({"key": "k"}));
    let get = call(&mut app, "redis.get", json!({"key": "k"}), json!("g2")).await;
    assert_eq!(
        assert_ok(&get, &json!("g2")),
        json!({"key": "k", "value": "v"})
    );
    let del = call(&mut app, "redis.del", json!({"key": "k"}), json!("d1")).await;
    assert_eq!(
        assert_ok(&del, &json!("d1")),
        json!({"key": "k", "deleted": 1})
    );
    let del = call(&mut app, "redis.del", json!({"key": "k"}), json!("d2")).await;
    assert_eq!(
        assert_ok(&del, &json!("d2")),
        json!({"key": "k", "deleted": 0})
    );
    // Another socket of the same app sees the same keys.
    call(
        &mut app,
        "redis.set",
        json!({"key": "shared", "value": "x"}),
        json!(3),
    )
    .await;
    let mut other = env.app("app1", "tool2").await;
    let get = call(&mut other, "redis.get", json!({"key": "shared"}), json!(4)).await;
    assert_eq!(assert_ok(&get, &json!(4))["value"], "x");
}

async fn app_keys_expire(env: Env) {
    let mut app = env.app("app1", "tool1").await;
    let set = call(
        &mut app,
        "redis.set",
        json!({"key": "t", "value": "v", "ttl": 1}),
        json!(1),
    )
    .await;
    assert_ok(&set, &json!(1));
    let get = call(&mut app, "redis.get", json!({"key": "t"}), json!(2)).await;
    assert_eq!(assert_ok(&get, &json!(2))["value"], "v");
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    let get = call(&mut app, "redis.get", json!({"key": "t"}), json!(3)).await;
    assert_eq!(assert_ok(&get, &json!(3))["value"], Value::Null, "expired");
    for ttl in [json!(0), json!(-1), json!("5"), json!(1e12)] {
        let bad = call(
            &mut app,
            "redis.set",
            json!({"key": "t", "value": "v", "ttl": ttl}),
            json!(4),
        )
        .await;
        assert_error(&bad, -32602, &json!(4));
    }
}

async fn app_keys_are_private_to_app_and_tenant(env: Env) {
    let mut a = env.app("appA", "t").await;
    call(
        &mut a,
        "redis.set",
        json!({"key": "k", "value": "a"}),
        json!(1),
    )
    .await;
    let mut b = env.app("appB", "t").await;
    let get = call(&mut b, "redis.get", json!({"key": "k"}), json!(2)).await;
    assert_eq!(
        assert_ok(&get, &json!(2))["value"],
        Value::Null,
        "other app"
    );
    let mut other_tenant = app_socket(env.edge(), "appA", "t", "tenant2").await;
    let get = call(
        &mut other_tenant,
        "redis.get",
        json!({"key": "k"}),
        json!(3),
    )
    .await;
    assert_eq!(
        assert_ok(&get, &json!(3))["value"],
        Value::Null,
        "other tenant"
    );
}

async fn app_channels(env: Env) {
    let mut sub = env.app("app1", "tool1").await;
    let mut publisher = env.app("app1", "tool2").await;
    let mut other_app = env.app("app2", "tool1").await;
    let mut other_tenant = app_socket(env.edge(), "app1", "tool1", "tenant2").await;
    for ws in [&mut sub, &mut other_app, &mut other_tenant] {
        let done = call(ws, "subscribe", json!({"channel": "news"}), json!("s")).await;
        assert_eq!(assert_ok(&done, &json!("s")), json!({"channel": "news"}));
    }
    let published = call(
        &mut publisher,
        "redis.publish",
        json!({"channel": "news", "message": {"n": 1}}),
        json!("p"),
    )
    .await;
    assert_eq!(
        assert_ok(&published, &json!("p")),
        json!({"channel": "news", "receivers": 1})
    );
    let (kind, data) = notified(&mut sub).await;
    assert_eq!(
        (kind.as_str(), data),
        ("message", json!({"channel": "news", "message": {"n": 1}}))
    );
    app_sentinel(env.api(), "default", "app2", &mut other_app).await;
    app_sentinel(env.api(), "tenant2", "app1", &mut other_tenant).await;

    // The server API publishes like an app socket.
    let reply = env
        .post(
            "/api/v1/apps/app1/publish",
            &json!({"channel": "news", "message": "hi"}),
        )
        .await;
    assert_eq!((reply.status, reply.json()), (200, json!({"receivers": 1})));
    let (_, data) = notified(&mut sub).await;
    assert_eq!(data["message"], "hi");

    let done = call(
        &mut sub,
        "unsubscribe",
        json!({"channel": "news"}),
        json!("u"),
    )
    .await;
    assert_eq!(assert_ok(&done, &json!("u")), json!({"channel": "news"}));
    let reply = env
        .post(
            "/api/v1/apps/app1/publish",
            &json!({"channel": "news", "message": 2}),
        )
        .await;
    assert_eq!(reply.json(), json!({"receivers": 0}));
    app_sentinel(env.api(), "default", "app1", &mut sub).await;
}

async fn conversations_and_pushes(env: Env) {
    let mut alice_conv = env.user("alice", Some("c1")).await;
    let mut alice_plain = env.user("alice", None).await;
    let mut alice_third = env.user("alice", Some("c1")).await;
    // c1 is alice's (she bound it first): bob's connect with it is refused
    // and leaves him unbound.
    let mut bob = user_socket_refused_conv(env.edge(), "bob", "default", "c1").await;

    // To a user: every socket of that user.
    let reply = env
        .post(
            "/api/v1/notify",
            &json!({"to": {"user": "alice"}, "type": "hello", "data": {"x": 1}}),
        )
        .await;
    assert_eq!((reply.status, reply.json()), (200, json!({"delivered": 3})));
    for ws in [&mut alice_conv, &mut alice_plain, &mut alice_third] {
        assert_eq!(notified(ws).await, ("hello".to_owned(), json!({"x": 1})));
    }

    // To a conversation: the sockets bound to it, bob's not among them.
    let reply = env
        .post(
            "/api/v1/notify",
            &json!({"to": {"conv": "c1"}, "type": "t"}),
        )
        .await;
    assert_eq!(reply.json(), json!({"delivered": 2}));
    assert_eq!(notified(&mut alice_conv).await.0, "t");
    assert_eq!(notified(&mut alice_third).await.0, "t");
    let refused = call(
        &mut bob,
        "hardwares.switchConvId",
        json!({"convId": "c1"}),
        json!("b1"),
    )
    .await;
    assert_error(&refused, 4401, &json!("b1"));
    env.post(
        "/api/v1/notify",
        &json!({"to": {"user": "bob"}, "type": "sentinel"}),
    )
    .await;
    assert_eq!(
        notified(&mut bob).await.0,
        "sentinel",
        "bob heard nothing of c1"
    );

    // Switching moves this socket only.
    let switched = call(
        &mut alice_plain,
        "hardwares.switchConvId",
        json!({"convId": "c2"}),
        json!(1),
    )
    .await;
    assert_eq!(
        assert_ok(&switched, &json!(1)),
        json!({"convId": "c2", "hdId": null})
    );
    let switched = call(
        &mut alice_third,
        "hardwares.switchConvId",
        json!({"convId": "c2"}),
        json!(2),
    )
    .await;
    assert_ok(&switched, &json!(2));
    // c2 is alice's now too; bob stays where he is (his own c3).
    let mine = call(
        &mut bob,
        "hardwares.switchConvId",
        json!({"convId": "c3"}),
        json!("b2"),
    )
    .await;
    assert_ok(&mine, &json!("b2"));
    let refused = call(
        &mut bob,
        "hardwares.switchConvId",
        json!({"convId": "c2"}),
        json!("b3"),
    )
    .await;
    assert_error(&refused, 4401, &json!("b3"));
    let reply = env
        .post(
            "/api/v1/notify",
            &json!({"to": {"conv": "c2"}, "type": "t2"}),
        )
        .await;
    assert_eq!(reply.json(), json!({"delivered": 2}));
    assert_eq!(notified(&mut alice_plain).await.0, "t2");
    assert_eq!(notified(&mut alice_third).await.0, "t2");
    let reply = env
        .post(
            "/api/v1/notify",
            &json!({"to": {"conv": "c3"}, "type": "bobs"}),
        )
        .await;
    assert_eq!(reply.json(), json!({"delivered": 1}));
    assert_eq!(
        notified(&mut bob).await.0,
        "bobs",
        "bob is still bound to c3 and heard nothing of c2"
    );
    let reply = env
        .post(
            "/api/v1/notify",
            &json!({"to": {"conv": "c1"}, "type": "t3"}),
        )
        .await;
    assert_eq!(
        reply.json(),
        json!({"delivered": 1}),
        "alice's third socket left c1"
    );

    // A stream arrives in seq order, even when the chunks are posted out of order.
    let chunk = |seq: u64, done: bool| json!({"to": {"conv": "c2"}, "streamId": "s1", "seq": seq, "delta": format!("d{seq}"), "done": done});
    for seq in [0, 2, 1, 3] {
        let api = env.api();
        let body = chunk(seq, seq == 3);
        tokio::spawn(async move { api_post(api, "/api/v1/stream", "default", &body).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for ws in [&mut alice_plain, &mut alice_third] {
        for seq in 0..4u64 {
            let (kind, data) = notified(ws).await;
            assert_eq!(kind, "stream");
            assert_eq!(
                data,
                json!({"streamId": "s1", "seq": seq, "delta": format!("d{seq}"), "done": seq == 3})
            );
        }
    }
    let _ = alice_conv.recv_json().await; // t3
    // c1's socket got no chunk of c2's stream.
    notify_sentinel(env.api(), "default", json!({"conv": "c1"}), &mut alice_conv).await;
}

/// The server API names a conversation's owner before anyone binds it;
/// the owner never changes afterwards.
async fn the_server_api_sets_conversation_owners(env: Env) {
    let put = |conv: &'static str, body: Value| {
        let api = env.api();
        async move { api_put_owner(api, conv, "default", &body).await }
    };
    let set = put("pc1", json!({"owner": "carol"})).await;
    assert_eq!(
        (set.status, set.json()),
        (200, json!({"convId": "pc1", "owner": "carol"}))
    );
    let again = put("pc1", json!({"owner": "carol"})).await;
    assert_eq!(again.status, 200, "naming the owner again");
    let taken = put("pc1", json!({"owner": "dave"})).await;
    assert_eq!(taken.status, 409, "{:?}", taken.body);
    for bad in [json!({}), json!({"owner": 5}), json!({"owner": "a b"})] {
        let refused = put("pc1", bad).await;
        assert_eq!(refused.status, 400);
        assert_eq!(refused.json()["error"]["field"], "owner");
    }
    // dave may not bind carol's conversation, not even first.
    let mut dave = user_socket_refused_conv(env.edge(), "dave", "default", "pc1").await;
    let mut carol = env.user("carol", Some("pc1")).await;
    let reply = env
        .post(
            "/api/v1/notify",
            &json!({"to": {"conv": "pc1"}, "type": "for-carol"}),
        )
        .await;
    assert_eq!(reply.json(), json!({"delivered": 1}));
    assert_eq!(notified(&mut carol).await.0, "for-carol");
    // An owner a user became by binding first cannot be overridden either,
    // and a refused PUT hands nothing to carol.
    let claimed = call(
        &mut dave,
        "hardwares.switchConvId",
        json!({"convId": "c-dave"}),
        json!(1),
    )
    .await;
    assert_ok(&claimed, &json!(1));
    let taken = put("c-dave", json!({"owner": "carol"})).await;
    assert_eq!(taken.status, 409, "{:?}", taken.body);
    let refused = call(
        &mut carol,
        "hardwares.switchConvId",
        json!({"convId": "c-dave"}),
        json!(2),
    )
    .await;
    assert_error(&refused, 4401, &json!(2));
    // Another tenant's conversation of the same id is its own.
    let mut other_tenant = user_socket(env.edge(), "dave", "tenant2", Some("pc1")).await;
    let reply = api_post(
        env.api(),
        "/api/v1/notify",
        "tenant2",
        &json!({"to": {"conv": "pc1"}, "type": "t2"}),
    )
    .await;
    assert_eq!(reply.json(), json!({"delivered": 1}));
    assert_eq!(notified(&mut other_tenant).await.0, "t2");
}

async fn hardware_binds_to_its_owners_conversation(env: Env) {
    let mut alice = env.user("alice", Some("c9")).await;
    let mut device = env.device("hd1", Some("alice")).await;
    let reply = env
        .post(
            "/api/v1/notify",
            &json!({"to": {"conv": "c9"}, "type": "t"}),
        )
        .await;
    assert_eq!(
        reply.json(),
        json!({"delivered": 2}),
        "the device follows alice's conversation"
    );
    assert_eq!(notified(&mut alice).await.0, "t");
    assert_eq!(notified(&mut device).await.0, "t");

    // The device switches itself; the binding outlives its socket.
    let switched = call(
        &mut device,
        "hardwares.switchConvId",
        json!({"convId": "c10"}),
        json!("x"),
    )
    .await;
    assert_eq!(
        assert_ok(&switched, &json!("x")),
        json!({"convId": "c10", "hdId": "hd1"})
    );
    drop(device);
    let mut device = env.device("hd1", Some("alice")).await;
    let reply = env
        .post(
            "/api/v1/notify",
            &json!({"to": {"conv": "c10"}, "type": "t2"}),
        )
        .await;
    assert_eq!(reply.json(), json!({"delivered": 1}));
    assert_eq!(notified(&mut device).await.0, "t2");

    // The owner moves the device to another conversation.
    let switched = call(
        &mut alice,
        "hardwares.switchConvId",
        json!({"convId": "c11", "hdId": "hd1"}),
        json!(5),
    )
    .await;
    assert_eq!(
        assert_ok(&switched, &json!(5)),
        json!({"convId": "c11", "hdId": "hd1"})
    );
    let reply = env
        .post(
            "/api/v1/notify",
            &json!({"to": {"conv": "c11"}, "type": "t3"}),
        )
        .await;
    assert_eq!(reply.json(), json!({"delivered": 2}));
    let reply = env
        .post(
            "/api/v1/notify",
            &json!({"to": {"device": "hd1"}, "type": "t4"}),
        )
        .await;
    assert_eq!(reply.json(), json!({"delivered": 1}));
    assert_eq!(notified(&mut device).await.0, "t3");
    assert_eq!(notified(&mut device).await.0, "t4");
}

/// A device binds with its owner's rights, on connect too: a stored
/// binding its (new) owner may not keep is dropped, and it follows its
/// owner's last conversation instead. A user cannot move even her own
/// device into someone else's conversation.
async fn devices_bind_only_where_their_owner_may(env: Env) {
    let mut alice = env.user("alice", Some("ca")).await;
    let mut bob = env.user("bob", Some("cb")).await;
    let mut device = env.device("hd7", Some("alice")).await;
    let reply = env
        .post(
            "/api/v1/notify",
            &json!({"to": {"conv": "ca"}, "type": "t1"}),
        )
        .await;
    assert_eq!(
        reply.json(),
        json!({"delivered": 2}),
        "alice and her device"
    );
    assert_eq!(notified(&mut alice).await.0, "t1");
    assert_eq!(notified(&mut device).await.0, "t1");
    let refused = call(
        &mut alice,
        "hardwares.switchConvId",
        json!({"convId": "cb", "hdId": "hd7"}),
        json!(1),
    )
    .await;
    assert_error(&refused, 4401, &json!(1));
    // The device now belongs to bob: on connect it leaves alice's ca and
    // follows bob's last conversation.
    drop(device);
    let mut device = env.device("hd7", Some("bob")).await;
    let reply = env
        .post(
            "/api/v1/notify",
            &json!({"to": {"conv": "ca"}, "type": "t2"}),
        )
        .await;
    assert_eq!(reply.json(), json!({"delivered": 1}), "alice only");
    assert_eq!(notified(&mut alice).await.0, "t2");
    let reply = env
        .post(
            "/api/v1/notify",
            &json!({"to": {"conv": "cb"}, "type": "t3"}),
        )
        .await;
    assert_eq!(reply.json(), json!({"delivered": 2}), "bob and his device");
    assert_eq!(notified(&mut bob).await.0, "t3");
    assert_eq!(
        notified(&mut device).await.0,
        "t3",
        "the device heard nothing of ca"
    );
    // A device without an owner binds nothing, and keeps no old binding.
    drop(device);
    let mut device = env.device("hd7", None).await;
    let refused = call(
        &mut device,
        "hardwares.switchConvId",
        json!({"convId": "c-free"}),
        json!(2),
    )
    .await;
    assert_error(&refused, 4401, &json!(2));
    let reply = env
        .post(
            "/api/v1/notify",
            &json!({"to": {"conv": "cb"}, "type": "t4"}),
        )
        .await;
    assert_eq!(reply.json(), json!({"delivered": 1}), "bob only");
    assert_eq!(notified(&mut bob).await.0, "t4");
    let reply = env
        .post(
            "/api/v1/notify",
            &json!({"to": {"device": "hd7"}, "type": "direct"}),
        )
        .await;
    assert_eq!(reply.json(), json!({"delivered": 1}));
    assert_eq!(
        notified(&mut device).await.0,
        "direct",
        "the first thing it heard"
    );
}

async fn switching_another_users_device_is_refused(env: Env) {
    let _device = env.device("hd2", Some("alice")).await;
    let mut mallory = env.user("mallory", None).await;
    let refused = call(
        &mut mallory,
        "hardwares.switchConvId",
        json!({"convId": "evil", "hdId": "hd2"}),
        json!(7),
    )
    .await;
    assert_error(&refused, 4401, &json!(7));
    let reply = env
        .post(
            "/api/v1/notify",
            &json!({"to": {"conv": "evil"}, "type": "t"}),
        )
        .await;
    assert_eq!(reply.json(), json!({"delivered": 0}), "nothing was bound");
}

async fn device_status_is_stored_and_pushed(env: Env) {
    let mut alice = env.user("alice", None).await;
    let _carol = env.user("carol", Some("c21")).await;
    let mut device = env.device("hd3", Some("alice")).await;
    // A device binds with its owner's rights: not carol's conversation.
    let refused = call(
        &mut device,
        "hardwares.switchConvId",
        json!({"convId": "c21"}),
        json!("r"),
    )
    .await;
    assert_error(&refused, 4401, &json!("r"));
    let switched = call(
        &mut device,
        "hardwares.switchConvId",
        json!({"convId": "c20"}),
        json!(0),
    )
    .await;
    assert_ok(&switched, &json!(0));
    // Another of alice's devices follows the same conversation.
    let mut watcher = env.device("hd3w", Some("alice")).await;
    let followed = call(
        &mut watcher,
        "hardwares.switchConvId",
        json!({"convId": "c20"}),
        json!(1),
    )
    .await;
    assert_ok(&followed, &json!(1));
    let status = json!({"status": "online", "battery": 80});
    device
        .send_json(
            &json!({"jsonrpc": "2.0", "method": "device.status", "params": status, "id": "st"}),
        )
        .await;
    // The device is bound to the conversation too, so it hears its own report.
    let expected = (
        "device.status".to_owned(),
        json!({"hdId": "hd3", "status": status}),
    );
    let mut heard = Vec::new();
    for _ in 0..2 {
        let frame = device.recv_json().await;
        if frame.get("id").is_some() {
            assert_eq!(assert_ok(&frame, &json!("st")), json!({"hdId": "hd3"}));
        } else {
            heard.push(frame);
        }
    }
    assert_eq!(heard.len(), 1, "{heard:?}");
    assert_eq!(notified(&mut alice).await, expected, "the owner");
    assert_eq!(notified(&mut watcher).await, expected, "the conversation");

    let auth = format!("Bearer {API_KEY}");
    let stored = http::get(
        env.api(),
        "/api/v1/devices/hd3/status",
        &[("authorization", &auth)],
    )
    .await;
    assert_eq!(stored.status, 200);
    let stored = stored.json();
    assert_eq!(stored["hdId"], "hd3");
    assert_eq!(stored["status"], status);
    assert!(stored["updated_at"].is_string(), "{stored}");
    let missing = http::get(
        env.api(),
        "/api/v1/devices/nope/status",
        &[("authorization", &auth)],
    )
    .await;
    assert_eq!(missing.status, 404);

    let not_object = call(&mut device, "device.status", json!([1]), json!(9)).await;
    assert_error(&not_object, -32602, &json!(9));
}

#[tokio::test]
async fn tokens_are_checked_with_close_code_4401() {
    let env = Env::memory(&[]).await;
    let edge = env.edge();
    let cases = [
        format!("ws://{edge}/v3/wss"),
        format!("ws://{edge}/v3/wss?token=garbage"),
        format!(
            "ws://{edge}/v3/wss?token={}",
            token("a", "device", "default", None)
        ),
        format!(
            "ws://{edge}/v3/wss/app1/tool1?token={}",
            app_token("app2", "default")
        ),
        format!(
            "ws://{edge}/v3/wss/hd1?token={}",
            device_token("hd2", None, "default")
        ),
        format!(
            "ws://{edge}/v3/wss/hd1?token={}",
            token("hd1", "user", "default", None)
        ),
    ];
    for url in cases {
        let mut ws = WsClient::open(&url).await;
        let (code, reason) = ws.recv_close(Duration::from_secs(5)).await;
        assert_eq!(code, 4401, "{url}");
        assert!(!reason.is_empty(), "the reason names the problem: {url}");
    }
    // Each route takes one token kind; the reason names the kind it got.
    let no_kind = |sub: &str| token_shaped(sub, "default", |c| c.kind = None);
    let kinded =
        |sub: &str, kind: &str| token_shaped(sub, "default", |c| c.kind = Some(kind.into()));
    let app_claim_elsewhere = token_shaped("app1", "default", |c| {
        c.kind = Some("app".into());
        c.app = Some("app2".into());
    });
    let kind_cases = [
        (
            format!("/v3/wss?token={}", kinded("a", "service")),
            "service",
        ),
        (format!("/v3/wss?token={}", kinded("a", "client")), "client"),
        (format!("/v3/wss?token={}", kinded("a", "robot")), "robot"),
        (format!("/v3/wss?token={}", kinded("a", "app")), "app"),
        (
            format!("/v3/wss/app1/tool1?token={}", kinded("app1", "user")),
            "user",
        ),
        (
            format!("/v3/wss/app1/tool1?token={}", no_kind("app1")),
            "no kind",
        ),
        (
            format!("/v3/wss/app1/tool1?token={}", kinded("app1", "device")),
            "device",
        ),
        (
            format!("/v3/wss/app1/tool1?token={app_claim_elsewhere}"),
            "app1",
        ),
        (format!("/v3/wss/hd1?token={}", no_kind("hd1")), "no kind"),
        (format!("/v3/wss/hd1?token={}", kinded("hd1", "app")), "app"),
        (
            format!("/v3/wss/hd1?token={}", kinded("hd1", "nonsense")),
            "nonsense",
        ),
    ];
    for (path, named) in kind_cases {
        let mut ws = WsClient::open(&format!("ws://{edge}{path}")).await;
        let (code, reason) = ws.recv_close(Duration::from_secs(5)).await;
        assert_eq!(code, 4401, "{path}");
        assert!(reason.contains(named), "{path}: {reason:?} names {named}");
    }
    // A user token without a kind is a user token.
    let mut ws = WsClient::open(&format!("ws://{edge}/v3/wss?token={}", no_kind("alice"))).await;
    ws.send_text("ping").await;
    assert_eq!(ws.recv_text().await, "pong");
    // An app token whose sub is the app id is accepted too.
    let by_sub = token("app1", "app", "default", None);
    let mut ws = WsClient::open(&format!("ws://{edge}/v3/wss/app1/tool1?token={by_sub}")).await;
    ws.send_text("ping").await;
    assert_eq!(ws.recv_text().await, "pong");
    let bad_path = http::get(edge, "/v3/wss/a%20b", &[]).await;
    assert_eq!(bad_path.status, 400);
}

#[tokio::test]
async fn every_error_code_and_malformed_input() {
    let env = Env::memory(&[]).await;
    let mut user = env.user("alice", None).await;
    let null = Value::Null;

    user.send_text("not json").await;
    assert_error(&user.recv_json().await, -32700, &null);
    user.send_text("{\"jsonrpc\":").await;
    assert_error(&user.recv_json().await, -32700, &null);

    for (text, id) in [
        (r#"{"method":"x","id":1}"#, json!(1)),
        (r#"{"jsonrpc":"2.0","method":7,"id":"a"}"#, json!("a")),
        (
            r#"{"jsonrpc":"2.0","method":"x","id":{"no":1}}"#,
            null.clone(),
        ),
        (r#"{"jsonrpc":"2.0","method":"x","id":true}"#, null.clone()),
        ("[1]", null.clone()),
        ("17", null.clone()),
    ] {
        user.send_text(text).await;
        let reply = user.recv_json().await;
        let reply = if text.starts_with('[') {
            reply[0].clone()
        } else {
            reply
        };
        assert_error(&reply, -32600, &id);
    }
    user.send_text("[]").await;
    assert_error(&user.recv_json().await, -32600, &null);

    let unknown = call(&mut user, "no.such", json!({}), json!(1)).await;
    assert_error(&unknown, -32601, &json!(1));
    let wrong_kind = call(&mut user, "redis.get", json!({"key": "k"}), json!(2)).await;
    assert_error(&wrong_kind, -32601, &json!(2));
    assert!(
        wrong_kind["error"]["data"]
            .as_str()
            .unwrap()
            .contains("user socket"),
        "{wrong_kind}"
    );
    for params in [
        json!({}),
        json!({"convId": 5}),
        json!({"convId": "a/b"}),
        json!(["c1"]),
    ] {
        let bad = call(&mut user, "hardwares.switchConvId", params, json!(3)).await;
        assert_error(&bad, -32602, &json!(3));
    }

    // Ids come back exactly as sent, however big.
    let huge = "9".repeat(400);
    user.send_text(&format!(
        r#"{{"jsonrpc":"2.0","method":"no.such","id":{huge}}}"#
    ))
    .await;
    let text = user.recv_text().await;
    assert!(text.ends_with(&format!(r#""id":{huge}}}"#)), "{text}");
    let long = "x".repeat(30_000);
    let reply = call(&mut user, "no.such", json!({}), json!(long)).await;
    assert_eq!(reply["id"], json!(long));

    // Deep nesting is refused, not a crash.
    user.send_text(&format!("{}{}", "[".repeat(20_000), "]".repeat(20_000)))
        .await;
    assert_error(&user.recv_json().await[0], -32600, &null);
    let deep = format!(
        r#"{{"jsonrpc":"2.0","method":"hardwares.switchConvId","params":{{"a":{}{}}},"id":4}}"#,
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    user.send_text(&deep).await;
    assert_error(&user.recv_json().await, -32602, &json!(4));

    // Notifications are carried out and never answered, errors included.
    user.send_text(r#"{"jsonrpc":"2.0","method":"no.such"}"#)
        .await;
    user.send_text(
        r#"{"jsonrpc":"2.0","method":"hardwares.switchConvId","params":{"convId":"cn"}}"#,
    )
    .await;
    // Calls are answered in order: the pong comes first if nothing else does.
    user.send_text("ping").await;
    assert_eq!(
        user.recv_text().await,
        "pong",
        "a notification was answered"
    );
    let reply = env
        .post(
            "/api/v1/notify",
            &json!({"to": {"conv": "cn"}, "type": "t"}),
        )
        .await;
    assert_eq!(
        reply.json(),
        json!({"delivered": 1}),
        "the notification was carried out"
    );
    assert_eq!(notified(&mut user).await.0, "t");

    // A batch: answers in order, notifications left out.
    user.send_text(
        r#"[{"jsonrpc":"2.0","method":"hardwares.switchConvId","params":{"convId":"b1"},"id":"a"},
            {"jsonrpc":"2.0","method":"hardwares.switchConvId","params":{"convId":"b2"}},
            {"jsonrpc":"2.0","method":"nope","id":"b"},
            {"bad":true}]"#,
    )
    .await;
    let batch = user.recv_json().await;
    let items = batch.as_array().expect("a batch answer is an array");
    assert_eq!(items.len(), 3, "{batch}");
    assert_eq!(
        assert_ok(&items[0], &json!("a")),
        json!({"convId": "b1", "hdId": null})
    );
    assert_error(&items[1], -32601, &json!("b"));
    assert_error(&items[2], -32600, &null);
    user.send_text(r#"[{"jsonrpc":"2.0","method":"nope"}]"#)
        .await;
    // A batch of notifications gets no answer: the pong comes first. The
    // socket is still fine, and so is the edge.
    user.send_text("ping").await;
    assert_eq!(
        user.recv_text().await,
        "pong",
        "a notification batch was answered"
    );
    user.send_binary(b"\x00\x01").await;
    assert_eq!(user.recv_close(Duration::from_secs(5)).await.0, 1003);
    let mut again = env.user("alice", None).await;
    again.send_text("ping").await;
    assert_eq!(again.recv_text().await, "pong");
}

/// A caller that does not read its tool call's answer holds at most a
/// bounded queue of progress notes: past it notes are dropped (counted),
/// the tool is never slowed, and its answer is never crowded out: it
/// comes, last, and no event of the call is refused as a flood.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_that_does_not_read_holds_a_bounded_queue_of_notes() {
    use tokio::io::AsyncWriteExt;
    const NOTES: usize = 6_000;
    let env = Env::memory(&["--rate-limit", "1000000", "--rate-burst", "1000000"]).await;
    let mut tool = env.app("app1", "search").await;
    let body = json!({"method": "run", "timeout_ms": 30000}).to_string();
    let request = format!(
        "POST /api/v1/apps/app1/tools/search/call HTTP/1.1\r\nhost: api\r\n\
         authorization: Bearer {API_KEY}\r\nx-tenant: default\r\n\
         content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    // A small receive buffer, so the server's writes back up soon.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut caller = socket.connect(env.api()).await.unwrap();
    caller.write_all(request.as_bytes()).await.unwrap();
    let id = tool.recv_json().await["id"].clone();
    // 6,000 notes of 2 KB: more than the sockets' buffers hold.
    let pad = "x".repeat(2_000);
    for step in 0..NOTES {
        tool.send_json(&json!({"jsonrpc": "2.0", "method": "_notify",
            "params": {"type": "tool.progress", "data": {"id": id, "step": step, "pad": pad}}}))
            .await;
    }
    tool.send_json(&json!({"jsonrpc": "2.0", "result": {"hits": 3}, "id": id}))
        .await;
    let admin = env.0.process.addr("router-admin");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while http::metric(
        &switchboard_testkit::cluster::scrape(admin).await,
        "switchboard_router_tool_progress_dropped_total",
    ) == 0.0
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no progress note was dropped"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The tool socket was never slowed or closed.
    tool.send_text("ping").await;
    assert_eq!(tool.recv_text().await, "pong");
    let raw = http::raw::read_until_closed(&mut caller, Duration::from_secs(30))
        .await
        .expect("the answer ends");
    let text = String::from_utf8_lossy(&raw);
    let notes = text.matches("\"tool.progress\"").count();
    assert!(
        (256..NOTES).contains(&notes),
        "{notes} notes reached the caller"
    );
    let answer = text.rfind(r#"{"result":{"hits":3}}"#).expect("the answer");
    assert!(
        text.rfind("tool.progress")
            .is_some_and(|last| last < answer),
        "the answer comes last"
    );
    assert_eq!(
        http::metric(
            &switchboard_testkit::cluster::scrape(admin).await,
            "switchboard_router_tool_answers_refused_total{reason=\"flood\"}"
        ),
        0.0
    );
}

#[tokio::test]
async fn tool_calls() {
    let env = Env::memory(&[]).await;
    let path = "/api/v1/apps/app1/tools/search/call";
    let missing = env
        .post(path, &json!({"method": "run", "params": {}}))
        .await;
    assert_eq!(missing.status, 404, "no tool socket: at once");

    let mut tool = env.app("app1", "search").await;
    let api = env.api();
    let caller = tokio::spawn(async move {
        api_post(
            api,
            path,
            "default",
            &json!({"method": "run", "params": {"q": "x"}, "timeout_ms": 5000}),
        )
        .await
    });
    let request = tool.recv_json().await;
    assert_eq!(request["jsonrpc"], "2.0");
    assert_eq!(request["method"], "run");
    assert_eq!(request["params"], json!({"q": "x"}));
    let id = request["id"].clone();
    assert!(id.is_string(), "{request}");
    tool.send_json(&json!({"jsonrpc": "2.0", "result": {"hits": 3}, "id": id}))
        .await;
    let reply = caller.await.unwrap();
    assert_eq!(
        (reply.status, reply.json()),
        (200, json!({"result": {"hits": 3}}))
    );

    // Progress notes first, streamed as JSON lines, then the error answer.
    let caller = tokio::spawn(async move {
        api_post(
            api,
            path,
            "default",
            &json!({"method": "slow", "timeout_ms": 5000}),
        )
        .await
    });
    let request = tool.recv_json().await;
    assert!(request.get("params").is_none(), "{request}");
    let id = request["id"].clone();
    for step in 1..=2 {
        tool.send_json(&json!({"jsonrpc": "2.0", "method": "_notify",
            "params": {"type": "tool.progress", "data": {"id": id, "step": step}}}))
            .await;
    }
    tool.send_json(&json!({"jsonrpc": "2.0", "error": {"code": 1, "message": "boom"}, "id": id}))
        .await;
    let reply = caller.await.unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.headers["content-type"], "application/x-ndjson");
    let lines = reply.json_lines();
    assert_eq!(
        lines,
        [
            json!({"type": "tool.progress", "data": {"id": id, "step": 1}}),
            json!({"type": "tool.progress", "data": {"id": id, "step": 2}}),
            json!({"error": {"code": 1, "message": "boom"}}),
        ]
    );

    // No answer in time: 504.
    let slow = env
        .post(path, &json!({"method": "never", "timeout_ms": 300}))
        .await;
    assert_eq!(slow.status, 504, "{:?}", slow.body);
    let _ = tool.recv_json().await;

    let bad = env
        .post(path, &json!({"method": "", "timeout_ms": 5}))
        .await;
    assert_eq!(bad.status, 400);
    let bad = env
        .post(path, &json!({"method": "m", "timeout_ms": 0}))
        .await;
    assert_eq!(bad.json()["error"]["field"], "timeout_ms");
}

#[tokio::test]
async fn server_api_refuses_bad_bodies() {
    let env = Env::memory(&[]).await;
    for (path, body, field) in [
        ("/api/v1/notify", json!({"type": "t"}), "to"),
        (
            "/api/v1/notify",
            json!({"to": {"user": "a", "conv": "b"}, "type": "t"}),
            "to",
        ),
        (
            "/api/v1/notify",
            json!({"to": {"room": "a"}, "type": "t"}),
            "to.room",
        ),
        (
            "/api/v1/notify",
            json!({"to": {"user": "a/b"}, "type": "t"}),
            "to.user",
        ),
        ("/api/v1/notify", json!({"to": {"user": "a"}}), "type"),
        (
            "/api/v1/stream",
            json!({"to": {"user": "a"}, "seq": 1}),
            "streamId",
        ),
        (
            "/api/v1/stream",
            json!({"to": {"user": "a"}, "streamId": "s", "seq": -1}),
            "seq",
        ),
        (
            "/api/v1/stream",
            json!({"to": {"user": "a"}, "streamId": "s", "seq": 1, "done": 1}),
            "done",
        ),
        (
            "/api/v1/apps/app1/publish",
            json!({"message": 1}),
            "channel",
        ),
        (
            "/api/v1/apps/app1/publish",
            json!({"channel": "c"}),
            "message",
        ),
        (
            "/api/v1/apps/a%7Bb/publish",
            json!({"channel": "c", "message": 1}),
            "appId",
        ),
    ] {
        let reply = env.post(path, &body).await;
        assert_eq!(reply.status, 400, "{path} {body}");
        assert_eq!(reply.json()["error"]["field"], field, "{path} {body}");
    }
    let unauthorized = http::post_json(env.api(), "/api/v1/notify", &[], &json!({})).await;
    assert_eq!(unauthorized.status, 401);
}

/// Each socket kind has its own methods; the others are -32601 naming the
/// socket kind, and the 4000 limits answer on every kind.
#[tokio::test]
async fn methods_per_socket_kind_and_limits() {
    let process = switchboard::standalone(&[
        "--max-subscriptions",
        "2",
        "--rate-limit",
        "1",
        "--rate-burst",
        "40",
    ]);
    switchboard::wait_ready(process.addr("edge-admin")).await;
    let edge = process.addr("edge");
    let mut app = app_socket(edge, "app1", "tool1", "default").await;
    let mut device = device_socket(edge, "hd1", None, "default").await;
    for (on_app, method, kind) in [
        (true, "device.status", "app"),
        (true, "hardwares.switchConvId", "app"),
        (false, "redis.set", "hardware"),
        (false, "subscribe", "hardware"),
    ] {
        let ws = if on_app { &mut app } else { &mut device };
        let reply = call(ws, method, json!({}), json!(method)).await;
        assert_error(&reply, -32601, &json!(method));
        let data = reply["error"]["data"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(data.contains(&format!("{kind} socket")), "{reply}");
    }
    for bad in [
        json!({}),
        json!({"key": ""}),
        json!({"key": "k".repeat(300)}),
        json!({"key": 5}),
    ] {
        let reply = call(&mut app, "redis.get", bad, json!(1)).await;
        assert_error(&reply, -32602, &json!(1));
    }
    let reply = call(&mut app, "redis.set", json!({"key": "k"}), json!(2)).await;
    assert_error(&reply, -32602, &json!(2));
    let reply = call(&mut app, "redis.publish", json!({"channel": "c"}), json!(3)).await;
    assert_error(&reply, -32602, &json!(3));

    // The subscription limit.
    for channel in ["a", "b"] {
        let ok = call(
            &mut app,
            "subscribe",
            json!({"channel": channel}),
            json!(channel),
        )
        .await;
        assert_ok(&ok, &json!(channel));
    }
    let again = call(
        &mut app,
        "subscribe",
        json!({"channel": "a"}),
        json!("again"),
    )
    .await;
    assert_ok(&again, &json!("again"));
    let over = call(&mut app, "subscribe", json!({"channel": "c"}), json!("c")).await;
    assert_error(&over, 4000, &json!("c"));

    // The rate limit: past the burst, 4000 with a null id.
    let mut user = user_socket(edge, "alice", "default", None).await;
    let mut limited = None;
    for i in 0..60 {
        user.send_json(&json!({"jsonrpc": "2.0", "method": "no.such", "id": i}))
            .await;
        let reply = user.recv_json().await;
        if reply["error"]["code"] == 4000 {
            limited = Some(reply);
            break;
        }
        assert_error(&reply, -32601, &json!(i));
    }
    let limited = limited.expect("the rate limit answers 4000");
    assert_eq!(limited["id"], Value::Null, "{limited}");
}

/// A batch holds at most 50 calls, and each call in it counts against the
/// socket's rate limit: one frame cannot do more than the limit allows.
#[tokio::test]
async fn batches_are_capped_and_each_call_is_charged() {
    let process = switchboard::standalone(&["--rate-limit", "0.01", "--rate-burst", "80"]);
    switchboard::wait_ready(process.addr("edge-admin")).await;
    let edge = process.addr("edge");
    let mut user = user_socket(edge, "alice", "default", None).await;
    let calls = |n: usize, from: usize| {
        Value::Array(
            (from..from + n)
                .map(|i| json!({"jsonrpc": "2.0", "method": "no.such", "id": i}))
                .collect(),
        )
    };
    // 51 calls: refused whole, one error naming the cap, nothing charged
    // but the message itself.
    user.send_json(&calls(51, 0)).await;
    let refused = user.recv_json().await;
    assert_error(&refused, -32600, &Value::Null);
    assert!(
        refused["error"]["data"]
            .as_str()
            .unwrap_or_default()
            .contains("50"),
        "{refused}"
    );
    // 50 calls: all answered, in order, each charged (52 tokens so far,
    // with the ping that showed the socket ready and the refused batch).
    user.send_json(&calls(50, 100)).await;
    let answers = user.recv_json().await;
    let answers = answers.as_array().expect("a batch answer is an array");
    assert_eq!(answers.len(), 50);
    for (i, answer) in answers.iter().enumerate() {
        assert_error(answer, -32601, &json!(100 + i));
    }
    // 28 tokens are left of the burst of 80: of the next 50 calls the
    // first 28 are carried out, the other 22 get the rate-limit error with
    // their own ids.
    user.send_json(&calls(50, 200)).await;
    let answers = user.recv_json().await;
    let answers = answers.as_array().expect("a batch answer is an array");
    assert_eq!(answers.len(), 50);
    let codes: Vec<i64> = answers
        .iter()
        .map(|a| a["error"]["code"].as_i64().unwrap_or_default())
        .collect();
    assert_eq!(codes[..28], [-32601; 28], "{codes:?}");
    assert_eq!(codes[28..], [4000; 22], "{codes:?}");
    for (i, answer) in answers.iter().enumerate() {
        assert_eq!(answer["id"], json!(200 + i));
    }
}

/// A `notice` to a user reaches their JSON-RPC sockets as `_notify` and
/// their IM sockets as a 3001 from SYSTEM; other types skip IM sockets.
#[tokio::test]
async fn notify_notice_reaches_im_sockets_too() {
    let env = Env::memory(&[]).await;
    let mut rpc = env.user("bob", None).await;
    let mut im = ImClient::connect(env.edge(), "default", "bob", None).await;
    let data = json!({"title": "Maintenance", "msg": "at noon"});
    let reply = env
        .post(
            "/api/v1/notify",
            &json!({"to": {"user": "bob"}, "type": "notice", "data": data}),
        )
        .await;
    assert_eq!(reply.json(), json!({"delivered": 2}));
    assert_eq!(
        notified(&mut rpc).await,
        ("notice".to_owned(), data.clone())
    );
    let notice = im.recv_message().await;
    assert_eq!(notice["type"], 3001, "{notice}");
    assert_eq!(notice["from"], "SYSTEM");
    assert_eq!(notice["isSystem"], true);
    assert_eq!(notice["to"], "bob");
    let body: Value = serde_json::from_str(notice["body"].as_str().unwrap()).unwrap();
    assert_eq!(body, data);

    let reply = env
        .post(
            "/api/v1/notify",
            &json!({"to": {"user": "bob"}, "type": "hello"}),
        )
        .await;
    assert_eq!(reply.json(), json!({"delivered": 1}));
    assert_eq!(notified(&mut rpc).await.0, "hello");
    // The IM socket got no copy of "hello": the next thing it gets is a
    // system message sent to bob afterwards.
    let reply = env
        .post(
            "/api/v1/im/messages",
            &json!({"id": "sentinel", "type": 2001, "to": "bob", "body": "sentinel"}),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.json());
    assert_eq!(im.ws.recv_json().await["id"], "sentinel");
}
