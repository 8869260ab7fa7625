//! The group dialect end to end: a standalone edge process, a real
//! WebSocket client, every target, presence and the V2 path. Each scenario
//! runs against the in-memory store and against a private redis-server.

use std::time::Duration;

use serde_json::{Value, json};
use switchboard_testkit::WsClient;
use switchboard_testkit::switchboard::{group_url, group_v2_url, token};

switchboard_testkit::standalone_env!();

impl Env {
    /// Connects `client` to `group` in `tenant` and waits until the router
    /// has it: its own presence join, or a presence answer for a second tab.
    async fn join(&self, tenant: &str, group: &str, client: &str, scope: Option<&str>) -> WsClient {
        let mut ws = self.connect(tenant, group, client, scope).await;
        sync(&mut ws).await;
        ws
    }

    async fn connect(
        &self,
        tenant: &str,
        group: &str,
        client: &str,
        scope: Option<&str>,
    ) -> WsClient {
        let token = token(client, "client", tenant, scope);
        WsClient::open(&group_url(self.edge(), group, client, &token)).await
    }
}

/// A barrier: a presence query travels the same path as the subscription.
async fn sync(ws: &mut WsClient) -> Value {
    ws.send_json(&json!({"msg_type":"presence","target":"echo"}))
        .await;
    ws.recv_json_until(|m| m["msg_type"] == "presence" && m["target"] == "echo")
        .await
}

fn is_msg(m: &Value) -> bool {
    m["msg_type"] == "msg" || m["msg_type"] == "cmd"
}

/// Presence events of `group`: any socket of the group may get them at
/// any moment, so reads that expect something else pass over them.
fn own_presence(group: &str) -> impl Fn(&Value) -> bool + '_ {
    move |m| m["msg_type"] == "presence" && m["target"] == "group" && m["group_id"] == group
}

/// The next message of a socket in `group` that is not its presence.
async fn next(ws: &mut WsClient, group: &str) -> Value {
    ws.recv_json_skipping(own_presence(group)).await
}

/// Proves that `ws` (client `client` in `group`) got nothing but its own
/// group's presence since it was last read: it sends itself a direct
/// message, which travels the router path a leak would have taken, and
/// that sentinel must be the first thing it receives.
async fn sentinel(ws: &mut WsClient, client: &str, group: &str) {
    ws.send_json(&json!({"msg_type":"msg","target":"direct","to_id":client,"msg":"sentinel"}))
        .await;
    let first = next(ws, group).await;
    assert_eq!(
        (first["msg"].as_str(), first["target"].as_str()),
        (Some("sentinel"), Some("direct")),
        "{client} in {group} received something before its sentinel: {first}"
    );
}

async fn group_target(env: Env) {
    let mut a = env.join("t1", "room_a", "alice", None).await;
    let mut b = env.join("t1", "room_a", "bob", None).await;
    let mut other = env.join("t1", "room_b", "carol", None).await;
    a.send_json(&json!({"msg_type":"msg","target":"group","msg":"Hello team!"}))
        .await;
    for ws in [&mut a, &mut b] {
        let m = ws.recv_json_until(is_msg).await;
        assert_eq!(m["msg"], "Hello team!");
        assert_eq!(m["from_id"], "alice");
        assert_eq!(m["group_id"], "room_a");
        assert_eq!(m["version"], "3");
        assert_eq!(m["target"], "group");
        let sent_at = m["sent_at"].as_str().unwrap();
        assert_eq!(sent_at.len(), 24, "ISO 8601 with milliseconds: {sent_at}");
        assert!(sent_at.ends_with('Z'));
    }
    // a and b have their copies, so a leak to room_b is already on its way.
    sentinel(&mut other, "carol", "room_b").await;
}

async fn direct_target(env: Env) {
    let mut a = env.join("t1", "room_a", "alice", None).await;
    let mut b1 = env.join("t1", "room_b", "bob", None).await;
    let mut b2 = env.join("t1", "room_c", "bob", None).await;
    let mut c = env.join("t1", "room_a", "carol", None).await;
    a.send_json(&json!({"msg_type":"msg","target":"direct","to_id":"bob","msg":"psst"}))
        .await;
    for (ws, group) in [(&mut b1, "room_b"), (&mut b2, "room_c")] {
        let m = next(ws, group).await;
        assert_eq!(
            (
                m["msg"].as_str(),
                m["from_id"].as_str(),
                m["to_id"].as_str()
            ),
            (Some("psst"), Some("alice"), Some("bob"))
        );
    }
    sentinel(&mut a, "alice", "room_a").await;
    sentinel(&mut c, "carol", "room_a").await;
    a.send_json(&json!({"msg_type":"msg","target":"direct","to_id":"nobody_here","msg":"?"}))
        .await;
    let e = next(&mut a, "room_a").await;
    assert_eq!(e["msg_type"], "error");
    assert_eq!(e["payload"]["code"], "not_found");
}

