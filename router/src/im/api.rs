//! The IM part of the server API: `POST /api/v1/im/messages` and the NATS
//! subject `switchboard.api.im.messages`, both answering
//! `{"delivered": n, "stored": m}` (`stored`: recipients with no socket
//! open, whose copy waits for their next registration).

use serde_json::{Map, Value, json};
use switchboard_proto::im::ImMessage;

use super::{ImError, deliver_system_message};
use crate::api::ApiError;
use crate::node::RouterNode;

/// Checks a system message from the API and sends it.
pub async fn post_message(
    node: &RouterNode,
    tenant: &str,
    body: Map<String, Value>,
) -> Result<Value, ApiError> {
    let message = ImMessage::system(body, new_id).map_err(|refusal| invalid(&refusal))?;
    let (delivered, stored) = deliver_system_message(node, tenant, &message).await?;
    Ok(json!({"delivered": delivered, "stored": stored}))
}

impl From<ImError> for ApiError {
    fn from(e: ImError) -> Self {
        match e {
            ImError::Invalid(refusal) => invalid(&refusal),
            ImError::Unavailable(reason) => ApiError::unavailable(reason),
            // The API sends as `SYSTEM`, which has no quota; should that
            // ever change, the caller is told to slow down.
            e @ ImError::OverQuota { .. } => ApiError::new(
                http::StatusCode::TOO_MANY_REQUESTS,
                "over_quota",
                e.to_string(),
            ),
        }
    }
}

fn invalid(refusal: &switchboard_proto::im::Refusal) -> ApiError {
    if refusal.field.is_empty() {
        ApiError::invalid(&refusal.message)
    } else {
        ApiError::field(refusal.field, refusal.message.clone())
    }
}

/// An id for a system message sent without one.
pub(crate) fn new_id() -> String {
    format!("sys-{}", super::random_hex::<12>())
}
