//! The server API over NATS. The tenant is a subject token,
//! `{prefix}.api.{tenant}.notify` (also `.stream`, `.iot.events`,
//! `.apps.publish` with `appId`, `.groups.messages` with `group_id`,
//! `.im.messages`, and `.tools.call` as request/reply with `appId` and
//! `toolId`), so NATS permissions can confine a backend's user to its own
//! tenant. Bodies are HTTP's; a `tenant` field, if present, must equal the
//! subject's. Messages are consumed in a queue group so each is handled by
//! one router. Publishing on NATS is trusted as far as NATS' accounts and
//! permissions allow. A refused message is answered with the HTTP error
//! JSON when it has a reply subject, counted, and never stops the consumer.
//! Replies never go to a subject in the gateway's own trees (see
//! `is_reply_subject`).
//!
//! The tenant token is one NATS token: tenants with a `.` in their name are
//! served over HTTP only (a wildcard over several tokens would let a
//! backend allowed `acme.>` act for a tenant `acme.x`).

use std::sync::Arc;

use futures_util::StreamExt;
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

use crate::api::{ApiError, groups, im, iot, jsonrpc};
use crate::jsonrpc::tools;
use crate::node::RouterNode;

pub use switchboard_cluster::subjects::{ApiSubject as Subject, api_subject};

/// Queue group shared by every router.
pub const QUEUE: &str = "switchboard-routers";

/// Messages one router handles at once; past this, a message is refused
/// with `unavailable` (and counted) rather than spawning without bound, and
/// the queue group's other routers take the rest.
pub const IN_FLIGHT: usize = 4096;

