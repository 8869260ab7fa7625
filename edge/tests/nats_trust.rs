//! NATS trust with the shipped `deploy/nats/nats-server.conf` (a real
//! nats-server, its port substituted): routers and edges run a cluster over
//! the NATS transport as the cluster user; a tenant's backend user reaches
//! its own tenant's API subjects and nothing else. Every refusal is proved
//! twice: the server reports the permissions violation to the attacker, and
//! a sentinel sent afterwards on the same path is the first thing to arrive.

use std::time::Duration;

use futures_util::StreamExt;
use prost::Message;
use serde_json::{Value, json};
use switchboard_common::trust::{ClusterSecret, Purpose};
use switchboard_proto::{
    EdgeFrame, Hello, Payload, Publish, Request, Topic, TopicKind, edge_frame, request,
};
use switchboard_testkit::cluster::{Cluster, scrape};
use switchboard_testkit::http::{self, metric};
use switchboard_testkit::jsonrpc::{notified, user_socket};
use switchboard_testkit::nats::proven_headers;
use switchboard_testkit::switchboard::{API_KEY, CLUSTER_SECRET, join_group};

const ROUTERS: [&str; 2] = ["router-0", "router-1"];

fn is_msg(m: &Value) -> bool {
    m["msg_type"] == "msg"
}

/// The live routers each router sees, from `/api/v1/stats`.
async fn views(cluster: &Cluster) -> Vec<Vec<String>> {
    let auth = format!("Bearer {API_KEY}");
    let mut views = Vec::new();
    for i in 0..cluster.routers.len() {
        let stats = http::get(
            cluster.router_api(i),
            "/api/v1/stats",
            &[("authorization", &auth)],
        )
        .await
        .json();
        let mut ids: Vec<String> = serde_json::from_value(stats["routers"].clone()).unwrap();
        ids.sort();
        views.push(ids);
    }
    views
}

async fn membership_changes(cluster: &Cluster) -> Vec<f64> {
    let mut changes = Vec::new();
    for router in &cluster.routers {
        let text = scrape(router.addr("router-admin")).await;
        changes.push(metric(&text, "switchboard_membership_changes_total"));
    }
    changes
}

