//! Instant messages on the router: login sessions, each user's kept
//! messages, deliveries and receipts.
//!
//! A message is named by (sender, id) and kept in the store once, for all
//! its recipients, before it is delivered, until each recipient's receipt
//! (at least once; clients drop duplicates by id), so losing a router
//! loses nothing. The sender's router keeps it, all or nothing, within
//! the sender's quota; a second send of a kept (sender, id) is answered
//! as a success and goes nowhere.
//!
//! Everything about one user runs in order on the router that owns the
//! user's topic (`queue`): a socket that registers reads the user's
//! kept messages, oldest first, a window at a time at its own pace
//! (`backlog`), and only then takes kept messages live, so no newer
//! message overtakes a kept one.
//!
//! - `queue`: the per-user queues.
//! - `backlog`: kept messages handed to a registering socket.
//! - [`settings`]: limits and lifetimes.

mod backlog;
mod queue;
pub mod settings;

use std::sync::Arc;

use bytes::Bytes;
use switchboard_common::clock::now_ms;
use switchboard_proto::im::{self as wire, ImMessage, Kind};
use switchboard_proto::{
    ErrorCode, ImAnswer, ImRequest, Request, Response, Topic, TopicKind, im_request, request,
};

use crate::feature::{Claim, Ctx, Feature};
use crate::node::{RouterNode, error_response};
use crate::reply::Reply;
use crate::shard::ShardCommand;
use crate::store::im::{ImSessionRecord, Keep, StoredMessage, Window};
use crate::topic::TopicKey;

pub use settings::{ImConfig, ImSettings};

/// A node's IM state: its settings, its running user queues and where
/// each socket of the users it owns is in its backlog.
pub struct ImHub {
    pub(crate) config: ImConfig,
    queues: queue::Queues,
    readers: backlog::Readers,
}

impl ImHub {
    pub(crate) fn new(config: ImConfig) -> Self {
        Self {
            config,
            queues: queue::Queues::default(),
            readers: backlog::Readers::default(),
        }
    }
}

/// The most a backlog window may ask for, whatever an edge asks: a
/// window travels in one answer, which stays well under transport frame
/// limits (NATS: 1 MiB by default).
const MAX_WINDOW: Window = Window {
    messages: 1_000,
    bytes: 512 * 1024,
};

#[derive(Debug, thiserror::Error)]
pub enum ImError {
    /// The message is not valid (the refusal names the field).
    #[error("{0}")]
    Invalid(wire::Refusal),
    /// The store could not keep the message.
    #[error("{0}")]
    Unavailable(String),
    /// The sender has its quota of kept, unreceipted messages.
    #[error("over the sender quota: {quota} kept messages not yet receipted; wait for receipts")]
    OverQuota { quota: usize },
}

/// IM at a topic's owner: its requests, and the joins of user topics,
/// which run in the user's queue.
pub(crate) struct Im;

impl Feature for Im {
    type Request = Box<ImRequest>;

    fn claim(body: request::Body) -> Claim<Box<ImRequest>> {
        match body {
            request::Body::Im(im) => Claim::Mine(im),
            other => Claim::Other(other),
        }
    }

    async fn answer(ctx: Ctx, request: Box<ImRequest>) {
        handle(ctx.node, *request, ctx.reply);
    }

    /// A socket joins or leaves a user topic behind the user's earlier
    /// jobs, so it takes kept messages live only after its backlog.
    fn membership(
        node: &Arc<RouterNode>,
        topic: &TopicKey,
        command: ShardCommand,
    ) -> Option<ShardCommand> {
        if topic.kind != TopicKind::ImUser {
            return Some(command);
        }
        node.im
            .queues
            .submit(node, topic, queue::Job::Membership(command));
        None
    }

    /// Confirmed behind the user's earlier jobs, its join included.
    fn confirm(ctx: Ctx, topic: TopicKey) -> Option<(Ctx, TopicKey)> {
        if topic.kind != TopicKind::ImUser {
            return Some((ctx, topic));
        }
        let sync = queue::Job::Sync { reply: ctx.reply };
        ctx.node.im.queues.submit(&ctx.node, &topic, sync);
        None
    }
}

