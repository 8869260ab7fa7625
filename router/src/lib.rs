//! Switchboard router: owns topics (groups, clients, tenants), presence and
//! fan-out, and serves the server API. Edges attach over gRPC (or in
//! process, in standalone mode) and get one delivery per edge per message.
//!
//! - [`node`]: the router core: shards, presence workers, attached edges.
//! - [`shard`]: topic state, one task per shard; fan-out.
//! - [`presence`]: store-backed presence, off the fan-out path.
//! - [`session`]: one attached edge's connection table.
//! - [`store`]: the `Store` trait, in memory and on Redis.
//! - [`grpc`]: the `Attach` stream service.
//! - [`api`]: the server API (HTTP).
//! - [`settings`]: flags, env vars, config file.
#![forbid(unsafe_code)]

pub mod api;
pub mod grpc;
pub mod node;
pub mod presence;
mod reply;
pub mod session;
pub mod settings;
pub mod shard;
pub mod store;
pub mod topic;

use std::sync::Arc;

use anyhow::Context;
use switchboard_common::{admin, net, telemetry};
use tokio_util::sync::CancellationToken;

pub use node::{NodeConfig, RouterNode};
pub use settings::RouterSettings;
pub use store::{MemoryStore, RedisStore, Store};

/// The store the settings ask for: Redis when a URL is set, else memory.
pub fn store_for(redis_url: Option<&str>, presence_ttl_ms: u64) -> anyhow::Result<Arc<dyn Store>> {
    Ok(match redis_url {
        Some(url) => Arc::new(
            RedisStore::connect(url, presence_ttl_ms)
                .with_context(|| format!("invalid Redis URL {url}"))?,
        ),
        None => Arc::new(MemoryStore::new(presence_ttl_ms)),
    })
}

/// Runs a router until `shutdown` fires: gRPC, server API and admin listeners.
pub async fn run(settings: RouterSettings, shutdown: CancellationToken) -> anyhow::Result<()> {
    let id = settings
        .router_id
        .clone()
        .unwrap_or_else(|| settings::default_id("router"));
    let store = store_for(settings.redis_url.as_deref(), settings.presence.ttl_ms())?;
    let verifier =
        match settings.auth.verifier() {
            Ok(v) => Some(Arc::new(v)),
            Err(switchboard_common::auth::KeyError::Nothing) if settings.api_key.is_some() => None,
            Err(e) => return Err(e).context(
                "the server API needs SWITCHBOARD_JWT_SECRET, a public key or SWITCHBOARD_API_KEY",
            ),
        };
    let mut config = settings.presence.node_config(id.clone());
    if let Some(shards) = settings.shards {
        config.shards = shards;
    }
    let grpc_listener = net::bind("router-grpc", &settings.grpc_addr).await?;
    let api_listener = net::bind("router-api", &settings.api_addr).await?;
    let admin_listener = net::bind("router-admin", &settings.admin_addr).await?;
    let stop = shutdown.child_token();
    let node = RouterNode::start(config, store.clone(), stop.clone());
    tracing::info!(router_id = %id, redis = settings.redis_url.is_some(), "router started");

    let http = RouterHttp::spawn(
        HttpParts {
            node: node.clone(),
            store,
            verifier,
            api_key: settings.api_key.clone(),
        },
        api_listener,
        admin_listener,
        stop.clone(),
    );
    let grpc = grpc::serve(grpc_listener, node, stop.clone(), settings.drain_timeout);
    let result = grpc.await;
    stop.cancel();
    http.stop(settings.drain_timeout).await;
    tracing::info!(router_id = %id, "router stopped");
    result.context("gRPC server failed")
}

/// What the router's HTTP listeners need.
pub struct HttpParts {
    pub node: Arc<RouterNode>,
    pub store: Arc<dyn Store>,
    pub verifier: Option<Arc<switchboard_common::auth::Verifier>>,
    pub api_key: Option<String>,
}

/// The server API and admin listeners of a running node.
pub struct RouterHttp {
    api: tokio::task::JoinHandle<()>,
    admin: tokio::task::JoinHandle<()>,
}

impl RouterHttp {
    /// Serves the API and admin listeners until `stop`.
    pub fn spawn(
        parts: HttpParts,
        api_listener: tokio::net::TcpListener,
        admin_listener: tokio::net::TcpListener,
        stop: CancellationToken,
    ) -> Self {
        let ready = readiness(parts.node.clone(), parts.store);
        let admin = tokio::spawn(admin::serve(
            admin_listener,
            telemetry::metrics(),
            ready,
            stop.clone(),
        ));
        let router_id = parts.node.id().to_owned();
        let context = Arc::new(api::ApiContext {
            node: parts.node,
            verifier: parts.verifier,
            api_key: parts.api_key,
            routers: Arc::new(move || vec![router_id.clone()]),
        });
        let api = tokio::spawn(api::serve(api_listener, context, stop));
        Self { api, admin }
    }

    /// Waits up to `grace` for in-flight API requests, then stops.
    pub async fn stop(self, grace: std::time::Duration) {
        let _ = tokio::time::timeout(grace, self.api).await;
        self.admin.abort();
    }
}

/// Ready while not stopping and the store answers; the store check is
/// cached for a second so probes do not hammer Redis.
pub fn readiness(node: Arc<RouterNode>, store: Arc<dyn Store>) -> admin::Readiness {
    let healthy = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = healthy.clone();
    tokio::spawn(async move {
        loop {
            let ok = tokio::time::timeout(std::time::Duration::from_secs(2), store.ping())
                .await
                .is_ok_and(|r| r.is_ok());
            flag.store(ok, std::sync::atomic::Ordering::Relaxed);
            if node.is_stopping() {
                flag.store(false, std::sync::atomic::Ordering::Relaxed);
                return;
            }
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
    });
    Arc::new(move || healthy.load(std::sync::atomic::Ordering::Relaxed))
}
