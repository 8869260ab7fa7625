//! Positions a socket has, and recovery: catching a socket up from a
//! position it presents, then going live with no gap and no duplicate.
//!
//! Every delivery on a topic with history carries its position. Each
//! socket's [`PositionBook`] keeps, per such topic, the last offset it was
//! handed, and drops anything at or below it: a message the replay already
//! gave, or a copy from an old owner. While a topic recovers, live
//! deliveries for it are held (up to [`HOLD_LIMIT`]) instead of sent, so
//! nothing live overtakes the replay; once the replay is queued, the held
//! ones past it follow. A hold that overflows is dropped and read again
//! from the history, from the last offset the socket has.
//!
//! The replay is paced by the socket's outbound queue like an IM backlog
//! ([`crate::backlog::window_for`]): a window at a time, each once the
//! queue has drained to a low-water mark, so a recovery never closes a
//! socket with 1013.

use std::sync::Arc;

use bytes::Bytes;
use switchboard_proto::{
    HistoryAnswer, HistoryRead, HistoryVerdict, Payload, Position, Topic, request,
};

use crate::dialect::{Recovery, RecoveryMapper, RequestBody, Unavailable};
use crate::outbound::ConnHandle;
use crate::upstream::Upstream;

/// Live deliveries held for one recovering topic of one socket; past
/// this the hold is dropped and read again from the history.
pub const HOLD_LIMIT: usize = 256;

/// Reads of the history one recovery makes at most: each overflowed hold
/// costs one more. Past this the socket goes live with what it has.
const MAX_ROUNDS: usize = 8;

/// What a socket does with one delivery that carries a position.
#[derive(Debug, PartialEq, Eq)]
pub enum Admit {
    /// Hand it to the socket.
    Deliver,
    /// The socket has it already.
    Drop,
    /// The topic is recovering: held until the replay is queued.
    Held,
}

/// One topic's place, as far as this socket goes.
struct Stream {
    kind: i32,
    name: String,
    epoch: String,
    /// The last offset handed to the socket (0: none yet).
    last: u64,
    /// While recovering: the live deliveries held, and whether some were
    /// dropped for want of room.
    held: Option<Held>,
}

#[derive(Default)]
struct Held {
    frames: Vec<(Position, Bytes)>,
    overflowed: bool,
}

/// What a socket has of each topic with history it subscribes to. Empty
/// (no allocation) until the first positioned delivery or recovery.
#[derive(Default)]
pub struct PositionBook {
    streams: Vec<Stream>,
}

impl PositionBook {
    fn stream(&mut self, topic: &Topic) -> &mut Stream {
        let at = match self
            .streams
            .iter()
            .position(|s| s.kind == topic.kind && s.name == topic.name)
        {
            Some(at) => at,
            None => {
                self.streams.push(Stream {
                    kind: topic.kind,
                    name: topic.name.clone(),
                    epoch: String::new(),
                    last: 0,
                    held: None,
                });
                self.streams.len() - 1
            }
        };
        &mut self.streams[at]
    }

    /// Decides on a delivery of `frame` at `position` on `topic`.
    pub fn admit(&mut self, topic: &Topic, position: &Position, frame: &Bytes) -> Admit {
        let stream = self.stream(topic);
        if let Some(held) = &mut stream.held {
            if held.frames.len() < HOLD_LIMIT {
                held.frames.push((position.clone(), frame.clone()));
            } else {
                held.frames.clear();
                held.overflowed = true;
            }
            return Admit::Held;
        }
        if stream.epoch == position.epoch && position.offset <= stream.last {
            return Admit::Drop;
        }
        if stream.epoch != position.epoch {
            stream.epoch.clone_from(&position.epoch);
        }
        stream.last = position.offset;
        Admit::Deliver
    }

    /// Starts holding live deliveries on `topic`.
    pub fn hold(&mut self, topic: &Topic) {
        self.stream(topic).held = Some(Held::default());
    }

