//! Frame limits and close codes of `00-common.md`, and the upgrade
//! refusals of the group dialect, against a standalone edge process.

use std::time::Duration;

use serde_json::json;
use switchboard_testkit::http::{self, metric};
use switchboard_testkit::switchboard::{self, group_url, token};
use switchboard_testkit::ws::Event;
use switchboard_testkit::{Process, WsClient};

async fn start(extra: &[&str]) -> Process {
    let process = switchboard::standalone(extra);
    switchboard::wait_ready(process.addr("edge-admin")).await;
    process
}

async fn client(process: &Process, client: &str) -> WsClient {
    switchboard::join_group(process.addr("edge"), "t1", "room", client, None).await
}

const CLOSE_WAIT: Duration = Duration::from_secs(5);

#[tokio::test]
async fn binary_frame_closes_1003() {
    let edge = start(&[]).await;
    let mut ws = client(&edge, "alice").await;
    ws.send_binary(b"\x00\x01").await;
    assert_eq!(ws.recv_close(CLOSE_WAIT).await.0, 1003);
}

#[tokio::test]
async fn invalid_utf8_closes_1007() {
    let edge = start(&[]).await;
    let mut ws = client(&edge, "alice").await;
    ws.send_raw_text(&[0x7b, 0xff, 0xfe, 0x7d]).await;
    assert_eq!(ws.recv_close(CLOSE_WAIT).await.0, 1007);
}

#[tokio::test]
async fn invalid_utf8_across_fragments_closes_1007() {
    let edge = start(&[]).await;
    let mut ws = client(&edge, "alice").await;
    // A two-byte character split across two frames is valid...
    ws.send_fragment(
        b"{\"msg_type\":\"msg\",\"target\":\"echo\",\"msg\":\"\xc3",
        true,
        false,
    )
    .await;
    ws.send_fragment(b"\xa9\"}", false, true).await;
    assert_eq!(ws.recv_json().await["msg"], "é");
    // ...a broken one is not.
    ws.send_fragment(b"{\"msg\":\"\xc3", true, false).await;
    ws.send_fragment(b"\x41\"}", false, true).await;
    assert_eq!(ws.recv_close(CLOSE_WAIT).await.0, 1007);
}

fn echo_of_size(size: usize) -> String {
    let head = r#"{"msg_type":"msg","target":"echo","msg":""#;
    let tail = r#""}"#;
    let fill = size - head.len() - tail.len();
    format!("{head}{}{tail}", "x".repeat(fill))
}

#[tokio::test]
async fn message_at_the_limit_passes_and_one_byte_more_closes_1009() {
    let edge = start(&[]).await;
    let mut ws = client(&edge, "alice").await;
    let at_limit = echo_of_size(64 * 1024);
    ws.send_text(&at_limit).await;
    let echoed = ws.recv_json().await;
    let overhead = r#"{"msg_type":"msg","target":"echo","msg":""}"#.len();
    assert_eq!(
        echoed["msg"].as_str().map(str::len),
        Some(64 * 1024 - overhead)
    );
    ws.send_text(&echo_of_size(64 * 1024 + 1)).await;
    assert_eq!(ws.recv_close(CLOSE_WAIT).await.0, 1009);
}

