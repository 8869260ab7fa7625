//! Tenant isolation, played by an attacker: tenant B's sockets and B's
//! service token try to reach tenant A's group deliveries, presence, IM
//! sessions and messages, IoT events and stats, and get nothing. Absence
//! is proven with sentinels: after what must not arrive, something that
//! must arrives on A's socket, and it is the first thing A gets. Each
//! scenario runs on the in-memory store and on a private redis-server.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};
use switchboard_common::auth::{Minter, claims};
use switchboard_testkit::WsClient;
use switchboard_testkit::http::{self, Reply};
use switchboard_testkit::im::{self, ImClient, SOCKET, register, status_of};
use switchboard_testkit::switchboard::{self, API_KEY, SECRET, join_group, token};

/// Tenant A, whose traffic the attacker wants.
const A: &str = "tenant_a";
/// Tenant B, the attacker's.
const B: &str = "tenant_b";

const IOT_ROUTE: &str = "/api/v1/system/common/websocket/connect";

switchboard_testkit::standalone_env!();

impl Env {
    async fn post(&self, path: &str, headers: &[(&str, &str)], body: &Value) -> Reply {
        http::post_json(self.api(), path, headers, body).await
    }

    async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        http::get(self.api(), path, headers).await
    }
}

fn service(tenant: &str) -> String {
    format!("Bearer {}", token("backend", "service", tenant, None))
}

/// A token of `kind` for `sub` that carries no `tenant` claim.
fn token_without_tenant(sub: &str, kind: &str) -> String {
    let mut claims = claims(sub, kind, "unused", None, 3600);
    claims.tenant = None;
    Minter::hs256(SECRET.as_bytes()).mint(&claims)
}

/// The next group message that is not a presence event.
async fn next_message(ws: &mut WsClient) -> Value {
    ws.recv_json_until(|m| m["msg_type"] != "presence").await
}

fn group_msg(target: &str, msg: &str) -> Value {
    json!({"msg_type":"msg","target":target,"msg":msg})
}

async fn group_deliveries(env: Env) {
    let edge = env.edge();
    let mut alice = join_group(edge, A, "room", "alice", None).await;
    let mut carol = join_group(edge, A, "room", "carol", None).await;
    let mut bob = join_group(edge, A, "lobby", "bob", Some("broadcast")).await;
    let mut mallory = join_group(edge, B, "room", "mallory", Some("broadcast")).await;

    // Group: B's room has the same name. Mallory's own copy proves it was
    // delivered before A's sentinel is sent.
    mallory.send_json(&group_msg("group", "leak group")).await;
    mallory.recv_json_until(|m| m["msg"] == "leak group").await;
    carol.send_json(&group_msg("group", "sentinel group")).await;
    let first = next_message(&mut alice).await;
    assert_eq!(
        (first["msg"].as_str(), first["from_id"].as_str()),
        (Some("sentinel group"), Some("carol"))
    );

    // Direct: there is no alice in B; the attacker is told so.
    let mut direct = group_msg("direct", "leak direct");
    direct["to_id"] = json!("alice");
    mallory.send_json(&direct).await;
    let error = mallory.recv_json_until(|m| m["msg_type"] == "error").await;
    assert_eq!(error["payload"]["code"], "not_found", "{error}");
    let mut sentinel = group_msg("direct", "sentinel direct");
    sentinel["to_id"] = json!("alice");
    bob.send_json(&sentinel).await;
    assert_eq!(next_message(&mut alice).await["msg"], "sentinel direct");

    // Broadcast: every socket of B, none of A.
    mallory
        .send_json(&group_msg("broadcast", "leak broadcast"))
        .await;
    mallory
        .recv_json_until(|m| m["msg"] == "leak broadcast")
        .await;
    bob.send_json(&group_msg("broadcast", "sentinel broadcast"))
        .await;
    assert_eq!(next_message(&mut alice).await["msg"], "sentinel broadcast");

    // B's service token: B's sockets only, and it cannot name A.
    let b_auth = service(B);
    let b = [("authorization", b_auth.as_str())];
    let reply = env
        .post(
            "/api/v1/groups/room/messages",
            &b,
            &group_msg("group", "leak api group"),
        )
        .await;
    assert_eq!(reply.json(), json!({"delivered": 1}), "mallory only");
    let mut direct = group_msg("direct", "leak api direct");
    direct["to_id"] = json!("alice");
    let reply = env.post("/api/v1/groups/room/messages", &b, &direct).await;
    assert_eq!(reply.json(), json!({"delivered": 0}), "no alice in B");
    let reply = env
        .post(
            "/api/v1/broadcast",
            &b,
            &json!({"msg_type":"cmd","cmd":"LEAK"}),
        )
        .await;
    assert_eq!(reply.json(), json!({"delivered": 1}), "mallory only");
    let as_a = [("authorization", b_auth.as_str()), ("x-tenant", A)];
    for (path, body) in [
        (
            "/api/v1/groups/room/messages",
            group_msg("group", "leak x-tenant"),
        ),
        ("/api/v1/broadcast", json!({"msg_type":"cmd","cmd":"LEAK"})),
    ] {
        let reply = env.post(path, &as_a, &body).await;
        assert_eq!(reply.status, 403, "{path}: {:?}", reply.json());
    }
    let a_auth = service(A);
    let reply = env
        .post(
            "/api/v1/groups/room/messages",
            &[("authorization", &a_auth)],
            &group_msg("group", "sentinel api"),
        )
        .await;
    assert_eq!(reply.json(), json!({"delivered": 2}), "alice and carol");
    let first = next_message(&mut alice).await;
    assert_eq!(
        (first["msg"].as_str(), first["from_id"].as_str()),
        (Some("sentinel api"), Some("server"))
    );
}