/// Answers an IM request this router owns the topic of.
fn handle(node: Arc<RouterNode>, request: ImRequest, reply: Reply) {
    let invalid = |message: &str| error_response(ErrorCode::Invalid, message);
    let hub = &node.im;
    let (Some(topic), Some(op)) = (request.topic.map(TopicKey::from), request.op) else {
        return reply.send(invalid("an IM request needs a topic and an operation"));
    };
    let wanted = match op {
        im_request::Op::Lookup(_) => TopicKind::ImSession,
        _ => TopicKind::ImUser,
    };
    if topic.kind != wanted {
        return reply.send(invalid("IM request on the wrong kind of topic"));
    }
    match op {
        im_request::Op::Login(login) => {
            tokio::spawn(async move { reply.send(open_session(&node, &topic, login).await) });
        }
        im_request::Op::Lookup(lookup) => {
            tokio::spawn(async move { reply.send(find_session(&node, &topic, lookup).await) });
        }
        im_request::Op::Send(send) => {
            let sender = (request.from_edge, request.from_conn);
            tokio::spawn(async move {
                let echo = send.echo.then_some(sender);
                let sent = send_to(
                    &node,
                    &topic.tenant,
                    &send.id,
                    &send.from,
                    &send.to,
                    send.message,
                    echo,
                )
                .await;
                reply.send(match sent {
                    Ok((delivered, stored)) => Response {
                        delivered,
                        im: Some(Box::new(ImAnswer {
                            stored,
                            ..ImAnswer::default()
                        })),
                        ..Response::default()
                    },
                    Err(e @ ImError::OverQuota { .. }) => {
                        error_response(ErrorCode::OverQuota, &e.to_string())
                    }
                    Err(e) => error_response(ErrorCode::Internal, &e.to_string()),
                });
            });
        }
        im_request::Op::Deliver(deliver) => {
            let job = queue::Job::Deliver {
                message: deliver.message,
                cursor: deliver.cursor,
                reply,
            };
            hub.queues.submit(&node, &topic, job);
        }
        im_request::Op::Backlog(backlog) => {
            let window = Window {
                messages: (backlog.max_messages as usize).clamp(1, MAX_WINDOW.messages),
                bytes: (backlog.max_bytes as usize).min(MAX_WINDOW.bytes),
            };
            let job = queue::Job::Backlog {
                socket: (request.from_edge, request.from_conn),
                after: backlog.after,
                window,
                reply,
            };
            hub.queues.submit(&node, &topic, job);
        }
        im_request::Op::Relay(relay) => {
            let exclude =
                (relay.exclude_conn != 0).then_some((relay.exclude_edge, relay.exclude_conn));
            let job = queue::Job::Relay {
                message: relay.message,
                exclude,
                reply,
            };
            hub.queues.submit(&node, &topic, job);
        }
        im_request::Op::Ack(ack) => {
            let job = queue::Job::Ack {
                id: ack.id,
                sender: ack.sender,
                receipt: ack.receipt,
                reply,
            };
            hub.queues.submit(&node, &topic, job);
        }
    }
}

fn session_answer(session_id: String, record: ImSessionRecord) -> Response {
    Response {
        im: Some(Box::new(ImAnswer {
            session_id,
            user: record.user,
            client_name: record.client_name,
            notice: record.notice,
            ..ImAnswer::default()
        })),
        ..Response::default()
    }
}

async fn open_session(
    node: &RouterNode,
    topic: &TopicKey,
    login: switchboard_proto::ImLogin,
) -> Response {
    let session_id = wire::session_id(&topic.tenant, &random_hex::<16>());
    let record = ImSessionRecord {
        user: topic.name.clone(),
        client_name: login.client_name,
        notice: login.notice,
    };
    let ttl = node.im.config.session_ttl_ms();
    match node
        .store()
        .im_session_create(&topic.tenant, &session_id, &record, now_ms(), ttl)
        .await
    {
        Ok(()) => session_answer(session_id, record),
        Err(e) => error_response(ErrorCode::Internal, &format!("session not stored: {e}")),
    }
}

