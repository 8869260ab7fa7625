//! The group dialect's routes: a V3 message from `server` to a group or
//! one of its clients, a broadcast to every group socket of the tenant,
//! and a group's presence. Shared by HTTP and NATS.

use serde_json::{Map, Value, json};
use switchboard_common::clock::iso8601_now;
use switchboard_proto::group::{self, Sender, Target};
use switchboard_proto::{Payload, TopicKind, is_valid_id};

use super::ApiError;
use crate::node::RouterNode;
use crate::topic::TopicKey;

/// A group id from a path, a body or a subject.
pub fn group_id(id: &str) -> Result<String, ApiError> {
    if is_valid_id(id) {
        Ok(id.to_owned())
    } else {
        Err(ApiError::field(
            "group_id",
            switchboard_proto::ids::invalid_id_message("group_id"),
        ))
    }
}

/// `POST /api/v1/groups/{group_id}/messages`: sends a V3 message as from
/// `server` to the group or one of its clients; the sockets it reached.
pub async fn message(
    node: &RouterNode,
    tenant: &str,
    group_id: &str,
    body: Map<String, Value>,
    idempotency_key: Option<String>,
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
    node.publish_with_id(topic, Payload::json(wire), idempotency_key)
        .await
        .map_err(ApiError::Node)
}

/// The `Idempotency-Key` header of a publish, as the publish id its
/// history keeps: a key sent again within the history is not delivered
/// twice. Keys are the caller's, so they are namespaced apart from the
/// ids edges make; 1 to 128 visible ASCII characters.
pub fn idempotency_key(headers: &http::HeaderMap) -> Result<Option<String>, ApiError> {
    idempotency_key_of(headers.get("idempotency-key").map(|v| v.as_bytes()))
}

/// [`idempotency_key`] from the header's raw value, however it came
/// (HTTP, or a NATS message's headers).
pub fn idempotency_key_of(value: Option<&[u8]>) -> Result<Option<String>, ApiError> {
    let Some(value) = value else {
        return Ok(None);
    };
    let key = std::str::from_utf8(value)
        .ok()
        .filter(|k| (1..=128).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| {
            ApiError::field(
                "Idempotency-Key",
                "Idempotency-Key must be 1 to 128 visible ASCII characters",
            )
        })?;
    Ok(Some(format!("api:{key}")))
}

/// `POST /api/v1/broadcast`: a V3 message to every group socket of the
/// tenant; the sockets it reached.
pub async fn broadcast(
    node: &RouterNode,
    tenant: &str,
    mut body: Map<String, Value>,
    idempotency_key: Option<String>,
) -> Result<u32, ApiError> {
    body.entry("target").or_insert_with(|| json!("broadcast"));
    // A broadcast belongs to no group unless the caller names one.
    let group_id = match body.get("group_id") {
        Some(Value::String(g)) => group_id(g)?,
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
    node.publish_with_id(
        TopicKey::new(tenant, TopicKind::Tenant, ""),
        Payload::json(wire),
        idempotency_key,
    )
    .await
    .map_err(ApiError::Node)
}

/// `GET /api/v1/groups/{group_id}/presence`: `{"members":[…],"count":n}`.
pub async fn presence(node: &RouterNode, tenant: &str, group_id: &str) -> Result<Value, ApiError> {
    let answer = node
        .presence(TopicKey::new(tenant, TopicKind::Group, group_id))
        .await
        .map_err(ApiError::Node)?;
    let count = answer.members.len();
    Ok(json!({ "members": answer.members, "count": count }))
}
