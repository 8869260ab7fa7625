//! The gRPC transport: one tonic bidirectional `Attach` stream per
//! edge↔router pair, HTTP/2 keepalive so a dead peer is noticed in seconds.
//! Each stream carries a fresh proof of the cluster secret by this edge's
//! id; with mutual TLS the edge dials `https` and presents its certificate.

use std::time::Duration;

use async_trait::async_trait;
use switchboard_cluster::trust::{Access, prove_request};
use switchboard_common::trust::Purpose;
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
    access: Access,
}

impl Grpc {
    /// `addr` is `host:port` (or a full `http://`/`https://` URI).
    pub fn new(addr: &str, access: Access) -> Result<Self, TransportError> {
        let uri = if addr.contains("://") {
            addr.to_owned()
        } else {
            format!("{}://{addr}", access.scheme())
        };
        let failed = |e: tonic::transport::Error| TransportError::Connect {
            addr: addr.to_owned(),
            reason: e.to_string(),
        };
        let mut endpoint = Endpoint::from_shared(uri).map_err(failed)?;
        if let Some(tls) = &access.tls {
            endpoint = endpoint.tls_config(tls.client()).map_err(failed)?;
        }
        let endpoint = endpoint
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(5))
            .keep_alive_while_idle(true);
        Ok(Self {
            addr: addr.to_owned(),
            endpoint,
            access,
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
        let mut request = tonic::Request::new(ReceiverStream::new(upstream));
        prove_request(&self.access.gate, Purpose::Attach, edge_id, &mut request);
        let response = client
            .attach(request)
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
