//! The IM route: `POST /api/v1/im/messages` and the NATS subject
//! `{prefix}.api.{tenant}.im.messages`, both answering
//! `{"delivered": n, "stored": m}` (`stored`: recipients with no socket
//! open, whose copy waits for their next registration).

use serde_json::{Map, Value, json};
use switchboard_proto::im::ImMessage;

use super::ApiError;
use crate::im::{ImError, deliver_system_message, new_id};
use crate::node::RouterNode;

/// Checks a system message from the API and sends it.
pub async fn post_message(
    node: &RouterNode,
    tenant: &str,
    body: Map<String, Value>,
) -> Result<Value, ApiError> {
    let message = ImMessage::system(body, new_id).map_err(ImError::Invalid)?;
    let (delivered, stored) = deliver_system_message(node, tenant, &message).await?;
    Ok(json!({"delivered": delivered, "stored": stored}))
}
