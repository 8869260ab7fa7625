//! Test helpers shared by every crate's integration tests.
//!
//! - [`redis`]: a private `redis-server` on an ephemeral port.
//! - [`process`]: Switchboard binaries started as child processes, with the
//!   addresses they print (`listening <name> <addr>`).
//! - [`ws`]: a WebSocket client (tokio-tungstenite, an implementation
//!   independent of the server's) with JSON helpers.
//! - [`http`]: a minimal HTTP/1.1 client.
//! - [`switchboard`]: standalone, edge and router processes, tokens, URLs.
#![forbid(unsafe_code)]

pub mod http;
pub mod process;
pub mod redis;
pub mod switchboard;
pub mod ws;

pub use process::{Process, binary};
pub use redis::RedisServer;
pub use ws::WsClient;

/// A port that was free a moment ago, for servers that cannot bind port 0
/// and report it (redis-server).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port")
}
