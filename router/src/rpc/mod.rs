//! The JSON-RPC dialect's shared state on a router: app keys, conversation
//! bindings, device ownership and status, `_notify` pushes, streams and
//! tool calls. Everything durable lives in the store, so a binding
//! survives reconnects and the loss of the router that wrote it.
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
    Publish, Request, Response, TopicKind, request,
};

use crate::node::{NodeError, RouterNode, error_response};
use crate::reply::Reply;
use crate::shard::ShardCommand;
use crate::store::StoreError;
use crate::store::kv::keys;
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

/// Answers a JSON-RPC request body this router owns the topic of.
pub(crate) async fn handle(node: &Arc<RouterNode>, body: request::Body, reply: Reply) {
    let response = match body {
        request::Body::Kv(op) => kv(node, op).await,
        request::Body::Bind(bind) => bind_conversation(node, bind).await,
        request::Body::DeviceAttach(attach) => device_attach(node, attach).await,
        request::Body::DeviceStatus(status) => device_status(node, status).await,
        request::Body::ToolCall(call) => return tools::dispatch(node, call, reply).await,
        request::Body::ToolEvent(event) => tools::relay(node, event).await,
        request::Body::Notify(notify) => return notify_here(node, notify, reply).await,
        _ => error_response(ErrorCode::Invalid, "not a JSON-RPC request"),
    };
    reply.send(response);
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

async fn bind_device(
    node: &RouterNode,
    tenant: &str,
    hd: &str,
    conv: &str,
) -> Result<(), StoreError> {
    let (prefix, suffix) = keys::conv_devices_parts(tenant);
    node.store()
        .kv_rebind(&keys::device_conv(tenant, hd), conv, hd, &prefix, suffix)
        .await
        .map(drop)
}

async fn bind_conversation(node: &RouterNode, bind: BindConversation) -> Response {
    let topic = match topic_of(bind.topic.clone()) {
        Ok(topic) => topic,
        Err(response) => return *response,
    };
    let tenant = topic.tenant.as_str();
    let store = node.store();
    let result = async {
        if !bind.hd_id.is_empty() {
            if !bind.user.is_empty() {
                let owner = store
                    .kv_get(&keys::device_owner(tenant, &bind.hd_id))
                    .await?;
                if owner.as_deref() != Some(bind.user.as_str()) {
                    return Ok(Some(error_response(
                        ErrorCode::Forbidden,
                        &format!("device {} is not owned by {}", bind.hd_id, bind.user),
                    )));
                }
            }
            bind_device(node, tenant, &bind.hd_id, &bind.conv_id).await?;
        }
        if !bind.user.is_empty() {
            store
                .kv_set(&keys::user_conv(tenant, &bind.user), &bind.conv_id, None)
                .await?;
        }
        Ok::<_, StoreError>(None)
    }
    .await;
    match result {
        Ok(Some(refused)) => refused,
        Ok(None) => Response::default(),
        Err(e) => store_failed(&e),
    }
}

async fn device_attach(node: &RouterNode, attach: DeviceAttach) -> Response {
    let topic = match topic_of(attach.topic.clone()) {
        Ok(topic) => topic,
        Err(response) => return *response,
    };
    let (tenant, hd) = (topic.tenant.as_str(), topic.name.as_str());
    let store = node.store();
    let result = async {
        if !attach.owner.is_empty() {
            store
                .kv_set(&keys::device_owner(tenant, hd), &attach.owner, None)
                .await?;
        }
        if let Some(conv) = store.kv_get(&keys::device_conv(tenant, hd)).await? {
            return Ok(Some(conv));
        }
        if attach.owner.is_empty() {
            return Ok(None);
        }
        let Some(conv) = store
            .kv_get(&keys::user_conv(tenant, &attach.owner))
            .await?
        else {
            return Ok(None);
        };
        bind_device(node, tenant, hd, &conv).await?;
        Ok::<_, StoreError>(Some(conv))
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

/// The topics a push to a conversation reaches: its user sockets' topic
/// and the topic of every device bound to it.
async fn conversation_topics(
    node: &RouterNode,
    tenant: &str,
    conv: &str,
) -> Result<Vec<TopicKey>, StoreError> {
    let devices = node
        .store()
        .set_members(&keys::conv_devices(tenant, conv))
        .await?;
    let mut topics = vec![TopicKey::new(tenant, TopicKind::Conv, conv)];
    topics.extend(
        devices
            .iter()
            .map(|hd| TopicKey::new(tenant, TopicKind::Device, hd)),
    );
    Ok(topics)
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
        let mut topics = Vec::new();
        if let Some(conv) = store.kv_get(&keys::device_conv(tenant, hd)).await? {
            topics.extend(conversation_topics(node, tenant, &conv).await?);
        }
        if let Some(owner) = store.kv_get(&keys::device_owner(tenant, hd)).await? {
            topics.push(TopicKey::new(tenant, TopicKind::User, &owner));
        }
        Ok::<_, StoreError>(topics)
    }
    .await;
    let topics = match targets {
        Ok(topics) => topics,
        Err(e) => return store_failed(&e),
    };
    if topics.is_empty() {
        return Response::default();
    }
    match node.publish_once(topics, Payload::json(report.frame)).await {
        Ok(delivered) => Response {
            delivered,
            ..Response::default()
        },
        Err(e) => error_response(ErrorCode::Internal, &e.to_string()),
    }
}

/// Delivers a push to its target, at the target topic's owner.
pub(crate) async fn deliver(
    node: &RouterNode,
    topic: TopicKey,
    frame: Bytes,
) -> Result<u32, NodeError> {
    let payload = Payload::json(frame);
    if topic.kind == TopicKind::Conv {
        let topics = conversation_topics(node, &topic.tenant, &topic.name)
            .await
            .map_err(|e| NodeError::Unavailable(format!("store unavailable: {e}")))?;
        return node.publish_once(topics, payload).await;
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    node.to_shard(
        &topic.clone(),
        ShardCommand::Publish {
            topic,
            payload,
            reply: Some(Reply::Local(tx)),
        },
    )
    .await;
    rx.await
        .map(|response| response.delivered)
        .map_err(|_| NodeError::Unavailable("router is shutting down".to_owned()))
}

async fn notify_here(node: &Arc<RouterNode>, notify: Notify, reply: Reply) {
    let topic = match topic_of(notify.topic.clone()) {
        Ok(topic) => topic,
        Err(response) => return reply.send(*response),
    };
    if notify.stream_id.is_empty() {
        let response = match deliver(node, topic, notify.frame).await {
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

fn answered(response: Response) -> Result<Response, NodeError> {
    if response.error == 0 {
        Ok(response)
    } else {
        Err(NodeError::Unavailable(response.error_message))
    }
}

/// Pushes a `_notify` frame (or, with `stream`, a stream chunk) to a
/// target, wherever it is owned; returns the sockets reached.
pub async fn notify(
    node: &RouterNode,
    tenant: &str,
    target: &Target,
    frame: Bytes,
    stream: Option<(String, u64, bool)>,
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
        })),
    };
    answered(node.request(request).await).map(|r| r.delivered)
}

/// Publishes on an app channel as the server API; returns the receivers.
pub async fn app_publish(
    node: &RouterNode,
    tenant: &str,
    app: &str,
    channel: &str,
    message: &Value,
) -> Result<u32, NodeError> {
    let topic = TopicKey::new(
        tenant,
        TopicKind::AppChannel,
        &switchboard_proto::jsonrpc::channel_topic_name(app, channel),
    );
    let frame = switchboard_proto::jsonrpc::channel_message_frame(channel, message);
    let request = Request {
        correlation_id: 0,
        body: Some(request::Body::Publish(Publish {
            topic: Some(topic.to_proto()),
            payload: Some(Payload::json(frame)),
            from_conn: 0,
        })),
    };
    answered(node.request(request).await).map(|r| r.delivered)
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