    /// The replay of `topic` up to `latest` is queued: the socket has
    /// everything up to it. Answers the held deliveries past it, in
    /// order, and stops holding; or `None`, still holding, when some were
    /// dropped and the history must be read again from `latest`.
    pub fn release(
        &mut self,
        topic: &Topic,
        latest: &Position,
        last_round: bool,
    ) -> Option<Vec<Bytes>> {
        let stream = self.stream(topic);
        stream.epoch.clone_from(&latest.epoch);
        stream.last = latest.offset;
        let held = stream.held.take().unwrap_or_default();
        if held.overflowed && !last_round {
            stream.held = Some(Held::default());
            return None;
        }
        let mut out = Vec::with_capacity(held.frames.len());
        for (position, frame) in held.frames {
            if position.epoch == stream.epoch && position.offset <= stream.last {
                continue;
            }
            stream.epoch = position.epoch;
            stream.last = position.offset;
            out.push(frame);
        }
        Some(out)
    }

    /// Where the socket is on `topic`, if it has anything of it.
    pub fn position(&self, topic: &Topic) -> Option<Position> {
        self.streams
            .iter()
            .find(|s| s.kind == topic.kind && s.name == topic.name && !s.epoch.is_empty())
            .map(|s| Position {
                epoch: s.epoch.clone(),
                offset: s.last,
            })
    }
}

/// Recovers `conn` on `topic` from `since`. The caller has put the topic
/// on hold and sent the subscription; `answer` makes the frame that opens
/// the recovery.
pub async fn recover(
    upstream: Arc<Upstream>,
    conn: Arc<ConnHandle>,
    topic: Topic,
    since: Position,
    answer: RecoveryMapper,
) {
    // Answered once the owner has applied the subscription, so every
    // message after what the read below finds reaches the socket live.
    let synced = upstream
        .call(conn.id, topic.clone(), RequestBody::Sync)
        .await;
    let found = match synced {
        Ok(_) => read(&upstream, &conn, &topic, &since).await.ok(),
        Err(Unavailable) => None,
    };
    // Without an answer nothing is replayed: what is held goes out as it
    // came, from where the socket is.
    let latest = match &found {
        Some(found) => found.latest.clone().unwrap_or_default(),
        None => conn.positions().position(&topic).unwrap_or_default(),
    };
    let outcome = match &found {
        None => Recovery::Unavailable,
        Some(found) => match HistoryVerdict::try_from(found.verdict) {
            Ok(HistoryVerdict::Recovered) => Recovery::Recovered {
                missed: found.messages.len(),
                latest: &latest,
            },
            Ok(HistoryVerdict::Ahead) => Recovery::Ahead { latest: &latest },
            Ok(HistoryVerdict::Lost) | Err(_) => Recovery::Lost { latest: &latest },
        },
    };
    metrics::counter!("switchboard_edge_recoveries_total", "outcome" => label(&outcome))
        .increment(1);
    conn.push(answer(outcome));
    let messages = found.map(|found| found.messages).unwrap_or_default();
    let mut replayed = replay(&conn, &latest, messages).await;
    for round in 1..=MAX_ROUNDS {
        let Some(since) = replayed else {
            return;
        };
        let released = conn
            .positions()
            .release(&topic, &since, round == MAX_ROUNDS);
        match released {
            Some(frames) => {
                for frame in frames {
                    conn.push(frame);
                }
                return;
            }
            None => {
                metrics::counter!("switchboard_edge_recovery_rounds_total").increment(1);
                let more = match read(&upstream, &conn, &topic, &since).await {
                    Ok(found) if found.verdict == HistoryVerdict::Recovered as i32 => {
                        found.messages
                    }
                    _ => Vec::new(),
                };
                replayed = replay(&conn, &since, more).await;
            }
        }
    }
}

/// The history of `topic` after `since`, from its owner.
async fn read(
    upstream: &Upstream,
    conn: &ConnHandle,
    topic: &Topic,
    since: &Position,
) -> Result<HistoryAnswer, Unavailable> {
    let body = request::Body::History(HistoryRead {
        topic: Some(topic.clone()),
        since: Some(since.clone()),
        limit: 0,
    });
    let answer = upstream
        .call(conn.id, topic.clone(), RequestBody::Envelope(body))
        .await?;
    answer
        .into_result()
        .ok()
        .and_then(|r| r.history)
        .ok_or(Unavailable)
}

