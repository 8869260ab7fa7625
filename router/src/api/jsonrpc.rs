//! The JSON-RPC dialect's routes, shared by HTTP and NATS: `_notify`
//! pushes, stream chunks, app channel publishes, device status,
//! conversation owners and tool calls. Each takes the parsed JSON body
//! and answers JSON or an [`ApiError`].

use std::time::Duration;

use serde_json::{Map, Value, json};
use switchboard_proto::jsonrpc::{is_valid_key, is_valid_ref, notify_frame, stream_frame};

use super::ApiError;
use crate::im;
use crate::jsonrpc::tools::{MAX_TIMEOUT, ToolRequest};
use crate::jsonrpc::{self, Target};
use crate::node::RouterNode;

/// Tool call timeout when the caller names none.
pub const DEFAULT_TOOL_TIMEOUT: Duration = Duration::from_secs(30);

/// A path id (appId, toolId, hdId) or the same field of a NATS body.
pub fn ref_id(field: &str, id: &str) -> Result<String, ApiError> {
    if is_valid_ref(id) {
        Ok(id.to_owned())
    } else {
        Err(ApiError::field(
            field,
            format!("{field} must match [A-Za-z0-9_.:@-]{{1,128}}"),
        ))
    }
}

/// A required string field of a NATS body that HTTP takes from the path.
pub fn ref_field(body: &mut Map<String, Value>, field: &str) -> Result<String, ApiError> {
    match body.remove(field) {
        Some(Value::String(id)) => ref_id(field, &id),
        _ => Err(ApiError::field(field, format!("{field} is required"))),
    }
}

fn target(body: &Map<String, Value>) -> Result<Target, ApiError> {
    let Some(Value::Object(to)) = body.get("to") else {
        return Err(ApiError::field(
            "to",
            "to must be an object naming one of user, conv or device",
        ));
    };
    if to.len() != 1 {
        return Err(ApiError::field(
            "to",
            "to must name exactly one of user, conv or device",
        ));
    }
    let (kind, id) = to
        .iter()
        .next()
        .ok_or_else(|| ApiError::field("to", "to is empty"))?;
    let field = format!("to.{kind}");
    let id = match id {
        Value::String(id) if is_valid_ref(id) => id.clone(),
        _ => {
            return Err(ApiError::field(
                &field,
                format!("{field} must be an id matching [A-Za-z0-9_.:@-]{{1,128}}"),
            ));
        }
    };
    match kind.as_str() {
        "user" => Ok(Target::User(id)),
        "conv" => Ok(Target::Conv(id)),
        "device" => Ok(Target::Device(id)),
        _ => Err(ApiError::field(
            &field,
            "to must name one of user, conv or device",
        )),
    }
}

/// `POST /api/v1/notify`.
pub async fn notify(
    node: &RouterNode,
    tenant: &str,
    body: Map<String, Value>,
    idempotency_key: Option<String>,
) -> Result<Value, ApiError> {
    let target = target(&body)?;
    let kind = match body.get("type") {
        Some(Value::String(kind)) if !kind.is_empty() && kind.len() <= 128 => kind.clone(),
        _ => {
            return Err(ApiError::field(
                "type",
                "type must be a string of 1 to 128 characters",
            ));
        }
    };
    let data = body.get("data").cloned().unwrap_or(Value::Null);
    let frame = notify_frame(&kind, &data);
    let mut delivered =
        jsonrpc::notify(node, tenant, &target, frame, None, idempotency_key).await?;
    // A notice to a user also reaches that user's IM sockets, as a 3001.
    if let (Target::User(user), "notice") = (&target, kind.as_str()) {
        let notice = im::system_notice(user, &data)?;
        let (to_im, _stored) = im::deliver_system_message(node, tenant, &notice).await?;
        delivered += to_im;
    }
    Ok(json!({ "delivered": delivered }))
}

/// `POST /api/v1/stream`.
pub async fn stream(
    node: &RouterNode,
    tenant: &str,
    body: Map<String, Value>,
) -> Result<Value, ApiError> {
    let target = target(&body)?;
    let stream_id = match body.get("streamId") {
        Some(Value::String(id)) if is_valid_key(id) => id.clone(),
        _ => {
            return Err(ApiError::field(
                "streamId",
                "streamId must be a string of 1 to 256 bytes",
            ));
        }
    };
    let Some(seq) = body.get("seq").and_then(Value::as_u64) else {
        return Err(ApiError::field("seq", "seq must be an integer >= 0"));
    };
    let done = match body.get("done") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(done)) => *done,
        Some(_) => return Err(ApiError::field("done", "done must be a boolean")),
    };
    let delta = body.get("delta").cloned().unwrap_or(Value::Null);
    let frame = stream_frame(&stream_id, seq, &delta, done);
    let delivered = jsonrpc::notify(
        node,
        tenant,
        &target,
        frame,
        Some((stream_id, seq, done)),
        None,
    )
    .await?;
    Ok(json!({ "delivered": delivered }))
}

