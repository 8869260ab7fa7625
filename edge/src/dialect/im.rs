//! Instant messages: `/websocket` (configurable), opened with no token.
//!
//! The first message must register (type 1000) with a sessionId from the
//! login endpoints ([`crate::im_login`]); a socket not registered within
//! 10 s is closed with 1008. Every client message but a valid 9101 is
//! answered with a 9001 send status naming its id. Router calls are
//! [`Action::Await`]s, answered before the socket's next message is read,
//! so a socket's messages are sent in order and registration can set the
//! session's user.

use std::time::Duration;

use bytes::Bytes;
use switchboard_common::clock::now_ms;
use switchboard_proto::im::{self as wire, ImMessage, Kind, Status, recipients};
use switchboard_proto::{
    ErrorCode, ImAck, ImLookup, ImSend, Payload, Response, Topic, im_request, payload,
};
use tokio_util::sync::CancellationToken;

use super::{Accept, Action, Dialect, DialectSession, RequestBody, Unavailable, UpgradeRequest};
use crate::limits::UnauthenticatedSlot;

/// The IM socket route unless configured otherwise.
pub const DEFAULT_PATH: &str = "/websocket";

/// Time a socket has to register.
pub const REGISTER_WITHIN: Duration = Duration::from_secs(10);

/// Scope a login token needs for its socket to send notices.
pub const NOTICE_SCOPE: &str = "notice";

pub struct ImDialect;

pub static IM: ImDialect = ImDialect;

impl Dialect for ImDialect {
    fn index(&self) -> usize {
        4
    }

    fn label(&self) -> &'static str {
        "im"
    }

    fn proto(&self) -> switchboard_proto::Dialect {
        switchboard_proto::Dialect::Im
    }

    fn encode(
        &self,
        payload: &Payload,
        _position: Option<&switchboard_proto::Position>,
    ) -> Option<Bytes> {
        match payload.body.as_ref()? {
            payload::Body::Json(bytes) => Some(bytes.clone()),
            payload::Body::Presence(_) | payload::Body::ImBacklog(_) => None,
        }
    }
}

/// Accepts the IM socket route. It carries no token: the sessionId of the
/// register message says who the socket is.
pub fn accept(request: &UpgradeRequest<'_>) -> Option<Accept> {
    if request.path != request.im_path {
        return None;
    }
    Some(Accept::Session {
        dialect: &IM,
        session: Box::new(ImSession::default()),
        tenant: String::new(),
        principal: String::new(),
        trace_id: None,
    })
}

/// Who a registered socket is.
struct Registered {
    tenant: String,
    user: String,
    session_id: String,
    /// The login token had scope `notice`.
    notice: bool,
}

/// What the router call in flight answers.
enum Waiting {
    Register {
        id: String,
        from: String,
        session_id: String,
    },
    Send {
        id: String,
    },
    Receipt {
        id: String,
    },
}

#[derive(Default)]
pub struct ImSession {
    registered: Option<Registered>,
    /// Cancelled once registered: stops the registration deadline.
    registration: CancellationToken,
    /// This socket's place under the edge's cap on unregistered sockets,
    /// given up once registered.
    unregistered_slot: Option<UnauthenticatedSlot>,
    waiting: Option<Waiting>,
    /// The id and sender of the message being handled, for the reply when
    /// the router cannot take it.
    answering: (String, String),
}

fn reply(frame: String) -> Vec<Action> {
    vec![Action::Reply(Bytes::from(frame))]
}

impl ImSession {
    /// Whom a send status goes to: the registered user, else the sender
    /// the message named.
    fn recipient<'a>(&'a self, from: &'a str) -> &'a str {
        self.registered.as_ref().map_or(from, |r| r.user.as_str())
    }

    fn status(&self, id: &str, from: &str, status: Status, msg: &str) -> Vec<Action> {
        let to = self.recipient(from);
        reply(wire::send_status(id, to, status, msg, now_ms()))
    }

    fn not_registered(&self, message: &ImMessage) -> Vec<Action> {
        let msg = "register first: type 1000 with the sessionId from the login";
        self.status(&message.id, &message.from, Status::SessionError, msg)
    }

    fn refuse(&self, message: &ImMessage, refusal: &wire::Refusal) -> Vec<Action> {
        self.status(&message.id, &message.from, refusal.status, &refusal.message)
    }

