//! Requests: answered here when this router owns the topic, else by the
//! owner; publishes and collects from inside the router; and why a
//! request got no answer ([`NodeError`]).

use std::collections::{BTreeSet, HashMap};

use switchboard_proto::{
    Collect, EdgeTargets, ErrorCode, Payload, PresenceQuery, Publish, Request, Response,
    RouterFrame, RouterRefusal, Topic, request,
};
use tokio::sync::{mpsc, oneshot};

use super::{Owner, RouterNode};
use crate::cluster::RouterInfo;
use crate::feature::{self, Ctx};
use crate::forward::ForwardError;
use crate::reply::Reply;
use crate::shard::{EdgeIdx, ShardCommand, send_delivery};
use crate::store::StoreError;
use crate::topic::TopicKey;

/// Why a request got no answer from its owner, or the owner's refusal.
/// Each message is what the wire has always carried for that case.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The request names no topic, so it has no owner.
    #[error("request without a topic")]
    NoTopic,
    /// No live router serves the topic's pool.
    #[error("no live router serves this tenant's pool")]
    NoOwner,
    /// Another router owns the topic, but this one knows no cluster.
    #[error("not in a cluster")]
    NotInCluster,
    /// The request did not reach the owner, or no answer came back.
    #[error("{source}")]
    ForwardFailed { owner: String, source: ForwardError },
    /// The owner answered with a refusal, whose code is kept.
    #[error("{}", .0.message)]
    Refused(#[from] RouterRefusal),
    /// A shard or task of this node is gone: the node is stopping.
    #[error("router is shutting down")]
    Stopping,
    /// The store failed.
    #[error("store unavailable: {0}")]
    Store(#[from] StoreError),
}

impl NodeError {
    /// The code a request that failed this way is answered with.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::NoTopic => ErrorCode::Invalid,
            Self::Refused(refusal) => refusal.code,
            // Ownership is moving (or the owner is gone): worth another try.
            Self::NoOwner | Self::ForwardFailed { .. } | Self::Stopping => ErrorCode::Unavailable,
            Self::NotInCluster | Self::Store(_) => ErrorCode::Internal,
        }
    }

    /// The failure as an answer on the wire.
    pub fn response(&self) -> Response {
        error_response(self.code(), &self.to_string())
    }
}

pub fn error_response(code: ErrorCode, message: &str) -> Response {
    Response {
        error: code as i32,
        error_message: message.to_owned(),
        ..Response::default()
    }
}

pub(crate) fn request_topic(request: &Request) -> Option<TopicKey> {
    let topic = match request.body.as_ref()? {
        request::Body::Publish(publish) => publish.topic.clone()?,
        request::Body::Presence(query) => query.topic.clone()?,
        request::Body::Collect(_) => return None,
        request::Body::Kv(op) => op.topic.clone()?,
        request::Body::Bind(bind) => bind.topic.clone()?,
        request::Body::DeviceAttach(attach) => attach.topic.clone()?,
        request::Body::DeviceStatus(status) => status.topic.clone()?,
        request::Body::ToolCall(call) => call.topic.clone()?,
        request::Body::ToolEvent(event) => event.topic.clone()?,
        request::Body::Notify(notify) => notify.topic.clone()?,
        request::Body::Im(im) => im.topic.clone()?,
        request::Body::History(read) => read.topic.clone()?,
    };
    Some(TopicKey::from(topic))
}

impl RouterNode {
    /// Answers `request` for its topic: here when this router owns the
    /// topic, else by the owner. A refusal is an answer like any other.
    pub async fn request(&self, request: Request) -> Response {
        self.answer(request).await.unwrap_or_else(|e| e.response())
    }

    /// [`RouterNode::request`] as a `Result`: the owner's answer, or why
    /// there is none, the owner's refusal included.
    pub async fn call(&self, request: Request) -> Result<Response, NodeError> {
        Ok(self.answer(request).await?.into_result()?)
    }

    /// The owner's answer, refusal or not, or why none came.
    async fn answer(&self, request: Request) -> Result<Response, NodeError> {
        let topic = request_topic(&request).ok_or(NodeError::NoTopic)?;
        match self.owner(&topic) {
            Owner::Local => Ok(self.request_here(request).await),
            Owner::Remote(owner) => self.forward(&owner, request).await,
            Owner::Nobody => Err(NodeError::NoOwner),
        }
    }

    /// Sends `request` to the router `to`, whatever it owns.
    pub(crate) async fn forward_to(&self, to: &RouterInfo, request: Request) -> Response {
        self.forward(to, request)
            .await
            .unwrap_or_else(|e| e.response())
    }

