//! What abusers put on the wire: messages just over the edge's size limit
//! (whole, or as fragments each under it), invalid JSON, invalid UTF-8,
//! binary frames, and JSON-RPC batches at and over the 50-call cap.

use serde_json::json;

/// The edge's default inbound message limit (`00-common.md`, "Frames").
pub const MESSAGE_LIMIT: usize = 64 * 1024;

/// Calls the edge allows in one JSON-RPC batch.
pub const MAX_BATCH: usize = 50;

/// A group-dialect message a little over the limit: valid JSON, so only
/// its size is wrong.
pub fn oversized() -> Vec<u8> {
    let padding = "x".repeat(MESSAGE_LIMIT + 1024);
    json!({"msg_type":"msg","target":"echo","payload":{"pad":padding}})
        .to_string()
        .into_bytes()
}

/// The oversized message cut into fragments of `pieces`: each fragment
/// is under the limit, the message they make is not.
pub fn fragments(pieces: usize) -> Vec<Vec<u8>> {
    let whole = oversized();
    let size = whole.len().div_ceil(pieces.max(1));
    whole.chunks(size).map(<[u8]>::to_vec).collect()
}

/// A valid message of about `size` bytes that the edge sends back to
/// its sender only.
pub fn echo(size: usize) -> String {
    let padding = "x".repeat(size.saturating_sub(60));
    json!({"msg_type":"msg","target":"echo","payload":{"pad":padding}}).to_string()
}

/// Not JSON at all: the dialect's error reply, the socket stays open.
pub fn invalid_json() -> Vec<u8> {
    br#"{"msg_type":"msg","target":"echo","payload":"#.to_vec()
}

/// A text frame whose bytes are not UTF-8 (0xff never is).
pub fn invalid_utf8() -> Vec<u8> {
    let mut text = br#"{"msg_type":"msg","target":"echo","payload":{"pad":""#.to_vec();
    text.extend_from_slice(&[0xff, 0xfe, 0xfd]);
    text.extend_from_slice(br#""}}"#);
    text
}

/// Bytes for a binary frame, which no dialect takes.
pub fn binary() -> Vec<u8> {
    vec![0x00, 0x01, 0x02, 0x03]
}

/// A JSON-RPC batch of `calls` user-socket calls, ids `{tag}-{n}`; each
/// call rebinds the socket's conversation, so it is real work.
pub fn batch(calls: usize, tag: &str) -> String {
    let calls: Vec<serde_json::Value> = (0..calls)
        .map(|n| {
            json!({"jsonrpc":"2.0","method":"hardwares.switchConvId",
                "params":{"convId":format!("conv-{tag}")},"id":format!("{tag}-{n}")})
        })
        .collect();
    serde_json::Value::Array(calls).to_string()
}

/// Error and other answers in one JSON-RPC reply frame (a batch answer
/// counts each element); a frame that is not JSON counts as one error.
pub fn rpc_answers(text: &[u8]) -> (u64, u64) {
    if text == b"pong" {
        return (0, 1);
    }
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(text) else {
        return (1, 0);
    };
    let is_error = |v: &serde_json::Value| v.get("error").is_some();
    match value.as_array() {
        Some(items) => {
            let errors = items.iter().filter(|v| is_error(v)).count() as u64;
            (errors, items.len() as u64 - errors)
        }
        None if is_error(&value) => (1, 0),
        None => (0, 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversized_is_over_the_limit_and_its_fragments_under_it() {
        let whole = oversized();
        assert!(whole.len() > MESSAGE_LIMIT);
        assert!(serde_json::from_slice::<serde_json::Value>(&whole).is_ok());
        let parts = fragments(3);
        assert_eq!(parts.len(), 3);
        assert!(parts.iter().all(|p| p.len() < MESSAGE_LIMIT));
        assert_eq!(parts.concat(), whole);
    }

    #[test]
    fn echoes_are_about_the_size_asked_for() {
        let e = echo(32 * 1024);
        assert!(e.len().abs_diff(32 * 1024) < 16, "{}", e.len());
        assert!(serde_json::from_str::<serde_json::Value>(&e).is_ok());
    }

    #[test]
    fn malformed_input_is_what_it_says() {
        assert!(serde_json::from_slice::<serde_json::Value>(&invalid_json()).is_err());
        assert!(std::str::from_utf8(&invalid_json()).is_ok());
        assert!(std::str::from_utf8(&invalid_utf8()).is_err());
    }

    #[test]
    fn batches_hold_the_calls_asked_for() {
        let b: serde_json::Value = serde_json::from_str(&batch(MAX_BATCH + 1, "a1")).unwrap();
        let calls = b.as_array().unwrap();
        assert_eq!(calls.len(), 51);
        assert_eq!(calls[50]["id"], "a1-50");
        assert_eq!(calls[0]["method"], "hardwares.switchConvId");
    }

    #[test]
    fn answers_are_counted_per_call() {
        let answer = br#"[{"jsonrpc":"2.0","result":{},"id":"a"},{"jsonrpc":"2.0","error":{"code":4000},"id":"b"}]"#;
        assert_eq!(rpc_answers(answer), (1, 1));
        assert_eq!(
            rpc_answers(br#"{"jsonrpc":"2.0","error":{"code":-32600},"id":null}"#),
            (1, 0)
        );
        assert_eq!(rpc_answers(b"pong"), (0, 1));
        assert_eq!(rpc_answers(b"nonsense"), (1, 0));
    }
}
