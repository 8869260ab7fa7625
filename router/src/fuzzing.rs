//! Entry point for the envelope fuzz target (`fuzz/`) and property tests:
//! a fresh router takes one edge's frames as its session would. Not an
//! API: nothing in the product calls it.

use std::sync::Arc;

use switchboard_proto::{EdgeFrame, RouterFrame};
use tokio_util::sync::CancellationToken;

use crate::node::{NodeConfig, RouterNode};
use crate::store::MemoryStore;

/// Scheduler turns the router gets after the session ends, for the shard
/// and presence tasks to act on what it sent them.
const SETTLE_TURNS: usize = 64;

/// Attaches one edge that sends `frames` and then goes away, and returns
/// what the router sent back to it. Runs on the caller's runtime; a
/// current-thread runtime makes the run repeatable.
pub async fn edge_frames(frames: Vec<EdgeFrame>) -> Vec<RouterFrame> {
    let stop = CancellationToken::new();
    let config = NodeConfig {
        shards: 2,
        ..NodeConfig::default()
    };
    let ttl_ms = u64::try_from(config.presence_ttl.as_millis()).unwrap_or(u64::MAX);
    let node = RouterNode::start(config, Arc::new(MemoryStore::new(ttl_ms)), stop.clone());
    let Ok(mut downstream) = node.attach("edge-1".to_owned(), futures_util::stream::iter(frames))
    else {
        return Vec::new();
    };
    let mut sent = Vec::new();
    // The session ends when the frames do; a session that never ended
    // would leave the edge attached, which the caller sees as a hang.
    loop {
        while let Ok(frame) = downstream.try_recv() {
            sent.push(frame);
        }
        if node.edges().is_empty() {
            break;
        }
        tokio::task::yield_now().await;
    }
    for _ in 0..SETTLE_TURNS {
        tokio::task::yield_now().await;
    }
    while let Ok(frame) = downstream.try_recv() {
        sent.push(frame);
    }
    stop.cancel();
    sent
}
