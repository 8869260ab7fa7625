//! JSON-RPC 2.0 on the wire: decoding requests (single or batch) with their
//! ids kept byte for byte, and the response frames.

use std::collections::HashMap;

use bytes::Bytes;
use serde_json::Value;
use serde_json::value::RawValue;

/// The `message` every success result carries ("success").
const OK: &str = "成功";

/// Why a message or a call failed, one variant per JSON-RPC error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RpcError {
    #[error("Parse error: {0}")]
    Parse(String),
    #[error("Invalid Request: {0}")]
    InvalidRequest(String),
    #[error("Method not found: {0}")]
    MethodNotFound(String),
    #[error("Invalid params: {0}")]
    InvalidParams(String),
    #[error("Internal error: {0}")]
    Internal(String),
    #[error("Unauthorized: {0}")]
    Unauthorized(String),
    #[error("Error: {0}")]
    Other(String),
}

impl RpcError {
    pub fn code(&self) -> i64 {
        match self {
            Self::Parse(_) => -32700,
            Self::InvalidRequest(_) => -32600,
            Self::MethodNotFound(_) => -32601,
            Self::InvalidParams(_) => -32602,
            Self::Internal(_) => -32603,
            Self::Unauthorized(_) => 4401,
            Self::Other(_) => 4000,
        }
    }

    fn message(&self) -> &'static str {
        match self {
            Self::Parse(_) => "Parse error",
            Self::InvalidRequest(_) => "Invalid Request",
            Self::MethodNotFound(_) => "Method not found",
            Self::InvalidParams(_) => "Invalid params",
            Self::Internal(_) => "Internal error",
            Self::Unauthorized(_) => "Unauthorized",
            Self::Other(_) => "Error",
        }
    }

    fn detail(&self) -> &str {
        match self {
            Self::Parse(d)
            | Self::InvalidRequest(d)
            | Self::MethodNotFound(d)
            | Self::InvalidParams(d)
            | Self::Internal(d)
            | Self::Unauthorized(d)
            | Self::Other(d) => d,
        }
    }
}

/// A request id as the client wrote it (a JSON string, number or null).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Id(String);

impl Id {
    pub fn null() -> Self {
        Self("null".to_owned())
    }

    fn parse(raw: &RawValue) -> Option<Self> {
        let text = raw.get();
        let first = text.bytes().next()?;
        (first == b'"' || first == b'-' || first.is_ascii_digit() || text == "null")
            .then(|| Self(text.to_owned()))
    }

    /// The id's value when it is a string (gateway-made call ids are).
    pub fn as_str(&self) -> Option<String> {
        serde_json::from_str::<String>(&self.0).ok()
    }
}

/// One decoded element of a message.
#[derive(Debug)]
pub enum Element {
    /// A call; `id` is `None` for a notification.
    Call {
        id: Option<Id>,
        method: String,
        params: Option<Value>,
    },
    /// A response object sent by the client (an app answering a tool call).
    Answer { id: Id, json: String },
    /// Not a valid request; answered with this error and id.
    Invalid { id: Id, error: RpcError },
}

impl Element {
    /// The id its answer carries; `None` for a notification, which is
    /// never answered.
    pub fn id(&self) -> Option<&Id> {
        match self {
            Element::Call { id, .. } => id.as_ref(),
            Element::Answer { id, .. } | Element::Invalid { id, .. } => Some(id),
        }
    }
}

/// A whole text message.
#[derive(Debug)]
pub enum Message {
    Single(Element),
    Batch(Vec<Element>),
    /// Answered by one error object, not an array.
    Refused(RpcError),
}

/// Most calls one batch may hold; a larger batch is refused whole as an
/// invalid request. Each call in a batch also counts against the socket's
/// rate limit.
pub const MAX_BATCH: usize = 50;