/// `POST /api/v1/apps/{appId}/publish`.
pub async fn app_publish(
    node: &RouterNode,
    tenant: &str,
    app: &str,
    body: Map<String, Value>,
    idempotency_key: Option<String>,
) -> Result<Value, ApiError> {
    let channel = match body.get("channel") {
        Some(Value::String(c)) if is_valid_key(c) => c.clone(),
        _ => {
            return Err(ApiError::field(
                "channel",
                "channel must be a string of 1 to 256 bytes",
            ));
        }
    };
    let Some(message) = body.get("message") else {
        return Err(ApiError::field("message", "message is required"));
    };
    let receivers =
        jsonrpc::app_publish(node, tenant, app, &channel, message, idempotency_key).await?;
    Ok(json!({ "receivers": receivers }))
}

/// `GET /api/v1/devices/{hdId}/status`.
pub async fn device_status(node: &RouterNode, tenant: &str, hd: &str) -> Result<Value, ApiError> {
    let record = jsonrpc::stored_device_status(node, tenant, hd).await?;
    let Some(mut record) = record else {
        return Err(ApiError::NoDeviceStatus {
            hd_id: hd.to_owned(),
        });
    };
    let status = record
        .get_mut("status")
        .map(Value::take)
        .unwrap_or(Value::Null);
    let updated_at = record
        .get_mut("updated_at")
        .map(Value::take)
        .unwrap_or(Value::Null);
    Ok(json!({"hdId": hd, "status": status, "updated_at": updated_at}))
}

/// `PUT /api/v1/conversations/{convId}` with `{"owner": userId}`: sets the
/// owner of a conversation nobody owns yet; naming its current owner again
/// is a success, naming anyone else is 409 (an owner never changes).
pub async fn conversation_owner(
    node: &RouterNode,
    tenant: &str,
    conv: &str,
    body: Map<String, Value>,
) -> Result<Value, ApiError> {
    let owner = match body.get("owner") {
        Some(Value::String(owner)) => ref_id("owner", owner)?,
        _ => {
            return Err(ApiError::field(
                "owner",
                "owner must be a user id matching [A-Za-z0-9_.:@-]{1,128}",
            ));
        }
    };
    jsonrpc::set_conversation_owner(node, tenant, conv, &owner).await?;
    Ok(json!({"convId": conv, "owner": owner}))
}

/// The tool call a body asks for.
pub fn tool_request(
    tenant: &str,
    app: String,
    tool: String,
    body: &Map<String, Value>,
) -> Result<ToolRequest, ApiError> {
    let method = match body.get("method") {
        Some(Value::String(m)) if !m.is_empty() && m.len() <= 256 => m.clone(),
        _ => {
            return Err(ApiError::field(
                "method",
                "method must be a string of 1 to 256 bytes",
            ));
        }
    };
    let timeout = match body.get("timeout_ms") {
        None | Some(Value::Null) => DEFAULT_TOOL_TIMEOUT,
        Some(value) => match value.as_u64() {
            Some(ms) if ms > 0 && Duration::from_millis(ms) <= MAX_TIMEOUT => {
                Duration::from_millis(ms)
            }
            _ => {
                return Err(ApiError::field(
                    "timeout_ms",
                    format!(
                        "timeout_ms must be an integer from 1 to {}",
                        MAX_TIMEOUT.as_millis()
                    ),
                ));
            }
        },
    };
    Ok(ToolRequest {
        tenant: tenant.to_owned(),
        app,
        tool,
        method,
        params: body.get("params").cloned().unwrap_or(Value::Null),
        timeout,
    })
}

/// The app's JSON-RPC answer as the caller gets it: `{"result":…}` or
/// `{"error":…}`.
pub fn tool_answer(answer: &Value) -> Value {
    match (answer.get("result"), answer.get("error")) {
        (_, Some(error)) => json!({ "error": error }),
        (Some(result), None) => json!({ "result": result }),
        (None, None) => json!({ "result": Value::Null }),
    }
}
