//! The server API: how backends push into the gateway over HTTP.
//!
//! Auth is a `kind=service` token (acting for its tenant) or the configured
//! API key (acting for `X-Tenant`; without it, the operator, who alone sees
//! every tenant in `/stats`). Every failure is one JSON error:
//! `{"error":{"code":…,"message":…,"field"?:…}}`.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use serde_json::{Value, json};
use switchboard_common::auth::{DEFAULT_TENANT, Kind, Verifier};
use switchboard_common::clock::iso8601_now;
use switchboard_common::http::{Body, BodyError, bytes_response, json_response, read_body};
use switchboard_common::http_server::{self, ListenerConfig};
use switchboard_proto::group::{self, GroupError, Sender, Target};
use switchboard_proto::{Payload, TopicKind, is_valid_id};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::api_rpc;
use crate::node::{RouterNode, dialect_label};
use crate::topic::TopicKey;

/// Largest request body accepted.
pub const MAX_BODY: usize = 1 << 20;

/// The OpenAPI document, kept in the repository beside this crate.
pub const OPENAPI: &str = include_str!("../openapi.json");

/// Every route the API serves: (method, path template). The OpenAPI
/// document is checked against this list in tests.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/api/v1/openapi.json"),
    ("POST", "/api/v1/groups/{group_id}/messages"),
    ("GET", "/api/v1/groups/{group_id}/presence"),
    ("POST", "/api/v1/broadcast"),
    ("GET", "/api/v1/stats"),
    ("POST", "/api/v1/iot/events"),
    ("POST", "/api/v1/notify"),
    ("POST", "/api/v1/stream"),
    ("POST", "/api/v1/apps/{appId}/publish"),
    ("POST", "/api/v1/apps/{appId}/tools/{toolId}/call"),
    ("GET", "/api/v1/devices/{hdId}/status"),
    ("POST", "/api/v1/im/messages"),
    ("PUT", "/api/v1/conversations/{convId}"),
];

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

/// A refusal: status, code, message and the field at fault.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    field: Option<String>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            field: None,
        }
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    pub fn invalid(message: &str) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "validation_error", message)
    }

    pub fn invalid_json(e: &serde_json::Error) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("invalid JSON: {e}"),
        )
    }

    pub fn field(field: &str, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code: "validation_error",
            message: message.into(),
            field: Some(field.to_owned()),
        }
    }

    /// The error code, a closed set (safe as a metric label).
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// `{"error":{"code","message","field"?}}`, as HTTP and NATS answer.
    pub fn body(&self) -> Value {
        let mut error = json!({"code": self.code, "message": self.message});
        if let Some(field) = &self.field {
            error["field"] = json!(field);
        }
        json!({ "error": error })
    }

    fn response(&self) -> Response<Body> {
        json_response(self.status, &self.body())
    }
}

impl From<GroupError> for ApiError {
    fn from(e: GroupError) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code: e.code.as_str(),
            message: e.message,
            field: e.field,
        }
    }
}

impl From<switchboard_proto::iot::IotError> for ApiError {
    fn from(e: switchboard_proto::iot::IotError) -> Self {
        Self::field(&e.field, e.message)
    }
}

impl From<BodyError> for ApiError {
    fn from(e: BodyError) -> Self {
        match e {
            BodyError::TooLarge(_) => {
                Self::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", e.to_string())
            }
            BodyError::Read(_) => Self::new(StatusCode::BAD_REQUEST, "bad_body", e.to_string()),
            BodyError::TimedOut(_) => Self::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                e.to_string(),
            ),
        }
    }
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

async fn handle(context: &ApiContext, request: Request<Incoming>) -> Response<ApiBody> {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let started = std::time::Instant::now();
    let (route, response) = match route(context, request).await {
        Ok((route, response)) => (route, response),
        Err((route, error)) => (route, boxed(error.response())),
    };
    metrics::counter!("switchboard_api_requests_total",
        "route" => route, "status" => response.status().as_u16().to_string())
    .increment(1);
    metrics::histogram!("switchboard_api_request_seconds", "route" => route)
        .record(started.elapsed().as_secs_f64());
    tracing::debug!(%method, path, status = response.status().as_u16(), "api request");
    response
}

