//! One socket: a reader (this task) and a single writer task fed by the
//! socket's bounded queue. The reader enforces the frame limits, reassembles
//! fragments with a byte cap, applies the rate limit and hands each message
//! to the socket's dialect; the writer batches frames, pings, watches for
//! silence, and sends the one close frame.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use fastwebsockets::{Frame, OpCode, Payload, Role, WebSocketError, WebSocketRead};
use hyper::upgrade::Upgraded;
use switchboard_common::clock::now_ms;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;

use crate::dialect::{Action, Dialect, DialectSession};
use crate::limits::{Limits, OverLimit, TokenBucket, UnauthenticatedSockets};
use crate::outbound::{ConnHandle, Outbound, Registry};
use crate::socket_io::{self, SocketRead, encode_close, encode_compressed, encode_frame};
use crate::upstream::Upstream;

type Reader<'a> = WebSocketRead<&'a mut SocketRead>;

/// What every socket of an edge shares.
pub struct SocketEnv {
    pub limits: Limits,
    pub upstream: Arc<Upstream>,
    pub registry: Arc<Registry>,
    pub draining: tokio_util::sync::CancellationToken,
    /// The cap on sockets that have yet to authenticate.
    pub unauthenticated: UnauthenticatedSockets,
}

/// A socket that passed its dialect's checks, ready to run.
pub struct Accepted {
    pub conn_id: u64,
    pub dialect: &'static dyn Dialect,
    pub session: Box<dyn DialectSession>,
    pub tenant: String,
    pub principal: String,
    /// Close with this code and reason right after the upgrade, before the
    /// dialect sees anything (the unauthenticated-socket cap).
    pub close_at_once: Option<(u16, &'static str)>,
    /// What permessage-deflate agreed, if the client offered it.
    pub deflate: Option<crate::deflate::Deflate>,
}

/// Runs an upgraded socket to its end.
///
/// What a socket holds while idle is what an edge's memory per socket is
/// made of, so the futures that only run per message are boxed (the task
/// is allocated at the size of its largest state) and neither direction
/// keeps a buffer between messages.
pub async fn run(env: Arc<SocketEnv>, io: Upgraded, accepted: Accepted) {
    let Accepted {
        conn_id,
        dialect,
        mut session,
        tenant,
        principal,
        close_at_once,
        deflate,
    } = accepted;
    let (mut raw_read, raw_write) = match socket_io::into_tcp(io) {
        Ok(halves) => halves,
        Err(error) => {
            tracing::error!(%error, "socket dropped");
            return;
        }
    };
    // Frames are written by the writer task straight to the stream, so the
    // crate's write half is not used.
    let (mut reader, _) =
        fastwebsockets::after_handshake_split(&mut raw_read, tokio::io::sink(), Role::Server);
    configure(&mut reader, env.limits.max_message);
    // RSV1 marks a compressed message, once permessage-deflate is agreed.
    reader.set_allow_rsv1(deflate.is_some());

    let mut handle = ConnHandle::new(
        conn_id,
        dialect,
        tenant,
        principal,
        env.limits.outbound_messages,
        env.limits.outbound_bytes,
    );
    handle.deflate = deflate;
    let handle = Arc::new(handle);
    env.registry.insert(handle.clone());
    let label = dialect.label();
    metrics::gauge!("switchboard_edge_connections", "dialect" => label).increment(1.0);
    metrics::counter!("switchboard_edge_connections_opened_total", "dialect" => label).increment(1);
    tracing::debug!(conn_id, dialect = label, tenant = %handle.tenant, principal = %handle.principal, "socket open");

    let last_seen = Arc::new(AtomicU64::new(now_ms()));
    let writer_task = tokio::spawn(write_loop(
        raw_write,
        handle.clone(),
        env.limits.clone(),
        last_seen.clone(),
    ));
    if env.draining.is_cancelled() {
        handle.close(1001, "server shutting down", false);
    } else if let Some((code, reason)) = close_at_once {
        handle.close(code, reason, false);
    } else {
        let actions = session.open();
        Box::pin(execute(&env, &handle, session.as_mut(), actions)).await;
    }
    read_loop(&env, &handle, session.as_mut(), &mut reader, &last_seen).await;
    // What the session holds (a slot under the unauthenticated cap, say)
    // is freed as soon as the socket stops reading.
    drop(session);
    if handle.close_reason().is_none() {
        // The peer vanished without a close frame: just stop the writer.
        handle.kill.cancel();
    }
    let _ = writer_task.await;
    drop(reader);
    Box::pin(drain_input(&mut raw_read)).await;

    env.registry.remove(conn_id);
    Box::pin(env.upstream.closed(&handle)).await;
    let code = handle.close_reason().map_or(1006, |r| r.code);
    metrics::gauge!("switchboard_edge_connections", "dialect" => label).decrement(1.0);
    let code_label = crate::metrics::close_code_label(code);
    metrics::counter!("switchboard_edge_closes_total", "code" => code_label).increment(1);
    tracing::debug!(conn_id, code, "socket closed");
}

/// Reads and discards what the peer still sends after our close frame, so
/// unread input does not turn the close into a TCP reset that would destroy
/// the close frame before the peer reads it.
async fn drain_input<R: AsyncRead + Unpin>(read: &mut R) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    // On the heap: a buffer in the future would be part of every socket's
    // task, idle or not.
    let mut buf = vec![0u8; 4096];
    loop {
        let idle = tokio::time::Instant::now() + Duration::from_millis(200);
        match tokio::time::timeout_at(idle.min(deadline), read.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => continue,
            _ => return,
        }
    }
}

