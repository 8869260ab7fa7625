//! The IM dialect's message schema (`40-im.md`), shared by the edge (client
//! messages) and the router (server API messages): fields, type codes,
//! status codes, bodies, id rules, session ids and the 9001 send status.
//!
//! Checks run in a fixed order so each message gets one answer: shape
//! (401, or 404 for a missing body), type (403), then what the caller
//! checks (registration 402, `from` 405, `to` 406, body 404, receipt 407).

use serde_json::{Map, Value, json};

use crate::{Topic, TopicKind};

/// `from` of system messages.
pub const SYSTEM: &str = "SYSTEM";

/// Most users one message may name in `to`.
pub const MAX_RECIPIENTS: usize = 1_000;

/// Longest message id accepted, in bytes.
pub const MAX_ID_LEN: usize = 256;

/// Longest user id, in bytes.
pub const MAX_USER_LEN: usize = 128;

/// Message type codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Register,
    Text,
    Notice,
    TargetNotice,
    SendStatus,
    ReceiveStatus,
}

impl Kind {
    pub fn from_code(code: i64) -> Option<Self> {
        Some(match code {
            1000 => Self::Register,
            2001 => Self::Text,
            3001 => Self::Notice,
            3003 => Self::TargetNotice,
            9001 => Self::SendStatus,
            9101 => Self::ReceiveStatus,
            _ => return None,
        })
    }

    pub fn code(self) -> i64 {
        match self {
            Self::Register => 1000,
            Self::Text => 2001,
            Self::Notice => 3001,
            Self::TargetNotice => 3003,
            Self::SendStatus => 9001,
            Self::ReceiveStatus => 9101,
        }
    }

    pub fn is_notice(self) -> bool {
        matches!(self, Self::Notice | Self::TargetNotice)
    }
}

/// StatusBody `code` and `status` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Success,
    Failed,
    MessageError,
    SessionError,
    TypeError,
    BodyError,
    FromError,
    ToError,
    ReceiveError,
}

impl Status {
    pub fn code(self) -> u16 {
        match self {
            Self::Success => 200,
            Self::Failed => 400,
            Self::MessageError => 401,
            Self::SessionError => 402,
            Self::TypeError => 403,
            Self::BodyError => 404,
            Self::FromError => 405,
            Self::ToError => 406,
            Self::ReceiveError => 407,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Success => "SUCCESS",
            Self::Failed => "FAILED",
            Self::MessageError => "MESSAGE_ERROR",
            Self::SessionError => "SESSION_ERROR",
            Self::TypeError => "TYPE_ERROR",
            Self::BodyError => "BODY_ERROR",
            Self::FromError => "FROM_ERROR",
            Self::ToError => "TO_ERROR",
            Self::ReceiveError => "RECEIVE_ERROR",
        }
    }
}

/// Why a message was refused: the status to answer with, the field at
/// fault and a message naming it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    pub status: Status,
    pub field: &'static str,
    pub message: String,
}

impl Refusal {
    pub fn new(status: Status, field: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            field,
            message: message.into(),
        }
    }
}

/// A refused message, with what it said of its `id` and `from` so the
/// send status can still answer it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub refusal: Refusal,
    pub id: String,
    pub from: String,
}

/// A message whose fields have the right shape and whose type is known.
#[derive(Debug, Clone, PartialEq)]
pub struct ImMessage {
    pub id: String,
    pub kind: Kind,
    pub is_system: bool,
    pub from: String,
    pub to: String,
    pub body: String,
    pub timestamp: Option<i64>,
    /// Every field as received, unknown ones included: what is relayed.
    object: Map<String, Value>,
}

fn shape(field: &'static str, message: impl Into<String>) -> Refusal {
    Refusal::new(Status::MessageError, field, message)
}

fn body_error(message: impl Into<String>) -> Refusal {
    Refusal::new(Status::BodyError, "body", message)
}

fn string_field(object: &Map<String, Value>, field: &'static str) -> Result<String, Refusal> {
    match object.get(field) {
        Some(Value::String(s)) => Ok(s.clone()),
        None | Some(Value::Null) => Err(shape(field, format!("{field} is required"))),
        Some(_) => Err(shape(field, format!("{field} must be a string"))),
    }
}

