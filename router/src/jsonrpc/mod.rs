//! The JSON-RPC dialect's shared state on a router: app keys, conversation
//! bindings and ownership, device ownership and status, `_notify` pushes,
//! streams and tool calls. Everything durable lives in the store, so a
//! binding survives reconnects and the loss of the router that wrote it.
//!
//! A conversation belongs to one user: the first to bind it (or the one
//! the server API names first). Only that user's sockets, and devices
//! whose token names that user as owner, may bind it; the check and the
//! binding are one atomic store step ([`ConvBind`]).
//!
//! - [`streams`]: stream chunks in `seq` order, per stream.
//! - [`tools`]: tool calls and the relay of their answers.

pub mod streams;
pub mod tools;

use std::sync::Arc;

use prost::bytes::Bytes;
use serde_json::{Value, json};
use switchboard_common::clock::iso8601_now;
use switchboard_proto::{
    BindConversation, DeviceAttach, DeviceStatus, ErrorCode, KvAction, KvOp, Notify, Payload,
    Request, Response, ToolCall, ToolEvent, TopicKind, request,
};

use crate::feature::{Claim, Ctx, Feature};
use crate::node::{NodeError, RouterNode, error_response};
use crate::reply::Reply;
use crate::store::StoreError;
use crate::store::{ConvBind, ConvBound, DeviceBind, keys};
use crate::topic::TopicKey;

/// Who a `_notify` from the server API is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    User(String),
    Conv(String),
    Device(String),
}

impl Target {
    pub fn topic(&self, tenant: &str) -> TopicKey {
        match self {
            Self::User(id) => TopicKey::new(tenant, TopicKind::User, id),
            Self::Conv(id) => TopicKey::new(tenant, TopicKind::Conv, id),
            Self::Device(id) => TopicKey::new(tenant, TopicKind::Device, id),
        }
    }
}

fn store_failed(e: &StoreError) -> Response {
    tracing::warn!(error = %e, "store operation failed");
    error_response(ErrorCode::Internal, &format!("store unavailable: {e}"))
}

/// The JSON-RPC dialect's part at a topic's owner.
pub(crate) struct JsonRpc;

/// A JSON-RPC request at its topic's owner.
pub(crate) enum JsonRpcRequest {
    Kv(KvOp),
    Bind(BindConversation),
    DeviceAttach(DeviceAttach),
    DeviceStatus(DeviceStatus),
    ToolCall(ToolCall),
    ToolEvent(ToolEvent),
    Notify(Notify),
}

impl Feature for JsonRpc {
    type Request = JsonRpcRequest;

    fn claim(body: request::Body) -> Claim<JsonRpcRequest> {
        Claim::Mine(match body {
            request::Body::Kv(op) => JsonRpcRequest::Kv(op),
            request::Body::Bind(bind) => JsonRpcRequest::Bind(bind),
            request::Body::DeviceAttach(attach) => JsonRpcRequest::DeviceAttach(attach),
            request::Body::DeviceStatus(status) => JsonRpcRequest::DeviceStatus(status),
            request::Body::ToolCall(call) => JsonRpcRequest::ToolCall(call),
            request::Body::ToolEvent(event) => JsonRpcRequest::ToolEvent(event),
            request::Body::Notify(notify) => JsonRpcRequest::Notify(notify),
            other => return Claim::Other(other),
        })
    }

    async fn answer(ctx: Ctx, request: JsonRpcRequest) {
        let Ctx { node, reply } = ctx;
        let response = match request {
            JsonRpcRequest::Kv(op) => kv(&node, op).await,
            JsonRpcRequest::Bind(bind) => bind_conversation(&node, bind).await,
            JsonRpcRequest::DeviceAttach(attach) => device_attach(&node, attach).await,
            JsonRpcRequest::DeviceStatus(status) => device_status(&node, status).await,
            JsonRpcRequest::ToolCall(call) => return tools::dispatch(&node, call, reply).await,
            JsonRpcRequest::ToolEvent(event) => tools::relay(&node, event).await,
            JsonRpcRequest::Notify(notify) => return notify_here(&node, notify, reply).await,
        };
        reply.send(response);
    }
}

