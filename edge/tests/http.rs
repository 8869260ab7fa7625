//! The edge's plain HTTP surface: the playground page, 404s, and the admin
//! endpoints of both processes in standalone mode.

use switchboard_testkit::http::{self, metric};
use switchboard_testkit::switchboard::{self, join_group};

#[tokio::test]
async fn playground_admin_and_unknown_routes() {
    let edge = switchboard::standalone(&[]);
    let admin = edge.addr("edge-admin");
    switchboard::wait_ready(admin).await;

    let page = http::get(edge.addr("edge"), "/", &[]).await;
    assert_eq!(page.status, 200);
    assert!(
        page.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(String::from_utf8_lossy(&page.body).contains("/v3/ws/group/"));

    let missing = http::get(edge.addr("edge"), "/nope", &[]).await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["error"]["code"], "not_found");

    // The page's script and style sheet are served too, from the binary.
    for (path, kind) in [
        ("/playground/playground.js", "text/javascript"),
        ("/playground/playground.css", "text/css"),
    ] {
        let file = http::get(edge.addr("edge"), path, &[]).await;
        assert_eq!(file.status, 200, "{path}");
        assert!(
            file.headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with(kind),
            "{path}"
        );
    }

    for addr in [admin, edge.addr("router-admin")] {
        assert_eq!(http::get(addr, "/healthz", &[]).await.status, 200);
        assert_eq!(http::get(addr, "/readyz", &[]).await.status, 200);
        assert_eq!(http::get(addr, "/nope", &[]).await.status, 404);
    }

    let _ws = join_group(edge.addr("edge"), "t1", "room", "alice", None).await;
    let text = String::from_utf8_lossy(&http::get(admin, "/metrics", &[]).await.body).into_owned();
    assert_eq!(
        metric(&text, r#"switchboard_edge_connections{dialect="group"}"#),
        1.0
    );
    assert!(
        metric(
            &text,
            r#"switchboard_edge_connections_opened_total{dialect="group"}"#
        ) >= 1.0
    );
    assert_eq!(metric(&text, "switchboard_edge_router_links_up"), 1.0);
}

#[tokio::test]
async fn token_subcommand_mints_a_verifiable_token() {
    let out = std::process::Command::new(switchboard_testkit::binary("edge"))
        .args([
            "token", "--sub", "minted", "--kind", "client", "--tenant", "t9", "--ttl", "10m",
        ])
        .env("SWITCHBOARD_JWT_SECRET", switchboard::SECRET)
        .output()
        .unwrap();
    assert!(out.status.success());
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let edge = switchboard::standalone(&[]);
    switchboard::wait_ready(edge.addr("edge-admin")).await;
    let url = switchboard::group_url(edge.addr("edge"), "room", "minted", &token);
    let mut ws = switchboard_testkit::WsClient::open(&url).await;
    let join = ws.recv_json().await;
    assert_eq!(join["payload"]["client_id"], "minted");

    let refused = std::process::Command::new(switchboard_testkit::binary("edge"))
        .args(["token", "--sub", "x"])
        .env_remove("SWITCHBOARD_JWT_SECRET")
        .output()
        .unwrap();
    assert!(!refused.status.success(), "no secret, no token");
}

#[tokio::test]
async fn server_api_routes_on_the_edge_point_at_the_router_api_port() {
    let edge = switchboard::standalone(&[]);
    switchboard::wait_ready(edge.addr("edge-admin")).await;
    for path in ["/api/v1/notify", "/api/v1/openapi.json", "/api/v1/stats"] {
        let missing = http::get(edge.addr("edge"), path, &[]).await;
        assert_eq!(missing.status, 404, "{path}");
        let body = missing.json();
        assert_eq!(body["error"]["code"], "not_found", "{path}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("--router-api-addr") && message.contains("8081"),
            "{path}: {message}"
        );
    }
    // Other unknown routes keep the plain answer.
    let other = http::get(edge.addr("edge"), "/api/v2/notify", &[]).await;
    assert_eq!(other.json()["error"]["message"], "no such route");
}

/// Browsers see only close code 1006 for a refused upgrade; a plain GET of
/// the same URL tells the page why, on every route that takes a token.
#[tokio::test]
async fn a_plain_get_of_a_socket_route_explains_a_refused_token() {
    let edge = switchboard::standalone(&[]);
    switchboard::wait_ready(edge.addr("edge-admin")).await;
    let addr = edge.addr("edge");
    let group = http::get(addr, "/v3/ws/group/g1/client/c1?token=bad", &[]).await;
    assert_eq!(group.status, 401);
    assert_eq!(group.json()["error"]["code"], "unauthorized");
    let iot = http::get(
        addr,
        "/api/v1/system/common/websocket/connect?app-code=a&token=bad",
        &[],
    )
    .await;
    assert_eq!(iot.status, 401);
    assert!(iot.json()["msg"].is_string());
    for path in ["/v3/wss?token=bad", "/v3/wss/app1/tool1", "/v3/wss/hd1"] {
        let rpc = http::get(addr, path, &[]).await;
        assert_eq!(rpc.status, 401, "{path}");
        let body = rpc.json();
        assert_eq!(body["error"]["code"], "unauthorized", "{path}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("refuses the token"),
            "{path}: {body}"
        );
    }
    // A good token on a plain GET: the route still says it wants an upgrade.
    let good = switchboard::token("u1", "user", "default", None);
    let plain = http::get(addr, &format!("/v3/wss?token={good}"), &[]).await;
    assert_eq!(plain.status, 426);
    // The IM socket takes no token: a plain GET is not a token problem.
    let im = http::get(addr, "/websocket", &[]).await;
    assert_eq!(im.status, 426);
}
