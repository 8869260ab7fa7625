//! Switchboard edge: terminates WebSockets (hyper 1 + fastwebsockets),
//! checks tokens, speaks each wire dialect, and exchanges normalized
//! envelopes with the routers that own the topics.
//!
//! - [`server`]: HTTP listener, upgrade routing, playground page.
//! - [`connection`]: one socket's reader and writer, limits, close codes.
//! - [`dialect`]: one module per wire dialect.
//! - [`outbound`]: per-socket queues and the connection registry.
//! - [`upstream`]: ownership, router links, replay, delivery dispatch.
//! - [`transport`]: in-process and gRPC links to routers.
//! - [`standalone`]: edge + router in one process.
//! - [`settings`], [`limits`]: configuration.
#![forbid(unsafe_code)]

pub mod connection;
pub mod dialect;
pub mod limits;
pub mod outbound;
pub mod server;
pub mod settings;
pub mod standalone;
pub mod transport;
pub mod upstream;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use switchboard_common::auth::Verifier;
use switchboard_common::{admin, net, telemetry};
use tokio_util::sync::CancellationToken;

pub use settings::EdgeSettings;

use crate::connection::SocketEnv;
use crate::outbound::Registry;
use crate::server::EdgeServer;
use crate::upstream::{Link, Upstream};

/// Runs the process the settings describe until `shutdown` fires.
pub async fn run(settings: EdgeSettings, shutdown: CancellationToken) -> anyhow::Result<()> {
    if settings.standalone {
        return standalone::run(settings, shutdown).await;
    }
    if settings.routers.is_empty() {
        anyhow::bail!(
            "no routers: set SWITCHBOARD_ROUTERS=host:port,… (or run `edge --standalone`)"
        );
    }
    let verifier = settings.auth.verifier().context(
        "an edge needs SWITCHBOARD_JWT_SECRET, SWITCHBOARD_JWT_PUBLIC_KEY or SWITCHBOARD_JWT_JWKS",
    )?;
    let mut links = Vec::new();
    for addr in &settings.routers {
        let transport = transport::grpc::Grpc::new(addr)?;
        links.push(Link::new(addr, Arc::new(transport)));
    }
    serve(&settings, links, Arc::new(verifier), shutdown, None).await
}

/// Serves sockets with the given router links until `shutdown`, then
/// drains: not ready, close every socket with 1001, wait for flushes.
pub async fn serve(
    settings: &EdgeSettings,
    links: Vec<Arc<Link>>,
    verifier: Arc<Verifier>,
    shutdown: CancellationToken,
    welcome: Option<standalone::Welcome>,
) -> anyhow::Result<()> {
    let edge_id = settings
        .edge_id
        .clone()
        .unwrap_or_else(|| switchboard_common::config::default_id("edge"));
    let listener = net::bind("edge", &settings.addr).await?;
    let admin_listener = net::bind("edge-admin", &settings.admin_addr).await?;
    if let Some(welcome) = welcome {
        welcome.print(listener.local_addr()?, admin_listener.local_addr()?);
    }

    let registry = Arc::new(Registry::default());
    let links_stop = CancellationToken::new();
    let upstream = Upstream::new(
        edge_id.clone(),
        links,
        registry.clone(),
        settings.request_timeout,
    );
    upstream.start(links_stop.clone());
    let draining = CancellationToken::new();
    let env = Arc::new(SocketEnv {
        limits: settings.limits(),
        upstream: upstream.clone(),
        registry: registry.clone(),
        draining: draining.clone(),
    });
    let server = EdgeServer::new(env, verifier, settings.allow_anonymous);

    let ready_upstream = upstream.clone();
    let ready_draining = draining.clone();
    let readiness: admin::Readiness =
        Arc::new(move || !ready_draining.is_cancelled() && ready_upstream.ready());
    let admin_stop = CancellationToken::new();
    let admin = tokio::spawn(admin::serve(
        admin_listener,
        telemetry::metrics(),
        readiness,
        admin_stop.clone(),
    ));
    tracing::info!(edge_id = %edge_id, "edge started");

    server::serve(listener, server.clone(), shutdown.clone()).await;

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
    links_stop.cancel();
    admin_stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(1), admin).await;
    tracing::info!(edge_id = %edge_id, "edge stopped");
    Ok(())
}
