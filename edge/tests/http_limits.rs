//! The HTTP request phase of every listener (`00-common.md`, "Frames"):
//! slow headers and slow bodies are cut off, each listener caps its open
//! connections, and an upgraded WebSocket is outside all of it. Played
//! against real processes with short limits passed by flag.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::json;
use switchboard_testkit::http::raw::{self, KeptAlive};
use switchboard_testkit::http::{self, metric};
use switchboard_testkit::switchboard::{self, API_KEY};
use switchboard_testkit::{Process, WsClient};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Each listener of a standalone process, and a route it answers 200.
const LISTENERS: [(&str, &str); 4] = [
    ("edge", "/"),
    ("edge-admin", "/healthz"),
    ("router-api", "/api/v1/openapi.json"),
    ("router-admin", "/healthz"),
];

/// How long a slow client may be left open by a 1 s header timeout before
/// the test fails: generous, and still short of the 10 s default, so a
/// listener that ignored the flag would fail.
const CLOSED_WITHIN: Duration = Duration::from_secs(8);

async fn standalone(extra: &[&str]) -> Process {
    let process = switchboard::standalone(extra);
    switchboard::wait_ready(process.addr("edge-admin")).await;
    process
}

/// Writes one more byte every 300 ms, as a slowloris does to look alive,
/// until the server closes the connection; whether it did within `limit`.
async fn trickle_until_closed(mut stream: TcpStream, limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    let mut buf = [0u8; 1024];
    loop {
        tokio::select! {
            read = stream.read(&mut buf) => match read {
                Ok(0) | Err(_) => return true,
                Ok(_) => continue,
            },
            () = tokio::time::sleep(Duration::from_millis(300)) => {
                let _ = stream.write_all(b"a").await;
            }
            () = tokio::time::sleep_until(deadline) => return false,
        }
    }
}