async fn execute(
    env: &SocketEnv,
    handle: &ConnHandle,
    session: &mut dyn DialectSession,
    actions: Vec<Action>,
) {
    let mut queue = std::collections::VecDeque::from(actions);
    while let Some(action) = queue.pop_front() {
        let sent = match action {
            Action::Reply(frame) => {
                handle.push(frame);
                Ok(())
            }
            Action::ReplyBinary(frame) => {
                handle.push_binary(frame);
                Ok(())
            }
            Action::Subscribe { topic, member } => {
                env.upstream.subscribe(handle, topic, member).await
            }
            Action::SubscribeConfirmed {
                topic,
                on_confirmed,
            } => {
                env.upstream
                    .subscribe_confirmed(handle, topic, on_confirmed)
                    .await;
                Ok(())
            }
            Action::SubscribeRecovering {
                topic,
                member,
                since,
                answer,
            } => {
                // Held before the subscription goes out, so no live
                // delivery it brings overtakes the replay.
                handle.positions().hold(&topic);
                let subscribed = env.upstream.subscribe(handle, topic.clone(), member).await;
                start_recovery(env, handle, topic, since, answer);
                subscribed
            }
            Action::Recover {
                topic,
                since,
                answer,
            } => {
                handle.positions().hold(&topic);
                start_recovery(env, handle, topic, since, answer);
                Ok(())
            }
            Action::Unsubscribe { topic } => env.upstream.unsubscribe(handle, &topic).await,
            // A refresh of presence is best effort: the next one (or the
            // subscription moving to a new owner) makes up for it, and the
            // message that came with it must still go out.
            Action::Touch { topic } => {
                if env.upstream.touch(handle, topic).await.is_err() {
                    metrics::counter!("switchboard_edge_presence_touches_lost_total").increment(1);
                }
                Ok(())
            }
            Action::Publish { topic, payload } => {
                env.upstream.publish(handle, topic, payload).await
            }
            Action::Request {
                topic,
                body,
                on_response,
            } => {
                env.upstream.request(handle, topic, body, on_response).await;
                Ok(())
            }
            Action::Await { topic, body, token } => {
                let response = env.upstream.call(handle.id, topic, body).await;
                let next = session.on_response(token, response);
                // What the answer leads to runs before the rest of this batch.
                for action in next.into_iter().rev() {
                    queue.push_front(action);
                }
                Ok(())
            }
            Action::Close { code, reason } => {
                handle.close(code, &reason, true);
                return;
            }
            Action::CloseAfter {
                after,
                code,
                reason,
                unless,
            } => {
                if let Some(handle) = env.registry.get(handle.id) {
                    tokio::spawn(close_after(handle, after, code, reason, unless));
                }
                Ok(())
            }
        };
        if sent.is_err() {
            // The rest of this batch (a success reply, say) must not follow.
            handle.push(session.unavailable());
            return;
        }
    }
}

/// Closes `handle` with `code` after `after` unless `unless` fires first.
/// Starts recovering `handle` on `topic` from `since` (the topic is held
/// already), if the socket is still registered.
fn start_recovery(
    env: &SocketEnv,
    handle: &ConnHandle,
    topic: switchboard_proto::Topic,
    since: switchboard_proto::Position,
    answer: crate::dialect::RecoveryMapper,
) {
    if let Some(conn) = env.registry.get(handle.id) {
        tokio::spawn(crate::recovery::recover(
            env.upstream.clone(),
            conn,
            topic,
            since,
            answer,
        ));
    }
}

