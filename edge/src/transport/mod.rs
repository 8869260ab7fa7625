//! How an edge reaches a router. One [`Transport`] value points at one
//! router and opens sessions to it; the upstream keeps a session open per
//! router and reopens it when it ends.
//!
//! - [`inproc`]: a router in this process (standalone mode, tests).
//! - [`grpc`]: a tonic bidirectional stream over TCP.
//! - [`nats`]: NATS subjects, for deployments that route everything through NATS.

pub mod grpc;
pub mod inproc;
pub mod nats;

use std::pin::Pin;

use async_trait::async_trait;
use futures_util::Stream;
use switchboard_proto::{EdgeFrame, RouterFrame};
use tokio::sync::mpsc;

/// An open session: frames sent on `tx` reach the router in order; `rx`
/// yields the router's frames and ends when the session is lost.
pub struct TransportSession {
    pub tx: mpsc::Sender<EdgeFrame>,
    pub rx: Pin<Box<dyn Stream<Item = RouterFrame> + Send>>,
}

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("cannot reach router at {addr}: {reason}")]
    Connect { addr: String, reason: String },
    #[error("router at {addr} refused the session: {reason}")]
    Refused { addr: String, reason: String },
}

/// Frames buffered towards one router before senders wait.
pub const UPSTREAM_QUEUE: usize = 16_384;

#[async_trait]
pub trait Transport: Send + Sync + 'static {
    async fn open(&self, edge_id: &str) -> Result<TransportSession, TransportError>;
}
