//! IM under abuse, end to end: a backlog far larger than a socket's
//! outbound queue, one id from two senders, a sender repeating itself, a
//! sender over its quota, and one message to a thousand recipients. Each
//! scenario runs against the in-memory store and a private redis-server.

use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{Value, json};
use switchboard_testkit::cluster::scrape;
use switchboard_testkit::http::{self, Reply, metric};
use switchboard_testkit::im::{self, ImClient, SOCKET, receipt, register, status_of, text};
use switchboard_testkit::switchboard::API_KEY;

switchboard_testkit::standalone_env!();

impl Env {
    async fn connect(&self, user: &str) -> ImClient {
        ImClient::connect(self.edge(), "t1", user, None).await
    }

    /// `POST /api/v1/im/messages` for tenant t1.
    async fn post(&self, body: &Value) -> Reply {
        let auth = format!("Bearer {API_KEY}");
        http::post_json(
            self.0.api(),
            "/api/v1/im/messages",
            &[("authorization", &auth), ("x-tenant", "t1")],
            body,
        )
        .await
    }

    async fn router_metric(&self, name: &str) -> f64 {
        metric(&scrape(self.0.process.addr("router-admin")).await, name)
    }

    /// Proves `client` got nothing since it was last read: a system
    /// message through the server API travels the delivery path and must
    /// be the next thing it receives. Receipted at once.
    async fn sentinel(&self, client: &mut ImClient) {
        let id = format!("sentinel-{}", SENTINELS.fetch_add(1, Ordering::Relaxed));
        let body = json!({"id": id, "type": 2001, "to": client.user, "body": "sentinel"});
        let reply = self.post(&body).await;
        assert_eq!(reply.status, 200, "{}", reply.json());
        let first = client.ws.recv_json().await;
        assert_eq!(
            first["id"], id,
            "{} got {first} before its sentinel",
            client.user
        );
        let user = client.user.clone();
        client.ws.send_json(&receipt(&id, &user, "SYSTEM")).await;
    }
}

static SENTINELS: AtomicUsize = AtomicUsize::new(0);

/// The `msg` of a 9001's StatusBody.
fn status_msg(message: &Value) -> String {
    let body: Value = serde_json::from_str(message["body"].as_str().unwrap_or("{}")).unwrap();
    body["msg"].as_str().unwrap_or_default().to_owned()
}

/// Opens the IM socket and registers, asserting that the register reply
/// is the very first frame (no kept message may come before it).
async fn register_first(env: &Env, user: &str, session_id: &str) -> ImClient {
    let mut ws = ImClient::open(env.edge(), SOCKET).await;
    ws.send_json(&register("reg", user, session_id)).await;
    let first = ws.recv_json().await;
    assert_eq!(
        (first["type"].as_i64(), first["id"].as_str()),
        (Some(9001), Some("reg"))
    );
    assert_eq!(status_of(&first).0, 200, "{first}");
    ImClient {
        ws,
        user: user.to_owned(),
        session_id: session_id.to_owned(),
    }
}

