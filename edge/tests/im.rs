//! The IM dialect end to end: logins over HTTP, real WebSocket clients,
//! every status code, offline storage, receipts and the server API. Each
//! scenario runs against the in-memory store and a private redis-server.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use switchboard_common::auth::{Minter, claims};
use switchboard_testkit::WsClient;
use switchboard_testkit::cluster::scrape;
use switchboard_testkit::http::metric;
use switchboard_testkit::http::{self, Reply};
use switchboard_testkit::im::{
    self, APP_LOGIN, ImClient, LOGIN, SOCKET, is_status_for, message, notice_body, receipt,
    register, status_of, text,
};
use switchboard_testkit::switchboard::{self, API_KEY, token};

switchboard_testkit::standalone_env!();

impl Env {
    async fn connect(&self, tenant: &str, user: &str, scope: Option<&str>) -> ImClient {
        ImClient::connect(self.edge(), tenant, user, scope).await
    }

    /// `POST /api/v1/im/messages` with the API key acting for `tenant`.
    async fn post(&self, tenant: &str, body: &Value) -> Reply {
        let auth = format!("Bearer {API_KEY}");
        http::post_json(
            self.0.api(),
            "/api/v1/im/messages",
            &[("authorization", &auth), ("x-tenant", tenant)],
            body,
        )
        .await
    }

    /// Messages kept and receipts taken so far, from the router's
    /// metrics: the same figures on either store.
    async fn kept_and_receipted(&self) -> (f64, f64) {
        let text = scrape(self.0.process.addr("router-admin")).await;
        (
            metric(&text, "switchboard_router_im_messages_kept_total"),
            metric(&text, "switchboard_router_im_receipts_total"),
        )
    }

    /// Proves that `client` (of `tenant`) got nothing since it was last
    /// read: a system message sent to its user through the server API
    /// travels the delivery path and must be the first thing it receives.
    /// It is receipted at once, so no later registration gets it again.
    async fn sentinel(&self, tenant: &str, client: &mut ImClient) {
        let id = format!("sentinel-{}", SENTINELS.fetch_add(1, Ordering::Relaxed));
        let reply = self
            .post(
                tenant,
                &json!({"id": id, "type": 2001, "to": client.user, "body": "sentinel"}),
            )
            .await;
        assert_eq!(reply.status, 200, "{}", reply.json());
        let first = client.ws.recv_json().await;
        assert_eq!(
            first["id"], id,
            "{} received something before its sentinel: {first}",
            client.user
        );
        let user = client.user.clone();
        client.ws.send_json(&receipt(&id, &user, "SYSTEM")).await;
    }
}

static SENTINELS: AtomicUsize = AtomicUsize::new(0);

/// Sends `message` and returns the code of the 9001 that answers it.
async fn code(ws: &mut WsClient, message: &Value) -> u64 {
    let id = message["id"].as_str().unwrap_or_default().to_owned();
    ws.send_json(message).await;
    status_of(&ws.recv_json_until(|m| is_status_for(m, &id)).await).0
}

/// Sends a text to the sender itself: its own socket gets the message
/// and the send status, in either order.
async fn send_to_self(client: &mut ImClient, id: &str) {
    let user = client.user.clone();
    client
        .ws
        .send_json(&text(id, &user, &user, "note to self"))
        .await;
    let (mut status, mut delivered) = (false, false);
    while !(status && delivered) {
        let got = client.ws.recv_json().await;
        assert_eq!(got["id"], id, "{got}");
        if got["type"] == 9001 {
            assert_eq!(status_of(&got).0, 200);
            status = true;
        } else {
            assert_eq!(got["body"], "note to self");
            delivered = true;
        }
    }
}

/// Sends raw text and returns the code of the next 9001.
async fn raw_code(ws: &mut WsClient, text: &str) -> u64 {
    ws.send_text(text).await;
    status_of(&ws.recv_json_until(|m| m["type"] == 9001).await).0
}