    fn register(&mut self, message: &ImMessage) -> Vec<Action> {
        let session_id = match wire::register_body(&message.body) {
            Ok(id) => id,
            Err(refusal) => return self.refuse(message, &refusal),
        };
        if let Some(registered) = &self.registered {
            return if registered.session_id == session_id {
                self.status(&message.id, &message.from, Status::Success, "registered")
            } else {
                let msg = "this socket is already registered";
                self.status(&message.id, &message.from, Status::Failed, msg)
            };
        }
        let Some(tenant) = wire::session_tenant(&session_id) else {
            let msg = "unknown or expired sessionId";
            return self.status(&message.id, &message.from, Status::SessionError, msg);
        };
        let topic = Topic::im_session(tenant, &session_id);
        self.waiting = Some(Waiting::Register {
            id: message.id.clone(),
            from: message.from.clone(),
            session_id: session_id.clone(),
        });
        let lookup = im_request::Op::Lookup(ImLookup { session_id });
        vec![Action::Await {
            topic,
            body: RequestBody::Im(Box::new(lookup)),
            token: 0,
        }]
    }

    fn registered_answer(
        &mut self,
        (id, from): (&str, &str),
        session_id: String,
        answer: Answer,
    ) -> Vec<Action> {
        let unknown = "unknown or expired sessionId";
        let im = match answer {
            Answer::Done(response) => response.im.unwrap_or_default(),
            Answer::NotFound(_) => return self.status(id, from, Status::SessionError, unknown),
            Answer::Failed(msg) => return self.status(id, from, Status::Failed, &msg),
        };
        let Some(tenant) = wire::session_tenant(&session_id) else {
            return self.status(id, from, Status::SessionError, unknown);
        };
        let topic = Topic::im_user(tenant, &im.user);
        let (id, user) = (id.to_owned(), im.user.clone());
        self.registered = Some(Registered {
            tenant: tenant.to_owned(),
            user: im.user,
            session_id,
            notice: im.notice,
        });
        self.registration.cancel();
        self.unregistered_slot = None;
        // The owner confirms once the subscription is applied: anything
        // sent to the user once the reply is out finds the socket
        // subscribed, and the reply comes before the kept messages the
        // subscription brings.
        let on_confirmed: crate::dialect::ResponseMapper = Box::new(move |answer| {
            let (status, msg) = match answer.map(Response::into_result) {
                Ok(Ok(_)) => (Status::Success, "registered"),
                _ => (Status::Failed, "router unavailable, register again"),
            };
            Some(Bytes::from(wire::send_status(
                &id,
                &user,
                status,
                msg,
                now_ms(),
            )))
        });
        vec![Action::SubscribeConfirmed {
            topic,
            on_confirmed,
        }]
    }

    /// A text message or a notice, once the socket is registered.
    fn send(&mut self, message: &ImMessage) -> Vec<Action> {
        let Some(me) = &self.registered else {
            return self.not_registered(message);
        };
        let notice = message.kind.is_notice();
        if notice && !me.notice {
            let msg = "notices need a login token with scope notice";
            return self.status(&message.id, &message.from, Status::Failed, msg);
        }
        if !notice && message.is_system {
            let msg = "isSystem is true only for messages from the system";
            return self.status(&message.id, &message.from, Status::Failed, msg);
        }
        let from_ok = message.from == me.user || (notice && message.from == wire::SYSTEM);
        if !from_ok {
            let msg = format!("from must be the registered user {}", me.user);
            return self.status(&message.id, &message.from, Status::FromError, &msg);
        }
        let to = match recipients(&message.to) {
            Ok(to) if to.iter().any(|user| user == wire::SYSTEM) => {
                let msg = "SYSTEM receives no messages";
                return self.status(&message.id, &message.from, Status::ToError, msg);
            }
            Ok(to) => to,
            Err(refusal) => return self.refuse(message, &refusal),
        };
        if let Err(refusal) = wire::check_body(message.kind, &message.body) {
            return self.refuse(message, &refusal);
        }
        let topic = Topic::im_user(&me.tenant, &me.user);
        let send = ImSend {
            id: message.id.clone(),
            from: message.from.clone(),
            to,
            message: Bytes::from(message.wire(now_ms())),
            // The sender's other devices stay in step with its texts.
            echo: !notice,
        };
        self.waiting = Some(Waiting::Send {
            id: message.id.clone(),
        });
        vec![Action::Await {
            topic,
            body: RequestBody::Im(Box::new(im_request::Op::Send(send))),
            token: 0,
        }]
    }

