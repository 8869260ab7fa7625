//! JSON-RPC 2.0 sockets: `/v3/wss` (user), `/v3/wss/{appId}/{toolId}`
//! (app) and `/v3/wss/{hdId}` (hardware).
//!
//! A refused token still gets its upgrade, then close code 4401 naming the
//! problem (browsers cannot read an HTTP 401 body). Calls that need shared
//! state wait for the router ([`Action::Await`]) one at a time, so answers
//! keep the order of the calls and a batch is answered as one array.
//! Pushes arrive complete from the router and go out unchanged.

mod calls;
mod recovery;
pub mod wire;

use std::collections::{HashSet, VecDeque};

use bytes::Bytes;
use serde_json::json;
use switchboard_common::auth::{AuthError, Kind};
use switchboard_proto::jsonrpc::{is_valid_ref, tool_topic_name};
use switchboard_proto::{Payload, Response, Topic, TopicKind, payload};

use self::calls::{Pending, Plan};
use self::wire::{Element, Id, Message, RpcError};
use super::{Accept, Action, Dialect, DialectSession, RequestBody, Unavailable, UpgradeRequest};
use crate::server::Refusal;

pub const ROUTE: &str = "/v3/wss";

pub struct JsonRpcDialect;

pub static JSONRPC: JsonRpcDialect = JsonRpcDialect;

impl Dialect for JsonRpcDialect {
    fn index(&self) -> usize {
        3
    }

    fn label(&self) -> &'static str {
        "jsonrpc"
    }

    fn proto(&self) -> switchboard_proto::Dialect {
        switchboard_proto::Dialect::Jsonrpc
    }

    /// A push on a topic with history carries its place as `epoch` and
    /// `offset` in its params.
    fn encode(
        &self,
        payload: &Payload,
        position: Option<&switchboard_proto::Position>,
    ) -> Option<Bytes> {
        match payload.body.as_ref()? {
            payload::Body::Json(bytes) => Some(match position {
                Some(p) => switchboard_proto::jsonrpc::with_position(bytes, &p.epoch, p.offset),
                None => bytes.clone(),
            }),
            payload::Body::Presence(_) | payload::Body::ImBacklog(_) => None,
        }
    }
}

/// Which of the three sockets this is, with its identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SocketKind {
    User { user: String },
    App { app: String, tool: String },
    Hardware { hd: String, owner: Option<String> },
}

impl SocketKind {
    fn label(&self) -> &'static str {
        match self {
            Self::User { .. } => "user",
            Self::App { .. } => "app",
            Self::Hardware { .. } => "hardware",
        }
    }
}

/// The socket kind a path names, or why the path is refused.
fn route(path: &str) -> Option<Result<Vec<&str>, Refusal>> {
    let rest = path.strip_prefix(ROUTE)?;
    if rest.is_empty() || rest == "/" {
        return Some(Ok(Vec::new()));
    }
    let segments: Vec<&str> = rest.strip_prefix('/')?.split('/').collect();
    if segments.len() > 2 {
        return None;
    }
    if segments.iter().all(|s| is_valid_ref(s)) {
        Some(Ok(segments))
    } else {
        Some(Err(Refusal::BadPath))
    }
}

/// The session that closes a socket at once: a refused token.
fn refused(reason: String) -> Accept {
    Accept::Session {
        dialect: &JSONRPC,
        session: Box::new(Refused { reason }),
        tenant: String::new(),
        principal: String::new(),
        trace_id: None,
    }
}

