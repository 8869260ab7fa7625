//! The server API over NATS (`{prefix}.api.iot.events`, `.notify`,
//! `.stream`, `.apps.publish` with `appId`, `.tools.call` as
//! request/reply with `appId` and `toolId`, `.im.messages`): the same JSON bodies as HTTP
//! plus a `tenant` field, consumed in a queue group so each message is handled by one
//! router. Publishing on NATS is trusted (NATS' own accounts guard it). A
//! message that fails validation is answered with the HTTP error JSON when
//! it has a reply subject, counted, and never stops the consumer.

use std::sync::Arc;

use futures_util::StreamExt;
use serde_json::{Map, Value, json};
use switchboard_common::auth::DEFAULT_TENANT;
use tokio_util::sync::CancellationToken;

use crate::api::{self, ApiError};
use crate::api_rpc;
use crate::node::RouterNode;
use crate::rpc::tools;

/// Queue group shared by every router.
pub const QUEUE: &str = "switchboard-routers";

pub fn iot_subject(prefix: &str) -> String {
    format!("{prefix}.api.iot.events")
}

/// The API subjects this module consumes, and what each is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Subject {
    IotEvents,
    Notify,
    Stream,
    AppsPublish,
    ToolsCall,
    ImMessages,
}

impl Subject {
    const ALL: [Subject; 6] = [
        Self::IotEvents,
        Self::Notify,
        Self::Stream,
        Self::AppsPublish,
        Self::ToolsCall,
        Self::ImMessages,
    ];

    fn suffix(self) -> &'static str {
        match self {
            Self::IotEvents => "iot.events",
            Self::Notify => "notify",
            Self::Stream => "stream",
            Self::AppsPublish => "apps.publish",
            Self::ToolsCall => "tools.call",
            Self::ImMessages => "im.messages",
        }
    }
}

/// Consumes the API subjects until `stop`.
pub async fn serve(
    client: async_nats::Client,
    prefix: String,
    node: Arc<RouterNode>,
    stop: CancellationToken,
) -> Result<(), async_nats::SubscribeError> {
    let mut subscriptions = Vec::new();
    for subject in Subject::ALL {
        let subscriber = client
            .queue_subscribe(
                format!("{prefix}.api.{}", subject.suffix()),
                QUEUE.to_owned(),
            )
            .await?;
        subscriptions.push(subscriber.map(move |message| (subject, message)));
    }
    let mut messages = futures_util::stream::select_all(subscriptions);
    loop {
        let (subject, message) = tokio::select! {
            Some(next) = messages.next() => next,
            () = stop.cancelled() => return Ok(()),
        };
        let node = node.clone();
        let client = client.clone();
        tokio::spawn(async move {
            let reply = message.reply.clone();
            let outcome = handle(&node, &client, subject, reply.clone(), &message.payload).await;
            let answer = match outcome {
                Ok(answer) => answer,
                Err(error) => {
                    metrics::counter!("switchboard_api_nats_rejected_total", "subject" => subject.suffix())
                        .increment(1);
                    tracing::debug!(error = ?error, subject = subject.suffix(), "NATS API message refused");
                    error.body()
                }
            };
            if let Some(reply) = reply {
                let _ = client.publish(reply, answer.to_string().into()).await;
            }
        });
    }
}

fn parse(payload: &[u8]) -> Result<(String, Map<String, Value>), ApiError> {
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
    Ok((tenant, body))
}

/// One message: its answer, or the error the requester gets.
async fn handle(
    node: &RouterNode,
    client: &async_nats::Client,
    subject: Subject,
    reply: Option<async_nats::Subject>,
    payload: &[u8],
) -> Result<Value, ApiError> {
    let (tenant, mut body) = parse(payload)?;
    match subject {
        Subject::IotEvents => api::iot_event(node, &tenant, body)
            .await
            .map(|delivered| json!({ "delivered": delivered })),
        Subject::Notify => api_rpc::notify(node, &tenant, body).await,
        Subject::Stream => api_rpc::stream(node, &tenant, body).await,
        Subject::AppsPublish => {
            let app = api_rpc::ref_field(&mut body, "appId")?;
            api_rpc::app_publish(node, &tenant, &app, body).await
        }
        Subject::ToolsCall => {
            let app = api_rpc::ref_field(&mut body, "appId")?;
            let tool = api_rpc::ref_field(&mut body, "toolId")?;
            let call = api_rpc::tool_request(&tenant, app, tool, &body)?;
            // Progress notes go to the reply subject as they come.
            let (progress_tx, mut progress) = tokio::sync::mpsc::unbounded_channel::<Value>();
            let relay = reply.map(|reply| {
                let client = client.clone();
                tokio::spawn(async move {
                    while let Some(note) = progress.recv().await {
                        let _ = client.publish(reply.clone(), note.to_string().into()).await;
                    }
                })
            });
            let outcome = tools::call(node, &call, progress_tx).await;
            // Every note is out before the answer.
            if let Some(relay) = relay {
                let _ = relay.await;
            }
            Ok(api_rpc::tool_answer(&outcome?))
        }
        Subject::ImMessages => crate::im::api::post_message(node, &tenant, body).await,
    }
}
