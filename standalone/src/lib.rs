//! Switchboard in one process: an edge and a router joined by the
//! in-process transport, on the in-memory store (or Redis, when given), no
//! NATS. What `make run` starts, as the `switchboard` binary; it takes the
//! edge's flags, env vars and config file keys plus the router's it needs.
//!
//! - [`settings`]: the edge's settings and the in-process router's.
//! - [`welcome`]: the banner: URLs, sample tokens, `export` lines.
#![forbid(unsafe_code)]

pub mod settings;
pub mod welcome;

use std::sync::Arc;

use anyhow::Context;
use switchboard_cluster::{DEFAULT_POOL, LocalRouter, RouterInfo, TenantPools, View, membership};
use switchboard_common::auth::Minter;
use switchboard_common::{net, telemetry};
use switchboard_edge::transport::Transport;
use switchboard_edge::transport::inproc::InProcess;
use switchboard_edge::{EdgeListeners, Routers};
use switchboard_router::{HttpParts, RouterHttp, RouterNode};
use tokio_util::sync::CancellationToken;

pub use settings::StandaloneSettings;
use welcome::Welcome;

/// Runs the edge and the router until `shutdown`: the edge drains first,
/// then the router stops.
pub async fn run(settings: StandaloneSettings, shutdown: CancellationToken) -> anyhow::Result<()> {
    // Install the recorder before anything records: samples recorded
    // earlier would be lost.
    let metrics = telemetry::metrics();
    switchboard_edge::metrics::register();
    switchboard_router::metrics::register();
    let mut edge = settings.edge_settings();
    let generated = edge.auth.jwt_secret.is_none()
        && edge.auth.jwt_public_key.is_none()
        && edge.auth.jwt_jwks.is_none();
    if generated {
        edge.auth.jwt_secret = Some(random_secret());
    }
    let verifier = Arc::new(edge.auth.verifier().context("token settings")?);
    let store =
        switchboard_router::store_for(settings.redis_url.as_deref(), settings.presence.ttl_ms())
            .await?;
    let router_stop = CancellationToken::new();
    let mut config = settings.presence.node_config("standalone".to_owned());
    config.im = settings.im.config();
    config.history = settings.history.limits();
    let node = RouterNode::start(config, store.clone(), router_stop.clone());
    let api_listener = net::bind("router-api", &settings.router_api_listen_addr()).await?;
    let admin_listener = net::bind("router-admin", &settings.router_admin_listen_addr()).await?;
    let api_addr = api_listener.local_addr()?;
    let http = RouterHttp::spawn(
        HttpParts {
            node: node.clone(),
            store,
            verifier: Some(verifier.clone()),
            api_key: settings.api_key.clone(),
            http: edge.http.clone(),
            drain_timeout: edge.drain_timeout,
        },
        api_listener,
        admin_listener,
        router_stop.clone(),
    );
    let info = RouterInfo {
        id: node.id().to_owned(),
        grpc_addr: String::new(),
        api_addr: api_addr.to_string(),
        pool: DEFAULT_POOL.to_owned(),
        epoch: 0,
    };
    let in_process: Arc<dyn LocalRouter> = node;
    let routers = Routers {
        edge_id: edge
            .edge_id
            .clone()
            .unwrap_or_else(|| "standalone".to_owned()),
        view: membership::fixed(View::new(vec![info])),
        pools: TenantPools::default(),
        connector: Arc::new(move |_: &RouterInfo| {
            Ok(Arc::new(InProcess::new(in_process.clone())) as Arc<dyn Transport>)
        }),
    };

    let welcome = Welcome {
        api: api_addr,
        im_path: edge.im_path(),
        secret: edge.auth.jwt_secret.clone().filter(|_| generated),
        minter: edge
            .auth
            .jwt_secret
            .as_deref()
            .map(|s| Minter::hs256(s.as_bytes())),
        auth: edge.auth.clone(),
    };
    let result = async {
        let listeners = EdgeListeners::bind(&edge).await?;
        welcome.print(listeners.edge.local_addr()?, listeners.admin.local_addr()?);
        switchboard_edge::serve(
            &edge,
            routers,
            verifier.clone(),
            listeners,
            shutdown,
            metrics,
        )
        .await
    }
    .await;
    router_stop.cancel();
    http.stop(edge.drain_timeout).await;
    result
}

/// A development JWT secret, new at each start, printed in the banner.
fn random_secret() -> String {
    let bytes: [u8; 24] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
