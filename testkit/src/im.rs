//! The IM dialect for tests: login over HTTP, sockets that register,
//! message builders and send-status readers.

use std::net::SocketAddr;

use serde_json::{Value, json};

use crate::http::{self, Reply};
use crate::switchboard::token;
use crate::ws::WsClient;

/// Back-office login route prefix (the client name follows).
pub const LOGIN: &str = "/api/websocket/client/login";
/// App login route prefix.
pub const APP_LOGIN: &str = "/app/websocket/client/login";
/// The IM socket route by default.
pub const SOCKET: &str = "/websocket";

/// `GET {prefix}/{client_name}?token=…` on the edge.
pub async fn login(edge: SocketAddr, prefix: &str, client_name: &str, token: &str) -> Reply {
    http::get(edge, &format!("{prefix}/{client_name}?token={token}"), &[]).await
}

/// Logs `user` of `tenant` in and returns the sessionId.
pub async fn session_id(edge: SocketAddr, tenant: &str, user: &str, scope: Option<&str>) -> String {
    let reply = login(
        edge,
        LOGIN,
        "test-client",
        &token(user, "user", tenant, scope),
    )
    .await;
    assert_eq!(reply.status, 200, "login of {user}: {:?}", reply.body);
    reply.json()["sessionId"]
        .as_str()
        .expect("a sessionId")
        .to_owned()
}

/// An IM message.
pub fn message(id: &str, kind: i64, from: &str, to: &str, body: &str) -> Value {
    json!({"id": id, "type": kind, "isSystem": false, "from": from, "to": to, "body": body})
}

/// A 2001 text message.
pub fn text(id: &str, from: &str, to: &str, body: &str) -> Value {
    message(id, 2001, from, to, body)
}

/// A register message (1000) carrying `session_id`.
pub fn register(id: &str, from: &str, session_id: &str) -> Value {
    let body = json!({ "sessionId": session_id }).to_string();
    message(id, 1000, from, "SYSTEM", &body)
}

/// A 9101 receipt for message `id` from `sender`.
pub fn receipt(id: &str, from: &str, sender: &str) -> Value {
    let body = json!({"code": 200, "status": "SUCCESS", "msg": "received"}).to_string();
    message(id, 9101, from, sender, &body)
}

/// A NoticeBody as the string a notice carries.
pub fn notice_body(title: &str, msg: &str, target: Option<&str>) -> String {
    let mut body = json!({ "title": title, "msg": msg });
    if let Some(target) = target {
        body["target"] = json!(target);
    }
    body.to_string()
}

/// The StatusBody of a 9001 or 9101 message: (code, status).
pub fn status_of(message: &Value) -> (u64, String) {
    let body: Value = message["body"]
        .as_str()
        .and_then(|b| serde_json::from_str(b).ok())
        .unwrap_or_else(|| panic!("no StatusBody in {message}"));
    (
        body["code"].as_u64().unwrap_or(0),
        body["status"].as_str().unwrap_or_default().to_owned(),
    )
}

/// Whether `message` is the 9001 answering `id`.
pub fn is_status_for(message: &Value, id: &str) -> bool {
    message["type"] == 9001 && message["id"] == id
}

/// A registered IM socket.
pub struct ImClient {
    pub ws: WsClient,
    pub user: String,
    pub session_id: String,
}

impl ImClient {
    /// Opens the IM socket at `path` without registering.
    pub async fn open(edge: SocketAddr, path: &str) -> WsClient {
        WsClient::open(&format!("ws://{edge}{path}")).await
    }

    /// Logs in, opens `/websocket` and registers, asserting 200.
    pub async fn connect(edge: SocketAddr, tenant: &str, user: &str, scope: Option<&str>) -> Self {
        let session_id = session_id(edge, tenant, user, scope).await;
        Self::with_session(edge, user, &session_id).await
    }

    /// Opens `/websocket` and registers with an existing session.
    pub async fn with_session(edge: SocketAddr, user: &str, session_id: &str) -> Self {
        let ws = Self::open(edge, SOCKET).await;
        let mut client = Self {
            ws,
            user: user.to_owned(),
            session_id: session_id.to_owned(),
        };
        let reply = client
            .request(&register("register-1", user, session_id))
            .await;
        assert_eq!(status_of(&reply).0, 200, "register {user}: {reply}");
        client
    }

    /// Sends `message` and returns the 9001 that answers its id, skipping
    /// anything else that arrives first.
    pub async fn request(&mut self, message: &Value) -> Value {
        let id = message["id"].as_str().unwrap_or_default().to_owned();
        self.ws.send_json(message).await;
        self.ws.recv_json_until(|m| is_status_for(m, &id)).await
    }

    /// Sends a text to `to` and asserts it was accepted.
    pub async fn send_text(&mut self, id: &str, to: &str, body: &str) {
        let user = self.user.clone();
        let reply = self.request(&text(id, &user, to, body)).await;
        assert_eq!(status_of(&reply), (200, "SUCCESS".to_owned()), "{reply}");
    }

    /// The next message that is not a send status.
    pub async fn recv_message(&mut self) -> Value {
        self.ws.recv_json_until(|m| m["type"] != 9001).await
    }
}
