//! Test helpers shared by every crate's integration tests.
//!
//! - [`browser`]: a headless Chromium driven over the DevTools protocol.
//! - [`redis`], [`nats`]: private `redis-server` and `nats-server` instances
//!   on ephemeral ports.
//! - [`cluster`]: routers and edges as processes over gRPC or NATS.
//! - [`views`]: cluster views of routers that exist only as entries.
//! - [`dialects`]: one socket per dialect and a probe each answers.
//! - [`netns`]: a second host (network namespace and veth pair) to cut off.
//! - [`process`]: Switchboard binaries started as child processes, with the
//!   addresses they print (`listening <name> <addr>`).
//! - [`ws`]: a WebSocket client (tokio-tungstenite, an implementation
//!   independent of the server's) with JSON helpers.
//! - [`http`]: a minimal HTTP/1.1 client.
//! - [`im`]: IM logins, registered sockets and messages.
//! - [`jsonrpc`]: JSON-RPC dialect sockets, calls and pushes.
//! - [`manifests`]: deployment files (YAML, JSON) as data, Helm's values
//!   merge and JSON Schema checks.
//! - [`switchboard`]: standalone, edge and router processes, tokens, URLs.
//! - [`tls`]: a CA and certificates made at run time for mutual TLS.
#![forbid(unsafe_code)]

pub mod browser;
pub mod cluster;
pub mod dialects;
pub mod http;
pub mod im;
pub mod jsonrpc;
pub mod manifests;
pub mod nats;
pub mod netns;
pub mod process;
pub mod redis;
pub mod switchboard;
pub mod tls;
pub mod views;
pub mod ws;

pub use nats::NatsServer;
pub use process::{Process, binary};
pub use redis::{RedisCluster, RedisServer};
pub use ws::WsClient;

/// A port that was free a moment ago, for servers that cannot bind port 0
/// and report it (redis-server).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port")
}
