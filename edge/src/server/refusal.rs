//! Every HTTP answer by which the edge refuses a request: a route nobody
//! serves, an upgrade the listener or a dialect refuses, an IM login that
//! cannot be made. One variant per failure; [`Refusal::into_response`]
//! makes its status, headers and body in one place, so no two routes can
//! disagree on how the same refusal looks.
//!
//! Bodies come in the two shapes the routes' clients expect: the edge's
//! own routes and the group and JSON-RPC upgrades answer
//! `{"error":{"code":…,"message":…}}` (with `"field"` naming a bad path
//! segment or parameter), the IoT upgrade and the IM login answer
//! `{"code":<status>,"msg":…}`. Every body is JSON.

use http::StatusCode;
use hyper::Response;
use serde_json::{Value, json};
use switchboard_common::http::{Body, json_response};

/// The answer to an unknown `/api/v1/…` route: the server API lives on the
/// router, and people who try it on the edge port need to be told where.
const SERVER_API_ELSEWHERE: &str = "the server API is served by the router on its API port \
(--router-api-addr in standalone mode, --api-addr on a router; default :8081), not by the edge";

/// Why the edge refused a request. The message (`Display`) is the body's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    // Any route.
    /// No route owns the path.
    #[error("no such route")]
    NoRoute,
    /// An `/api/v1/…` path that is not a socket route.
    #[error("{}", SERVER_API_ELSEWHERE)]
    ServerApiElsewhere,
    /// The edge is draining and takes no new sockets.
    #[error("server is shutting down")]
    Draining,
    /// A plain GET on a socket route whose token is refused: the
    /// playground asks this way to learn why an upgrade would fail.
    #[error("this route refuses the token: {0}")]
    TokenRefused(String),
    /// A plain GET on a socket route with an acceptable token.
    #[error("this route takes WebSocket upgrades")]
    UpgradeRequired,
    /// An upgrade request the WebSocket handshake refuses.
    #[error("{0}")]
    BadUpgrade(String),

    // Group upgrades.
    /// A group or client id in the path that is not a valid id.
    #[error("{}", switchboard_proto::ids::invalid_id_message(field))]
    InvalidId { field: &'static str },
    /// A position to recover from that is not `epoch:offset`.
    #[error("{field} must be epoch:offset")]
    InvalidPosition { field: &'static str },
    /// A missing, bad or wrong-kind token.
    #[error("{0}")]
    GroupToken(String),
    /// A token for another client.
    #[error("token sub does not match client_id")]
    GroupSub,

    // JSON-RPC upgrades (token problems close the socket with 4401).
    /// An app, tool or hardware id in the path that is not a valid id.
    #[error("ids in the path must match [A-Za-z0-9_.:@-]{{1,128}}")]
    BadPath,
    /// A `convId` query parameter that is not a valid id.
    #[error("convId must match [A-Za-z0-9_.:@-]{{1,128}}")]
    BadConvId,

    // The IoT upgrade.
    /// A required parameter (`app-code`, `token`) is missing.
    #[error("{0} is required")]
    IotMissing(&'static str),
    /// A bad or wrong-kind token.
    #[error("{0}")]
    IotToken(String),
    /// A `tenant-code` other than the token's tenant.
    #[error("tenant-code does not match the token's tenant")]
    IotTenant,

    // The IM login.
    #[error("login accepts GET only")]
    LoginMethod,
    /// A missing, bad or wrong-kind token.
    #[error("{0}")]
    LoginToken(String),
    #[error("clientName must match [A-Za-z0-9_.-]{{1,64}}")]
    LoginClientName,
    /// A token whose `sub` cannot name an IM user.
    #[error("the token's sub cannot be an IM user id")]
    LoginSub,
    #[error("server is shutting down")]
    LoginDraining,
    /// No router answered the login in time, or it refused it.
    #[error("no router could open the session, try again")]
    LoginUnavailable,
}

/// How a refusal's body is laid out.
enum Shape {
    /// `{"error":{"code":code,"message":…,"field":field}}`, `field` only
    /// when there is one.
    Error {
        code: &'static str,
        field: Option<&'static str>,
    },
    /// `{"code":<status>,"msg":…}`.
    CodeMsg,
}

const fn error(code: &'static str) -> Shape {
    Shape::Error { code, field: None }
}

impl Refusal {
    /// The status and body shape of each refusal: the one match that
    /// decides what a refusal looks like.
    fn answer(&self) -> (StatusCode, Shape) {
        match self {
            Self::NoRoute | Self::ServerApiElsewhere => (StatusCode::NOT_FOUND, error("not_found")),
            Self::Draining => (StatusCode::SERVICE_UNAVAILABLE, error("draining")),
            Self::TokenRefused(_) | Self::GroupToken(_) | Self::GroupSub => {
                (StatusCode::UNAUTHORIZED, error("unauthorized"))
            }
            Self::UpgradeRequired => (StatusCode::UPGRADE_REQUIRED, error("upgrade_required")),
            Self::BadUpgrade(_) => (StatusCode::BAD_REQUEST, error("bad_upgrade")),
            Self::InvalidId { field } => (
                StatusCode::BAD_REQUEST,
                Shape::Error {
                    code: "invalid_id",
                    field: Some(field),
                },
            ),
            Self::InvalidPosition { field } => (
                StatusCode::BAD_REQUEST,
                Shape::Error {
                    code: "validation_error",
                    field: Some(field),
                },
            ),
            Self::BadPath => (StatusCode::BAD_REQUEST, error("bad_path")),
            Self::BadConvId => (
                StatusCode::BAD_REQUEST,
                Shape::Error {
                    code: "bad_conv_id",
                    field: Some("convId"),
                },
            ),
            Self::IotMissing(_) | Self::LoginClientName => {
                (StatusCode::BAD_REQUEST, Shape::CodeMsg)
            }
            Self::IotToken(_) | Self::IotTenant | Self::LoginToken(_) | Self::LoginSub => {
                (StatusCode::UNAUTHORIZED, Shape::CodeMsg)
            }
            Self::LoginMethod => (StatusCode::METHOD_NOT_ALLOWED, Shape::CodeMsg),
            Self::LoginDraining | Self::LoginUnavailable => {
                (StatusCode::SERVICE_UNAVAILABLE, Shape::CodeMsg)
            }
        }
    }

    pub fn status(&self) -> StatusCode {
        self.answer().0
    }

    /// The JSON body.
    pub fn body(&self) -> Value {
        let (status, shape) = self.answer();
        let message = self.to_string();
        match shape {
            Shape::Error { code, field } => {
                let mut error = json!({"code": code, "message": message});
                if let Some(field) = field {
                    error["field"] = json!(field);
                }
                json!({ "error": error })
            }
            Shape::CodeMsg => json!({"code": status.as_u16(), "msg": message}),
        }
    }

    /// The HTTP answer: the status, `Content-Type: application/json` and
    /// the body.
    pub fn into_response(self) -> Response<Body> {
        json_response(self.status(), &self.body())
    }
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::task::{Context, Poll, Waker};

    use bytes::Bytes;
    use hyper::body::Body as _;

    use super::*;

    /// The bytes a full body sends: all of them in its first frame.
    fn sent(mut body: Body) -> Bytes {
        let mut context = Context::from_waker(Waker::noop());
        match Pin::new(&mut body).poll_frame(&mut context) {
            Poll::Ready(Some(Ok(frame))) => frame.into_data().unwrap_or_default(),
            _ => Bytes::new(),
        }
    }

    /// Every refusal, byte for byte as clients receive it.
    #[test]
    fn each_refusal_has_its_status_and_exact_body() {
        let cases: Vec<(Refusal, u16, &str)> = vec![
            (
                Refusal::NoRoute,
                404,
                r#"{"error":{"code":"not_found","message":"no such route"}}"#,
            ),
            (
                Refusal::ServerApiElsewhere,
                404,
                r#"{"error":{"code":"not_found","message":"the server API is served by the router on its API port (--router-api-addr in standalone mode, --api-addr on a router; default :8081), not by the edge"}}"#,
            ),
            (
                Refusal::Draining,
                503,
                r#"{"error":{"code":"draining","message":"server is shutting down"}}"#,
            ),
            (
                Refusal::TokenRefused("token expired".into()),
                401,
                r#"{"error":{"code":"unauthorized","message":"this route refuses the token: token expired"}}"#,
            ),
            (
                Refusal::UpgradeRequired,
                426,
                r#"{"error":{"code":"upgrade_required","message":"this route takes WebSocket upgrades"}}"#,
            ),
            (
                Refusal::BadUpgrade("no key".into()),
                400,
                r#"{"error":{"code":"bad_upgrade","message":"no key"}}"#,
            ),
            (
                Refusal::InvalidId { field: "group_id" },
                400,
                r#"{"error":{"code":"invalid_id","message":"group_id must match [A-Za-z0-9_-]{1,64} and not be only digits","field":"group_id"}}"#,
            ),
            (
                Refusal::InvalidPosition {
                    field: "since_group",
                },
                400,
                r#"{"error":{"code":"validation_error","message":"since_group must be epoch:offset","field":"since_group"}}"#,
            ),
            (
                Refusal::GroupToken("token expired".into()),
                401,
                r#"{"error":{"code":"unauthorized","message":"token expired"}}"#,
            ),
            (
                Refusal::GroupSub,
                401,
                r#"{"error":{"code":"unauthorized","message":"token sub does not match client_id"}}"#,
            ),
            (
                Refusal::BadPath,
                400,
                r#"{"error":{"code":"bad_path","message":"ids in the path must match [A-Za-z0-9_.:@-]{1,128}"}}"#,
            ),
            (
                Refusal::BadConvId,
                400,
                r#"{"error":{"code":"bad_conv_id","message":"convId must match [A-Za-z0-9_.:@-]{1,128}","field":"convId"}}"#,
            ),
            (
                Refusal::IotMissing("app-code"),
                400,
                r#"{"code":400,"msg":"app-code is required"}"#,
            ),
            (
                Refusal::IotMissing("token"),
                400,
                r#"{"code":400,"msg":"token is required"}"#,
            ),
            (
                Refusal::IotToken("token expired".into()),
                401,
                r#"{"code":401,"msg":"token expired"}"#,
            ),
            (
                Refusal::IotTenant,
                401,
                r#"{"code":401,"msg":"tenant-code does not match the token's tenant"}"#,
            ),
            (
                Refusal::LoginMethod,
                405,
                r#"{"code":405,"msg":"login accepts GET only"}"#,
            ),
            (
                Refusal::LoginToken("token expired".into()),
                401,
                r#"{"code":401,"msg":"token expired"}"#,
            ),
            (
                Refusal::LoginClientName,
                400,
                r#"{"code":400,"msg":"clientName must match [A-Za-z0-9_.-]{1,64}"}"#,
            ),
            (
                Refusal::LoginSub,
                401,
                r#"{"code":401,"msg":"the token's sub cannot be an IM user id"}"#,
            ),
            (
                Refusal::LoginDraining,
                503,
                r#"{"code":503,"msg":"server is shutting down"}"#,
            ),
            (
                Refusal::LoginUnavailable,
                503,
                r#"{"code":503,"msg":"no router could open the session, try again"}"#,
            ),
        ];
        for (refusal, status, body) in cases {
            let name = format!("{refusal:?}");
            assert_eq!(refusal.status().as_u16(), status, "{name}");
            assert_eq!(refusal.body().to_string(), body, "{name}");
            let response = refusal.into_response();
            assert_eq!(response.status().as_u16(), status, "{name}");
            assert_eq!(
                response.headers().get(http::header::CONTENT_TYPE).unwrap(),
                "application/json",
                "{name}"
            );
            assert_eq!(response.headers().len(), 1, "{name}: no other header");
            assert_eq!(sent(response.into_body()), body.as_bytes(), "{name}");
        }
    }
}
