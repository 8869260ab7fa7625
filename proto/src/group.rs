//! The group-messaging message schema (WS_Message_V3), shared by the edge
//! (client messages) and the router (server API messages).
//!
//! Validation is strict and names the field at fault, so each dialect can
//! turn a [`GroupError`] into its own error reply.

use serde_json::{Map, Value};

/// `payload.code` values of the group dialect's error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    InvalidJson,
    ValidationError,
    Forbidden,
    NotFound,
    RateLimited,
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidJson => "invalid_json",
            Self::ValidationError => "validation_error",
            Self::Forbidden => "forbidden",
            Self::NotFound => "not_found",
            Self::RateLimited => "rate_limited",
            Self::Internal => "internal",
        }
    }
}

/// Why a message was refused: a code, the field at fault (if any) and a
/// human-readable message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct GroupError {
    pub code: ErrorCode,
    pub field: Option<String>,
    pub message: String,
}

impl GroupError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            field: None,
            message: message.into(),
        }
    }

    fn field(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            code: ErrorCode::ValidationError,
            field: Some(field.to_owned()),
            message: message.into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MsgType {
    Msg,
    Cmd,
    Heartbeat,
    Presence,
}

impl MsgType {
    pub const ALL: [MsgType; 4] = [Self::Msg, Self::Cmd, Self::Heartbeat, Self::Presence];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Msg => "msg",
            Self::Cmd => "cmd",
            Self::Heartbeat => "heartbeat",
            Self::Presence => "presence",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Direct,
    Group,
    Broadcast,
    Echo,
}

impl Target {
    pub const ALL: [Target; 4] = [Self::Direct, Self::Group, Self::Broadcast, Self::Echo];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Group => "group",
            Self::Broadcast => "broadcast",
            Self::Echo => "echo",
        }
    }
}

/// The fields a client may send; anything else is an unknown field.
const FIELDS: [&str; 10] = [
    "version", "msg_type", "target", "from_id", "to_id", "group_id", "cmd", "msg", "payload",
    "sent_at",
];

/// A validated message, before the server completes it.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupMessage {
    pub msg_type: MsgType,
    pub target: Target,
    pub to_id: Option<String>,
    pub group_id: Option<String>,
    pub cmd: Option<String>,
    pub msg: Option<String>,
    pub payload: Option<Map<String, Value>>,
}

/// Who is sending, for the `from_id`/`group_id` checks.
#[derive(Debug, Clone, Copy)]
pub struct Sender<'a> {
    /// `None` for the server API, which must not send `from_id`.
    pub client_id: Option<&'a str>,
    pub group_id: &'a str,
}

/// Parses and validates a V3 message.
pub fn parse(text: &[u8], sender: Sender<'_>) -> Result<GroupMessage, GroupError> {
    let value: Value = serde_json::from_slice(text)
        .map_err(|e| GroupError::new(ErrorCode::InvalidJson, format!("invalid JSON: {e}")))?;
    let Value::Object(object) = value else {
        return Err(GroupError::new(
            ErrorCode::ValidationError,
            "a message must be a JSON object",
        ));
    };
    validate(object, sender)
}

