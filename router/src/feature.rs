//! The one seam between the node and the features it serves: plain topics
//! (publish, presence, collect), JSON-RPC and IM. IoT needs no phase of
//! its own: an event is a collect at each topic's owner and one delivery
//! per edge from the router that took it ([`RouterNode::publish_once`]).
//!
//! Modelled on pingora's `ProxyHttp`: one trait whose methods are the
//! phases a request or a subscription passes through at its topic's
//! owner, each with a default, and one context per request ([`Ctx`]).
//! Dispatch is static: each phase offers its input to every feature in
//! turn, and a feature hands back what is not its own.

use std::future::Future;
use std::sync::Arc;

use switchboard_proto::{ErrorCode, Payload, Request, request};

use crate::im::Im;
use crate::jsonrpc::JsonRpc;
use crate::node::{RouterNode, error_response};
use crate::reply::Reply;
use crate::shard::ShardCommand;
use crate::topic::TopicKey;

/// One request at its topic's owner.
pub(crate) struct Ctx {
    /// The node answering: the owner. Owned, since answers may outlive
    /// the call (IM user queues, stream sequencers).
    pub node: Arc<RouterNode>,
    /// Where the answer goes: an edge's stream, or a caller in process.
    pub reply: Reply,
}

/// What a feature does at a topic's owner.
pub(crate) trait Feature {
    /// The requests this feature answers, parsed from their wire form.
    type Request: Send;

    /// Takes a request body that is this feature's; hands any other back.
    fn claim(body: request::Body) -> Claim<Self::Request>;

    /// Answers a claimed request, through `ctx.reply`.
    fn answer(ctx: Ctx, request: Self::Request) -> impl Future<Output = ()> + Send;

    /// A socket's join or leave of `topic` (a `Subscribe` or
    /// `Unsubscribe`) on its way to the shard: handed back to go on, or
    /// taken when this feature orders the topic's joins itself.
    fn membership(
        _node: &Arc<RouterNode>,
        _topic: &TopicKey,
        command: ShardCommand,
    ) -> Option<ShardCommand> {
        Some(command)
    }

    /// A subscription to confirm once it is applied: handed back unless
    /// this feature orders the topic's joins, and so knows when that is.
    fn confirm(ctx: Ctx, topic: TopicKey) -> Option<(Ctx, TopicKey)> {
        Some((ctx, topic))
    }
}

/// What a feature makes of a request body offered to it.
pub(crate) enum Claim<R> {
    /// Its own, parsed.
    Mine(R),
    /// Another feature's, handed back.
    Other(request::Body),
}

/// Answers a request this router owns the topic of: the feature that
/// claims its body answers; a body nobody claims is refused.
pub(crate) async fn answer(ctx: Ctx, request: Request) {
    let Some(body) = request.body else {
        return ctx.reply.send(incomplete());
    };
    let body = match Topics::claim(body) {
        Claim::Mine(request) => return Topics::answer(ctx, request).await,
        Claim::Other(body) => body,
    };
    let body = match JsonRpc::claim(body) {
        Claim::Mine(request) => return JsonRpc::answer(ctx, request).await,
        Claim::Other(body) => body,
    };
    match Im::claim(body) {
        Claim::Mine(request) => Im::answer(ctx, request).await,
        Claim::Other(_) => ctx.reply.send(incomplete()),
    }
}

/// A shard command for `topic`, before its shard: `None` when a feature
/// took it to order itself.
pub(crate) fn order(
    node: &Arc<RouterNode>,
    topic: &TopicKey,
    command: ShardCommand,
) -> Option<ShardCommand> {
    if !matches!(
        command,
        ShardCommand::Subscribe { .. } | ShardCommand::Unsubscribe { .. }
    ) {
        return Some(command);
    }
    let command = Topics::membership(node, topic, command)?;
    let command = JsonRpc::membership(node, topic, command)?;
    Im::membership(node, topic, command)
}

/// Confirms a subscription to `topic` that was just handed on: by the
/// feature ordering the topic's joins, else with the shard's answer (the
/// shard applies commands in order, so the join is in by then).
pub(crate) async fn confirm(ctx: Ctx, topic: TopicKey) {
    let Some((ctx, topic)) = Topics::confirm(ctx, topic) else {
        return;
    };
    let Some((ctx, topic)) = JsonRpc::confirm(ctx, topic) else {
        return;
    };
    let Some((ctx, topic)) = Im::confirm(ctx, topic) else {
        return;
    };
    ctx.reply.send(ctx.node.collected(vec![topic]).await);
}

fn incomplete() -> switchboard_proto::Response {
    error_response(
        ErrorCode::Invalid,
        "a request needs a topic (and a payload to publish)",
    )
}

/// Plain topic requests, whatever the dialect: publish (groups, clients,
/// tenants, app channels), group presence, and collect (who subscribes,
/// for a delivery made elsewhere).
pub(crate) struct Topics;

pub(crate) enum TopicRequest {
    Publish {
        topic: TopicKey,
        payload: Payload,
        publish_id: Option<String>,
    },
    Presence(TopicKey),
    /// A topic's history after a position (an edge recovering a socket).
    History(switchboard_proto::HistoryRead),
    Collect(Vec<TopicKey>),
}

impl Feature for Topics {
    type Request = TopicRequest;

    fn claim(body: request::Body) -> Claim<TopicRequest> {
        Claim::Mine(match body {
            request::Body::Publish(switchboard_proto::Publish {
                topic: Some(topic),
                payload: Some(payload),
                publish_id,
                ..
            }) => TopicRequest::Publish {
                topic: TopicKey::from(topic),
                payload,
                publish_id: Some(publish_id).filter(|id| !id.is_empty()),
            },
            request::Body::History(read) if read.topic.is_some() => TopicRequest::History(read),
            request::Body::Presence(switchboard_proto::PresenceQuery { topic: Some(topic) }) => {
                TopicRequest::Presence(TopicKey::from(topic))
            }
            request::Body::Collect(switchboard_proto::Collect { topics }) => {
                TopicRequest::Collect(topics.into_iter().map(TopicKey::from).collect())
            }
            other => return Claim::Other(other),
        })
    }

    async fn answer(ctx: Ctx, request: TopicRequest) {
        let Ctx { node, reply } = ctx;
        match request {
            TopicRequest::Publish {
                topic,
                payload,
                publish_id,
            } => {
                let publish = ShardCommand::Publish {
                    topic: topic.clone(),
                    payload,
                    publish_id,
                    reply: Some(reply),
                };
                node.to_shard(&topic, publish).await;
            }
            TopicRequest::Presence(topic) => {
                let query = ShardCommand::PresenceQuery {
                    topic: topic.clone(),
                    reply,
                };
                node.to_shard(&topic, query).await;
            }
            TopicRequest::Collect(topics) => reply.send(node.collected(topics).await),
            TopicRequest::History(read) => reply.send(node.history_answer(read).await),
        }
    }
}