    /// A 9101 receipt for a message this user received.
    fn receipt(&mut self, message: &ImMessage) -> Vec<Action> {
        let Some(me) = &self.registered else {
            return self.not_registered(message);
        };
        if message.is_system {
            let msg = "isSystem is true only for messages from the system";
            return self.status(&message.id, &message.from, Status::Failed, msg);
        }
        if message.from != me.user {
            let msg = format!("from must be the registered user {}", me.user);
            return self.status(&message.id, &message.from, Status::FromError, &msg);
        }
        let sender = match recipients(&message.to) {
            Ok(to) if to.len() == 1 => to.into_iter().next().unwrap_or_default(),
            Ok(_) => {
                let msg = "a receipt answers one message from one sender";
                return self.status(&message.id, &message.from, Status::ReceiveError, msg);
            }
            Err(refusal) => return self.refuse(message, &refusal),
        };
        if let Err(refusal) = wire::check_body(message.kind, &message.body) {
            return self.refuse(message, &refusal);
        }
        let ack = ImAck {
            id: message.id.clone(),
            sender,
            receipt: Bytes::from(message.wire(now_ms())),
        };
        self.waiting = Some(Waiting::Receipt {
            id: message.id.clone(),
        });
        vec![Action::Await {
            topic: Topic::im_user(&me.tenant, &me.user),
            body: RequestBody::Im(Box::new(im_request::Op::Ack(ack))),
            token: 0,
        }]
    }
}

/// A router's answer, sorted.
enum Answer {
    Done(Response),
    NotFound(String),
    Failed(String),
}

impl From<Result<Response, Unavailable>> for Answer {
    fn from(answer: Result<Response, Unavailable>) -> Self {
        match answer.map(Response::into_result) {
            Ok(Ok(r)) => Self::Done(r),
            Ok(Err(refusal)) => match refusal.code {
                ErrorCode::NotFound => Self::NotFound(refusal.message),
                // Sending again at once will not help: no "send it again".
                ErrorCode::OverQuota => Self::Failed(refusal.message),
                _ => Self::Failed(format!("not accepted, send it again: {}", refusal.message)),
            },
            Err(e) => Self::Failed(format!("{e}, send it again")),
        }
    }
}

impl DialectSession for ImSession {
    fn unauthenticated(&self) -> bool {
        self.registered.is_none()
    }

    fn hold_until_authenticated(&mut self, slot: UnauthenticatedSlot) {
        if self.registered.is_none() {
            self.unregistered_slot = Some(slot);
        }
    }

    fn open(&mut self) -> Vec<Action> {
        vec![Action::CloseAfter {
            after: REGISTER_WITHIN,
            code: 1008,
            reason: "not registered within 10 s",
            unless: self.registration.clone(),
        }]
    }

    fn on_text(&mut self, text: &str) -> Vec<Action> {
        self.waiting = None;
        let message = match ImMessage::parse(text) {
            Ok(message) => message,
            Err(refused) => {
                self.answering = (refused.id.clone(), refused.from.clone());
                let refusal = &refused.refusal;
                return self.status(&refused.id, &refused.from, refusal.status, &refusal.message);
            }
        };
        self.answering = (message.id.clone(), message.from.clone());
        match message.kind {
            Kind::Register => self.register(&message),
            Kind::SendStatus => {
                let msg = "type 9001 is sent by the server only";
                self.status(&message.id, &message.from, Status::TypeError, msg)
            }
            Kind::ReceiveStatus => self.receipt(&message),
            Kind::Text | Kind::Notice | Kind::TargetNotice => self.send(&message),
        }
    }

