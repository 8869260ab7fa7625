//! A minimal HTTP/1.1 client for tests.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde_json::Value;

pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    /// A body of JSON lines (`application/x-ndjson`), one value per line.
    pub fn json_lines(&self) -> Vec<Value> {
        String::from_utf8_lossy(&self.body)
            .lines()
            .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("line {line:?}: {e}")))
            .collect()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {} body is not JSON ({e}): {:?}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// Sends one request to `http://addr{path}` on a fresh connection.
pub async fn request(
    method: &str,
    addr: std::net::SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Reply {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("HTTP handshake");
    tokio::spawn(connection);
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string());
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let request = builder.body(Full::new(body.into())).expect("valid request");
    let response = sender.send_request(request).await.expect("HTTP response");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    Reply {
        status,
        headers,
        body,
    }
}

pub async fn get(addr: std::net::SocketAddr, path: &str, headers: &[(&str, &str)]) -> Reply {
    request("GET", addr, path, headers, Bytes::new()).await
}

pub async fn post_json(
    addr: std::net::SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: &Value,
) -> Reply {
    let mut all = vec![("content-type", "application/json")];
    all.extend_from_slice(headers);
    request("POST", addr, path, &all, body.to_string()).await
}

pub async fn put_json(
    addr: std::net::SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: &Value,
) -> Reply {
    let mut all = vec![("content-type", "application/json")];
    all.extend_from_slice(headers);
    request("PUT", addr, path, &all, body.to_string()).await
}

/// The value of an unlabelled or labelled sample in Prometheus text, e.g.
/// `metric(text, "switchboard_router_deliveries_total")`; 0 when absent.
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.rsplit_once(' '))
        .filter(|(name, _)| *name == series)
        .filter_map(|(_, value)| value.parse::<f64>().ok())
        .sum()
}

/// HTTP/1.1 written and read by hand, for tests of how a server treats
/// clients that are slow, silent or too many.
pub mod raw {
    use std::net::SocketAddr;
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    /// The status of a response head (`HTTP/1.1 503 …` gives 503).
    pub fn status_of(head: &[u8]) -> Option<u16> {
        let text = std::str::from_utf8(head.get(..12)?).ok()?;
        text.strip_prefix("HTTP/1.1 ")?.parse().ok()
    }

    /// Reads until the server closes `stream` (end of stream or reset) and
    /// returns what arrived; `None` when it is still open after `limit`.
    pub async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> Option<Vec<u8>> {
        let mut seen = Vec::new();
        let read = async {
            let mut buf = [0u8; 4096];
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => seen.extend_from_slice(&buf[..n]),
                }
            }
        };
        tokio::time::timeout(limit, read).await.ok()?;
        Some(seen)
    }

    /// `GET path` on a fresh connection with `Connection: close`: the
    /// status, or `None` when the connection ended without one.
    pub async fn get_status(addr: SocketAddr, path: &str) -> Option<u16> {
        let mut stream = TcpStream::connect(addr).await.ok()?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        // A refused connection may be closed before the request is taken.
        let _ = stream.write_all(request.as_bytes()).await;
        let answer = read_until_closed(&mut stream, Duration::from_secs(10)).await?;
        status_of(&answer)
    }

    /// A keep-alive connection that has been answered once and stays open,
    /// holding its place on the server, until dropped.
    pub struct KeptAlive {
        pub stream: TcpStream,
    }

    impl KeptAlive {
        /// Sends `GET path` and reads the whole response: `Ok` when it is a
        /// 200, else the status (0: no response).
        pub async fn open(addr: SocketAddr, path: &str) -> Result<Self, u16> {
            let mut stream = TcpStream::connect(addr).await.map_err(|_| 0u16)?;
            let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
            stream
                .write_all(request.as_bytes())
                .await
                .map_err(|_| 0u16)?;
            let status = tokio::time::timeout(Duration::from_secs(10), read_response(&mut stream))
                .await
                .ok()
                .flatten()
                .unwrap_or(0);
            if status == 200 {
                Ok(Self { stream })
            } else {
                Err(status)
            }
        }
    }

    /// Reads one response with a `content-length`; its status.
    async fn read_response(stream: &mut TcpStream) -> Option<u16> {
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        let end = loop {
            if let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            let n = stream.read(&mut buf).await.ok().filter(|n| *n > 0)?;
            seen.extend_from_slice(&buf[..n]);
        };
        let head = String::from_utf8_lossy(&seen[..end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|line| line.strip_prefix("content-length:"))
            .and_then(|value| value.trim().parse().ok())?;
        while seen.len() < end + length {
            let n = stream.read(&mut buf).await.ok().filter(|n| *n > 0)?;
            seen.extend_from_slice(&buf[..n]);
        }
        status_of(&seen)
    }
}
