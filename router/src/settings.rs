//! Router settings: flags, `SWITCHBOARD_*` env vars, optional TOML file.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use switchboard_common::auth::AuthSettings;
pub use switchboard_common::config::{default_id, duration};
use switchboard_common::telemetry::LogFormat;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "router",
    version,
    about = "Switchboard router: owns topics, presence and fan-out"
)]
pub struct RouterSettings {
    /// TOML file with any of these settings (keys are the flag names).
    #[arg(long, env = "SWITCHBOARD_CONFIG")]
    pub config: Option<PathBuf>,
    /// gRPC listener that edges attach to.
    #[arg(
        long,
        env = "SWITCHBOARD_ROUTER_GRPC_ADDR",
        default_value = "0.0.0.0:50051"
    )]
    pub grpc_addr: String,
    /// Server API listener.
    #[arg(
        long,
        env = "SWITCHBOARD_ROUTER_API_ADDR",
        default_value = "0.0.0.0:8081"
    )]
    pub api_addr: String,
    /// `/metrics`, `/healthz`, `/readyz` listener.
    #[arg(
        long,
        env = "SWITCHBOARD_ROUTER_ADMIN_ADDR",
        default_value = "0.0.0.0:9091"
    )]
    pub admin_addr: String,
    /// Redis URL; without it the router keeps presence in memory.
    #[arg(long, env = "SWITCHBOARD_REDIS_URL")]
    pub redis_url: Option<String>,
    /// Static key accepted by the server API besides service tokens.
    #[arg(long, env = "SWITCHBOARD_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// This router's id (default: host name + random suffix).
    #[arg(long, env = "SWITCHBOARD_ROUTER_ID")]
    pub router_id: Option<String>,
    #[command(flatten)]
    pub auth: AuthSettings,
    #[command(flatten)]
    pub cluster: crate::cluster::ClusterSettings,
    /// How the internal plane is protected (cluster secret, mutual TLS).
    #[command(flatten)]
    pub trust: switchboard_common::trust::TrustSettings,
    /// The pool this router serves.
    #[arg(long, env = "SWITCHBOARD_POOL", default_value = crate::cluster::DEFAULT_POOL)]
    pub pool: String,
    /// Address edges and other routers dial (default: the bound gRPC address).
    #[arg(long, env = "SWITCHBOARD_ROUTER_ADVERTISE_ADDR")]
    pub advertise_addr: Option<String>,
    #[command(flatten)]
    pub presence: PresenceSettings,
    #[command(flatten)]
    pub im: crate::im::ImSettings,
    #[command(flatten)]
    pub history: HistorySettings,
    /// State shards (tasks); default: one per core.
    #[arg(long, env = "SWITCHBOARD_ROUTER_SHARDS")]
    pub shards: Option<usize>,
    /// Header and body timeouts and the connection cap of the HTTP listeners.
    #[command(flatten)]
    pub http: switchboard_common::http_server::HttpSettings,
    /// Time open streams and requests get to finish on SIGTERM.
    #[arg(long, env = "SWITCHBOARD_DRAIN_TIMEOUT", default_value = "10s", value_parser = duration)]
    pub drain_timeout: Duration,
    #[arg(
        long,
        env = "SWITCHBOARD_LOG_FORMAT",
        value_enum,
        default_value = "json"
    )]
    pub log_format: LogFormat,
}

/// Presence timing, shared by routers and standalone mode.
#[derive(Debug, Clone, clap::Args)]
pub struct PresenceSettings {
    /// A client is present while it sent something within this time.
    #[arg(long, env = "SWITCHBOARD_PRESENCE_TTL", default_value = "90s", value_parser = duration)]
    pub presence_ttl: Duration,
    /// How often expired presence entries are swept.
    #[arg(long, env = "SWITCHBOARD_PRESENCE_SWEEP", default_value = "5s", value_parser = duration)]
    pub presence_sweep: Duration,
}

impl PresenceSettings {
    pub fn ttl_ms(&self) -> u64 {
        self.presence_ttl.as_millis() as u64
    }

    /// A node configuration with these presence settings.
    pub fn node_config(&self, id: String) -> crate::NodeConfig {
        crate::NodeConfig {
            id,
            presence_ttl: self.presence_ttl,
            sweep_interval: self.presence_sweep,
            ..crate::NodeConfig::default()
        }
    }
}

/// How much history each topic keeps, shared by routers and standalone
/// mode.
#[derive(Debug, Clone, clap::Args)]
pub struct HistorySettings {
    /// Messages kept per topic (groups, client ids, broadcasts) for
    /// recovery after a reconnect; 0 turns history off.
    #[arg(long, env = "SWITCHBOARD_HISTORY_SIZE", default_value_t = 100)]
    pub history_size: usize,
    /// A topic's history goes this long after its last message.
    #[arg(long, env = "SWITCHBOARD_HISTORY_TTL", default_value = "300s", value_parser = duration)]
    pub history_ttl: Duration,
}

impl HistorySettings {
    /// What each history keeps; `None` with history off.
    pub fn limits(&self) -> Option<crate::store::history::HistoryLimits> {
        (self.history_size > 0).then(|| crate::store::history::HistoryLimits {
            size: self.history_size,
            ttl_ms: (self.history_ttl.as_millis() as u64).max(1),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_spec() {
        let s = RouterSettings::try_parse_from(["router"]).unwrap();
        assert_eq!(s.grpc_addr, "0.0.0.0:50051");
        assert_eq!(s.api_addr, "0.0.0.0:8081");
        assert_eq!(s.admin_addr, "0.0.0.0:9091");
        assert_eq!(s.presence.presence_ttl, Duration::from_secs(90));
        let history = s.history.limits().unwrap();
        assert_eq!((history.size, history.ttl_ms), (100, 300_000));
    }

    #[test]
    fn a_history_size_of_zero_turns_history_off() {
        let s = RouterSettings::try_parse_from(["router", "--history-size", "0"]).unwrap();
        assert_eq!(s.history.limits(), None);
        let s = RouterSettings::try_parse_from(["router", "--history-ttl", "5s"]).unwrap();
        assert_eq!(s.history.limits().unwrap().ttl_ms, 5_000);
    }
}