/// The request's topic; the refusal is boxed to keep `Result` small.
fn topic_of(topic: Option<switchboard_proto::Topic>) -> Result<TopicKey, Box<Response>> {
    topic.map(TopicKey::from).ok_or_else(|| {
        Box::new(error_response(
            ErrorCode::Invalid,
            "a request needs a topic",
        ))
    })
}

async fn kv(node: &RouterNode, op: KvOp) -> Response {
    let topic = match topic_of(op.topic.clone()) {
        Ok(topic) => topic,
        Err(response) => return *response,
    };
    let key = keys::app_value(&topic.tenant, &topic.name, &op.key);
    let store = node.store();
    let result = match op.action() {
        KvAction::Get => store.kv_get(&key).await.map(|value| Response {
            value,
            ..Response::default()
        }),
        KvAction::Set => {
            let ttl = (op.ttl_ms > 0).then_some(op.ttl_ms);
            store
                .kv_set(&key, &op.value, ttl)
                .await
                .map(|()| Response::default())
        }
        KvAction::Del => store.kv_del(&key).await.map(|deleted| Response {
            count: u32::from(deleted),
            ..Response::default()
        }),
        KvAction::Unspecified => return error_response(ErrorCode::Invalid, "unknown key action"),
    };
    result.unwrap_or_else(|e| store_failed(&e))
}

/// Why a binding was refused, as the caller hears it.
fn bind_refusal(bound: &ConvBound, conv: &str, user: &str, hd: Option<&str>) -> Option<Response> {
    let message = match bound {
        ConvBound::Bound => return None,
        ConvBound::OwnedBy(_) => format!("conversation {conv} belongs to another user"),
        ConvBound::DeviceNotOwned => {
            let hd = hd.unwrap_or_default();
            format!(
                "device {hd} is not owned by {user}: a device's owner is known once it has \
                 connected with a device token whose owner is {user}"
            )
        }
    };
    metrics::counter!("switchboard_router_bindings_refused_total").increment(1);
    Some(error_response(ErrorCode::Forbidden, &message))
}

/// Binds `conv` for `user` (its owner, or its first binder), with the
/// user's last conversation and/or a device, atomically.
async fn bind_as(
    node: &RouterNode,
    tenant: &str,
    conv: &str,
    user: &str,
    last: bool,
    device: Option<(&str, bool)>,
) -> Result<ConvBound, StoreError> {
    let owner_key = keys::conv_owner(tenant, conv);
    let last_key = keys::user_conv(tenant, user);
    let (prefix, suffix) = keys::conv_devices_parts(tenant);
    let device_keys = device.map(|(hd, checked)| {
        (
            hd,
            keys::device_conv(tenant, hd),
            checked.then(|| keys::device_owner(tenant, hd)),
        )
    });
    let bind = ConvBind {
        owner_key: &owner_key,
        conv,
        user,
        last: last.then_some(last_key.as_str()),
        device: device_keys
            .as_ref()
            .map(|(hd, pointer, owned_by)| DeviceBind {
                pointer,
                member: hd,
                set_prefix: &prefix,
                set_suffix: suffix,
                owned_by: owned_by.as_deref(),
            }),
    };
    node.store().conv_bind(&bind).await
}