async fn broadcast_target(env: Env) {
    let mut admin = env.join("t1", "room_a", "admin", Some("broadcast")).await;
    let mut x = env.join("t1", "room_b", "xavier", None).await;
    let mut y = env.join("t1", "room_c", "yvonne", None).await;
    let mut stranger = env.join("t2", "room_a", "zed", None).await;
    admin
        .send_json(&json!({"msg_type":"cmd","target":"broadcast","cmd":"MAINTENANCE_WARNING"}))
        .await;
    for ws in [&mut admin, &mut x, &mut y] {
        let m = ws.recv_json_until(is_msg).await;
        assert_eq!(m["cmd"], "MAINTENANCE_WARNING");
        assert_eq!(m["from_id"], "admin");
    }
    sentinel(&mut stranger, "zed", "room_a").await;
    x.send_json(&json!({"msg_type":"cmd","target":"broadcast","cmd":"NOPE"}))
        .await;
    let e = next(&mut x, "room_b").await;
    assert_eq!(e["payload"]["code"], "forbidden");
    sentinel(&mut y, "yvonne", "room_c").await;
    sentinel(&mut admin, "admin", "room_a").await;
}

async fn echo_and_heartbeat(env: Env) {
    let mut a = env.join("t1", "room_a", "alice", None).await;
    let mut b = env.join("t1", "room_a", "bob", None).await;
    a.send_json(&json!({"msg_type":"msg","target":"echo","msg":"Ping!","payload":{"n":1}}))
        .await;
    let m = next(&mut a, "room_a").await;
    assert_eq!(m["msg"], "Ping!");
    assert_eq!(m["payload"], json!({"n":1}));
    assert_eq!(m["from_id"], "alice");
    a.send_json(&json!({"msg_type":"heartbeat","target":"echo"}))
        .await;
    let h = next(&mut a, "room_a").await;
    assert_eq!(h["msg_type"], "heartbeat");
    assert_eq!(h["target"], "echo");
    assert_eq!(h["from_id"], "alice");
    assert_eq!(h["group_id"], "room_a");
    sentinel(&mut b, "bob", "room_a").await;
}

async fn presence_join_leave_and_tabs(env: Env) {
    let mut a = env.connect("t1", "room_p", "alice", None).await;
    let joined = a
        .recv_json_until(|m| m["msg_type"] == "presence" && m["target"] == "group")
        .await;
    assert_eq!(
        joined["payload"],
        json!({"event":"join","client_id":"alice","count":1})
    );
    assert_eq!(joined["from_id"], "alice");

    let mut b = env.connect("t1", "room_p", "bob", None).await;
    let event = a.recv_json_until(|m| m["target"] == "group").await;
    assert_eq!(
        event["payload"],
        json!({"event":"join","client_id":"bob","count":2})
    );
    // A second tab of bob: no join; closing it: no leave. Each time the
    // sentinel is a presence event on the same path: carol's join, then
    // her leave, must be the next event alice sees.
    let mut b2 = env.join("t1", "room_p", "bob", None).await;
    let answer = sync(&mut b2).await;
    assert_eq!(
        answer["payload"],
        json!({"members":["alice","bob"],"count":2})
    );
    let carol = env.connect("t1", "room_p", "carol", None).await;
    let event = a.recv_json_until(|m| m["target"] == "group").await;
    assert_eq!(
        event["payload"],
        json!({"event":"join","client_id":"carol","count":3}),
        "a second tab of bob made no join"
    );
    b2.close().await;
    drop(carol);
    let event = a.recv_json_until(|m| m["target"] == "group").await;
    assert_eq!(
        event["payload"],
        json!({"event":"leave","client_id":"carol","count":2}),
        "closing bob's second tab made no leave"
    );

    b.close().await;
    let event = a.recv_json_until(|m| m["target"] == "group").await;
    assert_eq!(
        event["payload"],
        json!({"event":"leave","client_id":"bob","count":1})
    );
    let answer = sync(&mut a).await;
    assert_eq!(answer["payload"], json!({"members":["alice"],"count":1}));
    assert_eq!(answer["group_id"], "room_p");
}

