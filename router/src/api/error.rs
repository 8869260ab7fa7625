//! Why the server API refused a call: one variant per failure, the cause
//! kept, and one match (`ApiError::answer`) that turns each into its
//! status, code and field. HTTP and NATS answer with the same body,
//! `{"error":{"code":…,"message":…,"field"?:…}}`; the message is the
//! variant's `Display`.

use http::{Method, StatusCode};
use hyper::Response;
use serde_json::{Value, json};
use switchboard_common::http::{Body, BodyError, json_response};
use switchboard_proto::group::GroupError;
use switchboard_proto::iot::IotError;

use crate::im::ImError;
use crate::jsonrpc::OwnerError;
use crate::jsonrpc::tools::ToolError;
use crate::node::{HistoryError, NodeError};
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No route has the request's path.
    #[error("no route {path}")]
    NoRoute { path: String },
    /// The route takes another method.
    #[error("{path} accepts {allowed} only")]
    WrongMethod { path: String, allowed: Method },
    /// No credential, or not a valid one.
    #[error("{0}")]
    Unauthorized(String),
    /// A credential acting for a tenant it may not act for.
    #[error("{0}")]
    Forbidden(String),
    /// The body did not arrive whole.
    #[error("{0}")]
    Body(#[from] BodyError),
    /// The body is not JSON.
    #[error("invalid JSON: {0}")]
    InvalidJson(#[from] serde_json::Error),
    /// The body is not what the route takes, no one field at fault.
    #[error("{0}")]
    Invalid(String),
    /// One field of the body (or a path parameter, or a header) is wrong.
    #[error("{message}")]
    Field { field: String, message: String },
    /// A V3 message its validator refused, with the validator's code.
    #[error("{0}")]
    Group(#[from] GroupError),
    /// An IoT event its parser refused.
    #[error("{0}")]
    Iot(#[from] IotError),
    /// An IM message refused, or not kept.
    #[error("{0}")]
    Im(#[from] ImError),
    /// A tool call with no socket to take it, no answer in time, or no
    /// way to reach the tool.
    #[error("{0}")]
    Tool(#[from] ToolError),
    /// A conversation owner not set.
    #[error("{0}")]
    Owner(#[from] OwnerError),
    /// A device that never reported its status.
    #[error("device {hd_id} has reported no status")]
    NoDeviceStatus { hd_id: String },
    /// The store failed.
    #[error("{0}")]
    Store(#[from] StoreError),
    /// A history that cannot be read: off, or not kept for the topic.
    #[error("{0}")]
    History(#[from] crate::node::HistoryError),
    /// The node could not reach the target; the answer says why.
    #[error("{0}")]
    Node(#[from] NodeError),
    /// This router handles as many NATS messages as it may at once.
    #[error("this router is handling too many messages")]
    Busy,
    /// The answer itself could not be built.
    #[error("{0}")]
    Internal(#[from] http::Error),
}

impl ApiError {
    /// A refusal naming the field at fault.
    pub fn field(field: &str, message: impl Into<String>) -> Self {
        Self::Field {
            field: field.to_owned(),
            message: message.into(),
        }
    }

    /// The status, code and field at fault: the one place a refusal
    /// becomes an answer.
    fn answer(&self) -> (StatusCode, &'static str, Option<&str>) {
        const UNAVAILABLE: (StatusCode, &str, Option<&str>) =
            (StatusCode::SERVICE_UNAVAILABLE, "unavailable", None);
        match self {
            Self::NoRoute { .. } => (StatusCode::NOT_FOUND, "not_found", None),
            Self::WrongMethod { .. } => {
                (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", None)
            }
            Self::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized", None),
            Self::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden", None),
            Self::Body(BodyError::TooLarge(_)) => {
                (StatusCode::PAYLOAD_TOO_LARGE, "too_large", None)
            }
            Self::Body(BodyError::Read(_)) => (StatusCode::BAD_REQUEST, "bad_body", None),
            Self::Body(BodyError::TimedOut(_)) => {
                (StatusCode::REQUEST_TIMEOUT, "request_timeout", None)
            }
            Self::InvalidJson(_) => (StatusCode::BAD_REQUEST, "invalid_json", None),
            Self::Invalid(_) => (StatusCode::BAD_REQUEST, "validation_error", None),
            Self::Field { field, .. } => (
                StatusCode::BAD_REQUEST,
                "validation_error",
                Some(field.as_str()),
            ),
            Self::Group(e) => (StatusCode::BAD_REQUEST, e.code.as_str(), e.field.as_deref()),
            Self::Iot(e) => (
                StatusCode::BAD_REQUEST,
                "validation_error",
                Some(e.field.as_str()),
            ),
            Self::Im(ImError::Invalid(refusal)) => {
                let field = (!refusal.field.is_empty()).then_some(refusal.field);
                (StatusCode::BAD_REQUEST, "validation_error", field)
            }
            Self::Im(ImError::Unavailable(_)) => UNAVAILABLE,
            // The API sends as `SYSTEM`, which has no quota; should that
            // ever change, the caller is told to slow down.
            Self::Im(ImError::OverQuota { .. }) => {
                (StatusCode::TOO_MANY_REQUESTS, "over_quota", None)
            }
            Self::Tool(ToolError::NotConnected { .. }) => {
                (StatusCode::NOT_FOUND, "not_found", None)
            }
            Self::Tool(ToolError::Timeout(_)) => (StatusCode::GATEWAY_TIMEOUT, "timeout", None),
            Self::Tool(ToolError::Unavailable(_)) => UNAVAILABLE,
            Self::Owner(OwnerError::Taken { .. }) => (StatusCode::CONFLICT, "conflict", None),
            Self::Owner(OwnerError::Store(_)) => UNAVAILABLE,
            Self::NoDeviceStatus { .. } => (StatusCode::NOT_FOUND, "not_found", None),
            Self::History(HistoryError::Off | HistoryError::NoHistory) => {
                (StatusCode::NOT_FOUND, "not_found", None)
            }
            Self::History(HistoryError::Node(_)) => UNAVAILABLE,
            Self::Store(_) | Self::Node(_) | Self::Busy => UNAVAILABLE,
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal", None),
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.answer().0
    }

    /// The error code, a closed set (safe as a metric label).
    pub fn code(&self) -> &'static str {
        self.answer().1
    }

    /// `{"error":{"code","message","field"?}}`, as HTTP and NATS answer.
    pub fn body(&self) -> Value {
        let (_, code, field) = self.answer();
        let mut error = json!({"code": code, "message": self.to_string()});
        if let Some(field) = field {
            error["field"] = json!(field);
        }
        json!({ "error": error })
    }

    /// The HTTP answer: the status and the body.
    pub fn response(&self) -> Response<Body> {
        json_response(self.status(), &self.body())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use switchboard_proto::group::ErrorCode as GroupCode;
    use switchboard_proto::im::{Refusal, Status};

    use super::*;

    fn answer(error: &ApiError) -> (u16, Value) {
        (error.status().as_u16(), error.body())
    }

    fn body(code: &str, message: &str) -> Value {
        json!({"error": {"code": code, "message": message}})
    }

    fn with_field(code: &str, message: &str, field: &str) -> Value {
        json!({"error": {"code": code, "message": message, "field": field}})
    }

    fn node_error() -> NodeError {
        NodeError::NoOwner
    }

    #[test]
    fn each_refusal_has_its_status_and_body() {
        let json_error = serde_json::from_str::<Value>("{").unwrap_err();
        let json_message = format!("invalid JSON: {json_error}");
        let response = http::Response::builder().status(1000).body(()).unwrap_err();
        let internal = response.to_string();
        let cases: Vec<(ApiError, u16, Value)> = vec![
            (
                ApiError::NoRoute { path: "/x".into() },
                404,
                body("not_found", "no route /x"),
            ),
            (
                ApiError::WrongMethod {
                    path: "/api/v1/stats".into(),
                    allowed: Method::GET,
                },
                405,
                body("method_not_allowed", "/api/v1/stats accepts GET only"),
            ),
            (
                ApiError::Unauthorized("invalid API key".into()),
                401,
                body("unauthorized", "invalid API key"),
            ),
            (
                ApiError::Forbidden("not yours".into()),
                403,
                body("forbidden", "not yours"),
            ),
            (
                ApiError::Body(BodyError::TooLarge(10)),
                413,
                body("too_large", "body is larger than 10 bytes"),
            ),
            (
                ApiError::Body(BodyError::Read("reset".into())),
                400,
                body("bad_body", "body could not be read: reset"),
            ),
            (
                ApiError::Body(BodyError::TimedOut(Duration::from_secs(2))),
                408,
                body("request_timeout", "body did not arrive within 2 s"),
            ),
            (
                ApiError::InvalidJson(json_error),
                400,
                body("invalid_json", &json_message),
            ),
            (
                ApiError::Invalid("the body must be a JSON object".into()),
                400,
                body("validation_error", "the body must be a JSON object"),
            ),
            (
                ApiError::field("to", "to is empty"),
                400,
                with_field("validation_error", "to is empty", "to"),
            ),
            (
                ApiError::Group(GroupError {
                    code: GroupCode::Forbidden,
                    field: Some("msg".into()),
                    message: "no".into(),
                }),
                400,
                with_field("forbidden", "no", "msg"),
            ),
            (
                ApiError::Group(GroupError::new(GroupCode::InvalidJson, "bad")),
                400,
                body("invalid_json", "bad"),
            ),
            (
                ApiError::Iot(IotError {
                    field: "code".into(),
                    message: "code is required".into(),
                }),
                400,
                with_field("validation_error", "code is required", "code"),
            ),
            (
                ApiError::Im(ImError::Invalid(Refusal::new(
                    Status::ToError,
                    "to",
                    "to is required",
                ))),
                400,
                with_field("validation_error", "to is required", "to"),
            ),
            (
                ApiError::Im(ImError::Invalid(Refusal::new(
                    Status::MessageError,
                    "",
                    "not a message",
                ))),
                400,
                body("validation_error", "not a message"),
            ),
            (
                ApiError::Im(ImError::Unavailable("message not stored: down".into())),
                503,
                body("unavailable", "message not stored: down"),
            ),
            (
                ApiError::Im(ImError::OverQuota { quota: 3 }),
                429,
                body(
                    "over_quota",
                    "over the sender quota: 3 kept messages not yet receipted; wait for receipts",
                ),
            ),
            (
                ApiError::Tool(ToolError::NotConnected {
                    app: "a".into(),
                    tool: "t".into(),
                }),
                404,
                body("not_found", "no tool socket is connected for a/t"),
            ),
            (
                ApiError::Tool(ToolError::Timeout(Duration::from_secs(1))),
                504,
                body("timeout", "the tool did not answer within 1s"),
            ),
            (
                ApiError::Tool(ToolError::Unavailable("router stopping".into())),
                503,
                body("unavailable", "router stopping"),
            ),
            (
                ApiError::Owner(OwnerError::Taken { conv: "c".into() }),
                409,
                body("conflict", "conversation c already belongs to another user"),
            ),
            (
                ApiError::Owner(OwnerError::Store(StoreError::Protocol("down".into()))),
                503,
                body(
                    "unavailable",
                    "store unavailable: store returned an unexpected reply: down",
                ),
            ),
            (
                ApiError::NoDeviceStatus { hd_id: "hd".into() },
                404,
                body("not_found", "device hd has reported no status"),
            ),
            (
                ApiError::Store(StoreError::Protocol("down".into())),
                503,
                body("unavailable", "store returned an unexpected reply: down"),
            ),
            (
                ApiError::Node(node_error()),
                503,
                body("unavailable", "no live router serves this tenant's pool"),
            ),
            (
                ApiError::Busy,
                503,
                body("unavailable", "this router is handling too many messages"),
            ),
            (
                ApiError::Internal(response),
                500,
                body("internal", &internal),
            ),
        ];
        for (error, status, expected) in cases {
            assert_eq!(answer(&error), (status, expected.clone()), "{error:?}");
            assert_eq!(error.code(), expected["error"]["code"], "{error:?}");
            assert_eq!(error.response().status().as_u16(), status, "{error:?}");
        }
    }

    #[test]
    fn a_node_refusal_answers_with_the_owners_message() {
        let refusal = switchboard_proto::RouterRefusal {
            code: switchboard_proto::ErrorCode::NotFound,
            message: "nobody here".into(),
        };
        let error = ApiError::Node(NodeError::Refused(refusal));
        assert_eq!(answer(&error), (503, body("unavailable", "nobody here")));
    }
}
