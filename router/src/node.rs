//! A router node: its shards, their presence workers, the attached edges,
//! and the entry points the gRPC service, the in-process transport and the
//! server API call.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures_util::Stream;
use switchboard_proto::{
    Collect, Dialect, EdgeFrame, EdgeTargets, ErrorCode, Payload, PresenceQuery, Publish, Request,
    Response, RouterFrame, RouterRefusal, Topic, request,
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::cluster::{RouterInfo, TenantPools, View};
use crate::feature::{self, Ctx};
use crate::forward::{ForwardError, Forwarder};
use crate::presence::PresenceWorker;
use crate::reply::Reply;
use crate::shard::{EdgeIdx, Shard, ShardCommand, send_delivery};
use crate::store::{Store, StoreError};
use crate::topic::TopicKey;

/// Tunables of a node.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub id: String,
    pub shards: usize,
    pub presence_ttl: Duration,
    pub sweep_interval: Duration,
    /// A member's presence is written to the store at most this often.
    pub touch_interval: Duration,
    /// Frames queued towards one edge before deliveries to it are dropped.
    pub edge_queue: usize,
    pub im: crate::im::ImConfig,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            id: "router".to_owned(),
            shards: std::thread::available_parallelism().map_or(2, |n| n.get()),
            presence_ttl: Duration::from_secs(90),
            sweep_interval: Duration::from_secs(5),
            touch_interval: Duration::from_secs(10),
            edge_queue: 16_384,
            im: crate::im::ImConfig::default(),
        }
    }
}

/// Frames buffered from one edge before its reader waits.
pub const EDGE_UPSTREAM_QUEUE: usize = 16_384;

/// Live counts for `/stats`: every connection opened on this router, and
/// per tenant those whose tenant is known (an IM socket's once it
/// registered).
#[derive(Default)]
pub struct Stats {
    /// Connections per dialect, indexed by the proto enum value.
    connections: [AtomicI64; 8],
    /// Per tenant, the same. An entry is removed when its counts fall to
    /// zero, so the map holds no more tenants than there are connections.
    tenants: Mutex<HashMap<Arc<str>, [i64; 8]>>,
}

impl Stats {
    pub fn add(&self, dialect: Dialect, delta: i64) {
        if let Some(slot) = self.connections.get(dialect as usize) {
            slot.fetch_add(delta, Ordering::Relaxed);
        }
        metrics::gauge!("switchboard_router_connections", "dialect" => dialect_label(dialect))
            .increment(delta as f64);
    }

    /// Counts a connection of `tenant` (`delta` 1 when it is known, -1 when
    /// the connection goes).
    pub fn add_tenant(&self, tenant: &Arc<str>, dialect: Dialect, delta: i64) {
        let index = dialect as usize;
        if index >= 8 {
            return;
        }
        // Held for one map update, never across an await.
        let mut tenants = self.tenants.lock().unwrap_or_else(|e| e.into_inner());
        let counts = tenants.entry(tenant.clone()).or_default();
        counts[index] += delta;
        if counts.iter().all(|n| *n <= 0) {
            tenants.remove(tenant);
        }
    }

    pub fn connections(&self, dialect: Dialect) -> i64 {
        self.connections
            .get(dialect as usize)
            .map_or(0, |slot| slot.load(Ordering::Relaxed))
    }

    /// `tenant`'s connections of `dialect`.
    pub fn tenant_connections(&self, tenant: &str, dialect: Dialect) -> i64 {
        let tenants = self.tenants.lock().unwrap_or_else(|e| e.into_inner());
        tenants
            .get(tenant)
            .and_then(|counts| counts.get(dialect as usize).copied())
            .unwrap_or(0)
    }

    /// The tenants with connections here, sorted.
    pub fn tenants(&self) -> Vec<String> {
        let tenants = self.tenants.lock().unwrap_or_else(|e| e.into_inner());
        let mut names: Vec<String> = tenants.keys().map(|t| t.to_string()).collect();
        names.sort_unstable();
        names
    }
}

pub fn dialect_label(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Group => "group",
        Dialect::GroupV2 => "group_v2",
        Dialect::Jsonrpc => "jsonrpc",
        Dialect::Iot => "iot",
        Dialect::Im => "im",
        Dialect::Unspecified => "unknown",
    }
}

/// What a router knows of its cluster. A node without one owns every topic
/// (standalone mode, a single router).
pub struct Cluster {
    /// This router's id as it appears in the view.
    pub self_id: String,
    pub view: watch::Receiver<View>,
    pub pools: TenantPools,
    pub forwarder: Arc<dyn Forwarder>,
}

/// Who owns a topic, from this router's point of view.
pub enum Owner {
    Local,
    Remote(RouterInfo),
    /// No live router serves the topic's pool.
    Nobody,
}

