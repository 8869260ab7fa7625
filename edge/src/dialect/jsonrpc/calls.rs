//! The methods of each socket kind: checking params, the router request a
//! call needs, and the answer it becomes.

use serde_json::{Map, Value, json};
use switchboard_proto::jsonrpc::{
    MAX_KEY_BYTES, channel_message_frame, channel_topic_name, is_valid_key, is_valid_ref,
    notify_frame, tool_topic_name, with_stream,
};
use switchboard_proto::{
    BindConversation, DeviceAttach, DeviceStatus, ErrorCode, HistoryRead, HistoryVerdict, KvAction,
    KvOp, Payload, Response, RouterRefusal, ToolEvent, Topic, TopicKind, request,
};

use super::wire::{Element, Id, RpcError};
use super::{RpcSession, SocketKind, switched};
use crate::dialect::{Action, RequestBody, Unavailable};

/// Longest key expiry accepted (ten years), so milliseconds never overflow.
const MAX_TTL_SECONDS: f64 = 315_360_000.0;

/// What to do with one call.
pub(super) enum Plan {
    /// Run these actions and answer now (nothing for a notification).
    Answer(Option<Id>, Result<Value, RpcError>, Vec<Action>),
    /// Run `actions`, then wait for the router's answer to `request`.
    Wait {
        id: Option<Id>,
        pending: Pending,
        actions: Vec<Action>,
        request: (Topic, RequestBody),
    },
}

/// A call's answer (none for a notification, or when a frame made later
/// answers it) and the actions that go with it.
pub(super) type Answered = (Option<Id>, Result<Value, RpcError>, Vec<Action>);

/// A call waiting for the router, and what its answer means.
pub(super) enum Pending {
    Get { key: String },
    Set { key: String },
    Del { key: String },
    Publish { channel: String },
    Subscribe { channel: String },
    SubscribeSince(Box<SinceCheck>),
    Unsubscribe { channel: String },
    Switch { conv: String, hd: Option<String> },
    Status { hd: String },
}

/// A `subscribe` with `since` while its history is asked where it is
/// ([`RpcSession::checked_since`]).
pub(super) struct SinceCheck {
    pub(super) channel: String,
    pub(super) topic: Topic,
    pub(super) since: switchboard_proto::Position,
}

/// Methods and the socket kind that has them, for "not available here".
const METHODS: &[(&str, &str)] = &[
    ("hardwares.switchConvId", "user or hardware"),
    ("redis.get", "app"),
    ("redis.set", "app"),
    ("redis.del", "app"),
    ("redis.publish", "app"),
    ("subscribe", "app"),
    ("unsubscribe", "app"),
    ("device.status", "hardware"),
];

/// A user socket's binding (and, with `hd`, that device's), routed by the
/// user's topic.
pub(super) fn bind(tenant: &str, user: &str, conv: &str, hd: Option<&str>) -> RequestBody {
    RequestBody::Envelope(request::Body::Bind(BindConversation {
        topic: Some(Topic::new(tenant, TopicKind::User, user)),
        conv_id: conv.to_owned(),
        user: user.to_owned(),
        hd_id: hd.unwrap_or_default().to_owned(),
        owner: String::new(),
    }))
}

/// A device binding itself, with the rights of the owner its token names
/// (none: the router refuses), routed by the device's topic.
fn bind_device(tenant: &str, hd: &str, owner: Option<&str>, conv: &str) -> RequestBody {
    RequestBody::Envelope(request::Body::Bind(BindConversation {
        topic: Some(Topic::new(tenant, TopicKind::Device, hd)),
        conv_id: conv.to_owned(),
        user: String::new(),
        hd_id: hd.to_owned(),
        owner: owner.unwrap_or_default().to_owned(),
    }))
}

pub(super) fn attach(tenant: &str, hd: &str, owner: Option<&str>) -> RequestBody {
    RequestBody::Envelope(request::Body::DeviceAttach(DeviceAttach {
        topic: Some(Topic::new(tenant, TopicKind::Device, hd)),
        owner: owner.unwrap_or_default().to_owned(),
    }))
}

