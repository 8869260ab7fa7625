//! The frame rules of `00-common.md` hold for every dialect, not only
//! groups: binary frames (1003), invalid UTF-8 (1007), oversized messages
//! whole or in fragments (1009), a new message inside a fragmented one
//! (1002), a ping between fragments, the rate streak (1008) and a full
//! outbound queue (1013). The connection layer is shared, so each rule is
//! played once per dialect against a standalone edge process.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::json;
use switchboard_testkit::Process;
use switchboard_testkit::dialects::{ALL, Dialect};
use switchboard_testkit::http;
use switchboard_testkit::switchboard::{self, API_KEY};
use switchboard_testkit::ws::Event;

const CLOSE_WAIT: Duration = Duration::from_secs(10);
const MAX_MESSAGE: usize = 2048;

async fn start(extra: &[&str]) -> Process {
    let mut args = vec!["--max-message-size", "2048"];
    args.extend_from_slice(extra);
    let process = switchboard::standalone(&args);
    switchboard::wait_ready(process.addr("edge-admin")).await;
    process
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frame_errors_close_every_dialect_with_the_spec_codes() {
    let edge = start(&[]).await;
    let addr = edge.addr("edge");
    for dialect in ALL {
        let mut ws = dialect.open(addr, "binary").await;
        ws.send_binary(b"\x00\x01").await;
        assert_eq!(
            ws.recv_close(CLOSE_WAIT).await.0,
            1003,
            "{dialect:?} binary"
        );

        let mut ws = dialect.open(addr, "utf8").await;
        ws.send_raw_text(&[0x7b, 0xff, 0xfe, 0x7d]).await;
        assert_eq!(ws.recv_close(CLOSE_WAIT).await.0, 1007, "{dialect:?} UTF-8");

        let mut ws = dialect.open(addr, "big").await;
        ws.send_text(&"x".repeat(MAX_MESSAGE + 1)).await;
        // The reason names the limit and the flag that sets it.
        assert_eq!(
            ws.recv_close(CLOSE_WAIT).await,
            (
                1009,
                "message over 2048 bytes (the edge's --max-message-size)".to_owned()
            ),
            "{dialect:?} size"
        );

        // Each fragment is small; together they are over the limit.
        let mut ws = dialect.open(addr, "bigfrag").await;
        let part = vec![b'x'; MAX_MESSAGE / 2];
        ws.send_fragment(&part, true, false).await;
        ws.send_fragment(&part, false, false).await;
        ws.send_fragment(&part, false, true).await;
        assert_eq!(
            ws.recv_close(CLOSE_WAIT).await.0,
            1009,
            "{dialect:?} fragments"
        );

        // A new text frame while a fragmented message is open.
        let mut ws = dialect.open(addr, "interleaved").await;
        ws.send_fragment(b"{\"a\":", true, false).await;
        ws.send_fragment(b"{}", true, true).await;
        assert_eq!(
            ws.recv_close(CLOSE_WAIT).await.0,
            1002,
            "{dialect:?} interleaved"
        );

        let mut ws = dialect.open(addr, "orphan").await;
        ws.send_fragment(b"{}", false, true).await;
        assert_eq!(
            ws.recv_close(CLOSE_WAIT).await.0,
            1002,
            "{dialect:?} continuation"
        );
    }
    // The edge is still serving every dialect.
    for dialect in ALL {
        let mut ws = dialect.open(addr, "after").await;
        dialect.round_trip(&mut ws, "still-up").await;
    }
}

/// A client's close is answered with its own code on every dialect, after
/// an error reply too (RFC 6455 5.5.1): a bad message leaves nothing that
/// turns the close into another code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clients_close_is_answered_with_its_code_after_an_error_reply() {
    let edge = start(&[]).await;
    let addr = edge.addr("edge");
    for dialect in ALL {
        for code in [1000, 3000, 4999] {
            // A user per socket: the router may still hold the previous
            // one for a moment after its close, and a second socket of a
            // present member brings no join to wait for.
            let mut ws = dialect.open(addr, &format!("closer{code}")).await;
            ws.send_text("Hello, world").await;
            // Whatever the dialect answers to text that is not its own.
            assert!(
                matches!(ws.recv(CLOSE_WAIT).await, Some(Event::Text(_))),
                "{dialect:?}: an error reply"
            );
            ws.close_with(code).await;
            assert_eq!(
                ws.recv_close(CLOSE_WAIT).await.0,
                code,
                "{dialect:?} close {code}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fragments_are_reassembled_with_a_ping_between_them() {
    let edge = start(&[]).await;
    let addr = edge.addr("edge");
    for dialect in ALL {
        let mut ws = dialect.open(addr, "frag").await;
        let text = dialect.probe("reassembled");
        let (head, tail) = text.as_bytes().split_at(text.len() / 2);
        ws.send_fragment(head, true, false).await;
        ws.send_ping(b"between").await;
        ws.send_fragment(tail, false, true).await;
        assert_eq!(
            ws.recv_pong(CLOSE_WAIT).await.as_deref(),
            Some(&b"between"[..]),
            "{dialect:?}: the ping between fragments is answered"
        );
        ws.recv_json_until(|m| dialect.answers(m, "reassembled"))
            .await;
        // And the socket goes on as usual.
        dialect.round_trip(&mut ws, "after-fragments").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staying_over_the_rate_limit_closes_every_dialect_1008() {
    let edge = start(&["--rate-limit", "5", "--rate-burst", "5"]).await;
    let addr = edge.addr("edge");
    // The 5 s streaks run side by side.
    let floods = ALL.map(|dialect| {
        tokio::spawn(async move {
            let mut ws = dialect.open(addr, "flood").await;
            let mut refused = false;
            let limit = std::time::Instant::now() + Duration::from_secs(30);
            let code = loop {
                assert!(
                    std::time::Instant::now() < limit,
                    "{dialect:?}: never closed"
                );
                ws.send_text(&dialect.probe("flood")).await;
                match ws.recv(Duration::from_millis(20)).await {
                    Some(Event::Close(code, _)) => break code,
                    Some(Event::Text(text)) => refused |= text.contains("rate limit"),
                    Some(Event::Gone) => panic!("{dialect:?} closed without a close frame"),
                    _ => {}
                }
            };
            assert!(refused, "{dialect:?} answered the dialect's error first");
            assert_eq!(code, 1008, "{dialect:?}");
        })
    });
    for flood in floods {
        flood.await.unwrap();
    }
}

/// Pushes one 8 KiB event for `user` (tenant t1) through the server API,
/// in the shape that reaches that dialect's socket.
async fn push(api: SocketAddr, dialect: Dialect, user: &str, n: usize) -> u16 {
    let filler = "z".repeat(8 * 1024);
    let (path, body) = match dialect {
        Dialect::Group => (
            "/api/v1/groups/room/messages".to_owned(),
            json!({"msg_type":"msg","target":"group","msg":filler}),
        ),
        Dialect::JsonRpc => (
            "/api/v1/notify".to_owned(),
            json!({"to":{"user":user},"type":"flood","data":filler}),
        ),
        Dialect::Iot => (
            "/api/v1/iot/events".to_owned(),
            json!({"code":"deviceConn","body":{"device":{"productID":"p","deviceName":"d"},"n":n,"pad":filler}}),
        ),
        Dialect::Im => (
            "/api/v1/im/messages".to_owned(),
            json!({"id":format!("flood-{n}"),"type":2001,"to":user,"body":filler}),
        ),
    };
    let auth = format!("Bearer {API_KEY}");
    http::post_json(
        api,
        &path,
        &[("authorization", &auth), ("x-tenant", "t1")],
        &body,
    )
    .await
    .status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_that_does_not_read_is_closed_1013_in_every_dialect() {
    let edge = start(&["--outbound-queue", "16", "--outbound-bytes", "65536"]).await;
    let addr = edge.addr("edge");
    let api = edge.addr("router-api");
    for dialect in ALL {
        let user = format!("slow_{dialect:?}").to_lowercase();
        let mut ws = dialect.open(addr, &user).await;
        if let Dialect::Iot = dialect {
            ws.send_json(&json!({"type":"up.sub","body":{"code":"deviceConn","params":{"productID":"p","deviceName":"d"}}}))
                .await;
            assert_eq!(ws.recv_json().await["code"], 200, "subscribed");
        }
        // The socket stops reading; pushes fill its TCP buffers, then its
        // queue. The edge's count of slow-consumer closes says when; the
        // loop is bounded far past any loopback buffer size.
        let before = slow_closes(&edge).await;
        let mut n = 0;
        while slow_closes(&edge).await == before {
            for _ in 0..100 {
                assert_eq!(push(api, dialect, &user, n).await, 200, "{dialect:?} push");
                n += 1;
            }
            assert!(n < 20_000, "{dialect:?}: never closed for a full queue");
        }
        let code = ws.recv_close(CLOSE_WAIT).await.0;
        assert_eq!(code, 1013, "{dialect:?}");
    }
}

/// Sockets of any dialect closed so far for a full outbound queue.
async fn slow_closes(edge: &Process) -> f64 {
    let text = switchboard_testkit::cluster::scrape(edge.addr("edge-admin")).await;
    text.lines()
        .filter(|line| line.starts_with("switchboard_edge_slow_consumer_closes_total"))
        .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}
