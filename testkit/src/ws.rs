//! A WebSocket client for tests, built on tokio-tungstenite so the server
//! is checked against an implementation other than its own.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long `recv_*` waits by default.
pub const RECV_TIMEOUT: Duration = Duration::from_secs(5);

/// An HTTP answer instead of an upgrade (status 0: connection refused).
#[derive(Debug)]
pub struct Refused {
    pub status: u16,
    pub body: Value,
}

/// What the server sent.
#[derive(Debug, PartialEq)]
pub enum Event {
    Text(String),
    Binary(Vec<u8>),
    Close(u16, String),
    /// The TCP connection ended without a close frame.
    Gone,
}

pub struct WsClient {
    stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl WsClient {
    /// Connects; an HTTP refusal comes back as `Err` with its JSON body.
    pub async fn connect(url: &str) -> Result<Self, Refused> {
        Self::connect_with_headers(url, &[]).await
    }

    /// [`WsClient::connect`] with extra request headers.
    pub async fn connect_with_headers(
        url: &str,
        headers: &[(&str, &str)],
    ) -> Result<Self, Refused> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut request = url.into_client_request().expect("a ws:// URL");
        for (name, value) in headers {
            let name = http::HeaderName::from_bytes(name.as_bytes()).expect("header name");
            request
                .headers_mut()
                .insert(name, value.parse().expect("header value"));
        }
        match tokio_tungstenite::connect_async(request).await {
            Ok((stream, _)) => Ok(Self { stream }),
            Err(tungstenite::Error::Http(response)) => {
                let status = response.status().as_u16();
                let body = response
                    .body()
                    .as_deref()
                    .and_then(|b| serde_json::from_slice(b).ok())
                    .unwrap_or(Value::Null);
                Err(Refused { status, body })
            }
            // Nothing listening (status 0): a stopped or draining server.
            Err(tungstenite::Error::Io(e)) => Err(Refused {
                status: 0,
                body: serde_json::json!({ "io": e.to_string() }),
            }),
            Err(e) => panic!("connect {url}: {e}"),
        }
    }

    /// Connects and panics on refusal.
    pub async fn open(url: &str) -> Self {
        match Self::connect(url).await {
            Ok(client) => client,
            Err(refused) => panic!("{url} refused: {refused:?}"),
        }
    }

    pub async fn send_text(&mut self, text: &str) {
        self.send(Message::text(text)).await;
    }

    pub async fn send_json(&mut self, value: &Value) {
        self.send_text(&value.to_string()).await;
    }

    pub async fn send_binary(&mut self, bytes: &[u8]) {
        self.send(Message::binary(bytes.to_vec())).await;
    }

    /// Sends one raw frame: `text` marks the first fragment of a text
    /// message, otherwise a continuation.
    pub async fn send_fragment(&mut self, bytes: &[u8], first: bool, fin: bool) {
        let opcode = if first {
            OpCode::Data(Data::Text)
        } else {
            OpCode::Data(Data::Continue)
        };
        self.send(Message::Frame(Frame::message(bytes.to_vec(), opcode, fin)))
            .await;
    }

    /// Sends a ping, which may go between the fragments of a message.
    pub async fn send_ping(&mut self, payload: &[u8]) {
        self.send(Message::Ping(payload.to_vec().into())).await;
    }

    /// The next pong, skipping data messages; `None` after `limit`.
    pub async fn recv_pong(&mut self, limit: Duration) -> Option<Vec<u8>> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match tokio::time::timeout_at(deadline, self.stream.next()).await {
                Ok(Some(Ok(Message::Pong(payload)))) => return Some(payload.to_vec()),
                Ok(Some(Ok(Message::Close(_)) | Err(_)) | None) | Err(_) => return None,
                Ok(Some(Ok(_))) => continue,
            }
        }
    }

    /// Sends raw bytes that claim to be a text frame, bypassing UTF-8 checks.
    pub async fn send_raw_text(&mut self, bytes: &[u8]) {
        self.send_fragment(bytes, true, true).await;
    }

    pub async fn close(&mut self) {
        let _ = self.stream.close(None).await;
    }

    /// Starts the closing handshake with `code` (any code, valid or not).
    pub async fn close_with(&mut self, code: u16) {
        use tokio_tungstenite::tungstenite::protocol::CloseFrame;
        let frame = CloseFrame {
            code: code.into(),
            reason: "".into(),
        };
        let _ = self.stream.close(Some(frame)).await;
    }

    async fn send(&mut self, message: Message) {
        self.stream.send(message).await.expect("send to server");
    }

    /// The next data or close event, skipping pings and pongs.
    pub async fn recv(&mut self, limit: Duration) -> Option<Event> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let next = tokio::time::timeout_at(deadline, self.stream.next())
                .await
                .ok()?;
            return Some(match next {
                Some(Ok(Message::Text(text))) => Event::Text(text.to_string()),
                Some(Ok(Message::Binary(bytes))) => Event::Binary(bytes.to_vec()),
                Some(Ok(Message::Close(frame))) => match frame {
                    Some(f) => Event::Close(f.code.into(), f.reason.to_string()),
                    None => Event::Close(1005, String::new()),
                },
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => Event::Gone,
            });
        }
    }

    /// The next message as JSON; panics on anything else.
    pub async fn recv_json(&mut self) -> Value {
        match self.recv(RECV_TIMEOUT).await {
            Some(Event::Text(text)) => serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("server sent non-JSON {text:?}: {e}")),
            other => panic!("expected a JSON message, got {other:?}"),
        }
    }

    /// The next message as text.
    pub async fn recv_text(&mut self) -> String {
        match self.recv(RECV_TIMEOUT).await {
            Some(Event::Text(text)) => text,
            other => panic!("expected a text message, got {other:?}"),
        }
    }

    /// The next message as binary.
    pub async fn recv_binary(&mut self) -> Vec<u8> {
        match self.recv(RECV_TIMEOUT).await {
            Some(Event::Binary(bytes)) => bytes,
            other => panic!("expected a binary message, got {other:?}"),
        }
    }

    /// Skips messages until one satisfies `wanted`; panics after the timeout.
    pub async fn recv_json_until(&mut self, wanted: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + RECV_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.recv(left).await {
                Some(Event::Text(text)) => {
                    let value: Value = serde_json::from_str(&text).expect("JSON");
                    if wanted(&value) {
                        return value;
                    }
                }
                other => panic!("expected a matching JSON message, got {other:?}"),
            }
        }
    }

    /// The first message that `skip` does not pass over. For proofs of
    /// absence: after what must not arrive, send a sentinel that must, on
    /// the same path, and assert this returns the sentinel.
    pub async fn recv_json_skipping(&mut self, skip: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + RECV_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.recv(left).await {
                Some(Event::Text(text)) => {
                    let value: Value = serde_json::from_str(&text)
                        .unwrap_or_else(|e| panic!("server sent non-JSON {text:?}: {e}"));
                    if !skip(&value) {
                        return value;
                    }
                }
                other => panic!("expected a JSON message, got {other:?}"),
            }
        }
    }

    /// The close code and reason the server sent; skips data messages.
    pub async fn recv_close(&mut self, limit: Duration) -> (u16, String) {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.recv(left).await {
                Some(Event::Close(code, reason)) => return (code, reason),
                Some(Event::Text(_) | Event::Binary(_)) => continue,
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
    }
}