async fn login_refusals(env: Env) {
    let edge = env.edge();
    let good = token("alice", "user", "t1", None);
    for prefix in [LOGIN, APP_LOGIN] {
        let reply = im::login(edge, prefix, "web-1.app_2", &good).await;
        assert_eq!(reply.status, 200, "{prefix}");
        assert!(reply.json()["sessionId"].is_string());
    }
    // The token also comes from headers.
    let bearer = format!("Bearer {good}");
    let reply = http::get(edge, &format!("{LOGIN}/web"), &[("authorization", &bearer)]).await;
    assert_eq!(reply.status, 200);
    let reply = http::get(edge, &format!("{APP_LOGIN}/app"), &[("token", &good)]).await;
    assert_eq!(reply.status, 200);

    let forged = Minter::hs256(b"another secret").mint(&claims("alice", "user", "t1", None, 60));
    let cases = [
        (format!("{LOGIN}/web"), 401),
        (format!("{LOGIN}/web?token=garbage"), 401),
        (format!("{LOGIN}/web?token={forged}"), 401),
        (format!("{LOGIN}/%E5%AE%A2%E6%88%B7?token={good}"), 400),
        (format!("{APP_LOGIN}/has%20space?token={good}"), 400),
        (format!("{LOGIN}/{}?token={good}", "x".repeat(65)), 400),
        (format!("{LOGIN}/?token={good}"), 400),
        (format!("{LOGIN}/a/b?token={good}"), 400),
    ];
    for (path, status) in cases {
        let reply = http::get(edge, &path, &[]).await;
        assert_eq!(reply.status, status, "{path}");
        let body = reply.json();
        assert_eq!(body["code"], status, "{path}: {body}");
        assert!(body["msg"].is_string(), "{path}: {body}");
    }
    let reply = http::request("POST", edge, &format!("{LOGIN}/web?token={good}"), &[], "").await;
    assert_eq!(reply.status, 405);
    assert_eq!(reply.json()["code"], 405);
}

async fn registration(env: Env) {
    let edge = env.edge();
    let mut ws = ImClient::open(edge, SOCKET).await;
    // Nothing but a register before registering.
    assert_eq!(code(&mut ws, &text("t1", "alice", "bob", "hi")).await, 402);
    let unknown = format!("{}.t1", "ab".repeat(16));
    assert_eq!(code(&mut ws, &register("r1", "alice", &unknown)).await, 402);
    assert_eq!(
        code(&mut ws, &register("r2", "alice", "garbage")).await,
        402
    );
    assert_eq!(
        code(&mut ws, &message("r3", 1000, "alice", "SYSTEM", "not json")).await,
        404
    );
    // The failed tries left the socket open; a good session registers it.
    let session = im::session_id(edge, "t1", "alice", None).await;
    ws.send_json(&register("r4", "alice", &session)).await;
    let reply = ws.recv_json().await;
    assert_eq!(
        (
            reply["id"].as_str(),
            reply["to"].as_str(),
            reply["from"].as_str()
        ),
        (Some("r4"), Some("alice"), Some("SYSTEM"))
    );
    assert_eq!(reply["isSystem"], true);
    assert!(reply["timestamp"].is_u64());
    assert_eq!(status_of(&reply), (200, "SUCCESS".to_owned()));
    assert_eq!(code(&mut ws, &register("r5", "alice", &session)).await, 200);
    let other = im::session_id(edge, "t1", "alice", None).await;
    assert_eq!(code(&mut ws, &register("r6", "alice", &other)).await, 400);
    // A session serves several sockets while it is in use.
    let mut second = ImClient::with_session(edge, "alice", &session).await;
    second.send_text("m1", "alice", "to myself").await;
    assert_eq!(ws.recv_json().await["id"], "m1");
}

