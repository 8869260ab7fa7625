//! The gRPC transport: one tonic bidirectional `Attach` stream per
//! edge↔router pair, HTTP/2 keepalive so a dead peer is noticed in seconds.

use std::time::Duration;

use async_trait::async_trait;
use switchboard_proto::router_client::RouterClient;
use switchboard_proto::{EdgeFrame, Hello, edge_frame};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Endpoint;

use super::{Transport, TransportError, TransportSession, UPSTREAM_QUEUE};

const MAX_FRAME: usize = 4 << 20;

pub struct Grpc {
    addr: String,
    endpoint: Endpoint,
}

impl Grpc {
    /// `addr` is `host:port` (or a full `http://` URI).
    pub fn new(addr: &str) -> Result<Self, TransportError> {
        let uri = if addr.contains("://") {
            addr.to_owned()
        } else {
            format!("http://{addr}")
        };
        let endpoint = Endpoint::from_shared(uri)
            .map_err(|e| TransportError::Connect {
                addr: addr.to_owned(),
                reason: e.to_string(),
            })?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(5))
            .keep_alive_while_idle(true);
        Ok(Self {
            addr: addr.to_owned(),
            endpoint,
        })
    }
}

#[async_trait]
impl Transport for Grpc {
    async fn open(&self, edge_id: &str) -> Result<TransportSession, TransportError> {
        let channel = self
            .endpoint
            .connect()
            .await
            .map_err(|e| TransportError::Connect {
                addr: self.addr.clone(),
                reason: e.to_string(),
            })?;
        let mut client = RouterClient::new(channel)
            .max_decoding_message_size(MAX_FRAME)
            .max_encoding_message_size(MAX_FRAME);
        let (tx, upstream) = mpsc::channel(UPSTREAM_QUEUE);
        let hello: EdgeFrame = edge_frame::Body::Hello(Hello {
            edge_id: edge_id.to_owned(),
        })
        .into();
        // The channel is empty and open: this cannot fail.
        let _ = tx.send(hello).await;
        let response = client
            .attach(ReceiverStream::new(upstream))
            .await
            .map_err(|status| TransportError::Refused {
                addr: self.addr.clone(),
                reason: status.to_string(),
            })?;
        let inbound = response.into_inner();
        let frames = futures_util::stream::unfold(inbound, |mut inbound| async move {
            match inbound.message().await {
                Ok(Some(frame)) => Some((frame, inbound)),
                Ok(None) | Err(_) => None,
            }
        });
        Ok(TransportSession {
            tx,
            rx: Box::pin(frames),
        })
    }
}
