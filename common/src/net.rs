//! Binding listeners and announcing their addresses.

use std::net::SocketAddr;

use tokio::net::TcpListener;

#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} ({name}): {source}")]
pub struct BindError {
    pub name: &'static str,
    pub addr: String,
    pub source: std::io::Error,
}

/// Binds `addr` and prints `listening <name> <ip:port>` on stdout, so a
/// port of 0 is usable: scripts and tests read the bound port from it.
pub async fn bind(name: &'static str, addr: &str) -> Result<TcpListener, BindError> {
    let listener = TcpListener::bind(addr).await.map_err(|source| BindError {
        name,
        addr: addr.to_owned(),
        source,
    })?;
    let local = listener.local_addr().map_err(|source| BindError {
        name,
        addr: addr.to_owned(),
        source,
    })?;
    announce(name, local);
    Ok(listener)
}

pub fn announce(name: &str, addr: SocketAddr) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    // A closed stdout must not stop the process from serving.
    let _ = writeln!(out, "listening {name} {addr}");
    let _ = out.flush();
    tracing::debug!(listener = name, %addr, "listening");
}
