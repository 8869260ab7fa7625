//! The bytes under a socket: the TCP stream taken back from hyper after
//! the upgrade, and the encoding of outgoing frames into one buffer per
//! write. Neither side keeps a buffer while the socket is idle.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use fastwebsockets::{Frame, OpCode, Payload};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;

/// The read side of an upgraded socket: what hyper had already read past
/// the upgrade request, then the stream.
pub struct SocketRead {
    prefix: Bytes,
    stream: OwnedReadHalf,
}

impl SocketRead {
    /// Waits until the socket is readable, holding no buffer while it
    /// waits. tokio clears readiness after a read that did not fill its
    /// buffer, which is how nearly every frame arrives; after one that did
    /// (or a spurious wake-up) the frame reader waits inside its read with
    /// a buffer until the peer next sends.
    pub async fn readable(&self) -> io::Result<()> {
        if self.prefix.has_remaining() {
            return Ok(());
        }
        self.stream.readable().await
    }
}

impl AsyncRead for SocketRead {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.prefix.has_remaining() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            if !self.prefix.has_remaining() {
                self.prefix = Bytes::new();
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

/// The TCP stream under an upgraded connection, split into halves that
/// need no lock between them. Edges serve plain TCP, so anything else is a
/// bug, reported as an error rather than a panic.
pub fn into_tcp(upgraded: Upgraded) -> io::Result<(SocketRead, tokio::net::tcp::OwnedWriteHalf)> {
    let parts = upgraded
        .downcast::<TokioIo<TcpStream>>()
        .map_err(|_| io::Error::other("upgraded connection is not a TCP stream"))?;
    let (read, write) = parts.io.into_inner().into_split();
    // hyper's read buffer (8 KiB or more) would stay allocated for as long
    // as any slice of it lives: keep a copy of what is left, usually nothing.
    let prefix = if parts.read_buf.is_empty() {
        Bytes::new()
    } else {
        Bytes::copy_from_slice(&parts.read_buf)
    };
    Ok((
        SocketRead {
            prefix,
            stream: read,
        },
        write,
    ))
}

/// Appends one unmasked, final frame (server to client) to `out`.
pub fn encode_frame(out: &mut Vec<u8>, opcode: OpCode, payload: &[u8]) {
    encode(
        out,
        Frame::new(true, opcode, None, Payload::Borrowed(payload)),
    );
}

/// Appends a data frame whose payload is compressed (RSV1 set, RFC 7692).
pub fn encode_compressed(out: &mut Vec<u8>, opcode: OpCode, payload: &[u8]) {
    let start = out.len();
    encode_frame(out, opcode, payload);
    if let Some(first) = out.get_mut(start) {
        *first |= 0x40;
    }
}

/// Appends a close frame with `code` and `reason`, cut to the 123 bytes a
/// close frame can carry.
pub fn encode_close(out: &mut Vec<u8>, code: u16, reason: &str) {
    let mut text = reason;
    if text.len() > 123 {
        let mut end = 123;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text = &text[..end];
    }
    encode(out, Frame::close(code, text.as_bytes()));
}

fn encode(out: &mut Vec<u8>, mut frame: Frame<'_>) {
    // Two bytes, plus eight for the longest length; servers never mask.
    let mut head = [0u8; 10];
    let len = frame.fmt_head(&mut head);
    out.reserve(len + frame.payload.len());
    out.extend_from_slice(&head[..len]);
    out.extend_from_slice(&frame.payload);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_frame() {
        let mut out = Vec::new();
        encode_frame(&mut out, OpCode::Text, b"hi");
        assert_eq!(out, [0x81, 2, b'h', b'i']);
    }

    #[test]
    fn lengths_use_the_extended_fields() {
        let mut out = Vec::new();
        encode_frame(&mut out, OpCode::Text, &[b'a'; 300]);
        assert_eq!(&out[..4], &[0x81, 126, 1, 44]);
        assert_eq!(out.len(), 4 + 300);
        out.clear();
        encode_frame(&mut out, OpCode::Text, &vec![b'a'; 70_000]);
        assert_eq!(&out[..2], &[0x81, 127]);
        assert_eq!(u64::from_be_bytes(out[2..10].try_into().unwrap()), 70_000);
    }

    #[test]
    fn frames_append() {
        let mut out = Vec::new();
        encode_frame(&mut out, OpCode::Ping, b"");
        encode_frame(&mut out, OpCode::Pong, b"x");
        assert_eq!(out, [0x89, 0, 0x8a, 1, b'x']);
    }

    #[test]
    fn close_reason_is_cut_on_a_char_boundary() {
        let mut out = Vec::new();
        let reason = "é".repeat(100); // 200 bytes
        encode_close(&mut out, 1001, &reason);
        let payload = &out[2..];
        assert_eq!(out[0], 0x88);
        assert_eq!(usize::from(out[1]), payload.len());
        assert_eq!(&payload[..2], &1001u16.to_be_bytes());
        assert_eq!(payload.len() - 2, 122, "61 two-byte chars fit in 123");
        assert!(std::str::from_utf8(&payload[2..]).is_ok());
    }
}