    /// The answer of `owner`, refusal or not, or why none came.
    async fn forward(&self, owner: &RouterInfo, request: Request) -> Result<Response, NodeError> {
        let cluster = self.cluster.as_ref().ok_or(NodeError::NotInCluster)?;
        metrics::counter!("switchboard_router_forwarded_total").increment(1);
        cluster
            .forwarder
            .forward(owner, request)
            .await
            .map_err(|source| {
                metrics::counter!("switchboard_router_forward_errors_total").increment(1);
                tracing::warn!(router_id = %self.id(), owner = %owner.id, error = %source, "forward failed");
                NodeError::ForwardFailed {
                    owner: owner.id.clone(),
                    source,
                }
            })
    }

    /// Answers `request` with this router's own state, never forwarding:
    /// what a forwarded request gets.
    pub async fn request_here(&self, request: Request) -> Response {
        let (tx, rx) = oneshot::channel();
        self.request_here_to(request, Reply::Local(tx)).await;
        rx.await.unwrap_or_else(|_| NodeError::Stopping.response())
    }

    /// [`RouterNode::request_here`], answering to `reply`: the feature
    /// that claims the request answers it ([`feature::answer`]).
    pub(crate) async fn request_here_to(&self, request: Request, reply: Reply) {
        match self.me.upgrade() {
            Some(node) => feature::answer(Ctx { node, reply }, request).await,
            None => reply.send(NodeError::Stopping.response()),
        }
    }

    /// The answer to a collect (or a subscription's confirmation): the
    /// connections here subscribed to any of `topics`.
    pub(crate) async fn collected(&self, topics: Vec<TopicKey>) -> Response {
        Response {
            targets: self.collect_here(topics).await,
            ..Response::default()
        }
    }

    /// The connections of this router's shards subscribed to any of `topics`.
    pub(crate) async fn collect_here(&self, topics: Vec<TopicKey>) -> Vec<EdgeTargets> {
        let mut by_shard: HashMap<usize, Vec<TopicKey>> = HashMap::new();
        for topic in topics {
            by_shard
                .entry(self.shard_index(&topic))
                .or_default()
                .push(topic);
        }
        let mut answers = Vec::with_capacity(by_shard.len());
        for (index, topics) in by_shard {
            let (tx, rx) = oneshot::channel();
            if self.shards[index]
                .send(ShardCommand::Collect { topics, reply: tx })
                .await
                .is_ok()
            {
                answers.push(rx);
            }
        }
        let mut merged: HashMap<EdgeIdx, Vec<u64>> = HashMap::new();
        for answer in answers {
            for (edge, conns) in answer.await.unwrap_or_default() {
                merged.entry(edge).or_default().extend(conns);
            }
        }
        let edges = self.edges.lock().unwrap_or_else(|e| e.into_inner());
        merged
            .into_iter()
            .filter_map(|(edge, conn_ids)| {
                let (edge_id, _) = edges.get(&edge)?;
                Some(EdgeTargets {
                    edge_id: edge_id.clone(),
                    conn_ids,
                })
            })
            .collect()
    }

    /// Publishes one payload to every connection subscribed to any of
    /// `topics`, once per connection, wherever the topics are owned: the
    /// owners say who subscribes, this router unions and delivers. Returns
    /// the number of sockets reached.
    pub async fn publish_once(
        &self,
        topics: Vec<TopicKey>,
        payload: Payload,
    ) -> Result<u32, NodeError> {
        let union = self.subscribers(topics).await?;
        Ok(self.deliver_to_edges(union, &payload))
    }

    /// The connections subscribed to any of `topics`, wherever the topics
    /// are owned, per edge id.
    pub(crate) async fn subscribers(
        &self,
        topics: Vec<TopicKey>,
    ) -> Result<HashMap<String, BTreeSet<u64>>, NodeError> {
        let mut local = Vec::new();
        let mut remote: HashMap<String, (RouterInfo, Vec<Topic>)> = HashMap::new();
        for topic in topics {
            match self.owner(&topic) {
                Owner::Local => local.push(topic),
                Owner::Remote(owner) => remote
                    .entry(owner.id.clone())
                    .or_insert_with(|| (owner, Vec::new()))
                    .1
                    .push(topic.to_proto()),
                Owner::Nobody => return Err(NodeError::NoOwner),
            }
        }
        let mut targets = self.collect_here(local).await;
        for (_, (owner, topics)) in remote {
            let collect = Request {
                correlation_id: 0,
                body: Some(request::Body::Collect(Collect { topics })),
            };
            let answer = self.forward(&owner, collect).await?.into_result()?;
            targets.extend(answer.targets);
        }
        let mut union: HashMap<String, BTreeSet<u64>> = HashMap::new();
        for target in targets {
            union
                .entry(target.edge_id)
                .or_default()
                .extend(target.conn_ids);
        }
        Ok(union)
    }