pub fn accept(request: &UpgradeRequest<'_>) -> Option<Accept> {
    let segments = match route(request.path)? {
        Ok(segments) => segments,
        Err(refusal) => return Some(Accept::Refuse(refusal)),
    };
    let claims = match &request.auth {
        Ok(claims) => claims,
        Err(AuthError::Missing) => return Some(refused("token is required".to_owned())),
        Err(e) => return Some(refused(e.to_string())),
    };
    let kind = match segments.len() {
        0 => Kind::User,
        2 => Kind::App,
        _ => Kind::Device,
    };
    if let Err(e) = claims.check_kind(kind) {
        return Some(refused(e.to_string()));
    }
    let socket = match segments.as_slice() {
        [] => SocketKind::User {
            user: claims.sub.clone(),
        },
        [app, tool] => {
            // The `app` claim names the app; only without one does `sub`.
            if claims.app.as_deref().unwrap_or(claims.sub.as_str()) != *app {
                return Some(refused(format!("the token does not act for app {app}")));
            }
            SocketKind::App {
                app: (*app).to_owned(),
                tool: (*tool).to_owned(),
            }
        }
        [hd] => {
            if claims.sub != *hd {
                return Some(refused(format!("the token is not device {hd}'s")));
            }
            SocketKind::Hardware {
                hd: (*hd).to_owned(),
                owner: claims.owner.clone().filter(|o| is_valid_ref(o)),
            }
        }
        _ => return None,
    };
    if let SocketKind::User { user } = &socket
        && !is_valid_ref(user)
    {
        return Some(refused("the token's sub is not a valid user id".to_owned()));
    }
    // `convId` means something on user sockets only.
    let conv = match request.query.get("convId").filter(|c| !c.is_empty()) {
        Some(conv) if matches!(socket, SocketKind::User { .. }) => {
            if !is_valid_ref(conv) {
                return Some(Accept::Refuse(Refusal::BadConvId));
            }
            Some(conv.clone())
        }
        _ => None,
    };
    // Positions to recover from: the socket's own stream and its
    // conversation's (app sockets ask per channel, in `subscribe`).
    let since = match &socket {
        SocketKind::User { .. } => recovery::query_since(&request.query, &recovery::USER_STREAMS),
        SocketKind::Hardware { .. } => {
            recovery::query_since(&request.query, &recovery::HARDWARE_STREAMS)
        }
        SocketKind::App { .. } => Ok(Default::default()),
    };
    let since = match since {
        Ok(since) => since,
        Err(refusal) => return Some(Accept::Refuse(refusal)),
    };
    let tenant = claims.tenant().to_owned();
    Some(Accept::Session {
        dialect: &JSONRPC,
        session: Box::new(RpcSession {
            tenant: tenant.clone(),
            socket,
            conv: None,
            open_conv: conv,
            since,
            channels: HashSet::new(),
            max_subscriptions: request.max_subscriptions,
            work: None,
            next_token: 1,
        }),
        tenant,
        principal: claims.sub.clone(),
        trace_id: None,
    })
}

/// A socket whose token was refused: closed with 4401 right after the
/// upgrade, before anything reaches a router.
struct Refused {
    reason: String,
}

impl DialectSession for Refused {
    fn open(&mut self) -> Vec<Action> {
        vec![Action::Close {
            code: 4401,
            reason: self.reason.clone(),
        }]
    }

    fn on_text(&mut self, _text: &str) -> Vec<Action> {
        Vec::new()
    }

    fn rate_limited(&self) -> Bytes {
        Bytes::new()
    }

    fn unavailable(&self) -> Bytes {
        Bytes::new()
    }
}

/// The calls of one message still to answer.
struct Work {
    batch: bool,
    answers: Vec<Bytes>,
    rest: VecDeque<Element>,
    /// The call waiting for the router, with the token of its request.
    waiting: Option<(u64, Option<Id>, Pending)>,
}

pub struct RpcSession {
    tenant: String,
    socket: SocketKind,
    /// The conversation this (user) socket is bound to.
    conv: Option<String>,
    /// `convId` from the connect query, bound at open.
    open_conv: Option<String>,
    /// Positions from the connect query: the socket's own stream (user or
    /// device) and its conversation's, taken at open.
    since: recovery::Since,
    /// App channels this socket subscribes to.
    channels: HashSet<String>,
    max_subscriptions: usize,
    work: Option<Work>,
    next_token: u64,
}

