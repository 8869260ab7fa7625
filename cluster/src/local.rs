//! A router in this process, as an edge sees it: what the in-process
//! transport needs of it, so the edge does not depend on the router crate
//! (the process that holds both, standalone mode, joins them).

use std::pin::Pin;
use std::sync::Arc;

use futures_util::Stream;
use switchboard_proto::{EdgeFrame, RouterFrame};
use tokio::sync::mpsc;

/// The frames an edge sends to the router, in order; the session ends
/// when the stream does.
pub type EdgeFrames = Pin<Box<dyn Stream<Item = EdgeFrame> + Send>>;

/// Why a router in this process did not take an edge.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LocalAttachError {
    #[error("an edge with this id is attached already")]
    AlreadyAttached,
}

/// A router an edge attaches to without a network in between.
pub trait LocalRouter: Send + Sync + 'static {
    /// Attaches edge `edge_id` with its frames `upstream`; the receiver
    /// yields the router's frames for it and ends when the router drops
    /// the edge.
    fn attach(
        self: Arc<Self>,
        edge_id: String,
        upstream: EdgeFrames,
    ) -> Result<mpsc::Receiver<RouterFrame>, LocalAttachError>;

    /// Whether the router is shutting down (it takes no new edges then).
    fn is_stopping(&self) -> bool;
}
