//! History and recovery in the group dialect, end to end: positions on
//! delivered messages, a client that reconnects with its positions gets
//! what it missed (then live, nothing twice), what cannot be recovered
//! says so, and the server API reads a history in its caller's tenant
//! only. Each scenario runs against the in-memory store and against a
//! private redis-server.

use serde_json::{Value, json};
use switchboard_testkit::WsClient;
use switchboard_testkit::http::{get, post_json};
use switchboard_testkit::switchboard::{API_KEY, group_url, token};

switchboard_testkit::standalone_env!();

impl Env {
    async fn connect(&self, tenant: &str, group: &str, client: &str, query: &str) -> WsClient {
        let token = token(client, "client", tenant, Some("broadcast"));
        let url = format!("{}{query}", group_url(self.edge(), group, client, &token));
        let mut ws = WsClient::open(&url).await;
        // A recovering socket's first frames are its recovery: the test
        // reads them. Any other waits until the router has it.
        if query.is_empty() {
            sync(&mut ws).await;
        }
        ws
    }

    /// Publishes `msg` to `group` through the server API, as `tenant`.
    async fn publish(&self, tenant: &str, group: &str, msg: &str) -> Value {
        let path = format!("/api/v1/groups/{group}/messages");
        let auth = format!("Bearer {API_KEY}");
        let reply = post_json(
            self.api(),
            &path,
            &[("authorization", auth.as_str()), ("x-tenant", tenant)],
            &json!({"msg_type":"msg","target":"group","msg":msg}),
        )
        .await;
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        reply.json()
    }