/// The token of requests whose answers nobody is told (opening work,
/// relays of tool answers).
const OPEN_TOKEN: u64 = 0;

/// The token of the binding a `convId` in the connect query asks for: the
/// socket joins the conversation only once the router allows it.
const OPEN_BIND_TOKEN: u64 = u64::MAX;

/// The token of a hardware socket's attach when it recovers its
/// conversation: the answer names the conversation it is bound to.
const OPEN_ATTACH_TOKEN: u64 = u64::MAX - 1;

impl RpcSession {
    fn topic(&self, kind: TopicKind, name: &str) -> Topic {
        Topic::new(&self.tenant, kind, name)
    }

    /// Answers what it can of the current message and returns the actions
    /// up to the next call that waits for the router.
    fn advance(&mut self) -> Vec<Action> {
        let mut out = Vec::new();
        loop {
            let Some(work) = self.work.as_mut() else {
                return out;
            };
            let Some(element) = work.rest.pop_front() else {
                out.extend(self.finish());
                return out;
            };
            match self.plan(element) {
                Plan::Answer(id, result, actions) => {
                    out.extend(actions);
                    self.answer(id.as_ref(), result);
                }
                Plan::Wait {
                    id,
                    pending,
                    actions,
                    request,
                } => {
                    let token = self.next_token;
                    self.next_token += 1;
                    let (topic, body) = request;
                    out.extend(actions);
                    out.push(Action::Await { topic, body, token });
                    if let Some(work) = self.work.as_mut() {
                        work.waiting = Some((token, id, pending));
                    }
                    return out;
                }
            }
        }
    }

    /// Records the answer to one call (none for a notification).
    fn answer(&mut self, id: Option<&Id>, result: Result<serde_json::Value, RpcError>) {
        let (Some(id), Some(work)) = (id, self.work.as_mut()) else {
            return;
        };
        work.answers.push(match result {
            Ok(data) => wire::success(id, &data),
            Err(error) => wire::failure(id, &error),
        });
    }

    fn finish(&mut self) -> Vec<Action> {
        let Some(work) = self.work.take() else {
            return Vec::new();
        };
        if work.answers.is_empty() {
            return Vec::new();
        }
        let frame = if work.batch {
            wire::batch(&work.answers)
        } else {
            work.answers.into_iter().next().unwrap_or_default()
        };
        vec![Action::Reply(frame)]
    }

    fn start(&mut self, batch: bool, elements: Vec<Element>) -> Vec<Action> {
        self.work = Some(Work {
            batch,
            answers: Vec::new(),
            rest: elements.into(),
            waiting: None,
        });
        self.advance()
    }

    /// The id of the call being answered, for a reply the connection sends.
    fn current_id(&self) -> Id {
        self.work
            .as_ref()
            .and_then(|w| w.waiting.as_ref())
            .and_then(|(_, id, _)| id.clone())
            .unwrap_or_else(Id::null)
    }
}

impl DialectSession for RpcSession {
    fn open(&mut self) -> Vec<Action> {
        let [own_since, conv_since] = std::mem::take(&mut self.since);
        match self.socket.clone() {
            SocketKind::User { user } => {
                let mut actions = subscribe_own(
                    self.topic(TopicKind::User, &user),
                    own_since,
                    recovery::USER_STREAMS[0],
                );
                match &self.open_conv {
                    Some(conv) => {
                        self.since[1] = conv_since;
                        actions.push(Action::Await {
                            topic: self.topic(TopicKind::User, &user),
                            body: calls::bind(&self.tenant, &user, conv, None),
                            token: OPEN_BIND_TOKEN,
                        });
                    }
                    // Bound to no conversation: nothing to recover.
                    None if conv_since.is_some() => actions.push(conv_unrecovered()),
                    None => {}
                }
                actions
            }
            SocketKind::App { app, tool } => subscribe_own(
                self.topic(TopicKind::Tool, &tool_topic_name(&app, &tool)),
                None,
                ("", ""),
            ),
            SocketKind::Hardware { hd, owner } => {
                let attach = calls::attach(&self.tenant, &hd, owner.as_deref());
                let topic = self.topic(TopicKind::Device, &hd);
                if conv_since.is_some() {
                    // The conversation is known once the attach answers;
                    // the device topic (through which the conversation's
                    // pushes come) is subscribed only then, so none of
                    // them overtakes the replay.
                    self.since = [own_since, conv_since];
                    return vec![Action::Await {
                        topic,
                        body: attach,
                        token: OPEN_ATTACH_TOKEN,
                    }];
                }
                let mut actions =
                    subscribe_own(topic.clone(), own_since, recovery::HARDWARE_STREAMS[0]);
                actions.push(Action::Await {
                    topic,
                    body: attach,
                    token: OPEN_TOKEN,
                });
                actions
            }
        }
    }

