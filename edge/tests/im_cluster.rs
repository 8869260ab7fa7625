//! IM across a cluster: 3 routers and 2 edges as processes with private
//! Redis and NATS. Sender and recipient sit on different edges, and the
//! router that owned the recipient dies between the send and the
//! recipient's registration: the kept messages live in Redis, so nothing
//! is lost, and the new owner hands them over a window at a time. Runs over the gRPC and the NATS transport.

use std::time::Duration;

use serde_json::{Value, json};
use switchboard_proto::{Topic, TopicKind};
use switchboard_testkit::cluster::{Cluster, owner_of, scrape};
use switchboard_testkit::http::{self, metric};
use switchboard_testkit::im::{self, ImClient, receipt, status_of};
use switchboard_testkit::switchboard::API_KEY;

async fn nothing_lost_when_the_owner_dies(transport: &str) {
    let mut cluster = Cluster::start(transport, 3, 2).await;
    let (sender_edge, recipient_edge) = (cluster.edge(0), cluster.edge(1));
    let bob_session = im::session_id(recipient_edge, "t1", "bob", None).await;
    let mut alice = ImClient::connect(sender_edge, "t1", "alice", None).await;
    for i in 1..=5 {
        alice
            .send_text(&format!("m{i}"), "bob", &format!("while bob is away {i}"))
            .await;
    }
    let owner = owner_of(&Topic::new("t1", TopicKind::ImUser, "bob"), 3);
    // The sender's router keeps a message, once for all its recipients,
    // before any recipient's owner delivers it.
    let mut kept = 0.0;
    for router in &cluster.routers {
        let text = scrape(router.addr("router-admin")).await;
        kept += metric(&text, "switchboard_router_im_messages_kept_total");
    }
    assert_eq!(kept, 5.0, "the cluster kept bob's messages");
    cluster.routers[owner].signal("KILL");
    cluster.wait_views(2).await;

    // Bob registers with the session he got before the router died.
    let mut bob = ImClient::with_session(recipient_edge, "bob", &bob_session).await;
    for i in 1..=5 {
        let got = bob.recv_message().await;
        assert_eq!(got["id"], format!("m{i}"), "{got}");
        assert_eq!(got["from"], "alice");
    }
    // Live delivery and receipts cross edges on the new owners.
    alice.send_text("m6", "bob", "live").await;
    assert_eq!(bob.recv_message().await["id"], "m6");
    bob.ws.send_json(&receipt("m1", "bob", "alice")).await;
    let relayed = alice.ws.recv_json_until(|m| m["type"] == 9101).await;
    assert_eq!(
        (relayed["id"].as_str(), relayed["from"].as_str()),
        (Some("m1"), Some("bob"))
    );
    bob.send_text("r1", "alice", "got it").await;
    assert_eq!(alice.recv_message().await["id"], "r1");
    // What was not receipted is delivered again to a new socket.
    bob.ws.close().await;
    let mut again = ImClient::with_session(recipient_edge, "bob", &bob_session).await;
    for i in 2..=6 {
        assert_eq!(again.recv_message().await["id"], format!("m{i}"));
    }
    // Nothing else is kept for bob: a system message sent now through a
    // live router is the next thing his socket gets.
    let auth = format!("Bearer {API_KEY}");
    let reply = http::post_json(
        cluster.router_api((owner + 1) % 3),
        "/api/v1/im/messages",
        &[("authorization", &auth), ("x-tenant", "t1")],
        &json!({"id":"sentinel","type":2001,"to":"bob","body":"sentinel"}),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.json());
    let next = again.ws.recv_json().await;
    assert_eq!(next["id"], "sentinel", "{next}");
    let _ = cluster.routers[owner].wait_exit(Duration::from_secs(1));
}

async fn server_api_over_http_and_nats(transport: &str) {
    let cluster = Cluster::start(transport, 3, 2).await;
    let mut bob = ImClient::connect(cluster.edge(1), "t1", "bob", None).await;
    let client = async_nats::connect(cluster.nats.url()).await.unwrap();
    let subject = "switchboard.api.t1.im.messages";
    let message = json!({"id":"n1","type":2001,"to":"bob,dave","body":"over NATS"});
    let reply = client
        .request(subject, message.to_string().into())
        .await
        .unwrap();
    let reply: Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(reply, json!({"delivered": 1, "stored": 1}));
    assert_eq!(bob.recv_message().await["id"], "n1");
    // Refused messages are answered and do not stop the consumer.
    let bad = client
        .request(subject, r#"{"type":2001,"to":"","body":"x"}"#.into())
        .await
        .unwrap();
    let bad: Value = serde_json::from_slice(&bad.payload).unwrap();
    assert_eq!(bad["error"]["field"], "to");
    let garbage = client.request(subject, "not json".into()).await.unwrap();
    let garbage: Value = serde_json::from_slice(&garbage.payload).unwrap();
    assert_eq!(garbage["error"]["code"], "invalid_json");
    // HTTP on every router reaches bob wherever his owner is.
    let service = format!(
        "Bearer {}",
        switchboard_testkit::switchboard::token("backend", "service", "t1", None)
    );
    for router in 0..3 {
        let id = format!("h{router}");
        let reply = switchboard_testkit::http::post_json(
            cluster.router_api(router),
            "/api/v1/im/messages",
            &[("authorization", &service)],
            &json!({"id": id, "type": 2001, "to": "bob", "body": "over HTTP"}),
        )
        .await;
        assert_eq!(
            reply.json(),
            json!({"delivered": 1, "stored": 0}),
            "router {router}"
        );
        assert_eq!(bob.recv_message().await["id"], id);
    }
    // Dave was offline: he gets the NATS message when he registers.
    let mut dave = ImClient::connect(cluster.edge(0), "t1", "dave", None).await;
    let got = dave.recv_message().await;
    assert_eq!(
        (got["id"].as_str(), got["from"].as_str()),
        (Some("n1"), Some("SYSTEM"))
    );
    let status = dave.request(&im::text("d1", "dave", "bob", "hi bob")).await;
    assert_eq!(status_of(&status).0, 200);
    assert_eq!(bob.recv_message().await["id"], "d1");
}

switchboard_testkit::over_both_transports! {
    nothing_lost_when_the_owner_dies;
    server_api_over_http_and_nats;
}