/// Connects `client` to `group` with a token that has no tenant claim, and
/// waits for its own join.
async fn join_without_tenant(edge: SocketAddr, group: &str, client: &str) -> WsClient {
    let token = token_without_tenant(client, "client");
    let mut ws = WsClient::open(&switchboard::group_url(edge, group, client, &token)).await;
    ws.recv_json_until(|m| m["payload"]["event"] == "join" && m["payload"]["client_id"] == client)
        .await;
    ws
}

async fn presence(env: Env) {
    let edge = env.edge();
    let mut alice = join_group(edge, A, "room", "alice", None).await;
    let mut eve = join_group(edge, B, "room", "eve", None).await;
    let mut mallory = join_group(edge, B, "room", "mallory", None).await;
    eve.recv_json_until(|m| {
        m["payload"]["event"] == "join" && m["payload"]["client_id"] == "mallory"
    })
    .await;
    // No tenant claim: tenant default, whatever the room is called.
    let mut nobody = join_without_tenant(edge, "room", "nobody").await;

    // Joins: the first event alice gets after her own is A's bob joining.
    let mut bob = join_group(edge, A, "room", "bob", None).await;
    let first = alice.recv_json().await;
    assert_eq!(
        first["payload"],
        json!({"event":"join","client_id":"bob","count":2}),
        "{first}"
    );

    // Presence queries answer each tenant's members only.
    let query = json!({"msg_type":"presence","target":"echo"});
    for (ws, members) in [
        (&mut alice, json!(["alice", "bob"])),
        (&mut mallory, json!(["eve", "mallory"])),
        (&mut nobody, json!(["nobody"])),
    ] {
        ws.send_json(&query).await;
        let reply = ws
            .recv_json_until(|m| m["msg_type"] == "presence" && m["target"] == "echo")
            .await;
        assert_eq!(reply["payload"]["members"], members, "{reply}");
    }

    // Over the API: B's token sees B's room; it cannot ask for A's.
    let b_auth = service(B);
    let path = "/api/v1/groups/room/presence";
    let reply = env.get(path, &[("authorization", &b_auth)]).await;
    assert_eq!(reply.json(), json!({"members":["eve","mallory"],"count":2}));
    let reply = env
        .get(path, &[("authorization", &b_auth), ("x-tenant", A)])
        .await;
    assert_eq!(reply.status, 403);
    let key = format!("Bearer {API_KEY}");
    let reply = env.get(path, &[("authorization", &key)]).await;
    assert_eq!(
        reply.json(),
        json!({"members":["nobody"],"count":1}),
        "the key alone: default"
    );
    let reply = env.get(path, &[("authorization", &service(A))]).await;
    assert_eq!(reply.json(), json!({"members":["alice","bob"],"count":2}));

    // Leaves: mallory's reaches eve, and alice's next event is bob's leave.
    mallory.close().await;
    let leave = eve
        .recv_json_until(|m| m["payload"]["event"] == "leave")
        .await;
    assert_eq!(leave["payload"]["client_id"], "mallory");
    nobody.close().await;
    bob.close().await;
    let next = alice.recv_json().await;
    assert_eq!(
        next["payload"],
        json!({"event":"leave","client_id":"bob","count":1}),
        "{next}"
    );
}

