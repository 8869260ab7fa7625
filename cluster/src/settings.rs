//! The cluster settings edges and routers share: how to reach NATS, or the
//! static router list, the edge↔router transport, tenant pools and the
//! subject prefix. Flags and `SWITCHBOARD_*` env vars, flattened into each
//! binary's settings.

use crate::nats;

/// Cluster settings shared by edges and routers.
#[derive(Debug, Clone, clap::Args)]
pub struct ClusterSettings {
    /// NATS URL(s), comma-separated: router membership, the NATS transport
    /// and the NATS server API run over it. `nats://user:password@host:4222`
    /// authenticates; `tls://` requires TLS.
    #[arg(long, env = "SWITCHBOARD_NATS_URL", hide_env_values = true)]
    pub nats_url: Option<String>,
    /// NATS credentials besides those in the URL.
    #[command(flatten)]
    pub nats_auth: nats::NatsAuth,
    /// Static router gRPC addresses `host:port,…`, for clusters without NATS.
    #[arg(long, env = "SWITCHBOARD_ROUTERS", value_delimiter = ',')]
    pub routers: Vec<String>,
    /// Edge↔router transport: grpc or nats.
    #[arg(
        long,
        env = "SWITCHBOARD_TRANSPORT",
        value_enum,
        default_value = "grpc"
    )]
    pub transport: TransportKind,
    /// `tenant=pool,…`; tenants not listed use the default pool.
    #[arg(long, env = "SWITCHBOARD_TENANT_POOLS", value_delimiter = ',')]
    pub tenant_pools: Vec<String>,
    /// Prefix of every NATS subject Switchboard uses.
    #[arg(
        long,
        env = "SWITCHBOARD_SUBJECT_PREFIX",
        default_value = "switchboard"
    )]
    pub subject_prefix: String,
}

/// How edges and routers exchange frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TransportKind {
    Grpc,
    Nats,
}