pub fn decode(text: &str) -> Message {
    let raw: &RawValue = match serde_json::from_str(text) {
        Ok(raw) => raw,
        Err(e) => return Message::Refused(RpcError::Parse(e.to_string())),
    };
    if raw.get().starts_with('[') {
        let items: Vec<&RawValue> = match serde_json::from_str(raw.get()) {
            Ok(items) => items,
            Err(e) => return Message::Refused(RpcError::Parse(e.to_string())),
        };
        if items.is_empty() {
            return Message::Refused(RpcError::InvalidRequest("empty batch".to_owned()));
        }
        if items.len() > MAX_BATCH {
            return Message::Refused(RpcError::InvalidRequest(format!(
                "a batch holds at most {MAX_BATCH} calls, this one {}",
                items.len()
            )));
        }
        return Message::Batch(items.into_iter().map(element).collect());
    }
    Message::Single(element(raw))
}

fn element(raw: &RawValue) -> Element {
    let invalid = |id: Option<Id>, detail: &str| Element::Invalid {
        id: id.unwrap_or_else(Id::null),
        error: RpcError::InvalidRequest(detail.to_owned()),
    };
    let Ok(fields) = serde_json::from_str::<HashMap<String, &RawValue>>(raw.get()) else {
        return invalid(None, "a request must be a JSON object");
    };
    let id = match fields.get("id") {
        None => None,
        Some(raw) => match Id::parse(raw) {
            Some(id) => Some(id),
            None => return invalid(None, "id must be a string, a number or null"),
        },
    };
    let version = fields
        .get("jsonrpc")
        .and_then(|v| serde_json::from_str::<String>(v.get()).ok());
    if version.as_deref() != Some("2.0") {
        return invalid(id, "jsonrpc must be \"2.0\"");
    }
    let Some(method) = fields.get("method") else {
        if let Some(id) = &id
            && (fields.contains_key("result") || fields.contains_key("error"))
        {
            return Element::Answer {
                id: id.clone(),
                json: raw.get().to_owned(),
            };
        }
        return invalid(id, "method is required");
    };
    let Ok(method) = serde_json::from_str::<String>(method.get()) else {
        return invalid(id, "method must be a string");
    };
    let params = match fields.get("params") {
        None => None,
        Some(raw) => match serde_json::from_str::<Value>(raw.get()) {
            Ok(value @ (Value::Object(_) | Value::Array(_))) => Some(value),
            Ok(_) => return invalid(id, "params must be an object or an array"),
            Err(e) => {
                return Element::Invalid {
                    id: id.unwrap_or_else(Id::null),
                    error: RpcError::InvalidParams(format!("params: {e}")),
                };
            }
        },
    };
    Element::Call { id, method, params }
}

/// `{"jsonrpc":"2.0","result":{"code":200,"data":…,"message":"成功"},"id":…}`.
pub fn success(id: &Id, data: &Value) -> Bytes {
    let result = serde_json::json!({"code": 200, "data": data, "message": OK});
    Bytes::from(format!(
        r#"{{"jsonrpc":"2.0","result":{result},"id":{}}}"#,
        id.0
    ))
}

/// `{"jsonrpc":"2.0","error":{"code":…,"message":…,"data":…},"id":…}`.
pub fn failure(id: &Id, error: &RpcError) -> Bytes {
    let body = serde_json::json!({
        "code": error.code(),
        "message": error.message(),
        "data": error.detail(),
    });
    Bytes::from(format!(
        r#"{{"jsonrpc":"2.0","error":{body},"id":{}}}"#,
        id.0
    ))
}

