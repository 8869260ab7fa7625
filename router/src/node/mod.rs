//! A router node: its shards, their presence workers, the attached edges,
//! and the entry points the gRPC service, the in-process transport and the
//! server API call.
//!
//! - `requests`: requests answered here or forwarded to their topic's
//!   owner, publishes, collects, and why a request failed ([`NodeError`]).
//! - `stats`: live connection counts for `/stats`.
//! - `history`: reads of a topic's history ([`HistoryError`]).

mod history;
mod requests;
mod stats;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures_util::Stream;
use switchboard_proto::{EdgeFrame, RouterFrame};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::cluster::{RouterInfo, TenantPools, View};
use crate::feature;
use crate::forward::Forwarder;
use crate::presence::PresenceWorker;
use crate::shard::{EdgeIdx, Shard, ShardCommand};
use crate::store::Store;
use crate::topic::TopicKey;

pub use history::HistoryError;
pub(crate) use requests::request_topic;
pub use requests::{NodeError, error_response};
pub use stats::{Stats, dialect_label};

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
    /// How much each topic's history keeps; `None` turns history off.
    pub history: Option<crate::store::history::HistoryLimits>,
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
            history: Some(crate::store::history::HistoryLimits {
                size: 100,
                ttl_ms: 300_000,
            }),
        }
    }
}

/// Frames buffered from one edge before its reader waits.
pub const EDGE_UPSTREAM_QUEUE: usize = 16_384;

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
            let mut shard = Shard::new(jobs_tx, touch_interval);
            if let Some(limits) = config.history {
                shard = shard.with_history(crate::history::start(
                    store.clone(),
                    limits,
                    tx.downgrade(),
                ));
            }
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

    /// The cluster view, if this node is in a cluster.
    pub fn view(&self) -> Option<View> {
        self.cluster.as_ref().map(|c| c.view.borrow().clone())
    }

    pub fn is_stopping(&self) -> bool {
        self.stop.is_cancelled()
    }
}