/// Consumes the API subjects of every tenant until `stop`.
pub async fn serve(
    client: async_nats::Client,
    prefix: String,
    node: Arc<RouterNode>,
    stop: CancellationToken,
) -> Result<(), async_nats::SubscribeError> {
    let mut subscriptions = Vec::new();
    for subject in Subject::ALL {
        let subscriber = client
            .queue_subscribe(api_subject(&prefix, "*", subject), QUEUE.to_owned())
            .await?;
        subscriptions.push(subscriber.map(move |message| (subject, message)));
    }
    let mut messages = futures_util::stream::select_all(subscriptions);
    let tree = Arc::new(format!("{prefix}.api."));
    let prefix = Arc::new(prefix);
    let permits = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    loop {
        let (subject, message) = tokio::select! {
            Some(next) = messages.next() => next,
            () = stop.cancelled() => return Ok(()),
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            metrics::counter!("switchboard_api_nats_rejected_total",
                "subject" => subject.suffix(), "code" => "unavailable")
            .increment(1);
            if let Some(reply) = message.reply.filter(|r| is_reply_subject(r, &prefix)) {
                let busy = ApiError::Busy.body().to_string();
                let _ = client.publish(reply, busy.into()).await;
            }
            continue;
        };
        let node = node.clone();
        let client = client.clone();
        let tree = tree.clone();
        let prefix = prefix.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let reply = message
                .reply
                .clone()
                .filter(|reply| is_reply_subject(reply, &prefix));
            let outcome = match subject_tenant(message.subject.as_str(), &tree, subject) {
                Ok(tenant) => {
                    let key = message
                        .headers
                        .as_ref()
                        .and_then(|h| h.get("Idempotency-Key"))
                        .map(|v| v.as_str().as_bytes());
                    match groups::idempotency_key_of(key) {
                        Ok(key) => {
                            handle(
                                &node,
                                &client,
                                Call {
                                    subject,
                                    tenant,
                                    reply: reply.clone(),
                                    idempotency_key: key,
                                },
                                &message.payload,
                            )
                            .await
                        }
                        Err(error) => Err(error),
                    }
                }
                Err(error) => Err(error),
            };
            let answer = match outcome {
                Ok(answer) => answer,
                Err(error) => {
                    metrics::counter!("switchboard_api_nats_rejected_total",
                        "subject" => subject.suffix(), "code" => error.code())
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

/// Whether this router may answer on `reply`. A backend names its reply
/// subject; answering anywhere it likes would make a router publish, with
/// its own permissions, onto the internal tree (forged frames, fake
/// membership) or the API tree (requests that loop). Subjects under
/// `{prefix}.` and subjects with wildcards are never answered (the call
/// itself still runs, and is counted), whatever NATS permissions say.
fn is_reply_subject(reply: &str, prefix: &str) -> bool {
    let ours = reply
        .strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'));
    let wild = reply.split('.').any(|token| token == "*" || token == ">");
    let valid = !reply.is_empty() && !reply.contains(char::is_whitespace);
    let answerable = valid && !ours && !wild;
    if !answerable {
        metrics::counter!("switchboard_api_nats_rejected_total",
            "subject" => "reply", "code" => "forbidden")
        .increment(1);
    }
    answerable
}

/// The tenant token of `{tree}{tenant}.{suffix}`, validated.
fn subject_tenant<'a>(full: &'a str, tree: &str, subject: Subject) -> Result<&'a str, ApiError> {
    let tenant = full
        .strip_prefix(tree)
        .and_then(|rest| rest.strip_suffix(subject.suffix()))
        .and_then(|rest| rest.strip_suffix('.'))
        .unwrap_or_default();
    if switchboard_proto::ids::is_valid_tenant(tenant) && !tenant.contains('.') {
        Ok(tenant)
    } else {
        Err(ApiError::field(
            "tenant",
            "the subject's tenant token must be a valid tenant name",
        ))
    }
}

/// The body as a JSON object, without its `tenant` field, which may only
/// repeat the subject's tenant.
fn parse(payload: &[u8], tenant: &str) -> Result<Map<String, Value>, ApiError> {
    let mut body = match serde_json::from_slice(payload) {
        Ok(Value::Object(map)) => map,
        Ok(_) => {
            return Err(ApiError::Invalid(
                "the message must be a JSON object".into(),
            ));
        }
        Err(e) => return Err(ApiError::InvalidJson(e)),
    };
    match body.remove("tenant") {
        None | Some(Value::Null) => Ok(body),
        Some(Value::String(named)) if named == tenant => Ok(body),
        Some(Value::String(named)) => Err(ApiError::Forbidden(format!(
            "a message on tenant {tenant}'s subject cannot act for {named}"
        ))),
        Some(_) => Err(ApiError::field("tenant", "tenant must be a string")),
    }
}

/// One message: its answer, or the error the requester gets.
/// One NATS API message: its subject, the tenant it names, where it may
/// be answered, and its `Idempotency-Key` header (a publish id).
struct Call<'a> {
    subject: Subject,
    tenant: &'a str,
    reply: Option<async_nats::Subject>,
    idempotency_key: Option<String>,
}

async fn handle(
    node: &RouterNode,
    client: &async_nats::Client,
    call: Call<'_>,
    payload: &[u8],
) -> Result<Value, ApiError> {
    let Call {
        subject,
        tenant,
        reply,
        idempotency_key,
    } = call;
    let mut body = parse(payload, tenant)?;
    match subject {
        Subject::IotEvents => iot::event(node, tenant, body)
            .await
            .map(|delivered| json!({ "delivered": delivered })),
        Subject::Notify => jsonrpc::notify(node, tenant, body, idempotency_key).await,
        Subject::Stream => jsonrpc::stream(node, tenant, body).await,
        Subject::AppsPublish => {
            let app = jsonrpc::ref_field(&mut body, "appId")?;
            jsonrpc::app_publish(node, tenant, &app, body, idempotency_key).await
        }
        Subject::GroupsMessages => {
            // HTTP takes it from the path; the message may repeat it.
            let group_id = match body.get("group_id") {
                Some(Value::String(g)) => groups::group_id(g)?,
                _ => return Err(ApiError::field("group_id", "group_id is required")),
            };
            groups::message(node, tenant, &group_id, body, idempotency_key)
                .await
                .map(|delivered| json!({ "delivered": delivered }))
        }
        Subject::ToolsCall => {
            let app = jsonrpc::ref_field(&mut body, "appId")?;
            let tool = jsonrpc::ref_field(&mut body, "toolId")?;
            let call = jsonrpc::tool_request(tenant, app, tool, &body)?;
            // Progress notes go to the reply subject as they come.
            let (progress_tx, mut progress) =
                tokio::sync::mpsc::channel::<Value>(tools::PROGRESS_QUEUE);
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
            Ok(jsonrpc::tool_answer(&outcome?))
        }
        Subject::ImMessages => im::post_message(node, tenant, body).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tenant_is_the_subject_token() {
        let tree = "sb.api.";
        assert_eq!(
            subject_tenant("sb.api.acme.notify", tree, Subject::Notify).unwrap(),
            "acme"
        );
        assert_eq!(
            subject_tenant("sb.api.t-1.iot.events", tree, Subject::IotEvents).unwrap(),
            "t-1"
        );
        for bad in ["sb.api.a$b.notify", "sb.api..notify", "other.api.x.notify"] {
            let error = subject_tenant(bad, tree, Subject::Notify).unwrap_err();
            assert_eq!(error.body()["error"]["field"], "tenant", "{bad}");
        }
        assert_eq!(
            api_subject("switchboard", "acme", Subject::GroupsMessages),
            "switchboard.api.acme.groups.messages"
        );
    }

    #[test]
    fn replies_never_go_into_the_gateways_own_trees() {
        for good in ["_INBOX.abc.1", "_INBOX.acme.x", "replies.backend"] {
            assert!(is_reply_subject(good, "switchboard"), "{good}");
        }
        for bad in [
            "switchboard.internal.e.edge-1.router-a",
            "switchboard.internal.cluster.leave",
            "switchboard.api.acme.notify",
            "switchboard",
            "_INBOX.*",
            "_INBOX.>",
            "a b",
            "",
        ] {
            assert!(!is_reply_subject(bad, "switchboard"), "{bad}");
        }
        // Only the whole prefix token counts as the gateway's tree.
        assert!(is_reply_subject("switchboardx.r", "switchboard"));
    }

    #[test]
    fn a_body_tenant_must_repeat_the_subjects() {
        let body = parse(br#"{"tenant":"acme","x":1}"#, "acme").unwrap();
        assert!(!body.contains_key("tenant"), "the tenant field is consumed");
        assert_eq!(body["x"], 1);
        assert!(parse(br#"{"x":1}"#, "acme").is_ok());
        let other = parse(br#"{"tenant":"default"}"#, "acme").unwrap_err();
        assert_eq!(other.code(), "forbidden");
        assert_eq!(other.body()["error"]["code"], "forbidden");
        let typed = parse(br#"{"tenant":7}"#, "acme").unwrap_err();
        assert_eq!(typed.body()["error"]["field"], "tenant");
        assert_eq!(parse(b"[]", "acme").unwrap_err().code(), "validation_error");
    }
}