/// 1,000 kept messages of 10 KB (10 MiB) against a 1 MiB outbound queue:
/// the socket gets every one, in order, stays open, and a live message
/// comes after the backlog.
async fn a_large_backlog_arrives_whole_in_order(env: Env) {
    let filler = "x".repeat(10 * 1024);
    for i in 0..1_000 {
        let body = json!({"id": format!("b{i:04}"), "type": 2001, "to": "bob", "body": filler});
        let reply = env.post(&body).await;
        assert_eq!(
            reply.json(),
            json!({"delivered": 0, "stored": 1}),
            "b{i:04}"
        );
    }
    let session = im::session_id(env.edge(), "t1", "bob", None).await;
    let mut bob = register_first(&env, "bob", &session).await;
    let mut alice = env.connect("alice").await;
    // Sent while bob is still reading his backlog: it must come after it.
    alice.send_text("live-1", "bob", "during").await;
    for i in 0..1_000 {
        let got = bob.ws.recv_json().await;
        assert_eq!(got["id"], format!("b{i:04}"), "in order, none missing");
        assert_eq!(got["body"].as_str().map(str::len), Some(filler.len()));
        if i == 10 {
            // A reader that falls behind is waited for, not closed.
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
    }
    assert_eq!(
        bob.ws.recv_json().await["id"],
        "live-1",
        "live after the backlog"
    );
    alice.send_text("live-2", "bob", "after").await;
    assert_eq!(
        bob.ws.recv_json().await["id"],
        "live-2",
        "the socket is open"
    );
    let text = scrape(env.0.process.addr("edge-admin")).await;
    assert_eq!(
        metric(
            &text,
            r#"switchboard_edge_slow_consumer_closes_total{dialect="im"}"#
        ),
        0.0
    );
    assert!(
        env.router_metric("switchboard_router_im_backlog_windows_total")
            .await
            >= 20.0
    );
}

/// One id from two senders is two messages: both delivered, both kept,
/// and each receipt forgets its own.
async fn one_id_from_two_senders_is_two_messages(env: Env) {
    let mut alice = env.connect("alice").await;
    let mut carol = env.connect("carol").await;
    let mut bob = env.connect("bob").await;
    alice.send_text("m1", "bob", "from alice").await;
    carol.send_text("m1", "bob", "from carol").await;
    for from in ["alice", "carol"] {
        let got = bob.recv_message().await;
        assert_eq!(
            (got["id"].as_str(), got["from"].as_str()),
            (Some("m1"), Some(from))
        );
    }
    // Both were kept: a new socket gets both.
    let session = bob.session_id.clone();
    bob.ws.close().await;
    let mut bob = register_first(&env, "bob", &session).await;
    for from in ["alice", "carol"] {
        let got = bob.recv_message().await;
        assert_eq!(
            (got["id"].as_str(), got["from"].as_str()),
            (Some("m1"), Some(from))
        );
        assert_eq!(got["body"], format!("from {from}"));
    }
    // Carol's receipt forgets carol's m1 only.
    bob.ws.send_json(&receipt("m1", "bob", "carol")).await;
    let relayed = carol.ws.recv_json_until(|m| m["type"] == 9101).await;
    assert_eq!(relayed["id"], "m1");
    env.sentinel(&mut alice).await;
    bob.ws.close().await;
    let mut bob = register_first(&env, "bob", &session).await;
    let got = bob.recv_message().await;
    assert_eq!(
        (got["id"].as_str(), got["from"].as_str()),
        (Some("m1"), Some("alice"))
    );
    env.sentinel(&mut bob).await;
    // And alice's forgets hers: nothing is kept any more.
    bob.ws.send_json(&receipt("m1", "bob", "alice")).await;
    let relayed = alice.ws.recv_json_until(|m| m["type"] == 9101).await;
    assert_eq!(relayed["id"], "m1");
    bob.ws.close().await;
    let mut bob = register_first(&env, "bob", &session).await;
    env.sentinel(&mut bob).await;
}

/// The same id from the same sender is a duplicate: answered SUCCESS,
/// delivered and kept once.
async fn a_duplicate_is_answered_and_kept_once(env: Env) {
    let mut alice = env.connect("alice").await;
    let mut bob = env.connect("bob").await;
    let duplicates = env
        .router_metric("switchboard_router_im_duplicates_total")
        .await;
    alice.send_text("m1", "bob", "once").await;
    assert_eq!(bob.recv_message().await["id"], "m1");
    alice.send_text("m1", "bob", "twice").await;
    env.sentinel(&mut bob).await;
    assert_eq!(
        env.router_metric("switchboard_router_im_duplicates_total")
            .await,
        duplicates + 1.0
    );
    // Kept once: a new socket gets it once, the first text.
    let session = bob.session_id.clone();
    bob.ws.close().await;
    let mut bob = register_first(&env, "bob", &session).await;
    let got = bob.recv_message().await;
    assert_eq!(
        (got["id"].as_str(), got["body"].as_str()),
        (Some("m1"), Some("once"))
    );
    env.sentinel(&mut bob).await;
}

/// Over its quota a sender is refused with 400 FAILED naming the quota,
/// and nothing is delivered or kept; a receipt frees quota.
async fn the_sender_quota_refuses_until_a_receipt(env: Env) {
    let mut alice = env.connect("alice").await;
    let mut bob = env.connect("bob").await;
    for i in 1..=3 {
        alice.send_text(&format!("m{i}"), "bob", "within").await;
        assert_eq!(bob.recv_message().await["id"], format!("m{i}"));
    }
    let refused = alice.request(&text("m4", "alice", "bob", "over")).await;
    assert_eq!(status_of(&refused), (400, "FAILED".to_owned()), "{refused}");
    let msg = status_msg(&refused);
    assert!(msg.contains("sender quota") && msg.contains('3'), "{msg}");
    env.sentinel(&mut bob).await;
    assert_eq!(
        env.router_metric("switchboard_router_im_quota_refused_total")
            .await,
        1.0
    );
    // The system has no quota.
    for i in 0..4 {
        let id = format!("s{i}");
        let reply = env
            .post(&json!({"id": id, "type": 2001, "to": "bob", "body": "system"}))
            .await;
        assert_eq!(reply.json(), json!({"delivered": 1, "stored": 0}), "{id}");
        assert_eq!(bob.recv_message().await["id"], id);
        bob.ws.send_json(&receipt(&id, "bob", "SYSTEM")).await;
    }
    // A receipt frees one message's worth.
    bob.ws.send_json(&receipt("m1", "bob", "alice")).await;
    let relayed = alice.ws.recv_json_until(|m| m["type"] == 9101).await;
    assert_eq!(relayed["id"], "m1");
    alice.send_text("m4", "bob", "freed").await;
    let got = bob.recv_message().await;
    assert_eq!(
        (got["id"].as_str(), got["body"].as_str()),
        (Some("m4"), Some("freed"))
    );
    // m4 was never kept the first time: a new socket gets m2, m3, m4.
    let session = bob.session_id.clone();
    bob.ws.close().await;
    let mut bob = register_first(&env, "bob", &session).await;
    for id in ["m2", "m3", "m4"] {
        assert_eq!(bob.recv_message().await["id"], id);
    }
    env.sentinel(&mut bob).await;
}

switchboard_testkit::against_both_stores! {
    a_large_backlog_arrives_whole_in_order("--outbound-bytes", "1048576", "--im-offline-max", "2000");
    one_id_from_two_senders_is_two_messages;
    a_duplicate_is_answered_and_kept_once;
    the_sender_quota_refuses_until_a_receipt("--im-sender-quota", "3");
}

/// The resident memory of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// Six 55 KB messages to 1,000 offline recipients are kept once each: the
/// standalone process grows by far less than a copy per recipient would
/// take (330 MB). The bound is loose on purpose; the figures measured
/// are in docs/BENCHMARKS.md.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_to_a_thousand_recipients_is_kept_once() {
    let env = Env::memory(&[]).await;
    let mut alice = env.connect("alice").await;
    let recipients: Vec<String> = (0..1_000).map(|i| format!("r{i:03}")).collect();
    let to = recipients.join(",");
    let body = "y".repeat(55_000);
    alice.send_text("warm-up", &to, "warm up").await;
    let before = rss_kib(env.0.process.pid());
    for i in 0..6 {
        alice.send_text(&format!("big{i}"), &to, &body).await;
    }
    let grown_kib = rss_kib(env.0.process.pid()).saturating_sub(before);
    println!("six 55 KB messages to 1,000 recipients: RSS grew {grown_kib} KiB");
    assert!(
        grown_kib < 64 * 1024,
        "grew {grown_kib} KiB: more than a few copies"
    );
    assert_eq!(
        env.router_metric("switchboard_router_im_messages_kept_total")
            .await,
        7_000.0,
        "every recipient has it"
    );
    // Every recipient gets it all the same.
    let mut last = env.connect("r999").await;
    assert_eq!(last.recv_message().await["id"], "warm-up");
    for i in 0..6 {
        assert_eq!(last.recv_message().await["id"], format!("big{i}"));
    }
    env.sentinel(&mut last).await;
}