    /// Waits until the router no longer holds `client` in `group`.
    async fn gone(&self, tenant: &str, group: &str, client: &str) {
        let auth = format!("Bearer {API_KEY}");
        let path = format!("/api/v1/groups/{group}/presence");
        for _ in 0..200 {
            let reply = get(
                self.api(),
                &path,
                &[("authorization", auth.as_str()), ("x-tenant", tenant)],
            )
            .await;
            if !reply.json()["members"]
                .as_array()
                .is_some_and(|m| m.iter().any(|m| m == client))
            {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        panic!("{client} still present in {group}");
    }

    async fn history(&self, tenant: &str, query: &str) -> (u16, Value) {
        switchboard_testkit::switchboard::history(self.api(), tenant, query).await
    }
}

/// A barrier: a presence query travels the same path as the subscription.
async fn sync(ws: &mut WsClient) -> Value {
    ws.send_json(&json!({"msg_type":"presence","target":"echo"}))
        .await;
    ws.recv_json_until(|m| m["msg_type"] == "presence" && m["target"] == "echo")
        .await
}

/// The next message that is not a presence event or answer.
async fn next(ws: &mut WsClient) -> Value {
    ws.recv_json_skipping(|m| m["msg_type"] == "presence").await
}

fn position(m: &Value) -> (String, u64) {
    (
        m["epoch"].as_str().expect("an epoch").to_owned(),
        m["offset"].as_u64().expect("an offset"),
    )
}

async fn deliveries_carry_gap_free_positions(env: Env) {
    let mut reader = env.connect("acme", "g1", "reader", "").await;
    for n in 1..=3 {
        env.publish("acme", "g1", &format!("m{n}")).await;
    }
    let mut seen = Vec::new();
    for _ in 0..3 {
        let m = next(&mut reader).await;
        seen.push((m["msg"].as_str().unwrap().to_owned(), position(&m)));
    }
    let epoch = seen[0].1.0.clone();
    assert!(
        epoch.len() == 8 && epoch.bytes().all(|b| b.is_ascii_alphanumeric()),
        "an epoch of 8 letters and digits: {epoch}"
    );
    assert_eq!(
        seen,
        vec![
            ("m1".to_owned(), (epoch.clone(), 1)),
            ("m2".to_owned(), (epoch.clone(), 2)),
            ("m3".to_owned(), (epoch.clone(), 3)),
        ]
    );
    // A message from a socket is numbered in the same history.
    let mut writer = env.connect("acme", "g1", "writer", "").await;
    writer
        .send_json(&json!({"msg_type":"msg","target":"group","msg":"from a socket"}))
        .await;
    let m = next(&mut reader).await;
    assert_eq!(m["msg"], "from a socket");
    assert_eq!(position(&m), (epoch, 4));
    // Echo answers carry no position.
    writer
        .send_json(&json!({"msg_type":"msg","target":"echo","msg":"me"}))
        .await;
    let echo = writer
        .recv_json_until(|m| m["target"] == "echo" && m["msg"] == "me")
        .await;
    assert!(echo.get("offset").is_none(), "{echo}");
}

async fn a_reconnecting_client_gets_what_it_missed_then_live(env: Env) {
    let mut client = env.connect("acme", "g1", "c1", "").await;
    env.publish("acme", "g1", "before").await;
    let (epoch, seen) = position(&next(&mut client).await);
    client.close().await;
    for n in 1..=3 {
        env.publish("acme", "g1", &format!("missed{n}")).await;
    }
    let query = format!("&since_group={epoch}:{seen}");
    let mut back = env.connect("acme", "g1", "c1", &query).await;
    let recovery = back.recv_json_until(|m| m["msg_type"] == "recovery").await;
    assert_eq!(recovery["target"], "echo");
    assert_eq!(
        recovery["payload"],
        json!({"stream":"group","recovered":true,"missed":3,"epoch":epoch,"offset":seen + 3})
    );
    for n in 1..=3 {
        let m = next(&mut back).await;
        assert_eq!(m["msg"], format!("missed{n}"));
        assert_eq!(position(&m), (epoch.clone(), seen + n));
    }
    env.publish("acme", "g1", "live").await;
    let m = next(&mut back).await;
    assert_eq!(
        (m["msg"].as_str(), position(&m)),
        (Some("live"), (epoch, seen + 4))
    );
}

async fn a_direct_message_to_an_offline_client_waits_in_its_history(env: Env) {
    let mut client = env.connect("acme", "g1", "c2", "").await;
    let mut sender = env.connect("acme", "g1", "sender", "").await;
    sender
        .send_json(&json!({"msg_type":"msg","target":"direct","to_id":"c2","msg":"first"}))
        .await;
    let (epoch, seen) = position(&next(&mut client).await);
    client.close().await;
    env.gone("acme", "g1", "c2").await;
    sender
        .send_json(&json!({"msg_type":"msg","target":"direct","to_id":"c2","msg":"while away"}))
        .await;
    let refused = next(&mut sender).await;
    assert_eq!(refused["payload"]["code"], "not_found", "{refused}");
    let mut back = env
        .connect("acme", "g1", "c2", &format!("&since_direct={epoch}:{seen}"))
        .await;
    let recovery = back.recv_json_until(|m| m["msg_type"] == "recovery").await;
    assert_eq!(recovery["payload"]["stream"], "direct");
    assert_eq!(recovery["payload"]["missed"], 1);
    let m = next(&mut back).await;
    assert_eq!(m["msg"], "while away");
    assert_eq!(position(&m), (epoch, seen + 1));
}

async fn a_position_of_another_epoch_is_not_recovered(env: Env) {
    env.publish("acme", "g1", "one").await;
    let (_, history) = env.history("acme", "topic=group:g1").await;
    let epoch = history["epoch"].as_str().unwrap().to_owned();
    let mut client = env
        .connect("acme", "g1", "c3", "&since_group=0123456789abcdef:1")
        .await;
    let recovery = client
        .recv_json_until(|m| m["msg_type"] == "recovery")
        .await;
    assert_eq!(
        recovery["payload"],
        json!({"stream":"group","recovered":false,"missed":0,"epoch":epoch,"offset":1})
    );
    env.publish("acme", "g1", "two").await;
    let m = next(&mut client).await;
    assert_eq!((m["msg"].as_str(), position(&m)), (Some("two"), (epoch, 2)));
}

async fn a_position_ahead_of_the_latest_is_a_validation_error(env: Env) {
    env.publish("acme", "g1", "one").await;
    let (_, history) = env.history("acme", "topic=group:g1").await;
    let epoch = history["epoch"].as_str().unwrap();
    let mut client = env
        .connect("acme", "g1", "c4", &format!("&since_group={epoch}:99"))
        .await;
    let error = client.recv_json_until(|m| m["msg_type"] == "error").await;
    assert_eq!(error["payload"]["code"], "validation_error");
    assert_eq!(error["payload"]["field"], "since_group");
    // The socket stays and goes live.
    env.publish("acme", "g1", "two").await;
    assert_eq!(next(&mut client).await["msg"], "two");
}

async fn a_malformed_position_refuses_the_upgrade(env: Env) {
    let token = token("c5", "client", "acme", None);
    let url = format!(
        "{}&since_broadcast=nocolon",
        group_url(env.edge(), "g1", "c5", &token)
    );
    let Err(refused) = WsClient::connect(&url).await else {
        panic!("upgraded with a malformed position");
    };
    assert_eq!(refused.status, 400);
    assert_eq!(refused.body["error"]["code"], "validation_error");
    assert_eq!(refused.body["error"]["field"], "since_broadcast");
}

/// A replay longer than the socket's outbound queue is paced by it: the
/// socket is not closed for a full queue, and gets every message.
async fn a_long_replay_is_paced_by_the_outbound_queue(env: Env) {
    let mut client = env.connect("acme", "g1", "c6", "").await;
    env.publish("acme", "g1", "start").await;
    let (epoch, seen) = position(&next(&mut client).await);
    client.close().await;
    for n in 1..=200 {
        env.publish("acme", "g1", &format!("m{n}")).await;
    }
    let mut back = env
        .connect("acme", "g1", "c6", &format!("&since_group={epoch}:{seen}"))
        .await;
    let recovery = back.recv_json_until(|m| m["msg_type"] == "recovery").await;
    assert_eq!(recovery["payload"]["missed"], 200);
    for n in 1..=200 {
        let m = next(&mut back).await;
        assert_eq!(position(&m), (epoch.clone(), seen + n), "{m}");
    }
}

/// The attacker is another tenant's backend: it reads the same topic
/// name and finds its own (empty) history, never the victim's.
async fn the_server_api_reads_a_history_in_its_callers_tenant_only(env: Env) {
    for n in 1..=3 {
        env.publish("acme", "g1", &format!("m{n}")).await;
    }
    let (status, mine) = env.history("acme", "topic=group:g1").await;
    assert_eq!(status, 200, "{mine}");
    let epoch = mine["epoch"].as_str().unwrap().to_owned();
    assert_eq!(mine["offset"], 3);
    assert_eq!(mine["recovered"], true);
    let texts: Vec<&str> = mine["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["data"]["msg"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["m1", "m2", "m3"]);
    let (_, after) = env
        .history("acme", &format!("topic=group:g1&since={epoch}:1&limit=1"))
        .await;
    assert_eq!(
        after["messages"],
        json!([{"offset":2,"data":after["messages"][0]["data"]}])
    );
    assert_eq!(after["messages"][0]["data"]["msg"], "m2");

    let (status, theirs) = env.history("rival", "topic=group:g1").await;
    assert_eq!(status, 200);
    assert_eq!(theirs["offset"], 0);
    assert_eq!(theirs["messages"], json!([]));
    assert_ne!(theirs["epoch"], mine["epoch"]);
    // The victim's position means nothing in the attacker's tenant.
    let (_, probe) = env
        .history("rival", &format!("topic=group:g1&since={epoch}:0"))
        .await;
    assert_eq!(
        (probe["recovered"].as_bool(), &probe["messages"]),
        (Some(false), &json!([]))
    );

    for (query, field) in [
        ("topic=iot:x", "topic"),
        ("topic=group:a%2Fb", "topic"),
        ("topic=broadcast&since=zz", "since"),
        ("topic=group:g1&limit=0", "limit"),
    ] {
        let (status, body) = env.history("acme", query).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["error"]["field"], field, "{query}");
    }
    let (status, ahead) = env
        .history("acme", &format!("topic=group:g1&since={epoch}:9"))
        .await;
    assert_eq!((status, &ahead["error"]["field"]), (400, &json!("since")));
}

/// The attacker holds a victim's position (an epoch seen in a leaked
/// message) and presents it from a socket of its own tenant: its group
/// of the same name has another history, so nothing of the victim's is
/// replayed.
async fn a_position_from_another_tenant_recovers_nothing_of_it(env: Env) {
    for n in 1..=3 {
        env.publish("acme", "g1", &format!("secret{n}")).await;
    }
    let (_, victim) = env.history("acme", "topic=group:g1").await;
    let epoch = victim["epoch"].as_str().unwrap().to_owned();
    let mut attacker = env
        .connect("rival", "g1", "mallory", &format!("&since_group={epoch}:0"))
        .await;
    let recovery = attacker
        .recv_json_until(|m| m["msg_type"] == "recovery")
        .await;
    assert_eq!(recovery["payload"]["recovered"], false, "{recovery}");
    assert_eq!(recovery["payload"]["missed"], 0);
    assert_ne!(recovery["payload"]["epoch"], json!(epoch));
    // The first thing after the recovery is the attacker's own sentinel.
    env.publish("rival", "g1", "sentinel").await;
    let first = next(&mut attacker).await;
    assert_eq!(first["msg"], "sentinel", "{first}");
}

switchboard_testkit::against_both_stores! {
    a_position_from_another_tenant_recovers_nothing_of_it;
    deliveries_carry_gap_free_positions;
    a_reconnecting_client_gets_what_it_missed_then_live;
    a_direct_message_to_an_offline_client_waits_in_its_history;
    a_position_of_another_epoch_is_not_recovered;
    a_position_ahead_of_the_latest_is_a_validation_error;
    a_malformed_position_refuses_the_upgrade;
    a_long_replay_is_paced_by_the_outbound_queue("--history-size", "300", "--outbound-queue", "16");
    the_server_api_reads_a_history_in_its_callers_tenant_only;
}

/// With history off, messages carry no position, and a recovery says
/// nothing could be recovered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_history_off_nothing_is_kept() {
    let env = Env::memory(&["--history-size", "0"]).await;
    let mut client = env
        .connect("acme", "g1", "c7", "&since_group=0123456789abcdef:4")
        .await;
    let recovery = client
        .recv_json_until(|m| m["msg_type"] == "recovery")
        .await;
    assert_eq!(recovery["payload"]["recovered"], false);
    env.publish("acme", "g1", "plain").await;
    let m = next(&mut client).await;
    assert_eq!(m["msg"], "plain");
    assert!(m.get("epoch").is_none() && m.get("offset").is_none(), "{m}");
    let (status, _) = env.history("acme", "topic=group:g1").await;
    assert_eq!(status, 404);
}

/// A backend that sends a publish again with the same `Idempotency-Key`
/// (after a timeout, say) makes no duplicate: the history holds it once
/// and sockets get it once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_sent_twice_delivers_once() {
    for env in [Env::memory(&[]).await, Env::redis(&[]).await] {
        let mut client = env.connect("acme", "g1", "c8", "").await;
        let auth = format!("Bearer {API_KEY}");
        let send = |key: &'static str, msg: &'static str| {
            let auth = auth.clone();
            let api = env.api();
            async move {
                post_json(
                    api,
                    "/api/v1/groups/g1/messages",
                    &[
                        ("authorization", auth.as_str()),
                        ("x-tenant", "acme"),
                        ("idempotency-key", key),
                    ],
                    &json!({"msg_type":"msg","target":"group","msg":msg}),
                )
                .await
            }
        };
        let first = send("order-1", "once").await;
        assert_eq!(
            (first.status, first.json()["delivered"].as_u64()),
            (200, Some(1))
        );
        let again = send("order-1", "once").await;
        assert_eq!(
            (again.status, again.json()["delivered"].as_u64()),
            (200, Some(0))
        );
        let other = send("order-2", "next").await;
        assert_eq!(other.status, 200);
        let m = next(&mut client).await;
        assert_eq!(
            (m["msg"].as_str(), m["offset"].as_u64()),
            (Some("once"), Some(1))
        );
        let m = next(&mut client).await;
        assert_eq!(
            (m["msg"].as_str(), m["offset"].as_u64()),
            (Some("next"), Some(2))
        );
        let (_, history) = env.history("acme", "topic=group:g1").await;
        assert_eq!(history["offset"], 2);
        let bad = send("", "x").await;
        assert_eq!(bad.status, 400);
        assert_eq!(bad.json()["error"]["field"], "Idempotency-Key");
    }
}