    fn on_text(&mut self, text: &str) -> Vec<Action> {
        self.on_text_charged(text, &mut || true)
    }

    fn on_text_charged(&mut self, text: &str, charge: &mut dyn FnMut() -> bool) -> Vec<Action> {
        if text == "ping" {
            return vec![Action::Reply(Bytes::from_static(b"pong"))];
        }
        match wire::decode(text) {
            Message::Refused(error) => vec![Action::Reply(wire::failure(&Id::null(), &error))],
            Message::Single(element) => self.start(false, vec![element]),
            Message::Batch(elements) => {
                // The message paid for its first call; every other call
                // pays its own way, and one that cannot is answered with
                // the rate-limit error instead of being carried out.
                let elements = elements
                    .into_iter()
                    .enumerate()
                    .filter_map(|(i, element)| {
                        if i == 0 || charge() {
                            return Some(element);
                        }
                        element.id().map(|id| Element::Invalid {
                            id: id.clone(),
                            error: RpcError::Other("rate limit exceeded".to_owned()),
                        })
                    })
                    .collect();
                self.start(true, elements)
            }
        }
    }

    fn on_response(&mut self, token: u64, response: Result<Response, Unavailable>) -> Vec<Action> {
        if token == OPEN_BIND_TOKEN {
            return self.opened_bind(response);
        }
        if token == OPEN_ATTACH_TOKEN {
            return self.attached(response);
        }
        if token == OPEN_TOKEN {
            if let Err(Unavailable) | Ok(Response { error: 1.., .. }) = &response {
                tracing::debug!(
                    socket = self.socket.label(),
                    ?response,
                    "background request failed"
                );
            }
            return Vec::new();
        }
        let Some((waiting_token, id, pending)) = self.work.as_mut().and_then(|w| w.waiting.take())
        else {
            return Vec::new();
        };
        if waiting_token != token {
            return Vec::new();
        }
        let (id, result, mut actions) = match pending {
            calls::Pending::SubscribeSince(check) => self.checked_since(id, *check, response),
            pending => {
                let (result, actions) = self.complete(pending, response);
                (id, result, actions)
            }
        };
        self.answer(id.as_ref(), result);
        actions.extend(self.advance());
        actions
    }

    fn rate_limited(&self) -> Bytes {
        wire::failure(
            &Id::null(),
            &RpcError::Other("rate limit exceeded".to_owned()),
        )
    }

    fn unavailable(&self) -> Bytes {
        wire::failure(
            &self.current_id(),
            &RpcError::Internal("router unavailable".to_owned()),
        )
    }
}

