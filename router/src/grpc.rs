//! The gRPC face of a router: one bidirectional `Attach` stream per edge,
//! and `Forward` calls from other routers. Both prove the cluster secret in
//! their metadata, checked before anything of the call is read; with
//! mutual TLS, the server also requires a client certificate.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use switchboard_proto::router_server::{Router, RouterServer};
use switchboard_proto::{EdgeFrame, RouterFrame, edge_frame};
use tokio::net::TcpListener;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status, Streaming};

use switchboard_common::trust::Purpose;

use crate::node::{AttachError, RouterNode};
use crate::trust::{
    Access, Gate, PEER_MISMATCH, Plane, admit_forward, admit_request, refused, unauthenticated,
};

/// Largest frame accepted from an edge: a 1 MiB API body plus headroom.
const MAX_FRAME: usize = 4 << 20;

pub struct GrpcRouter {
    node: Arc<RouterNode>,
    gate: Arc<Gate>,
}

type FrameStream = Pin<Box<dyn Stream<Item = Result<RouterFrame, Status>> + Send>>;

#[tonic::async_trait]
impl Router for GrpcRouter {
    type AttachStream = FrameStream;

    async fn attach(
        &self,
        request: Request<Streaming<EdgeFrame>>,
    ) -> Result<Response<Self::AttachStream>, Status> {
        let proven = admit_request(&self.gate, Purpose::Attach, &request)?;
        let mut inbound = request.into_inner();
        let edge_id = match inbound.message().await? {
            Some(EdgeFrame {
                body: Some(edge_frame::Body::Hello(hello)),
            }) if !hello.edge_id.is_empty() => hello.edge_id,
            _ => return Err(Status::invalid_argument("the first frame must be Hello")),
        };
        // The proof is for one edge id; a Hello may not claim another.
        if self.gate.requires_proofs() && edge_id != proven {
            refused(Plane::Grpc, Purpose::Attach, PEER_MISMATCH);
            return Err(unauthenticated());
        }
        let frames = futures_util::stream::unfold(inbound, |mut inbound| async move {
            match inbound.message().await {
                Ok(Some(frame)) => Some((frame, inbound)),
                Ok(None) => None,
                Err(status) => {
                    tracing::debug!(%status, "edge stream failed");
                    None
                }
            }
        });
        let rx = self
            .node
            .attach(edge_id, Box::pin(frames))
            .map_err(|e: AttachError| Status::already_exists(e.to_string()))?;
        Ok(Response::new(Box::pin(ReceiverStream::new(rx).map(Ok))))
    }

    async fn forward(
        &self,
        request: Request<switchboard_proto::Request>,
    ) -> Result<Response<switchboard_proto::Response>, Status> {
        admit_forward(&self.gate, self.node.id(), &request)?;
        Ok(Response::new(
            self.node.request_here(request.into_inner()).await,
        ))
    }
}

/// Serves the router's gRPC service until `shutdown`, then gives open
/// streams `grace` to end before dropping them.
pub async fn serve(
    listener: TcpListener,
    node: Arc<RouterNode>,
    access: Access,
    shutdown: CancellationToken,
    grace: Duration,
) -> Result<(), tonic::transport::Error> {
    let service = RouterServer::new(GrpcRouter {
        node,
        gate: access.gate.clone(),
    })
    .max_decoding_message_size(MAX_FRAME)
    .max_encoding_message_size(MAX_FRAME);
    let stopping = shutdown.clone();
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = &access.tls {
        builder = builder.tls_config(tls.server())?;
    }
    let server = builder
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(Duration::from_secs(5)))
        .tcp_nodelay(true)
        .add_service(service)
        // The builder's `tcp_nodelay` covers only listeners tonic binds
        // itself; without it on accepted sockets, delivery frames wait on
        // Nagle behind delayed ACKs (tens of milliseconds at p99).
        .serve_with_incoming_shutdown(
            TcpIncoming::from(listener).with_nodelay(Some(true)),
            async move {
                stopping.cancelled().await;
            },
        );
    tokio::pin!(server);
    tokio::select! {
        result = &mut server => result,
        () = async {
            shutdown.cancelled().await;
            tokio::time::sleep(grace).await;
        } => Ok(()),
    }
}
