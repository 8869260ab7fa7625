//! Entry points for the fuzz targets (`fuzz/`) and property tests: each
//! drives one decoder the way a socket would, with no socket and no router.
//! Not an API: nothing in the product calls these.

use std::pin::pin;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use fastwebsockets::{Frame, Role};
use switchboard_common::auth::{AuthError, Claims, claims};
use switchboard_proto::{ImAnswer, Response};

use crate::connection::{Reassembly, Step, close_for, configure};
use crate::dialect::{self, Accept, Action, DialectSession, Unavailable, UpgradeRequest};

/// Separates the messages of one fuzz input: 0xFF never occurs in UTF-8,
/// so no message can contain it.
pub const MESSAGE_SEPARATOR: u8 = 0xFF;

/// The socket a dialect input is read by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Socket {
    GroupV3,
    GroupV2,
    Iot,
    JsonRpcUser,
    JsonRpcApp,
    JsonRpcHardware,
    Im,
}

impl Socket {
    fn path(self) -> &'static str {
        match self {
            Self::GroupV3 => "/v3/ws/group/g_1/client/c_1",
            Self::GroupV2 => "/ws/group/g_1/client/c_1",
            Self::Iot => dialect::iot::ROUTE,
            Self::JsonRpcUser => "/v3/wss",
            Self::JsonRpcApp => "/v3/wss/app_1/tool_1",
            Self::JsonRpcHardware => "/v3/wss/hd_1",
            Self::Im => dialect::im::DEFAULT_PATH,
        }
    }

    fn claims(self) -> Result<Claims, AuthError> {
        let mut token = match self {
            Self::GroupV3 | Self::GroupV2 => claims("c_1", "client", "acme", Some("broadcast"), 60),
            Self::Iot | Self::JsonRpcUser => claims("u_1", "user", "acme", None, 60),
            Self::JsonRpcApp => claims("app_1", "app", "acme", None, 60),
            Self::JsonRpcHardware => claims("hd_1", "device", "acme", None, 60),
            Self::Im => return Err(AuthError::Missing),
        };
        if self == Self::JsonRpcHardware {
            token.owner = Some("u_1".to_owned());
        }
        Ok(token)
    }
}

