//! A WebSocket client cheap enough for tens of thousands of sockets: a
//! hand-written upgrade request over one TCP connection (optionally from
//! a chosen local address), then fastwebsockets frames, split into a
//! reader and a writer that the reader shares for pongs.

use std::io::Cursor;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use fastwebsockets::{Frame, OpCode, Payload, Role, WebSocketError, WebSocketRead, WebSocketWrite};
use tokio::io::{AsyncReadExt, AsyncWriteExt, Chain};
use tokio::net::TcpSocket;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// Why a socket did not open.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect: {0}")]
    Io(#[from] std::io::Error),
    #[error("upgrade refused with HTTP {status}: {body}")]
    Refused { status: u16, body: String },
    #[error("not an HTTP answer: {0}")]
    BadResponse(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

impl ConnectError {
    /// The HTTP status of a refusal.
    pub fn status(&self) -> Option<u16> {
        match self {
            ConnectError::Refused { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// Where sockets go: a resolved address and the Host header to send.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub host: String,
}

impl Target {
    /// Parses `ws://host:port` (or `http://host:port`) and resolves it once.
    pub fn parse(url: &str) -> Result<Self, ConnectError> {
        let rest = url
            .strip_prefix("ws://")
            .or_else(|| url.strip_prefix("http://"))
            .ok_or_else(|| ConnectError::BadResponse(format!("`{url}` is not ws:// or http://")))?;
        let host = rest.split('/').next().unwrap_or_default().to_owned();
        let addr = host
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| ConnectError::BadResponse(format!("`{host}` resolves to nothing")))?;
        Ok(Self { addr, host })
    }
}

/// Spreads sockets over local source addresses 127.0.0.1 … 127.0.0.n, so
/// one destination port is not limited by one address's ephemeral ports.
#[derive(Debug, Clone, Copy)]
pub struct Sources {
    count: usize,
}

impl Sources {
    /// Ephemeral ports one source address offers one destination, with a
    /// margin (the default Linux range holds about 28,000).
    pub const PER_ADDRESS: usize = 20_000;

    /// `count` addresses, or (0) enough for `sockets` sockets.
    pub fn new(count: usize, sockets: usize) -> Self {
        let count = if count == 0 {
            sockets.div_ceil(Self::PER_ADDRESS).max(1)
        } else {
            count
        };
        Self {
            count: count.min(254),
        }
    }

    pub fn count(&self) -> usize {
        self.count
    }

    /// The local address socket `index` binds, or none when one suffices.
    pub fn pick(&self, index: usize, target: &Target) -> Option<IpAddr> {
        if self.count <= 1 || !target.addr.ip().is_loopback() {
            return None;
        }
        let host = 1 + (index % self.count) as u8;
        Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, host)))
    }
}

pub type Reader = WebSocketRead<Chain<Cursor<Vec<u8>>, OwnedReadHalf>>;
pub type Writer = Arc<tokio::sync::Mutex<WebSocketWrite<OwnedWriteHalf>>>;

/// The largest upgrade answer read (headers and a refusal's body).
const MAX_ANSWER: usize = 16 * 1024;

/// Opens a WebSocket to `target` at `path` (with its query).
pub async fn connect(
    target: &Target,
    path: &str,
    headers: &[(&str, &str)],
    source: Option<IpAddr>,
    limit: Duration,
) -> Result<(Reader, Writer), ConnectError> {
    connect_with(target, path, headers, source, limit, None).await
}

/// [`connect`], asking the kernel for a receive buffer of `recv_buffer`
/// bytes: a socket that never reads then leaves its backlog in the
/// server rather than in its own kernel.
pub async fn connect_with(
    target: &Target,
    path: &str,
    headers: &[(&str, &str)],
    source: Option<IpAddr>,
    limit: Duration,
    recv_buffer: Option<u32>,
) -> Result<(Reader, Writer), ConnectError> {
    tokio::time::timeout(limit, open(target, path, headers, source, recv_buffer))
        .await
        .map_err(|_| ConnectError::Timeout(limit))?
}

async fn open(
    target: &Target,
    path: &str,
    headers: &[(&str, &str)],
    source: Option<IpAddr>,
    recv_buffer: Option<u32>,
) -> Result<(Reader, Writer), ConnectError> {
    let socket = if target.addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(bytes) = recv_buffer {
        // Before connecting, so the window offered in the handshake is small.
        socket.set_recv_buffer_size(bytes)?;
    }
    if let Some(ip) = source {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    let mut stream = socket.connect(target.addr).await?;
    stream.set_nodelay(true)?;
    let mut request = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n",
        target.host
    );
    for (name, value) in headers {
        request.push_str(name);
        request.push_str(": ");
        request.push_str(value);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await?;

    let mut answer = Vec::with_capacity(512);
    let head_end = loop {
        if let Some(end) = find(&answer, b"\r\n\r\n") {
            break end + 4;
        }
        if answer.len() > MAX_ANSWER {
            return Err(ConnectError::BadResponse("headers too long".into()));
        }
        let mut chunk = [0u8; 1024];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(ConnectError::BadResponse("closed before answering".into()));
        }
        answer.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&answer[..head_end]).into_owned();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| ConnectError::BadResponse(head.lines().next().unwrap_or("").into()))?;
    if status != 101 {
        let body = read_body(&mut stream, &head, answer[head_end..].to_vec()).await;
        return Err(ConnectError::Refused { status, body });
    }
    // Frames the server sent right after its answer are already read.
    let early = answer.split_off(head_end);
    let (read, write) = stream.into_split();
    let (reader, writer) =
        fastwebsockets::after_handshake_split(Cursor::new(early).chain(read), write, Role::Client);
    Ok((reader, Arc::new(tokio::sync::Mutex::new(writer))))
}

