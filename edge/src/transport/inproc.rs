//! The in-process transport: the router lives in this process, frames are
//! handed over on channels. Standalone mode and tests use it. The router is
//! any [`LocalRouter`], so the edge needs none of the router's types.

use std::sync::Arc;

use async_trait::async_trait;
use switchboard_cluster::LocalRouter;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::{Transport, TransportError, TransportSession, UPSTREAM_QUEUE};

pub struct InProcess {
    router: Arc<dyn LocalRouter>,
}

impl InProcess {
    pub fn new(router: Arc<dyn LocalRouter>) -> Self {
        Self { router }
    }
}

#[async_trait]
impl Transport for InProcess {
    async fn open(&self, edge_id: &str) -> Result<TransportSession, TransportError> {
        if self.router.is_stopping() {
            return Err(TransportError::Refused {
                addr: "in-process".to_owned(),
                reason: "router is stopping".to_owned(),
            });
        }
        let (tx, upstream) = mpsc::channel(UPSTREAM_QUEUE);
        let downstream = self
            .router
            .clone()
            .attach(edge_id.to_owned(), Box::pin(ReceiverStream::new(upstream)))
            .map_err(|e| TransportError::Refused {
                addr: "in-process".to_owned(),
                reason: e.to_string(),
            })?;
        Ok(TransportSession {
            tx,
            rx: Box::pin(ReceiverStream::new(downstream)),
        })
    }
}