/// Routers and edges authenticate as the cluster user and a group message
/// crosses edges over the NATS transport. A tenant's backend user forging
/// membership, edge frames or forwarded requests is refused by the server,
/// and nothing changes: the views keep the real routers, the edge's session
/// keeps its subscriptions, and no forged message reaches a socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backends_cannot_touch_the_internal_tree() {
    let cluster = Cluster::secured("nats", 2, 2).await;
    let mut carol = join_group(cluster.edge(0), "default", "room", "carol", None).await;
    let mut dave = join_group(cluster.edge(1), "default", "room", "dave", None).await;
    carol
        .recv_json_until(|m| m["payload"]["event"] == "join" && m["payload"]["client_id"] == "dave")
        .await;
    carol
        .send_json(&json!({"msg_type":"msg","target":"group","msg":"hello across"}))
        .await;
    assert_eq!(dave.recv_json_until(is_msg).await["msg"], "hello across");
    // The tenant's backend user sends into its own room, as from `server`.
    let default = cluster.nats.backend("default").await;
    let subject = "switchboard.api.default.groups.messages";
    let missing = default
        .request_json(
            subject,
            &json!({"msg_type":"msg","target":"group","msg":"x"}),
        )
        .await;
    assert_eq!(missing["error"]["field"], "group_id", "{missing}");
    let reply = default
        .request_json(
            subject,
            &json!({"group_id":"room","msg_type":"msg","target":"group","msg":"from backend"}),
        )
        .await;
    assert_eq!(reply, json!({"delivered": 2}));
    let pushed = dave.recv_json_until(is_msg).await;
    assert_eq!(
        (&pushed["msg"], &pushed["from_id"]),
        (&json!("from backend"), &json!("server"))
    );

    let real_view = vec![ROUTERS.map(str::to_owned).to_vec(); 2];
    assert_eq!(views(&cluster).await, real_view);
    let changes_before = membership_changes(&cluster).await;
    let mut acme = cluster.nats.backend("acme").await;

    // Membership: a router that does not exist, a goodbye for one that does.
    let forged_router =
        json!({"id":"forged-router","grpc_addr":"127.0.0.1:1","pool":"forged","epoch":1});
    for (subject, body) in [
        (
            "switchboard.internal.cluster.routers",
            forged_router.to_string(),
        ),
        ("switchboard.internal.cluster.leave", "router-0".to_owned()),
        ("switchboard.internal.cluster.probe", String::new()),
    ] {
        acme.client.publish(subject, body.into()).await.unwrap();
        acme.refused(subject).await;
    }
    // Frames: a Hello as edge 1 would replace its session (and drop its
    // sockets' subscriptions) on every router.
    let hello: EdgeFrame = edge_frame::Body::Hello(Hello {
        edge_id: "edge-1".to_owned(),
    })
    .into();
    for router in ROUTERS {
        let subject = format!("switchboard.internal.r.{router}.edge-1");
        acme.client
            .publish(subject.clone(), hello.encode_to_vec().into())
            .await
            .unwrap();
        acme.refused(&subject).await;
    }
    // Forwards: a group message into default's room, with a reply subject
    // so a router would act on it.
    let forged = Request {
        correlation_id: 1,
        body: Some(request::Body::Publish(Publish {
            topic: Some(Topic {
                tenant: "default".to_owned(),
                kind: TopicKind::Group as i32,
                name: "room".to_owned(),
            }),
            payload: Some(Payload::json(
                json!({"msg_type":"msg","target":"group","msg":"forged","from_id":"server"})
                    .to_string(),
            )),
            from_conn: 0,
            publish_id: String::new(),
        })),
    };
    for router in ROUTERS {
        let subject = format!("switchboard.internal.router.{router}.forward");
        acme.client
            .publish_with_reply(
                subject.clone(),
                acme.client.new_inbox(),
                forged.encode_to_vec().into(),
            )
            .await
            .unwrap();
        acme.refused(&subject).await;
    }

    // Sentinels. The room still delivers, and the forged message never came.
    carol
        .send_json(&json!({"msg_type":"msg","target":"group","msg":"sentinel"}))
        .await;
    assert_eq!(dave.recv_json_until(is_msg).await["msg"], "sentinel");
    // Membership still works for the cluster user, and only its
    // announcement changed the views: router-0 never left.
    let operator = cluster.nats.cluster_member().await;
    let sentinel =
        json!({"id":"sentinel-router","grpc_addr":"127.0.0.1:1","pool":"sentinel","epoch":1});
    // Announced like a live router (heartbeats), so it stays in the views
    // however slow the checks below are.
    // Proven as a router's own announcement must be.
    let secret = ClusterSecret::parse(CLUSTER_SECRET).unwrap();
    let body = sentinel.to_string().into_bytes();
    let heartbeats = tokio::spawn(async move {
        loop {
            let headers = proven_headers(&secret, Purpose::Announce, "sentinel-router", &body);
            operator
                .client
                .publish_with_headers(
                    "switchboard.internal.cluster.routers",
                    headers,
                    body.clone().into(),
                )
                .await
                .expect("publish");
            operator.client.flush().await.expect("flush");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    });
    let with_sentinel = vec![
        vec![
            "router-0".to_owned(),
            "router-1".to_owned(),
            "sentinel-router".to_owned(),
        ];
        2
    ];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let seen = views(&cluster).await;
        if seen == with_sentinel {
            break;
        }
        assert!(
            seen.iter()
                .all(|v| !v.contains(&"forged-router".to_owned())),
            "{seen:?}"
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "the sentinel never joined: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let changes_after = membership_changes(&cluster).await;
    heartbeats.abort();
    for (before, after) in changes_before.iter().zip(&changes_after) {
        assert_eq!(
            after - before,
            1.0,
            "only the sentinel joined ({changes_before:?} -> {changes_after:?})"
        );
    }
}

/// A tenant's backend user: its own API subjects reach its sockets; another
/// tenant's subjects and the internal tree are refused by the server (and
/// it cannot read deliveries or other tenants' replies); a body naming
/// another tenant is refused by the router and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backends_act_for_their_own_tenant_only() {
    let cluster = Cluster::secured("nats", 2, 2).await;
    let mut alice = user_socket(cluster.edge(0), "alice", "acme", None).await;
    let mut bob = user_socket(cluster.edge(1), "bob", "default", None).await;
    let mut acme = cluster.nats.backend("acme").await;
    let default = cluster.nats.backend("default").await;

    let reply = acme
        .request_json(
            "switchboard.api.acme.notify",
            &json!({"to":{"user":"alice"},"type":"n","data":1}),
        )
        .await;
    assert_eq!(reply, json!({"delivered": 1}));
    assert_eq!(notified(&mut alice).await, ("n".to_owned(), json!(1)));

    // Another tenant's subject: refused by the server, bob gets nothing.
    acme.publish_json(
        "switchboard.api.default.notify",
        &json!({"to":{"user":"bob"},"type":"forged"}),
    )
    .await;
    acme.refused("switchboard.api.default.notify").await;
    let reply = default
        .request_json(
            "switchboard.api.default.notify",
            &json!({"to":{"user":"bob"},"type":"sentinel"}),
        )
        .await;
    assert_eq!(reply, json!({"delivered": 1}));
    assert_eq!(notified(&mut bob).await.0, "sentinel");

    // On its own subject, a body naming another tenant is refused and counted.
    let series = r#"switchboard_api_nats_rejected_total{subject="notify",code="forbidden"}"#;
    let refused_before = rejected(&cluster, series).await;
    let reply = acme
        .request_json(
            "switchboard.api.acme.notify",
            &json!({"tenant":"default","to":{"user":"bob"},"type":"forged"}),
        )
        .await;
    assert_eq!(reply["error"]["code"], "forbidden", "{reply}");
    assert_eq!(rejected(&cluster, series).await, refused_before + 1.0);
    // A body repeating its own tenant is fine; bob still got nothing.
    let reply = acme
        .request_json(
            "switchboard.api.acme.notify",
            &json!({"tenant":"acme","to":{"user":"alice"},"type":"again"}),
        )
        .await;
    assert_eq!(reply, json!({"delivered": 1}));
    assert_eq!(notified(&mut alice).await.0, "again");
    default
        .request_json(
            "switchboard.api.default.notify",
            &json!({"to":{"user":"bob"},"type":"sentinel-2"}),
        )
        .await;
    assert_eq!(notified(&mut bob).await.0, "sentinel-2");

    // Reading the internal tree (deliveries) or other tenants' replies.
    let mut spies = Vec::new();
    for subject in ["switchboard.internal.>", "_INBOX.>", "_INBOX.default.>"] {
        spies.push(acme.client.subscribe(subject.to_owned()).await.unwrap());
        acme.refused(subject).await;
    }
    // Traffic on both: a delivery to alice crosses router-to-edge frames,
    // and default's request gets a reply on its inbox.
    acme.request_json(
        "switchboard.api.acme.notify",
        &json!({"to":{"user":"alice"},"type":"watched"}),
    )
    .await;
    assert_eq!(notified(&mut alice).await.0, "watched");
    default
        .request_json(
            "switchboard.api.default.notify",
            &json!({"to":{"user":"bob"},"type":"watched"}),
        )
        .await;
    assert_eq!(notified(&mut bob).await.0, "watched");
    let mut spied = futures_util::stream::select_all(spies);
    let read = tokio::time::timeout(Duration::from_millis(500), spied.next()).await;
    assert!(
        !matches!(read, Ok(Some(_))),
        "a refused subscription read a message"
    );
}

/// The rejected-messages series summed over the routers.
async fn rejected(cluster: &Cluster, series: &str) -> f64 {
    let mut total = 0.0;
    for router in &cluster.routers {
        total += metric(&scrape(router.addr("router-admin")).await, series);
    }
    total
}