/// A batch answer: the responses as one array.
pub fn batch(responses: &[Bytes]) -> Bytes {
    let mut out = Vec::with_capacity(responses.iter().map(|r| r.len() + 1).sum::<usize>() + 2);
    out.push(b'[');
    for (i, response) in responses.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(response);
    }
    out.push(b']');
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn single(text: &str) -> Element {
        match decode(text) {
            Message::Single(element) => element,
            other => panic!("not a single element: {other:?}"),
        }
    }

    #[test]
    fn ids_are_echoed_byte_for_byte() {
        let big = "123456789012345678901234567890";
        let Element::Call { id: Some(id), .. } =
            single(&format!(r#"{{"jsonrpc":"2.0","method":"m","id":{big}}}"#))
        else {
            panic!("not a call");
        };
        let frame: Value = serde_json::from_slice(&success(&id, &json!({}))).unwrap();
        assert_eq!(
            frame["id"].to_string(),
            "1.2345678901234568e+29",
            "a parsed number would lose digits"
        );
        assert!(
            String::from_utf8_lossy(&success(&id, &json!({})))
                .ends_with(&format!(r#""id":{big}}}"#)),
            "the raw id is written back unchanged"
        );
    }

    #[test]
    fn invalid_requests() {
        for (text, id) in [
            (r#"{"method":"m","id":1}"#, "1"),
            (r#"{"jsonrpc":"1.0","method":"m","id":"a"}"#, r#""a""#),
            (r#"{"jsonrpc":"2.0","method":5,"id":2}"#, "2"),
            (r#"{"jsonrpc":"2.0","method":"m","id":{}}"#, "null"),
            (r#"{"jsonrpc":"2.0","method":"m","id":[1]}"#, "null"),
            (r#"{"jsonrpc":"2.0","method":"m","params":3,"id":3}"#, "3"),
            ("42", "null"),
            (r#""ping""#, "null"),
        ] {
            match single(text) {
                Element::Invalid { id: got, error } => {
                    assert_eq!(error.code(), -32600, "{text}");
                    assert_eq!(got.0, id, "{text}");
                }
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_batch_holds_at_most_fifty_calls() {
        let batch = |n: usize| {
            format!(
                "[{}]",
                vec![r#"{"jsonrpc":"2.0","method":"a"}"#; n].join(",")
            )
        };
        let Message::Batch(items) = decode(&batch(MAX_BATCH)) else {
            panic!("fifty calls are a batch");
        };
        assert_eq!(items.len(), MAX_BATCH);
        let Message::Refused(RpcError::InvalidRequest(why)) = decode(&batch(MAX_BATCH + 1)) else {
            panic!("fifty-one calls are refused");
        };
        assert!(why.contains("50"), "{why}");
    }

    #[test]
    fn parse_errors_and_batches() {
        for text in ["{", "nope", "", "[1,", r#"{"a":1}}"#] {
            assert!(
                matches!(decode(text), Message::Refused(RpcError::Parse(_))),
                "{text}"
            );
        }
        assert!(matches!(
            decode("[]"),
            Message::Refused(RpcError::InvalidRequest(_))
        ));
        let Message::Batch(items) = decode(r#"[{"jsonrpc":"2.0","method":"a"},1]"#) else {
            panic!("not a batch");
        };
        assert!(matches!(items[0], Element::Call { id: None, .. }));
        assert!(matches!(items[1], Element::Invalid { .. }));
    }

    #[test]
    fn deep_nesting_is_refused_not_a_crash() {
        let deep = format!("{}{}", "[".repeat(60_000), "]".repeat(60_000));
        let Message::Batch(items) = decode(&deep) else {
            panic!("a batch of one nested array");
        };
        assert!(matches!(
            &items[..],
            [Element::Invalid {
                error: RpcError::InvalidRequest(_),
                ..
            }]
        ));
        let deep_params = format!(
            r#"{{"jsonrpc":"2.0","method":"m","params":{}{},"id":1}}"#,
            "[".repeat(5_000),
            "]".repeat(5_000)
        );
        assert!(matches!(
            decode(&deep_params),
            Message::Single(Element::Invalid {
                error: RpcError::InvalidParams(_),
                ..
            })
        ));
    }

    #[test]
    fn answers_from_apps() {
        let text = r#"{"jsonrpc":"2.0","result":{"ok":true},"id":"sb-1@r"}"#;
        match single(text) {
            Element::Answer { id, json } => {
                assert_eq!(id.as_str().as_deref(), Some("sb-1@r"));
                assert_eq!(json, text);
            }
            other => panic!("{other:?}"),
        }
    }
}
