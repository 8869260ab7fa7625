//! The IoT route: `POST /api/v1/iot/events` and its NATS subject.

use serde_json::{Map, Value};
use switchboard_proto::{Payload, TopicKind};

use super::ApiError;
use crate::node::RouterNode;
use crate::topic::TopicKey;

/// Pushes an IoT event to every socket with a matching subscription, once
/// per socket however many of its subscriptions match; the sockets it
/// reached.
pub async fn event(
    node: &RouterNode,
    tenant: &str,
    body: Map<String, Value>,
) -> Result<u32, ApiError> {
    let event = switchboard_proto::iot::parse_event(body)?;
    let topics = event
        .topic_names()
        .iter()
        .map(|name| TopicKey::new(tenant, TopicKind::Iot, name))
        .collect();
    let payload = Payload::json(event.push().to_string());
    Ok(node.publish_once(topics, payload).await?)
}