async fn every_status_code(env: Env) {
    let mut alice = env.connect("t1", "alice", None).await;
    let mut officer = env.connect("t1", "officer", Some("notice")).await;
    let ws = &mut alice.ws;
    let notice = notice_body("Maintenance", "at noon", None);
    let targeted = notice_body("Order", "shipped", Some("/orders/1"));
    let status_body = json!({"code":200,"status":"SUCCESS","msg":"ok"}).to_string();
    let cases: Vec<(Value, u64)> = vec![
        (text("s200", "alice", "bob", "hello"), 200),
        (
            json!({"id":"s401a","type":2001,"isSystem":false,"from":"alice","to":"bob"}),
            404,
        ),
        (
            json!({"id":"s401b","type":"2001","isSystem":false,"from":"alice","to":"bob","body":"x"}),
            401,
        ),
        (
            json!({"id":"s401c","type":2001,"from":"alice","to":"bob","body":"x"}),
            401,
        ),
        (
            json!({"id":"s401d","type":2001,"isSystem":false,"to":"bob","body":"x"}),
            401,
        ),
        (
            json!({"id":"s401e","type":2001,"isSystem":false,"from":"alice","to":["bob"],"body":"x"}),
            401,
        ),
        (
            json!({"id":"s401f","type":2001,"isSystem":false,"from":"alice","to":"bob","body":"x","timestamp":"now"}),
            401,
        ),
        (
            json!({"type":2001,"isSystem":false,"from":"alice","to":"bob","body":"x"}),
            401,
        ),
        (message("s403", 4242, "alice", "bob", "x"), 403),
        (message("s403b", 9001, "alice", "bob", &status_body), 403),
        (text("s404", "alice", "bob", ""), 404),
        (text("s405", "mallory", "bob", "x"), 405),
        (text("s406a", "alice", "", "x"), 406),
        (text("s406b", "alice", "bob,,carol", "x"), 406),
        (text("s406c", "alice", "bob, has space", "x"), 406),
        (text("s406d", "alice", "SYSTEM", "x"), 406),
        (message("s400", 3001, "alice", "bob", &notice), 400),
        (message("s400b", 3003, "alice", "bob", &targeted), 400),
        (
            json!({"id":"s400c","type":2001,"isSystem":true,"from":"alice","to":"bob","body":"x"}),
            400,
        ),
        (receipt("nope", "alice", "bob"), 407),
        (
            message("s407b", 9101, "alice", "bob,carol", &status_body),
            407,
        ),
        (message("s404b", 9101, "alice", "bob", "not a status"), 404),
    ];
    for (m, expected) in cases {
        assert_eq!(code(ws, &m).await, expected, "{m}");
    }
    assert_eq!(raw_code(ws, "not json at all").await, 401);
    assert_eq!(raw_code(ws, "[1,2,3]").await, 401);
    // With scope notice, notices go out; their bodies are checked.
    let o = &mut officer.ws;
    assert_eq!(
        code(o, &message("n1", 3001, "officer", "bob", &notice)).await,
        200
    );
    assert_eq!(
        code(o, &message("n2", 3003, "officer", "bob", &targeted)).await,
        200
    );
    assert_eq!(
        code(o, &message("n3", 3003, "officer", "bob", &notice)).await,
        404,
        "no target"
    );
    assert_eq!(
        code(o, &message("n4", 3001, "officer", "bob", "plain")).await,
        404
    );
    let from_system =
        json!({"id":"n5","type":3001,"isSystem":true,"from":"SYSTEM","to":"bob","body":notice});
    assert_eq!(code(o, &from_system).await, 200);
    // Every refusal left the socket open and working.
    send_to_self(&mut alice, "after").await;
}

async fn delivery(env: Env) {
    let mut alice = env.connect("t1", "alice", None).await;
    let mut alice_phone = env.connect("t1", "alice", None).await;
    let mut bob = env.connect("t1", "bob", None).await;
    let mut carol = env.connect("t1", "carol", None).await;
    let sent = text("m1", "alice", "bob, carol", "hello both");
    assert_eq!(code(&mut alice.ws, &sent).await, 200);
    for ws in [&mut bob, &mut carol, &mut alice_phone] {
        let got = ws.recv_message().await;
        assert_eq!(
            (
                got["id"].as_str(),
                got["type"].as_i64(),
                got["body"].as_str()
            ),
            (Some("m1"), Some(2001), Some("hello both"))
        );
        assert_eq!(got["to"], "bob, carol", "unchanged");
        assert_eq!(got["isSystem"], false);
        assert!(got["timestamp"].is_u64(), "filled: {got}");
    }
    // The sending socket gets the status, not a copy.
    env.sentinel("t1", &mut alice).await;
    assert_eq!(alice_phone.recv_message().await["body"], "sentinel");
    // A timestamp the sender set is kept.
    let mut stamped = text("m2", "alice", "bob", "stamped");
    stamped["timestamp"] = json!(1_700_000_000_000u64);
    stamped["extra"] = json!({"kept": true});
    assert_eq!(code(&mut alice.ws, &stamped).await, 200);
    let got = bob.recv_message().await;
    assert_eq!(got["timestamp"], 1_700_000_000_000u64);
    assert_eq!(got["extra"], json!({"kept": true}));
    let _ = alice_phone.recv_message().await;
    // from may equal to: every socket of the sender gets it.
    send_to_self(&mut alice, "m3").await;
    assert_eq!(alice_phone.recv_message().await["id"], "m3");
    env.sentinel("t1", &mut carol).await;
}

