//! Wire dialects. Each module owns its routes, decoding, encoding and error
//! mapping, and talks to the rest of the edge only through [`Action`]s: a
//! dialect never touches a socket or a router.
//!
//! - [`group`]: group messaging (V3 schema, V2 legacy).
//! - [`iot`]: IoT device-event subscriptions.
//! - [`jsonrpc`]: JSON-RPC 2.0 user, app and hardware sockets.
//! - [`im`]: instant messages with sessions and receipts.
//! - [`echo`]: the conformance echo route, off unless configured.

pub mod echo;
pub mod group;
pub mod im;
pub mod iot;
pub mod jsonrpc;

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use switchboard_common::auth::{AuthError, Claims};
use switchboard_proto::{Payload, Position, Response, Topic};
use tokio_util::sync::CancellationToken;

use crate::limits::UnauthenticatedSlot;
use crate::server::Refusal;

/// What a dialect asks the connection layer to do.
pub enum Action {
    /// Send this frame to the socket.
    Reply(Bytes),
    /// Send this binary frame to the socket (only the echo route does).
    ReplyBinary(Bytes),
    /// Receive deliveries for `topic`; with `member`, be present on it.
    Subscribe {
        topic: Topic,
        member: Option<String>,
    },
    /// Receive deliveries for `topic` and have its owner confirm once the
    /// subscription is applied (`on_confirmed` gets the answer): nothing
    /// the subscription brings reaches the socket before the confirmation.
    SubscribeConfirmed {
        topic: Topic,
        on_confirmed: ResponseMapper,
    },
    /// [`Action::Subscribe`] for a topic with history, catching the socket
    /// up from `since` first: the frame `answer` makes of the outcome, then
    /// the missed messages in offset order, then live ones, none twice.
    SubscribeRecovering {
        topic: Topic,
        member: Option<String>,
        since: Position,
        answer: RecoveryMapper,
    },
    /// Catches the socket up on `topic` from `since` like
    /// [`Action::SubscribeRecovering`], without subscribing: the socket
    /// gets the topic's deliveries some other way (a device bound to a
    /// conversation).
    Recover {
        topic: Topic,
        since: Position,
        answer: RecoveryMapper,
    },
    /// Stop receiving deliveries for `topic`.
    Unsubscribe { topic: Topic },
    /// Refresh the presence this socket holds on `topic`.
    Touch { topic: Topic },
    /// Fire-and-forget publish.
    Publish { topic: Topic, payload: Payload },
    /// A request whose answer the dialect turns into an optional reply.
    Request {
        topic: Topic,
        body: RequestBody,
        on_response: ResponseMapper,
    },
    /// A request the socket waits for: nothing more is read from it until
    /// the answer (or a timeout) reaches [`DialectSession::on_response`]
    /// with `token`. For steps that decide what happens next.
    Await {
        topic: Topic,
        body: RequestBody,
        token: u64,
    },
    /// Close the socket with this code once queued frames are written.
    Close { code: u16, reason: String },
    /// Close the socket with `code` after `after`, unless `unless` is
    /// cancelled first.
    CloseAfter {
        after: Duration,
        code: u16,
        reason: &'static str,
        unless: CancellationToken,
    },
}

pub enum RequestBody {
    Publish(Payload),
    Presence,
    /// Answered once the owner has applied this socket's earlier frames
    /// for the topic: an acknowledgement for a subscription.
    Sync,
    /// A request body built by the dialect, naming its own topic.
    Envelope(switchboard_proto::request::Body),
    /// An instant-message operation on an IM user or session topic (the
    /// edge adds the asking socket).
    Im(Box<switchboard_proto::im_request::Op>),
}

/// The router could not be reached, or did not answer in time.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("router unavailable")]
pub struct Unavailable;