async fn close_after(
    handle: Arc<ConnHandle>,
    after: Duration,
    code: u16,
    reason: &'static str,
    unless: tokio_util::sync::CancellationToken,
) {
    tokio::select! {
        biased;
        () = unless.cancelled() => {}
        () = handle.kill.cancelled() => {}
        () = tokio::time::sleep(after) => {
            if !unless.is_cancelled() {
                handle.close(code, reason, false);
            }
        }
    }
}

/// The reason sent with a close: a message over the limit is told the
/// limit and the flag that sets it (at most 123 bytes, as a reason must).
fn said(code: u16, reason: &str, max_message: usize) -> String {
    if code == 1009 {
        format!("message over {max_message} bytes (the edge's --max-message-size)")
    } else {
        reason.to_owned()
    }
}

/// Why the reader stopped, as a close code for the peer.
pub(crate) fn close_for(error: &WebSocketError) -> Option<(u16, &'static str)> {
    match error {
        WebSocketError::FrameTooLarge => Some((1009, "message too big")),
        WebSocketError::InvalidUTF8 => Some((1007, "invalid UTF-8")),
        WebSocketError::UnexpectedEOF
        | WebSocketError::IoError(_)
        | WebSocketError::ConnectionClosed => None,
        _ => Some((1002, "protocol error")),
    }
}

/// Largest payload of a control frame (RFC 6455 5.5).
const MAX_CONTROL_PAYLOAD: usize = 125;

/// The code and reason that answer a client's close frame (RFC 6455 5.5.1,
/// 7.4): its own code when the frame is well formed, 1002 for a malformed
/// frame or a code no endpoint may send, 1007 for a reason that is not
/// UTF-8.
fn answer_to_close(payload: &[u8]) -> (u16, &'static str) {
    if payload.len() > MAX_CONTROL_PAYLOAD {
        return (1002, "control frame over 125 bytes");
    }
    let Some((code, reason)) = payload.split_first_chunk::<2>() else {
        return match payload.len() {
            0 => (1000, ""),
            _ => (1002, "close frame of one byte"),
        };
    };
    let code = u16::from_be_bytes(*code);
    if std::str::from_utf8(reason).is_err() {
        return (1007, "close reason is not UTF-8");
    }
    // Codes defined for use on the wire, and those for applications and
    // libraries; 1004-1006, 1015 and unassigned ranges are refused.
    match code {
        1000..=1003 | 1007..=1014 | 3000..=4999 => (code, ""),
        _ => (1002, "invalid close code"),
    }
}