async fn offline_messages_come_first_and_in_order(env: Env) {
    let mut alice = env.connect("t1", "alice", None).await;
    let (kept_before, _) = env.kept_and_receipted().await;
    for i in 1..=5 {
        alice
            .send_text(&format!("m{i}"), "bob", &format!("offline {i}"))
            .await;
    }
    let (kept, _) = env.kept_and_receipted().await;
    assert_eq!(kept - kept_before, 5.0, "each SUCCESS was kept");
    let mut bob = env.connect("t1", "bob", None).await;
    alice.send_text("m6", "bob", "live").await;
    for i in 1..=6 {
        assert_eq!(bob.recv_message().await["id"], format!("m{i}"));
    }
    env.sentinel("t1", &mut bob).await;
}

async fn receipts_release_and_unreceipted_come_again(env: Env) {
    let mut alice = env.connect("t1", "alice", None).await;
    let mut alice_phone = env.connect("t1", "alice", None).await;
    let mut bob = env.connect("t1", "bob", None).await;
    let (kept_before, receipted_before) = env.kept_and_receipted().await;
    alice.send_text("m1", "bob", "one").await;
    alice.send_text("m2", "bob", "two").await;
    assert_eq!(bob.recv_message().await["id"], "m1");
    assert_eq!(bob.recv_message().await["id"], "m2");
    let (kept, _) = env.kept_and_receipted().await;
    assert_eq!(kept - kept_before, 2.0, "kept until receipted");
    bob.ws.send_json(&receipt("m1", "bob", "alice")).await;
    for ws in [&mut alice, &mut alice_phone] {
        let relayed = ws.ws.recv_json_until(|m| m["type"] == 9101).await;
        assert_eq!(
            (
                relayed["id"].as_str(),
                relayed["from"].as_str(),
                relayed["to"].as_str()
            ),
            (Some("m1"), Some("bob"), Some("alice"))
        );
        assert_eq!(status_of(&relayed), (200, "SUCCESS".to_owned()));
    }
    // Relayed, so taken: counted before the sentinel's own receipt.
    let (_, receipted) = env.kept_and_receipted().await;
    assert_eq!(receipted - receipted_before, 1.0, "the receipt released m1");
    // A valid receipt gets no send status.
    env.sentinel("t1", &mut bob).await;
    // Twice, or naming another sender, it refers to nothing.
    assert_eq!(code(&mut bob.ws, &receipt("m1", "bob", "alice")).await, 407);
    assert_eq!(code(&mut bob.ws, &receipt("m2", "bob", "carol")).await, 407);
    // m2 was never receipted: a new socket gets it again, m1 is gone.
    bob.ws.close().await;
    let mut again = ImClient::with_session(env.edge(), "bob", &bob.session_id).await;
    assert_eq!(again.recv_message().await["id"], "m2");
    env.sentinel("t1", &mut again).await;
    again.ws.send_json(&receipt("m2", "bob", "alice")).await;
    assert_eq!(
        alice.ws.recv_json_until(|m| m["type"] == 9101).await["id"],
        "m2"
    );
    again.ws.close().await;
    // Nothing is kept any more: the first thing a new socket gets is the
    // sentinel, not a backlog.
    let mut third = ImClient::with_session(env.edge(), "bob", &bob.session_id).await;
    env.sentinel("t1", &mut third).await;
}