pub struct RouterNode {
    config: NodeConfig,
    cluster: Option<Cluster>,
    shards: Vec<mpsc::Sender<ShardCommand>>,
    store: Arc<dyn Store>,
    next_edge: AtomicU32,
    /// Attached edges: id and the sender of their session.
    edges: Mutex<HashMap<EdgeIdx, (String, mpsc::Sender<RouterFrame>)>>,
    pub stats: Stats,
    /// IM settings and per-user queues.
    pub(crate) im: crate::im::ImHub,
    stop: CancellationToken,
    /// Itself, for tasks that outlive a request (stream sequencers, IM
    /// user queues).
    me: Weak<RouterNode>,
    tools: crate::jsonrpc::tools::Tools,
    streams: crate::jsonrpc::streams::Streams,
}

/// Why an edge's session was not attached.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error("an edge with this id is attached already")]
    AlreadyAttached,
}

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
            Self::NoOwner
            | Self::NotInCluster
            | Self::ForwardFailed { .. }
            | Self::Stopping
            | Self::Store(_) => ErrorCode::Internal,
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
    };
    Some(TopicKey::from(topic))
}

impl RouterNode {
    /// Starts the shards and presence workers; they stop with `stop`.
    pub fn start(config: NodeConfig, store: Arc<dyn Store>, stop: CancellationToken) -> Arc<Self> {
        Self::start_in_cluster(config, store, stop, None)
    }

    /// [`RouterNode::start`] for a member of a cluster.
    pub fn start_in_cluster(
        config: NodeConfig,
        store: Arc<dyn Store>,
        stop: CancellationToken,
        cluster: Option<Cluster>,
    ) -> Arc<Self> {
        let mut shards = Vec::with_capacity(config.shards.max(1));
        for _ in 0..config.shards.max(1) {
            let (tx, rx) = mpsc::channel(65_536);
            let (jobs_tx, jobs_rx) = mpsc::channel(crate::shard::PRESENCE_QUEUE);
            // Refresh well within the TTL, however short it is configured.
            let touch_interval = config.touch_interval.min(config.presence_ttl / 4);
            let shard = Shard::new(jobs_tx, touch_interval);
            let worker = PresenceWorker {
                store: store.clone(),
                shard: tx.clone(),
                sweep_interval: config.sweep_interval,
                known: Default::default(),
            };
            tokio::spawn(shard.run(rx));
            tokio::spawn(worker.run(jobs_rx, stop.clone()));
            shards.push(tx);
        }
        Arc::new_cyclic(|me| Self {
            im: crate::im::ImHub::new(config.im.clone()),
            config,
            cluster,
            shards,
            store,
            next_edge: AtomicU32::new(1),
            edges: Mutex::default(),
            stats: Stats::default(),
            stop,
            me: me.clone(),
            tools: Default::default(),
            streams: Default::default(),
        })
    }

