//! Group messaging: `/v3/ws/group/{group_id}/client/{client_id}` (V3 schema)
//! and `/ws/group/{group_id}/client/{client_id}` (V2 legacy, whose sockets
//! send loose JSON and receive V3 messages).
//!
//! A socket subscribes to three topics: its group (with presence as its
//! client id), its client id (direct messages) and its tenant (broadcast).

use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::Value;
use switchboard_common::auth::{AuthError, DEFAULT_TENANT, Kind};
use switchboard_common::clock::iso8601_now;
use switchboard_proto::group::{
    self, ErrorCode, GroupError, GroupMessage, MsgType, Sender, Target,
};
use switchboard_proto::{Payload, Position, Response, Topic, is_valid_id, payload};

use super::{
    Accept, Action, Dialect, DialectSession, Recovery, RequestBody, Unavailable, UpgradeRequest,
};
use crate::server::Refusal;

/// Any valid message keeps its client present; the edge says so at most
/// this often for ordinary messages (heartbeats always), and the router
/// writes the store at most every quarter of the presence TTL. Short, so
/// that a TTL of a few seconds still follows a chatting client.
const TOUCH_INTERVAL: Duration = Duration::from_secs(1);

/// Scope a token needs to use target `broadcast`.
pub const BROADCAST_SCOPE: &str = "broadcast";

pub struct GroupDialect {
    legacy: bool,
}

pub static V3: GroupDialect = GroupDialect { legacy: false };
pub static V2: GroupDialect = GroupDialect { legacy: true };

impl Dialect for GroupDialect {
    fn index(&self) -> usize {
        usize::from(self.legacy)
    }

    fn label(&self) -> &'static str {
        if self.legacy { "group_v2" } else { "group" }
    }

    fn proto(&self) -> switchboard_proto::Dialect {
        if self.legacy {
            switchboard_proto::Dialect::GroupV2
        } else {
            switchboard_proto::Dialect::Group
        }
    }

    fn encode(&self, payload: &Payload, position: Option<&Position>) -> Option<Bytes> {
        match payload.body.as_ref()? {
            payload::Body::Json(bytes) => Some(match position {
                Some(position) => with_position(bytes, position),
                None => bytes.clone(),
            }),
            payload::Body::Presence(event) => Some(to_bytes(&group::presence_event(
                &event.group,
                &event.member,
                event.joined,
                event.count,
                &iso8601_now(),
            ))),
            payload::Body::ImBacklog(_) => None,
        }
    }
}