#[tokio::test]
async fn fragmented_message_over_the_limit_closes_1009() {
    let edge = start(&[]).await;
    let mut ws = client(&edge, "alice").await;
    // Reassembled fragments are echoed...
    ws.send_fragment(br#"{"msg_type":"msg","#, true, false)
        .await;
    ws.send_fragment(br#""target":"echo","#, false, false).await;
    ws.send_fragment(br#""msg":"joined"}"#, false, true).await;
    assert_eq!(ws.recv_json().await["msg"], "joined");
    // ...and many small fragments may not add up past 64 KiB.
    let chunk = vec![b'x'; 16 * 1024];
    ws.send_fragment(br#"{"msg":""#, true, false).await;
    for _ in 0..4 {
        ws.send_fragment(&chunk, false, false).await;
    }
    ws.send_fragment(b"\"}", false, true).await;
    assert_eq!(ws.recv_close(CLOSE_WAIT).await.0, 1009);
}

#[tokio::test]
async fn continuation_without_a_message_closes_1002() {
    let edge = start(&[]).await;
    let mut ws = client(&edge, "alice").await;
    ws.send_fragment(b"orphan", false, true).await;
    assert_eq!(ws.recv_close(CLOSE_WAIT).await.0, 1002);
}

#[tokio::test]
async fn rate_limit_answers_then_closes_1008() {
    let edge = start(&["--rate-limit", "5", "--rate-burst", "5"]).await;
    let mut ws = client(&edge, "alice").await;
    let echo = json!({"msg_type":"msg","target":"echo","msg":"x"});
    for _ in 0..5 {
        ws.send_json(&echo).await;
    }
    for _ in 0..5 {
        assert_eq!(ws.recv_json().await["target"], "echo");
    }
    // Taken before the streak starts, so the time since is never shorter
    // than the streak the edge measures.
    let started = std::time::Instant::now();
    ws.send_json(&echo).await;
    let refused = ws.recv_json().await;
    assert_eq!(refused["msg_type"], "error");
    assert_eq!(refused["payload"]["code"], "rate_limited");
    // Staying over the limit for 5 s closes the socket.
    let code = loop {
        ws.send_json(&echo).await;
        match ws.recv(Duration::from_millis(20)).await {
            Some(Event::Close(code, _)) => break code,
            Some(Event::Gone) => panic!("closed without a close frame"),
            _ => {}
        }
        // A correctness limit, far past the 5 s streak.
        assert!(started.elapsed() < Duration::from_secs(30), "never closed");
    };
    assert_eq!(code, 1008);
    assert!(
        started.elapsed() >= Duration::from_secs(4),
        "closed too early"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumer_closes_1013_and_others_keep_receiving() {
    const FLOOD: usize = 400;
    // Room for 16 of the 16 KiB messages per socket; the sender is paced
    // by its own copies, not by the rate limiter (raised here) or sleeps.
    let edge = start(&[
        "--outbound-queue",
        "32",
        "--outbound-bytes",
        "262144",
        "--rate-limit",
        "10000",
        "--rate-burst",
        "10000",
    ])
    .await;
    let slow = client(&edge, "slow").await;
    let mut fast = client(&edge, "fast").await;
    let mut sender = client(&edge, "sender").await;
    // `fast` reads on its own task and must get every message.
    let reader = tokio::spawn(async move {
        let mut got = 0;
        while got < FLOOD {
            match fast.recv(Duration::from_secs(30)).await {
                Some(Event::Text(text)) if text.contains(r#""msg_type":"msg""#) => got += 1,
                Some(Event::Text(_)) => {}
                other => panic!("fast socket after {got} messages: {other:?}"),
            }
        }
        got
    });
    // `slow` stops reading; `sender` floods the group with 16 KiB
    // messages, each sent once its previous copy came back.
    let big = "y".repeat(16 * 1024);
    let message = json!({"msg_type":"msg","target":"group","msg": big});
    for _ in 0..FLOOD {
        sender.send_json(&message).await;
        sender
            .recv_json_until(|m| m["msg_type"] == "msg" && m["from_id"] == "sender")
            .await;
    }
    assert_eq!(
        reader.await.unwrap(),
        FLOOD,
        "the fast socket got every message"
    );
    let mut slow = slow;
    let code = slow.recv_close(Duration::from_secs(30)).await.0;
    assert_eq!(code, 1013);
    let metrics = http::get(edge.addr("edge-admin"), "/metrics", &[]).await;
    let text = String::from_utf8_lossy(&metrics.body).into_owned();
    assert!(
        metric(
            &text,
            r#"switchboard_edge_slow_consumer_closes_total{dialect="group"}"#
        ) >= 1.0,
        "slow consumers are counted"
    );
}

#[tokio::test]
async fn silent_socket_is_closed_after_idle_timeout() {
    let edge = start(&["--idle-timeout", "1s", "--ping-interval", "300ms"]).await;
    // tungstenite answers pings only while it is read; a socket that
    // answers pongs stays open.
    let mut alive = client(&edge, "alive").await;
    let reader = tokio::spawn(async move {
        // Reading makes tungstenite answer the server's pings.
        let deadline = tokio::time::Instant::now() + Duration::from_millis(2500);
        while tokio::time::Instant::now() < deadline {
            if let Some(Event::Close(..) | Event::Gone) =
                alive.recv(Duration::from_millis(100)).await
            {
                panic!("a socket that answers pings was closed");
            }
        }
        alive
    });
    // A raw TCP client that completes the upgrade and then sends nothing.
    let addr = edge.addr("edge");
    let token = token("mute", "client", "t1", None);
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let request = switchboard_testkit::ws::raw::upgrade_request(
        addr,
        &format!("/v3/ws/group/room/client/mute?token={token}"),
    );
    stream.write_all(&request).await.unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let found = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let n = stream.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                return false;
            }
            seen.extend_from_slice(&buf[..n]);
            // A close frame: 0x88, length, then the code 1001 (0x03e9).
            if seen.windows(2).any(|w| w == [0x03, 0xe9]) && seen.windows(1).any(|w| w == [0x88]) {
                return true;
            }
        }
    })
    .await;
    assert_eq!(found, Ok(true), "the mute socket got close 1001");
    let mut alive = reader.await.expect("reader task");
    alive
        .send_json(&json!({"msg_type":"msg","target":"echo","msg":"ok"}))
        .await;
    let echoed = alive.recv_json_until(|m| m["target"] == "echo").await;
    assert_eq!(echoed["msg"], "ok", "a socket that pongs stays open");
}

#[tokio::test]
async fn upgrade_refusals_are_json_with_the_right_status() {
    let edge = start(&[]).await;
    let addr = edge.addr("edge");
    let good = token("alice", "client", "t1", None);
    let cases = [
        (
            group_url(addr, "123", "alice", &good),
            400,
            Some("group_id"),
        ),
        (
            group_url(addr, "room", "bad.id", &good),
            400,
            Some("client_id"),
        ),
        (
            group_url(addr, "room", &"x".repeat(65), &good),
            400,
            Some("client_id"),
        ),
        (
            format!("ws://{addr}/v3/ws/group/room/client/alice"),
            401,
            None,
        ),
        (group_url(addr, "room", "alice", "garbage"), 401, None),
        (group_url(addr, "room", "bob", &good), 401, None),
        (format!("ws://{addr}/v3/ws/nowhere"), 404, None),
    ];
    for (url, status, field) in cases {
        let refused = WsClient::connect(&url)
            .await
            .err()
            .unwrap_or_else(|| panic!("{url} upgraded"));
        assert_eq!(refused.status, status, "{url}");
        assert!(
            refused.body["error"]["message"].is_string(),
            "{url}: {:?}",
            refused.body
        );
        assert_eq!(refused.body["error"]["field"].as_str(), field, "{url}");
    }
    let expired = expired_token();
    let refused = WsClient::connect(&group_url(addr, "room", "alice", &expired))
        .await
        .err()
        .unwrap();
    assert_eq!(refused.status, 401);
    assert_eq!(refused.body["error"]["message"], "token expired");
    // Header tokens work too.
    let reply = http::get(
        addr,
        "/v3/ws/group/room/client/alice",
        &[("authorization", &format!("Bearer {good}"))],
    )
    .await;
    assert_eq!(reply.status, 426, "authorized but not an upgrade");
}

fn expired_token() -> String {
    use switchboard_common::auth::{Minter, claims};
    let mut c = claims("alice", "client", "t1", None, 0);
    c.exp -= 3600;
    Minter::hs256(switchboard::SECRET.as_bytes()).mint(&c)
}

#[tokio::test]
async fn anonymous_clients_only_when_allowed() {
    let closed = start(&[]).await;
    let url = format!("ws://{}/v3/ws/group/room/client/anon", closed.addr("edge"));
    assert_eq!(
        WsClient::connect(&url).await.err().map(|r| r.status),
        Some(401)
    );
    let open = start(&["--allow-anonymous"]).await;
    let url = format!("ws://{}/v3/ws/group/room/client/anon", open.addr("edge"));
    let mut ws = WsClient::open(&url).await;
    ws.send_json(&json!({"msg_type":"msg","target":"echo"}))
        .await;
    assert_eq!(ws.recv_json().await["from_id"], "anon");
}

#[tokio::test]
async fn random_bytes_never_stop_the_edge() {
    let edge = start(&[]).await;
    let addr = edge.addr("edge");
    use tokio::io::AsyncWriteExt;
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    for round in 0..50 {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let bytes: Vec<u8> = (0..(64 + round * 97))
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        let _ = stream.write_all(&bytes).await;
    }
    // And garbage after a valid upgrade.
    let mut ws = client(&edge, "fuzz").await;
    for text in [
        "\u{0}",
        "{}",
        "null",
        "{\"msg_type\":{}}",
        &"[".repeat(10_000),
    ] {
        ws.send_text(text).await;
        assert_eq!(ws.recv_json().await["msg_type"], "error", "{text:.20}");
    }
    let mut ws = client(&edge, "after").await;
    ws.send_json(&json!({"msg_type":"msg","target":"echo","msg":"alive"}))
        .await;
    assert_eq!(ws.recv_json().await["msg"], "alive");
    assert_eq!(
        http::get(edge.addr("edge-admin"), "/healthz", &[])
            .await
            .status,
        200
    );
}

/// What arrives with the upgrade request, several frames in one segment and
/// a frame larger than the read buffer followed by a small one are all
/// read: the reader waits on the socket only when nothing is buffered.
#[tokio::test]
async fn frames_that_share_a_segment_are_all_answered() {
    use switchboard_testkit::ws::raw::{self, RawSocket};
    let edge = start(&[]).await;
    let addr = edge.addr("edge");
    let echo = |msg: &str| {
        raw::text_frame(
            json!({"msg_type":"msg","target":"echo","msg":msg})
                .to_string()
                .as_bytes(),
        )
    };
    let token = token("eager", "client", "t1", None);
    let mut socket = RawSocket::connect(addr).await;
    let mut first = raw::upgrade_request(
        addr,
        &format!("/v3/ws/group/room/client/eager?token={token}"),
    );
    first.extend(echo("with-the-upgrade"));
    first.extend(echo("right-behind-it"));
    socket.send(&first).await;
    assert_eq!(
        echoes(&mut socket, 2).await,
        ["with-the-upgrade", "right-behind-it"]
    );

    let mut three = Vec::new();
    for msg in ["a", "b", "c"] {
        three.extend(echo(msg));
    }
    socket.send(&three).await;
    assert_eq!(echoes(&mut socket, 3).await, ["a", "b", "c"]);

    // A 20 KiB message and a small one in one write.
    let big = "x".repeat(20 * 1024);
    let mut burst = echo(&big);
    burst.extend(echo("after-the-big-one"));
    socket.send(&burst).await;
    let got = echoes(&mut socket, 2).await;
    assert_eq!(got[0].len(), big.len());
    assert_eq!(got[1], "after-the-big-one");
}

/// The `msg` of the next `n` echo answers (presence events are skipped).
async fn echoes(socket: &mut switchboard_testkit::ws::raw::RawSocket, n: usize) -> Vec<String> {
    let mut msgs = Vec::new();
    while msgs.len() < n {
        for text in socket.texts(1, Duration::from_secs(5)).await {
            let value: serde_json::Value = serde_json::from_str(&text).expect("JSON");
            if value["target"] == "echo" {
                msgs.push(value["msg"].as_str().unwrap_or_default().to_owned());
            }
        }
    }
    msgs
}
