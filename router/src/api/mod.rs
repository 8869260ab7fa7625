//! The server API: how backends push into the gateway over HTTP (and,
//! through [`crate::nats_api`], over NATS, with the same handlers).
//!
//! A request is parsed once into a [`Route`] ([`routes`]), its caller
//! authenticated (`auth`), and handed to its feature's handler; every
//! refusal is one [`ApiError`] ([`error`]), answered as one JSON error:
//! `{"error":{"code":…,"message":…,"field"?:…}}`.
//!
//! - [`groups`]: group messages, broadcasts, presence.
//! - [`iot`]: IoT events.
//! - [`jsonrpc`]: `_notify` pushes, streams, app channels, devices,
//!   conversation owners, tool calls.
//! - [`im`]: IM system messages.
//! - `tools`: a tool call's streamed HTTP answer.
//! - `stats`: `/stats`.

mod auth;
pub mod error;
pub mod groups;
pub mod history;
pub mod im;
pub mod iot;
pub mod jsonrpc;
pub mod routes;
mod stats;
mod tools;

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::Incoming;
use hyper::{Request, Response};
use serde_json::{Map, Value, json};
use switchboard_common::auth::Verifier;
use switchboard_common::http::{Body, bytes_response, json_response, read_body};
use switchboard_common::http_server::{self, ListenerConfig};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use error::ApiError;
pub use routes::{Route, Unrouted};

use crate::node::RouterNode;

/// Largest request body accepted.
pub const MAX_BODY: usize = 1 << 20;

/// The OpenAPI document, kept in the repository beside this crate.
pub const OPENAPI: &str = include_str!("../../openapi.json");

/// Response bodies: whole, or streamed (tool calls relaying progress).
pub type ApiBody = UnsyncBoxBody<Bytes, Infallible>;

fn boxed(response: Response<Body>) -> Response<ApiBody> {
    response.map(BodyExt::boxed_unsync)
}

/// What the API needs besides the node.
pub struct ApiContext {
    pub node: Arc<RouterNode>,
    pub verifier: Option<Arc<Verifier>>,
    pub api_key: Option<String>,
    /// Router ids of the cluster, for `/stats`.
    pub routers: Arc<dyn Fn() -> Vec<String> + Send + Sync>,
}

/// Serves the API until `shutdown`, under the HTTP limits of `config`
/// ([`switchboard_common::http_server`]); in-flight requests finish.
pub async fn serve(
    listener: TcpListener,
    config: ListenerConfig,
    context: Arc<ApiContext>,
    shutdown: CancellationToken,
) {
    let service = move |request| {
        let context = context.clone();
        async move { handle(&context, request).await }
    };
    http_server::serve(listener, config, service, shutdown).await;
}

/// One request: answered, counted by route and status, and logged.
async fn handle(context: &ApiContext, request: Request<Incoming>) -> Response<ApiBody> {
    let (parts, body) = request.into_parts();
    let (method, path) = (&parts.method, parts.uri.path());
    let started = std::time::Instant::now();
    let (label, answer) = match Route::parse(method, path) {
        Ok(route) => (
            route.label(),
            respond(context, route, &parts.headers, parts.uri.query(), body).await,
        ),
        Err(Unrouted::NoRoute) => (
            "unknown",
            Err(ApiError::NoRoute {
                path: path.to_owned(),
            }),
        ),
        Err(Unrouted::WrongMethod(route)) => (
            route.label(),
            Err(ApiError::WrongMethod {
                path: path.to_owned(),
                allowed: route.method(),
            }),
        ),
    };
    // The refusal with its cause, which its answer may not name.
    let refused = answer.as_ref().err().map(|error| format!("{error:?}"));
    let response = answer.unwrap_or_else(|error| boxed(error.response()));
    metrics::counter!("switchboard_api_requests_total",
        "route" => label, "status" => response.status().as_u16().to_string())
    .increment(1);
    metrics::histogram!("switchboard_api_request_seconds", "route" => label)
        .record(started.elapsed().as_secs_f64());
    tracing::debug!(%method, path, status = response.status().as_u16(), refused, "api request");
    response
}

/// Answers a routed request. Path parameters are checked after the
/// caller is known, and before the body is read.
async fn respond(
    context: &ApiContext,
    route: Route<'_>,
    headers: &HeaderMap,
    query: Option<&str>,
    body: Incoming,
) -> Result<Response<ApiBody>, ApiError> {
    // The document is public: it is answered before any credential.
    let caller = match route {
        Route::OpenApi => return Ok(openapi()),
        _ => auth::authenticate(context, headers)?,
    };
    let tenant = caller.tenant.as_str();
    let node = &context.node;
    let answer = match route {
        Route::OpenApi => return Ok(openapi()),
        Route::GroupMessages { group_id } => {
            let group_id = groups::group_id(group_id)?;
            let key = groups::idempotency_key(headers)?;
            let body = json_body(body).await?;
            delivered(groups::message(node, tenant, &group_id, body, key).await?)
        }
        Route::GroupPresence { group_id } => {
            let group_id = groups::group_id(group_id)?;
            groups::presence(node, tenant, &group_id).await?
        }
        Route::Broadcast => {
            let key = groups::idempotency_key(headers)?;
            delivered(groups::broadcast(node, tenant, json_body(body).await?, key).await?)
        }
        Route::Stats => stats::stats(context, &caller),
        Route::History => history::history(node, tenant, query).await?,
        Route::IotEvents => delivered(iot::event(node, tenant, json_body(body).await?).await?),
        Route::Notify => {
            let key = groups::idempotency_key(headers)?;
            jsonrpc::notify(node, tenant, json_body(body).await?, key).await?
        }
        Route::Stream => jsonrpc::stream(node, tenant, json_body(body).await?).await?,
        Route::AppPublish { app_id } => {
            let app = jsonrpc::ref_id("appId", app_id)?;
            let key = groups::idempotency_key(headers)?;
            jsonrpc::app_publish(node, tenant, &app, json_body(body).await?, key).await?
        }
        Route::ToolCall { app_id, tool_id } => {
            let app = jsonrpc::ref_id("appId", app_id)?;
            let tool = jsonrpc::ref_id("toolId", tool_id)?;
            let body = json_body(body).await?;
            let call = jsonrpc::tool_request(tenant, app, tool, &body)?;
            return tools::call(node.clone(), call).await;
        }
        Route::DeviceStatus { hd_id } => {
            let hd = jsonrpc::ref_id("hdId", hd_id)?;
            jsonrpc::device_status(node, tenant, &hd).await?
        }
        Route::ImMessages => im::post_message(node, tenant, json_body(body).await?).await?,
        Route::ConversationOwner { conv_id } => {
            let conv = jsonrpc::ref_id("convId", conv_id)?;
            jsonrpc::conversation_owner(node, tenant, &conv, json_body(body).await?).await?
        }
    };
    Ok(boxed(json_response(StatusCode::OK, &answer)))
}

fn openapi() -> Response<ApiBody> {
    let body = Bytes::from_static(OPENAPI.as_bytes());
    boxed(bytes_response(StatusCode::OK, "application/json", body))
}

fn delivered(n: u32) -> Value {
    json!({ "delivered": n })
}

/// The body, which must be a JSON object.
async fn json_body(body: Incoming) -> Result<Map<String, Value>, ApiError> {
    let bytes = read_body(body, MAX_BODY).await?;
    match serde_json::from_slice(&bytes)? {
        Value::Object(map) => Ok(map),
        _ => Err(ApiError::Invalid("the body must be a JSON object".into())),
    }
}