impl RpcSession {
    /// The answer to the connect query's binding: the socket joins the
    /// conversation (confirmed before it reads on, so a client that got its
    /// first answer gets every push), or hears why not in an error with a
    /// null id (there is no call to answer) and stays unbound.
    fn opened_bind(&mut self, response: Result<Response, Unavailable>) -> Vec<Action> {
        let Some(conv) = self.open_conv.take() else {
            return Vec::new();
        };
        let (result, mut actions) = self.complete(
            Pending::Switch {
                conv: conv.clone(),
                hd: None,
            },
            response,
        );
        let since = self.since[1].take();
        match result {
            Ok(_) => {
                if let Some(since) = since {
                    // The conversation's subscription recovers first.
                    let topic = self.topic(TopicKind::Conv, &conv);
                    for action in &mut actions {
                        if matches!(action, Action::Subscribe { topic: t, .. } if *t == topic) {
                            *action =
                                recovering(topic.clone(), since.clone(), recovery::USER_STREAMS[1]);
                        }
                    }
                }
                actions.push(Action::Await {
                    topic: self.topic(TopicKind::Conv, &conv),
                    body: RequestBody::Sync,
                    token: OPEN_TOKEN,
                });
            }
            Err(error) => {
                actions.push(Action::Reply(wire::failure(&Id::null(), &error)));
                if since.is_some() {
                    actions.push(conv_unrecovered());
                }
            }
        }
        actions
    }

    /// A hardware socket recovering its conversation is attached: it
    /// recovers the conversation it is bound to (none: nothing to
    /// recover), then subscribes its own topic, recovering it too if asked.
    fn attached(&mut self, response: Result<Response, Unavailable>) -> Vec<Action> {
        let SocketKind::Hardware { hd, .. } = &self.socket else {
            return Vec::new();
        };
        let [own_since, conv_since] = std::mem::take(&mut self.since);
        let topic = self.topic(TopicKind::Device, hd);
        let conv = match &response {
            Ok(Response {
                error: 0, value, ..
            }) => value.clone(),
            _ => {
                tracing::debug!(?response, "device attach failed");
                None
            }
        };
        let mut actions = Vec::new();
        match (conv, conv_since) {
            (Some(conv), Some(since)) => {
                let (stream, field) = recovery::HARDWARE_STREAMS[1];
                actions.push(Action::Recover {
                    topic: self.topic(TopicKind::Conv, &conv),
                    since,
                    answer: Box::new(move |outcome| {
                        recovery::recovery_frame(stream, field, outcome)
                    }),
                });
            }
            (None, Some(_)) => actions.push(conv_unrecovered()),
            (_, None) => {}
        }
        actions.extend(subscribe_own(
            topic,
            own_since,
            recovery::HARDWARE_STREAMS[0],
        ));
        actions
    }
}

/// Subscribes a socket's own topic (recovering it from `since` when
/// given), confirmed by its owner before the socket reads on, so a client
/// that got its first answer gets every push.
fn subscribe_own(
    topic: Topic,
    since: Option<switchboard_proto::Position>,
    stream: (&'static str, &'static str),
) -> Vec<Action> {
    let subscribe = match since {
        Some(since) => recovering(topic.clone(), since, stream),
        None => Action::Subscribe {
            topic: topic.clone(),
            member: None,
        },
    };
    vec![
        subscribe,
        Action::Await {
            topic,
            body: RequestBody::Sync,
            token: OPEN_TOKEN,
        },
    ]
}

/// Subscribes `topic`, recovering `stream` (asked for by `field`) first.
fn recovering(
    topic: Topic,
    since: switchboard_proto::Position,
    (stream, field): (&'static str, &'static str),
) -> Action {
    Action::SubscribeRecovering {
        topic,
        member: None,
        since,
        answer: Box::new(move |outcome| recovery::recovery_frame(stream, field, outcome)),
    }
}

/// The answer to `since_conv` on a socket bound to no conversation.
fn conv_unrecovered() -> Action {
    let (stream, field) = recovery::USER_STREAMS[1];
    Action::Reply(recovery::recovery_frame(
        stream,
        field,
        super::Recovery::Unavailable,
    ))
}

/// The `{"convId","hdId"}` data of a switch.
fn switched(conv: &str, hd: Option<&str>) -> serde_json::Value {
    json!({"convId": conv, "hdId": hd})
}