/// What became of a recovery ([`Action::SubscribeRecovering`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovery<'a> {
    /// The position was in the history: `missed` messages follow.
    Recovered { missed: usize, latest: &'a Position },
    /// Another epoch, or older than the history holds: nothing follows.
    Lost { latest: &'a Position },
    /// The position is ahead of the latest one.
    Ahead { latest: &'a Position },
    /// No router answered, or history is off: nothing follows.
    Unavailable,
}

/// Turns a recovery's outcome into the frame that opens it.
pub type RecoveryMapper = Box<dyn FnOnce(Recovery<'_>) -> Bytes + Send + 'static>;

/// Turns a router's answer into the frame (if any) for the socket. It
/// takes the answer whole: nobody else needs it once it is answered.
pub type ResponseMapper =
    Box<dyn FnOnce(Result<Response, Unavailable>) -> Option<Bytes> + Send + 'static>;

/// A dialect: how its deliveries look on the wire. One value per dialect,
/// shared by every socket that speaks it.
pub trait Dialect: Send + Sync + 'static {
    /// Small dense index, for per-delivery encode caches.
    fn index(&self) -> usize;
    /// Metrics label.
    fn label(&self) -> &'static str;
    fn proto(&self) -> switchboard_proto::Dialect;
    /// Encodes a delivery, with its place in its topic's history when it
    /// has one; called once per delivery frame, not per socket.
    fn encode(&self, payload: &Payload, position: Option<&Position>) -> Option<Bytes>;
}

/// Number of dialect indexes in use.
pub const DIALECTS: usize = 6;

/// One socket's dialect state.
pub trait DialectSession: Send + Sync + 'static {
    /// Actions right after the upgrade (subscriptions, presence).
    fn open(&mut self) -> Vec<Action>;
    /// One complete text message, already checked to be UTF-8.
    fn on_text(&mut self, text: &str) -> Vec<Action>;
    /// [`DialectSession::on_text`] for a message that may hold several
    /// requests (a JSON-RPC batch): the connection has charged the message
    /// once against the rate limit, and `charge` takes one more token for
    /// each further request, false when none is left.
    fn on_text_charged(&mut self, text: &str, _charge: &mut dyn FnMut() -> bool) -> Vec<Action> {
        self.on_text(text)
    }
    /// Whether binary messages are taken. The dialects are JSON over text
    /// frames, so elsewhere a binary message closes the socket with 1003.
    fn accepts_binary(&self) -> bool {
        false
    }
    /// One complete binary message, when [`DialectSession::accepts_binary`].
    fn on_binary(&mut self, _data: Bytes) -> Vec<Action> {
        Vec::new()
    }
    /// The reply to a message refused by the rate limit.
    fn rate_limited(&self) -> Bytes;
    /// The reply when the router cannot take a message.
    fn unavailable(&self) -> Bytes;
    /// Whether the socket has yet to authenticate (the IM socket before it
    /// registers). Such sockets are capped per edge: each gets a slot, see
    /// [`DialectSession::hold_until_authenticated`].
    fn unauthenticated(&self) -> bool {
        false
    }
    /// Keeps `slot` until the socket authenticates, then drops it; a
    /// socket that closes first drops it with its session.
    fn hold_until_authenticated(&mut self, _slot: UnauthenticatedSlot) {}
    /// The answer to an [`Action::Await`].
    fn on_response(
        &mut self,
        _token: u64,
        _response: Result<Response, Unavailable>,
    ) -> Vec<Action> {
        Vec::new()
    }
}

/// What an upgrade request looks like to a dialect.
pub struct UpgradeRequest<'a> {
    pub path: &'a str,
    pub query: HashMap<String, String>,
    pub headers: &'a http::HeaderMap,
    pub auth: Result<Claims, AuthError>,
    pub allow_anonymous: bool,
    /// Cluster-unique id of the connection this request would open.
    pub connect_id: String,
    pub max_subscriptions: usize,
    /// The IM socket route (configurable; `/websocket` by default).
    pub im_path: &'a str,
    /// The conformance echo route, when configured.
    pub echo_path: Option<&'a str>,
}

/// A dialect's answer to an upgrade request on one of its routes.
pub enum Accept {
    Session {
        dialect: &'static dyn Dialect,
        session: Box<dyn DialectSession>,
        tenant: String,
        principal: String,
        /// The W3C trace id the connection's logs carry, if the dialect has one.
        trace_id: Option<String>,
    },
    /// Answer with this refusal; no upgrade.
    Refuse(Refusal),
}

/// Counts a token refused on `route`. Both labels come from closed sets:
/// `reason` is an [`AuthError::label`], `kind`, `sub` or `tenant`.
pub fn count_refused_token(route: &'static str, reason: &'static str) {
    metrics::counter!("switchboard_edge_tokens_refused_total", "route" => route, "reason" => reason)
        .increment(1);
}

/// Routes to each dialect's `accept`; `None` when no dialect owns the path.
pub fn accept(request: &UpgradeRequest<'_>) -> Option<Accept> {
    group::accept(request)
        .or_else(|| iot::accept(request))
        .or_else(|| jsonrpc::accept(request))
        .or_else(|| im::accept(request))
        .or_else(|| echo::accept(request))
}