async fn tenants_are_isolated(env: Env) {
    let edge = env.edge();
    let mut alice = env.connect("t1", "alice", None).await;
    let mut bob_t1 = env.connect("t1", "bob", None).await;
    let mut bob_t2 = env.connect("t2", "bob", None).await;
    let mut alice_t2 = env.connect("t2", "alice", None).await;
    alice.send_text("m1", "bob", "for t1").await;
    assert_eq!(bob_t1.recv_message().await["id"], "m1");
    env.sentinel("t2", &mut bob_t2).await;
    env.sentinel("t2", &mut alice_t2).await;
    // The server API acts for one tenant.
    let reply = env
        .post("t2", &json!({"type":2001,"to":"bob","body":"for t2"}))
        .await;
    assert_eq!(reply.json(), json!({"delivered": 1, "stored": 0}));
    assert_eq!(bob_t2.recv_message().await["body"], "for t2");
    env.sentinel("t1", &mut bob_t1).await;
    // Receipts in t2 find nothing of t1.
    assert_eq!(
        code(&mut bob_t2.ws, &receipt("m1", "bob", "alice")).await,
        407
    );
    // A session id is bound to its tenant.
    let session = im::session_id(edge, "t1", "carol", None).await;
    let (random, _) = session.split_once('.').unwrap();
    let mut ws = ImClient::open(edge, SOCKET).await;
    assert_eq!(
        code(&mut ws, &register("r1", "carol", &format!("{random}.t2"))).await,
        402
    );
    assert_eq!(code(&mut ws, &register("r2", "carol", &session)).await, 200);
}

/// The register reply says the socket is subscribed: a message posted once
/// it is out is delivered live, not kept for later.
async fn a_message_after_the_register_reply_is_delivered_live(env: Env) {
    for i in 0..200 {
        let user = format!("u{i}");
        let mut socket = env.connect("t1", &user, None).await;
        let id = format!("p{i}");
        let reply = env
            .post(
                "t1",
                &json!({"id": id, "type": 2001, "to": user, "body": "right after"}),
            )
            .await;
        assert_eq!(
            reply.json(),
            json!({"delivered": 1, "stored": 0}),
            "registration {i}"
        );
        assert_eq!(socket.recv_message().await["id"], id);
    }
}

async fn server_api(env: Env) {
    let mut bob = env.connect("t1", "bob", None).await;
    let reply = env
        .post(
            "t1",
            &json!({"id":"api1","type":2001,"to":"bob","body":"from the back office"}),
        )
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json(), json!({"delivered": 1, "stored": 0}));
    let got = bob.recv_message().await;
    assert_eq!(
        (
            got["id"].as_str(),
            got["from"].as_str(),
            got["isSystem"].as_bool()
        ),
        (Some("api1"), Some("SYSTEM"), Some(true))
    );
    assert!(got["timestamp"].is_u64());
    let body = notice_body("Hello", "welcome", Some("/inbox"));
    let reply = env
        .post("t1", &json!({"id":"api2","type":3003,"isSystem":true,"from":"SYSTEM","to":"bob,dave","body":body}))
        .await;
    assert_eq!(reply.json(), json!({"delivered": 1, "stored": 1}));
    assert_eq!(bob.recv_message().await["type"], 3003);
    // An id is made when the caller gives none.
    let reply = env
        .post("t1", &json!({"type":2001,"to":"dave","body":"x"}))
        .await;
    assert_eq!(reply.json(), json!({"delivered": 0, "stored": 1}));
    // Dave was offline: both wait for him, in order. A receipt to SYSTEM
    // releases a copy and is relayed nowhere.
    let mut dave = env.connect("t1", "dave", None).await;
    assert_eq!(dave.recv_message().await["id"], "api2");
    let generated = dave.recv_message().await;
    assert!(generated["id"].as_str().is_some_and(|id| !id.is_empty()));
    dave.ws.send_json(&receipt("api2", "dave", "SYSTEM")).await;
    env.sentinel("t1", &mut dave).await;

    let bad = [
        (json!({"type":9101,"to":"bob","body":"{}"}), "type"),
        (json!({"type":2001,"to":"","body":"x"}), "to"),
        (json!({"type":2001,"to":"a,,b","body":"x"}), "to"),
        (json!({"type":2001,"to":"bob"}), "body"),
        (json!({"type":2001,"to":"bob","body":""}), "body"),
        (
            json!({"type":3003,"to":"bob","body":notice_body("t", "m", None)}),
            "body",
        ),
        (
            json!({"type":2001,"from":"alice","to":"bob","body":"x"}),
            "from",
        ),
        (
            json!({"type":2001,"isSystem":false,"to":"bob","body":"x"}),
            "isSystem",
        ),
        (json!({"type":"2001","to":"bob","body":"x"}), "type"),
        (json!({"id":7,"type":2001,"to":"bob","body":"x"}), "id"),
    ];
    for (body, field) in bad {
        let reply = env.post("t1", &body).await;
        assert_eq!(reply.status, 400, "{body}");
        assert_eq!(reply.json()["error"]["field"], field, "{body}");
    }
    let api = env.0.api();
    let reply = http::request("POST", api, "/api/v1/im/messages", &[], "{}").await;
    assert_eq!(reply.status, 401);
    let auth = format!("Bearer {API_KEY}");
    let reply = http::request(
        "POST",
        api,
        "/api/v1/im/messages",
        &[("authorization", &auth)],
        "not json",
    )
    .await;
    assert_eq!(reply.status, 400);
    env.sentinel("t1", &mut bob).await;
}