impl ImMessage {
    /// Parses one client frame.
    pub fn parse(text: &str) -> Result<Self, Refused> {
        let object = match serde_json::from_str(text) {
            Ok(Value::Object(object)) => object,
            Ok(_) => return Err(refused(shape("", "a message must be a JSON object"), None)),
            Err(e) => {
                return Err(refused(
                    shape("", format!("a message must be JSON: {e}")),
                    None,
                ));
            }
        };
        Self::from_object(object).map_err(|(refusal, object)| refused(refusal, Some(&object)))
    }

    /// Checks the fields of a message already parsed as a JSON object.
    pub fn from_object(
        object: Map<String, Value>,
    ) -> Result<Self, (Refusal, Box<Map<String, Value>>)> {
        match Self::check(&object) {
            Ok(fields) => Ok(Self { object, ..fields }),
            Err(refusal) => Err((refusal, Box::new(object))),
        }
    }

    fn check(object: &Map<String, Value>) -> Result<Self, Refusal> {
        let id = string_field(object, "id")?;
        if id.is_empty() || id.len() > MAX_ID_LEN {
            return Err(shape("id", format!("id must be 1 to {MAX_ID_LEN} bytes")));
        }
        let code = match object.get("type") {
            None | Some(Value::Null) => return Err(shape("type", "type is required")),
            Some(value) => value
                .as_i64()
                .ok_or_else(|| shape("type", "type must be an integer"))?,
        };
        let is_system = match object.get("isSystem") {
            Some(Value::Bool(b)) => *b,
            None | Some(Value::Null) => return Err(shape("isSystem", "isSystem is required")),
            Some(_) => return Err(shape("isSystem", "isSystem must be a boolean")),
        };
        let from = string_field(object, "from")?;
        let to = string_field(object, "to")?;
        let body = match object.get("body") {
            Some(Value::String(s)) => s.clone(),
            None | Some(Value::Null) => return Err(body_error("body is required")),
            Some(_) => return Err(shape("body", "body must be a string")),
        };
        let timestamp = match object.get("timestamp") {
            None | Some(Value::Null) => None,
            Some(value) => Some(value.as_i64().ok_or_else(|| {
                shape("timestamp", "timestamp must be an integer (milliseconds)")
            })?),
        };
        let kind = Kind::from_code(code).ok_or_else(|| {
            Refusal::new(
                Status::TypeError,
                "type",
                format!("unknown type {code}: use 1000, 2001, 3001, 3003 or 9101"),
            )
        })?;
        Ok(Self {
            id,
            kind,
            is_system,
            from,
            to,
            body,
            timestamp,
            object: Map::new(),
        })
    }

    /// The message as relayed: unchanged but for a filled `timestamp`.
    pub fn wire(&self, now_ms: u64) -> String {
        let mut object = self.object.clone();
        if self.timestamp.is_none() {
            object.insert("timestamp".into(), json!(now_ms));
        }
        Value::Object(object).to_string()
    }

    /// A message from the server API: `from` (default `SYSTEM`), `isSystem`
    /// (default true) and `id` (default `new_id()`) may be left out; the
    /// type must be 2001, 3001 or 3003 and `to` and `body` must be valid.
    pub fn system(
        mut object: Map<String, Value>,
        new_id: impl FnOnce() -> String,
    ) -> Result<Self, Refusal> {
        object.entry("from").or_insert_with(|| Value::from(SYSTEM));
        object.entry("isSystem").or_insert(Value::Bool(true));
        if !object.contains_key("id") {
            object.insert("id".into(), Value::from(new_id()));
        }
        let message = Self::from_object(object).map_err(|(refusal, _)| refusal)?;
        if message.from != SYSTEM {
            return Err(shape("from", "from must be SYSTEM"));
        }
        if !message.is_system {
            return Err(shape("isSystem", "isSystem must be true"));
        }
        if !matches!(message.kind, Kind::Text | Kind::Notice | Kind::TargetNotice) {
            return Err(Refusal::new(
                Status::TypeError,
                "type",
                "type must be 2001, 3001 or 3003",
            ));
        }
        recipients(&message.to)?;
        check_body(message.kind, &message.body)?;
        Ok(message)
    }
}