type Routed = Result<(&'static str, Response<ApiBody>), (&'static str, ApiError)>;

async fn route(context: &ApiContext, request: Request<Incoming>) -> Routed {
    let path = request.uri().path().to_owned();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let method = request.method().clone();
    let (route, allowed): (&'static str, Method) = match segments.as_slice() {
        ["api", "v1", "openapi.json"] => ("openapi", Method::GET),
        ["api", "v1", "groups", _, "messages"] => ("group_messages", Method::POST),
        ["api", "v1", "groups", _, "presence"] => ("group_presence", Method::GET),
        ["api", "v1", "broadcast"] => ("broadcast", Method::POST),
        ["api", "v1", "stats"] => ("stats", Method::GET),
        ["api", "v1", "iot", "events"] => ("iot_events", Method::POST),
        ["api", "v1", "notify"] => ("notify", Method::POST),
        ["api", "v1", "stream"] => ("stream", Method::POST),
        ["api", "v1", "apps", _, "publish"] => ("app_publish", Method::POST),
        ["api", "v1", "apps", _, "tools", _, "call"] => ("tool_call", Method::POST),
        ["api", "v1", "devices", _, "status"] => ("device_status", Method::GET),
        ["api", "v1", "im", "messages"] => ("im_messages", Method::POST),
        ["api", "v1", "conversations", _] => ("conversation_owner", Method::PUT),
        _ => {
            return Err((
                "unknown",
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    format!("no route {path}"),
                ),
            ));
        }
    };
    let fail = |e: ApiError| (route, e);
    if method != allowed {
        return Err(fail(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{path} accepts {allowed} only"),
        )));
    }
    if route == "openapi" {
        let body = Bytes::from_static(OPENAPI.as_bytes());
        return Ok((
            route,
            boxed(bytes_response(StatusCode::OK, "application/json", body)),
        ));
    }
    let caller = authenticate(context, &request).map_err(fail)?;
    let tenant = caller.tenant.clone();
    let node = &context.node;
    let ok = |value: Value| json_response(StatusCode::OK, &value);
    let response = match segments.as_slice() {
        ["api", "v1", "notify"] => {
            let body = json_body(request.into_body()).await.map_err(fail)?;
            api_rpc::notify(node, &tenant, body).await.map(ok)
        }
        ["api", "v1", "stream"] => {
            let body = json_body(request.into_body()).await.map_err(fail)?;
            api_rpc::stream(node, &tenant, body).await.map(ok)
        }
        ["api", "v1", "apps", app, "publish"] => {
            let app = api_rpc::ref_id("appId", app).map_err(fail)?;
            let body = json_body(request.into_body()).await.map_err(fail)?;
            api_rpc::app_publish(node, &tenant, &app, body)
                .await
                .map(ok)
        }
        ["api", "v1", "apps", app, "tools", tool, "call"] => {
            let app = api_rpc::ref_id("appId", app).map_err(fail)?;
            let tool = api_rpc::ref_id("toolId", tool).map_err(fail)?;
            let body = json_body(request.into_body()).await.map_err(fail)?;
            let call = api_rpc::tool_request(&tenant, app, tool, &body).map_err(fail)?;
            return tool_call(node.clone(), call)
                .await
                .map(|response| (route, response))
                .map_err(fail);
        }
        ["api", "v1", "conversations", conv] => {
            let conv = api_rpc::ref_id("convId", conv).map_err(fail)?;
            let body = json_body(request.into_body()).await.map_err(fail)?;
            api_rpc::conversation_owner(node, &tenant, &conv, body)
                .await
                .map(ok)
        }
        ["api", "v1", "devices", hd, "status"] => {
            let hd = api_rpc::ref_id("hdId", hd).map_err(fail)?;
            api_rpc::device_status(node, &tenant, &hd).await.map(ok)
        }
        ["api", "v1", "groups", group_id, "messages"] => {
            let group_id = path_id("group_id", group_id).map_err(fail)?;
            let body = json_body(request.into_body()).await.map_err(fail)?;
            group_message(node, &tenant, &group_id, body)
                .await
                .map(delivered)
        }
        ["api", "v1", "groups", group_id, "presence"] => {
            let group_id = path_id("group_id", group_id).map_err(fail)?;
            presence(context, &tenant, &group_id).await
        }
        ["api", "v1", "broadcast"] => {
            let body = json_body(request.into_body()).await.map_err(fail)?;
            broadcast(context, &tenant, body).await
        }
        ["api", "v1", "iot", "events"] => {
            let body = json_body(request.into_body()).await.map_err(fail)?;
            iot_event(&context.node, &tenant, body).await.map(delivered)
        }
        ["api", "v1", "im", "messages"] => {
            let body = json_body(request.into_body()).await.map_err(fail)?;
            crate::im::api::post_message(node, &tenant, body)
                .await
                .map(ok)
        }
        _ => Ok(stats(context, &caller)),
    };
    response.map(|r| (route, boxed(r))).map_err(fail)
}

