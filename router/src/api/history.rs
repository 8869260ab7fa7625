//! `GET /api/v1/history?topic=…&since=E:O&limit=n`: a topic's history
//! for a backend, in the caller's tenant only.

use bytes::Bytes;
use serde_json::{Value, json};

use super::ApiError;
use crate::node::RouterNode;
use crate::store::history::Since;
use crate::topic::TopicKey;

/// What the query asks for.
#[derive(Debug, PartialEq, Eq)]
struct HistoryQuery {
    topic: String,
    since: Option<switchboard_proto::Position>,
    limit: Option<usize>,
}

fn parse(query: Option<&str>) -> Result<HistoryQuery, ApiError> {
    let mut topic = None;
    let mut since = None;
    let mut limit = None;
    for (key, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        let duplicate = || ApiError::field(key.as_ref(), format!("{key} is given twice"));
        match key.as_ref() {
            "topic" if topic.is_some() => return Err(duplicate()),
            "topic" => topic = Some(value.into_owned()),
            "since" if since.is_some() => return Err(duplicate()),
            "since" => since = Some(position(&value)?),
            "limit" if limit.is_some() => return Err(duplicate()),
            "limit" => {
                let n: usize =
                    value.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                        ApiError::field("limit", "limit must be a positive integer")
                    })?;
                limit = Some(n);
            }
            _ => {}
        }
    }
    let topic = topic.ok_or_else(|| ApiError::field("topic", "topic is required"))?;
    Ok(HistoryQuery {
        topic,
        since,
        limit,
    })
}

/// A position as clients hold it: `epoch:offset`.
fn position(text: &str) -> Result<switchboard_proto::Position, ApiError> {
    switchboard_proto::Position::parse(text)
        .ok_or_else(|| ApiError::field("since", "since must be epoch:offset"))
}

/// The answer: `{"epoch","offset","messages":[{"offset","data"}],"recovered"}`.
pub async fn history(
    node: &RouterNode,
    tenant: &str,
    query: Option<&str>,
) -> Result<Value, ApiError> {
    let query = parse(query)?;
    let topic = TopicKey::from_history_stream(tenant, &query.topic).ok_or_else(|| {
        ApiError::field(
            "topic",
            "topic must be group:{id}, client:{id}, broadcast, user:{id}, conv:{id}, \
             device:{id} or channel:{appId}:{channel}, with valid ids",
        )
    })?;
    let limits = node
        .history_limits()
        .ok_or(ApiError::History(crate::node::HistoryError::Off))?;
    let limit = query.limit.unwrap_or(limits.size).min(limits.size);
    let since = match query.since {
        Some(since) => Some(since),
        // Without a position: the latest `limit` messages.
        None => {
            let latest = node.read_history(&topic, None, 0).await?.latest();
            Some(switchboard_proto::Position {
                offset: latest.offset.saturating_sub(limit as u64),
                epoch: latest.epoch,
            })
        }
    };
    let found = node.read_history(&topic, since.as_ref(), limit).await?;
    let latest = found.latest();
    let (recovered, messages) = match found {
        Since::Recovered { messages, .. } => (true, messages),
        Since::Lost { .. } => (false, Vec::new()),
        Since::Ahead { .. } => {
            return Err(ApiError::field(
                "since",
                format!(
                    "since is ahead of the latest position {}:{}",
                    latest.epoch, latest.offset
                ),
            ));
        }
    };
    let messages: Vec<Value> = messages
        .into_iter()
        .map(|(offset, data)| json!({ "offset": offset, "data": data_value(data) }))
        .collect();
    Ok(json!({
        "epoch": latest.epoch,
        "offset": latest.offset,
        "messages": messages,
        "recovered": recovered,
    }))
}

/// A kept message as JSON: as it was published (always JSON on the
/// topics that keep history), else as a string.
fn data_value(data: Bytes) -> Value {
    serde_json::from_slice(&data)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&data).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_names_a_topic_a_position_and_a_limit() {
        let q = parse(Some("topic=group%3Ag1&since=ab12:7&limit=5")).unwrap();
        assert_eq!(q.topic, "group:g1");
        assert_eq!(
            q.since,
            Some(switchboard_proto::Position {
                epoch: "ab12".into(),
                offset: 7
            })
        );
        assert_eq!(q.limit, Some(5));
        assert!(parse(Some("topic=broadcast")).unwrap().since.is_none());
    }

    #[test]
    fn bad_queries_name_their_field() {
        for (query, field) in [
            ("", "topic"),
            ("since=a:1", "topic"),
            ("topic=broadcast&since=7", "since"),
            ("topic=broadcast&since=:7", "since"),
            ("topic=broadcast&since=a:-1", "since"),
            ("topic=broadcast&since=a%2Fb:1", "since"),
            ("topic=broadcast&limit=0", "limit"),
            ("topic=broadcast&limit=x", "limit"),
            ("topic=a&topic=b", "topic"),
        ] {
            match parse(Some(query)) {
                Err(ApiError::Field { field: f, .. }) => assert_eq!(f, field, "{query}"),
                other => panic!("{query}: {other:?}"),
            }
        }
    }
}
