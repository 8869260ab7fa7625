//! Edge settings: flags, `SWITCHBOARD_*` env vars, optional TOML file.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use switchboard_common::auth::{AuthSettings, Kind};
use switchboard_common::config::duration;
use switchboard_common::telemetry::LogFormat;

use crate::limits::Limits;

/// The `edge` command line: the settings, `edge token …`, and the
/// retired `--standalone`.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "edge",
    version,
    about = "Switchboard edge: WebSockets in, normalized envelopes out"
)]
pub struct EdgeCli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub settings: EdgeSettings,
    /// Standalone mode moved to the `switchboard` binary; an edge given
    /// this refuses to start and says so (see [`STANDALONE_MOVED`]).
    #[arg(long, env = "SWITCHBOARD_STANDALONE", hide = true)]
    pub standalone: bool,
}

/// Why `edge --standalone` (or `SWITCHBOARD_STANDALONE`, or `standalone` in
/// the config file) does not start.
pub const STANDALONE_MOVED: &str = "standalone mode is the `switchboard` binary now \
    (edge and router in one process, same flags, env vars and config file): \
    run `make run`, or `switchboard` without `--standalone`";

/// What an edge runs with: flags, `SWITCHBOARD_*` env vars, config file.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "edge",
    version,
    about = "Switchboard edge: WebSockets in, normalized envelopes out"
)]
pub struct EdgeSettings {
    /// TOML file with any of these settings (keys are the flag names).
    #[arg(long, env = "SWITCHBOARD_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// WebSocket and HTTP listener [default: 0.0.0.0:8080; standalone:
    /// 127.0.0.1:8080].
    #[arg(long, env = "SWITCHBOARD_EDGE_ADDR")]
    pub addr: Option<String>,
    /// `/metrics`, `/healthz`, `/readyz` listener [default: 0.0.0.0:9090;
    /// standalone: 127.0.0.1:9090].
    #[arg(long, env = "SWITCHBOARD_EDGE_ADMIN_ADDR")]
    pub admin_addr: Option<String>,
    /// How to find routers: NATS membership or a static list.
    #[command(flatten)]
    pub cluster: switchboard_cluster::ClusterSettings,
    /// How the internal plane is protected (cluster secret, mutual TLS).
    #[command(flatten)]
    pub trust: switchboard_common::trust::TrustSettings,
    /// This edge's id (default: host name + random suffix).
    #[arg(long, env = "SWITCHBOARD_EDGE_ID")]
    pub edge_id: Option<String>,
    #[command(flatten)]
    pub auth: AuthSettings,
    /// Route of the IM WebSocket (the seed's `context`).
    #[arg(
        long,
        env = "SWITCHBOARD_IM_WEBSOCKET_PATH",
        default_value = crate::dialect::im::DEFAULT_PATH
    )]
    pub im_websocket_path: String,
    /// Route of a conformance echo socket (e.g. `/conformance/echo`):
    /// every text and binary message is echoed through the same frame
    /// layer as the dialects, for an outside WebSocket test suite. Off
    /// unless given; not for production.
    #[arg(long, env = "SWITCHBOARD_CONFORMANCE_ECHO_PATH")]
    pub conformance_echo_path: Option<String>,
    /// Let group clients connect without a token (tenant `default`).
    #[arg(long, env = "SWITCHBOARD_ALLOW_ANONYMOUS")]
    pub allow_anonymous: bool,
    /// Largest inbound message in bytes (close 1009 above).
    #[arg(long, env = "SWITCHBOARD_MAX_MESSAGE_SIZE", default_value_t = 64 * 1024)]
    pub max_message_size: usize,
    /// Inbound messages per second per socket.
    #[arg(long, env = "SWITCHBOARD_RATE_LIMIT", default_value_t = 50.0)]
    pub rate_limit: f64,
    /// Inbound burst per socket.
    #[arg(long, env = "SWITCHBOARD_RATE_BURST", default_value_t = 100.0)]
    pub rate_burst: f64,
    /// Outbound queue per socket, in messages (close 1013 when full).
    #[arg(long, env = "SWITCHBOARD_OUTBOUND_QUEUE", default_value_t = 1024)]
    pub outbound_queue: usize,
    /// Outbound queue per socket, in bytes (close 1013 when full).
    #[arg(long, env = "SWITCHBOARD_OUTBOUND_BYTES", default_value_t = 4 << 20)]
    pub outbound_bytes: usize,
    /// Negotiate permessage-deflate (RFC 7692) when a client offers it;
    /// `false` declines every offer.
    #[arg(
        long,
        env = "SWITCHBOARD_PERMESSAGE_DEFLATE",
        default_value_t = true,
        action = clap::ArgAction::Set
    )]
    pub permessage_deflate: bool,
    /// Outbound messages shorter than this (bytes) go uncompressed on a
    /// socket that negotiated permessage-deflate.
    #[arg(long, env = "SWITCHBOARD_DEFLATE_THRESHOLD", default_value_t = 256)]
    pub deflate_threshold: usize,
    /// Subscriptions one socket may hold.
    #[arg(long, env = "SWITCHBOARD_MAX_SUBSCRIPTIONS", default_value_t = 1024)]
    pub max_subscriptions: usize,
    /// Sockets that have yet to authenticate (IM sockets before they
    /// register); one more is closed with 1008.
    #[arg(
        long,
        env = "SWITCHBOARD_MAX_UNAUTHENTICATED_SOCKETS",
        default_value_t = 10_000
    )]
    pub max_unauthenticated_sockets: usize,
    /// Header and body timeouts and the connection cap of every HTTP
    /// listener (in standalone mode, the router's too).
    #[command(flatten)]
    pub http: switchboard_common::http_server::HttpSettings,
    /// How often each socket is pinged; a pong (or any frame) counts as
    /// activity against --idle-timeout.
    #[arg(long, env = "SWITCHBOARD_PING_INTERVAL", default_value = "25s", value_parser = duration)]
    pub ping_interval: Duration,
    /// A socket silent for this long is closed.
    #[arg(long, env = "SWITCHBOARD_IDLE_TIMEOUT", default_value = "60s", value_parser = duration)]
    pub idle_timeout: Duration,
    /// Time sockets get to flush and close on SIGTERM.
    #[arg(long, env = "SWITCHBOARD_DRAIN_TIMEOUT", default_value = "10s", value_parser = duration)]
    pub drain_timeout: Duration,
    /// How long a socket waits for a router's answer.
    #[arg(long, env = "SWITCHBOARD_REQUEST_TIMEOUT", default_value = "5s", value_parser = duration)]
    pub request_timeout: Duration,
    #[arg(
        long,
        env = "SWITCHBOARD_LOG_FORMAT",
        value_enum,
        default_value = "json"
    )]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Mint a token signed with the configured HS256 secret.
    Token(TokenArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub struct TokenArgs {
    /// The principal: user id, client id, device id, app id, service name.
    #[arg(long)]
    pub sub: String,
    /// user, app, device, client or service.
    #[arg(long, default_value = "user", value_parser = parse_kind)]
    pub kind: Kind,
    #[arg(long, default_value = "default")]
    pub tenant: String,
    /// Space-separated scopes, e.g. "broadcast notice".
    #[arg(long)]
    pub scope: Option<String>,
    /// Device tokens: the user who owns the device.
    #[arg(long)]
    pub owner: Option<String>,
    /// App tokens: the appId the token may act for.
    #[arg(long)]
    pub app: Option<String>,
    /// Lifetime: 90s, 15m, 1h, 7d.
    #[arg(long, default_value = "1h", value_parser = duration)]
    pub ttl: Duration,
}

fn parse_kind(text: &str) -> Result<Kind, String> {
    text.parse()
        .map_err(|e: switchboard_common::auth::KindError| e.to_string())
}

impl EdgeSettings {
    /// The WebSocket and HTTP listener's address.
    pub fn edge_addr(&self) -> String {
        self.addr
            .clone()
            .unwrap_or_else(|| "0.0.0.0:8080".to_owned())
    }

    /// The edge's admin listener's address.
    pub fn edge_admin_addr(&self) -> String {
        self.admin_addr
            .clone()
            .unwrap_or_else(|| "0.0.0.0:9090".to_owned())
    }

    /// The IM WebSocket route, with its leading `/`.
    pub fn im_path(&self) -> String {
        let path = self.im_websocket_path.trim();
        if path.starts_with('/') {
            path.to_owned()
        } else {
            format!("/{path}")
        }
    }

    pub fn limits(&self) -> Limits {
        Limits {
            max_message: self.max_message_size,
            rate_per_sec: self.rate_limit,
            rate_burst: self.rate_burst,
            outbound_messages: self.outbound_queue.max(1),
            outbound_bytes: self.outbound_bytes,
            ping_interval: self.ping_interval,
            idle_timeout: self.idle_timeout,
            flush_timeout: self.drain_timeout.min(Duration::from_secs(5)),
            max_subscriptions: self.max_subscriptions,
            deflate: self.permessage_deflate,
            deflate_threshold: self.deflate_threshold,
            ..Limits::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_spec() {
        let s = EdgeSettings::try_parse_from(["edge"]).unwrap();
        assert_eq!(s.edge_addr(), "0.0.0.0:8080");
        assert_eq!(s.edge_admin_addr(), "0.0.0.0:9090");
        let limits = s.limits();
        assert_eq!(limits.max_message, 65_536);
        assert_eq!(limits.outbound_messages, 1024);
        assert_eq!(limits.outbound_bytes, 4 << 20);
        assert_eq!(limits.ping_interval, Duration::from_secs(25));
        assert_eq!(limits.idle_timeout, Duration::from_secs(60));
        assert_eq!(s.im_path(), "/websocket");
        assert_eq!(s.max_unauthenticated_sockets, 10_000);
        assert_eq!(s.http.http_header_timeout, Duration::from_secs(10));
        assert_eq!(s.http.http_body_timeout, Duration::from_secs(30));
        assert_eq!(s.http.max_http_connections, 10_000);
    }

    #[test]
    fn standalone_is_a_hidden_flag_of_the_edge_command_only() {
        use clap::CommandFactory;
        let cli = EdgeCli::try_parse_from(["edge", "--standalone"]).unwrap();
        assert!(cli.standalone);
        let help = EdgeCli::command().render_long_help().to_string();
        assert!(!help.contains("--standalone"), "{help}");
        assert!(EdgeSettings::try_parse_from(["edge", "--standalone"]).is_err());
    }

    #[test]
    fn im_path_is_configurable() {
        let s = EdgeSettings::try_parse_from(["edge", "--im-websocket-path", "chat/ws"]).unwrap();
        assert_eq!(s.im_path(), "/chat/ws");
    }

    #[test]
    fn routers_are_a_comma_list() {
        let s = EdgeSettings::try_parse_from(["edge", "--routers", "a:1,b:2"]).unwrap();
        assert_eq!(s.cluster.routers, vec!["a:1", "b:2"]);
    }

    #[test]
    fn token_subcommand() {
        let s = EdgeCli::try_parse_from([
            "edge", "token", "--sub", "alice", "--kind", "client", "--ttl", "2h",
        ])
        .unwrap();
        let Some(Command::Token(args)) = s.command else {
            panic!("token subcommand")
        };
        assert_eq!(args.sub, "alice");
        assert_eq!(args.kind, Kind::Client);
        assert_eq!(args.ttl, Duration::from_secs(7200));
    }

    #[test]
    fn token_subcommand_refuses_unknown_kinds() {
        let e = EdgeCli::try_parse_from(["edge", "token", "--sub", "a", "--kind", "clients"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("`clients`"), "{e}");
    }

    #[test]
    fn token_settings_may_follow_the_subcommand() {
        let s = EdgeCli::try_parse_from([
            "edge",
            "token",
            "--jwt-secret",
            "x",
            "--jwt-audience",
            "sb",
            "--sub",
            "alice",
        ])
        .unwrap();
        assert_eq!(s.settings.auth.jwt_secret.as_deref(), Some("x"));
        assert_eq!(s.settings.auth.jwt_audience.as_deref(), Some("sb"));
        assert!(matches!(s.command, Some(Command::Token(_))));
    }
}
