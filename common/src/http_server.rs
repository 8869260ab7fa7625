//! The one accept loop every HTTP listener runs (edge, router API, both
//! admin ports), with the guards of `00-common.md` ("Frames") against
//! clients that hold a server's resources without using them:
//!
//! - a request whose headers have not all arrived within the header
//!   timeout loses its connection (hyper's `header_read_timeout`; an idle
//!   keep-alive connection waits for its next request under the same
//!   deadline, so a silent connection is closed too);
//! - a body not received whole within the body timeout of its headers
//!   fails [`read_body`](crate::http::read_body) with
//!   [`BodyError::TimedOut`](crate::http::BodyError::TimedOut);
//! - each listener holds at most `max_http_connections` connections; one
//!   more is answered 503 and closed at once, without being read.
//!
//! A connection upgraded to a WebSocket leaves the HTTP phase: no HTTP
//! deadline applies to it and it stops counting against the cap. Upgraded
//! sockets are governed by the edge's own socket limits.

use std::error::Error as StdError;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::{Body as HttpBody, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::duration;

/// The HTTP request-phase limits, shared by every listener of a process.
#[derive(Debug, Clone, clap::Args)]
pub struct HttpSettings {
    /// A request whose headers have not arrived within this time loses its
    /// connection (an idle keep-alive connection too).
    #[arg(long, env = "SWITCHBOARD_HTTP_HEADER_TIMEOUT", default_value = "10s", value_parser = duration)]
    pub http_header_timeout: Duration,
    /// A request body not received whole within this time of its headers
    /// is answered 408.
    #[arg(long, env = "SWITCHBOARD_HTTP_BODY_TIMEOUT", default_value = "30s", value_parser = duration)]
    pub http_body_timeout: Duration,
    /// Open HTTP connections per listener; one more is answered 503 and
    /// closed. Upgraded WebSockets do not count.
    #[arg(
        long,
        env = "SWITCHBOARD_MAX_HTTP_CONNECTIONS",
        default_value_t = 10_000
    )]
    pub max_http_connections: usize,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            http_header_timeout: Duration::from_secs(10),
            http_body_timeout: Duration::from_secs(30),
            max_http_connections: 10_000,
        }
    }
}

/// One listener: its metrics label, its limits, and how long requests in
/// flight get to finish once it is told to stop.
#[derive(Debug, Clone)]
pub struct ListenerConfig {
    /// The `listener` label of its metrics: a fixed name, never input.
    pub name: &'static str,
    pub limits: HttpSettings,
    pub grace: Duration,
}

/// When the body of the request being served must have arrived.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BodyDeadline {
    pub at: tokio::time::Instant,
    pub timeout: Duration,
    pub listener: &'static str,
}

tokio::task_local! {
    /// Set around each request's service future, so every body read made
    /// while answering it shares the request's deadline.
    static BODY_DEADLINE: BodyDeadline;
}

/// The deadline of the request being served, if any.
pub(crate) fn body_deadline() -> Option<BodyDeadline> {
    BODY_DEADLINE.try_with(|deadline| *deadline).ok()
}

/// Runs `future` as the handling of a request whose body must arrive
/// within `timeout` from now.
pub async fn with_body_deadline<F: Future>(
    listener: &'static str,
    timeout: Duration,
    future: F,
) -> F::Output {
    let deadline = BodyDeadline {
        at: tokio::time::Instant::now() + timeout,
        timeout,
        listener,
    };
    BODY_DEADLINE.scope(deadline, future).await
}

/// Creates the listener's series at zero, so dashboards see it before
/// anything happens.
fn describe(name: &'static str) {
    metrics::describe_gauge!(
        "switchboard_http_connections",
        "Open HTTP connections, by listener (upgraded WebSockets excluded)"
    );
    metrics::describe_counter!(
        "switchboard_http_connections_refused_total",
        "Connections answered 503 and closed because the listener was at its cap"
    );
    metrics::describe_counter!(
        "switchboard_http_header_timeouts_total",
        "Connections closed because request headers did not arrive in time"
    );
    metrics::describe_counter!(
        "switchboard_http_body_timeouts_total",
        "Requests answered 408 because their body did not arrive in time"
    );
    metrics::gauge!("switchboard_http_connections", "listener" => name).increment(0.0);
    for counter in [
        "switchboard_http_connections_refused_total",
        "switchboard_http_header_timeouts_total",
        "switchboard_http_body_timeouts_total",
    ] {
        metrics::counter!(counter, "listener" => name).absolute(0);
    }
}