/// The hex part of a session id `<hex>.<tenant>`.
fn session_hex(session_id: &str) -> &str {
    session_id
        .split_once('.')
        .map_or(session_id, |(hex, _)| hex)
}

async fn im_sessions_and_messages(env: Env) {
    let edge = env.edge();
    let mut alice = ImClient::connect(edge, A, "alice", None).await;
    let mut bob = ImClient::connect(edge, A, "bob", None).await;
    let mut mallory = ImClient::connect(edge, B, "mallory", None).await;

    // A B socket registering again with A's session id: refused, and it
    // stays mallory of B.
    for from in ["mallory", "alice"] {
        let reply = mallory
            .request(&register("steal", from, &alice.session_id))
            .await;
        assert_eq!(status_of(&reply).0, 400, "{reply}");
    }

    // Forged ids naming A: B's own random part with A's tenant, and A's
    // random part with B's tenant. Neither is a session.
    let b_session = im::session_id(edge, B, "alice", None).await;
    let mut impostor = ImClient::open(edge, SOCKET).await;
    for forged in [
        format!("{}.{A}", session_hex(&b_session)),
        format!("{}.{B}", session_hex(&alice.session_id)),
        format!("{}.{A}", "0".repeat(32)),
    ] {
        impostor
            .send_json(&register("forged", "alice", &forged))
            .await;
        let reply = impostor.recv_json_until(|m| m["type"] == 9001).await;
        assert_eq!(
            status_of(&reply),
            (402, "SESSION_ERROR".to_owned()),
            "{forged}: {reply}"
        );
    }
    // The impostor's real session: alice of B.
    impostor
        .send_json(&register("real", "alice", &b_session))
        .await;
    let reply = impostor.recv_json_until(|m| m["type"] == 9001).await;
    assert_eq!(status_of(&reply).0, 200, "{reply}");

    // A's bob writes to alice: A's alice gets it, B's alice must not.
    bob.send_text("a-1", "alice", "for alice of A").await;
    assert_eq!(alice.recv_message().await["body"], "for alice of A");
    // B writes to alice (B's); the impostor's first message is that one.
    mallory.send_text("b-1", "alice", "for alice of B").await;
    let first = impostor.recv_json_until(|m| m["type"] != 9001).await;
    assert_eq!(
        (first["from"].as_str(), first["body"].as_str()),
        (Some("mallory"), Some("for alice of B"))
    );
    // ...and A's alice never sees B's message: her next is A's sentinel.
    bob.send_text("a-2", "alice", "sentinel for alice of A")
        .await;
    assert_eq!(
        alice.recv_message().await["body"],
        "sentinel for alice of A"
    );

    // A's bob writes to mallory (A has no mallory online): mallory of B
    // must not get it; B's server API sentinel comes first.
    bob.send_text("a-3", "mallory", "for mallory of A").await;
    let b_auth = service(B);
    let system = |id: &str, to: &str, body: &str| json!({"id":id,"type":2001,"isSystem":true,"from":"SYSTEM","to":to,"body":body});
    let reply = env
        .post(
            "/api/v1/im/messages",
            &[("authorization", &b_auth)],
            &system("s-1", "mallory", "sentinel for mallory"),
        )
        .await;
    assert_eq!(reply.json()["delivered"], 1, "{:?}", reply.json());
    let first = mallory.recv_message().await;
    assert_eq!(first["body"], "sentinel for mallory", "{first}");

    // B's service token writing to alice reaches B's alice only.
    let reply = env
        .post(
            "/api/v1/im/messages",
            &[("authorization", &b_auth)],
            &system("s-2", "alice", "system of B"),
        )
        .await;
    assert_eq!(reply.json()["delivered"], 1, "the impostor only");
    assert_eq!(
        impostor.recv_json_until(|m| m["type"] != 9001).await["body"],
        "system of B"
    );
    let reply = env
        .post(
            "/api/v1/im/messages",
            &[("authorization", &b_auth), ("x-tenant", A)],
            &system("s-3", "alice", "leak"),
        )
        .await;
    assert_eq!(reply.status, 403);
    bob.send_text("a-4", "alice", "last sentinel").await;
    assert_eq!(alice.recv_message().await["body"], "last sentinel");
}

