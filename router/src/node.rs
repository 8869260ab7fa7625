//! A router node: its shards, their presence workers, the attached edges,
//! and the entry points the gRPC service, the in-process transport and the
//! server API call.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::Stream;
use switchboard_proto::{Dialect, EdgeFrame, Payload, Response, RouterFrame};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::presence::PresenceWorker;
use crate::reply::Reply;
use crate::shard::{EdgeIdx, Shard, ShardCommand};
use crate::store::Store;
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
        }
    }
}

/// Live counts for `/stats`.
#[derive(Default)]
pub struct Stats {
    /// Connections per dialect, indexed by the proto enum value.
    connections: [AtomicI64; 8],
}

impl Stats {
    pub fn add(&self, dialect: Dialect, delta: i64) {
        if let Some(slot) = self.connections.get(dialect as usize) {
            slot.fetch_add(delta, Ordering::Relaxed);
        }
        metrics::gauge!("switchboard_router_connections", "dialect" => dialect_label(dialect))
            .increment(delta as f64);
    }

    pub fn connections(&self, dialect: Dialect) -> i64 {
        self.connections
            .get(dialect as usize)
            .map_or(0, |slot| slot.load(Ordering::Relaxed))
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

pub struct RouterNode {
    config: NodeConfig,
    shards: Vec<mpsc::Sender<ShardCommand>>,
    store: Arc<dyn Store>,
    next_edge: AtomicU32,
    edges: Mutex<HashMap<EdgeIdx, String>>,
    pub stats: Stats,
    stop: CancellationToken,
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("router is shutting down")]
    Stopped,
}

impl RouterNode {
    /// Starts the shards and presence workers; they stop with `stop`.
    pub fn start(config: NodeConfig, store: Arc<dyn Store>, stop: CancellationToken) -> Arc<Self> {
        let mut shards = Vec::with_capacity(config.shards.max(1));
        for _ in 0..config.shards.max(1) {
            let (tx, rx) = mpsc::channel(65_536);
            let (jobs_tx, jobs_rx) = mpsc::unbounded_channel();
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
        Arc::new(Self {
            config,
            shards,
            store,
            next_edge: AtomicU32::new(1),
            edges: Mutex::default(),
            stats: Stats::default(),
            stop,
        })
    }

    pub fn id(&self) -> &str {
        &self.config.id
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Ids of the edges attached now.
    pub fn edges(&self) -> Vec<String> {
        let edges = self.edges.lock().unwrap_or_else(|e| e.into_inner());
        let mut ids: Vec<String> = edges.values().cloned().collect();
        ids.sort();
        ids
    }

    fn shard(&self, topic: &TopicKey) -> &mpsc::Sender<ShardCommand> {
        let index = (topic.stable_hash() % self.shards.len() as u64) as usize;
        &self.shards[index]
    }

    pub(crate) async fn to_shard(&self, topic: &TopicKey, command: ShardCommand) {
        // A closed shard means the node is stopping; nothing to deliver to.
        let _ = self.shard(topic).send(command).await;
    }

    async fn to_all_shards(&self, command: impl Fn() -> ShardCommand) {
        for shard in &self.shards {
            let _ = shard.send(command()).await;
        }
    }

    /// Attaches an edge: frames from `inbound` are handled until it ends,
    /// then the edge's connections are dropped (presence leaves follow).
    /// Returns the stream of frames for the edge.
    pub fn attach<S>(self: &Arc<Self>, edge_id: String, inbound: S) -> mpsc::Receiver<RouterFrame>
    where
        S: Stream<Item = EdgeFrame> + Send + Unpin + 'static,
    {
        let (tx, rx) = mpsc::channel(self.config.edge_queue);
        let node = self.clone();
        tokio::spawn(async move {
            let edge = node.next_edge.fetch_add(1, Ordering::Relaxed);
            node.edges
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(edge, edge_id.clone());
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
        rx
    }

    /// Publishes from inside the router (server API); returns sockets reached.
    pub async fn publish(&self, topic: TopicKey, payload: Payload) -> Result<u32, NodeError> {
        let (tx, rx) = oneshot::channel();
        let reply = Some(Reply::Local(tx));
        self.to_shard(
            &topic.clone(),
            ShardCommand::Publish {
                topic,
                payload,
                reply,
            },
        )
        .await;
        rx.await
            .map(|r| r.delivered)
            .map_err(|_| NodeError::Stopped)
    }

    /// Members present in a group topic.
    pub async fn presence(&self, topic: TopicKey) -> Result<Response, NodeError> {
        let (tx, rx) = oneshot::channel();
        self.to_shard(
            &topic.clone(),
            ShardCommand::PresenceQuery {
                topic,
                reply: Reply::Local(tx),
            },
        )
        .await;
        rx.await.map_err(|_| NodeError::Stopped)
    }

    pub fn is_stopping(&self) -> bool {
        self.stop.is_cancelled()
    }
}