    fn on_response(&mut self, _token: u64, answer: Result<Response, Unavailable>) -> Vec<Action> {
        let answer = Answer::from(answer);
        match self.waiting.take() {
            Some(Waiting::Register {
                id,
                from,
                session_id,
            }) => self.registered_answer((&id, &from), session_id, answer),
            Some(Waiting::Send { id }) => match answer {
                Answer::Done(_) => self.status(&id, "", Status::Success, "sent"),
                Answer::NotFound(msg) | Answer::Failed(msg) => {
                    self.status(&id, "", Status::Failed, &msg)
                }
            },
            Some(Waiting::Receipt { id }) => match answer {
                // A valid receipt gets no answer.
                Answer::Done(_) => Vec::new(),
                Answer::NotFound(msg) => self.status(&id, "", Status::ReceiveError, &msg),
                Answer::Failed(msg) => self.status(&id, "", Status::Failed, &msg),
            },
            None => Vec::new(),
        }
    }

    fn rate_limited(&self) -> Bytes {
        let msg = "rate limit exceeded: message dropped";
        Bytes::from(wire::send_status(
            "",
            self.recipient(""),
            Status::Failed,
            msg,
            now_ms(),
        ))
    }

    fn unavailable(&self) -> Bytes {
        let (id, from) = &self.answering;
        let msg = "router unavailable, send it again";
        Bytes::from(wire::send_status(
            id,
            self.recipient(from),
            Status::Failed,
            msg,
            now_ms(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};
    use switchboard_proto::ImAnswer;

    use super::*;

    fn session() -> ImSession {
        ImSession::default()
    }

    fn message(kind: i64, body: &str) -> String {
        json!({"id":"m1","type":kind,"isSystem":false,"from":"alice","to":"bob","body":body})
            .to_string()
    }

    fn session_id() -> String {
        wire::session_id("acme", &"ab".repeat(16))
    }

    fn register_text() -> String {
        message(1000, &json!({"sessionId": session_id()}).to_string())
    }

    /// The status code of the one reply in `actions`.
    fn code(actions: &[Action]) -> u64 {
        let [Action::Reply(frame)] = actions else {
            panic!("expected one reply, got {} actions", actions.len())
        };
        let reply: Value = serde_json::from_slice(frame).unwrap();
        assert_eq!(reply["type"], 9001);
        let body: Value = serde_json::from_str(reply["body"].as_str().unwrap()).unwrap();
        body["code"].as_u64().unwrap()
    }

    fn answer(user: &str, notice: bool) -> Result<Response, Unavailable> {
        Ok(Response {
            im: Some(Box::new(ImAnswer {
                user: user.into(),
                notice,
                ..ImAnswer::default()
            })),
            ..Response::default()
        })
    }

    fn registered(notice: bool) -> ImSession {
        let mut s = session();
        let calls = s.on_text(&register_text());
        assert!(matches!(calls[..], [Action::Await { .. }]));
        let mut actions = s.on_response(0, answer("alice", notice));
        assert!(matches!(actions[..], [Action::SubscribeConfirmed { .. }]));
        let Action::SubscribeConfirmed { on_confirmed, .. } = actions.remove(0) else {
            unreachable!()
        };
        let reply = on_confirmed(Ok(Response::default())).unwrap();
        assert_eq!(code(&[Action::Reply(reply)]), 200);
        assert!(s.registration.is_cancelled(), "the deadline stops");
        assert!(!s.unauthenticated(), "a registered socket is authenticated");
        s
    }

    #[test]
    fn registering_gives_up_the_unregistered_slot() {
        let cap = crate::limits::UnauthenticatedSockets::new(1);
        let mut s = session();
        assert!(s.unauthenticated());
        s.hold_until_authenticated(cap.try_hold().expect("a slot"));
        assert!(cap.try_hold().is_none(), "the socket holds the only slot");
        let _ = s.on_text(&register_text());
        let not_found = Ok(Response {
            error: ErrorCode::NotFound as i32,
            ..Response::default()
        });
        let _ = s.on_response(0, not_found);
        assert!(cap.try_hold().is_none(), "a failed register keeps it");
        let _ = s.on_text(&register_text());
        let _ = s.on_response(0, answer("alice", false));
        assert!(!s.unauthenticated());
        assert!(cap.try_hold().is_some(), "registered: the slot is free");
    }

    #[test]
    fn messages_before_registering_get_402() {
        let mut s = session();
        assert_eq!(code(&s.on_text(&message(2001, "hi"))), 402);
        assert_eq!(
            code(&s.on_text(&message(1000, r#"{"sessionId":"nope"}"#))),
            402
        );
        assert_eq!(code(&s.on_text(&message(1000, "not json"))), 404);
        assert!(!s.registration.is_cancelled());
    }

    #[test]
    fn an_unknown_session_leaves_the_socket_unregistered() {
        let mut s = session();
        let _ = s.on_text(&register_text());
        let not_found = Ok(Response {
            error: ErrorCode::NotFound as i32,
            ..Response::default()
        });
        assert_eq!(code(&s.on_response(0, not_found)), 402);
        assert!(s.registered.is_none());
        let _ = s.on_text(&register_text());
        assert_eq!(code(&s.on_response(0, Err(Unavailable))), 400);
        assert!(s.registered.is_none());
    }

    #[test]
    fn registered_checks() {
        let mut s = registered(false);
        assert_eq!(
            code(&s.on_text(&register_text())),
            200,
            "same session again"
        );
        let other = message(
            1000,
            &json!({"sessionId": wire::session_id("acme", &"cd".repeat(16))}).to_string(),
        );
        assert_eq!(code(&s.on_text(&other)), 400);
        let from_mallory =
            json!({"id":"m2","type":2001,"isSystem":false,"from":"mallory","to":"bob","body":"x"});
        assert_eq!(code(&s.on_text(&from_mallory.to_string())), 405);
        let to_nobody =
            json!({"id":"m3","type":2001,"isSystem":false,"from":"alice","to":" ","body":"x"});
        assert_eq!(code(&s.on_text(&to_nobody.to_string())), 406);
        assert_eq!(code(&s.on_text(&message(2001, ""))), 404);
        assert_eq!(code(&s.on_text(&message(9001, "x"))), 403);
        assert_eq!(
            code(&s.on_text(&message(3001, r#"{"title":"t","msg":"m"}"#))),
            400,
            "no notice scope"
        );
        let system =
            json!({"id":"m4","type":2001,"isSystem":true,"from":"alice","to":"bob","body":"x"});
        assert_eq!(code(&s.on_text(&system.to_string())), 400);
        let calls = s.on_text(&message(2001, "hello"));
        assert!(matches!(calls[..], [Action::Await { .. }]));
        assert_eq!(code(&s.on_response(0, answer("", false))), 200);
    }

    #[test]
    fn a_send_over_the_quota_is_400_naming_it() {
        let mut s = registered(false);
        let _ = s.on_text(&message(2001, "hello"));
        let over = Ok(Response {
            error: ErrorCode::OverQuota as i32,
            error_message: "over the sender quota: 3 kept messages".into(),
            ..Response::default()
        });
        let actions = s.on_response(0, over);
        assert_eq!(code(&actions), 400);
        let [Action::Reply(frame)] = &actions[..] else {
            unreachable!()
        };
        let reply: Value = serde_json::from_slice(frame).unwrap();
        let body: Value = serde_json::from_str(reply["body"].as_str().unwrap()).unwrap();
        assert_eq!(body["msg"], "over the sender quota: 3 kept messages");
    }

    #[test]
    fn receipts() {
        let mut s = registered(false);
        let receipt = message(9101, r#"{"code":200,"status":"SUCCESS","msg":"read"}"#);
        let _ = s.on_text(&receipt);
        assert!(
            s.on_response(0, answer("", false)).is_empty(),
            "a valid receipt gets no reply"
        );
        let _ = s.on_text(&receipt);
        let unknown = Ok(Response {
            error: ErrorCode::NotFound as i32,
            ..Response::default()
        });
        assert_eq!(code(&s.on_response(0, unknown)), 407);
        let two = json!({"id":"m1","type":9101,"isSystem":false,"from":"alice","to":"bob,carol","body":"{}"});
        assert_eq!(code(&s.on_text(&two.to_string())), 407);
        assert_eq!(code(&s.on_text(&message(9101, "{}"))), 404);
    }

    #[test]
    fn notices_with_scope() {
        let mut s = registered(true);
        let calls = s.on_text(&message(
            3003,
            r#"{"title":"t","msg":"m","target":"/orders/1"}"#,
        ));
        assert!(matches!(calls[..], [Action::Await { .. }]));
        let system = json!({"id":"n2","type":3001,"isSystem":true,"from":"SYSTEM","to":"bob","body":"{\"title\":\"t\",\"msg\":\"m\"}"});
        assert!(matches!(
            s.on_text(&system.to_string())[..],
            [Action::Await { .. }]
        ));
    }
}