async fn bind_conversation(node: &RouterNode, bind: BindConversation) -> Response {
    let topic = match topic_of(bind.topic.clone()) {
        Ok(topic) => topic,
        Err(response) => return *response,
    };
    let tenant = topic.tenant.as_str();
    let hd = (!bind.hd_id.is_empty()).then_some(bind.hd_id.as_str());
    let conv = bind.conv_id.as_str();
    let result = if !bind.user.is_empty() {
        // A user socket: the user's own binding, and the device's if named.
        bind_as(
            node,
            tenant,
            conv,
            &bind.user,
            true,
            hd.map(|hd| (hd, true)),
        )
        .await
        .map(|bound| bind_refusal(&bound, conv, &bind.user, hd))
    } else if let Some(hd) = hd {
        // A device switching itself binds with its owner's rights.
        if bind.owner.is_empty() {
            metrics::counter!("switchboard_router_bindings_refused_total").increment(1);
            return error_response(
                ErrorCode::Forbidden,
                &format!("device {hd} has no owner, so it may not bind conversations"),
            );
        }
        bind_as(node, tenant, conv, &bind.owner, false, Some((hd, false)))
            .await
            .map(|bound| bind_refusal(&bound, conv, &bind.owner, Some(hd)))
    } else {
        return error_response(ErrorCode::Invalid, "a binding names a user or a device");
    };
    match result {
        Ok(Some(refused)) => refused,
        Ok(None) => Response::default(),
        Err(e) => store_failed(&e),
    }
}

/// A device socket opened: records (or forgets) its owner and binds it to
/// its last conversation, else its owner's last one, whichever its owner
/// may bind; a stored binding its owner may not keep is dropped, so
/// pushes to that conversation stop reaching the device.
async fn device_attach(node: &RouterNode, attach: DeviceAttach) -> Response {
    let topic = match topic_of(attach.topic.clone()) {
        Ok(topic) => topic,
        Err(response) => return *response,
    };
    let (tenant, hd) = (topic.tenant.as_str(), topic.name.as_str());
    let store = node.store();
    let owner = attach.owner.as_str();
    let result = async {
        let owner_key = keys::device_owner(tenant, hd);
        if owner.is_empty() {
            store.kv_del(&owner_key).await?;
        } else {
            store.kv_set(&owner_key, owner, None).await?;
        }
        let current = store.kv_get(&keys::device_conv(tenant, hd)).await?;
        if !owner.is_empty() {
            let owners_last = store.kv_get(&keys::user_conv(tenant, owner)).await?;
            for conv in [current.as_deref(), owners_last.as_deref()]
                .into_iter()
                .flatten()
            {
                if bind_as(node, tenant, conv, owner, false, Some((hd, false))).await?
                    == ConvBound::Bound
                {
                    return Ok(Some(conv.to_owned()));
                }
            }
        }
        if current.is_some() {
            let (prefix, suffix) = keys::conv_devices_parts(tenant);
            store
                .kv_unbind(&keys::device_conv(tenant, hd), hd, &prefix, suffix)
                .await?;
        }
        Ok::<_, StoreError>(None)
    }
    .await;
    match result {
        Ok(value) => Response {
            value,
            ..Response::default()
        },
        Err(e) => store_failed(&e),
    }
}