fn params_object(params: Option<Value>) -> Result<Map<String, Value>, RpcError> {
    match params {
        Some(Value::Object(map)) => Ok(map),
        Some(_) => Err(RpcError::InvalidParams(
            "params must be an object".to_owned(),
        )),
        None => Err(RpcError::InvalidParams("params are required".to_owned())),
    }
}

fn string_param(params: &Map<String, Value>, name: &str) -> Result<String, RpcError> {
    match params.get(name) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(RpcError::InvalidParams(format!("{name} must be a string"))),
        None => Err(RpcError::InvalidParams(format!("{name} is required"))),
    }
}

fn key_param(params: &Map<String, Value>, name: &str) -> Result<String, RpcError> {
    let key = string_param(params, name)?;
    if is_valid_key(&key) {
        Ok(key)
    } else {
        Err(RpcError::InvalidParams(format!(
            "{name} must be 1 to {MAX_KEY_BYTES} bytes"
        )))
    }
}

fn ref_param(params: &Map<String, Value>, name: &str) -> Result<Option<String>, RpcError> {
    match params.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(id)) if is_valid_ref(id) => Ok(Some(id.clone())),
        Some(_) => Err(RpcError::InvalidParams(format!(
            "{name} must be a string matching [A-Za-z0-9_.:@-]{{1,128}}"
        ))),
    }
}

fn ttl_param(params: &Map<String, Value>) -> Result<u64, RpcError> {
    match params.get("ttl") {
        None | Some(Value::Null) => Ok(0),
        Some(Value::Number(n)) => match n.as_f64() {
            Some(seconds) if seconds > 0.0 && seconds <= MAX_TTL_SECONDS => {
                Ok((seconds * 1000.0).ceil() as u64)
            }
            _ => Err(RpcError::InvalidParams(
                "ttl must be a number of seconds > 0 (at most ten years)".to_owned(),
            )),
        },
        Some(_) => Err(RpcError::InvalidParams("ttl must be a number".to_owned())),
    }
}

/// A router's refusal as the call's error.
fn refusal(refused: RouterRefusal) -> RpcError {
    match refused.code {
        ErrorCode::Forbidden => RpcError::Unauthorized(refused.message),
        ErrorCode::Invalid => RpcError::InvalidParams(refused.message),
        _ => RpcError::Internal(refused.message),
    }
}

