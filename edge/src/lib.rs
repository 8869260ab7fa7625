//! Switchboard edge: terminates WebSockets (hyper 1 + fastwebsockets),
//! checks tokens, speaks each wire dialect, and exchanges normalized
//! envelopes with the routers that own the topics.
//!
//! - [`server`]: HTTP listener, upgrade routing, playground page.
//! - [`im_login`]: the IM login endpoints.
//! - [`connection`]: one socket's reader and writer, limits, close codes.
//! - [`deflate`]: permessage-deflate negotiation and per-message compression.
//! - [`dialect`]: one module per wire dialect.
//! - [`outbound`]: per-socket queues and the connection registry.
//! - [`backlog`]: kept IM messages handed to a socket at its own pace.
//! - [`recovery`]: what each socket has of each topic with history, and
//!   catching a socket up from a position it presents.
//! - [`upstream`]: ownership, router links, replay, delivery dispatch.
//! - [`transport`]: links to routers: in process (any `LocalRouter`), gRPC
//!   streams, or NATS subjects; proving the cluster secret (and over
//!   mutual TLS when configured).
//! - [`socket_io`]: the TCP stream under a socket, and one write buffer
//!   per write.
//! - [`metrics`]: every metric an edge exports.
//! - [`settings`], [`limits`]: configuration.
//! - `fuzzing`: socket-free entry points for the fuzz targets and
//!   property tests (hidden; not an API).
//!
//! What it shares with routers (membership, ownership, trust, NATS
//! subjects) comes from `switchboard_cluster`; the process that runs an
//! edge and a router together is the `switchboard` binary
//! (`switchboard_standalone`).
#![forbid(unsafe_code)]

pub mod backlog;
pub mod connection;
pub mod deflate;
pub mod dialect;
#[doc(hidden)]
pub mod fuzzing;
pub mod im_login;
pub mod limits;
pub mod metrics;
pub mod outbound;
pub mod recovery;
pub mod server;
pub mod settings;
pub mod socket_io;
pub mod transport;
pub mod upstream;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use switchboard_common::auth::Verifier;
use switchboard_common::http_server::ListenerConfig;
use switchboard_common::{admin, net, telemetry};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use settings::EdgeSettings;

use crate::connection::SocketEnv;
use crate::outbound::Registry;
use crate::server::EdgeServer;
use crate::upstream::{Connector, Upstream};
use switchboard_cluster::trust::Access;
use switchboard_cluster::{RouterInfo, TenantPools, TransportKind, View, membership};
use tokio::sync::watch;

/// Runs the process the settings describe until `shutdown` fires.
pub async fn run(settings: EdgeSettings, shutdown: CancellationToken) -> anyhow::Result<()> {
    // Install the recorder before anything records: samples recorded
    // earlier would be lost.
    let metrics = telemetry::metrics();
    crate::metrics::register();
    let verifier = settings.auth.verifier().context(
        "an edge needs SWITCHBOARD_JWT_SECRET, SWITCHBOARD_JWT_PUBLIC_KEY or SWITCHBOARD_JWT_JWKS",
    )?;
    let edge_id = edge_id(&settings)?;
    let trust = settings.trust.cluster_trust()?;
    switchboard_cluster::trust::check_nats(&trust, &settings.cluster)?;
    let access = Access::load(&trust, "edge")?;
    let cluster = &settings.cluster;
    let (view, connector): (watch::Receiver<View>, Connector) = if let Some(url) = &cluster.nats_url
    {
        let client = switchboard_cluster::nats::connect(
            url,
            &cluster.nats_auth,
            &cluster.subject_prefix,
            &edge_id,
        )
        .await?;
        let stop = shutdown.child_token();
        let view = membership::watch(
            client.clone(),
            cluster.subject_prefix.clone(),
            access.gate.clone(),
            stop,
        )
        .await?;
        let connector: Connector = match cluster.transport {
            TransportKind::Grpc => grpc_connector(access),
            TransportKind::Nats => {
                let prefix = cluster.subject_prefix.clone();
                let gate = access.gate.clone();
                Arc::new(move |info: &RouterInfo| {
                    Ok(Arc::new(transport::nats::Nats {
                        client: client.clone(),
                        prefix: prefix.clone(),
                        router_id: info.id.clone(),
                        gate: gate.clone(),
                    }) as Arc<dyn transport::Transport>)
                })
            }
        };
        (view, connector)
    } else if !cluster.routers.is_empty() {
        if cluster.transport == TransportKind::Nats {
            anyhow::bail!("SWITCHBOARD_TRANSPORT=nats needs SWITCHBOARD_NATS_URL");
        }
        (
            membership::fixed(View::from_addrs(&cluster.routers)),
            grpc_connector(access),
        )
    } else {
        anyhow::bail!(
            "no routers: set SWITCHBOARD_NATS_URL or SWITCHBOARD_ROUTERS=host:port,… (or run `switchboard`: an edge and a router in one process)"
        );
    };
    let pools = TenantPools::parse(&cluster.tenant_pools)?;
    let routers = Routers {
        edge_id,
        view,
        pools,
        connector,
    };
    let listeners = EdgeListeners::bind(&settings).await?;
    serve(
        &settings,
        routers,
        Arc::new(verifier),
        listeners,
        shutdown,
        metrics,
    )
    .await
}