/// While the store hangs, a user's queue holds at most `--im-queue-max`
/// jobs: receipts over it are refused with 400 FAILED naming the bound and
/// what to do, and counted; the ones it holds wait for the store and are
/// answered with its failure when it times out. (A socket waits for each
/// receipt's answer, so the receipts come from six sockets of the user.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_user_queue_refuses_while_the_store_hangs() {
    // The edge waits for the router longer than the store's timeouts add up.
    let env = Env::redis(&["--im-queue-max", "2", "--request-timeout", "30s"]).await;
    let mut sockets = Vec::new();
    for _ in 0..6 {
        sockets.push(env.connect("bob").await);
    }
    let redis = env.0.redis.as_ref().expect("a private redis-server");
    redis.pause();
    for (i, bob) in sockets.iter_mut().enumerate() {
        bob.ws
            .send_json(&receipt(&format!("m{i}"), "bob", "alice"))
            .await;
    }
    // One receipt waits on the store and two in the queue (a third when
    // the first had not started yet); the others are refused.
    let (mut refused, mut waited) = (0, 0);
    for bob in &mut sockets {
        let event = bob.ws.recv(std::time::Duration::from_secs(30)).await;
        let Some(switchboard_testkit::ws::Event::Text(text)) = event else {
            panic!("no answer to a receipt: {event:?}");
        };
        let answer: Value = serde_json::from_str(&text).expect("JSON");
        let (code, status) = status_of(&answer);
        assert_eq!((code, status.as_str()), (400, "FAILED"), "{answer}");
        let msg = status_msg(&answer);
        if msg.contains("queue of bob is full (2 jobs)") {
            assert!(msg.contains("send the receipt again"), "{msg}");
            refused += 1;
        } else {
            assert!(msg.contains("receipt not stored"), "{msg}");
            waited += 1;
        }
    }
    assert!(
        (2..=3).contains(&refused),
        "{refused} refused, {waited} waited"
    );
    assert_eq!(
        env.router_metric("switchboard_router_im_queue_full_total{job=\"ack\"}")
            .await,
        f64::from(refused)
    );
    redis.resume();
    let mut bob = sockets.pop().expect("a socket");
    env.sentinel(&mut bob).await;
}
