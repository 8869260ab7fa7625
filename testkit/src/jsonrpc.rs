//! JSON-RPC dialect clients for tests: sockets of each kind, calls,
//! pushes and the server API.

use std::net::SocketAddr;

use serde_json::{Value, json};

use crate::WsClient;
use crate::http::{self, Reply};
use crate::switchboard::{API_KEY, app_token, device_token, token};

pub async fn user_socket(
    edge: SocketAddr,
    user: &str,
    tenant: &str,
    conv: Option<&str>,
) -> WsClient {
    ready(user_socket_unchecked(edge, user, tenant, conv).await).await
}

/// A user socket, without waiting for its open work: for connects whose
/// first frame is not the pong (a refused `convId`).
pub async fn user_socket_unchecked(
    edge: SocketAddr,
    user: &str,
    tenant: &str,
    conv: Option<&str>,
) -> WsClient {
    let token = token(user, "user", tenant, None);
    let mut url = format!("ws://{edge}/v3/wss?token={token}");
    if let Some(conv) = conv {
        url.push_str(&format!("&convId={conv}"));
    }
    WsClient::open(&url).await
}

/// A user socket connecting with a `convId` it may not bind: the first
/// frame is the 4401 refusal (null id), then the socket works, unbound.
pub async fn user_socket_refused_conv(
    edge: SocketAddr,
    user: &str,
    tenant: &str,
    conv: &str,
) -> WsClient {
    let mut ws = user_socket_unchecked(edge, user, tenant, Some(conv)).await;
    let refusal = ws.recv_json().await;
    assert_error(&refusal, 4401, &Value::Null);
    ready(ws).await
}

pub async fn app_socket(edge: SocketAddr, app: &str, tool: &str, tenant: &str) -> WsClient {
    let url = format!(
        "ws://{edge}/v3/wss/{app}/{tool}?token={}",
        app_token(app, tenant)
    );
    ready(WsClient::open(&url).await).await
}

pub async fn device_socket(
    edge: SocketAddr,
    hd: &str,
    owner: Option<&str>,
    tenant: &str,
) -> WsClient {
    let url = format!(
        "ws://{edge}/v3/wss/{hd}?token={}",
        device_token(hd, owner, tenant)
    );
    ready(WsClient::open(&url).await).await
}

/// A ping round trip: the socket's open work (subscriptions, bindings) is
/// done once the pong arrives.
pub async fn ready(mut ws: WsClient) -> WsClient {
    ws.send_text("ping").await;
    assert_eq!(ws.recv_text().await, "pong");
    ws
}

pub async fn api_post(api: SocketAddr, path: &str, tenant: &str, body: &Value) -> Reply {
    let auth = format!("Bearer {API_KEY}");
    http::post_json(
        api,
        path,
        &[("authorization", &auth), ("x-tenant", tenant)],
        body,
    )
    .await
}

/// `PUT /api/v1/conversations/{conv}` with the API key for `tenant`.
pub async fn api_put_owner(api: SocketAddr, conv: &str, tenant: &str, body: &Value) -> Reply {
    let auth = format!("Bearer {API_KEY}");
    http::put_json(
        api,
        &format!("/api/v1/conversations/{conv}"),
        &[("authorization", &auth), ("x-tenant", tenant)],
        body,
    )
    .await
}

/// A POST with a `kind=service` token of `tenant` (the tenant it acts for).
pub async fn service_post(api: SocketAddr, path: &str, tenant: &str, body: &Value) -> Reply {
    let auth = format!("Bearer {}", token("backend", "service", tenant, None));
    http::post_json(api, path, &[("authorization", &auth)], body).await
}

pub async fn call(ws: &mut WsClient, method: &str, params: Value, id: Value) -> Value {
    ws.send_json(&json!({"jsonrpc": "2.0", "method": method, "params": params, "id": id}))
        .await;
    ws.recv_json().await
}

pub fn assert_ok(reply: &Value, id: &Value) -> Value {
    assert_eq!(reply["jsonrpc"], "2.0", "{reply}");
    assert_eq!(reply["id"], *id, "{reply}");
    assert_eq!(reply["result"]["code"], 200, "{reply}");
    assert_eq!(reply["result"]["message"], "成功", "{reply}");
    reply["result"]["data"].clone()
}

pub fn assert_error(reply: &Value, code: i64, id: &Value) {
    assert_eq!(reply["jsonrpc"], "2.0", "{reply}");
    assert_eq!(reply["error"]["code"], code, "{reply}");
    assert!(reply["error"]["message"].is_string(), "{reply}");
    assert!(reply["error"]["data"].is_string(), "{reply}");
    assert_eq!(reply["id"], *id, "{reply}");
}

/// Reads the next `_notify`, checking its shape.
pub async fn notified(ws: &mut WsClient) -> (String, Value) {
    let frame = ws.recv_json().await;
    assert_eq!(frame["jsonrpc"], "2.0", "{frame}");
    assert_eq!(frame["method"], "_notify", "{frame}");
    assert!(frame.get("id").is_none(), "{frame}");
    let kind = frame["params"]["type"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    (kind, frame["params"]["data"].clone())
}

/// Numbers sentinels so no two are alike.
static SENTINELS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn next_sentinel() -> String {
    let n = SENTINELS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("sentinel-{n}")
}

/// Proves that app socket `ws` of (`tenant`, `app`) got nothing since it
/// was last read: it subscribes to a channel of its own, which must be
/// answered first; a message published there through the server API (the
/// path a leak would take) must then be the next thing it receives.
pub async fn app_sentinel(api: SocketAddr, tenant: &str, app: &str, ws: &mut WsClient) {
    let channel = next_sentinel();
    let id = json!(channel);
    let answer = call(ws, "subscribe", json!({"channel": channel}), id.clone()).await;
    assert_eq!(
        answer["id"], id,
        "received something before its sentinel: {answer}"
    );
    let reply = api_post(
        api,
        &format!("/api/v1/apps/{app}/publish"),
        tenant,
        &json!({"channel": channel, "message": "sentinel"}),
    )
    .await;
    assert_eq!(reply.json(), json!({"receivers": 1}));
    let (kind, data) = notified(ws).await;
    assert_eq!(
        (kind.as_str(), &data["channel"]),
        ("message", &json!(channel)),
        "received something before its sentinel: {data}"
    );
}

/// Proves that `ws` got nothing since it was last read: a `_notify` sent
/// through the server API to `to` (`{"user": …}`, `{"conv": …}`, or
/// `{"device": …}` of `tenant`, which must reach `ws`) travels the path a
/// leak would take and must be the next thing it gets.
pub async fn notify_sentinel(api: SocketAddr, tenant: &str, to: Value, ws: &mut WsClient) {
    let kind = next_sentinel();
    let reply = api_post(
        api,
        "/api/v1/notify",
        tenant,
        &json!({"to": to, "type": kind}),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.json());
    let (got, data) = notified(ws).await;
    assert_eq!(got, kind, "received something before its sentinel: {data}");
}
