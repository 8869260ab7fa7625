//! Pieces of the JSON-RPC dialect that edges and routers share: the frames
//! the gateway writes, topic names and id rules.

use prost::bytes::Bytes;
use serde_json::{Value, json};

/// User, device, conversation, app and tool ids: `[A-Za-z0-9_.:@-]{1,128}`.
/// Digits alone are fine (conversation ids often are numbers); braces,
/// slashes and spaces are not, so ids never break a key or a topic name.
pub fn is_valid_ref(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'@' | b'-'))
}

/// App keys and channel names: any string of 1 to 256 bytes.
pub const MAX_KEY_BYTES: usize = 256;

pub fn is_valid_key(key: &str) -> bool {
    !key.is_empty() && key.len() <= MAX_KEY_BYTES
}

/// `{"jsonrpc":"2.0","method":"_notify","params":{"type":…,"data":…}}`.
pub fn notify_frame(kind: &str, data: &Value) -> Bytes {
    let frame = json!({
        "jsonrpc": "2.0",
        "method": "_notify",
        "params": {"type": kind, "data": data},
    });
    Bytes::from(frame.to_string())
}

/// The frame of one streaming chunk.
pub fn stream_frame(stream_id: &str, seq: u64, delta: &Value, done: bool) -> Bytes {
    notify_frame(
        "stream",
        &json!({"streamId": stream_id, "seq": seq, "delta": delta, "done": done}),
    )
}

/// A message on an app channel, as subscribers get it.
pub fn channel_message_frame(channel: &str, message: &Value) -> Bytes {
    notify_frame("message", &json!({"channel": channel, "message": message}))
}

/// The topic name of an app channel.
pub fn channel_topic_name(app: &str, channel: &str) -> String {
    format!("{app}/{channel}")
}

/// The topic name of an app tool's sockets.
pub fn tool_topic_name(app: &str, tool: &str) -> String {
    format!("{app}/{tool}")
}

/// A tool call id: unique per router, and naming the router that waits
/// for the answer, so any router can relay the answer to it.
pub fn call_id(sequence: u64, router_id: &str) -> String {
    format!("sb-{sequence}@{router_id}")
}

/// The router named by a call id, when it is one the gateway made.
pub fn call_router(call_id: &str) -> Option<&str> {
    let rest = call_id.strip_prefix("sb-")?;
    let (sequence, router) = rest.split_once('@')?;
    (!sequence.is_empty() && sequence.bytes().all(|b| b.is_ascii_digit()) && !router.is_empty())
        .then_some(router)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        for ok in ["42", "conv-1", "a.b:c@d_e", &"x".repeat(128)] {
            assert!(is_valid_ref(ok), "{ok}");
        }
        for bad in ["", "a/b", "{t}", "a b", &"x".repeat(129), "ü"] {
            assert!(!is_valid_ref(bad), "{bad}");
        }
    }

    #[test]
    fn call_ids_name_their_router() {
        let id = call_id(7, "router-a");
        assert_eq!(id, "sb-7@router-a");
        assert_eq!(call_router(&id), Some("router-a"));
        for foreign in ["7@router-a", "sb-@r", "sb-x@r", "sb-1@", "set123", ""] {
            assert_eq!(call_router(foreign), None, "{foreign}");
        }
    }

    #[test]
    fn notify_frame_shape() {
        let frame: Value = serde_json::from_slice(&notify_frame("t", &json!({"a": 1}))).unwrap();
        assert_eq!(
            frame,
            json!({"jsonrpc": "2.0", "method": "_notify", "params": {"type": "t", "data": {"a": 1}}})
        );
    }
}
