//! A WebSocket client cheap enough for tens of thousands of sockets: a
//! hand-written upgrade request over one TCP connection (optionally from
//! a chosen local address), then fastwebsockets frames, split into a
//! reader and a writer that the reader shares for pongs. It can offer
//! permessage-deflate ([`crate::deflate`]) and inflate what it receives,
//! counting each message's bytes on the wire.

use std::io::Cursor;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use fastwebsockets::{Frame, OpCode, Payload, Role, WebSocketError, WebSocketRead, WebSocketWrite};
use tokio::io::{AsyncReadExt, AsyncWriteExt, Chain};
use tokio::net::TcpSocket;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use crate::deflate::{self, Agreement, AnswerError, Inflater};

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
    /// The upgrade's `Sec-WebSocket-Extensions` answer cannot be taken.
    #[error("extension answer refused: {0}")]
    Extension(#[from] AnswerError),
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

/// How a socket is opened, beside where to.
#[derive(Debug, Clone, Copy, Default)]
pub struct Setup {
    /// Kernel receive buffer to ask for before connecting.
    pub recv_buffer: Option<u32>,
    /// Offer permessage-deflate ([`deflate::OFFER`]).
    pub compression: bool,
}

/// An open socket and what its upgrade agreed to.
pub struct Socket {
    pub reader: Reader,
    pub writer: Writer,
    /// permessage-deflate, when it was offered and the server took it.
    pub deflate: Option<Agreement>,
}

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
    let setup = Setup {
        recv_buffer,
        compression: false,
    };
    let socket = connect_socket(target, path, headers, source, limit, setup).await?;
    Ok((socket.reader, socket.writer))
}

/// Opens a WebSocket as `setup` says, within `limit`.
pub async fn connect_socket(
    target: &Target,
    path: &str,
    headers: &[(&str, &str)],
    source: Option<IpAddr>,
    limit: Duration,
    setup: Setup,
) -> Result<Socket, ConnectError> {
    tokio::time::timeout(limit, open(target, path, headers, source, setup))
        .await
        .map_err(|_| ConnectError::Timeout(limit))?
}