/// Messages sent while a socket registers reach it after the kept ones,
/// each at least once, first copies in order: the owner of the user's
/// topic orders the registration against the sends.
async fn sends_racing_a_registration_keep_their_order(env: Env) {
    let mut alice = env.connect("t1", "alice", None).await;
    for i in 0..20 {
        alice.send_text(&format!("m{i:03}"), "bob", "early").await;
    }
    let session = im::session_id(env.edge(), "t1", "bob", None).await;
    let edge = env.edge();
    let registering =
        tokio::spawn(async move { ImClient::with_session(edge, "bob", &session).await });
    for i in 20..60 {
        alice.send_text(&format!("m{i:03}"), "bob", "racing").await;
    }
    let mut bob = registering.await.unwrap();
    let mut first_seen: Vec<String> = Vec::new();
    while first_seen.len() < 60 {
        let got = bob.recv_message().await;
        let id = got["id"].as_str().unwrap().to_owned();
        if !first_seen.contains(&id) {
            first_seen.push(id);
        }
    }
    let expected: Vec<String> = (0..60).map(|i| format!("m{i:03}")).collect();
    assert_eq!(first_seen, expected);
}

async fn malformed_input_never_breaks_anything(env: Env) {
    let mut alice = env.connect("t1", "alice", None).await;
    let ws = &mut alice.ws;
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let many: Vec<String> = (0..1_001).map(|i| format!("u{i}")).collect();
    let texts = [
        ("\u{0}\u{1}\u{2}garbage", 401),
        ("{", 401),
        ("null", 401),
        ("\"just a string\"", 401),
        (deep.as_str(), 401),
        (
            r#"{"id":"x","type":1e400,"isSystem":false,"from":"alice","to":"bob","body":"x"}"#,
            401,
        ),
        (
            r#"{"id":"x","type":99999999999999999999999,"isSystem":false,"from":"alice","to":"bob","body":"x"}"#,
            401,
        ),
        (
            r#"{"id":"x","type":-1,"isSystem":false,"from":"alice","to":"bob","body":"x"}"#,
            403,
        ),
    ];
    for (text, expected) in texts {
        assert_eq!(raw_code(ws, text).await, expected, "{text:.60}");
    }
    let long_id = text(&"i".repeat(300), "alice", "bob", "x");
    assert_eq!(code(ws, &long_id).await, 401);
    assert_eq!(
        code(ws, &text("many", "alice", &many.join(","), "x")).await,
        406
    );
    let big_body = text("big", "alice", "bob", &"b".repeat(60_000));
    assert_eq!(code(ws, &big_body).await, 200);
    // Frames the common rules close: binary 1003, bad UTF-8 1007.
    let mut binary = ImClient::open(env.edge(), SOCKET).await;
    binary.send_binary(b"\x00\x01").await;
    assert_eq!(binary.recv_close(Duration::from_secs(2)).await.0, 1003);
    let mut utf8 = ImClient::open(env.edge(), SOCKET).await;
    utf8.send_raw_text(b"\xff\xfe").await;
    assert_eq!(utf8.recv_close(Duration::from_secs(2)).await.0, 1007);
    // Everything still works.
    send_to_self(&mut alice, "after").await;
}