async fn read_loop(
    env: &SocketEnv,
    handle: &ConnHandle,
    session: &mut dyn DialectSession,
    reader: &mut Reader<'_>,
    last_seen: &AtomicU64,
) {
    let limits = &env.limits;
    let mut reassembly =
        Reassembly::new(limits.max_message).taking_binary(session.accepts_binary());
    let mut bucket = TokenBucket::new(limits.rate_per_sec, limits.rate_burst);
    let mut over_limit = OverLimit::default();
    let mut no_obligations = |_: Frame<'_>| async { Ok::<(), std::convert::Infallible>(()) };
    // Looked up once: a labelled lookup per message costs a hash and a lock.
    let messages_in = metrics::counter!("switchboard_edge_messages_in_total", "dialect" => handle.dialect.label());
    loop {
        // Waiting for input holds no read buffer; one is allocated for the
        // read and freed again once its frames are taken.
        if reader.buffered() == 0 {
            let readable = tokio::select! {
                biased;
                () = handle.kill.cancelled() => return,
                readable = reader.get_ref().readable() => readable,
            };
            if readable.is_err() {
                return;
            }
        }
        // `read_frame` is not cancel-safe, so it is only ever dropped here,
        // when the socket is closing and this stream is never read again.
        let frame = tokio::select! {
            biased;
            () = handle.kill.cancelled() => return,
            frame = reader.read_frame(&mut no_obligations) => frame,
        };
        let frame = match frame {
            Ok(frame) => frame,
            Err(error) => {
                if let Some((code, reason)) = close_for(&error) {
                    handle.close(code, &said(code, reason, limits.max_message), false);
                }
                return;
            }
        };
        last_seen.store(now_ms(), Ordering::Relaxed);
        let (message, binary, compressed) = match reassembly.push(frame) {
            Step::Message(message) => (message, false, false),
            Step::Binary(message) => (message, true, false),
            Step::Compressed { message, binary } => (message, binary, true),
            Step::More => continue,
            Step::Ping(payload) => {
                handle.pong(payload);
                continue;
            }
            Step::Close(code, reason) => {
                return handle.close(code, &said(code, reason, limits.max_message), false);
            }
        };
        // Inflated under the same size limit as any message: a small
        // compressed message never becomes a large allocation.
        let message = if compressed {
            match crate::deflate::decompress(&message, limits.max_message) {
                Ok(message) => message,
                Err(crate::deflate::InflateError::TooBig) => {
                    let reason = said(1009, "", limits.max_message);
                    return handle.close(1009, &reason, false);
                }
                Err(crate::deflate::InflateError::Invalid) => {
                    return handle.close(1007, "invalid compressed data", false);
                }
            }
        } else {
            message
        };
        let text = match binary {
            true => None,
            false => match std::str::from_utf8(&message) {
                Ok(text) => Some(text),
                Err(_) => return handle.close(1007, "invalid UTF-8", false),
            },
        };
        messages_in.increment(1);
        let now = Instant::now();
        if !bucket.take(now) {
            metrics::counter!("switchboard_edge_rate_limited_total").increment(1);
            if over_limit.refused(now, limits.rate_grace) {
                return handle.close(1008, "rate limit exceeded", false);
            }
            handle.push(session.rate_limited());
            continue;
        }
        let Some(text) = text else {
            let actions = session.on_binary(message);
            Box::pin(execute(env, handle, session, actions)).await;
            continue;
        };
        // Each further request in the message (a batch's calls) is charged
        // too; those past the limit get the dialect's rate-limit answer.
        let mut charge = || {
            let taken = bucket.take(Instant::now());
            if !taken {
                metrics::counter!("switchboard_edge_rate_limited_total").increment(1);
            }
            taken
        };
        let actions = session.on_text_charged(text, &mut charge);
        Box::pin(execute(env, handle, session, actions)).await;
    }
}

/// The reader settings every socket uses; [`crate::fuzzing`] reads frames
/// with the same ones.
pub(crate) fn configure<S>(reader: &mut WebSocketRead<S>, max_message: usize) {
    // Control frames are answered by the writer, so nothing is sent from
    // inside `read_frame`.
    reader.set_auto_close(false);
    reader.set_auto_pong(false);
    reader.set_release_buffer_when_empty(true);
    // fastwebsockets refuses a frame whose length is >= this value.
    reader.set_max_message_size(max_message + 1);
}

/// What one frame means for the message being read.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// A whole text message, not yet checked to be UTF-8.
    Message(Bytes),
    /// A whole binary message (only when binary messages are taken).
    Binary(Bytes),
    /// A whole message sent compressed (RSV1, permessage-deflate), still
    /// to be inflated.
    Compressed { message: Bytes, binary: bool },
    /// A fragment (or a pong): read on.
    More,
    /// Answer with a pong carrying this payload.
    Ping(Bytes),
    /// Close the socket with this code and reason.
    Close(u16, &'static str),
}

/// Reassembles fragmented messages with a cap on their total size
/// (fastwebsockets caps each frame, not a message), and answers control
/// frames. Holds no socket, so it can be tested on frames alone.
pub struct Reassembly {
    /// The message being reassembled: its bytes, whether it is binary,
    /// whether it is compressed.
    fragments: Option<(BytesMut, bool, bool)>,
    max_message: usize,
    binary: bool,
}

impl Reassembly {
    /// Text messages only: a binary frame closes with 1003.
    pub fn new(max_message: usize) -> Self {
        Self {
            fragments: None,
            max_message,
            binary: false,
        }
    }

    /// Whether binary messages are taken (the conformance echo route).
    pub fn taking_binary(mut self, binary: bool) -> Self {
        self.binary = binary;
        self
    }