async fn presence_expires(env: Env) {
    // Taken before quiet's last activity (its join), so the time since
    // is never shorter than quiet's real idle time.
    let quiet_active = std::time::Instant::now();
    let mut quiet = env.join("t1", "room_e", "quiet", None).await;
    let mut chatty = env.join("t1", "room_e", "chatty", None).await;
    // chatty heartbeats; quiet sends nothing and expires (TTL 2 s here).
    let leave = loop {
        chatty
            .send_json(&json!({"msg_type":"heartbeat","target":"echo"}))
            .await;
        let deadline = tokio::time::Instant::now() + Duration::from_millis(400);
        let mut found = None;
        while let Some(event) = chatty.recv(deadline - tokio::time::Instant::now()).await {
            if let switchboard_testkit::ws::Event::Text(text) = event {
                let m: Value = serde_json::from_str(&text).unwrap();
                if m["payload"]["event"] == "leave" {
                    found = Some(m);
                    break;
                }
            }
        }
        if let Some(m) = found {
            break m;
        }
        // A correctness limit, not a speed one: far past TTL + sweep.
        assert!(
            quiet_active.elapsed() < Duration::from_secs(30),
            "quiet never expired"
        );
    };
    assert_eq!(
        leave["payload"],
        json!({"event":"leave","client_id":"quiet","count":1})
    );
    assert!(
        quiet_active.elapsed() >= Duration::from_millis(1500),
        "expired too early"
    );
    // Sending again makes quiet present again.
    quiet
        .send_json(&json!({"msg_type":"heartbeat","target":"echo"}))
        .await;
    let join = chatty
        .recv_json_until(|m| m["payload"]["event"] == "join")
        .await;
    assert_eq!(join["payload"]["client_id"], "quiet");
}

/// Any valid message keeps a client present, not only heartbeats: over
/// several TTLs a client that chats and never heartbeats gets no leave.
async fn presence_follows_messages_without_heartbeats(env: Env) {
    let mut chatty = env.join("t1", "room_c", "chatty", None).await;
    let quiet = env.join("t1", "room_c", "quiet", None).await;
    let started = std::time::Instant::now();
    let mut quiet_left = false;
    // TTL 2 s here: 7 s is three and a half of them.
    while started.elapsed() < Duration::from_secs(7) {
        chatty
            .send_json(&json!({"msg_type":"msg","target":"echo","msg":"chat"}))
            .await;
        let deadline = tokio::time::Instant::now() + Duration::from_millis(600);
        while let Some(event) = chatty
            .recv(deadline.saturating_duration_since(tokio::time::Instant::now()))
            .await
        {
            let switchboard_testkit::ws::Event::Text(text) = event else {
                panic!("chatty's socket ended: {event:?}");
            };
            let m: Value = serde_json::from_str(&text).unwrap();
            if m["payload"]["event"] == "leave" {
                assert_eq!(
                    m["payload"]["client_id"], "quiet",
                    "a chatting client expired: {m}"
                );
                quiet_left = true;
            }
        }
    }
    assert!(quiet_left, "the silent client expired meanwhile");
    let answer = sync(&mut chatty).await;
    assert_eq!(answer["payload"]["members"], json!(["chatty"]));
    drop(quiet);
}

async fn tenants_are_isolated(env: Env) {
    let mut a1 = env
        .join("tenant_a", "shared", "alice", Some("broadcast"))
        .await;
    let mut b1 = env
        .join("tenant_b", "shared", "bob", Some("broadcast"))
        .await;
    let mut b_alice = env.join("tenant_b", "shared", "alice", None).await;
    let answer = sync(&mut a1).await;
    assert_eq!(answer["payload"]["members"], json!(["alice"]));
    a1.send_json(&json!({"msg_type":"msg","target":"group","msg":"a-only"}))
        .await;
    a1.send_json(&json!({"msg_type":"msg","target":"broadcast","msg":"a-all"}))
        .await;
    a1.send_json(&json!({"msg_type":"msg","target":"direct","to_id":"bob","msg":"x"}))
        .await;
    let mut got = Vec::new();
    for _ in 0..2 {
        got.push(a1.recv_json_until(is_msg).await["msg"].clone());
    }
    assert_eq!(got, vec![json!("a-only"), json!("a-all")]);
    let e = next(&mut a1, "shared").await;
    assert_eq!(
        e["payload"]["code"], "not_found",
        "bob lives in another tenant"
    );
    sentinel(&mut b1, "bob", "shared").await;
    sentinel(&mut b_alice, "alice", "shared").await;
}