switchboard_testkit::against_both_stores! {
    login_refusals;
    registration;
    every_status_code;
    delivery;
    offline_messages_come_first_and_in_order;
    receipts_release_and_unreceipted_come_again;
    tenants_are_isolated;
    server_api;
    a_message_after_the_register_reply_is_delivered_live;
    sends_racing_a_registration_keep_their_order;
    malformed_input_never_breaks_anything;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unregistered_sockets_close_after_10_seconds() {
    let env = Env::memory(&[]).await;
    let edge = env.edge();
    let registered = env.connect("t1", "alice", None).await;
    // Taken before the sockets open, so the time since is never shorter
    // than the edge's own 10 s clock.
    let started = std::time::Instant::now();
    let mut idle = ImClient::open(edge, SOCKET).await;
    let mut failing = ImClient::open(edge, SOCKET).await;
    // Failed registrations do not stop the clock.
    assert_eq!(code(&mut failing, &register("r1", "x", "nope")).await, 402);
    for ws in [&mut idle, &mut failing] {
        let (code, _) = ws.recv_close(Duration::from_secs(30)).await;
        assert_eq!(code, 1008);
    }
    let waited = started.elapsed();
    assert!(waited >= Duration::from_secs(9), "closed after {waited:?}");
    let mut registered = registered;
    send_to_self(&mut registered, "m1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_expire_and_the_socket_path_is_configurable() {
    let env = Env::memory(&["--im-session-ttl", "1s", "--im-websocket-path", "/chat"]).await;
    let edge = env.edge();
    let session = im::session_id(edge, "t1", "alice", None).await;
    assert!(
        WsClient::connect(&format!("ws://{edge}{SOCKET}"))
            .await
            .is_err(),
        "/websocket moved"
    );
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let mut ws = ImClient::open(edge, "/chat").await;
    assert_eq!(code(&mut ws, &register("r1", "alice", &session)).await, 402);
    let fresh = im::session_id(edge, "t1", "alice", None).await;
    assert_eq!(code(&mut ws, &register("r2", "alice", &fresh)).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_messages_are_capped() {
    let env = Env::memory(&["--im-offline-max", "3"]).await;
    let mut alice = env.connect("t1", "alice", None).await;
    for i in 1..=5 {
        alice.send_text(&format!("m{i}"), "bob", "x").await;
    }
    let mut bob = env.connect("t1", "bob", None).await;
    for expected in ["m3", "m4", "m5"] {
        assert_eq!(bob.recv_message().await["id"], expected);
    }
    env.sentinel("t1", &mut bob).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_socket_path_comes_from_the_config_file_or_env() {
    let file = std::env::temp_dir().join(format!("switchboard-im-{}.toml", std::process::id()));
    std::fs::write(&file, "im-websocket-path = \"/from-file\"\n").unwrap();
    let path = file.to_str().unwrap().to_owned();
    let from_file = switchboard::standalone(&["--config", &path]);
    let env = [("SWITCHBOARD_IM_WEBSOCKET_PATH", "/from-env".to_owned())];
    let from_env = switchboard::standalone_with_env(&["--config", &path], &env);
    for (process, route) in [(&from_file, "/from-file"), (&from_env, "/from-env")] {
        switchboard::wait_ready(process.addr("edge-admin")).await;
        let edge = process.addr("edge");
        let session = im::session_id(edge, "t1", "alice", None).await;
        let mut ws = ImClient::open(edge, route).await;
        assert_eq!(code(&mut ws, &register("r1", "alice", &session)).await, 200);
    }
    let _ = std::fs::remove_file(&file);
}
