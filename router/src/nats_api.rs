//! The server API over NATS: the same JSON bodies as HTTP plus a `tenant`
//! field, consumed in a queue group so each message is handled by one
//! router. Publishing on NATS is trusted (NATS' own accounts guard it). A
//! message that fails validation is answered with the HTTP error JSON when
//! it has a reply subject, counted, and never stops the consumer.

use std::sync::Arc;

use futures_util::StreamExt;
use serde_json::{Value, json};
use switchboard_common::auth::DEFAULT_TENANT;
use tokio_util::sync::CancellationToken;

use crate::api::{self, ApiError};
use crate::node::RouterNode;

/// Queue group shared by every router.
pub const QUEUE: &str = "switchboard-routers";

pub fn iot_subject(prefix: &str) -> String {
    format!("{prefix}.api.iot.events")
}

/// Consumes the API subjects until `stop`.
pub async fn serve(
    client: async_nats::Client,
    prefix: String,
    node: Arc<RouterNode>,
    stop: CancellationToken,
) -> Result<(), async_nats::SubscribeError> {
    let mut iot = client
        .queue_subscribe(iot_subject(&prefix), QUEUE.to_owned())
        .await?;
    loop {
        let message = tokio::select! {
            Some(message) = iot.next() => message,
            () = stop.cancelled() => return Ok(()),
        };
        let node = node.clone();
        let client = client.clone();
        tokio::spawn(async move {
            let outcome = handle_iot(&node, &message.payload).await;
            let answer = match outcome {
                Ok(delivered) => json!({ "delivered": delivered }),
                Err(error) => {
                    metrics::counter!("switchboard_api_nats_rejected_total", "subject" => "iot.events")
                        .increment(1);
                    tracing::debug!(error = ?error, "NATS API message refused");
                    error.body()
                }
            };
            if let Some(reply) = message.reply {
                let _ = client.publish(reply, answer.to_string().into()).await;
            }
        });
    }
}

async fn handle_iot(node: &RouterNode, payload: &[u8]) -> Result<u32, ApiError> {
    let mut body = match serde_json::from_slice(payload) {
        Ok(Value::Object(map)) => map,
        Ok(_) => return Err(ApiError::invalid("the message must be a JSON object")),
        Err(e) => return Err(ApiError::invalid_json(&e)),
    };
    let tenant = match body.remove("tenant") {
        None | Some(Value::Null) => DEFAULT_TENANT.to_owned(),
        Some(Value::String(t)) if switchboard_proto::ids::is_valid_tenant(&t) => t,
        Some(_) => {
            return Err(ApiError::field(
                "tenant",
                "tenant must be a valid tenant name",
            ));
        }
    };
    api::iot_event(node, &tenant, body).await
}
