//! Router-to-router forwarding: a request for a topic another router owns
//! goes to that router, over gRPC (`Forward`) or NATS request/reply. Each
//! call carries a fresh proof of the cluster secret by the calling router.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use prost::Message;
use switchboard_common::trust::Purpose;
use switchboard_proto::router_client::RouterClient;
use switchboard_proto::{Request, Response};
use tonic::transport::{Channel, Endpoint};

use crate::cluster::RouterInfo;
use crate::trust::{Access, Gate, forward_binding, prove_forward};

pub use switchboard_cluster::subjects::forward_subject;

/// How long a forwarded request may take.
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("router {router} unreachable: {reason}")]
    Unreachable { router: String, reason: String },
    #[error("router {router} failed the request: {reason}")]
    Failed { router: String, reason: String },
}

#[async_trait]
pub trait Forwarder: Send + Sync + 'static {
    async fn forward(&self, to: &RouterInfo, request: Request) -> Result<Response, ForwardError>;
}

/// gRPC: one lazily connected channel per peer, replaced when its address
/// changes (a restarted peer); over TLS when configured.
pub struct GrpcForwarder {
    /// This router's id, the peer its proofs name.
    self_id: String,
    access: Access,
    peers: Mutex<HashMap<String, (String, RouterClient<Channel>)>>,
}

impl GrpcForwarder {
    pub fn new(self_id: String, access: Access) -> Self {
        Self {
            self_id,
            access,
            peers: Mutex::default(),
        }
    }

    fn client(&self, to: &RouterInfo) -> Result<RouterClient<Channel>, ForwardError> {
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((addr, client)) = peers.get(&to.id)
            && *addr == to.grpc_addr
        {
            return Ok(client.clone());
        }
        let unreachable = |e: tonic::transport::Error| ForwardError::Unreachable {
            router: to.id.clone(),
            reason: e.to_string(),
        };
        let mut endpoint =
            Endpoint::from_shared(format!("{}://{}", self.access.scheme(), to.grpc_addr))
                .map_err(unreachable)?;
        if let Some(tls) = &self.access.tls {
            endpoint = endpoint.tls_config(tls.client()).map_err(unreachable)?;
        }
        let endpoint = endpoint
            .connect_timeout(Duration::from_secs(2))
            .timeout(FORWARD_TIMEOUT)
            .tcp_nodelay(true);
        let client = RouterClient::new(endpoint.connect_lazy());
        peers.insert(to.id.clone(), (to.grpc_addr.clone(), client.clone()));
        Ok(client)
    }
}

#[async_trait]
impl Forwarder for GrpcForwarder {
    async fn forward(&self, to: &RouterInfo, request: Request) -> Result<Response, ForwardError> {
        let mut client = self.client(to)?;
        let mut request = tonic::Request::new(request);
        prove_forward(&self.access.gate, &self.self_id, &to.id, &mut request);
        client
            .forward(request)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| ForwardError::Failed {
                router: to.id.clone(),
                reason: status.to_string(),
            })
    }
}

/// NATS: request/reply on the owner's forward subject.
pub struct NatsForwarder {
    pub client: async_nats::Client,
    pub prefix: String,
    /// This router's id, the peer its proofs name.
    pub self_id: String,
    pub gate: Arc<Gate>,
}

#[async_trait]
impl Forwarder for NatsForwarder {
    async fn forward(&self, to: &RouterInfo, request: Request) -> Result<Response, ForwardError> {
        let subject = forward_subject(&self.prefix, &to.id);
        let body = request.encode_to_vec();
        let headers = self.gate.message_headers(
            Purpose::Forward,
            &self.self_id,
            &forward_binding(&to.id, &body),
        );
        let reply = tokio::time::timeout(
            FORWARD_TIMEOUT,
            self.client
                .request_with_headers(subject, headers, body.into()),
        )
        .await
        .map_err(|_| ForwardError::Failed {
            router: to.id.clone(),
            reason: "timed out".to_owned(),
        })?
        .map_err(|e| ForwardError::Unreachable {
            router: to.id.clone(),
            reason: e.to_string(),
        })?;
        Response::decode(reply.payload).map_err(|e| ForwardError::Failed {
            router: to.id.clone(),
            reason: e.to_string(),
        })
    }
}