fn grpc_connector(access: Access) -> Connector {
    Arc::new(move |info: &RouterInfo| {
        Ok(
            Arc::new(transport::grpc::Grpc::new(&info.grpc_addr, access.clone())?)
                as Arc<dyn transport::Transport>,
        )
    })
}

/// The configured edge id, or host name + random suffix. Ids appear in
/// NATS subjects, so they are limited to `[A-Za-z0-9_-]`.
fn edge_id(settings: &EdgeSettings) -> anyhow::Result<String> {
    let id = settings
        .edge_id
        .clone()
        .unwrap_or_else(|| switchboard_common::config::default_id("edge"));
    if !switchboard_proto::ids::is_valid_process_id(&id) {
        anyhow::bail!("edge id `{id}` must match [A-Za-z0-9_-]{{1,128}}");
    }
    Ok(id)
}

/// How this edge finds and reaches its routers.
pub struct Routers {
    pub edge_id: String,
    pub view: watch::Receiver<View>,
    pub pools: TenantPools,
    pub connector: Connector,
}

/// An edge's two listeners, bound: sockets and HTTP, and admin.
pub struct EdgeListeners {
    pub edge: TcpListener,
    pub admin: TcpListener,
}

impl EdgeListeners {
    /// Binds the addresses the settings give (each printed as
    /// `listening <name> <addr>`).
    pub async fn bind(settings: &EdgeSettings) -> anyhow::Result<Self> {
        Ok(Self {
            edge: net::bind("edge", &settings.edge_addr()).await?,
            admin: net::bind("edge-admin", &settings.edge_admin_addr()).await?,
        })
    }
}

/// Serves sockets with the given routers until `shutdown`, then drains:
/// not ready, close every socket with 1001, wait for flushes.
pub async fn serve(
    settings: &EdgeSettings,
    routers: Routers,
    verifier: Arc<Verifier>,
    listeners: EdgeListeners,
    shutdown: CancellationToken,
    metrics: metrics_exporter_prometheus::PrometheusHandle,
) -> anyhow::Result<()> {
    let edge_id = routers.edge_id.clone();
    let EdgeListeners {
        edge: listener,
        admin: admin_listener,
    } = listeners;

    let registry = Arc::new(Registry::default());
    let upstream = Upstream::new(
        edge_id.clone(),
        routers.pools,
        routers.connector,
        registry.clone(),
        settings.request_timeout,
    );
    upstream.start(routers.view);
    let draining = CancellationToken::new();
    let env = Arc::new(SocketEnv {
        limits: settings.limits(),
        upstream: upstream.clone(),
        registry: registry.clone(),
        draining: draining.clone(),
        unauthenticated: limits::UnauthenticatedSockets::new(settings.max_unauthenticated_sockets),
    });
    let server = EdgeServer::new(
        env,
        verifier,
        settings.allow_anonymous,
        settings.im_path(),
        settings.conformance_echo_path.clone(),
    );

    let ready_upstream = upstream.clone();
    let ready_draining = draining.clone();
    let readiness: admin::Readiness =
        Arc::new(move || !ready_draining.is_cancelled() && ready_upstream.ready());
    let admin_stop = CancellationToken::new();
    let admin_config = ListenerConfig {
        name: "edge-admin",
        limits: settings.http.clone(),
        grace: Duration::from_secs(1),
    };
    let edge_config = ListenerConfig {
        name: "edge",
        limits: settings.http.clone(),
        grace: Duration::from_secs(5),
    };
    let admin = tokio::spawn(admin::serve(
        admin_listener,
        admin_config,
        metrics,
        readiness,
        admin_stop.clone(),
    ));
    tracing::info!(edge_id = %edge_id, "edge started");

    server::serve(listener, edge_config, server.clone(), shutdown.clone()).await;

    // Drain: report not ready, close every socket, let queues flush.
    draining.cancel();
    let open = registry.len();
    tracing::info!(edge_id = %edge_id, sockets = open, "draining");
    for conn in registry.all() {
        conn.close(1001, "server shutting down", true);
    }
    server.sockets.close();
    let drained = tokio::time::timeout(settings.drain_timeout, server.sockets.wait()).await;
    if drained.is_err() {
        tracing::warn!(edge_id = %edge_id, left = registry.len(), "drain timed out");
    }
    upstream.stop();
    admin_stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(1), admin).await;
    tracing::info!(edge_id = %edge_id, "edge stopped");
    Ok(())
}
