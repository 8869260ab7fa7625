//! Where the answer to a request goes: back up an edge's stream, or to a
//! caller inside this process (the server API).

use switchboard_proto::{Response, RouterFrame, router_frame};
use tokio::sync::{mpsc, oneshot};

pub enum Reply {
    Edge {
        tx: mpsc::Sender<RouterFrame>,
        correlation_id: u64,
    },
    Local(oneshot::Sender<Response>),
}

impl Reply {
    pub fn send(self, mut response: Response) {
        match self {
            Self::Edge { tx, correlation_id } => {
                response.correlation_id = correlation_id;
                // The edge gone or its queue full: the edge times the request out.
                if tx
                    .try_send(router_frame::Body::Response(response).into())
                    .is_err()
                {
                    metrics::counter!("switchboard_router_edge_queue_full_total").increment(1);
                }
            }
            Self::Local(tx) => {
                let _ = tx.send(response);
            }
        }
    }
}