/// A message is accepted only once it is in the history: with the store
/// gone, the sender is told it was not delivered, nobody gets it, and
/// once the store is back messages flow again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_store_down_a_group_message_is_refused_not_lost_silently() {
    let mut env = Env::redis(&[]).await;
    let mut sender = env.connect("acme", "g1", "s1", "").await;
    let mut reader = env.connect("acme", "g1", "r1", "").await;
    env.0.redis.as_mut().expect("a redis store").kill();
    sender
        .send_json(&json!({"msg_type":"msg","target":"group","msg":"lost?"}))
        .await;
    let refused = sender.recv_json_until(|m| m["msg_type"] == "error").await;
    assert_eq!(refused["payload"]["code"], "internal", "{refused}");
    assert!(
        refused["msg"]
            .as_str()
            .is_some_and(|m| m.contains("not delivered")),
        "{refused}"
    );
    let unexpected = reader.recv(std::time::Duration::from_millis(500)).await;
    assert!(
        !matches!(&unexpected, Some(switchboard_testkit::ws::Event::Text(t)) if t.contains("lost?")),
        "{unexpected:?}"
    );
    env.0.redis.as_mut().expect("a redis store").restart().await;
    let mut delivered = None;
    for _ in 0..50 {
        sender
            .send_json(&json!({"msg_type":"msg","target":"group","msg":"back"}))
            .await;
        let m = sender
            .recv_json_until(|m| m["msg"] == "back" || m["msg_type"] == "error")
            .await;
        if m["msg"] == "back" {
            delivered = Some(m);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let delivered = delivered.expect("the store came back");
    assert!(delivered["offset"].as_u64().is_some(), "{delivered}");
    let m = reader.recv_json_until(|m| m["msg"] == "back").await;
    assert_eq!(m["offset"], delivered["offset"]);
}
