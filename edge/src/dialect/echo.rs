//! The conformance echo route (`--conformance-echo-path`, off unless
//! given): every text and binary message is sent back as it came. It runs
//! through the same connection code as the dialects (limits, reassembly,
//! UTF-8 checks, close handling, queue and writer), so an outside
//! WebSocket conformance suite judges the frame layer every dialect uses.
//! No token, no router: nothing on it reaches a tenant.

use bytes::Bytes;
use switchboard_proto::Payload;

use super::{Accept, Action, Dialect, DialectSession, UpgradeRequest};

pub struct EchoDialect;

pub static ECHO: EchoDialect = EchoDialect;

impl Dialect for EchoDialect {
    fn index(&self) -> usize {
        5
    }

    fn label(&self) -> &'static str {
        "echo"
    }

    fn proto(&self) -> switchboard_proto::Dialect {
        switchboard_proto::Dialect::Unspecified
    }

    /// Nothing is ever delivered to an echo socket.
    fn encode(
        &self,
        _payload: &Payload,
        _position: Option<&switchboard_proto::Position>,
    ) -> Option<Bytes> {
        None
    }
}

pub fn accept(request: &UpgradeRequest<'_>) -> Option<Accept> {
    let path = request.echo_path?;
    (request.path == path).then(|| Accept::Session {
        dialect: &ECHO,
        session: Box::new(EchoSession),
        tenant: String::new(),
        principal: String::new(),
        trace_id: None,
    })
}

struct EchoSession;

impl DialectSession for EchoSession {
    fn open(&mut self) -> Vec<Action> {
        Vec::new()
    }

    fn on_text(&mut self, text: &str) -> Vec<Action> {
        vec![Action::Reply(Bytes::copy_from_slice(text.as_bytes()))]
    }

    fn accepts_binary(&self) -> bool {
        true
    }

    fn on_binary(&mut self, data: Bytes) -> Vec<Action> {
        vec![Action::ReplyBinary(data)]
    }

    /// The echo route is for conformance runs, which set the limit high;
    /// a message over it is answered like any other, by its own echo's
    /// absence and this note.
    fn rate_limited(&self) -> Bytes {
        Bytes::from_static(b"rate limit exceeded")
    }

    fn unavailable(&self) -> Bytes {
        Bytes::new()
    }
}
