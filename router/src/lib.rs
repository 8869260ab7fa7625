//! Switchboard router: owns topics (groups, clients, tenants), presence and
//! fan-out, and serves the server API. Edges attach over gRPC, NATS (or in
//! process, in standalone mode) and get one delivery per edge per message.
//!
//! Request path:
//!
//! - [`node`]: the router core: shards, attached edges, who owns a
//!   topic, requests answered here or forwarded to the owner.
//! - `feature`: the one seam through which the node hands a request or
//!   a subscription to the feature it belongs to.
//! - [`session`]: one attached edge's connection table.
//! - [`shard`]: topic state, one task per shard; fan-out.
//! - [`presence`]: store-backed presence, off the fan-out path.
//! - [`history`]: each shard's history writer: a publish to a topic with
//!   history is appended, then delivered with its position.
//! - [`topic`]: topic keys as the router holds them.
//! - `reply`: where an answer goes: up an edge's stream, or to a caller
//!   in this process.
//!
//! Features:
//!
//! - [`im`]: instant messages: sessions, kept messages, receipts.
//! - [`jsonrpc`]: the JSON-RPC dialect's keys, bindings, pushes and tool
//!   calls.
//! - [`api`]: the server API over HTTP: routes, credentials, refusals,
//!   and one handler module per feature.
//! - [`nats_api`]: the server API over NATS, the tenant a subject token.
//!
//! Cluster and transports:
//!
//! - [`grpc`]: the `Attach` stream and `Forward` service.
//! - [`nats_edges`]: the NATS transport, router side, and forwards
//!   received over NATS.
//! - [`forward`]: router-to-router forwarding, over gRPC or NATS.
//! - [`local`]: this router as an in-process edge's `LocalRouter`.
//! - [`cluster`]: live routers, pools, and so the owner of a topic.
//! - [`trust`]: cluster proofs checked and made, mutual TLS configuration.
//!
//! Around them:
//!
//! - [`store`]: the `Store` trait, in memory and on Redis.
//! - [`metrics`]: every metric a router exports, created at start.
//! - [`settings`]: flags, env vars, config file.
//! - `fuzzing`: a socket-free entry point for the envelope fuzz target
//!   and property tests (hidden; not an API).
//!
//! What edges share with routers lives in `switchboard_cluster` and is
//! re-exported here under its old paths: [`cluster`] (membership, NATS
//! connections, ownership views, cluster settings) and [`trust`] (cluster
//! proofs, mutual TLS).
#![forbid(unsafe_code)]

pub mod api;
mod feature;
pub mod forward;
#[doc(hidden)]
pub mod fuzzing;
pub mod grpc;
pub mod history;
pub mod im;
pub mod jsonrpc;
pub mod local;
pub mod metrics;
pub mod nats_api;
pub mod nats_edges;
pub mod node;
pub mod presence;
mod reply;
pub mod session;
pub mod settings;
pub mod shard;
pub mod store;
pub mod topic;

/// The cluster as every process sees it (from `switchboard_cluster`).
pub mod cluster {
    pub use switchboard_cluster::settings::{ClusterSettings, TransportKind};
    pub use switchboard_cluster::view::*;
    pub use switchboard_cluster::{membership, nats};
}
pub use switchboard_cluster::trust;

use std::sync::Arc;

use anyhow::Context;
use switchboard_common::{admin, net, telemetry};
use tokio_util::sync::CancellationToken;

pub use node::{NodeConfig, RouterNode};
pub use settings::RouterSettings;
pub use store::{MemoryStore, RedisStore, Store};

/// The store the settings ask for: Redis when a URL is set, else memory.
pub async fn store_for(
    redis_url: Option<&str>,
    presence_ttl_ms: u64,
) -> anyhow::Result<Arc<dyn Store>> {
    Ok(match redis_url {
        Some(url) => Arc::new(
            RedisStore::connect(url, presence_ttl_ms)
                .await
                .with_context(|| format!("cannot use Redis at {url}"))?,
        ),
        None => Arc::new(MemoryStore::new(presence_ttl_ms)),
    })
}

