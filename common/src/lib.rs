//! Plumbing shared by the Switchboard edge and router processes.
//!
//! - [`config`]: flags + `SWITCHBOARD_*` env vars + an optional TOML file.
//! - [`auth`]: JWT verification (HS256, RS256, ES256, JWKS) and minting.
//! - [`admin`]: the `/metrics`, `/healthz`, `/readyz` listener.
//! - [`telemetry`]: tracing and the Prometheus recorder.
//! - [`net`]: binding listeners and announcing their addresses.
//! - [`http`]: small response helpers for hyper services, bounded body reads.
//! - [`http_server`]: the accept loop of every HTTP listener, with its
//!   header and body timeouts and its connection cap.
//! - [`clock`]: timestamps used on the wire.
//! - [`fd_limit`]: raising the open-file limit at start.
//! - [`trust`]: the cluster secret's proofs and the internal plane's settings.
#![forbid(unsafe_code)]

pub mod admin;
pub mod auth;
pub mod clock;
pub mod config;
pub mod fd_limit;
pub mod http;
pub mod http_server;
pub mod net;
pub mod telemetry;
pub mod trust;

/// Resolves when the process is asked to stop (SIGTERM or Ctrl-C).
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// A token cancelled when the process is asked to stop (SIGTERM, Ctrl-C).
pub fn shutdown_token() -> tokio_util::sync::CancellationToken {
    let token = tokio_util::sync::CancellationToken::new();
    let signalled = token.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("stop requested: draining");
        signalled.cancel();
    });
    token
}