/// Opens an IoT socket with `query` appended, expecting the handshake.
async fn iot_open(edge: SocketAddr, query: &str) -> WsClient {
    let mut ws = WsClient::open(&format!("ws://{edge}{IOT_ROUTE}?app-code=console&{query}")).await;
    assert_eq!(ws.recv_json().await["code"], 200);
    ws
}

async fn iot_subscribe(ws: &mut WsClient) {
    let params = json!({"productID":"prod_1","deviceName":"dev_1"});
    ws.send_json(&json!({"type":"up.sub","body":{"code":"deviceConn","params":params}}))
        .await;
    let reply = ws.recv_json().await;
    assert_eq!(reply["code"], 200, "{reply}");
}

fn iot_event(marker: &str) -> Value {
    json!({"code":"deviceConn","body":{
        "device":{"productID":"prod_1","deviceName":"dev_1"},
        "timestamp":"1700000000000","marker":marker}})
}

async fn iot_events(env: Env) {
    let edge = env.edge();
    // Naming A with B's token, or with a token that has no tenant: 401.
    let b_token = token("user_1", "user", B, None);
    let plain = token_without_tenant("user_1", "user");
    for query in [
        format!("token={b_token}&tenant-code={A}"),
        format!("token={plain}&tenant-code={A}"),
    ] {
        let url = format!("ws://{edge}{IOT_ROUTE}?app-code=console&{query}");
        let refused = WsClient::connect(&url).await.err().expect("refused");
        assert_eq!(refused.status, 401, "{query}");
        assert_eq!(refused.body["code"], 401);
        assert_eq!(
            refused.body["msg"],
            "tenant-code does not match the token's tenant"
        );
    }
    let url = format!("ws://{edge}{IOT_ROUTE}");
    let refused = WsClient::connect_with_headers(
        &url,
        &[
            ("app-code", "console"),
            ("token", &plain),
            ("tenant-code", A),
        ],
    )
    .await
    .err()
    .expect("refused as a header too");
    assert_eq!(refused.status, 401);

    let a_token = token("user_1", "user", A, None);
    let mut a_socket = iot_open(edge, &format!("token={a_token}&tenant-code={A}")).await;
    let mut b_socket = iot_open(edge, &format!("token={b_token}")).await;
    let mut plain_socket = iot_open(edge, &format!("token={plain}&tenant-code=default")).await;
    for ws in [&mut a_socket, &mut b_socket, &mut plain_socket] {
        iot_subscribe(ws).await;
    }
    // B's service token reaches B's socket only, and cannot name A.
    let b_auth = service(B);
    let reply = env
        .post(
            "/api/v1/iot/events",
            &[("authorization", &b_auth)],
            &iot_event("leak b"),
        )
        .await;
    assert_eq!(reply.json(), json!({"delivered": 1}));
    assert_eq!(b_socket.recv_json().await["body"]["marker"], "leak b");
    let reply = env
        .post(
            "/api/v1/iot/events",
            &[("authorization", &b_auth), ("x-tenant", A)],
            &iot_event("leak x"),
        )
        .await;
    assert_eq!(reply.status, 403);
    // The default tenant's socket gets the default tenant's events.
    let key = format!("Bearer {API_KEY}");
    let reply = env
        .post(
            "/api/v1/iot/events",
            &[("authorization", &key)],
            &iot_event("leak default"),
        )
        .await;
    assert_eq!(reply.json(), json!({"delivered": 1}));
    assert_eq!(
        plain_socket.recv_json().await["body"]["marker"],
        "leak default"
    );
    // A's sentinel is the first push A's socket gets.
    let reply = env
        .post(
            "/api/v1/iot/events",
            &[("authorization", &service(A))],
            &iot_event("sentinel a"),
        )
        .await;
    assert_eq!(reply.json(), json!({"delivered": 1}));
    let first = a_socket.recv_json().await;
    assert_eq!(
        (first["type"].as_str(), first["body"]["marker"].as_str()),
        (Some("down.pub"), Some("sentinel a"))
    );
}