/// Why the server API could not set a conversation's owner.
#[derive(Debug, thiserror::Error)]
pub enum OwnerError {
    #[error("conversation {conv} already belongs to another user")]
    Taken { conv: String },
    #[error("store unavailable: {0}")]
    Store(#[from] StoreError),
}

/// `PUT /api/v1/conversations/{convId}`: makes `owner` the owner of a
/// conversation nobody owns yet (or confirms it). An owner never changes,
/// so a binding allowed once is never silently handed to someone else.
pub async fn set_conversation_owner(
    node: &RouterNode,
    tenant: &str,
    conv: &str,
    owner: &str,
) -> Result<(), OwnerError> {
    let owner_key = keys::conv_owner(tenant, conv);
    let bind = ConvBind {
        owner_key: &owner_key,
        conv,
        user: owner,
        last: None,
        device: None,
    };
    match node.store().conv_bind(&bind).await? {
        ConvBound::Bound => Ok(()),
        ConvBound::OwnedBy(_) | ConvBound::DeviceNotOwned => Err(OwnerError::Taken {
            conv: conv.to_owned(),
        }),
    }
}

/// The topics of the devices bound to a conversation: a push to the
/// conversation reaches their sockets too.
async fn bound_devices(
    node: &RouterNode,
    tenant: &str,
    conv: &str,
) -> Result<Vec<TopicKey>, StoreError> {
    let devices = node
        .store()
        .set_members(&keys::conv_devices(tenant, conv))
        .await?;
    Ok(devices
        .iter()
        .map(|hd| TopicKey::new(tenant, TopicKind::Device, hd))
        .collect())
}

async fn device_status(node: &RouterNode, report: DeviceStatus) -> Response {
    let topic = match topic_of(report.topic.clone()) {
        Ok(topic) => topic,
        Err(response) => return *response,
    };
    let (tenant, hd) = (topic.tenant.as_str(), topic.name.as_str());
    let Ok(status) = serde_json::from_slice::<Value>(&report.status) else {
        return error_response(ErrorCode::Invalid, "status is not JSON");
    };
    let store = node.store();
    let targets = async {
        let record = json!({"status": status, "updated_at": iso8601_now()});
        store
            .kv_set(&keys::device_status(tenant, hd), &record.to_string(), None)
            .await?;
        let conv = store.kv_get(&keys::device_conv(tenant, hd)).await?;
        let owner = store.kv_get(&keys::device_owner(tenant, hd)).await?;
        Ok::<_, StoreError>((conv, owner))
    }
    .await;
    let (conv, owner) = match targets {
        Ok(targets) => targets,
        Err(e) => return store_failed(&e),
    };
    match report_status(node, tenant, conv, owner, report.frame).await {
        Ok(delivered) => Response {
            delivered,
            ..Response::default()
        },
        Err(e) => error_response(ErrorCode::Internal, &e.to_string()),
    }
}

/// A status report is a push to the device's conversation (appended once
/// to the conversation's history, reaching its sockets and every bound
/// device's with the conversation's position) and to the owner's user
/// sockets. A user socket bound to that conversation has it already;
/// the others get it without a place in any history. A device bound to
/// no conversation reports to its owner's user history instead.
async fn report_status(
    node: &RouterNode,
    tenant: &str,
    conv: Option<String>,
    owner: Option<String>,
    frame: Bytes,
) -> Result<u32, NodeError> {
    let Some(conv) = conv else {
        return match owner {
            Some(owner) => notify_boxed(node, tenant, Target::User(owner), frame).await,
            None => Ok(0),
        };
    };
    let mut delivered =
        notify_boxed(node, tenant, Target::Conv(conv.clone()), frame.clone()).await?;
    if let Some(owner) = owner {
        let mut users = node
            .subscribers(vec![TopicKey::new(tenant, TopicKind::User, &owner)])
            .await?;
        let reached = node
            .subscribers(vec![TopicKey::new(tenant, TopicKind::Conv, &conv)])
            .await?;
        for (edge, conns) in reached {
            if let Some(left) = users.get_mut(&edge) {
                left.retain(|conn| !conns.contains(conn));
            }
        }
        delivered += node.deliver_to_edges(users, &Payload::json(frame));
    }
    Ok(delivered)
}

/// [`notify`] from inside a request's answer, boxed: the push may come
/// back to this router's answer, and a boxed future ends the cycle.
fn notify_boxed<'a>(
    node: &'a RouterNode,
    tenant: &'a str,
    target: Target,
    frame: Bytes,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<u32, NodeError>> + Send + 'a>> {
    Box::pin(async move { notify(node, tenant, &target, frame, None, None).await })
}

/// The stream name a push's topic goes by on the wire (`"stream"` in the
/// `_notify` params, and in a recovery message).
pub fn stream_name(kind: TopicKind) -> Option<&'static str> {
    match kind {
        TopicKind::User => Some("user"),
        TopicKind::Conv => Some("conv"),
        TopicKind::Device => Some("device"),
        TopicKind::AppChannel => Some("channel"),
        _ => None,
    }
}

