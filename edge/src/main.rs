//! `edge`: loads settings, sets up logs, and runs until SIGTERM;
//! `edge token …` mints a token. Standalone mode (an edge and a router in
//! one process) is the `switchboard` binary; `edge --standalone` says so.

use anyhow::Context;
use switchboard_common::auth::{Claims, Minter};
use switchboard_common::{config, shutdown_token, telemetry};
use switchboard_edge::EdgeSettings;
use switchboard_edge::settings::{Command, EdgeCli, STANDALONE_MOVED, TokenArgs};

/// jemalloc returns freed memory to the system over time (glibc's arenas
/// keep what a burst took); see docs/BENCHMARKS.md, "Abuse".
#[cfg(all(unix, not(target_env = "musl")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli: EdgeCli = config::load()?;
    let settings = cli.settings;
    if let Some(Command::Token(args)) = &cli.command {
        return mint(&settings, args);
    }
    if cli.standalone {
        anyhow::bail!(STANDALONE_MOVED);
    }
    telemetry::init_tracing(settings.log_format, "info");
    // Every socket is a file descriptor.
    match switchboard_common::fd_limit::raise_nofile() {
        Ok((before, after)) => tracing::info!(before, after, "open-file limit"),
        Err(e) => tracing::warn!(error = %e, "could not raise the open-file limit"),
    }
    let shutdown = shutdown_token();
    switchboard_edge::run(settings, shutdown).await
}

fn mint(settings: &EdgeSettings, args: &TokenArgs) -> anyhow::Result<()> {
    let secret = settings
        .auth
        .jwt_secret
        .as_deref()
        .filter(|s| !s.is_empty())
        .context("set SWITCHBOARD_JWT_SECRET (or --jwt-secret) to the secret the edge uses")?;
    if let Some(max) = settings.auth.jwt_max_lifetime
        && args.ttl > max
    {
        anyhow::bail!(
            "--ttl {}s is longer than --jwt-max-lifetime {}s: the gateway would refuse the token",
            args.ttl.as_secs(),
            max.as_secs()
        );
    }
    let mut claims: Claims = switchboard_common::auth::claims(
        &args.sub,
        args.kind.as_str(),
        &args.tenant,
        args.scope.as_deref(),
        args.ttl.as_secs(),
    );
    claims.owner = args.owner.clone();
    claims.app = args.app.clone();
    settings.auth.stamp(&mut claims);
    println!("{}", Minter::hs256(secret.as_bytes()).mint(&claims));
    Ok(())
}
