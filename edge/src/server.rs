//! The edge's HTTP/1.1 listener: routes upgrade requests to the dialect
//! that owns the path, refuses what its dialect refuses, serves the IM
//! login endpoints ([`crate::im_login`]) and the playground page at `/`
//! (static files under `src/playground/`, built into the binary).
//!
//! - [`refusal`]: every HTTP refusal the edge answers, and how it looks.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http::{Method, StatusCode};
use hyper::body::Incoming;
use hyper::{Request, Response};
use switchboard_common::auth::{AuthError, Verifier, token_from_request};
use switchboard_common::http::{Body, bytes_response, query_map};
use switchboard_common::http_server::{self, ListenerConfig};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::connection::{self, Accepted, SocketEnv};
use crate::dialect::{self, Accept, UpgradeRequest};
use crate::im_login;

pub mod refusal;
pub use refusal::Refusal;

/// The playground: one page and its script and style sheet, no build step
/// and no outside assets, so it works offline.
const PLAYGROUND_HTML: &str = include_str!("playground/index.html");
const PLAYGROUND_JS: &str = include_str!("playground/playground.js");
const PLAYGROUND_CSS: &str = include_str!("playground/playground.css");
/// Where the page learns the IM socket route (configurable).
const IM_PATH_MARK: &str = "{{im_path}}";

/// Everything the listener needs.
pub struct EdgeServer {
    pub env: Arc<SocketEnv>,
    pub verifier: Arc<Verifier>,
    pub allow_anonymous: bool,
    /// The IM socket route.
    pub im_path: String,
    /// The conformance echo route, when configured.
    pub echo_path: Option<String>,
    /// Socket tasks, awaited by the drain.
    pub sockets: TaskTracker,
    next_conn: AtomicU64,
    /// This process's start (ms, base 36): with the edge id and the
    /// connection number it makes connect ids unique across restarts.
    epoch: String,
}

impl EdgeServer {
    pub fn new(
        env: Arc<SocketEnv>,
        verifier: Arc<Verifier>,
        allow_anonymous: bool,
        im_path: String,
        echo_path: Option<String>,
    ) -> Arc<Self> {
        Arc::new(Self {
            env,
            verifier,
            allow_anonymous,
            im_path,
            echo_path,
            sockets: TaskTracker::new(),
            next_conn: AtomicU64::new(1),
            epoch: base36(switchboard_common::clock::now_ms()),
        })
    }
}

/// Accepts connections until `stop` fires, under the HTTP limits of
/// `config` ([`switchboard_common::http_server`]); HTTP requests in flight
/// are finished gracefully, upgraded sockets are left to the drain.
pub async fn serve(
    listener: TcpListener,
    config: ListenerConfig,
    server: Arc<EdgeServer>,
    stop: CancellationToken,
) {
    let service = move |request: Request<Incoming>| {
        let server = server.clone();
        async move {
            let login = im_login::client_name_segment(request.uri().path()).map(str::to_owned);
            match login {
                Some(name) => im_login::handle(&server, request, &name).await,
                None => handle(&server, request),
            }
        }
    };
    http_server::serve(listener, config, service, stop).await;
}

/// The playground's files by path; `None` for any other request.
fn playground(server: &EdgeServer, method: &Method, path: &str) -> Option<Response<Body>> {
    if method != Method::GET {
        return None;
    }
    let (content_type, body) = match path {
        "/" => (
            "text/html; charset=utf-8",
            Bytes::from(PLAYGROUND_HTML.replace(IM_PATH_MARK, &html_attribute(&server.im_path))),
        ),
        "/playground/playground.js" => (
            "text/javascript; charset=utf-8",
            Bytes::from_static(PLAYGROUND_JS.as_bytes()),
        ),
        "/playground/playground.css" => (
            "text/css; charset=utf-8",
            Bytes::from_static(PLAYGROUND_CSS.as_bytes()),
        ),
        _ => return None,
    };
    Some(bytes_response(StatusCode::OK, content_type, body))
}

/// Group socket routes (V3 and V2), which may allow anonymous clients.
fn is_group_path(path: &str) -> bool {
    path.starts_with("/v3/ws/group/") || path.starts_with("/ws/group/")
}