/// Polls `/stats` with `headers` until `ready` holds of it.
async fn stats_until(env: &Env, headers: &[(&str, &str)], ready: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let stats = env.get("/api/v1/stats", headers).await.json();
        if ready(&stats) {
            return stats;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "stats never settled: {stats}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn stats(env: Env) {
    let edge = env.edge();
    // A: two group sockets, an IoT socket and an IM socket. B: one group socket.
    let _a1 = join_group(edge, A, "room", "alice", None).await;
    let _a2 = join_group(edge, A, "room", "bob", None).await;
    let mut a_iot = iot_open(edge, &format!("token={}", token("user_1", "user", A, None))).await;
    iot_subscribe(&mut a_iot).await;
    let _a_im = ImClient::connect(edge, A, "alice", None).await;
    let _b1 = join_group(edge, B, "room", "mallory", None).await;

    let a_auth = service(A);
    let a = stats_until(&env, &[("authorization", &a_auth)], |s| {
        s["total_connections"] == 4
    })
    .await;
    assert_eq!(
        a["connections"],
        json!({"group":2,"group_v2":0,"jsonrpc":0,"iot":1,"im":1})
    );
    // B's token sees B's one socket, none of A's, and not the cluster.
    let b_auth = service(B);
    let b = env
        .get("/api/v1/stats", &[("authorization", &b_auth)])
        .await
        .json();
    assert_eq!(b["tenant"], B);
    assert_eq!(
        b["connections"],
        json!({"group":1,"group_v2":0,"jsonrpc":0,"iot":0,"im":0})
    );
    assert_eq!(b["total_connections"], 1);
    for hidden in ["tenants", "edges", "routers", "router_id"] {
        assert!(b.get(hidden).is_none(), "{hidden}: {b}");
    }
    let reply = env
        .get(
            "/api/v1/stats",
            &[("authorization", &b_auth), ("x-tenant", A)],
        )
        .await;
    assert_eq!(reply.status, 403);
    // Only the API key without X-Tenant sees both.
    let key = format!("Bearer {API_KEY}");
    let all = env
        .get("/api/v1/stats", &[("authorization", &key)])
        .await
        .json();
    assert_eq!(all["tenants"][A]["total_connections"], 4);
    assert_eq!(all["tenants"][B]["total_connections"], 1);
    assert_eq!(all["total_connections"], 5);
    assert!(all["edges"].is_array());
    let b_by_key = env
        .get("/api/v1/stats", &[("authorization", &key), ("x-tenant", B)])
        .await
        .json();
    assert_eq!(b_by_key["total_connections"], 1);
    assert!(b_by_key.get("tenants").is_none());
}

switchboard_testkit::against_both_stores! {
    group_deliveries;
    presence;
    im_sessions_and_messages;
    iot_events;
    stats;
}
