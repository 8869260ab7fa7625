//! The frame layer judged from outside: the Autobahn TestSuite's
//! `wstest -m fuzzingclient` against the conformance echo route of a
//! standalone edge. The echo route runs through the same connection code
//! as every dialect, so what passes here holds for all of them.
//!
//! `wstest` runs under Python 2.7 (`pip install autobahntestsuite` there);
//! the test finds it through `WSTEST`, `~/.local/bin/wstest` or `PATH`, and
//! is skipped without it unless `SWITCHBOARD_REQUIRE_TOOLS` is set (CI sets
//! it, and installs the suite).

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use switchboard_testkit::switchboard;

const ECHO: &str = "/conformance/echo";

fn wstest() -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(given) = std::env::var_os("WSTEST") {
        candidates.push(given.into());
    }
    if let Some(home) = std::env::var_os("HOME") {
        candidates.push(PathBuf::from(home).join(".local/bin/wstest"));
    }
    candidates.push("wstest".into());
    candidates.into_iter().find(|program| {
        Command::new(program)
            .arg("--autobahnversion")
            .output()
            .is_ok_and(|out| out.status.success())
    })
}

/// Runs `cases` against `url`; the per-case results of the report.
fn fuzzingclient(program: &PathBuf, url: &str, cases: &[String]) -> serde_json::Map<String, Value> {
    let dir = std::env::temp_dir().join(format!("sb-autobahn-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let spec = json!({
        "outdir": dir.join("reports").display().to_string(),
        "servers": [{"agent": "switchboard", "url": url}],
        "cases": cases,
        "exclude-cases": [],
        "exclude-agent-cases": {}
    });
    let spec_file = dir.join("fuzzingclient.json");
    std::fs::write(&spec_file, spec.to_string()).unwrap();
    let out = Command::new(program)
        .args(["-m", "fuzzingclient", "-s"])
        .arg(&spec_file)
        .current_dir(&dir)
        .output()
        .expect("run wstest");
    assert!(
        out.status.success(),
        "wstest failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let index = std::fs::read_to_string(dir.join("reports/index.json")).expect("a report");
    let index: Value = serde_json::from_str(&index).expect("report JSON");
    let results = index["switchboard"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    results
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autobahn_fuzzingclient_finds_no_failure() {
    let Some(program) = wstest() else {
        assert!(
            std::env::var_os("SWITCHBOARD_REQUIRE_TOOLS").is_none(),
            "wstest (autobahntestsuite under Python 2.7) is required here"
        );
        eprintln!("skipped: wstest is not installed (pip install autobahntestsuite, Python 2.7)");
        return;
    };
    // The suite's largest messages are 16 MiB, and it sends faster than a
    // client should: the limits are raised, the code under test is not.
    let process = switchboard::standalone(&[
        "--conformance-echo-path",
        ECHO,
        "--max-message-size",
        "16777216",
        "--outbound-bytes",
        "67108864",
        "--rate-limit",
        "1000000",
        "--rate-burst",
        "1000000",
    ]);
    switchboard::wait_ready(process.addr("edge-admin")).await;
    let url = format!("ws://{}{ECHO}", process.addr("edge"));
    // 12.* and 13.* (permessage-deflate) in part, to keep the run short in
    // a debug build: the nine smallest sizes of 12.1, and every parameter
    // set of 13 with its two smallest sizes (docs/conformance.md).
    let mut cases: Vec<String> = [
        "1.*", "2.*", "3.*", "4.*", "5.*", "6.*", "7.*", "9.*", "10.*",
    ]
    .map(str::to_owned)
    .to_vec();
    cases.extend((1..=9).map(|size| format!("12.1.{size}")));
    cases.extend(["13.*.1".to_owned(), "13.*.2".to_owned()]);
    let results = tokio::time::timeout(
        Duration::from_secs(900),
        tokio::task::spawn_blocking(move || fuzzingclient(&program, &url, &cases)),
    )
    .await
    .expect("the suite finishes")
    .unwrap();
    // 1.* to 10.* but 8 (which has none) hold 301 cases, the deflate part
    // 23 more: the run cannot pass by running nothing.
    assert!(results.len() >= 320, "only {} cases ran", results.len());
    assert!(
        results.keys().any(|case| case.starts_with("13.7.")),
        "the deflate cases ran"
    );
    let mut failed = Vec::new();
    for (case, result) in &results {
        let behavior = result["behavior"].as_str().unwrap_or_default();
        let close = result["behaviorClose"].as_str().unwrap_or_default();
        let fine = ["OK", "NON-STRICT", "INFORMATIONAL"].contains(&behavior)
            && ["OK", "INFORMATIONAL"].contains(&close);
        if !fine {
            failed.push(format!("{case}: {behavior} / {close}"));
        }
    }
    assert!(failed.is_empty(), "Autobahn cases not passed: {failed:#?}");
}

/// The echo route exists only when configured, echoes binary as binary,
/// and every other route still refuses binary frames with 1003.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_echo_route_is_off_by_default_and_only_it_takes_binary() {
    let plain = switchboard::standalone(&[]);
    switchboard::wait_ready(plain.addr("edge-admin")).await;
    let answer = switchboard_testkit::http::get(plain.addr("edge"), ECHO, &[]).await;
    assert_eq!(answer.status, 404, "no echo route unless configured");

    let process = switchboard::standalone(&["--conformance-echo-path", ECHO]);
    switchboard::wait_ready(process.addr("edge-admin")).await;
    let mut ws =
        switchboard_testkit::WsClient::open(&format!("ws://{}{ECHO}", process.addr("edge"))).await;
    ws.send_text("hello").await;
    assert_eq!(ws.recv_text().await, "hello");
    ws.send_binary(&[0, 1, 2, 255]).await;
    assert_eq!(ws.recv_binary().await, vec![0, 1, 2, 255]);
    // Another route on the same edge still closes binary with 1003.
    let group = switchboard_testkit::dialects::Dialect::Group
        .open(process.addr("edge"), "binary")
        .await;
    let mut group = group;
    group.send_binary(b"\x00").await;
    assert_eq!(group.recv_close(Duration::from_secs(10)).await.0, 1003);
}

/// A client speaking raw frames, to send what libraries will not: a
/// compressed message that inflates far past the size limit.
mod raw {
    use std::net::SocketAddr;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    pub struct Raw {
        pub stream: TcpStream,
        pub extensions: Option<String>,
    }

    /// Upgrades `path`, offering `extensions` when given.
    pub async fn open(addr: SocketAddr, path: &str, extensions: Option<&str>) -> Raw {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let offer = extensions
            .map(|e| format!("Sec-WebSocket-Extensions: {e}\r\n"))
            .unwrap_or_default();
        let request = switchboard_testkit::ws::raw::upgrade_request_with(addr, path, &offer);
        stream.write_all(&request).await.unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            stream.read_exact(&mut byte).await.unwrap();
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).into_owned();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        let extensions = head
            .lines()
            .find(|l| {
                l.to_ascii_lowercase()
                    .starts_with("sec-websocket-extensions:")
            })
            .map(|l| {
                l.split_once(':')
                    .map(|(_, v)| v.trim().to_owned())
                    .unwrap_or_default()
            });
        Raw { stream, extensions }
    }

    impl Raw {
        /// Sends one masked frame; `rsv1` marks it compressed.
        pub async fn send(&mut self, opcode: u8, rsv1: bool, payload: &[u8]) {
            let first = 0x80 | opcode | if rsv1 { 0x40 } else { 0 };
            let frame = switchboard_testkit::ws::raw::frame(first, payload);
            self.stream.write_all(&frame).await.unwrap();
        }

        /// The next frame: (first byte, payload).
        pub async fn recv(&mut self) -> (u8, Vec<u8>) {
            let mut head = [0u8; 2];
            self.stream.read_exact(&mut head).await.unwrap();
            let len = match head[1] & 0x7f {
                126 => {
                    let mut n = [0u8; 2];
                    self.stream.read_exact(&mut n).await.unwrap();
                    u16::from_be_bytes(n) as usize
                }
                127 => {
                    let mut n = [0u8; 8];
                    self.stream.read_exact(&mut n).await.unwrap();
                    u64::from_be_bytes(n) as usize
                }
                n => n as usize,
            };
            let mut payload = vec![0u8; len];
            self.stream.read_exact(&mut payload).await.unwrap();
            (head[0], payload)
        }
    }
}

/// Raw deflate of one message, the 4-byte tail stripped (RFC 7692 7.2.1).
fn deflate(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(data).unwrap();
    let mut out = encoder.flush_finish().unwrap();
    if out.ends_with(&[0, 0, 0xff, 0xff]) {
        out.truncate(out.len() - 4);
    }
    out
}

fn inflate(data: &[u8]) -> Vec<u8> {
    use std::io::Read;
    let mut input = data.to_vec();
    input.extend_from_slice(&[0, 0, 0xff, 0xff]);
    let mut out = Vec::new();
    let mut decoder = flate2::read::DeflateDecoder::new(&input[..]);
    let _ = decoder.read_to_end(&mut out);
    out
}

/// permessage-deflate is agreed when offered (and only then, and not when
/// turned off); compressed messages are read and answered compressed; a
/// message that inflates past the size limit is 1009, never memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deflate_is_negotiated_and_a_bomb_is_1009() {
    let process = switchboard::standalone(&["--conformance-echo-path", ECHO]);
    switchboard::wait_ready(process.addr("edge-admin")).await;
    let addr = process.addr("edge");
    let plain = raw::open(addr, ECHO, None).await;
    assert_eq!(plain.extensions, None, "nothing offered, nothing agreed");
    let mut ws = raw::open(
        addr,
        ECHO,
        Some("permessage-deflate; client_max_window_bits"),
    )
    .await;
    assert_eq!(
        ws.extensions.as_deref(),
        Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover")
    );
    // A compressed message is read; a long answer comes back compressed,
    // a short one plain.
    let long = "deflate ".repeat(200);
    ws.send(0x1, true, &deflate(long.as_bytes())).await;
    let (first, payload) = ws.recv().await;
    assert_eq!(first, 0x80 | 0x40 | 0x1, "a compressed text frame");
    assert_eq!(inflate(&payload), long.as_bytes());
    ws.send(0x1, true, &deflate(b"hi")).await;
    let (first, payload) = ws.recv().await;
    assert_eq!(
        (first, payload.as_slice()),
        (0x81, &b"hi"[..]),
        "small goes plain"
    );
    // 10 MiB of zeros is a few KiB compressed; the limit is 64 KiB.
    let bomb = deflate(&vec![0u8; 10 << 20]);
    assert!(bomb.len() < 64 << 10);
    ws.send(0x1, true, &bomb).await;
    let (first, payload) = ws.recv().await;
    assert_eq!(first, 0x88, "a close frame");
    assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 1009);
    // RSV1 on a socket that did not agree to deflate is a protocol error.
    let mut plain = plain;
    plain.send(0x1, true, &deflate(b"hi")).await;
    let (first, payload) = plain.recv().await;
    assert_eq!(first, 0x88);
    assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 1002);

    let off = switchboard::standalone(&[
        "--conformance-echo-path",
        ECHO,
        "--permessage-deflate",
        "false",
    ]);
    switchboard::wait_ready(off.addr("edge-admin")).await;
    let declined = raw::open(off.addr("edge"), ECHO, Some("permessage-deflate")).await;
    assert_eq!(
        declined.extensions, None,
        "turned off, every offer is declined"
    );
}