async fn find_session(
    node: &RouterNode,
    topic: &TopicKey,
    lookup: switchboard_proto::ImLookup,
) -> Response {
    let unknown = || error_response(ErrorCode::NotFound, "unknown or expired sessionId");
    // The id names its tenant; a session is only found in that tenant.
    if wire::session_tenant(&lookup.session_id) != Some(topic.tenant.as_str()) {
        return unknown();
    }
    let ttl = node.im.config.session_ttl_ms();
    match node
        .store()
        .im_session_get(&topic.tenant, &lookup.session_id, now_ms(), ttl)
        .await
    {
        Ok(Some(record)) => session_answer(lookup.session_id, record),
        Ok(None) => unknown(),
        Err(e) => error_response(ErrorCode::Internal, &format!("session not read: {e}")),
    }
}

fn im_request(tenant: &str, user: &str, op: im_request::Op) -> Request {
    Request {
        correlation_id: 0,
        body: Some(request::Body::Im(Box::new(ImRequest {
            topic: Some(Topic::im_user(tenant, user)),
            from_edge: String::new(),
            from_conn: 0,
            op: Some(op),
        }))),
    }
}

/// Hands `message` to `user`'s sockets (all but `exclude`), not kept.
fn relay_request(
    tenant: &str,
    user: &str,
    message: Bytes,
    exclude: Option<(String, u64)>,
) -> Request {
    let (exclude_edge, exclude_conn) = exclude.unwrap_or_default();
    im_request(
        tenant,
        user,
        im_request::Op::Relay(switchboard_proto::ImRelay {
            message,
            exclude_edge,
            exclude_conn,
        }),
    )
}

/// Keeps one message once for every user in `to` (within the sender's
/// quota), then delivers it, each user's copy at the router that owns
/// the user; with `echo` (edge, connection), also hands it to the
/// sender's other sockets. Returns the sockets reached and the recipients
/// no socket took. A duplicate (the sender's id is kept already) is a
/// success that delivers nothing. Once kept, a delivery that fails loses
/// nothing: the copy waits for the recipient's next registration.
async fn send_to(
    node: &RouterNode,
    tenant: &str,
    id: &str,
    from: &str,
    to: &[String],
    message: Bytes,
    echo: Option<(String, u64)>,
) -> Result<(u32, u32), ImError> {
    let limits = node.im.config.limits_for(from);
    let kept = StoredMessage {
        id: id.to_owned(),
        from: from.to_owned(),
        json: String::from_utf8_lossy(&message).into_owned(),
    };
    let outcome = node
        .store()
        .im_keep(tenant, &kept, to, now_ms(), limits)
        .await;
    let cursor = match outcome {
        Ok(Keep::Kept(cursor)) => cursor,
        Ok(Keep::Duplicate) => {
            metrics::counter!("switchboard_router_im_duplicates_total").increment(1);
            return Ok((0, 0));
        }
        Ok(Keep::OverQuota) => {
            metrics::counter!("switchboard_router_im_quota_refused_total").increment(1);
            return Err(ImError::OverQuota {
                quota: node.im.config.sender_quota,
            });
        }
        Err(e) => {
            tracing::warn!(tenant, error = %e, "IM message not stored");
            return Err(ImError::Unavailable(format!("message not stored: {e}")));
        }
    };
    metrics::counter!("switchboard_router_im_messages_kept_total").increment(to.len() as u64);
    let deliveries = to.iter().map(|user| {
        let deliver = im_request::Op::Deliver(switchboard_proto::ImDeliver {
            id: id.to_owned(),
            from: from.to_owned(),
            message: message.clone(),
            cursor,
        });
        node.call(im_request(tenant, user, deliver))
    });
    let answers = futures_util::future::join_all(deliveries).await;
    let (mut delivered, mut stored) = (0u32, 0u32);
    for answer in answers {
        match answer {
            Ok(answer) => {
                delivered += answer.delivered;
                stored += answer.im.map_or(0, |im| im.stored);
            }
            // Kept all the same: it goes out at the next registration.
            Err(_) => stored += 1,
        }
    }
    if let Some(echo) = echo
        && !to.iter().any(|user| user == from)
    {
        // The sender's other devices stay in step; a miss here loses
        // nothing the sender does not already have.
        let answer = node
            .request(relay_request(tenant, from, message, Some(echo)))
            .await;
        delivered += answer.delivered;
    }
    metrics::counter!("switchboard_router_im_sent_total").increment(1);
    Ok((delivered, stored))
}

