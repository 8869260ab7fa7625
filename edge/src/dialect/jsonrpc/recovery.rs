//! Recovery on JSON-RPC sockets: the positions a socket presents, and the
//! frames that open a recovery.
//!
//! - user sockets: query `since_user=E:O`, `since_conv=E:O`;
//! - hardware sockets: query `since_device=E:O`, `since_conv=E:O`;
//! - app sockets: `subscribe` params `"since":{"epoch":E,"offset":O}`.
//!
//! Each stream asked for is answered first by a `_notify` of type
//! `recovery` (`{"stream":"user"|"conv"|"device"|"channel","recovered",
//! "missed","epoch","offset"}`, the offset the latest one), or, for a
//! `subscribe` with an id, by the call's result with the same fields; then
//! the missed pushes in offset order, then live ones. A position ahead of
//! the latest is a validation error (-32602): on the query, after which
//! the stream goes on live from the latest position; in `subscribe`, which
//! then subscribes nothing (the owner is asked where the history is before
//! the subscription goes out).

use std::collections::HashMap;

use bytes::Bytes;
use serde_json::{Value, json};
use switchboard_proto::Position;
use switchboard_proto::jsonrpc::notify_frame;

use super::wire::{self, Id, RpcError};
use crate::dialect::Recovery;
use crate::server::Refusal;

/// The streams a socket kind may ask for in its connect query, with the
/// query parameter of each.
pub(super) const USER_STREAMS: [(&str, &str); 2] = [("user", "since_user"), ("conv", "since_conv")];
pub(super) const HARDWARE_STREAMS: [(&str, &str); 2] =
    [("device", "since_device"), ("conv", "since_conv")];

/// Positions asked for in a connect query: `[own stream, conversation]`.
pub(super) type Since = [Option<Position>; 2];

/// The positions the query presents for `streams`; a parameter that is
/// not `epoch:offset` refuses the upgrade (400 naming it), as a bad
/// `convId` does.
pub(super) fn query_since(
    query: &HashMap<String, String>,
    streams: &[(&'static str, &'static str); 2],
) -> Result<Since, Refusal> {
    let mut since: Since = Default::default();
    for (slot, (_, field)) in since.iter_mut().zip(streams) {
        if let Some(text) = query.get(*field) {
            *slot = Some(Position::parse(text).ok_or(Refusal::InvalidPosition { field })?);
        }
    }
    Ok(since)
}

/// `"since":{"epoch":E,"offset":O}` of a `subscribe`, if given.
pub(super) fn param_since(
    params: &serde_json::Map<String, Value>,
) -> Result<Option<Position>, RpcError> {
    let bad = || {
        RpcError::InvalidParams(
            "since must be {\"epoch\": 1 to 64 letters and digits, \"offset\": an integer >= 0}"
                .to_owned(),
        )
    };
    let since = match params.get("since") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(since)) => since,
        Some(_) => return Err(bad()),
    };
    let (Some(Value::String(epoch)), Some(Value::Number(offset))) =
        (since.get("epoch"), since.get("offset"))
    else {
        return Err(bad());
    };
    let offset = offset.as_u64().ok_or_else(bad)?;
    if !Position::is_valid_epoch(epoch) {
        return Err(bad());
    }
    Ok(Some(Position {
        epoch: epoch.clone(),
        offset,
    }))
}

/// The recovery fields of an outcome; `Err` for a position ahead.
fn fields(stream: &str, outcome: Recovery<'_>) -> Result<Value, Position> {
    let (recovered, missed, latest) = match outcome {
        Recovery::Recovered { missed, latest } => (true, missed, Some(latest)),
        Recovery::Lost { latest } => (false, 0, Some(latest)),
        Recovery::Unavailable => (false, 0, None),
        Recovery::Ahead { latest } => return Err(latest.clone()),
    };
    Ok(json!({
        "stream": stream,
        "recovered": recovered,
        "missed": missed,
        "epoch": latest.map_or("", |p| p.epoch.as_str()),
        "offset": latest.map_or(0, |p| p.offset),
    }))
}

pub(super) fn ahead(field: &str, latest: &Position) -> RpcError {
    RpcError::InvalidParams(format!(
        "{field} is ahead of the latest position {}:{}",
        latest.epoch, latest.offset
    ))
}

/// The `_notify` that opens the recovery of `stream`, asked for by
/// `field`; a position ahead is an error with a null id (there is no call
/// to answer), the socket staying open.
pub(super) fn recovery_frame(stream: &str, field: &str, outcome: Recovery<'_>) -> Bytes {
    match fields(stream, outcome) {
        Ok(data) => notify_frame("recovery", &data),
        Err(latest) => wire::failure(&Id::null(), &ahead(field, &latest)),
    }
}