/// Runs a tool call. Its answer is one JSON body; when the tool reports
/// progress first, the body is streamed as JSON lines: each progress note
/// as it comes, then the answer (or `{"error":…}` on timeout).
async fn tool_call(
    node: Arc<RouterNode>,
    call: crate::jsonrpc::tools::ToolRequest,
) -> Result<Response<ApiBody>, ApiError> {
    let (progress_tx, mut progress) =
        tokio::sync::mpsc::channel(crate::jsonrpc::tools::PROGRESS_QUEUE);
    // The call runs on its own task: it keeps taking the tool's events
    // (and dropping notes past the progress bound) however slowly the
    // caller reads, so the tool's answer is never crowded out.
    let call =
        tokio::spawn(async move { crate::jsonrpc::tools::call(&node, &call, progress_tx).await });
    let mut running = Box::pin(async move {
        call.await.unwrap_or_else(|e| {
            Err(crate::jsonrpc::tools::ToolError::Unavailable(format!(
                "the call's task ended: {e}"
            )))
        })
    });
    // Notes come first: a note sent in the poll that also ends the call
    // is still streamed before the answer.
    let mut finished = None;
    let first_note = tokio::select! {
        biased;
        Some(note) = progress.recv() => note,
        outcome = &mut running => match progress.try_recv() {
            Ok(note) => {
                finished = Some(outcome);
                note
            }
            Err(_) => {
                let answer = outcome?;
                return Ok(boxed(json_response(StatusCode::OK, &api_rpc::tool_answer(&answer))));
            }
        },
    };
    // Lines wait here for a slow reader; while they do, the call's notes
    // wait in (and past its bound, drop out of) the progress queue.
    let (lines, body) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(
        crate::jsonrpc::tools::PROGRESS_QUEUE,
    );
    let line = |value: &Value| Ok(Frame::data(Bytes::from(format!("{value}\n"))));
    let _ = lines.send(line(&first_note)).await;
    tokio::spawn(async move {
        let outcome = match finished {
            Some(outcome) => outcome,
            None => loop {
                tokio::select! {
                    biased;
                    Some(note) = progress.recv() => {
                        if lines.send(line(&note)).await.is_err() {
                            return;
                        }
                    }
                    outcome = &mut running => break outcome,
                }
            },
        };
        while let Ok(note) = progress.try_recv() {
            if lines.send(line(&note)).await.is_err() {
                return;
            }
        }
        let last = match outcome {
            Ok(answer) => api_rpc::tool_answer(&answer),
            Err(e) => ApiError::from(e).body(),
        };
        let _ = lines.send(line(&last)).await;
    });
    let stream = StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(body));
    Response::builder()
        .status(StatusCode::OK)
        .header(http::header::CONTENT_TYPE, "application/x-ndjson")
        .body(stream.boxed_unsync())
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))
}

/// Who a request acts for.
struct Caller {
    tenant: String,
    /// The API key without `X-Tenant`: the operator, who may read every
    /// tenant's stats and the cluster's shape.
    operator: bool,
}