/// Delivers a push to its target, at the target topic's owner. A push to
/// a conversation is one message of the conversation's history: it
/// reaches the conversation's sockets and those of every device bound to
/// it, each with the conversation's position.
pub(crate) async fn deliver(
    node: &RouterNode,
    topic: TopicKey,
    frame: Bytes,
    publish_id: Option<String>,
) -> Result<u32, NodeError> {
    let frame = match stream_name(topic.kind) {
        Some(stream) => switchboard_proto::jsonrpc::with_stream(&frame, stream),
        None => frame,
    };
    let payload = Payload::json(frame);
    if topic.kind == TopicKind::Conv {
        let devices = bound_devices(node, &topic.tenant, &topic.name).await?;
        let also = if devices.is_empty() {
            Default::default()
        } else {
            node.subscribers(devices).await?
        };
        return node
            .publish_also_here(topic, payload, publish_id, also)
            .await;
    }
    node.publish_here(topic, payload, publish_id).await
}

async fn notify_here(node: &Arc<RouterNode>, notify: Notify, reply: Reply) {
    let topic = match topic_of(notify.topic.clone()) {
        Ok(topic) => topic,
        Err(response) => return reply.send(*response),
    };
    if notify.stream_id.is_empty() {
        let publish_id = (!notify.publish_id.is_empty()).then_some(notify.publish_id);
        let response = match deliver(node, topic, notify.frame, publish_id).await {
            Ok(delivered) => Response {
                delivered,
                ..Response::default()
            },
            Err(e) => error_response(ErrorCode::Internal, &e.to_string()),
        };
        return reply.send(response);
    }
    node.streams().push(node, topic, notify, reply).await;
}

/// Pushes a `_notify` frame (or, with `stream`, a stream chunk) to a
/// target, wherever it is owned; returns the sockets reached. A push
/// with `publish_id` its target's history holds already is not sent again.
pub async fn notify(
    node: &RouterNode,
    tenant: &str,
    target: &Target,
    frame: Bytes,
    stream: Option<(String, u64, bool)>,
    publish_id: Option<String>,
) -> Result<u32, NodeError> {
    let (stream_id, seq, done) = stream.unwrap_or_default();
    let request = Request {
        correlation_id: 0,
        body: Some(request::Body::Notify(Notify {
            topic: Some(target.topic(tenant).to_proto()),
            frame,
            stream_id,
            seq,
            done,
            publish_id: publish_id.unwrap_or_default(),
        })),
    };
    Ok(node.call(request).await?.delivered)
}

/// Publishes on an app channel as the server API; returns the receivers.
/// A publish whose `publish_id` the channel's history holds is not sent
/// again.
pub async fn app_publish(
    node: &RouterNode,
    tenant: &str,
    app: &str,
    channel: &str,
    message: &Value,
    publish_id: Option<String>,
) -> Result<u32, NodeError> {
    let topic = TopicKey::new(
        tenant,
        TopicKind::AppChannel,
        &switchboard_proto::jsonrpc::channel_topic_name(app, channel),
    );
    let frame = switchboard_proto::jsonrpc::channel_message_frame(channel, message);
    let frame = switchboard_proto::jsonrpc::with_stream(&frame, "channel");
    node.publish_with_id(topic, Payload::json(frame), publish_id)
        .await
}

/// A device's latest status record (`{"status":…,"updated_at":…}`).
pub async fn stored_device_status(
    node: &RouterNode,
    tenant: &str,
    hd: &str,
) -> Result<Option<Value>, StoreError> {
    let record = node
        .store()
        .kv_get(&keys::device_status(tenant, hd))
        .await?;
    Ok(record.and_then(|text| serde_json::from_str(&text).ok()))
}