/// Sends a system message (from `SYSTEM`, already checked with
/// [`ImMessage::system`]) to its recipients' IM sockets, kept once until
/// every recipient's receipt; the system has no sender quota. Returns (sockets reached, recipients with
/// no socket open). The server API's `/im/messages` and `/notify` use it.
pub async fn deliver_system_message(
    node: &RouterNode,
    tenant: &str,
    message: &ImMessage,
) -> Result<(u32, u32), ImError> {
    let to = wire::recipients(&message.to).map_err(ImError::Invalid)?;
    let wire_form = Bytes::from(message.wire(now_ms()));
    send_to(
        node,
        tenant,
        &message.id,
        wire::SYSTEM,
        &to,
        wire_form,
        None,
    )
    .await
}

/// A 3001 notice from the system to `user`: what `/api/v1/notify` (type
/// `notice`) hands [`deliver_system_message`] for IM sockets. `data` is
/// used as the NoticeBody when it is one (`title`, `msg`, optional
/// `target` and `serviceId`); anything else becomes its `msg`.
pub fn system_notice(user: &str, data: &serde_json::Value) -> Result<ImMessage, ImError> {
    let body = data.to_string();
    let body = if wire::check_body(Kind::Notice, &body).is_ok() {
        body
    } else {
        let msg = data.as_str().map_or(body, str::to_owned);
        serde_json::json!({"title": "", "msg": msg}).to_string()
    };
    let mut object = serde_json::Map::new();
    object.insert("type".into(), Kind::Notice.code().into());
    object.insert("to".into(), user.into());
    object.insert("body".into(), body.into());
    ImMessage::system(object, new_id).map_err(ImError::Invalid)
}

/// An id for a system message sent without one.
pub(crate) fn new_id() -> String {
    format!("sys-{}", random_hex::<12>())
}

/// `N` random bytes in lowercase hex.
pub(crate) fn random_hex<const N: usize>() -> String {
    let random: [u8; N] = rand::random();
    random.iter().map(|b| format!("{b:02x}")).collect()
}

/// Describes and creates the IM metrics.
pub fn register_metrics() {
    use metrics::describe_counter;
    for (name, help) in [
        (
            "switchboard_router_im_sent_total",
            "IM messages sent (each to one or more users)",
        ),
        (
            "switchboard_router_im_messages_kept_total",
            "IM recipients a kept message was kept for, until their receipt",
        ),
        (
            "switchboard_router_im_duplicates_total",
            "IM sends of a (sender, id) already kept: answered, not kept again",
        ),
        (
            "switchboard_router_im_quota_refused_total",
            "IM sends refused because the sender had its quota of kept messages",
        ),
        (
            "switchboard_router_im_backlog_windows_total",
            "Backlog windows of kept IM messages handed to registering sockets",
        ),
        (
            "switchboard_router_im_receipts_total",
            "IM receipts that released a kept copy",
        ),
        (
            "switchboard_router_im_backlog_sent_total",
            "Kept IM messages handed to sockets in backlog windows",
        ),
        (
            "switchboard_router_im_backlog_errors_total",
            "Backlog windows whose kept IM messages could not be fetched",
        ),
    ] {
        describe_counter!(name, help);
        metrics::counter!(name).absolute(0);
    }
    describe_counter!(
        "switchboard_router_im_queue_full_total",
        "IM jobs refused because their user's queue was full, by job"
    );
    for job in ["deliver", "relay", "ack", "backlog"] {
        metrics::counter!("switchboard_router_im_queue_full_total", "job" => job).absolute(0);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    #[test]
    fn system_notices_carry_a_notice_body() {
        let notice = system_notice("bob", &json!({"title": "t", "msg": "m"})).unwrap();
        assert_eq!(
            (notice.kind, notice.from.as_str()),
            (Kind::Notice, wire::SYSTEM)
        );
        assert!(notice.is_system);
        let body = |data: Value| -> Value {
            serde_json::from_str(&system_notice("bob", &data).unwrap().body).unwrap()
        };
        assert_eq!(
            body(json!({"title": "t", "msg": "m", "target": "/x"}))["target"],
            "/x"
        );
        assert_eq!(
            body(json!("plain text")),
            json!({"title": "", "msg": "plain text"})
        );
        assert_eq!(body(json!({"title": "t"}))["msg"], r#"{"title":"t"}"#);
        assert!(system_notice("a,,b", &json!({"title": "t", "msg": "m"})).is_err());
    }
}