/// The answer to a `subscribe` with `since`: the channel and the recovery
/// fields as its result data, or -32602 for a position ahead.
pub(super) fn subscribe_answer(id: &Id, channel: &str, outcome: Recovery<'_>) -> Bytes {
    match fields("channel", outcome) {
        Ok(mut data) => {
            data["channel"] = Value::String(channel.to_owned());
            wire::success(id, &data)
        }
        Err(latest) => wire::failure(id, &ahead("since", &latest)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(epoch: &str, offset: u64) -> Position {
        Position {
            epoch: epoch.into(),
            offset,
        }
    }

    #[test]
    fn query_positions_per_stream() {
        let query: HashMap<String, String> =
            [("since_conv".to_owned(), "ab12:7".to_owned())].into();
        assert_eq!(
            query_since(&query, &USER_STREAMS).unwrap(),
            [None, Some(at("ab12", 7))]
        );
        let query: HashMap<String, String> = [
            ("since_device".to_owned(), "e:0".to_owned()),
            ("since_user".to_owned(), "x:1".to_owned()),
        ]
        .into();
        assert_eq!(
            query_since(&query, &HARDWARE_STREAMS).unwrap(),
            [Some(at("e", 0)), None],
            "a hardware socket has no user stream"
        );
        for bad in ["", "7", ":7", "a:", "a:-1", "a-b:1", "a:1.5"] {
            let query: HashMap<String, String> = [("since_user".to_owned(), bad.to_owned())].into();
            match query_since(&query, &USER_STREAMS) {
                Err(Refusal::InvalidPosition { field }) => assert_eq!(field, "since_user"),
                other => panic!("{bad}: {:?}", other.map(|_| ())),
            }
        }
    }

    #[test]
    fn subscribe_since_is_an_epoch_and_an_offset() {
        let params = |since: Value| {
            json!({"channel": "c", "since": since})
                .as_object()
                .cloned()
                .unwrap()
        };
        assert_eq!(
            param_since(&params(json!({"epoch": "ab", "offset": 3}))).unwrap(),
            Some(at("ab", 3))
        );
        assert_eq!(param_since(&params(Value::Null)).unwrap(), None);
        assert_eq!(
            param_since(&json!({"channel": "c"}).as_object().cloned().unwrap()).unwrap(),
            None
        );
        for bad in [
            json!("ab:3"),
            json!({"epoch": "ab"}),
            json!({"offset": 3}),
            json!({"epoch": "", "offset": 3}),
            json!({"epoch": "a:b", "offset": 3}),
            json!({"epoch": "ab:1", "offset": 3}),
            json!({"epoch": "ab", "offset": -1}),
            json!({"epoch": "ab", "offset": 1.5}),
            json!({"epoch": "ab", "offset": "3"}),
            json!({"epoch": 7, "offset": 3}),
            json!([1]),
        ] {
            let error = param_since(&params(bad.clone())).unwrap_err();
            assert_eq!(error.code(), -32602, "{bad}");
        }
    }

    #[test]
    fn recovery_frames_and_subscribe_answers() {
        let latest = at("ep", 9);
        let frame: Value = serde_json::from_slice(&recovery_frame(
            "conv",
            "since_conv",
            Recovery::Recovered {
                missed: 2,
                latest: &latest,
            },
        ))
        .unwrap();
        assert_eq!(
            frame,
            json!({"jsonrpc": "2.0", "method": "_notify", "params": {"type": "recovery", "data": {
                "stream": "conv", "recovered": true, "missed": 2, "epoch": "ep", "offset": 9}}})
        );
        let ahead: Value = serde_json::from_slice(&recovery_frame(
            "user",
            "since_user",
            Recovery::Ahead { latest: &latest },
        ))
        .unwrap();
        assert_eq!(ahead["error"]["code"], -32602);
        assert_eq!(ahead["id"], Value::Null);
        assert!(
            ahead["error"]["data"]
                .as_str()
                .unwrap()
                .contains("since_user")
        );
        let id = Id::null();
        let answer: Value = serde_json::from_slice(&subscribe_answer(
            &id,
            "news",
            Recovery::Lost { latest: &latest },
        ))
        .unwrap();
        assert_eq!(
            answer["result"]["data"],
            json!({"channel": "news", "stream": "channel", "recovered": false, "missed": 0,
                "epoch": "ep", "offset": 9})
        );
        let ahead: Value = serde_json::from_slice(&subscribe_answer(
            &id,
            "news",
            Recovery::Ahead { latest: &latest },
        ))
        .unwrap();
        assert_eq!(ahead["error"]["code"], -32602);
    }
}
