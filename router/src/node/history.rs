//! History reads: what an edge recovering a socket, and the server API,
//! ask of a topic's history. The store is shared, so any router can read
//! it; the topic's tenant scopes every key.

use switchboard_proto::{
    ErrorCode, HistoryAnswer, HistoryEntry, HistoryRead, HistoryVerdict, Position, Response,
};

use super::{NodeError, RouterNode, error_response};
use crate::store::history::{HistoryLimits, HistoryRef, Since};
use crate::topic::TopicKey;

/// Why a history read has no answer.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// History is turned off (`--history-size 0`).
    #[error("history is off on this server")]
    Off,
    /// The topic keeps no history (IoT, IM, …).
    #[error("this topic keeps no history")]
    NoHistory,
    #[error(transparent)]
    Node(#[from] NodeError),
}

impl RouterNode {
    /// How much each history keeps; `None` with history off.
    pub fn history_limits(&self) -> Option<HistoryLimits> {
        self.config.history
    }

    /// The messages of `topic`'s history after `since`, at most `limit`
    /// (and never more than the history keeps).
    pub async fn read_history(
        &self,
        topic: &TopicKey,
        since: Option<&Position>,
        limit: usize,
    ) -> Result<Since, HistoryError> {
        let limits = self.config.history.ok_or(HistoryError::Off)?;
        let stream = topic.history_stream().ok_or(HistoryError::NoHistory)?;
        let history = HistoryRef {
            tenant: &topic.tenant,
            stream: &stream,
        };
        let now_ms = switchboard_common::clock::now_ms();
        Ok(self
            .store
            .history_since(history, since, limit.min(limits.size), limits, now_ms)
            .await
            .map_err(NodeError::from)?)
    }

    /// [`RouterNode::read_history`] as an answer on the wire.
    pub(crate) async fn history_answer(&self, read: HistoryRead) -> Response {
        let Some(topic) = read.topic.map(TopicKey::from) else {
            return error_response(ErrorCode::Invalid, "a history read needs a topic");
        };
        // 0 asks for as many as the history keeps.
        let limit = match read.limit {
            0 => usize::MAX,
            n => usize::try_from(n).unwrap_or(usize::MAX),
        };
        match self.read_history(&topic, read.since.as_ref(), limit).await {
            Ok(found) => Response {
                history: Some(history_answer(found)),
                ..Response::default()
            },
            Err(HistoryError::Node(e)) => e.response(),
            Err(e @ (HistoryError::Off | HistoryError::NoHistory)) => {
                error_response(ErrorCode::NotFound, &e.to_string())
            }
        }
    }
}

fn history_answer(found: Since) -> HistoryAnswer {
    let latest = Some(found.latest());
    match found {
        Since::Recovered { messages, .. } => HistoryAnswer {
            latest,
            verdict: HistoryVerdict::Recovered as i32,
            messages: messages
                .into_iter()
                .map(|(offset, data)| HistoryEntry { offset, data })
                .collect(),
        },
        Since::Lost { .. } => HistoryAnswer {
            latest,
            verdict: HistoryVerdict::Lost as i32,
            messages: Vec::new(),
        },
        Since::Ahead { .. } => HistoryAnswer {
            latest,
            verdict: HistoryVerdict::Ahead as i32,
            messages: Vec::new(),
        },
    }
}