    /// Takes the next frame read from the socket.
    pub fn push(&mut self, frame: Frame<'_>) -> Step {
        // RSV1 belongs on the first frame of a data message only (RFC 7692
        // 6); the reader lets it through only once deflate is agreed.
        if frame.rsv1 && !matches!(frame.opcode, OpCode::Text | OpCode::Binary) {
            return Step::Close(1002, "RSV1 on a frame that cannot carry it");
        }
        match frame.opcode {
            OpCode::Text | OpCode::Binary if self.fragments.is_some() => {
                Step::Close(1002, "new message inside a fragmented one")
            }
            OpCode::Binary if !self.binary => Step::Close(1003, "binary frames are not supported"),
            OpCode::Text | OpCode::Binary if frame.fin => {
                let binary = frame.opcode == OpCode::Binary;
                whole(into_bytes(frame.payload), binary, frame.rsv1)
            }
            OpCode::Text | OpCode::Binary => {
                let binary = frame.opcode == OpCode::Binary;
                self.fragments = Some((BytesMut::from(&frame.payload[..]), binary, frame.rsv1));
                Step::More
            }
            OpCode::Continuation => {
                let Some((buffer, _, _)) = self.fragments.as_mut() else {
                    return Step::Close(1002, "continuation without a message");
                };
                if buffer.len() + frame.payload.len() > self.max_message {
                    return Step::Close(1009, "message too big");
                }
                buffer.extend_from_slice(&frame.payload);
                if !frame.fin {
                    return Step::More;
                }
                match self.fragments.take() {
                    Some((buffer, binary, compressed)) => {
                        whole(buffer.freeze(), binary, compressed)
                    }
                    None => Step::More,
                }
            }
            OpCode::Close => {
                let (code, reason) = answer_to_close(&frame.payload);
                Step::Close(code, reason)
            }
            OpCode::Ping => Step::Ping(Bytes::from(frame.payload.to_vec())),
            OpCode::Pong if frame.payload.len() > MAX_CONTROL_PAYLOAD => {
                Step::Close(1002, "control frame over 125 bytes")
            }
            OpCode::Pong => Step::More,
        }
    }
}

/// The step for a complete message.
fn whole(message: Bytes, binary: bool, compressed: bool) -> Step {
    match (compressed, binary) {
        (true, binary) => Step::Compressed { message, binary },
        (false, true) => Step::Binary(message),
        (false, false) => Step::Message(message),
    }
}

/// The payload as `Bytes`, without a copy when it already owns its buffer.
fn into_bytes(payload: Payload<'_>) -> Bytes {
    match payload {
        Payload::Bytes(bytes) => bytes.freeze(),
        other => Bytes::copy_from_slice(&other),
    }
}

/// Appends a data message, compressed when the socket agreed to deflate
/// and the message is not too small to gain from it.
fn encode_data(out: &mut Vec<u8>, handle: &ConnHandle, opcode: OpCode, payload: &[u8]) {
    match handle.deflate {
        Some(deflate) if deflate.compresses(payload.len()) => {
            encode_compressed(out, opcode, &crate::deflate::compress(payload, deflate));
        }
        _ => encode_frame(out, opcode, payload),
    }
}

/// Appends a queued message to the batch being written.
fn encode_one(out: &mut Vec<u8>, handle: &ConnHandle, message: Outbound) {
    match message {
        Outbound::Text(bytes) => {
            encode_data(out, handle, OpCode::Text, &bytes);
            handle.written(bytes.len());
        }
        Outbound::Binary(bytes) => {
            encode_data(out, handle, OpCode::Binary, &bytes);
            handle.written(bytes.len());
        }
        Outbound::CompressedText(bytes) => {
            encode_compressed(out, OpCode::Text, &bytes);
            handle.written(bytes.len());
        }
        Outbound::Pong(bytes) => encode_frame(out, OpCode::Pong, &bytes),
    }
}

/// Writes `out`; false when the socket failed or when, once it must close,
/// a peer that stopped reading has not taken the write within `grace`.
async fn write_out(
    stream: &mut OwnedWriteHalf,
    out: &[u8],
    handle: &ConnHandle,
    grace: Duration,
) -> bool {
    let write = stream.write_all(out);
    tokio::pin!(write);
    tokio::select! {
        written = &mut write => written.is_ok(),
        () = handle.kill.cancelled() => {
            matches!(tokio::time::timeout(grace, &mut write).await, Ok(Ok(())))
        }
    }
}

/// Frames taken from the queue for one write, so a burst costs few
/// syscalls; the byte bound keeps one write's buffer modest.
const BATCH: usize = 64;
const BATCH_BYTES: usize = 64 * 1024;