/// 50 connections that send half a request line or half their headers are
/// all closed by the server, while a normal request is answered.
async fn slowloris_is_cut_off(addr: SocketAddr, path: &str) {
    let mut slow = Vec::new();
    for i in 0..50 {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let partial: &[u8] = if i % 2 == 0 {
            b"GET /heal"
        } else {
            b"GET / HTTP/1.1\r\nHost: slow\r\nX-Slow: "
        };
        stream.write_all(partial).await.expect("write");
        slow.push(stream);
    }
    assert_eq!(
        raw::get_status(addr, path).await,
        Some(200),
        "{addr}{path} answers while 50 slow clients hang"
    );
    let mut waits = tokio::task::JoinSet::new();
    for stream in slow {
        waits.spawn(trickle_until_closed(stream, CLOSED_WITHIN));
    }
    let closed = waits.join_all().await.into_iter().filter(|c| *c).count();
    assert_eq!(closed, 50, "slow clients of {addr} closed by the server");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_are_cut_off_on_every_standalone_listener() {
    let process = standalone(&["--http-header-timeout", "1s"]).await;
    for (listener, path) in LISTENERS {
        slowloris_is_cut_off(process.addr(listener), path).await;
    }
    let text = http::get(process.addr("edge-admin"), "/metrics", &[]).await;
    let text = String::from_utf8_lossy(&text.body);
    for (listener, _) in LISTENERS {
        let series = format!("switchboard_http_header_timeouts_total{{listener=\"{listener}\"}}");
        assert!(metric(&text, &series) >= 50.0, "{series} in\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_are_cut_off_on_a_router_process() {
    let router = switchboard::router(&["--http-header-timeout", "1s"], &[]);
    switchboard::wait_ready(router.addr("router-admin")).await;
    slowloris_is_cut_off(router.addr("router-api"), "/api/v1/openapi.json").await;
    slowloris_is_cut_off(router.addr("router-admin"), "/healthz").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_body_is_cut_off_with_408() {
    let process = standalone(&["--http-body-timeout", "2s"]).await;
    let api = process.addr("router-api");
    let mut stream = TcpStream::connect(api).await.expect("connect");
    let head = format!(
        "POST /api/v1/broadcast HTTP/1.1\r\nHost: {api}\r\nAuthorization: Bearer {API_KEY}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{"
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    // One byte every 300 ms: the 1000 bytes would take five minutes.
    let trickle = async {
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            tokio::select! {
                read = stream.read(&mut buf) => match read {
                    Ok(0) | Err(_) => return seen,
                    Ok(n) => seen.extend_from_slice(&buf[..n]),
                },
                () = tokio::time::sleep(Duration::from_millis(300)) => {
                    let _ = stream.write_all(b" ").await;
                }
            }
        }
    };
    let answer = tokio::time::timeout(Duration::from_secs(15), trickle)
        .await
        .expect("the server answers and closes a trickled body");
    let text = String::from_utf8_lossy(&answer);
    assert_eq!(raw::status_of(&answer), Some(408), "{text}");
    assert!(text.contains("\"request_timeout\""), "{text}");

    // A body that arrives whole is still taken.
    let auth = format!("Bearer {API_KEY}");
    let message = json!({"msg_type": "cmd", "cmd": "MAINTENANCE"});
    let reply = http::post_json(
        api,
        "/api/v1/broadcast",
        &[("authorization", &auth)],
        &message,
    )
    .await;
    assert_eq!(reply.json(), json!({"delivered": 0}));
    let metrics = http::get(process.addr("router-admin"), "/metrics", &[]).await;
    let metrics = String::from_utf8_lossy(&metrics.body);
    let series = r#"switchboard_http_body_timeouts_total{listener="router-api"}"#;
    assert_eq!(metric(&metrics, series), 1.0, "{metrics}");
}

/// Holds `count` answered keep-alive connections on `addr`. An attempt
/// refused with 503 is retried: a connection the test closed a moment ago
/// may not have been let go by the server yet.
async fn hold(addr: SocketAddr, path: &str, count: usize) -> Vec<KeptAlive> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut held = Vec::new();
    while held.len() < count {
        match KeptAlive::open(addr, path).await {
            Ok(connection) => held.push(connection),
            Err(503) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(status) => panic!("{addr}{path} answered {status}"),
        }
    }
    held
}

/// Polls `GET path` until it is answered 200; panics after 10 s.
async fn served_again(addr: SocketAddr, path: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let status = raw::get_status(addr, path).await;
        if status == Some(200) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{addr}{path} never served again: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_listener_refuses_the_connection_over_its_cap() {
    let process = standalone(&["--max-http-connections", "5"]).await;
    for (listener, path) in LISTENERS {
        let addr = process.addr(listener);
        let mut held = hold(addr, path, 5).await;
        // The sixth is answered 503 and closed without being read.
        let mut sixth = TcpStream::connect(addr).await.expect("connect");
        let answer = raw::read_until_closed(&mut sixth, Duration::from_secs(10))
            .await
            .unwrap_or_else(|| panic!("{listener}: the sixth connection is closed"));
        assert_eq!(
            raw::status_of(&answer),
            Some(503),
            "{listener}: {}",
            String::from_utf8_lossy(&answer)
        );
        // A held connection is still served, and asked to close after.
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        let first = &mut held[0].stream;
        first.write_all(request.as_bytes()).await.expect("write");
        let answer = raw::read_until_closed(first, Duration::from_secs(10))
            .await
            .expect("answered and closed");
        assert_eq!(
            raw::status_of(&answer),
            Some(200),
            "{listener}: a held connection"
        );
        // Once the five are closed, a new connection is served.
        drop(held);
        served_again(addr, path).await;
    }
    let text = http::get(process.addr("edge-admin"), "/metrics", &[]).await;
    let text = String::from_utf8_lossy(&text.body);
    for (listener, _) in LISTENERS {
        let series =
            format!("switchboard_http_connections_refused_total{{listener=\"{listener}\"}}");
        assert!(metric(&text, &series) >= 1.0, "{series} in\n{text}");
    }
}

/// A slow client's connection, opened now; resolves once the server has
/// closed it, which takes one header timeout.
async fn one_header_timeout(edge: SocketAddr) {
    let mut stream = TcpStream::connect(edge).await.expect("connect");
    stream
        .write_all(b"GET / HTTP/1.1\r\n")
        .await
        .expect("write");
    raw::read_until_closed(&mut stream, CLOSED_WITHIN)
        .await
        .expect("the slow client is closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_outlives_the_header_timeout() {
    let process = standalone(&["--http-header-timeout", "1s"]).await;
    let edge = process.addr("edge");
    let mut ws = switchboard::join_group(edge, "t1", "room", "alice", None).await;
    // Two slow clients opened after the socket are cut off in turn: the
    // socket has been open for longer than two header timeouts.
    one_header_timeout(edge).await;
    one_header_timeout(edge).await;
    ws.send_json(&json!({"msg_type": "msg", "target": "echo", "msg": "still here"}))
        .await;
    assert_eq!(ws.recv_json().await["msg"], "still here");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgraded_websockets_do_not_count_against_the_cap() {
    let process = standalone(&["--max-http-connections", "2"]).await;
    let edge = process.addr("edge");
    let mut sockets: Vec<WsClient> = Vec::new();
    for client in ["alice", "bob", "carol", "dave"] {
        sockets.push(switchboard::join_group(edge, "t1", "room", client, None).await);
    }
    // Four sockets open on a listener capped at two connections, and a
    // plain request is still served.
    served_again(edge, "/").await;
    for ws in &mut sockets {
        ws.send_json(&json!({"msg_type": "msg", "target": "echo", "msg": "up"}))
            .await;
        assert_eq!(ws.recv_json_until(|m| m["msg"] == "up").await["msg"], "up");
    }
}
