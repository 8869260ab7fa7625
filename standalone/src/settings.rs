//! Standalone settings: every edge setting (flattened, so the flags, env
//! vars and config file keys are the edge's) plus what the in-process
//! router needs. Listeners whose address is not given bind loopback, as a
//! development process with sample tokens should, unless `--listen-all`.

use clap::Parser;
use switchboard_edge::EdgeSettings;
use switchboard_router::im::ImSettings;
use switchboard_router::settings::PresenceSettings;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "switchboard",
    version,
    about = "Switchboard in one process: an edge and a router, in-memory store, no Redis or NATS needed"
)]
pub struct StandaloneSettings {
    #[command(flatten)]
    pub edge: EdgeSettings,
    /// What `edge --standalone` was given: still accepted (env var and
    /// config key too), and implied.
    #[arg(long, env = "SWITCHBOARD_STANDALONE", hide = true)]
    pub standalone: bool,
    /// Listeners whose address is not given bind every interface
    /// (0.0.0.0) instead of loopback, so other machines can connect.
    #[arg(long, env = "SWITCHBOARD_LISTEN_ALL")]
    pub listen_all: bool,
    /// Server API listener [default: 127.0.0.1:8081; with --listen-all:
    /// 0.0.0.0:8081].
    #[arg(long, env = "SWITCHBOARD_ROUTER_API_ADDR")]
    pub router_api_addr: Option<String>,
    /// Router metrics and health listener [default: 127.0.0.1:9091; with
    /// --listen-all: 0.0.0.0:9091].
    #[arg(long, env = "SWITCHBOARD_ROUTER_ADMIN_ADDR")]
    pub router_admin_addr: Option<String>,
    /// Redis URL for the store (in memory when unset).
    #[arg(long, env = "SWITCHBOARD_REDIS_URL")]
    pub redis_url: Option<String>,
    /// Static key for the server API.
    #[arg(long, env = "SWITCHBOARD_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Presence timing of the in-process router.
    #[command(flatten)]
    pub presence: PresenceSettings,
    /// IM limits of the in-process router.
    #[command(flatten)]
    pub im: ImSettings,
    /// History kept per topic by the in-process router (in memory unless
    /// a Redis URL is set).
    #[command(flatten)]
    pub history: switchboard_router::settings::HistorySettings,
}

impl StandaloneSettings {
    /// The host a listener binds when its address is not given.
    fn default_host(&self) -> &'static str {
        if self.listen_all {
            "0.0.0.0"
        } else {
            "127.0.0.1"
        }
    }

    fn listen(&self, given: &Option<String>, port: u16) -> String {
        given
            .clone()
            .unwrap_or_else(|| format!("{}:{port}", self.default_host()))
    }

    /// The WebSocket and HTTP listener's address.
    pub fn edge_addr(&self) -> String {
        self.listen(&self.edge.addr, 8080)
    }

    /// The edge's admin listener's address.
    pub fn edge_admin_addr(&self) -> String {
        self.listen(&self.edge.admin_addr, 9090)
    }

    /// The server API listener's address.
    pub fn router_api_listen_addr(&self) -> String {
        self.listen(&self.router_api_addr, 8081)
    }

    /// The router admin listener's address.
    pub fn router_admin_listen_addr(&self) -> String {
        self.listen(&self.router_admin_addr, 9091)
    }

    /// The edge's settings with both listener addresses filled in, so the
    /// edge binds loopback unless told otherwise.
    pub fn edge_settings(&self) -> EdgeSettings {
        EdgeSettings {
            addr: Some(self.edge_addr()),
            admin_addr: Some(self.edge_admin_addr()),
            ..self.edge.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standalone_listens_on_loopback_unless_told_otherwise() {
        let s = StandaloneSettings::try_parse_from(["switchboard"]).unwrap();
        assert_eq!(
            [
                s.edge_addr(),
                s.edge_admin_addr(),
                s.router_api_listen_addr(),
                s.router_admin_listen_addr()
            ],
            [
                "127.0.0.1:8080",
                "127.0.0.1:9090",
                "127.0.0.1:8081",
                "127.0.0.1:9091"
            ]
        );
        let all = StandaloneSettings::try_parse_from(["switchboard", "--listen-all"]).unwrap();
        assert_eq!(all.edge_addr(), "0.0.0.0:8080");
        assert_eq!(all.router_api_listen_addr(), "0.0.0.0:8081");
        // A given address is kept as given.
        let given =
            StandaloneSettings::try_parse_from(["switchboard", "--addr", "0.0.0.0:80"]).unwrap();
        assert_eq!(given.edge_addr(), "0.0.0.0:80");
        assert_eq!(given.edge_admin_addr(), "127.0.0.1:9090");
        let edge = given.edge_settings();
        assert_eq!(
            [edge.edge_addr(), edge.edge_admin_addr()],
            ["0.0.0.0:80", "127.0.0.1:9090"]
        );
    }

    #[test]
    fn what_edge_standalone_took_is_still_taken() {
        let s = StandaloneSettings::try_parse_from([
            "switchboard",
            "--standalone",
            "--redis-url",
            "redis://127.0.0.1:6379/",
            "--presence-ttl",
            "30s",
            "--im-offline-max",
            "5",
            "--api-key",
            "k",
            "--max-message-size",
            "1024",
        ])
        .unwrap();
        assert!(s.standalone);
        assert_eq!(s.redis_url.as_deref(), Some("redis://127.0.0.1:6379/"));
        assert_eq!(s.presence.ttl_ms(), 30_000);
        assert_eq!(s.im.config().offline_max, 5);
        assert_eq!(s.api_key.as_deref(), Some("k"));
        assert_eq!(s.edge.max_message_size, 1024);
    }

    #[test]
    fn the_edge_token_subcommand_stays_with_the_edge() {
        assert!(
            StandaloneSettings::try_parse_from(["switchboard", "token", "--sub", "a"]).is_err()
        );
    }
}