/// Serves `service` on `listener` until `stop` fires, then lets requests
/// in flight finish for up to the listener's grace.
pub async fn serve<S, F, B>(
    listener: TcpListener,
    config: ListenerConfig,
    service: S,
    stop: CancellationToken,
) where
    S: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<B>> + Send + 'static,
    B: HttpBody + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    describe(config.name);
    let slots = Arc::new(Semaphore::new(config.limits.max_http_connections.max(1)));
    let connections = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stop.cancelled() => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) => {
                // Out of file descriptors and the like: back off, keep serving.
                tracing::warn!(listener = config.name, %error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            refuse(&stream, config.name);
            continue;
        };
        let _ = stream.set_nodelay(true);
        connections.spawn(serve_connection(
            stream,
            slot,
            config.clone(),
            service.clone(),
            stop.clone(),
        ));
    }
    connections.close();
    let _ = tokio::time::timeout(config.grace, connections.wait()).await;
}

/// What a connection over the cap gets before it is closed.
const FULL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: 29\r\nconnection: close\r\nretry-after: 1\r\n\r\ntoo many connections, retry\r\n";

/// Answers a connection over the cap and drops it. Nothing is read and no
/// task is spawned, so a flood costs one small write per connection: the
/// answer fits any fresh socket's send buffer, and a peer that cannot take
/// it just sees the connection close.
fn refuse(stream: &TcpStream, name: &'static str) {
    metrics::counter!("switchboard_http_connections_refused_total", "listener" => name)
        .increment(1);
    let _ = stream.try_write(FULL);
}

async fn serve_connection<S, F, B>(
    stream: TcpStream,
    slot: OwnedSemaphorePermit,
    config: ListenerConfig,
    service: S,
    stop: CancellationToken,
) where
    S: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
    F: Future<Output = Response<B>> + Send + 'static,
    B: HttpBody + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let open = metrics::gauge!("switchboard_http_connections", "listener" => config.name);
    open.increment(1.0);
    let (name, body_timeout) = (config.name, config.limits.http_body_timeout);
    let per_request = service_fn(move |request: Request<Incoming>| {
        let response = with_body_deadline(name, body_timeout, service(request));
        async move { Ok::<_, std::convert::Infallible>(response.await) }
    });
    // With upgrades, the connection future ends once a request is upgraded
    // and hands the socket on: the slot and the deadlines end with it.
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(config.limits.http_header_timeout)
        .serve_connection(TokioIo::new(stream), per_request)
        .with_upgrades();
    tokio::pin!(connection);
    let ended = tokio::select! {
        ended = &mut connection => Some(ended),
        () = stop.cancelled() => {
            connection.as_mut().graceful_shutdown();
            tokio::time::timeout(config.grace, connection).await.ok()
        }
    };
    if let Some(Err(error)) = ended
        && error.is_timeout()
    {
        metrics::counter!("switchboard_http_header_timeouts_total", "listener" => name)
            .increment(1);
    }
    open.decrement(1.0);
    drop(slot);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refusal_is_a_whole_response() {
        let text = std::str::from_utf8(FULL).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 503 "));
        assert!(head.contains(&format!("content-length: {}", body.len())));
    }

    #[test]
    fn defaults_match_the_spec() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            http: HttpSettings,
        }
        let cli = <Cli as clap::Parser>::try_parse_from(["x"]).unwrap();
        let defaults = HttpSettings::default();
        assert_eq!(cli.http.http_header_timeout, Duration::from_secs(10));
        assert_eq!(cli.http.http_body_timeout, Duration::from_secs(30));
        assert_eq!(cli.http.max_http_connections, 10_000);
        assert_eq!(defaults.http_header_timeout, cli.http.http_header_timeout);
        assert_eq!(defaults.http_body_timeout, cli.http.http_body_timeout);
        assert_eq!(defaults.max_http_connections, cli.http.max_http_connections);
    }
}
