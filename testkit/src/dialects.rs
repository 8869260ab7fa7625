//! One authenticated socket per dialect, with a probe each dialect
//! answers without side effects: for rules every dialect shares (frame
//! limits, drain), played once per dialect.

use std::net::SocketAddr;

use serde_json::{Value, json};

use crate::WsClient;
use crate::im::ImClient;
use crate::jsonrpc;
use crate::switchboard::{self, token};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Group,
    JsonRpc,
    Iot,
    Im,
}

pub const ALL: [Dialect; 4] = [Dialect::Group, Dialect::JsonRpc, Dialect::Iot, Dialect::Im];

impl Dialect {
    /// An authenticated socket of this dialect for user `user`, ready.
    pub async fn open(self, edge: SocketAddr, user: &str) -> WsClient {
        match self {
            Dialect::Group => switchboard::join_group(edge, "t1", "room", user, None).await,
            Dialect::JsonRpc => jsonrpc::user_socket(edge, user, "t1", None).await,
            Dialect::Iot => {
                let token = token(user, "user", "t1", None);
                let url = format!(
                    "ws://{edge}/api/v1/system/common/websocket/connect?app-code=c&token={token}"
                );
                let mut ws = WsClient::open(&url).await;
                assert_eq!(ws.recv_json().await["code"], 200, "IoT handshake");
                ws
            }
            Dialect::Im => ImClient::connect(edge, "t1", user, None).await.ws,
        }
    }

    /// A small valid request tagged `tag`, answered without side effects.
    pub fn probe(self, tag: &str) -> String {
        match self {
            Dialect::Group => json!({"msg_type":"msg","target":"echo","msg":tag}).to_string(),
            Dialect::JsonRpc => json!({"jsonrpc":"2.0","method":"no.such","id":tag}).to_string(),
            Dialect::Iot => json!({"type":"up.ping","handler":{"tag":tag}}).to_string(),
            // An unknown type: answered with a 9001 for its id, stores nothing.
            Dialect::Im => {
                json!({"id":tag,"type":4242,"isSystem":false,"from":"u","to":"u","body":"x"})
                    .to_string()
            }
        }
    }

    /// Whether `reply` answers the probe tagged `tag`.
    pub fn answers(self, reply: &Value, tag: &str) -> bool {
        match self {
            Dialect::Group => reply["msg"] == tag && reply["target"] == "echo",
            Dialect::JsonRpc => reply["id"] == tag,
            Dialect::Iot => reply["type"] == "down.pong" && reply["handler"]["tag"] == tag,
            Dialect::Im => reply["id"] == tag && reply["type"] == 9001,
        }
    }

    /// Sends the probe and waits for its answer, passing over pushes.
    pub async fn round_trip(self, ws: &mut WsClient, tag: &str) {
        ws.send_text(&self.probe(tag)).await;
        ws.recv_json_until(|m| self.answers(m, tag)).await;
    }
}