/// Byte-level access to a socket, for tests of how the server splits what
/// arrives in one TCP segment.
pub mod raw {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    /// An upgrade request for `path_and_query`, written by hand.
    pub fn upgrade_request(addr: std::net::SocketAddr, path_and_query: &str) -> Vec<u8> {
        upgrade_request_with(addr, path_and_query, "")
    }

    /// [`upgrade_request`] with `extra` header lines (each ending in
    /// `\r\n`), such as an extension offer.
    pub fn upgrade_request_with(
        addr: std::net::SocketAddr,
        path_and_query: &str,
        extra: &str,
    ) -> Vec<u8> {
        format!(
            "GET {path_and_query} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
        )
        .into_bytes()
    }

    /// A final, masked client text frame.
    pub fn text_frame(payload: &[u8]) -> Vec<u8> {
        frame(0x81, payload)
    }

    /// A masked client frame whose first byte (FIN, RSV bits, opcode) is
    /// `first`, for frames a library will not send (RSV1 set, say).
    pub fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let mut out = vec![first];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n if n < 65_536 => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    /// A TCP connection written and read byte by byte.
    pub struct RawSocket {
        stream: TcpStream,
        /// Read and not yet parsed.
        seen: Vec<u8>,
        /// Whether the upgrade response has been read.
        upgraded: bool,
    }

    impl RawSocket {
        pub async fn connect(addr: std::net::SocketAddr) -> Self {
            Self {
                stream: TcpStream::connect(addr).await.expect("connect"),
                seen: Vec::new(),
                upgraded: false,
            }
        }

        /// Sends `bytes` in one write.
        pub async fn send(&mut self, bytes: &[u8]) {
            self.stream.write_all(bytes).await.expect("write");
        }

        /// The next `count` text frames, skipping control frames; the first
        /// call reads the upgrade response, which must be a 101. Panics
        /// after `limit`.
        pub async fn texts(&mut self, count: usize, limit: Duration) -> Vec<String> {
            let mut texts = Vec::new();
            let read = async {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    if !self.upgraded
                        && let Some(end) = self.seen.windows(4).position(|w| w == b"\r\n\r\n")
                    {
                        let head = String::from_utf8_lossy(&self.seen[..end]).into_owned();
                        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
                        self.seen.drain(..end + 4);
                        self.upgraded = true;
                    }
                    while self.upgraded && texts.len() < count {
                        let Some((opcode, payload, used)) = server_frame(&self.seen) else {
                            break;
                        };
                        if opcode == 0x1 {
                            texts.push(String::from_utf8(payload).expect("UTF-8 text"));
                        }
                        self.seen.drain(..used);
                    }
                    if texts.len() >= count {
                        return;
                    }
                    let n = self.stream.read(&mut buf).await.expect("read");
                    assert!(n > 0, "connection closed after {texts:?}");
                    self.seen.extend_from_slice(&buf[..n]);
                }
            };
            tokio::time::timeout(limit, read)
                .await
                .expect("text frames in time");
            texts
        }
    }

    /// One unmasked server frame at the start of `bytes`: opcode, payload
    /// and bytes used; `None` until it is complete.
    fn server_frame(bytes: &[u8]) -> Option<(u8, Vec<u8>, usize)> {
        let (&first, &second) = (bytes.first()?, bytes.get(1)?);
        let (len, head) = match second & 0x7f {
            126 => (
                usize::from(u16::from_be_bytes([*bytes.get(2)?, *bytes.get(3)?])),
                4,
            ),
            127 => (
                u64::from_be_bytes(bytes.get(2..10)?.try_into().ok()?) as usize,
                10,
            ),
            n => (usize::from(n), 2),
        };
        let payload = bytes.get(head..head + len)?;
        Some((first & 0x0f, payload.to_vec(), head + len))
    }
}
