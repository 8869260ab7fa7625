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

/// `frame` (a gateway-made `_notify`, whose `params` object comes last)
/// with `fields` (`,"name":value…`, JSON) added at the end of its params;
/// anything else is answered as it is.
pub fn with_params(frame: &Bytes, fields: &str) -> Bytes {
    if !frame.starts_with(br#"{"jsonrpc":"2.0","method":"_notify","params":{"#) {
        return frame.clone();
    }
    let Some(body) = frame.strip_suffix(b"}}") else {
        return frame.clone();
    };
    let mut out = Vec::with_capacity(frame.len() + fields.len());
    out.extend_from_slice(body);
    out.extend_from_slice(fields.as_bytes());
    out.extend_from_slice(b"}}");
    Bytes::from(out)
}

/// `frame` naming the stream it belongs to (`"stream":"user"`, …), so a
/// socket that gets pushes of several streams knows which position each
/// `epoch`/`offset` is.
pub fn with_stream(frame: &Bytes, stream: &str) -> Bytes {
    with_params(frame, &format!(r#","stream":"{stream}""#))
}

/// `frame` with its place in its stream's history (`epoch`, `offset`).
pub fn with_position(frame: &Bytes, epoch: &str, offset: u64) -> Bytes {
    let epoch = serde_json::to_string(epoch).unwrap_or_default();
    with_params(frame, &format!(r#","epoch":{epoch},"offset":{offset}"#))
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

/// Escapes `%` and `/` in a topic name part, so the parts of a name made
/// of several ids can always be told apart, whatever they contain.
fn name_part(id: &str) -> std::borrow::Cow<'_, str> {
    if !id.bytes().any(|b| matches!(b, b'%' | b'/')) {
        return std::borrow::Cow::Borrowed(id);
    }
    let mut out = String::with_capacity(id.len() + 8);
    for c in id.chars() {
        match c {
            '%' => out.push_str("%25"),
            '/' => out.push_str("%2F"),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// The topic name of an app channel: `{appId}/{channel}`, the app id
/// escaped so that no (app, channel) pair shares a name with another.
pub fn channel_topic_name(app: &str, channel: &str) -> String {
    format!("{}/{channel}", name_part(app))
}

/// The topic name of an app tool's sockets: `{appId}/{toolId}`, escaped
/// like [`channel_topic_name`].
pub fn tool_topic_name(app: &str, tool: &str) -> String {
    format!("{}/{tool}", name_part(app))
}

/// Longest call id taken from a socket; the gateway's own are far shorter
/// (prefix, 32 hex digits, `@`, a process id of at most 128 bytes).
pub const MAX_CALL_ID_BYTES: usize = 192;

/// A tool call id: 128 random bits, so nobody can guess a call they were
/// not sent, and the router that waits for the answer, so any router can
/// relay the answer to it.
pub fn call_id(random: u128, router_id: &str) -> String {
    format!("sb-{random:032x}@{router_id}")
}

/// The router named by a call id, when it is one the gateway made.
pub fn call_router(call_id: &str) -> Option<&str> {
    if call_id.len() > MAX_CALL_ID_BYTES {
        return None;
    }
    let rest = call_id.strip_prefix("sb-")?;
    let (random, router) = rest.split_once('@')?;
    (random.len() == 32 && random.bytes().all(|b| b.is_ascii_hexdigit()) && !router.is_empty())
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
        assert_eq!(id, "sb-00000000000000000000000000000007@router-a");
        assert_eq!(call_router(&id), Some("router-a"));
        let random = call_id(u128::MAX, "r");
        assert_eq!(call_router(&random), Some("r"));
        let too_long = call_id(1, &"r".repeat(MAX_CALL_ID_BYTES));
        let short = format!("sb-{}@r", "0".repeat(31));
        for foreign in [
            "7@router-a",
            "sb-@r",
            "sb-7@router-a",
            short.as_str(),
            "sb-0000000000000000000000000000000g@r",
            "sb-00000000000000000000000000000007@",
            "set123",
            "",
            too_long.as_str(),
        ] {
            assert_eq!(call_router(foreign), None, "{foreign}");
        }
    }

    #[test]
    fn names_of_several_ids_never_collide() {
        let ids = [
            "", "a", "a/b", "b", "a%2Fb", "%", "/", "%25", "a/", "/b", "a b", "{t}", ":",
        ];
        let mut seen = std::collections::HashMap::new();
        for app in ids {
            for second in ids {
                for name in [
                    channel_topic_name(app, second),
                    tool_topic_name(app, second),
                ] {
                    if let Some(earlier) = seen.insert(name.clone(), (app, second)) {
                        assert_eq!(earlier, (app, second), "{name} is shared");
                    }
                }
            }
        }
        assert_eq!(
            channel_topic_name("shop", "news"),
            "shop/news",
            "plain ids read as before"
        );
    }

    #[test]
    fn positions_and_streams_go_into_the_params() {
        let frame = with_stream(&notify_frame("t", &json!({"a": "}}"})), "conv");
        let framed = with_position(&frame, "ab", 7);
        let value: Value = serde_json::from_slice(&framed).unwrap();
        assert_eq!(
            value,
            json!({"jsonrpc": "2.0", "method": "_notify", "params": {
                "type": "t", "data": {"a": "}}"}, "stream": "conv", "epoch": "ab", "offset": 7}})
        );
        // Anything but a gateway-made push goes out as it is.
        for other in [
            &b"{\"jsonrpc\":\"2.0\",\"result\":{}}"[..],
            b"pong",
            b"",
            b"{}}",
        ] {
            let other = Bytes::copy_from_slice(other);
            assert_eq!(with_position(&other, "e", 1), other);
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
