//! `switchboard`: an edge and a router in one process (what `make run`
//! starts). Loads settings, sets up logs, and runs until SIGTERM.

use switchboard_common::{config, shutdown_token, telemetry};
use switchboard_standalone::StandaloneSettings;

/// jemalloc returns freed memory to the system over time (glibc's arenas
/// keep what a burst took); see docs/BENCHMARKS.md, "Abuse".
#[cfg(all(unix, not(target_env = "musl")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings: StandaloneSettings = config::load()?;
    telemetry::init_tracing(settings.edge.log_format, "info");
    // Every socket is a file descriptor.
    match switchboard_common::fd_limit::raise_nofile() {
        Ok((before, after)) => tracing::info!(before, after, "open-file limit"),
        Err(e) => tracing::warn!(error = %e, "could not raise the open-file limit"),
    }
    let shutdown = shutdown_token();
    switchboard_standalone::run(settings, shutdown).await
}