fn refused(refusal: Refusal, object: Option<&Map<String, Value>>) -> Refused {
    let text = |field: &str| {
        object
            .and_then(|o| o.get(field))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    Refused {
        refusal,
        id: text("id"),
        from: text("from"),
    }
}

/// User ids (a token's `sub`, the names in `to`): 1 to 128 bytes, no
/// whitespace, control characters or commas (commas separate recipients).
pub fn is_valid_user(user: &str) -> bool {
    !user.is_empty()
        && user.len() <= MAX_USER_LEN
        && !user
            .chars()
            .any(|c| c == ',' || c.is_whitespace() || c.is_control())
}

/// `clientName`: `[A-Za-z0-9_.-]{1,64}`.
pub fn is_valid_client_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// The users named in `to`: comma-separated, blanks around names ignored,
/// duplicates dropped, order kept.
pub fn recipients(to: &str) -> Result<Vec<String>, Refusal> {
    let to_error = |message: String| Refusal::new(Status::ToError, "to", message);
    if to.trim().is_empty() {
        return Err(to_error("to is empty".to_owned()));
    }
    let mut users: Vec<String> = Vec::new();
    for name in to.split(',').map(str::trim) {
        if !is_valid_user(name) {
            return Err(to_error(format!(
                "to must list user ids (1 to {MAX_USER_LEN} bytes, no blanks or control characters) separated by commas"
            )));
        }
        if !users.iter().any(|u| u == name) {
            users.push(name.to_owned());
        }
    }
    if users.len() > MAX_RECIPIENTS {
        return Err(to_error(format!(
            "to names more than {MAX_RECIPIENTS} users"
        )));
    }
    Ok(users)
}

fn body_object(body: &str, what: &str) -> Result<Map<String, Value>, Refusal> {
    match serde_json::from_str(body) {
        Ok(Value::Object(object)) => Ok(object),
        _ => Err(body_error(format!(
            "body must be a {what} JSON object encoded as a string"
        ))),
    }
}

fn body_string(object: &Map<String, Value>, field: &str, required: bool) -> Result<(), Refusal> {
    match object.get(field) {
        Some(Value::String(s)) if !(required && s.is_empty()) => Ok(()),
        None | Some(Value::Null) if !required => Ok(()),
        _ => Err(body_error(format!(
            "body.{field} must be a{} string",
            if required { " non-empty" } else { "" }
        ))),
    }
}

/// The `sessionId` of a register body (RegisterBody).
pub fn register_body(body: &str) -> Result<String, Refusal> {
    let object = body_object(body, "RegisterBody")?;
    match object.get("sessionId") {
        Some(Value::String(id)) if !id.is_empty() => Ok(id.clone()),
        _ => Err(body_error("body.sessionId must be a non-empty string")),
    }
}

/// Checks the body a message of `kind` must carry.
pub fn check_body(kind: Kind, body: &str) -> Result<(), Refusal> {
    if body.is_empty() {
        return Err(body_error("body is empty"));
    }
    match kind {
        Kind::Register => register_body(body).map(drop),
        Kind::Text => Ok(()),
        Kind::Notice | Kind::TargetNotice => {
            let object = body_object(body, "NoticeBody")?;
            if !matches!(object.get("title"), Some(Value::String(_))) {
                return Err(body_error("body.title must be a string"));
            }
            if !matches!(object.get("msg"), Some(Value::String(_))) {
                return Err(body_error("body.msg must be a string"));
            }
            // A 3003 notice exists for its target.
            body_string(&object, "target", kind == Kind::TargetNotice)?;
            body_string(&object, "serviceId", false)
        }
        Kind::SendStatus | Kind::ReceiveStatus => {
            let object = body_object(body, "StatusBody")?;
            if !object.get("code").is_some_and(Value::is_i64) {
                return Err(body_error("body.code must be an integer"));
            }
            if !matches!(object.get("status"), Some(Value::String(_))) {
                return Err(body_error("body.status must be a string"));
            }
            if !matches!(object.get("msg"), Some(Value::String(_))) {
                return Err(body_error("body.msg must be a string"));
            }
            Ok(())
        }
    }
}

/// The 9001 send status answering message `id` of user `to`.
pub fn send_status(id: &str, to: &str, status: Status, msg: &str, now_ms: u64) -> String {
    let body = json!({"code": status.code(), "status": status.name(), "msg": msg});
    json!({
        "id": id,
        "type": Kind::SendStatus.code(),
        "isSystem": true,
        "from": SYSTEM,
        "to": to,
        "body": body.to_string(),
        "timestamp": now_ms,
    })
    .to_string()
}

/// A session id: random hex, then the tenant, so a socket that presents
/// it (with no token) can be routed to the tenant's routers.
pub fn session_id(tenant: &str, random_hex: &str) -> String {
    format!("{random_hex}.{tenant}")
}

/// The tenant a session id names, when it has the shape [`session_id`] makes.
pub fn session_tenant(session_id: &str) -> Option<&str> {
    let (random, tenant) = session_id.split_once('.')?;
    let random_ok = random.len() == 32 && random.bytes().all(|b| b.is_ascii_hexdigit());
    (random_ok && crate::ids::is_valid_tenant(tenant)).then_some(tenant)
}

impl Topic {
    /// The IM sockets of `user`.
    pub fn im_user(tenant: &str, user: &str) -> Self {
        Self::new(tenant, TopicKind::ImUser, user)
    }

    /// An IM login session.
    pub fn im_session(tenant: &str, session_id: &str) -> Self {
        Self::new(tenant, TopicKind::ImSession, session_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(fields: Value) -> String {
        let mut base =
            json!({"id":"m1","type":2001,"isSystem":false,"from":"alice","to":"bob","body":"hi"});
        if let (Value::Object(base), Value::Object(fields)) = (&mut base, fields) {
            for (k, v) in fields {
                if v == json!("<remove>") {
                    base.remove(&k);
                } else {
                    base.insert(k, v);
                }
            }
        }
        base.to_string()
    }

    fn status_of(text: &str) -> Status {
        ImMessage::parse(text).unwrap_err().refusal.status
    }

    #[test]
    fn a_valid_text_message() {
        let m = ImMessage::parse(&message(json!({}))).unwrap();
        assert_eq!(
            (m.id.as_str(), m.kind, m.from.as_str(), m.to.as_str()),
            ("m1", Kind::Text, "alice", "bob")
        );
        let wire: Value = serde_json::from_str(&m.wire(42)).unwrap();
        assert_eq!(wire["timestamp"], 42, "filled when absent");
        let with_time = ImMessage::parse(&message(json!({"timestamp": 7, "extra": [1]}))).unwrap();
        let wire: Value = serde_json::from_str(&with_time.wire(42)).unwrap();
        assert_eq!(
            (wire["timestamp"].as_i64(), wire["extra"].clone()),
            (Some(7), json!([1]))
        );
    }

    #[test]
    fn shape_errors_are_401_and_name_the_field() {
        for (text, field) in [
            ("not json".to_owned(), ""),
            ("[1]".to_owned(), ""),
            (message(json!({"id": "<remove>"})), "id"),
            (message(json!({"id": 5})), "id"),
            (message(json!({"id": ""})), "id"),
            (message(json!({"id": "x".repeat(MAX_ID_LEN + 1)})), "id"),
            (message(json!({"type": "2001"})), "type"),
            (message(json!({"type": 2001.5})), "type"),
            (message(json!({"type": "<remove>"})), "type"),
            (message(json!({"isSystem": "no"})), "isSystem"),
            (message(json!({"from": 1})), "from"),
            (message(json!({"to": null})), "to"),
            (message(json!({"body": {"a": 1}})), "body"),
            (message(json!({"timestamp": "now"})), "timestamp"),
        ] {
            let refused = ImMessage::parse(&text).unwrap_err();
            assert_eq!(refused.refusal.status, Status::MessageError, "{text}");
            assert_eq!(refused.refusal.field, field, "{text}");
        }
        let refused = ImMessage::parse(&message(json!({"from": 1}))).unwrap_err();
        assert_eq!(refused.id, "m1", "the reply can still answer the id");
    }

    #[test]
    fn missing_body_is_404_unknown_type_is_403() {
        assert_eq!(
            status_of(&message(json!({"body": "<remove>"}))),
            Status::BodyError
        );
        assert_eq!(
            status_of(&message(json!({"type": 1234}))),
            Status::TypeError
        );
    }

    #[test]
    fn recipients_rule() {
        assert_eq!(recipients("bob").unwrap(), vec!["bob"]);
        assert_eq!(recipients("bob, carol,bob").unwrap(), vec!["bob", "carol"]);
        for bad in ["", "  ", "bob,", ",bob", "bob,,carol", "a b", "tab\tx"] {
            assert_eq!(
                recipients(bad).unwrap_err().status,
                Status::ToError,
                "{bad:?}"
            );
        }
        let many: Vec<String> = (0..=MAX_RECIPIENTS).map(|i| format!("u{i}")).collect();
        assert!(recipients(&many.join(",")).is_err());
    }

    #[test]
    fn bodies() {
        assert_eq!(register_body(r#"{"sessionId":"s"}"#).unwrap(), "s");
        for bad in ["", "s", "{}", r#"{"sessionId":1}"#, r#"{"sessionId":""}"#] {
            assert!(register_body(bad).is_err(), "{bad}");
        }
        assert!(check_body(Kind::Text, "").is_err());
        assert!(check_body(Kind::Notice, r#"{"title":"t","msg":"m"}"#).is_ok());
        assert!(check_body(Kind::Notice, r#"{"title":"t"}"#).is_err());
        assert!(check_body(Kind::Notice, r#"{"title":"t","msg":"m","target":5}"#).is_err());
        assert!(check_body(Kind::TargetNotice, r#"{"title":"t","msg":"m"}"#).is_err());
        assert!(
            check_body(
                Kind::TargetNotice,
                r#"{"title":"t","msg":"m","target":"/x"}"#
            )
            .is_ok()
        );
        assert!(
            check_body(
                Kind::ReceiveStatus,
                r#"{"code":200,"status":"SUCCESS","msg":""}"#
            )
            .is_ok()
        );
        assert!(
            check_body(
                Kind::ReceiveStatus,
                r#"{"code":"200","status":"SUCCESS","msg":""}"#
            )
            .is_err()
        );
        assert!(check_body(Kind::ReceiveStatus, "ok").is_err());
    }

    #[test]
    fn send_status_shape() {
        let reply: Value =
            serde_json::from_str(&send_status("m1", "alice", Status::ToError, "bad", 9)).unwrap();
        assert_eq!(reply["type"], 9001);
        assert_eq!(reply["from"], SYSTEM);
        assert_eq!(reply["isSystem"], true);
        let body: Value = serde_json::from_str(reply["body"].as_str().unwrap()).unwrap();
        assert_eq!(body, json!({"code":406,"status":"TO_ERROR","msg":"bad"}));
    }

    #[test]
    fn system_messages_default_their_sender() {
        let object = json!({"type":3001,"to":"bob","body":"{\"title\":\"t\",\"msg\":\"m\"}"});
        let Value::Object(object) = object else {
            unreachable!()
        };
        let m = ImMessage::system(object, || "gen".into()).unwrap();
        assert_eq!(
            (m.id.as_str(), m.from.as_str(), m.is_system),
            ("gen", SYSTEM, true)
        );
        let Value::Object(bad) = json!({"type":2001,"from":"alice","to":"bob","body":"x"}) else {
            unreachable!()
        };
        assert_eq!(
            ImMessage::system(bad, || "gen".into()).unwrap_err().field,
            "from"
        );
        let Value::Object(bad) = json!({"type":9101,"to":"bob","body":"x"}) else {
            unreachable!()
        };
        assert_eq!(
            ImMessage::system(bad, || "gen".into()).unwrap_err().field,
            "type"
        );
    }

    #[test]
    fn ids_and_sessions() {
        assert!(is_valid_client_name("web-1.app_2"));
        assert!(!is_valid_client_name("客户端"));
        assert!(!is_valid_client_name(&"a".repeat(65)));
        assert!(!is_valid_client_name(""));
        assert!(is_valid_user("user@example.com"));
        assert!(!is_valid_user("a,b"));
        let id = session_id("acme.io", &"ab".repeat(16));
        assert_eq!(session_tenant(&id), Some("acme.io"));
        assert_eq!(session_tenant("nope"), None);
        assert_eq!(session_tenant(&format!("{}.a:b", "ab".repeat(16))), None);
    }
}