impl RpcSession {
    fn kind_name(&self) -> &'static str {
        self.socket.label()
    }

    pub(super) fn plan(&mut self, element: Element) -> Plan {
        let (id, method, params) = match element {
            Element::Invalid { id, error } => {
                return Plan::Answer(Some(id), Err(error), Vec::new());
            }
            Element::Answer { id, json } => {
                return Plan::Answer(None, Ok(Value::Null), self.relay_answer(&id, json));
            }
            Element::Call { id, method, params } => (id, method, params),
        };
        match self.call(&method, params) {
            Ok(Planned::Now(data, actions)) => Plan::Answer(id, Ok(data), actions),
            Ok(Planned::Wait {
                pending,
                actions,
                request,
            }) => Plan::Wait {
                id,
                pending,
                actions,
                request,
            },
            Err(error) => Plan::Answer(id, Err(error), Vec::new()),
        }
    }

    /// A `subscribe` with `since`, once its owner has said where the
    /// channel's history is: a position ahead of it is -32602 and the
    /// channel is not subscribed (an error answer means the call did
    /// nothing); any other answer subscribes and recovers, the recovery
    /// itself telling what it found.
    pub(super) fn checked_since(
        &mut self,
        id: Option<Id>,
        check: SinceCheck,
        response: Result<Response, Unavailable>,
    ) -> Answered {
        let SinceCheck {
            channel,
            topic,
            since,
        } = check;
        let found = response.ok().and_then(|r| r.history);
        if let Some(found) = found
            && found.verdict == HistoryVerdict::Ahead as i32
        {
            self.channels.remove(&channel);
            let latest = found.latest.unwrap_or_default();
            return (
                id,
                Err(super::recovery::ahead("since", &latest)),
                Vec::new(),
            );
        }
        self.plan_recovery(id, channel, topic, since)
    }

    /// A `subscribe` with `since`: subscribed and recovered at once. Called
    /// alone with an id, its answer (the recovery's outcome in the result
    /// data) comes once the history is read, then the missed messages; in
    /// a batch, or as a notification, it is answered like any subscribe
    /// and a `recovery` notify opens the replay.
    fn plan_recovery(
        &mut self,
        id: Option<Id>,
        channel: String,
        topic: Topic,
        since: switchboard_proto::Position,
    ) -> Answered {
        let batch = self.work.as_ref().is_some_and(|w| w.batch);
        let answer: crate::dialect::RecoveryMapper = match (&id, batch) {
            (Some(call), false) => {
                let (call, channel) = (call.clone(), channel.clone());
                Box::new(move |outcome| super::recovery::subscribe_answer(&call, &channel, outcome))
            }
            _ => Box::new(|outcome| super::recovery::recovery_frame("channel", "since", outcome)),
        };
        let subscribe = Action::SubscribeRecovering {
            topic,
            member: None,
            since,
            answer,
        };
        match (id, batch) {
            (Some(_), false) => (None, Ok(Value::Null), vec![subscribe]),
            (id, _) => (id, Ok(json!({"channel": channel})), vec![subscribe]),
        }
    }

    fn call(&mut self, method: &str, params: Option<Value>) -> Result<Planned, RpcError> {
        match (&self.socket, method) {
            (SocketKind::User { user }, "hardwares.switchConvId") => {
                let params = params_object(params)?;
                let conv = ref_param(&params, "convId")?
                    .ok_or_else(|| RpcError::InvalidParams("convId is required".to_owned()))?;
                let hd = ref_param(&params, "hdId")?;
                Ok(Planned::wait(
                    Pending::Switch {
                        conv: conv.clone(),
                        hd: hd.clone(),
                    },
                    Topic::new(&self.tenant, TopicKind::User, user),
                    bind(&self.tenant, user, &conv, hd.as_deref()),
                ))
            }
            (SocketKind::Hardware { hd, owner }, "hardwares.switchConvId") => {
                let params = params_object(params)?;
                let conv = ref_param(&params, "convId")?
                    .ok_or_else(|| RpcError::InvalidParams("convId is required".to_owned()))?;
                Ok(Planned::wait(
                    Pending::Switch {
                        conv: conv.clone(),
                        hd: Some(hd.clone()),
                    },
                    Topic::new(&self.tenant, TopicKind::Device, hd),
                    bind_device(&self.tenant, hd, owner.as_deref(), &conv),
                ))
            }
            (SocketKind::Hardware { hd, .. }, "device.status") => {
                let status = Value::Object(params_object(params)?);
                let frame = notify_frame("device.status", &json!({"hdId": hd, "status": status}));
                let topic = Topic::new(&self.tenant, TopicKind::Device, hd);
                let body = RequestBody::Envelope(request::Body::DeviceStatus(DeviceStatus {
                    topic: Some(topic.clone()),
                    status: status.to_string().into(),
                    frame,
                }));
                Ok(Planned::wait(
                    Pending::Status { hd: hd.clone() },
                    topic,
                    body,
                ))
            }
            (SocketKind::App { app, .. }, "redis.get" | "redis.set" | "redis.del") => {
                let params = params_object(params)?;
                let key = key_param(&params, "key")?;
                let (action, value, ttl_ms, pending) = match method {
                    "redis.get" => (
                        KvAction::Get,
                        String::new(),
                        0,
                        Pending::Get { key: key.clone() },
                    ),
                    "redis.set" => (
                        KvAction::Set,
                        string_param(&params, "value")?,
                        ttl_param(&params)?,
                        Pending::Set { key: key.clone() },
                    ),
                    _ => (
                        KvAction::Del,
                        String::new(),
                        0,
                        Pending::Del { key: key.clone() },
                    ),
                };
                let topic = Topic::new(&self.tenant, TopicKind::App, app);
                let body = RequestBody::Envelope(request::Body::Kv(KvOp {
                    topic: Some(topic.clone()),
                    action: action as i32,
                    key,
                    value,
                    ttl_ms,
                }));
                Ok(Planned::wait(pending, topic, body))
            }
            (SocketKind::App { app, .. }, "redis.publish") => {
                let params = params_object(params)?;
                let channel = key_param(&params, "channel")?;
                let message = params
                    .get("message")
                    .ok_or_else(|| RpcError::InvalidParams("message is required".to_owned()))?;
                let frame = with_stream(&channel_message_frame(&channel, message), "channel");
                let topic = Topic::new(
                    &self.tenant,
                    TopicKind::AppChannel,
                    &channel_topic_name(app, &channel),
                );
                Ok(Planned::wait(
                    Pending::Publish { channel },
                    topic,
                    RequestBody::Publish(Payload::json(frame)),
                ))
            }
            (SocketKind::App { app, .. }, "subscribe" | "unsubscribe") => {
                let params = params_object(params)?;
                let channel = key_param(&params, "channel")?;
                let topic = Topic::new(
                    &self.tenant,
                    TopicKind::AppChannel,
                    &channel_topic_name(app, &channel),
                );
                let data = json!({"channel": channel});
                if method == "subscribe" {
                    let since = super::recovery::param_since(&params)?;
                    // Subscribed already: the socket is live on the
                    // channel, so it has missed nothing to recover.
                    if self.channels.contains(&channel) {
                        return Ok(Planned::Now(data, Vec::new()));
                    }
                    if self.channels.len() >= self.max_subscriptions {
                        return Err(RpcError::Other(format!(
                            "subscription limit of {} reached",
                            self.max_subscriptions
                        )));
                    }
                    self.channels.insert(channel.clone());
                    // Where the history is comes first: a position ahead
                    // of it refuses the call before anything is subscribed.
                    if let Some(since) = since {
                        let read = RequestBody::Envelope(request::Body::History(HistoryRead {
                            topic: Some(topic.clone()),
                            since: Some(since.clone()),
                            limit: 1,
                        }));
                        return Ok(Planned::wait(
                            Pending::SubscribeSince(Box::new(SinceCheck {
                                channel,
                                topic: topic.clone(),
                                since,
                            })),
                            topic,
                            read,
                        ));
                    }
                    let subscribe = Action::Subscribe {
                        topic: topic.clone(),
                        member: None,
                    };
                    Ok(Planned::Wait {
                        pending: Pending::Subscribe { channel },
                        actions: vec![subscribe],
                        request: (topic, RequestBody::Sync),
                    })
                } else {
                    if !self.channels.remove(&channel) {
                        return Ok(Planned::Now(data, Vec::new()));
                    }
                    let unsubscribe = Action::Unsubscribe {
                        topic: topic.clone(),
                    };
                    Ok(Planned::Wait {
                        pending: Pending::Unsubscribe { channel },
                        actions: vec![unsubscribe],
                        request: (topic, RequestBody::Sync),
                    })
                }
            }
            (SocketKind::App { .. }, "_notify") => {
                let params = params.unwrap_or(Value::Null);
                Ok(Planned::Now(json!({}), self.relay_progress(&params)))
            }
            _ => Err(RpcError::MethodNotFound(
                match METHODS.iter().find(|(name, _)| *name == method) {
                    Some(_) => {
                        format!("{method} is not available on a {} socket", self.kind_name())
                    }
                    None => format!("unknown method {method}"),
                },
            )),
        }
    }

    /// A tool socket's answer to a call the gateway made, sent on to the
    /// router that waits for it. Other answers have no one to go to.
    fn relay_answer(&self, id: &Id, json: String) -> Vec<Action> {
        let Some(call_id) = id.as_str() else {
            return Vec::new();
        };
        self.tool_event(call_id, json.into_bytes(), false)
            .into_iter()
            .collect()
    }

    /// A `tool.progress` note, relayed to the caller of the call it names.
    fn relay_progress(&self, params: &Value) -> Vec<Action> {
        if params.get("type").and_then(Value::as_str) != Some("tool.progress") {
            return Vec::new();
        }
        let Some(call_id) = params
            .get("data")
            .and_then(|d| d.get("id"))
            .and_then(Value::as_str)
        else {
            return Vec::new();
        };
        self.tool_event(call_id.to_owned(), params.to_string().into_bytes(), true)
            .into_iter()
            .collect()
    }

    fn tool_event(&self, call_id: String, json: Vec<u8>, progress: bool) -> Option<Action> {
        let SocketKind::App { app, tool } = &self.socket else {
            return None;
        };
        switchboard_proto::jsonrpc::call_router(&call_id)?;
        let topic = Topic::new(&self.tenant, TopicKind::Tool, &tool_topic_name(app, tool));
        // Waited for, so a call's progress notes and its answer reach the
        // caller in the order the app sent them.
        Some(Action::Await {
            topic: topic.clone(),
            body: RequestBody::Envelope(request::Body::ToolEvent(ToolEvent {
                topic: Some(topic),
                call_id,
                json: json.into(),
                progress,
                // Filled in on the way: the connection by the edge's
                // upstream, the edge by the router's session.
                from_edge: String::new(),
                from_conn: 0,
            })),
            token: super::OPEN_TOKEN,
        })
    }

    /// The answer a waiting call gets, and what the socket does first.
    pub(super) fn complete(
        &mut self,
        pending: Pending,
        response: Result<Response, Unavailable>,
    ) -> (Result<Value, RpcError>, Vec<Action>) {
        let response = match response.map(Response::into_result) {
            Ok(Ok(response)) => response,
            Ok(Err(refused)) => {
                self.undo(&pending);
                return (Err(refusal(refused)), Vec::new());
            }
            Err(Unavailable) => {
                self.undo(&pending);
                return (
                    Err(RpcError::Internal("router unavailable".to_owned())),
                    Vec::new(),
                );
            }
        };
        let data = match pending {
            Pending::Get { key } => json!({"key": key, "value": response.value}),
            Pending::Set { key } => json!({"key": key}),
            Pending::Del { key } => json!({"key": key, "deleted": response.count.min(1)}),
            Pending::Publish { channel } => {
                json!({"channel": channel, "receivers": response.delivered})
            }
            Pending::Subscribe { channel } | Pending::Unsubscribe { channel } => {
                json!({"channel": channel})
            }
            Pending::SubscribeSince(check) => json!({"channel": check.channel}),
            Pending::Status { hd } => json!({"hdId": hd}),
            Pending::Switch { conv, hd } => {
                let data = switched(&conv, hd.as_deref());
                if let SocketKind::User { .. } = self.socket {
                    return (Ok(data), self.rebind_socket(conv));
                }
                data
            }
        };
        (Ok(data), Vec::new())
    }

    /// Moves this user socket to `conv`.
    fn rebind_socket(&mut self, conv: String) -> Vec<Action> {
        let mut actions = Vec::new();
        if self.conv.as_deref() == Some(conv.as_str()) {
            return actions;
        }
        if let Some(old) = self.conv.take() {
            actions.push(Action::Unsubscribe {
                topic: Topic::new(&self.tenant, TopicKind::Conv, &old),
            });
        }
        actions.push(Action::Subscribe {
            topic: Topic::new(&self.tenant, TopicKind::Conv, &conv),
            member: None,
        });
        self.conv = Some(conv);
        actions
    }

    /// A subscription change the router did not confirm is forgotten, so a
    /// retry subscribes again.
    fn undo(&mut self, pending: &Pending) {
        match pending {
            Pending::Subscribe { channel } => {
                self.channels.remove(channel);
            }
            Pending::SubscribeSince(check) => {
                self.channels.remove(&check.channel);
            }
            Pending::Unsubscribe { channel } => {
                self.channels.insert(channel.clone());
            }
            _ => {}
        }
    }
}

/// What a call needs.
enum Planned {
    Now(Value, Vec<Action>),
    Wait {
        pending: Pending,
        actions: Vec<Action>,
        request: (Topic, RequestBody),
    },
}

impl Planned {
    fn wait(pending: Pending, topic: Topic, body: RequestBody) -> Self {
        Self::Wait {
            pending,
            actions: Vec::new(),
            request: (topic, body),
        }
    }
}
