//! The server API over HTTP against a router process, with an edge process
//! attached over gRPC and real WebSocket clients receiving what it sends.

use std::net::SocketAddr;

use serde_json::{Value, json};
use switchboard_testkit::http::{self, Reply};
use switchboard_testkit::switchboard::{self, API_KEY, token};
use switchboard_testkit::{Process, WsClient};

struct Cluster {
    router: Process,
    edge: Process,
}

impl Cluster {
    async fn start() -> Self {
        let router = switchboard::router(&[], &[]);
        let edge = switchboard::edge(&[router.addr("router-grpc")], &[]);
        switchboard::wait_ready(edge.addr("edge-admin")).await;
        Self { router, edge }
    }

    fn api(&self) -> SocketAddr {
        self.router.addr("router-api")
    }

    async fn join(&self, tenant: &str, group: &str, client: &str) -> WsClient {
        switchboard::join_group(self.edge.addr("edge"), tenant, group, client, None).await
    }

    async fn post(&self, path: &str, auth: &str, body: &Value) -> Reply {
        http::post_json(self.api(), path, &[("authorization", auth)], body).await
    }
}

fn service(tenant: &str) -> String {
    format!("Bearer {}", token("backend", "service", tenant, None))
}

fn error_code(reply: &Reply) -> (u16, String, Option<String>) {
    let body = reply.json();
    (
        reply.status,
        body["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        body["error"]["field"].as_str().map(str::to_owned),
    )
}

const MSG: fn() -> Value = || json!({"msg_type":"msg","target":"group","msg":"from backend"});

#[tokio::test]
async fn auth_rules() {
    let c = Cluster::start().await;
    let path = "/api/v1/groups/room/messages";
    let none = http::post_json(c.api(), path, &[], &MSG()).await;
    assert_eq!(none.status, 401);
    assert_eq!(none.json()["error"]["code"], "unauthorized");
    assert_eq!(c.post(path, "Bearer nonsense", &MSG()).await.status, 401);
    assert_eq!(c.post(path, "Basic abc", &MSG()).await.status, 401);
    // A token of another kind is a bad token here, refused naming its kind.
    for kind in ["user", "client", "app", "device", "services"] {
        let other = format!("Bearer {}", token("u1", kind, "t1", None));
        let refused = c.post(path, &other, &MSG()).await;
        assert_eq!(refused.status, 401, "a {kind} token");
        let message = refused.json()["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(message.contains(kind), "{kind}: {message}");
    }
    assert_eq!(c.post(path, &service("t1"), &MSG()).await.status, 200);
    let cross = http::post_json(
        c.api(),
        path,
        &[("authorization", &service("t1")), ("x-tenant", "t2")],
        &MSG(),
    )
    .await;
    assert_eq!(
        cross.status, 403,
        "a service token cannot act for another tenant"
    );
    let same = http::post_json(
        c.api(),
        path,
        &[("authorization", &service("t1")), ("x-tenant", "t1")],
        &MSG(),
    )
    .await;
    assert_eq!(same.status, 200);
    let key = format!("Bearer {API_KEY}");
    assert_eq!(c.post(path, &key, &MSG()).await.status, 200);
    assert_eq!(c.post(path, "Bearer wrong-key", &MSG()).await.status, 401);
}

#[tokio::test]
async fn api_key_acts_for_x_tenant() {
    let c = Cluster::start().await;
    let mut t1 = c.join("t1", "room", "alice").await;
    let mut t2 = c.join("t2", "room", "alice").await;
    let mut default = c.join("default", "room", "alice").await;
    let key = format!("Bearer {API_KEY}");
    let reply = http::post_json(
        c.api(),
        "/api/v1/groups/room/messages",
        &[("authorization", &key), ("x-tenant", "t2")],
        &MSG(),
    )
    .await;
    assert_eq!(reply.json(), json!({"delivered": 1}));
    assert_eq!(
        t2.recv_json_until(|m| m["msg_type"] == "msg").await["from_id"],
        "server"
    );
    let reply = c.post("/api/v1/groups/room/messages", &key, &MSG()).await;
    assert_eq!(
        reply.json(),
        json!({"delivered": 1}),
        "no X-Tenant: tenant default"
    );
    default.recv_json_until(|m| m["msg_type"] == "msg").await;
    switchboard::group_sentinel(c.api(), "t1", "room", &mut t1).await;
}

#[tokio::test]
async fn validation_errors_name_the_field() {
    let c = Cluster::start().await;
    let auth = service("t1");
    let path = "/api/v1/groups/room/messages";
    let raw = http::request(
        "POST",
        c.api(),
        path,
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
        "{nope",
    )
    .await;
    assert_eq!(error_code(&raw), (400, "invalid_json".into(), None));
    let cases = [
        (json!({"target":"group"}), "msg_type"),
        (
            json!({"msg_type":"msg","target":"group","from_id":"x"}),
            "from_id",
        ),
        (json!({"msg_type":"msg","target":"broadcast"}), "target"),
        (json!({"msg_type":"msg","target":"echo"}), "target"),
        (json!({"msg_type":"msg","target":"direct"}), "to_id"),
        (
            json!({"msg_type":"msg","target":"group","group_id":"other"}),
            "group_id",
        ),
        (
            json!({"msg_type":"msg","target":"group","payload":3}),
            "payload",
        ),
        (
            json!({"msg_type":"msg","target":"group","bogus":true}),
            "bogus",
        ),
    ];
    for (body, field) in cases {
        let reply = c.post(path, &auth, &body).await;
        assert_eq!(
            error_code(&reply),
            (400, "validation_error".into(), Some(field.into())),
            "{body}"
        );
        assert!(
            reply.json()["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
    let reply = c.post("/api/v1/groups/12345/messages", &auth, &MSG()).await;
    assert_eq!(
        error_code(&reply),
        (400, "validation_error".into(), Some("group_id".into()))
    );
    let reply = c
        .post(
            "/api/v1/broadcast",
            &auth,
            &json!({"msg_type":"msg","target":"group"}),
        )
        .await;
    assert_eq!(error_code(&reply).2.as_deref(), Some("target"));
    let reply = c.post("/api/v1/broadcast", &auth, &json!([1])).await;
    assert_eq!(reply.status, 400);
}

#[tokio::test]
async fn unknown_routes_methods_and_huge_bodies() {
    let c = Cluster::start().await;
    let auth = service("t1");
    let reply = http::get(c.api(), "/api/v1/nothing", &[("authorization", &auth)]).await;
    assert_eq!(error_code(&reply).0, 404);
    let reply = http::get(
        c.api(),
        "/api/v1/groups/room/messages",
        &[("authorization", &auth)],
    )
    .await;
    assert_eq!(error_code(&reply).0, 405);
    let huge = json!({"msg_type":"msg","target":"group","msg":"x".repeat(1 << 20)});
    let reply = c.post("/api/v1/groups/room/messages", &auth, &huge).await;
    assert_eq!(error_code(&reply).0, 413);
    // The router still serves after all that.
    assert_eq!(
        c.post("/api/v1/groups/room/messages", &auth, &MSG())
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn delivery_counts_and_what_sockets_receive() {
    let c = Cluster::start().await;
    let auth = service("t1");
    let mut a = c.join("t1", "room", "alice").await;
    let mut b1 = c.join("t1", "room", "bob").await;
    let mut b2 = c.join("t1", "lobby", "bob").await;
    let mut other = c.join("t2", "room", "alice").await;

    let reply = c
        .post(
            "/api/v1/groups/room/messages",
            &auth,
            &json!({"msg_type":"cmd","target":"group","cmd":"RELOAD_UI","payload":{"force":true}}),
        )
        .await;
    assert_eq!(reply.json(), json!({"delivered": 2}));
    for ws in [&mut a, &mut b1] {
        let m = ws.recv_json_until(|m| m["msg_type"] == "cmd").await;
        assert_eq!(m["from_id"], "server");
        assert_eq!(m["group_id"], "room");
        assert_eq!(m["payload"], json!({"force": true}));
        assert_eq!(m["version"], "3");
        assert!(m["sent_at"].is_string());
    }

    let reply = c
        .post(
            "/api/v1/groups/room/messages",
            &auth,
            &json!({"msg_type":"msg","target":"direct","to_id":"bob","msg":"hi bob"}),
        )
        .await;
    assert_eq!(
        reply.json(),
        json!({"delivered": 2}),
        "both of bob's sockets"
    );
    for ws in [&mut b1, &mut b2] {
        assert_eq!(
            ws.recv_json_until(|m| m["msg_type"] == "msg").await["msg"],
            "hi bob"
        );
    }
    let reply = c
        .post(
            "/api/v1/groups/room/messages",
            &auth,
            &json!({"msg_type":"msg","target":"direct","to_id":"nobody","msg":"?"}),
        )
        .await;
    assert_eq!(reply.json(), json!({"delivered": 0}));

    let reply = c
        .post(
            "/api/v1/broadcast",
            &auth,
            &json!({"msg_type":"cmd","cmd":"MAINTENANCE"}),
        )
        .await;
    assert_eq!(
        reply.json(),
        json!({"delivered": 3}),
        "every group socket of t1"
    );
    for ws in [&mut a, &mut b1, &mut b2] {
        let m = ws.recv_json_until(|m| m["cmd"] == "MAINTENANCE").await;
        assert_eq!(m["target"], "broadcast");
        assert_eq!(m["from_id"], "server");
    }
    switchboard::group_sentinel(c.api(), "t2", "room", &mut other).await;

    let reply = http::get(
        c.api(),
        "/api/v1/groups/room/presence",
        &[("authorization", &auth)],
    )
    .await;
    assert_eq!(reply.json(), json!({"members":["alice","bob"],"count":2}));
    let reply = http::get(
        c.api(),
        "/api/v1/groups/empty_room/presence",
        &[("authorization", &auth)],
    )
    .await;
    assert_eq!(reply.json(), json!({"members":[],"count":0}));

    // t1's service token sees t1's three sockets, not t2's, and nothing of
    // the cluster's shape.
    let stats = http::get(c.api(), "/api/v1/stats", &[("authorization", &auth)])
        .await
        .json();
    assert_eq!(stats["tenant"], "t1");
    assert_eq!(stats["connections"]["group"], 3);
    assert_eq!(stats["total_connections"], 3);
    for hidden in ["edges", "routers", "router_id", "tenants"] {
        assert!(
            stats.get(hidden).is_none(),
            "{hidden} shown to a tenant: {stats}"
        );
    }
    let key = format!("Bearer {API_KEY}");
    let t2 = http::get(
        c.api(),
        "/api/v1/stats",
        &[("authorization", &key), ("x-tenant", "t2")],
    )
    .await
    .json();
    assert_eq!(
        (t2["tenant"].as_str(), t2["total_connections"].as_i64()),
        (Some("t2"), Some(1))
    );
    assert!(t2.get("edges").is_none());
    // The API key without X-Tenant: every tenant, the routers and edges.
    let all = http::get(c.api(), "/api/v1/stats", &[("authorization", &key)])
        .await
        .json();
    assert_eq!(all["connections"]["group"], 4);
    assert_eq!(all["total_connections"], 4);
    assert_eq!(all["tenants"]["t1"]["total_connections"], 3);
    assert_eq!(all["tenants"]["t2"]["connections"]["group"], 1);
    assert_eq!(all["edges"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn openapi_document_is_served() {
    let c = Cluster::start().await;
    let reply = http::get(c.api(), "/api/v1/openapi.json", &[]).await;
    assert_eq!(reply.status, 200);
    let served = reply.json();
    let kept: Value = serde_json::from_str(include_str!("../openapi.json")).unwrap();
    assert_eq!(served, kept);
    assert!(served["paths"]["/api/v1/groups/{group_id}/messages"]["post"].is_object());
}

#[tokio::test]
async fn health_and_metrics() {
    let c = Cluster::start().await;
    let admin = c.router.addr("router-admin");
    assert_eq!(http::get(admin, "/healthz", &[]).await.status, 200);
    switchboard::wait_ready(admin).await;
    c.post("/api/v1/groups/room/messages", &service("t1"), &MSG())
        .await;
    let text = String::from_utf8_lossy(&http::get(admin, "/metrics", &[]).await.body).into_owned();
    assert!(text.contains("switchboard_api_requests_total"), "{text}");
    assert!(text.contains("switchboard_router_edges"));
}

/// `PUT /api/v1/conversations/{convId}` is tenant-scoped like every route:
/// a service token sets owners in its own tenant only.
#[tokio::test]
async fn conversation_owners_are_set_per_tenant() {
    let c = Cluster::start().await;
    let put = |conv: &str, auth: String, tenant: Option<&'static str>, body: Value| {
        let api = c.api();
        let path = format!("/api/v1/conversations/{conv}");
        async move {
            let mut headers = vec![("authorization", auth.as_str())];
            if let Some(tenant) = tenant {
                headers.push(("x-tenant", tenant));
            }
            http::put_json(api, &path, &headers, &body).await
        }
    };
    let set = put("c1", service("t1"), None, json!({"owner": "alice"})).await;
    assert_eq!(
        (set.status, set.json()),
        (200, json!({"convId": "c1", "owner": "alice"}))
    );
    let taken = put("c1", service("t1"), None, json!({"owner": "bob"})).await;
    assert_eq!(error_code(&taken).0, 409);
    // The same id in tenant t2 is another conversation, free to own.
    let other = put("c1", service("t2"), None, json!({"owner": "bob"})).await;
    assert_eq!(other.status, 200, "{:?}", other.body);
    let cross = put("c2", service("t1"), Some("t2"), json!({"owner": "bob"})).await;
    assert_eq!(error_code(&cross).0, 403);
    let key = format!("Bearer {API_KEY}");
    let by_key = put("c1", key.clone(), Some("t2"), json!({"owner": "bob"})).await;
    assert_eq!(by_key.status, 200, "t2's c1 is bob's already");
    let by_key = put("c1", key, Some("t2"), json!({"owner": "alice"})).await;
    assert_eq!(error_code(&by_key).0, 409);
    let unauthenticated = put("c3", "Bearer nope".to_owned(), None, json!({"owner": "a"})).await;
    assert_eq!(unauthenticated.status, 401);
    let bad = put("a%20b", service("t1"), None, json!({"owner": "a"})).await;
    assert_eq!(
        error_code(&bad),
        (
            400,
            "validation_error".to_owned(),
            Some("convId".to_owned())
        )
    );
    let wrong_method = http::get(
        c.api(),
        "/api/v1/conversations/c1",
        &[("authorization", &service("t1"))],
    )
    .await;
    assert_eq!(error_code(&wrong_method).0, 405);
}
