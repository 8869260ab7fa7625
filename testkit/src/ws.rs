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

    /// Sends raw bytes that claim to be a text frame, bypassing UTF-8 checks.
    pub async fn send_raw_text(&mut self, bytes: &[u8]) {
        self.send_fragment(bytes, true, true).await;
    }

    pub async fn close(&mut self) {
        let _ = self.stream.close(None).await;
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

    /// Asserts that nothing arrives for `quiet`.
    pub async fn expect_silence(&mut self, quiet: Duration) {
        if let Some(event) = self.recv(quiet).await {
            panic!("expected nothing, got {event:?}");
        }
    }
}
