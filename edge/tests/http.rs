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
