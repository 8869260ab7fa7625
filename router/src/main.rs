//! `router`: loads settings, sets up logs, and runs until SIGTERM.

use switchboard_common::{config, shutdown_token, telemetry};
use switchboard_router::RouterSettings;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings: RouterSettings = config::load()?;
    telemetry::init_tracing(settings.log_format, "info");
    // Every socket is a file descriptor.
    match switchboard_common::fd_limit::raise_nofile() {
        Ok((before, after)) => tracing::info!(before, after, "open-file limit"),
        Err(e) => tracing::warn!(error = %e, "could not raise the open-file limit"),
    }
    let shutdown = shutdown_token();
    switchboard_router::run(settings, shutdown).await
}
