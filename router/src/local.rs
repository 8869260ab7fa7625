//! A router node as the in-process transport's [`LocalRouter`]: standalone
//! mode attaches its edge this way, without the edge crate knowing the
//! router's types.

use std::sync::Arc;

use switchboard_cluster::local::{EdgeFrames, LocalAttachError, LocalRouter};
use switchboard_proto::RouterFrame;
use tokio::sync::mpsc;

use crate::node::{AttachError, RouterNode};

impl LocalRouter for RouterNode {
    fn attach(
        self: Arc<Self>,
        edge_id: String,
        upstream: EdgeFrames,
    ) -> Result<mpsc::Receiver<RouterFrame>, LocalAttachError> {
        RouterNode::attach(&self, edge_id, upstream).map_err(|e| match e {
            AttachError::AlreadyAttached => LocalAttachError::AlreadyAttached,
        })
    }

    fn is_stopping(&self) -> bool {
        RouterNode::is_stopping(self)
    }
}