async fn legacy_v2(env: Env) {
    let mut v3 = env.join("t1", "room_l", "modern", None).await;
    let token = token("legacy", "client", "t1", None);
    let mut v2 = WsClient::open(&group_v2_url(env.edge(), "room_l", "legacy", &token)).await;
    v3.recv_json_until(|m| m["payload"]["client_id"] == "legacy")
        .await;
    v2.send_json(&json!({"msg":"hi","x":1})).await;
    for ws in [&mut v3, &mut v2] {
        let m = ws.recv_json_until(is_msg).await;
        assert_eq!(m["msg"], "hi");
        assert_eq!(m["payload"], json!({"msg":"hi","x":1}));
        assert_eq!(m["from_id"], "legacy");
        assert_eq!(m["msg_type"], "msg");
        assert_eq!(m["target"], "group");
    }
    v3.send_json(&json!({"msg_type":"cmd","target":"group","cmd":"RELOAD_UI"}))
        .await;
    let m = v2.recv_json_until(is_msg).await;
    assert_eq!(m["cmd"], "RELOAD_UI", "V2 sockets receive the V3 message");
    v2.send_text("{oops").await;
    assert_eq!(
        next(&mut v2, "room_l").await["payload"]["code"],
        "invalid_json"
    );
}

async fn invalid_messages_keep_the_socket_open(env: Env) {
    let mut a = env.join("t1", "room_v", "alice", None).await;
    let mut b = env.join("t1", "room_v", "bob", None).await;
    let cases = [
        ("{not json", "invalid_json", None),
        ("[1,2]", "validation_error", None),
        (r#"{"msg_type":"msg"}"#, "validation_error", Some("target")),
        (
            r#"{"msg_type":"yell","target":"group"}"#,
            "validation_error",
            Some("msg_type"),
        ),
        (
            r#"{"msg_type":"msg","target":"all"}"#,
            "validation_error",
            Some("target"),
        ),
        (
            r#"{"msg_type":"msg","target":"direct"}"#,
            "validation_error",
            Some("to_id"),
        ),
        (
            r#"{"msg_type":"msg","target":"group","from_id":"bob"}"#,
            "validation_error",
            Some("from_id"),
        ),
        (
            r#"{"msg_type":"msg","target":"group","group_id":"elsewhere"}"#,
            "validation_error",
            Some("group_id"),
        ),
        (
            r#"{"msg_type":"msg","target":"group","msg":5}"#,
            "validation_error",
            Some("msg"),
        ),
        (
            r#"{"msg_type":"msg","target":"group","payload":[1]}"#,
            "validation_error",
            Some("payload"),
        ),
        (
            r#"{"msg_type":"msg","target":"group","extra":1}"#,
            "validation_error",
            Some("extra"),
        ),
    ];
    for (text, code, field) in cases {
        a.send_text(text).await;
        let e = next(&mut a, "room_v").await;
        assert_eq!(e["msg_type"], "error", "{text}");
        assert_eq!(e["target"], "echo");
        assert_eq!(e["version"], "3");
        assert_eq!(e["payload"]["code"], code, "{text}");
        assert_eq!(e["payload"]["field"].as_str(), field, "{text}");
        assert!(e["msg"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let e = {
        a.send_text(r#"{"msg_type":"msg","target":"direct"}"#).await;
        next(&mut a, "room_v").await
    };
    assert_eq!(e["msg"], "to_id is required when target is direct");
    sentinel(&mut b, "bob", "room_v").await;
    a.send_json(&json!({"msg_type":"msg","target":"echo","msg":"still here"}))
        .await;
    assert_eq!(next(&mut a, "room_v").await["msg"], "still here");
}

switchboard_testkit::against_both_stores! {
    group_target;
    direct_target;
    broadcast_target;
    echo_and_heartbeat;
    presence_join_leave_and_tabs;
    presence_expires("--presence-ttl", "2s", "--presence-sweep", "200ms");
    presence_follows_messages_without_heartbeats("--presence-ttl", "2s", "--presence-sweep", "200ms");
    tenants_are_isolated;
    legacy_v2;
    invalid_messages_keep_the_socket_open;
}