    /// Publishes on `topic`, which this router owns, to its subscribers and
    /// to `also` (connections per edge id) alike: on a topic with history
    /// every one of them gets the message with `topic`'s place in it, and
    /// it is appended once. Returns the sockets reached.
    pub(crate) async fn publish_also_here(
        &self,
        topic: TopicKey,
        payload: Payload,
        publish_id: Option<String>,
        also: HashMap<String, BTreeSet<u64>>,
    ) -> Result<u32, NodeError> {
        let also = also
            .into_iter()
            .filter_map(|(edge_id, conns)| {
                Some((self.edge_index(&edge_id)?, conns.into_iter().collect()))
            })
            .collect();
        let (tx, rx) = oneshot::channel();
        let publish = ShardCommand::PublishAlso {
            topic: topic.clone(),
            payload,
            publish_id,
            also,
            reply: Some(Reply::Local(tx)),
        };
        self.to_shard_direct(&topic, publish).await;
        Ok(rx
            .await
            .map_err(|_| NodeError::Stopping)?
            .into_result()?
            .delivered)
    }

    /// Sends one delivery per edge; returns the sockets it was handed to.
    pub(crate) fn deliver_to_edges(
        &self,
        targets: HashMap<String, BTreeSet<u64>>,
        payload: &Payload,
    ) -> u32 {
        let senders: HashMap<String, mpsc::Sender<RouterFrame>> = {
            let edges = self.edges.lock().unwrap_or_else(|e| e.into_inner());
            // One session per edge id (`attach` refuses a second); by
            // index, so the newest would win if that ever changed.
            let mut newest: Vec<_> = edges.iter().collect();
            newest.sort_by_key(|(idx, _)| **idx);
            newest
                .into_iter()
                .map(|(_, (id, tx))| (id.clone(), tx.clone()))
                .collect()
        };
        let mut delivered = 0u32;
        for (edge_id, conns) in targets {
            if let Some(tx) = senders.get(&edge_id) {
                delivered += send_delivery(tx, conns.into_iter().collect(), payload, None);
            }
        }
        metrics::counter!("switchboard_router_delivered_sockets_total")
            .increment(u64::from(delivered));
        delivered
    }

    /// Publishes from inside the router (server API) wherever the topic is
    /// owned; returns sockets reached. Only a remote owner needs the
    /// request on the wire; an owned topic goes straight to its shard.
    pub async fn publish(&self, topic: TopicKey, payload: Payload) -> Result<u32, NodeError> {
        self.publish_with_id(topic, payload, None).await
    }

    /// [`RouterNode::publish`] with a publish id: on a topic with history,
    /// a publish whose id the history holds is not appended or delivered
    /// again (an `Idempotency-Key` sent twice).
    pub async fn publish_with_id(
        &self,
        topic: TopicKey,
        payload: Payload,
        publish_id: Option<String>,
    ) -> Result<u32, NodeError> {
        match self.owner(&topic) {
            Owner::Local => self.publish_here(topic, payload, publish_id).await,
            Owner::Remote(owner) => {
                let publish = Request {
                    correlation_id: 0,
                    body: Some(request::Body::Publish(Publish {
                        topic: Some(topic.to_proto()),
                        payload: Some(payload),
                        from_conn: 0,
                        publish_id: publish_id.unwrap_or_default(),
                    })),
                };
                Ok(self
                    .forward(&owner, publish)
                    .await?
                    .into_result()?
                    .delivered)
            }
            Owner::Nobody => Err(NodeError::NoOwner),
        }
    }

    /// Publishes on a topic this router owns: its shard fans out.
    pub(crate) async fn publish_here(
        &self,
        topic: TopicKey,
        payload: Payload,
        publish_id: Option<String>,
    ) -> Result<u32, NodeError> {
        let (tx, rx) = oneshot::channel();
        let publish = ShardCommand::Publish {
            topic: topic.clone(),
            payload,
            publish_id,
            reply: Some(Reply::Local(tx)),
        };
        self.to_shard(&topic, publish).await;
        // A topic with history may refuse: its store failed or is behind.
        Ok(rx
            .await
            .map_err(|_| NodeError::Stopping)?
            .into_result()?
            .delivered)
    }

    /// Members present in a group topic.
    pub async fn presence(&self, topic: TopicKey) -> Result<Response, NodeError> {
        self.call(Request {
            correlation_id: 0,
            body: Some(request::Body::Presence(PresenceQuery {
                topic: Some(topic.to_proto()),
            })),
        })
        .await
    }
}
