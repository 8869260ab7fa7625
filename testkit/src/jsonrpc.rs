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
    let token = token(user, "user", tenant, None);
    let mut url = format!("ws://{edge}/v3/wss?token={token}");
    if let Some(conv) = conv {
        url.push_str(&format!("&convId={conv}"));
    }
    ready(WsClient::open(&url).await).await
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
