//! Router-to-router forwarding: a request for a topic another router owns
//! goes to that router, over gRPC (`Forward`) or NATS request/reply.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use prost::Message;
use switchboard_proto::router_client::RouterClient;
use switchboard_proto::{Request, Response};
use tonic::transport::{Channel, Endpoint};

use crate::cluster::RouterInfo;

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
/// changes (a restarted peer).
#[derive(Default)]
pub struct GrpcForwarder {
    peers: Mutex<HashMap<String, (String, RouterClient<Channel>)>>,
}

impl GrpcForwarder {
    fn client(&self, to: &RouterInfo) -> Result<RouterClient<Channel>, ForwardError> {
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((addr, client)) = peers.get(&to.id)
            && *addr == to.grpc_addr
        {
            return Ok(client.clone());
        }
        let endpoint = Endpoint::from_shared(format!("http://{}", to.grpc_addr))
            .map_err(|e| ForwardError::Unreachable {
                router: to.id.clone(),
                reason: e.to_string(),
            })?
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
}

pub fn forward_subject(prefix: &str, router_id: &str) -> String {
    format!("{prefix}.internal.router.{router_id}.forward")
}

#[async_trait]
impl Forwarder for NatsForwarder {
    async fn forward(&self, to: &RouterInfo, request: Request) -> Result<Response, ForwardError> {
        let subject = forward_subject(&self.prefix, &to.id);
        let reply = tokio::time::timeout(
            FORWARD_TIMEOUT,
            self.client.request(subject, request.encode_to_vec().into()),
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