/// Validates an already parsed JSON object.
pub fn validate(
    mut object: Map<String, Value>,
    sender: Sender<'_>,
) -> Result<GroupMessage, GroupError> {
    if let Some(unknown) = object.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(GroupError {
            code: ErrorCode::ValidationError,
            field: Some(unknown.clone()),
            message: format!("unknown field `{unknown}`"),
        });
    }
    if let Some(version) = optional_string(&mut object, "version")?
        && version != "3"
    {
        return Err(GroupError::field("version", "version must be \"3\""));
    }
    let msg_type = required_string(&mut object, "msg_type")?;
    let msg_type = MsgType::ALL
        .into_iter()
        .find(|t| t.as_str() == msg_type)
        .ok_or_else(|| {
            GroupError::field(
                "msg_type",
                "msg_type must be one of msg, cmd, heartbeat, presence",
            )
        })?;
    let target = required_string(&mut object, "target")?;
    let target = Target::ALL
        .into_iter()
        .find(|t| t.as_str() == target)
        .ok_or_else(|| {
            GroupError::field(
                "target",
                "target must be one of direct, group, broadcast, echo",
            )
        })?;
    if matches!(msg_type, MsgType::Heartbeat | MsgType::Presence) && target != Target::Echo {
        return Err(GroupError::field(
            "target",
            format!("{} messages must use target echo", msg_type.as_str()),
        ));
    }
    let from_id = optional_string(&mut object, "from_id")?;
    match (from_id, sender.client_id) {
        (Some(_), None) => {
            return Err(GroupError::field(
                "from_id",
                "from_id is set by the server and must not be sent",
            ));
        }
        (Some(from), Some(own)) if from != own => {
            return Err(GroupError::field(
                "from_id",
                "from_id must be the sender's own client_id",
            ));
        }
        _ => {}
    }
    let group_id = optional_string(&mut object, "group_id")?;
    if let Some(group) = &group_id
        && group != sender.group_id
    {
        return Err(GroupError::field(
            "group_id",
            "group_id must be the sender's own group_id",
        ));
    }
    let to_id = optional_string(&mut object, "to_id")?;
    if target == Target::Direct {
        match &to_id {
            None => {
                return Err(GroupError::field(
                    "to_id",
                    "to_id is required when target is direct",
                ));
            }
            Some(to) if !crate::is_valid_id(to) => {
                return Err(GroupError::field(
                    "to_id",
                    crate::ids::invalid_id_message("to_id"),
                ));
            }
            Some(_) => {}
        }
    }
    let cmd = optional_string(&mut object, "cmd")?;
    let msg = optional_string(&mut object, "msg")?;
    let _sent_at = optional_string(&mut object, "sent_at")?;
    let payload = match object.remove("payload") {
        None | Some(Value::Null) => None,
        Some(Value::Object(map)) => Some(map),
        Some(_) => return Err(GroupError::field("payload", "payload must be an object")),
    };
    Ok(GroupMessage {
        msg_type,
        target,
        to_id,
        group_id,
        cmd,
        msg,
        payload,
    })
}

fn required_string(
    object: &mut Map<String, Value>,
    field: &'static str,
) -> Result<String, GroupError> {
    optional_string(object, field)?
        .ok_or_else(|| GroupError::field(field, format!("{field} is required")))
}

/// A string field; `null` counts as absent.
fn optional_string(
    object: &mut Map<String, Value>,
    field: &'static str,
) -> Result<Option<String>, GroupError> {
    match object.remove(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(GroupError::field(
            field,
            format!("{field} must be a string"),
        )),
    }
}

impl GroupMessage {
    /// The message as delivered, in wire bytes: `version`, `from_id`,
    /// `group_id` and `sent_at` filled in by the server. Written straight
    /// from the parsed parts, without building a second JSON tree.
    pub fn complete(&self, from_id: &str, group_id: &str, sent_at: &str) -> Vec<u8> {
        let wire = Delivered {
            version: "3",
            msg_type: self.msg_type.as_str(),
            target: self.target.as_str(),
            from_id,
            to_id: self.to_id.as_deref(),
            group_id,
            cmd: self.cmd.as_deref(),
            msg: self.msg.as_deref(),
            payload: self.payload.as_ref(),
            sent_at,
        };
        // Serializing borrowed strings and an already valid map cannot fail.
        serde_json::to_vec(&wire).unwrap_or_default()
    }
}

/// The delivered form of a message, fields in their wire order.
#[derive(serde::Serialize)]
struct Delivered<'a> {
    version: &'static str,
    msg_type: &'static str,
    target: &'static str,
    from_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    to_id: Option<&'a str>,
    group_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    cmd: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    msg: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload: Option<&'a Map<String, Value>>,
    sent_at: &'a str,
}

/// An error message in the group dialect's wire form.
pub fn error_message(error: &GroupError, sent_at: &str) -> Value {
    let mut payload = Map::new();
    payload.insert("code".into(), error.code.as_str().into());
    if let Some(field) = &error.field {
        let field = field.as_str();
        payload.insert("field".into(), field.into());
    }
    serde_json::json!({
        "version": "3",
        "msg_type": "error",
        "target": "echo",
        "msg": error.message,
        "payload": payload,
        "sent_at": sent_at,
    })
}

/// A presence change as delivered to the group.
pub fn presence_event(
    group_id: &str,
    client_id: &str,
    joined: bool,
    count: u32,
    sent_at: &str,
) -> Value {
    serde_json::json!({
        "version": "3",
        "msg_type": "presence",
        "target": "group",
        "group_id": group_id,
        "from_id": client_id,
        "payload": {
            "event": if joined { "join" } else { "leave" },
            "client_id": client_id,
            "count": count,
        },
        "sent_at": sent_at,
    })
}