/// Runs a router until `shutdown` fires: gRPC, server API and admin
/// listeners, and, with NATS, membership and the NATS transport.
pub async fn run(settings: RouterSettings, shutdown: CancellationToken) -> anyhow::Result<()> {
    // Install the recorder before anything records: samples recorded
    // earlier would be lost.
    let _metrics = telemetry::metrics();
    metrics::register();
    let trust = settings.trust.cluster_trust()?;
    trust::check_nats(&trust, &settings.cluster)?;
    let access = trust::Access::load(&trust, "router")?;
    let id = settings
        .router_id
        .clone()
        .unwrap_or_else(|| settings::default_id("router"));
    let store = store_for(settings.redis_url.as_deref(), settings.presence.ttl_ms()).await?;
    let verifier =
        match settings.auth.verifier() {
            Ok(v) => Some(Arc::new(v)),
            Err(switchboard_common::auth::KeyError::Nothing) if settings.api_key.is_some() => None,
            Err(e) => return Err(e).context(
                "the server API needs SWITCHBOARD_JWT_SECRET, a public key or SWITCHBOARD_API_KEY",
            ),
        };
    let grpc_listener = net::bind("router-grpc", &settings.grpc_addr).await?;
    let api_listener = net::bind("router-api", &settings.api_addr).await?;
    let admin_listener = net::bind("router-admin", &settings.admin_addr).await?;
    let advertise = settings
        .advertise_addr
        .clone()
        .unwrap_or_else(|| reachable(grpc_listener.local_addr().ok()));
    let stop = shutdown.child_token();
    let mut config = settings.presence.node_config(id.clone());
    if let Some(shards) = settings.shards {
        config.shards = shards;
    }
    config.im = settings.im.config();
    config.history = settings.history.limits();
    let joined = join_cluster(&settings, &id, &advertise, &api_listener, &access, &stop).await?;
    let node = RouterNode::start_in_cluster(config, store.clone(), stop.clone(), joined.cluster);
    if let Some(client) = joined.nats {
        let prefix = settings.cluster.subject_prefix.clone();
        tokio::spawn(nats_api::serve(
            client.clone(),
            prefix.clone(),
            node.clone(),
            stop.clone(),
        ));
        if joined.nats_transport {
            tokio::spawn(nats_edges::serve(
                client.clone(),
                prefix.clone(),
                node.clone(),
                access.gate.clone(),
                stop.clone(),
            ));
            tokio::spawn(nats_edges::serve_forwards(
                client,
                prefix,
                node.clone(),
                access.gate.clone(),
                stop.clone(),
            ));
        }
    }
    tracing::info!(router_id = %id, pool = %settings.pool, advertise = %advertise,
        redis = settings.redis_url.is_some(), nats = settings.cluster.nats_url.is_some(),
        cluster_secret = trust.secret.is_some(), mutual_tls = trust.tls.is_some(), "router started");

    let http = RouterHttp::spawn(
        HttpParts {
            node: node.clone(),
            store,
            verifier,
            api_key: settings.api_key.clone(),
            http: settings.http.clone(),
            drain_timeout: settings.drain_timeout,
        },
        api_listener,
        admin_listener,
        stop.clone(),
    );
    let grpc = grpc::serve(
        grpc_listener,
        node,
        access,
        stop.clone(),
        settings.drain_timeout,
    );
    let result = grpc.await;
    stop.cancel();
    http.stop(settings.drain_timeout).await;
    // Let the membership goodbye reach NATS.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    tracing::info!(router_id = %id, "router stopped");
    result.context("gRPC server failed")
}

/// `addr` as others can dial it: an unspecified IP becomes loopback.
fn reachable(addr: Option<std::net::SocketAddr>) -> String {
    match addr {
        Some(addr) if addr.ip().is_unspecified() => format!("127.0.0.1:{}", addr.port()),
        Some(addr) => addr.to_string(),
        None => "127.0.0.1:50051".to_owned(),
    }
}

struct Joined {
    cluster: Option<node::Cluster>,
    nats: Option<async_nats::Client>,
    /// Edges reach this router over NATS.
    nats_transport: bool,
}