/// Queues `messages` (the history after a position, oldest first) on the
/// socket a window at a time, each encoded with its position; answers the
/// position the socket then has (`start` when nothing was missed), or
/// `None` when the socket went away.
async fn replay(
    conn: &ConnHandle,
    start: &Position,
    messages: Vec<switchboard_proto::HistoryEntry>,
) -> Option<Position> {
    let (window, window_bytes) = crate::backlog::window_for(conn.bounds());
    let mut at = start.clone();
    for chunk in messages.chunks(window) {
        if !conn.drained_to(window, window_bytes).await {
            return None;
        }
        for entry in chunk {
            let position = Position {
                epoch: start.epoch.clone(),
                offset: entry.offset,
            };
            let payload = Payload::json(entry.data.clone());
            if let Some(frame) = conn.dialect.encode(&payload, Some(&position)) {
                conn.push(frame);
            }
            at.offset = at.offset.max(entry.offset);
        }
    }
    metrics::counter!("switchboard_edge_replayed_messages_total").increment(messages.len() as u64);
    Some(at)
}

fn label(outcome: &Recovery<'_>) -> &'static str {
    match outcome {
        Recovery::Recovered { .. } => "recovered",
        Recovery::Lost { .. } => "lost",
        Recovery::Ahead { .. } => "ahead",
        Recovery::Unavailable => "unavailable",
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

    fn frame(n: u64) -> Bytes {
        Bytes::from(n.to_string())
    }

    fn group() -> Topic {
        Topic::group("t", "g")
    }

    #[test]
    fn a_live_socket_drops_what_it_has_and_takes_a_new_epoch() {
        let mut book = PositionBook::default();
        let g = group();
        assert_eq!(book.admit(&g, &at("e", 1), &frame(1)), Admit::Deliver);
        assert_eq!(book.admit(&g, &at("e", 2), &frame(2)), Admit::Deliver);
        assert_eq!(book.admit(&g, &at("e", 2), &frame(2)), Admit::Drop);
        assert_eq!(book.admit(&g, &at("e", 1), &frame(1)), Admit::Drop);
        // Another topic keeps its own place.
        let client = Topic::client("t", "c");
        assert_eq!(book.admit(&client, &at("e", 1), &frame(1)), Admit::Deliver);
        // A new epoch starts over.
        assert_eq!(book.admit(&g, &at("f", 1), &frame(1)), Admit::Deliver);
        assert_eq!(book.position(&g), Some(at("f", 1)));
    }

    #[test]
    fn held_deliveries_past_the_replay_follow_it_in_order() {
        let mut book = PositionBook::default();
        let g = group();
        book.hold(&g);
        for n in 3..=6 {
            assert_eq!(book.admit(&g, &at("e", n), &frame(n)), Admit::Held);
        }
        // The replay went up to 4: only 5 and 6 follow.
        let out = book.release(&g, &at("e", 4), false).unwrap();
        assert_eq!(out, vec![frame(5), frame(6)]);
        assert_eq!(book.admit(&g, &at("e", 6), &frame(6)), Admit::Drop);
        assert_eq!(book.admit(&g, &at("e", 7), &frame(7)), Admit::Deliver);
    }

    #[test]
    fn an_overflowed_hold_is_read_again_from_the_replay() {
        let mut book = PositionBook::default();
        let g = group();
        book.hold(&g);
        for n in 1..=(HOLD_LIMIT as u64 + 1) {
            book.admit(&g, &at("e", n), &frame(n));
        }
        assert_eq!(book.release(&g, &at("e", 0), false), None, "read again");
        // Still holding while the second read runs.
        assert_eq!(book.admit(&g, &at("e", 300), &frame(300)), Admit::Held);
        let out = book.release(&g, &at("e", 299), false).unwrap();
        assert_eq!(out, vec![frame(300)]);
    }

    #[test]
    fn the_last_round_releases_even_an_overflowed_hold() {
        let mut book = PositionBook::default();
        let g = group();
        book.hold(&g);
        for n in 1..=(HOLD_LIMIT as u64 + 1) {
            book.admit(&g, &at("e", n), &frame(n));
        }
        assert_eq!(book.release(&g, &at("e", 0), true), Some(Vec::new()));
        assert_eq!(book.admit(&g, &at("e", 400), &frame(400)), Admit::Deliver);
    }
}