/// Authenticates a request: a service token acts for its own tenant only,
/// the API key for `X-Tenant` (default `default`).
fn authenticate(context: &ApiContext, request: &Request<Incoming>) -> Result<Caller, ApiError> {
    let unauthorized =
        |message: &str| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message);
    let bearer = request
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .ok_or_else(|| unauthorized("missing Authorization: Bearer header"))?;
    let header_tenant = match request.headers().get("x-tenant") {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .filter(|t| switchboard_proto::ids::is_valid_tenant(t))
                .ok_or_else(|| ApiError::field("X-Tenant", "X-Tenant is not a valid tenant"))?
                .to_owned(),
        ),
    };
    if let Some(key) = &context.api_key
        && constant_time_eq(key.as_bytes(), bearer.as_bytes())
    {
        return Ok(Caller {
            operator: header_tenant.is_none(),
            tenant: header_tenant.unwrap_or_else(|| DEFAULT_TENANT.to_owned()),
        });
    }
    let verifier = context
        .verifier
        .as_ref()
        .ok_or_else(|| unauthorized("invalid API key"))?;
    let refused = |reason: &'static str, message: String| {
        metrics::counter!("switchboard_api_tokens_refused_total", "reason" => reason).increment(1);
        unauthorized(&message)
    };
    let claims = verifier
        .verify(bearer)
        .map_err(|e| refused(e.label(), e.to_string()))?;
    claims
        .check_kind(Kind::Service)
        .map_err(|e| refused("kind", e.to_string()))?;
    match header_tenant {
        Some(other) if other != claims.tenant() => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "a service token of tenant {} cannot act for {other}",
                claims.tenant()
            ),
        )),
        _ => Ok(Caller {
            tenant: claims.tenant().to_owned(),
            operator: false,
        }),
    }
}

/// Compares secrets without leaking where they differ through timing.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub(crate) fn path_id(field: &str, id: &str) -> Result<String, ApiError> {
    if is_valid_id(id) {
        Ok(id.to_owned())
    } else {
        Err(ApiError::field(
            field,
            switchboard_proto::ids::invalid_id_message(field),
        ))
    }
}

async fn json_body(body: Incoming) -> Result<serde_json::Map<String, Value>, ApiError> {
    let bytes = read_body(body, MAX_BODY).await?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::invalid("the body must be a JSON object")),
        Err(e) => Err(ApiError::invalid_json(&e)),
    }
}

fn delivered(n: u32) -> Response<Body> {
    json_response(StatusCode::OK, &json!({ "delivered": n }))
}

fn unavailable() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "router is shutting down",
    )
}

/// Sends a V3 message as from `server` to a group or one of its clients;
/// the number of sockets it reached. Shared by HTTP and the NATS consumer.
pub async fn group_message(
    node: &RouterNode,
    tenant: &str,
    group_id: &str,
    body: serde_json::Map<String, Value>,
) -> Result<u32, ApiError> {
    let sender = Sender {
        client_id: None,
        group_id,
    };
    let message = group::validate(body, sender)?;
    let topic = match message.target {
        Target::Group => TopicKey::new(tenant, TopicKind::Group, group_id),
        Target::Direct => {
            let to = message.to_id.as_deref().unwrap_or_default();
            TopicKey::new(tenant, TopicKind::Client, to)
        }
        Target::Broadcast | Target::Echo => {
            return Err(ApiError::field(
                "target",
                "target must be group or direct (use /api/v1/broadcast to broadcast)",
            ));
        }
    };
    let wire = message.complete("server", group_id, &iso8601_now());
    node.publish(topic, Payload::json(wire))
        .await
        .map_err(|_| unavailable())
}

async fn broadcast(
    context: &ApiContext,
    tenant: &str,
    mut body: serde_json::Map<String, Value>,
) -> Result<Response<Body>, ApiError> {
    body.entry("target").or_insert_with(|| json!("broadcast"));
    // A broadcast belongs to no group unless the caller names one.
    let group_id = match body.get("group_id") {
        Some(Value::String(g)) => path_id("group_id", g)?,
        Some(Value::Null) | None => String::new(),
        Some(_) => return Err(ApiError::field("group_id", "group_id must be a string")),
    };
    let message = group::validate(
        body,
        Sender {
            client_id: None,
            group_id: &group_id,
        },
    )?;
    if message.target != Target::Broadcast {
        return Err(ApiError::field("target", "target must be broadcast"));
    }
    let wire = message.complete("server", &group_id, &iso8601_now());
    let n = context
        .node
        .publish(
            TopicKey::new(tenant, TopicKind::Tenant, ""),
            Payload::json(wire),
        )
        .await
        .map_err(|_| unavailable())?;
    Ok(delivered(n))
}