/// A refusal's body, as far as `Content-Length` says and at most 16 KiB.
async fn read_body(stream: &mut tokio::net::TcpStream, head: &str, mut body: Vec<u8>) -> String {
    let length = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .unwrap_or(0)
        .min(MAX_ANSWER);
    while body.len() < length {
        let mut chunk = [0u8; 1024];
        match tokio::time::timeout(Duration::from_secs(2), stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => body.extend_from_slice(&chunk[..n]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&body).into_owned()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Sends one text frame.
pub async fn send_text(writer: &Writer, text: &str) -> Result<(), WebSocketError> {
    let mut w = writer.lock().await;
    w.write_frame(Frame::text(Payload::Owned(text.as_bytes().to_vec())))
        .await
}

/// Sends one frame as given: a fragment (`fin` false, or a
/// continuation), a binary frame, or text that is not UTF-8.
pub async fn send_frame(
    writer: &Writer,
    fin: bool,
    opcode: OpCode,
    bytes: Vec<u8>,
) -> Result<(), WebSocketError> {
    let mut w = writer.lock().await;
    w.write_frame(Frame::new(fin, opcode, None, Payload::Owned(bytes)))
        .await
}

/// Sends a close frame (errors ignored: the peer may be gone already).
pub async fn close(writer: &Writer) {
    let mut w = writer.lock().await;
    let _ = w.write_frame(Frame::close(1000, b"")).await;
}

/// What the reader saw next.
pub enum Incoming {
    Text(Vec<u8>),
    /// A close frame (its code) or the end of the connection (`None`).
    Closed(Option<u16>),
}

/// Reads until the next text frame or the end, answering pings.
pub async fn next_text(reader: &mut Reader, writer: &Writer) -> Incoming {
    loop {
        let pong_writer = writer.clone();
        let mut obligations = move |frame: Frame<'_>| {
            let writer = pong_writer.clone();
            let payload = frame.payload.to_vec();
            let opcode = frame.opcode;
            async move {
                let mut w = writer.lock().await;
                w.write_frame(Frame::new(true, opcode, None, Payload::Owned(payload)))
                    .await
            }
        };
        let frame = match reader.read_frame(&mut obligations).await {
            Ok(frame) => frame,
            Err(_) => return Incoming::Closed(None),
        };
        match frame.opcode {
            OpCode::Text | OpCode::Binary => return Incoming::Text(frame.payload.to_vec()),
            OpCode::Close => {
                let code = frame
                    .payload
                    .get(..2)
                    .map(|c| u16::from_be_bytes([c[0], c[1]]));
                return Incoming::Closed(code.or(Some(1005)));
            }
            _ => continue,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_and_resolve() {
        let t = Target::parse("ws://127.0.0.1:8080").unwrap();
        assert_eq!(t.addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(t.host, "127.0.0.1:8080");
        assert!(Target::parse("wss://x:1").is_err());
    }

    #[test]
    fn sources_cover_the_socket_count() {
        let t = Target::parse("ws://127.0.0.1:1").unwrap();
        assert_eq!(Sources::new(0, 15_000).count(), 1);
        assert_eq!(Sources::new(0, 15_000).pick(3, &t), None);
        let many = Sources::new(0, 45_000);
        assert_eq!(many.count(), 3);
        assert_eq!(many.pick(0, &t), Some("127.0.0.1".parse().unwrap()));
        assert_eq!(many.pick(4, &t), Some("127.0.0.2".parse().unwrap()));
        assert_eq!(Sources::new(1000, 1).count(), 254);
    }
}