/// A message with its place in its topic's history as top-level `epoch`
/// and `offset`. Messages are JSON objects completed by the edge or the
/// server API, so the fields go before the closing brace; anything else
/// goes out as it is.
pub fn with_position(message: &Bytes, position: &Position) -> Bytes {
    let Some(body) = message.strip_suffix(b"}") else {
        return message.clone();
    };
    let epoch = serde_json::to_string(&position.epoch).unwrap_or_default();
    let tail = format!(r#","epoch":{epoch},"offset":{}}}"#, position.offset);
    let mut out = Vec::with_capacity(message.len() + tail.len());
    out.extend_from_slice(body);
    out.extend_from_slice(tail.as_bytes());
    Bytes::from(out)
}

/// The message that opens a recovery of `stream` (`group`, `direct` or
/// `broadcast`); a position ahead of the latest is a validation error.
pub fn recovery_frame(stream: &'static str, outcome: Recovery<'_>) -> Bytes {
    let (recovered, missed, latest) = match outcome {
        Recovery::Recovered { missed, latest } => (true, missed, Some(latest)),
        Recovery::Lost { latest } => (false, 0, Some(latest)),
        Recovery::Unavailable => (false, 0, None),
        Recovery::Ahead { latest } => {
            let field = format!("since_{stream}");
            let message = format!(
                "{field} is ahead of the latest position {}:{}",
                latest.epoch, latest.offset
            );
            return error_frame(&GroupError {
                code: ErrorCode::ValidationError,
                field: Some(field),
                message,
            });
        }
    };
    to_bytes(&serde_json::json!({
        "version": "3",
        "msg_type": "recovery",
        "target": "echo",
        "payload": {
            "stream": stream,
            "recovered": recovered,
            "missed": missed,
            "epoch": latest.map_or("", |p| p.epoch.as_str()),
            "offset": latest.map_or(0, |p| p.offset),
        },
        "sent_at": iso8601_now(),
    }))
}

fn to_bytes(value: &Value) -> Bytes {
    Bytes::from(serde_json::to_vec(value).unwrap_or_default())
}

fn error_frame(error: &GroupError) -> Bytes {
    to_bytes(&group::error_message(error, &iso8601_now()))
}

/// Accepts the group routes; `None` for any other path.
pub fn accept(request: &UpgradeRequest<'_>) -> Option<Accept> {
    let segments: Vec<&str> = request.path.trim_start_matches('/').split('/').collect();
    let (legacy, group_id, client_id) = match segments.as_slice() {
        ["v3", "ws", "group", group, "client", client] => (false, *group, *client),
        ["ws", "group", group, "client", client] => (true, *group, *client),
        _ => return None,
    };
    for (field, id) in [("group_id", group_id), ("client_id", client_id)] {
        if !is_valid_id(id) {
            return Some(Accept::Refuse(Refusal::InvalidId { field }));
        }
    }
    let unauthorized = |message: String| Accept::Refuse(Refusal::GroupToken(message));
    if let Ok(claims) = &request.auth
        && let Err(e) = claims.check_kind(Kind::Client)
    {
        super::count_refused_token("group", "kind");
        return Some(unauthorized(e.to_string()));
    }
    // The tenant is the token's, and nothing else: no path, query or
    // header names one on this route.
    let (tenant, may_broadcast) = match &request.auth {
        Ok(claims) if claims.sub == client_id => (
            claims.tenant().to_owned(),
            claims.has_scope(BROADCAST_SCOPE),
        ),
        Ok(_) => {
            super::count_refused_token("group", "sub");
            return Some(Accept::Refuse(Refusal::GroupSub));
        }
        Err(AuthError::Missing) if request.allow_anonymous => (DEFAULT_TENANT.to_owned(), false),
        Err(e) => {
            super::count_refused_token("group", e.label());
            return Some(unauthorized(e.to_string()));
        }
    };
    // Positions to recover from, per stream: group, direct, broadcast.
    let mut since: [Option<Position>; 3] = Default::default();
    for (slot, (stream, _)) in since.iter_mut().zip(STREAMS) {
        let field = match stream {
            "group" => "since_group",
            "direct" => "since_direct",
            _ => "since_broadcast",
        };
        if let Some(text) = request.query.get(field) {
            match Position::parse(text) {
                Some(position) => *slot = Some(position),
                None => return Some(Accept::Refuse(Refusal::InvalidPosition { field })),
            }
        }
    }
    let dialect: &'static GroupDialect = if legacy { &V2 } else { &V3 };
    Some(Accept::Session {
        dialect,
        session: Box::new(GroupSession {
            legacy,
            group_topic: Topic::group(&tenant, group_id),
            tenant: tenant.clone(),
            group_id: group_id.to_owned(),
            client_id: client_id.to_owned(),
            may_broadcast,
            last_touch: None,
            since,
        }),
        tenant,
        principal: client_id.to_owned(),
        trace_id: None,
    })
}

pub struct GroupSession {
    legacy: bool,
    tenant: String,
    group_id: String,
    client_id: String,
    group_topic: Topic,
    may_broadcast: bool,
    last_touch: Option<Instant>,
    /// Where the client asked to recover each of [`STREAMS`] from.
    since: [Option<Position>; 3],
}

/// The streams a group socket recovers, in the order it subscribes: its
/// group (where it is present), its client id, its tenant's broadcast.
const STREAMS: [(&str, bool); 3] = [("group", true), ("direct", false), ("broadcast", false)];

impl GroupSession {
    fn touch(&mut self, always: bool, actions: &mut Vec<Action>) {
        let due = self
            .last_touch
            .is_none_or(|at| at.elapsed() >= TOUCH_INTERVAL);
        if always || due {
            self.last_touch = Some(Instant::now());
            actions.push(Action::Touch {
                topic: self.group_topic.clone(),
            });
        }
    }

    fn completed(&self, message: &GroupMessage) -> Bytes {
        Bytes::from(message.complete(&self.client_id, &self.group_id, &iso8601_now()))
    }

    /// V2: any JSON object is a group message whose `msg` is its `msg`
    /// field and whose `payload` is the whole object.
    fn legacy_message(text: &str) -> Result<GroupMessage, GroupError> {
        let value: Value = serde_json::from_str(text)
            .map_err(|e| GroupError::new(ErrorCode::InvalidJson, format!("invalid JSON: {e}")))?;
        let Value::Object(object) = value else {
            return Err(GroupError::new(
                ErrorCode::ValidationError,
                "a message must be a JSON object",
            ));
        };
        Ok(GroupMessage {
            msg_type: MsgType::Msg,
            target: Target::Group,
            to_id: None,
            group_id: None,
            cmd: None,
            msg: object.get("msg").and_then(Value::as_str).map(str::to_owned),
            payload: Some(object),
        })
    }

    fn route(&mut self, message: GroupMessage) -> Vec<Action> {
        let mut actions = Vec::with_capacity(2);
        self.touch(message.msg_type == MsgType::Heartbeat, &mut actions);
        let action = match (message.msg_type, message.target) {
            (MsgType::Presence, _) => {
                let (group_id, client_id) = (self.group_id.clone(), self.client_id.clone());
                Action::Request {
                    topic: self.group_topic.clone(),
                    body: RequestBody::Presence,
                    on_response: Box::new(move |response| {
                        Some(match response.map(Response::into_result) {
                            Ok(Ok(r)) => to_bytes(&group::presence_members(
                                &group_id,
                                &client_id,
                                &r.members,
                                &iso8601_now(),
                            )),
                            _ => internal("presence is unavailable"),
                        })
                    }),
                }
            }
            (_, Target::Echo) => Action::Reply(self.completed(&message)),
            // Asked, not fired: the owner answers once the message is in
            // its history, and a refusal (the store failed) reaches the
            // sender instead of vanishing.
            (_, Target::Group) => Action::Request {
                topic: self.group_topic.clone(),
                body: RequestBody::Publish(Payload::json(self.completed(&message))),
                on_response: Box::new(publish_outcome),
            },
            (_, Target::Direct) => {
                let to = message.to_id.clone().unwrap_or_default();
                let payload = Payload::json(self.completed(&message));
                Action::Request {
                    topic: Topic::client(&self.tenant, &to),
                    body: RequestBody::Publish(payload),
                    on_response: Box::new(move |response| direct_outcome(&to, response)),
                }
            }
            (_, Target::Broadcast) if !self.may_broadcast => {
                Action::Reply(error_frame(&GroupError::new(
                    ErrorCode::Forbidden,
                    format!("target broadcast needs the `{BROADCAST_SCOPE}` scope"),
                )))
            }
            (_, Target::Broadcast) => Action::Request {
                topic: Topic::tenant(&self.tenant),
                body: RequestBody::Publish(Payload::json(self.completed(&message))),
                on_response: Box::new(publish_outcome),
            },
        };
        actions.push(action);
        actions
    }
}

fn internal(message: &str) -> Bytes {
    error_frame(&GroupError::new(ErrorCode::Internal, message))
}

/// Nothing for a group or broadcast message the owner took, an error
/// for one it refused or never answered.
fn publish_outcome(response: Result<Response, Unavailable>) -> Option<Bytes> {
    match response.map(Response::into_result) {
        Ok(Ok(_)) => None,
        Ok(Err(_)) => Some(internal("message not delivered: router error")),
        Err(_) => Some(internal("message not delivered: router unavailable")),
    }
}

fn direct_outcome(to: &str, response: Result<Response, Unavailable>) -> Option<Bytes> {
    match response.map(Response::into_result) {
        Ok(Err(_)) => Some(internal("message not delivered: router error")),
        Ok(Ok(r)) if r.delivered == 0 => Some(error_frame(&GroupError::new(
            ErrorCode::NotFound,
            format!("client {to} is not connected"),
        ))),
        Ok(Ok(_)) => None,
        Err(_) => Some(internal("message not delivered: router unavailable")),
    }
}

impl DialectSession for GroupSession {
    fn open(&mut self) -> Vec<Action> {
        self.last_touch = Some(Instant::now());
        let topics = [
            self.group_topic.clone(),
            Topic::client(&self.tenant, &self.client_id),
            Topic::tenant(&self.tenant),
        ];
        topics
            .into_iter()
            .zip(STREAMS)
            .zip(std::mem::take(&mut self.since))
            .map(|((topic, (stream, present)), since)| {
                let member = present.then(|| self.client_id.clone());
                match since {
                    Some(since) => Action::SubscribeRecovering {
                        topic,
                        member,
                        since,
                        answer: Box::new(move |outcome| recovery_frame(stream, outcome)),
                    },
                    None => Action::Subscribe { topic, member },
                }
            })
            .collect()
    }

    fn on_text(&mut self, text: &str) -> Vec<Action> {
        let parsed = if self.legacy {
            Self::legacy_message(text)
        } else {
            group::parse(
                text.as_bytes(),
                Sender {
                    client_id: Some(&self.client_id),
                    group_id: &self.group_id,
                },
            )
        };
        match parsed {
            Ok(message) => self.route(message),
            Err(error) => vec![Action::Reply(error_frame(&error))],
        }
    }

    fn rate_limited(&self) -> Bytes {
        error_frame(&GroupError::new(
            ErrorCode::RateLimited,
            "rate limit exceeded: message dropped",
        ))
    }

    fn unavailable(&self) -> Bytes {
        internal("message not delivered: router unavailable")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;
    use serde_json::json;
    use switchboard_common::auth::claims;
    use switchboard_proto::TopicKind;

    fn upgrade(path: &str, sub: &str, scope: Option<&str>) -> Option<Accept> {
        accept(&UpgradeRequest {
            path,
            query: Default::default(),
            headers: &http::HeaderMap::new(),
            auth: Ok(claims(sub, "client", "acme", scope, 60)),
            allow_anonymous: false,
            connect_id: "e-1".into(),
            max_subscriptions: 1024,
            im_path: "/websocket",
            echo_path: None,
        })
    }

    fn upgrade_with_query(query: &[(&str, &str)]) -> Option<Accept> {
        accept(&UpgradeRequest {
            path: "/v3/ws/group/g_1/client/c_1",
            query: query
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            headers: &http::HeaderMap::new(),
            auth: Ok(claims("c_1", "client", "acme", None, 60)),
            allow_anonymous: false,
            connect_id: "e-1".into(),
            max_subscriptions: 1024,
            im_path: "/websocket",
            echo_path: None,
        })
    }

    fn position(epoch: &str, offset: u64) -> Position {
        Position {
            epoch: epoch.into(),
            offset,
        }
    }

    #[test]
    fn positions_are_top_level_fields_of_a_delivered_message() {
        let message = Payload::json(Bytes::from_static(br#"{"version":"3","msg":"hi"}"#));
        let bytes = V3.encode(&message, Some(&position("ab", 7))).unwrap();
        let value: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(value["epoch"], "ab");
        assert_eq!(value["offset"], 7);
        assert_eq!(value["msg"], "hi");
        // Without a position, the message goes out untouched.
        let plain = V3.encode(&message, None).unwrap();
        assert_eq!(&plain[..], br#"{"version":"3","msg":"hi"}"#);
    }

    #[test]
    fn since_parameters_recover_their_streams_and_nothing_else() {
        let Some(Accept::Session { mut session, .. }) =
            upgrade_with_query(&[("since_group", "ab:3"), ("since_broadcast", "cd:0")])
        else {
            panic!("expected a session");
        };
        let actions = session.open();
        let shapes: Vec<(i32, Option<Position>)> = actions
            .iter()
            .map(|a| match a {
                Action::SubscribeRecovering { topic, since, .. } => {
                    (topic.kind, Some(since.clone()))
                }
                Action::Subscribe { topic, .. } => (topic.kind, None),
                _ => panic!("only subscriptions"),
            })
            .collect();
        assert_eq!(
            shapes,
            vec![
                (TopicKind::Group as i32, Some(position("ab", 3))),
                (TopicKind::Client as i32, None),
                (TopicKind::Tenant as i32, Some(position("cd", 0))),
            ]
        );
        let Some(Action::SubscribeRecovering { answer, .. }) = actions.into_iter().next() else {
            panic!("group recovers");
        };
        let latest = position("ab", 9);
        let frame: Value = serde_json::from_slice(&answer(Recovery::Recovered {
            missed: 6,
            latest: &latest,
        }))
        .unwrap();
        assert_eq!(frame["msg_type"], "recovery");
        assert_eq!(frame["target"], "echo");
        assert_eq!(
            frame["payload"],
            json!({"stream":"group","recovered":true,"missed":6,"epoch":"ab","offset":9})
        );
    }

    #[test]
    fn a_malformed_since_refuses_the_upgrade() {
        for bad in ["", "ab", "ab:", ":3", "ab:-1", "a/b:1"] {
            match upgrade_with_query(&[("since_direct", bad)]) {
                Some(Accept::Refuse(Refusal::InvalidPosition { field })) => {
                    assert_eq!(field, "since_direct", "{bad}")
                }
                _ => panic!("{bad:?} accepted"),
            }
        }
    }

    #[test]
    fn a_position_ahead_is_a_validation_error_and_lost_says_so() {
        let latest = position("ab", 2);
        let ahead: Value = serde_json::from_slice(&recovery_frame(
            "direct",
            Recovery::Ahead { latest: &latest },
        ))
        .unwrap();
        assert_eq!(ahead["msg_type"], "error");
        assert_eq!(ahead["payload"]["code"], "validation_error");
        assert_eq!(ahead["payload"]["field"], "since_direct");
        let lost: Value = serde_json::from_slice(&recovery_frame(
            "direct",
            Recovery::Lost { latest: &latest },
        ))
        .unwrap();
        assert_eq!(
            lost["payload"],
            json!({"stream":"direct","recovered":false,"missed":0,"epoch":"ab","offset":2})
        );
    }

    fn session(scope: Option<&str>) -> Box<dyn DialectSession> {
        match upgrade("/v3/ws/group/g_1/client/c_1", "c_1", scope) {
            Some(Accept::Session { session, .. }) => session,
            _ => panic!("expected a session"),
        }
    }

    fn reply_json(actions: &[Action]) -> Value {
        match actions.last() {
            Some(Action::Reply(bytes)) => serde_json::from_slice(bytes).unwrap(),
            _ => panic!("expected a reply"),
        }
    }

    fn refused_status(accept: Option<Accept>) -> (StatusCode, Value) {
        match accept {
            Some(Accept::Refuse(refusal)) => (refusal.status(), refusal.body()),
            _ => panic!("expected a refusal"),
        }
    }

    #[test]
    fn routes() {
        assert!(upgrade("/v3/ws/group/g_1/client/c_1", "c_1", None).is_some());
        assert!(upgrade("/ws/group/g_1/client/c_1", "c_1", None).is_some());
        assert!(upgrade("/v3/ws/group/g_1", "c_1", None).is_none());
        assert!(upgrade("/v3/wss", "c_1", None).is_none());
    }

    #[test]
    fn bad_ids_are_400_naming_the_field() {
        let (status, body) = refused_status(upgrade("/v3/ws/group/123/client/c_1", "c_1", None));
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["error"]["field"], "group_id");
        let (_, body) = refused_status(upgrade("/v3/ws/group/g/client/a.b", "a.b", None));
        assert_eq!(body["error"]["field"], "client_id");
    }

    #[test]
    fn token_must_name_the_client() {
        let (status, _) = refused_status(upgrade("/v3/ws/group/g/client/c_1", "other", None));
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }

    #[test]
    fn only_client_tokens_or_kindless_ones_open_a_group_socket() {
        let headers = http::HeaderMap::new();
        let mut request = UpgradeRequest {
            path: "/v3/ws/group/g/client/c",
            query: Default::default(),
            headers: &headers,
            auth: Ok(claims("c", "user", "acme", None, 60)),
            allow_anonymous: true,
            connect_id: "e-1".into(),
            max_subscriptions: 1024,
            im_path: "/websocket",
            echo_path: None,
        };
        let (status, body) = refused_status(accept(&request));
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let reason = body["error"]["message"].as_str().unwrap_or_default();
        assert!(
            reason.contains("client") && reason.contains("user"),
            "{reason}"
        );
        request.auth = Ok(claims("c", "clients", "acme", None, 60));
        let (_, body) = refused_status(accept(&request));
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .contains("`clients`")
        );
        let mut kindless = claims("c", "client", "acme", None, 60);
        kindless.kind = None;
        request.auth = Ok(kindless);
        match accept(&request) {
            Some(Accept::Session { tenant, .. }) => assert_eq!(tenant, "acme"),
            _ => panic!("a token without kind counts as a client token"),
        }
    }

    #[test]
    fn missing_token_is_401_unless_anonymous_allowed() {
        let headers = http::HeaderMap::new();
        let mut request = UpgradeRequest {
            path: "/v3/ws/group/g/client/c",
            query: Default::default(),
            headers: &headers,
            auth: Err(AuthError::Missing),
            allow_anonymous: false,
            connect_id: "e-1".into(),
            max_subscriptions: 1024,
            im_path: "/websocket",
            echo_path: None,
        };
        assert_eq!(refused_status(accept(&request)).0, StatusCode::UNAUTHORIZED);
        request.allow_anonymous = true;
        assert!(matches!(accept(&request), Some(Accept::Session { .. })));
        request.auth = Err(AuthError::Expired);
        assert_eq!(refused_status(accept(&request)).0, StatusCode::UNAUTHORIZED);
    }

    #[test]
    fn open_subscribes_group_client_and_tenant() {
        let actions = session(None).open();
        let topics: Vec<(i32, String, Option<String>)> = actions
            .iter()
            .map(|a| match a {
                Action::Subscribe { topic, member } => {
                    (topic.kind, topic.name.clone(), member.clone())
                }
                _ => panic!("only subscriptions"),
            })
            .collect();
        assert_eq!(
            topics,
            vec![
                (1, "g_1".to_owned(), Some("c_1".to_owned())),
                (2, "c_1".to_owned(), None),
                (3, String::new(), None),
            ]
        );
    }

    #[test]
    fn echo_and_heartbeat_reply_with_the_completed_message() {
        let mut s = session(None);
        let reply = reply_json(&s.on_text(r#"{"msg_type":"msg","target":"echo","msg":"Ping!"}"#));
        assert_eq!(reply["from_id"], "c_1");
        assert_eq!(reply["group_id"], "g_1");
        assert_eq!(reply["version"], "3");
        assert_eq!(reply["msg"], "Ping!");
        let actions = s.on_text(r#"{"msg_type":"heartbeat","target":"echo"}"#);
        assert!(
            matches!(actions[0], Action::Touch { .. }),
            "heartbeat refreshes presence"
        );
        assert_eq!(reply_json(&actions)["msg_type"], "heartbeat");
    }

    #[test]
    fn broadcast_needs_scope() {
        let mut s = session(None);
        let reply = reply_json(&s.on_text(r#"{"msg_type":"cmd","target":"broadcast","cmd":"X"}"#));
        assert_eq!(reply["payload"]["code"], "forbidden");
        let mut s = session(Some("read broadcast"));
        let actions = s.on_text(r#"{"msg_type":"cmd","target":"broadcast","cmd":"X"}"#);
        let mapper = |actions: Vec<Action>| match actions.into_iter().last() {
            Some(Action::Request {
                topic, on_response, ..
            }) => (topic, on_response),
            _ => panic!("a broadcast is a publish the owner answers"),
        };
        let (topic, taken) = mapper(actions);
        assert_eq!(topic.kind, 3);
        assert_eq!(taken(Ok(Response::default())), None, "taken: no reply");
        let (_, refused) =
            mapper(s.on_text(r#"{"msg_type":"cmd","target":"broadcast","cmd":"Y"}"#));
        let answer = Response {
            error: switchboard_proto::ErrorCode::Internal as i32,
            ..Response::default()
        };
        let reply: Value = serde_json::from_slice(&refused(Ok(answer)).unwrap()).unwrap();
        assert_eq!(reply["payload"]["code"], "internal");
    }

    #[test]
    fn invalid_messages_get_an_error_and_nothing_else() {
        let mut s = session(None);
        let actions = s.on_text("not json");
        assert_eq!(actions.len(), 1);
        assert_eq!(reply_json(&actions)["payload"]["code"], "invalid_json");
        let actions = s.on_text(r#"{"msg_type":"msg","target":"direct"}"#);
        assert_eq!(actions.len(), 1);
        assert_eq!(
            reply_json(&actions)["payload"],
            json!({"code":"validation_error","field":"to_id"})
        );
    }

    #[test]
    fn direct_to_nobody_is_not_found() {
        let response = Response::default();
        let frame = direct_outcome("ghost", Ok(response)).unwrap();
        let value: Value = serde_json::from_slice(&frame).unwrap();
        assert_eq!(value["payload"]["code"], "not_found");
        let delivered = Response {
            delivered: 2,
            ..Default::default()
        };
        assert!(direct_outcome("x", Ok(delivered)).is_none());
        let value: Value =
            serde_json::from_slice(&direct_outcome("x", Err(Unavailable)).unwrap()).unwrap();
        assert_eq!(value["payload"]["code"], "internal");
    }

    #[test]
    fn legacy_objects_become_group_messages() {
        let m = GroupSession::legacy_message(r#"{"msg":"hi","extra":1}"#).unwrap();
        assert_eq!(m.target, Target::Group);
        assert_eq!(m.msg.as_deref(), Some("hi"));
        assert_eq!(m.payload.unwrap()["extra"], 1);
        assert_eq!(
            GroupSession::legacy_message("[1]").unwrap_err().code,
            ErrorCode::ValidationError
        );
        assert_eq!(
            GroupSession::legacy_message("{").unwrap_err().code,
            ErrorCode::InvalidJson
        );
    }

    #[test]
    fn presence_encodes_as_v3() {
        let event = switchboard_proto::PresenceEvent {
            group: "g".into(),
            member: "c".into(),
            joined: true,
            count: 2,
        };
        for dialect in [&V3, &V2] {
            let bytes = dialect
                .encode(&Payload::presence(event.clone()), None)
                .unwrap();
            let v: Value = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(
                v["payload"],
                json!({"event":"join","client_id":"c","count":2})
            );
            assert_eq!(v["msg_type"], "presence");
            assert_eq!(v["target"], "group");
        }
    }
}