async fn open(
    target: &Target,
    path: &str,
    headers: &[(&str, &str)],
    source: Option<IpAddr>,
    setup: Setup,
) -> Result<Socket, ConnectError> {
    let socket = if target.addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(bytes) = setup.recv_buffer {
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
    if setup.compression {
        request.push_str("Sec-WebSocket-Extensions: ");
        request.push_str(deflate::OFFER);
        request.push_str("\r\n");
    }
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
    let deflate = extensions_agreed(&head, setup.compression)?;
    // Frames the server sent right after its answer are already read.
    let early = answer.split_off(head_end);
    let (read, write) = stream.into_split();
    let (mut reader, writer) =
        fastwebsockets::after_handshake_split(Cursor::new(early).chain(read), write, Role::Client);
    // RSV1 marks a compressed message once permessage-deflate is agreed;
    // without it a frame carrying the bit fails the socket.
    reader.set_allow_rsv1(deflate.is_some());
    Ok(Socket {
        reader,
        writer: Arc::new(tokio::sync::Mutex::new(writer)),
        deflate,
    })
}

/// What the `Sec-WebSocket-Extensions` lines of an upgrade answer agree
/// to; any extension answered to a request that offered none is refused.
fn extensions_agreed(head: &str, offered: bool) -> Result<Option<Agreement>, ConnectError> {
    let values: Vec<&str> = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .filter(|(name, _)| name.trim().eq_ignore_ascii_case("sec-websocket-extensions"))
        .map(|(_, value)| value.trim())
        .collect();
    if !offered {
        if let Some(value) = values.iter().find(|v| !v.is_empty()) {
            return Err(AnswerError::NotOffered((*value).to_owned()).into());
        }
        return Ok(None);
    }
    Ok(deflate::read_answer(values)?)
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
    close_with(writer, 1000).await;
}

/// Sends a close frame with `code` (errors ignored).
pub async fn close_with(writer: &Writer, code: u16) {
    let mut w = writer.lock().await;
    let _ = w.write_frame(Frame::close(code, b"")).await;
}

/// What the reader saw next.
pub enum Incoming {
    Text(Vec<u8>),
    /// A close frame (its code) or the end of the connection (`None`).
    Closed(Option<u16>),
}

/// Reads until the next data message or the end, answering pings.
pub async fn next_text(reader: &mut Reader, writer: &Writer) -> Incoming {
    match next_message(reader, writer, None).await {
        Received::Message(message) => Incoming::Text(message.data),
        Received::Closed(code) => Incoming::Closed(code),
        Received::Failed { .. } => Incoming::Closed(None),
    }
}

/// One data message as received.
#[derive(Debug)]
pub struct Message {
    /// Its payload, inflated when it came compressed.
    pub data: Vec<u8>,
    /// What its frames took on the wire, before inflating: each payload
    /// as read and its header ([`frame_bytes`]).
    pub wire_bytes: u64,
    /// Whether it came compressed (RSV1 on its first frame).
    pub compressed: bool,
}

/// What [`next_message`] saw next.
#[derive(Debug)]
pub enum Received {
    Message(Message),
    /// A close frame (its code) or the end of the connection (`None`).
    Closed(Option<u16>),
    /// The server broke the protocol: the socket must be failed with
    /// this close code (1002, or 1007 for data that does not inflate).
    Failed {
        code: u16,
        why: String,
    },
}

/// Reads until the next whole data message (fragments joined, inflated
/// by `inflater` when compressed) or the end, answering pings.
pub async fn next_message(
    reader: &mut Reader,
    writer: &Writer,
    mut inflater: Option<&mut Inflater>,
) -> Received {
    // A fragmented message so far: its bytes and whether it is compressed.
    let mut partial: Option<(Vec<u8>, bool)> = None;
    let mut wire_bytes = 0u64;
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
            Err(_) => return Received::Closed(None),
        };
        match frame.opcode {
            OpCode::Text | OpCode::Binary | OpCode::Continuation => {}
            _ if frame.rsv1 => return protocol("RSV1 on a control frame"),
            OpCode::Close => {
                let code = frame
                    .payload
                    .get(..2)
                    .map(|c| u16::from_be_bytes([c[0], c[1]]));
                return Received::Closed(code.or(Some(1005)));
            }
            _ => continue,
        }
        wire_bytes += frame_bytes(frame.payload.len());
        let (mut data, compressed) = match (frame.opcode, partial.take()) {
            (OpCode::Continuation, None) => {
                return protocol("a continuation frame outside a message");
            }
            (OpCode::Continuation, Some(_)) if frame.rsv1 => {
                return protocol("RSV1 on a continuation frame");
            }
            (OpCode::Continuation, Some((mut data, compressed))) => {
                if data.len() + frame.payload.len() > deflate::MAX_INFLATED {
                    return protocol("fragmented message too large");
                }
                data.extend_from_slice(&frame.payload);
                (data, compressed)
            }
            (_, Some(_)) => {
                return protocol("a new message inside a fragmented one");
            }
            (_, None) => (frame.payload.to_vec(), frame.rsv1),
        };
        if !frame.fin {
            partial = Some((data, compressed));
            continue;
        }
        if compressed {
            let Some(inflater) = inflater.as_deref_mut() else {
                return protocol("a compressed message without deflate agreed");
            };
            data = match inflater.inflate(&data, deflate::MAX_INFLATED) {
                Ok(inflated) => inflated,
                Err(e) => {
                    return Received::Failed {
                        code: 1007,
                        why: e.to_string(),
                    };
                }
            };
        }
        return Received::Message(Message {
            data,
            wire_bytes,
            compressed,
        });
    }
}

fn protocol(why: &str) -> Received {
    Received::Failed {
        code: 1002,
        why: why.to_owned(),
    }
}

/// Bytes a server's (unmasked) frame with `payload` bytes takes on the
/// wire: the shortest header for its length, then the payload.
pub fn frame_bytes(payload: usize) -> u64 {
    let length = match payload {
        0..=125 => 0,
        126..=65_535 => 2,
        _ => 8,
    };
    (2 + length + payload) as u64
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
    fn extension_answers_are_read_from_the_upgrade_head() {
        let head = "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\
                    sec-websocket-extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover\r\n\r\n";
        let agreed = extensions_agreed(head, true).unwrap().expect("agreed");
        assert!(agreed.server_no_context_takeover);
        // An answer to a request that offered nothing fails the socket.
        assert!(matches!(
            extensions_agreed(head, false),
            Err(ConnectError::Extension(AnswerError::NotOffered(_)))
        ));
        let declined = "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\n";
        assert_eq!(extensions_agreed(declined, true).unwrap(), None);
        assert_eq!(extensions_agreed(declined, false).unwrap(), None);
        let other = "HTTP/1.1 101 OK\r\nSec-WebSocket-Extensions: x-webkit-deflate-frame\r\n\r\n";
        assert!(extensions_agreed(other, true).is_err());
    }

    #[test]
    fn frame_sizes_follow_the_shortest_header() {
        assert_eq!(frame_bytes(0), 2);
        assert_eq!(frame_bytes(125), 127);
        assert_eq!(frame_bytes(126), 130);
        assert_eq!(frame_bytes(65_535), 65_539);
        assert_eq!(frame_bytes(65_536), 65_546);
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