/// Membership from NATS, or the static list, or none (a lone router).
async fn join_cluster(
    settings: &RouterSettings,
    id: &str,
    advertise: &str,
    api_listener: &tokio::net::TcpListener,
    access: &trust::Access,
    stop: &CancellationToken,
) -> anyhow::Result<Joined> {
    use cluster::{ClusterSettings, TenantPools, TransportKind, View, membership};
    let ClusterSettings {
        nats_url,
        routers,
        transport,
        tenant_pools,
        subject_prefix,
        nats_auth,
    } = &settings.cluster;
    let pools = TenantPools::parse(tenant_pools)?;
    if let Some(url) = nats_url {
        let client = cluster::nats::connect(url, nats_auth, subject_prefix, id).await?;
        let me = cluster::RouterInfo {
            id: id.to_owned(),
            grpc_addr: advertise.to_owned(),
            api_addr: reachable(api_listener.local_addr().ok()),
            pool: settings.pool.clone(),
            epoch: switchboard_common::clock::now_ms(),
        };
        tokio::spawn(membership::announce(
            client.clone(),
            subject_prefix.clone(),
            me,
            access.gate.clone(),
            stop.clone(),
        ));
        let view = membership::watch(
            client.clone(),
            subject_prefix.clone(),
            access.gate.clone(),
            stop.clone(),
        )
        .await?;
        let nats = *transport == TransportKind::Nats;
        let forwarder: Arc<dyn forward::Forwarder> = if nats {
            Arc::new(forward::NatsForwarder {
                client: client.clone(),
                prefix: subject_prefix.clone(),
                self_id: id.to_owned(),
                gate: access.gate.clone(),
            })
        } else {
            Arc::new(forward::GrpcForwarder::new(id.to_owned(), access.clone()))
        };
        return Ok(Joined {
            cluster: Some(node::Cluster {
                self_id: id.to_owned(),
                view,
                pools,
                forwarder,
            }),
            nats: Some(client),
            nats_transport: nats,
        });
    }
    if !routers.is_empty() {
        // With a static list, a router is known by the address it advertises.
        if !routers.iter().any(|r| r == advertise) {
            anyhow::bail!("SWITCHBOARD_ROUTERS does not list this router's address {advertise}");
        }
        return Ok(Joined {
            cluster: Some(node::Cluster {
                self_id: advertise.to_owned(),
                view: membership::fixed(View::from_addrs(routers)),
                pools,
                forwarder: Arc::new(forward::GrpcForwarder::new(
                    advertise.to_owned(),
                    access.clone(),
                )),
            }),
            nats: None,
            nats_transport: false,
        });
    }
    Ok(Joined {
        cluster: None,
        nats: None,
        nats_transport: false,
    })
}

/// What the router's HTTP listeners need.
pub struct HttpParts {
    pub node: Arc<RouterNode>,
    pub store: Arc<dyn Store>,
    pub verifier: Option<Arc<switchboard_common::auth::Verifier>>,
    pub api_key: Option<String>,
    /// The HTTP request-phase limits both listeners apply.
    pub http: switchboard_common::http_server::HttpSettings,
    /// Time API requests in flight get to finish once stopped.
    pub drain_timeout: std::time::Duration,
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
        use switchboard_common::http_server::ListenerConfig;
        let ready = readiness(parts.node.clone(), parts.store);
        let admin_config = ListenerConfig {
            name: "router-admin",
            limits: parts.http.clone(),
            grace: std::time::Duration::from_secs(1),
        };
        let api_config = ListenerConfig {
            name: "router-api",
            limits: parts.http,
            grace: parts.drain_timeout,
        };
        let admin = tokio::spawn(admin::serve(
            admin_listener,
            admin_config,
            telemetry::metrics(),
            ready,
            stop.clone(),
        ));
        let node = parts.node.clone();
        let context = Arc::new(api::ApiContext {
            node: parts.node,
            verifier: parts.verifier,
            api_key: parts.api_key,
            routers: Arc::new(move || match node.view() {
                Some(view) => view.ids(),
                None => vec![node.id().to_owned()],
            }),
        });
        let api = tokio::spawn(api::serve(api_listener, api_config, context, stop));
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
        let mut was_ok = true;
        loop {
            let ok = tokio::time::timeout(std::time::Duration::from_secs(2), store.ping())
                .await
                .is_ok_and(|r| r.is_ok());
            flag.store(ok, std::sync::atomic::Ordering::Relaxed);
            if ok != was_ok {
                tracing::warn!(store_ok = ok, "store availability changed");
            }
            if ok && !was_ok {
                // Writes may have failed or been lost meanwhile (a restarted
                // Redis starts empty): presence is written again.
                node.resync_presence().await;
            }
            was_ok = ok;
            if node.is_stopping() {
                flag.store(false, std::sync::atomic::Ordering::Relaxed);
                return;
            }
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
    });
    Arc::new(move || healthy.load(std::sync::atomic::Ordering::Relaxed))
}