/// `value` safe inside a double-quoted HTML attribute.
fn html_attribute(value: &str) -> String {
    value
        .replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn handle(server: &Arc<EdgeServer>, mut request: Request<Incoming>) -> Response<Body> {
    let path = request.uri().path().to_owned();
    if let Some(page) = playground(server, request.method(), &path) {
        return page;
    }
    let query: HashMap<String, String> = request.uri().query().map(query_map).unwrap_or_default();
    let auth = match token_from_request(&request) {
        Some(token) => server.verifier.verify(&token),
        None => Err(AuthError::Missing),
    };
    // A browser sees only close code 1006 when an upgrade is refused, so
    // the playground asks again with a plain GET: a token the route needs
    // and did not get is then explained in the body, whatever the dialect
    // does on a real upgrade (JSON-RPC closes with 4401 after it).
    let takes_no_token =
        Some(path.as_str()) == server.echo_path.as_deref() || path == server.im_path;
    let token_refusal = match &auth {
        _ if takes_no_token => None,
        Err(AuthError::Missing) if server.allow_anonymous && is_group_path(&path) => None,
        Err(e) => Some(e.to_string()),
        Ok(_) => None,
    };
    let conn_id = server.next_conn.fetch_add(1, Ordering::Relaxed);
    let connect_id = format!(
        "{}-{}-{conn_id}",
        server.env.upstream.edge_id(),
        server.epoch
    );
    let upgrade = UpgradeRequest {
        path: &path,
        query,
        headers: request.headers(),
        auth,
        allow_anonymous: server.allow_anonymous,
        connect_id: connect_id.clone(),
        max_subscriptions: server.env.limits.max_subscriptions,
        im_path: &server.im_path,
        echo_path: server.echo_path.as_deref(),
    };
    let Some(accept) = dialect::accept(&upgrade) else {
        if path.starts_with("/api/v1/") {
            return Refusal::ServerApiElsewhere.into_response();
        }
        return Refusal::NoRoute.into_response();
    };
    let (dialect, mut session, tenant, principal, trace_id) = match accept {
        Accept::Refuse(refusal) => {
            metrics::counter!("switchboard_edge_rejected_upgrades_total", "status" => refusal.status().as_u16().to_string())
                .increment(1);
            return refusal.into_response();
        }
        Accept::Session {
            dialect,
            session,
            tenant,
            principal,
            trace_id,
        } => (dialect, session, tenant, principal, trace_id),
    };
    if server.env.draining.is_cancelled() {
        return Refusal::Draining.into_response();
    }
    if !fastwebsockets::upgrade::is_upgrade_request(&request) {
        if let Some(reason) = token_refusal {
            return Refusal::TokenRefused(reason).into_response();
        }
        return Refusal::UpgradeRequired.into_response();
    }
    let agreed = if server.env.limits.deflate {
        let offers = request
            .headers()
            .get_all(http::header::SEC_WEBSOCKET_EXTENSIONS)
            .iter()
            .filter_map(|v| v.to_str().ok());
        crate::deflate::negotiate(offers, server.env.limits.deflate_threshold)
    } else {
        None
    };
    let (mut response, upgraded) = match fastwebsockets::upgrade::upgrade(&mut request) {
        Ok(pair) => pair,
        Err(e) => return Refusal::BadUpgrade(e.to_string()).into_response(),
    };
    let deflate = agreed.and_then(|agreed| {
        let value = http::HeaderValue::from_str(&agreed.response).ok()?;
        response
            .headers_mut()
            .insert(http::header::SEC_WEBSOCKET_EXTENSIONS, value);
        Some(agreed.deflate)
    });
    // A socket that has yet to authenticate takes a slot under the edge's
    // cap, or is closed with 1008 right after its upgrade.
    let mut close_at_once = None;
    if session.unauthenticated() {
        match server.env.unauthenticated.try_hold() {
            Some(slot) => session.hold_until_authenticated(slot),
            None => close_at_once = Some((1008, "too many unauthenticated sockets")),
        }
    }
    let env = server.env.clone();
    // Every log line about this connection names it (and its trace).
    let span = tracing::info_span!(
        "socket",
        connect_id = %connect_id,
        trace_id = trace_id.as_deref().unwrap_or(""),
        dialect = dialect.label(),
    );
    server.sockets.spawn(tracing::Instrument::instrument(
        async move {
            match upgraded.await {
                Ok(ws) => {
                    let accepted = Accepted {
                        conn_id,
                        dialect,
                        session,
                        tenant,
                        principal,
                        close_at_once,
                        deflate,
                    };
                    connection::run(env, ws.into_inner().into_inner(), accepted).await;
                }
                Err(e) => tracing::debug!(error = %e, "upgrade failed"),
            }
        },
        span,
    ));
    let (parts, _) = response.into_parts();
    Response::from_parts(parts, Body::new(Bytes::new()))
}

fn base36(mut n: u64) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn base36() {
        assert_eq!(super::base36(0), "0");
        assert_eq!(super::base36(35), "z");
        assert_eq!(super::base36(36), "10");
        assert_eq!(super::base36(1_795_248_930_123), "mwq4uzwr");
    }
}