/// Opens a session of `socket` as an upgrade would.
pub fn session(socket: Socket) -> Option<Box<dyn DialectSession>> {
    let headers = http::HeaderMap::new();
    let query = [("app-code", "app1"), ("project-id", "p1")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let request = UpgradeRequest {
        path: socket.path(),
        query,
        headers: &headers,
        auth: socket.claims(),
        allow_anonymous: false,
        connect_id: "edge-1-1".to_owned(),
        max_subscriptions: 16,
        im_path: dialect::im::DEFAULT_PATH,
        echo_path: None,
    };
    match dialect::accept(&request)? {
        Accept::Session { session, .. } => Some(session),
        Accept::Refuse(_) => None,
    }
}

/// The answer every router call gets: a success naming a user, so an IM
/// registration succeeds and the messages after it are read as sent by a
/// registered socket.
fn answer() -> Response {
    Response {
        delivered: 1,
        members: vec!["c_1".to_owned()],
        im: Some(Box::new(ImAnswer {
            user: "alice".to_owned(),
            ..ImAnswer::default()
        })),
        ..Response::default()
    }
}

/// Feeds each message to a fresh session of `socket`, answering every
/// router call, and returns the frames the socket would be sent. Bytes
/// between separators that are not UTF-8 are skipped: the frame layer
/// closes such a socket before the dialect sees it.
pub fn dialect_messages(socket: Socket, input: &[u8]) -> Vec<Bytes> {
    let Some(mut session) = session(socket) else {
        return Vec::new();
    };
    let mut replies = Vec::new();
    let actions = session.open();
    run(session.as_mut(), actions, &mut replies);
    for message in input.split(|b| *b == MESSAGE_SEPARATOR) {
        let Ok(text) = std::str::from_utf8(message) else {
            continue;
        };
        let actions = session.on_text(text);
        run(session.as_mut(), actions, &mut replies);
    }
    replies.push(session.rate_limited());
    replies.push(session.unavailable());
    replies
}

/// Carries out a dialect's actions as far as they concern the dialect:
/// replies are kept, response mappers and awaited calls are answered.
fn run(session: &mut dyn DialectSession, actions: Vec<Action>, replies: &mut Vec<Bytes>) {
    let mut queue = std::collections::VecDeque::from(actions);
    // Answered calls can lead to more calls; a dialect that kept asking
    // would be a bug the fuzzer should see as a hang, not an endless loop.
    let mut budget = 10_000usize;
    while let Some(action) = queue.pop_front() {
        budget = budget.saturating_sub(1);
        if budget == 0 {
            panic!("a dialect kept asking the router");
        }
        match action {
            Action::Reply(frame) | Action::ReplyBinary(frame) => replies.push(frame),
            Action::Request { on_response, .. }
            | Action::SubscribeConfirmed {
                on_confirmed: on_response,
                ..
            } => {
                replies.extend(on_response(Ok(answer())));
            }
            Action::Await { token, .. } => {
                queue.extend(session.on_response(token, Ok(answer())));
            }
            Action::SubscribeRecovering { answer, .. } | Action::Recover { answer, .. } => {
                replies.push(answer(crate::dialect::Recovery::Unavailable));
            }
            Action::Subscribe { .. }
            | Action::Unsubscribe { .. }
            | Action::Touch { .. }
            | Action::Publish { .. }
            | Action::Close { .. }
            | Action::CloseAfter { .. } => {}
        }
    }
}

/// [`dialect_messages`] with every router call unavailable instead.
pub fn dialect_messages_unavailable(socket: Socket, input: &[u8]) -> Vec<Bytes> {
    let Some(mut session) = session(socket) else {
        return Vec::new();
    };
    let mut replies = Vec::new();
    for message in input.split(|b| *b == MESSAGE_SEPARATOR) {
        let Ok(text) = std::str::from_utf8(message) else {
            continue;
        };
        let mut queue = std::collections::VecDeque::from(session.on_text(text));
        while let Some(action) = queue.pop_front() {
            match action {
                Action::Reply(frame) => replies.push(frame),
                Action::Request { on_response, .. }
                | Action::SubscribeConfirmed {
                    on_confirmed: on_response,
                    ..
                } => replies.extend(on_response(Err(Unavailable))),
                Action::Await { token, .. } => {
                    queue.extend(session.on_response(token, Err(Unavailable)));
                }
                _ => {}
            }
        }
    }
    replies
}

/// What the frame layer makes of the bytes a client sent.
#[derive(Debug, PartialEq, Eq)]
pub enum Read {
    /// A whole text message for the dialect.
    Text(String),
    /// A pong to send.
    Pong(Bytes),
    /// The socket is closed with this code (the last event).
    Close(u16),
}

/// Reads client bytes with the reader settings and reassembly of a real
/// socket whose message limit is `max_message`, until the input ends or
/// the socket would be closed.
pub fn read_frames(input: &[u8], max_message: usize) -> Vec<Read> {
    let (mut reader, _) =
        fastwebsockets::after_handshake_split(input, tokio::io::sink(), Role::Server);
    configure(&mut reader, max_message);
    let mut reassembly = Reassembly::new(max_message);
    let mut no_obligations = |_: Frame<'_>| async { Ok::<(), std::convert::Infallible>(()) };
    let mut events = Vec::new();
    loop {
        let frame = match ready(reader.read_frame(&mut no_obligations)) {
            Ok(frame) => frame,
            Err(error) => {
                if let Some((code, _)) = close_for(&error) {
                    events.push(Read::Close(code));
                }
                return events;
            }
        };
        match reassembly.push(frame) {
            Step::Message(message) => match String::from_utf8(message.to_vec()) {
                Ok(text) => events.push(Read::Text(text)),
                Err(_) => {
                    events.push(Read::Close(1007));
                    return events;
                }
            },
            // Neither binary messages nor RSV1 are taken by this reader:
            // `Reassembly::new` refuses binary, and `configure` leaves
            // RSV1 refused, as on a socket that did not negotiate deflate.
            Step::Binary(_) | Step::Compressed { .. } => {
                panic!("a text-only reader passed on a binary or compressed message")
            }
            Step::More => {}
            Step::Ping(payload) => events.push(Read::Pong(payload)),
            Step::Close(code, _) => {
                events.push(Read::Close(code));
                return events;
            }
        }
    }
}

/// Runs a future that reads from memory: it never waits, so one poll
/// finishes it. A read from a slice that asked to wait would mean the frame
/// reader lost track of its input, which the fuzzer should report.
fn ready<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut context = Context::from_waker(Waker::noop());
    match future.as_mut().poll(&mut context) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("a read from memory waited"),
    }
}