/// Pushes an IoT event to every socket with a matching subscription, once
/// per socket. Shared by HTTP and the NATS consumer.
pub async fn iot_event(
    node: &RouterNode,
    tenant: &str,
    body: serde_json::Map<String, Value>,
) -> Result<u32, ApiError> {
    let event = switchboard_proto::iot::parse_event(body)?;
    let topics = event
        .topic_names()
        .iter()
        .map(|name| TopicKey::new(tenant, TopicKind::Iot, name))
        .collect();
    let payload = Payload::json(event.push().to_string());
    node.publish_once(topics, payload).await.map_err(|e| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            e.to_string(),
        )
    })
}

async fn presence(
    context: &ApiContext,
    tenant: &str,
    group_id: &str,
) -> Result<Response<Body>, ApiError> {
    let response = context
        .node
        .presence(TopicKey::new(tenant, TopicKind::Group, group_id))
        .await
        .map_err(|_| unavailable())?;
    let count = response.members.len();
    Ok(json_response(
        StatusCode::OK,
        &json!({ "members": response.members, "count": count }),
    ))
}

/// The dialects `/stats` reports, in its order.
const STATS_DIALECTS: [switchboard_proto::Dialect; 5] = [
    switchboard_proto::Dialect::Group,
    switchboard_proto::Dialect::GroupV2,
    switchboard_proto::Dialect::Jsonrpc,
    switchboard_proto::Dialect::Iot,
    switchboard_proto::Dialect::Im,
];

/// `{"connections":{dialect: n,…},"total_connections":n}` from `count`.
fn connection_counts(count: impl Fn(switchboard_proto::Dialect) -> i64) -> Value {
    let mut connections = serde_json::Map::new();
    let mut total = 0;
    for dialect in STATS_DIALECTS {
        let n = count(dialect);
        total += n;
        connections.insert(dialect_label(dialect).to_owned(), json!(n));
    }
    json!({"connections": connections, "total_connections": total})
}

/// This router's connections: the caller's tenant's only, or, for the
/// operator, every tenant's plus the routers and edges of the cluster.
fn stats(context: &ApiContext, caller: &Caller) -> Response<Body> {
    let stats = &context.node.stats;
    if !caller.operator {
        let mut body =
            connection_counts(|dialect| stats.tenant_connections(&caller.tenant, dialect));
        body["tenant"] = json!(caller.tenant);
        return json_response(StatusCode::OK, &body);
    }
    let mut tenants = serde_json::Map::new();
    for tenant in stats.tenants() {
        let counts = connection_counts(|dialect| stats.tenant_connections(&tenant, dialect));
        tenants.insert(tenant, counts);
    }
    // Everything opened here, including sockets not yet in a tenant (an
    // IM socket before it registers).
    let mut body = connection_counts(|dialect| stats.connections(dialect));
    body["router_id"] = json!(context.node.id());
    body["routers"] = json!((context.routers)());
    body["edges"] = json!(context.node.edges());
    body["tenants"] = Value::Object(tenants);
    json_response(StatusCode::OK, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openapi_documents_every_route() {
        let doc: Value = serde_json::from_str(OPENAPI).expect("openapi.json is JSON");
        assert!(doc["openapi"].as_str().unwrap_or("").starts_with("3."));
        let paths = doc["paths"].as_object().expect("paths");
        for (method, path) in ROUTES {
            let operation = &paths
                .get(*path)
                .unwrap_or_else(|| panic!("{path} is not documented"))[method.to_lowercase()];
            assert!(operation.is_object(), "{method} {path} is not documented");
        }
        assert_eq!(
            paths.len(),
            ROUTES
                .iter()
                .map(|(_, p)| p)
                .collect::<std::collections::HashSet<_>>()
                .len(),
            "the document lists a route the router does not serve"
        );
    }

    #[test]
    fn constant_time_eq_compares() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