async fn write_loop(
    mut stream: OwnedWriteHalf,
    handle: Arc<ConnHandle>,
    limits: Limits,
    last_seen: Arc<AtomicU64>,
) {
    let mut ping = tokio::time::interval_at(
        tokio::time::Instant::now() + limits.ping_interval,
        limits.ping_interval,
    );
    loop {
        // Built for each write and dropped after it: an idle socket holds
        // no write buffer.
        let mut out = Vec::new();
        tokio::select! {
            biased;
            () = handle.kill.cancelled() => break,
            () = handle.queued() => {
                for _ in 0..BATCH {
                    if out.len() >= BATCH_BYTES {
                        break;
                    }
                    let Some(message) = handle.pop() else { break };
                    encode_one(&mut out, &handle, message);
                }
                if out.is_empty() {
                    // A wake-up for frames an earlier batch already took.
                    continue;
                }
            }
            _ = ping.tick() => {
                let silent_ms = now_ms().saturating_sub(last_seen.load(Ordering::Relaxed));
                if silent_ms >= limits.idle_timeout.as_millis() as u64 {
                    handle.close(1001, "idle timeout", false);
                    continue;
                }
                encode_frame(&mut out, OpCode::Ping, &[]);
            }
        }
        if !write_out(&mut stream, &out, &handle, limits.flush_timeout).await {
            handle.kill.cancel();
            return;
        }
        handle.batch_written();
    }
    let Some(reason) = handle.close_reason().cloned() else {
        return;
    };
    let mut out = Vec::new();
    if reason.flush_first {
        while let Some(message) = handle.pop() {
            encode_one(&mut out, &handle, message);
        }
    }
    encode_close(&mut out, reason.code, &reason.reason);
    let _ = tokio::time::timeout(limits.flush_timeout, stream.write_all(&out)).await;
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use fastwebsockets::{Frame, OpCode, Payload};

    use super::{Reassembly, Step, answer_to_close};

    fn push(reassembly: &mut Reassembly, fin: bool, opcode: OpCode, payload: &[u8]) -> Step {
        reassembly.push(Frame::new(
            fin,
            opcode,
            None,
            Payload::Owned(payload.to_vec()),
        ))
    }

    #[test]
    fn fragments_are_joined_and_capped() {
        let mut r = Reassembly::new(8);
        assert_eq!(push(&mut r, false, OpCode::Text, b"ab"), Step::More);
        assert_eq!(
            push(&mut r, true, OpCode::Ping, b"p"),
            Step::Ping(Bytes::from_static(b"p")),
            "a control frame between fragments"
        );
        assert_eq!(push(&mut r, false, OpCode::Continuation, b"cd"), Step::More);
        assert_eq!(
            push(&mut r, true, OpCode::Continuation, b"ef"),
            Step::Message(Bytes::from_static(b"abcdef"))
        );
        assert_eq!(
            push(&mut r, true, OpCode::Continuation, b"x"),
            Step::Close(1002, "continuation without a message"),
            "the message was complete"
        );
        let mut r = Reassembly::new(8);
        push(&mut r, false, OpCode::Text, b"abcd");
        assert_eq!(
            push(&mut r, false, OpCode::Text, b"x"),
            Step::Close(1002, "new message inside a fragmented one")
        );
        let mut r = Reassembly::new(8);
        push(&mut r, false, OpCode::Text, b"abcd");
        assert_eq!(
            push(&mut r, true, OpCode::Continuation, b"efgh"),
            Step::Message(Bytes::from_static(b"abcdefgh")),
            "exactly the limit"
        );
        push(&mut r, false, OpCode::Text, b"abcd");
        assert_eq!(
            push(&mut r, true, OpCode::Continuation, b"efghi"),
            Step::Close(1009, "message too big")
        );
    }

    fn frame(code: u16, reason: &[u8]) -> Vec<u8> {
        let mut payload = code.to_be_bytes().to_vec();
        payload.extend_from_slice(reason);
        payload
    }

    #[test]
    fn close_frames_are_answered_as_rfc_6455_says() {
        assert_eq!(answer_to_close(&[]).0, 1000);
        assert_eq!(answer_to_close(&[0x03]).0, 1002, "one byte");
        for code in [
            1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999,
        ] {
            assert_eq!(
                answer_to_close(&frame(code, b"bye")).0,
                code,
                "{code} echoed"
            );
        }
        for code in [
            0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
        ] {
            assert_eq!(answer_to_close(&frame(code, b"")).0, 1002, "{code} refused");
        }
        assert_eq!(
            answer_to_close(&frame(1000, &[0xce, 0xba, 0xe1, 0xbd])).0,
            1007
        );
        assert_eq!(
            answer_to_close(&frame(1000, &[b'x'; 124])).0,
            1002,
            "126 bytes"
        );
        assert_eq!(
            answer_to_close(&frame(1000, &[b'x'; 123])).0,
            1000,
            "125 bytes"
        );
    }
}