/// The answer to a presence query.
pub fn presence_members(
    group_id: &str,
    client_id: &str,
    members: &[String],
    sent_at: &str,
) -> Value {
    serde_json::json!({
        "version": "3",
        "msg_type": "presence",
        "target": "echo",
        "from_id": client_id,
        "group_id": group_id,
        "payload": { "members": members, "count": members.len() },
        "sent_at": sent_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ME: Sender<'static> = Sender {
        client_id: Some("me_1"),
        group_id: "grp_1",
    };
    const SERVER: Sender<'static> = Sender {
        client_id: None,
        group_id: "grp_1",
    };

    fn check(value: Value, sender: Sender<'_>) -> Result<GroupMessage, GroupError> {
        parse(value.to_string().as_bytes(), sender)
    }

    fn refused(value: Value, sender: Sender<'_>) -> (ErrorCode, Option<String>) {
        let e = check(value, sender).expect_err("must be refused");
        (e.code, e.field)
    }

    #[test]
    fn minimal_group_message() {
        let m = check(json!({"msg_type":"msg","target":"group","msg":"hi"}), ME).unwrap();
        assert_eq!(m.msg_type, MsgType::Msg);
        assert_eq!(m.target, Target::Group);
        assert_eq!(m.msg.as_deref(), Some("hi"));
    }

    #[test]
    fn every_msg_type_and_target_is_accepted() {
        for t in [MsgType::Msg, MsgType::Cmd] {
            for target in Target::ALL {
                let mut v = json!({"msg_type": t.as_str(), "target": target.as_str()});
                if target == Target::Direct {
                    v["to_id"] = json!("you_1");
                }
                let m = check(v, ME).unwrap();
                assert_eq!((m.msg_type, m.target), (t, target));
            }
        }
        check(json!({"msg_type":"heartbeat","target":"echo"}), ME).unwrap();
        check(json!({"msg_type":"presence","target":"echo"}), ME).unwrap();
    }

    #[test]
    fn not_json_is_invalid_json() {
        let e = parse(b"{nope", ME).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidJson);
        let e = parse(b"", ME).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidJson);
    }

    #[test]
    fn non_object_is_validation_error() {
        for v in [json!([]), json!(1), json!("s"), json!(null)] {
            assert_eq!(refused(v, ME), (ErrorCode::ValidationError, None));
        }
    }

    #[test]
    fn required_fields() {
        assert_eq!(
            refused(json!({"target":"group"}), ME),
            (ErrorCode::ValidationError, Some("msg_type".to_owned()))
        );
        assert_eq!(
            refused(json!({"msg_type":"msg"}), ME),
            (ErrorCode::ValidationError, Some("target".to_owned()))
        );
        assert_eq!(
            refused(json!({"msg_type":null,"target":"group"}), ME),
            (ErrorCode::ValidationError, Some("msg_type".to_owned()))
        );
    }

    #[test]
    fn unknown_enum_values() {
        assert_eq!(
            refused(json!({"msg_type":"shout","target":"group"}), ME),
            (ErrorCode::ValidationError, Some("msg_type".to_owned()))
        );
        assert_eq!(
            refused(json!({"msg_type":"msg","target":"everyone"}), ME),
            (ErrorCode::ValidationError, Some("target".to_owned()))
        );
    }

    #[test]
    fn wrong_types() {
        for (field, value) in [
            ("msg_type", json!(1)),
            ("target", json!(["group"])),
            ("to_id", json!(5)),
            ("from_id", json!(true)),
            ("group_id", json!({})),
            ("cmd", json!(1.5)),
            ("msg", json!({"a":1})),
            ("payload", json!("text")),
            ("payload", json!([1, 2])),
            ("version", json!(3)),
            ("sent_at", json!(0)),
        ] {
            let mut v = json!({"msg_type":"msg","target":"group"});
            v[field] = value;
            assert_eq!(
                refused(v, ME),
                (ErrorCode::ValidationError, Some(field.to_owned())),
                "{field}"
            );
        }
    }

    #[test]
    fn version_must_be_3() {
        assert_eq!(
            refused(json!({"version":"2","msg_type":"msg","target":"group"}), ME),
            (ErrorCode::ValidationError, Some("version".to_owned()))
        );
        check(json!({"version":"3","msg_type":"msg","target":"group"}), ME).unwrap();
    }

    #[test]
    fn direct_needs_a_valid_to_id() {
        let e = check(json!({"msg_type":"msg","target":"direct"}), ME).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("to_id"));
        assert_eq!(e.message, "to_id is required when target is direct");
        assert_eq!(
            refused(
                json!({"msg_type":"msg","target":"direct","to_id":"12345"}),
                ME
            ),
            (ErrorCode::ValidationError, Some("to_id".to_owned()))
        );
        assert_eq!(
            refused(
                json!({"msg_type":"msg","target":"direct","to_id":"a b"}),
                ME
            ),
            (ErrorCode::ValidationError, Some("to_id".to_owned()))
        );
    }

    #[test]
    fn from_and_group_must_be_own() {
        assert_eq!(
            refused(
                json!({"msg_type":"msg","target":"group","from_id":"other"}),
                ME
            ),
            (ErrorCode::ValidationError, Some("from_id".to_owned()))
        );
        assert_eq!(
            refused(
                json!({"msg_type":"msg","target":"group","group_id":"other"}),
                ME
            ),
            (ErrorCode::ValidationError, Some("group_id".to_owned()))
        );
        check(
            json!({"msg_type":"msg","target":"group","from_id":"me_1","group_id":"grp_1"}),
            ME,
        )
        .unwrap();
    }

    #[test]
    fn server_must_not_send_from_id() {
        assert_eq!(
            refused(
                json!({"msg_type":"msg","target":"group","from_id":"x"}),
                SERVER
            ),
            (ErrorCode::ValidationError, Some("from_id".to_owned()))
        );
        check(json!({"msg_type":"msg","target":"group"}), SERVER).unwrap();
    }

    #[test]
    fn unknown_top_level_field() {
        let e = check(
            json!({"msg_type":"msg","target":"group","colour":"red"}),
            ME,
        )
        .unwrap_err();
        assert_eq!(e.code, ErrorCode::ValidationError);
        assert_eq!(e.field.as_deref(), Some("colour"));
        assert_eq!(e.message, "unknown field `colour`");
    }

    #[test]
    fn heartbeat_and_presence_only_echo() {
        assert_eq!(
            refused(json!({"msg_type":"heartbeat","target":"group"}), ME),
            (ErrorCode::ValidationError, Some("target".to_owned()))
        );
        assert_eq!(
            refused(json!({"msg_type":"presence","target":"broadcast"}), ME),
            (ErrorCode::ValidationError, Some("target".to_owned()))
        );
    }

    #[test]
    fn nulls_are_absent() {
        let m = check(
            json!({"msg_type":"msg","target":"group","msg":null,"payload":null,"cmd":null}),
            ME,
        )
        .unwrap();
        assert_eq!((m.msg, m.payload, m.cmd), (None, None, None));
    }

    #[test]
    fn completion_sets_server_fields_and_keeps_order() {
        let m = check(
            json!({"msg_type":"cmd","target":"group","cmd":"RELOAD_UI","payload":{"z":1,"a":2},"sent_at":"x"}),
            ME,
        )
        .unwrap();
        let out = m.complete("me_1", "grp_1", "2026-11-21T08:15:30.123Z");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"version":"3","msg_type":"cmd","target":"group","from_id":"me_1","group_id":"grp_1","cmd":"RELOAD_UI","payload":{"z":1,"a":2},"sent_at":"2026-11-21T08:15:30.123Z"}"#
        );
    }

    #[test]
    fn error_shape() {
        let e = GroupError::field("to_id", "to_id is required when target is direct");
        assert_eq!(
            error_message(&e, "T"),
            json!({"version":"3","msg_type":"error","target":"echo","msg":"to_id is required when target is direct","payload":{"code":"validation_error","field":"to_id"},"sent_at":"T"})
        );
        let e = GroupError::new(ErrorCode::Forbidden, "no");
        assert_eq!(
            error_message(&e, "T")["payload"],
            json!({"code":"forbidden"})
        );
    }

    #[test]
    fn every_error_code_has_its_wire_name() {
        let names: Vec<_> = [
            ErrorCode::InvalidJson,
            ErrorCode::ValidationError,
            ErrorCode::Forbidden,
            ErrorCode::NotFound,
            ErrorCode::RateLimited,
            ErrorCode::Internal,
        ]
        .iter()
        .map(|c| c.as_str())
        .collect();
        assert_eq!(
            names,
            [
                "invalid_json",
                "validation_error",
                "forbidden",
                "not_found",
                "rate_limited",
                "internal"
            ]
        );
    }
}
