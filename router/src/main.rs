//! `router`: loads settings, sets up logs, and runs until SIGTERM.

use switchboard_common::{config, shutdown_signal, telemetry};
use switchboard_router::RouterSettings;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings: RouterSettings = config::load()?;
    telemetry::init_tracing(settings.log_format, "info");
    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("SIGTERM: draining");
        signal.cancel();
    });
    switchboard_router::run(settings, shutdown).await
}