    pub fn id(&self) -> &str {
        &self.config.id
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// This router's id as the cluster view names it (its own id alone).
    pub fn view_id(&self) -> &str {
        self.cluster
            .as_ref()
            .map_or(self.config.id.as_str(), |c| c.self_id.as_str())
    }

    /// A live router of the view, by id.
    pub fn router_info(&self, id: &str) -> Option<RouterInfo> {
        let cluster = self.cluster.as_ref()?;
        let view = cluster.view.borrow();
        view.get(id).cloned()
    }

    pub(crate) fn tools(&self) -> &crate::jsonrpc::tools::Tools {
        &self.tools
    }

    pub(crate) fn streams(&self) -> &crate::jsonrpc::streams::Streams {
        &self.streams
    }

    /// Ids of the edges attached now.
    pub fn edges(&self) -> Vec<String> {
        let edges = self.edges.lock().unwrap_or_else(|e| e.into_inner());
        let mut ids: Vec<String> = edges.values().map(|(id, _)| id.clone()).collect();
        ids.dedup();
        ids.sort();
        ids
    }

    fn shard_index(&self, topic: &TopicKey) -> usize {
        (topic.stable_hash() % self.shards.len() as u64) as usize
    }

    fn shard(&self, topic: &TopicKey) -> &mpsc::Sender<ShardCommand> {
        &self.shards[self.shard_index(topic)]
    }

    /// Hands `command` to the shard of `topic`, unless the feature the
    /// topic belongs to orders it itself ([`feature::order`]: a socket
    /// joins an IM user's topic after the user's kept messages went out).
    pub(crate) async fn to_shard(&self, topic: &TopicKey, command: ShardCommand) {
        let command = match self.me.upgrade() {
            Some(node) => match feature::order(&node, topic, command) {
                Some(command) => command,
                None => return,
            },
            None => command,
        };
        self.to_shard_direct(topic, command).await;
    }

    /// [`RouterNode::to_shard`] without asking the features (what a
    /// feature that orders commands itself uses).
    pub(crate) async fn to_shard_direct(&self, topic: &TopicKey, command: ShardCommand) {
        // A closed shard means the node is stopping; nothing to deliver to.
        let _ = self.shard(topic).send(command).await;
    }

    /// The id and frame sender of an attached edge.
    pub(crate) fn edge_link(&self, edge: EdgeIdx) -> Option<(String, mpsc::Sender<RouterFrame>)> {
        let edges = self.edges.lock().unwrap_or_else(|e| e.into_inner());
        edges.get(&edge).cloned()
    }

    /// The session index of the attached edge `edge_id` (one session per
    /// edge id).
    pub(crate) fn edge_index(&self, edge_id: &str) -> Option<EdgeIdx> {
        let edges = self.edges.lock().unwrap_or_else(|e| e.into_inner());
        edges
            .iter()
            .find(|(_, (id, _))| id == edge_id)
            .map(|(idx, _)| *idx)
    }

    async fn to_all_shards(&self, command: impl Fn() -> ShardCommand) {
        for shard in &self.shards {
            let _ = shard.send(command()).await;
        }
    }

    /// Writes every present member again (the store came back).
    pub async fn resync_presence(&self) {
        self.to_all_shards(|| ShardCommand::ResyncPresence).await;
    }

    /// Attaches an edge: frames from `inbound` are handled until it ends,
    /// then the edge's connections are dropped (presence leaves follow).
    /// Returns the stream of frames for the edge. One edge id is held by
    /// one live session: while one is attached, another is refused (the id
    /// is free again once the first session's stream has ended).
    pub fn attach<S>(
        self: &Arc<Self>,
        edge_id: String,
        inbound: S,
    ) -> Result<mpsc::Receiver<RouterFrame>, AttachError>
    where
        S: Stream<Item = EdgeFrame> + Send + Unpin + 'static,
    {
        let (tx, rx) = mpsc::channel(self.config.edge_queue);
        let edge = self.next_edge.fetch_add(1, Ordering::Relaxed);
        {
            // Checked and taken under one lock, so two racing Hellos with
            // the same id cannot both win.
            let mut edges = self.edges.lock().unwrap_or_else(|e| e.into_inner());
            if edges.values().any(|(id, _)| *id == edge_id) {
                drop(edges);
                metrics::counter!("switchboard_router_edge_sessions_refused_total").increment(1);
                tracing::warn!(edge_id = %edge_id, router_id = %self.id(),
                    "second session for a live edge id refused");
                return Err(AttachError::AlreadyAttached);
            }
            edges.insert(edge, (edge_id.clone(), tx.clone()));
        }
        let node = self.clone();
        tokio::spawn(async move {
            metrics::gauge!("switchboard_router_edges").increment(1.0);
            tracing::info!(edge_id = %edge_id, router_id = %node.id(), "edge attached");
            node.to_all_shards(|| ShardCommand::EdgeUp {
                edge,
                tx: tx.clone(),
            })
            .await;
            crate::session::run(&node, edge, &edge_id, inbound, tx.clone()).await;
            node.to_all_shards(|| ShardCommand::EdgeDown { edge }).await;
            node.edges
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&edge);
            metrics::gauge!("switchboard_router_edges").decrement(1.0);
            tracing::info!(edge_id = %edge_id, router_id = %node.id(), "edge detached");
        });
        Ok(rx)
    }

    /// Who owns `topic` in the current view.
    pub fn owner(&self, topic: &TopicKey) -> Owner {
        let Some(cluster) = &self.cluster else {
            return Owner::Local;
        };
        let view = cluster.view.borrow();
        match view.owner(&cluster.pools, &topic.tenant, topic.stable_hash()) {
            Some(owner) if owner.id == cluster.self_id => Owner::Local,
            Some(owner) => Owner::Remote(owner.clone()),
            None => Owner::Nobody,
        }
    }

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
        let mut union: HashMap<String, std::collections::BTreeSet<u64>> = HashMap::new();
        for target in targets {
            union
                .entry(target.edge_id)
                .or_default()
                .extend(target.conn_ids);
        }
        Ok(self.deliver_to_edges(union, &payload))
    }

    /// Sends one delivery per edge; returns the sockets it was handed to.
    pub(crate) fn deliver_to_edges(
        &self,
        targets: HashMap<String, std::collections::BTreeSet<u64>>,
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
                delivered += send_delivery(tx, conns.into_iter().collect(), payload);
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
        match self.owner(&topic) {
            Owner::Local => self.publish_here(topic, payload).await,
            Owner::Remote(owner) => {
                let publish = Request {
                    correlation_id: 0,
                    body: Some(request::Body::Publish(Publish {
                        topic: Some(topic.to_proto()),
                        payload: Some(payload),
                        from_conn: 0,
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
    ) -> Result<u32, NodeError> {
        let (tx, rx) = oneshot::channel();
        let publish = ShardCommand::Publish {
            topic: topic.clone(),
            payload,
            reply: Some(Reply::Local(tx)),
        };
        self.to_shard(&topic, publish).await;
        rx.await
            .map(|answer| answer.delivered)
            .map_err(|_| NodeError::Stopping)
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

    /// The cluster view, if this node is in a cluster.
    pub fn view(&self) -> Option<View> {
        self.cluster.as_ref().map(|c| c.view.borrow().clone())
    }

    pub fn is_stopping(&self) -> bool {
        self.stop.is_cancelled()
    }
}
