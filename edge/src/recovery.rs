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
//! The same catch-up repairs a live socket without it asking: when a
//! delivery skips offsets (a message lost with a router that died after
//! appending it, or sent by a new owner before this edge followed), and
//! when a subscription moves to a new owner ([`hold_from`]), the socket
//! reads what it lacks from the history, then goes on; it sees each
//! message once, in offset order.
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

/// How long a recovery or catch-up keeps asking an owner that does not
/// answer, and how often: long enough for a dead router to leave the view
/// and for one ask lost on the way (answered only at the edge's request
/// timeout, 5 s by default) to be followed by another.
const RETRY_FOR: std::time::Duration = std::time::Duration::from_secs(12);
const RETRY_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// How long one ask of a recovery waits for its answer before asking
/// again. An ask sent to an owner that stops owning the topic on the way
/// is answered only at the edge's request timeout (5 s by default); two
/// such in a row, as when ownership moves twice, left a returning client
/// waiting until its position had left the history. Asking again is
/// safe: a sync and a read change nothing.
const ASK_FOR: std::time::Duration = std::time::Duration::from_millis(1500);

/// What a socket does with one delivery that carries a position.
#[derive(Debug, PartialEq, Eq)]
pub enum Admit {
    /// Hand it to the socket.
    Deliver,
    /// The socket has it already.
    Drop,
    /// The topic is recovering: held until the replay is queued.
    Held,
    /// Offsets between the socket's last and this one are missing: held,
    /// and the socket must be caught up from the position answered.
    Gap(Position),
}

/// What the end of a replay lets out of a hold.
#[derive(Debug, PartialEq, Eq)]
pub enum Released {
    /// The held deliveries past the replay, in order; the hold is over.
    Done(Vec<Bytes>),
    /// The held deliveries that follow on with no gap (maybe none); the
    /// rest stay held and the history must be read again from where the
    /// socket now is.
    Again(Vec<Bytes>),
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
        if stream.epoch == position.epoch {
            if position.offset <= stream.last {
                return Admit::Drop;
            }
            if position.offset > stream.last + 1 {
                stream.held = Some(Held {
                    frames: vec![(position.clone(), frame.clone())],
                    overflowed: false,
                });
                return Admit::Gap(Position {
                    epoch: stream.epoch.clone(),
                    offset: stream.last,
                });
            }
        } else {
            // A first message, or a new epoch: nothing before it counts.
            stream.epoch.clone_from(&position.epoch);
        }
        stream.last = position.offset;
        Admit::Deliver
    }

    /// Starts holding live deliveries on `topic`.
    pub fn hold(&mut self, topic: &Topic) {
        self.stream(topic).held = Some(Held::default());
    }

    /// Starts holding `topic` to catch the socket up from where it is:
    /// answers that position, or `None` when the socket has nothing of the
    /// topic or is being caught up already.
    pub fn hold_from(&mut self, topic: &Topic) -> Option<Position> {
        let stream = self
            .streams
            .iter_mut()
            .find(|s| s.kind == topic.kind && s.name == topic.name)?;
        if stream.epoch.is_empty() || stream.held.is_some() {
            return None;
        }
        stream.held = Some(Held::default());
        Some(Position {
            epoch: stream.epoch.clone(),
            offset: stream.last,
        })
    }

    /// Forgets `topic` (the socket left it): coming back is a fresh start.
    pub fn forget(&mut self, topic: &Topic) {
        self.streams
            .retain(|s| !(s.kind == topic.kind && s.name == topic.name));
    }

    /// The replay of `topic` up to `latest` is queued: the socket has
    /// everything up to it. Lets out the held deliveries that follow it in
    /// order. What is held past a gap, or a hold that overflowed, waits for
    /// another read of the history, except on the `last_round`, which lets
    /// everything out and ends the hold.
    pub fn release(&mut self, topic: &Topic, latest: &Position, last_round: bool) -> Released {
        let stream = self.stream(topic);
        if stream.epoch == latest.epoch {
            stream.last = stream.last.max(latest.offset);
        } else if !latest.epoch.is_empty() {
            stream.epoch.clone_from(&latest.epoch);
            stream.last = latest.offset;
        }
        let mut held = stream.held.take().unwrap_or_default();
        if held.overflowed && !last_round {
            stream.held = Some(Held::default());
            return Released::Again(Vec::new());
        }
        // Two owners (an old one and a new one, for a moment) may have
        // sent them out of order.
        held.frames.sort_by_key(|(position, _)| position.offset);
        let mut out = Vec::with_capacity(held.frames.len());
        let mut rest = held.frames.into_iter();
        while let Some((position, frame)) = rest.next() {
            if position.epoch == stream.epoch {
                if position.offset <= stream.last {
                    continue;
                }
                if position.offset > stream.last + 1 && !last_round {
                    let mut frames = vec![(position, frame)];
                    frames.extend(rest);
                    stream.held = Some(Held {
                        frames,
                        overflowed: false,
                    });
                    return Released::Again(out);
                }
            }
            stream.epoch = position.epoch;
            stream.last = position.offset;
            out.push(frame);
        }
        Released::Done(out)
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
    let found = synced_read(&upstream, &conn, &topic, &since).await;
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
    finish(&upstream, &conn, &topic, &latest, messages).await;
}

/// Why a live socket is caught up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CatchUp {
    /// Its deliveries skipped offsets; the subscription is live already.
    Gap,
    /// Its subscription moved to a new owner (or a new session of one):
    /// the read waits until the owner has applied it.
    Moved,
}

/// Catches live socket `conn` up on `topic` from `since`, where it is,
/// without a word to it. The caller has put the topic on hold
/// ([`PositionBook::hold_from`], or an [`Admit::Gap`]).
pub async fn catch_up(
    upstream: Arc<Upstream>,
    conn: Arc<ConnHandle>,
    topic: Topic,
    since: Position,
    cause: CatchUp,
) {
    let cause_label = match cause {
        CatchUp::Gap => "gap",
        CatchUp::Moved => "moved",
    };
    metrics::counter!("switchboard_edge_catch_ups_total", "cause" => cause_label).increment(1);
    // The subscription is live after a gap, so waiting on the owner to
    // apply it costs one round trip and answers nothing new.
    let found = synced_read(&upstream, &conn, &topic, &since).await;
    let (latest, messages) = match found {
        Some(found) if found.verdict == HistoryVerdict::Recovered as i32 => {
            (found.latest.unwrap_or_default(), found.messages)
        }
        // The history is gone (or holds less than the socket has): the
        // socket goes on from what the history says now.
        Some(found) => (found.latest.unwrap_or_default(), Vec::new()),
        None => (since, Vec::new()),
    };
    finish(&upstream, &conn, &topic, &latest, messages).await;
}

/// Replays `messages` (the history after `start`), then lets out what the
/// hold has past them, reading the history again while the hold has gaps
/// (at most [`MAX_ROUNDS`] reads; an owner that does not answer ends it).
async fn finish(
    upstream: &Upstream,
    conn: &ConnHandle,
    topic: &Topic,
    start: &Position,
    messages: Vec<switchboard_proto::HistoryEntry>,
) {
    let mut replayed = replay(conn, start, messages).await;
    let mut last_round = false;
    for round in 1..=MAX_ROUNDS {
        let Some(at) = replayed else {
            return;
        };
        let released = conn
            .positions()
            .release(topic, &at, last_round || round == MAX_ROUNDS);
        let frames = match released {
            Released::Done(frames) => {
                for frame in frames {
                    conn.push(frame);
                }
                return;
            }
            Released::Again(frames) => frames,
        };
        for frame in frames {
            conn.push(frame);
        }
        metrics::counter!("switchboard_edge_recovery_rounds_total").increment(1);
        let since = conn.positions().position(topic).unwrap_or(at);
        let more = match read(upstream, conn, topic, &since).await {
            Ok(found) if found.verdict == HistoryVerdict::Recovered as i32 => found.messages,
            _ => {
                last_round = true;
                Vec::new()
            }
        };
        replayed = replay(conn, &since, more).await;
    }
}

/// The history of `topic` after `since`, once its owner has applied this
/// socket's subscription: every message after what it finds reaches the
/// socket live. While the topic's ownership is moving (its owner just
/// died, or one is starting) the owner may not answer: asked again every
/// [`RETRY_EVERY`] for up to [`RETRY_FOR`], live deliveries held meanwhile.
async fn synced_read(
    upstream: &Upstream,
    conn: &ConnHandle,
    topic: &Topic,
    since: &Position,
) -> Option<HistoryAnswer> {
    let give_up = tokio::time::Instant::now() + RETRY_FOR;
    loop {
        let sync = ask(upstream, conn, topic, RequestBody::Sync).await;
        let failed = match sync {
            Ok(_) => match read(upstream, conn, topic, since).await {
                Ok(found) => return Some(found),
                Err(failed) => failed,
            },
            Err(failed) => failed,
        };
        let late = tokio::time::Instant::now() + RETRY_EVERY >= give_up;
        if failed == ReadFailed::Refused || late || conn.close_reason().is_some() {
            return None;
        }
        metrics::counter!("switchboard_edge_recovery_retries_total").increment(1);
        tokio::time::sleep(RETRY_EVERY).await;
    }
}

/// The history of `topic` after `since`, from its owner.
async fn read(
    upstream: &Upstream,
    conn: &ConnHandle,
    topic: &Topic,
    since: &Position,
) -> Result<HistoryAnswer, ReadFailed> {
    let body = request::Body::History(HistoryRead {
        topic: Some(topic.clone()),
        since: Some(since.clone()),
        limit: 0,
    });
    ask(upstream, conn, topic, RequestBody::Envelope(body))
        .await?
        .history
        .ok_or(ReadFailed::Refused)
}

/// One ask of `topic`'s owner, given up after [`ASK_FOR`] (its late
/// answer, if any, goes nowhere).
async fn ask(
    upstream: &Upstream,
    conn: &ConnHandle,
    topic: &Topic,
    body: RequestBody,
) -> Result<switchboard_proto::Response, ReadFailed> {
    match tokio::time::timeout(ASK_FOR, upstream.call(conn.id, topic.clone(), body)).await {
        Ok(answer) => answered(answer),
        Err(_) => Err(ReadFailed::Unavailable),
    }
}

/// Why a read of the history found nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadFailed {
    /// No router answered, or one could not reach the owner: ownership
    /// is moving, and asking again may work.
    Unavailable,
    /// The owner said no (history off, say): asking again will not help.
    Refused,
}

fn answered(
    answer: Result<switchboard_proto::Response, Unavailable>,
) -> Result<switchboard_proto::Response, ReadFailed> {
    let response = answer.map_err(|Unavailable| ReadFailed::Unavailable)?;
    if response.error == switchboard_proto::ErrorCode::Unavailable as i32 {
        return Err(ReadFailed::Unavailable);
    }
    response.into_result().map_err(|_| ReadFailed::Refused)
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
        let out = book.release(&g, &at("e", 4), false);
        assert_eq!(out, Released::Done(vec![frame(5), frame(6)]));
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
        assert_eq!(
            book.release(&g, &at("e", 0), false),
            Released::Again(Vec::new()),
            "read again"
        );
        // Still holding while the second read runs.
        assert_eq!(book.admit(&g, &at("e", 300), &frame(300)), Admit::Held);
        let out = book.release(&g, &at("e", 299), false);
        assert_eq!(out, Released::Done(vec![frame(300)]));
    }

    #[test]
    fn the_last_round_releases_even_an_overflowed_hold() {
        let mut book = PositionBook::default();
        let g = group();
        book.hold(&g);
        for n in 1..=(HOLD_LIMIT as u64 + 1) {
            book.admit(&g, &at("e", n), &frame(n));
        }
        assert_eq!(
            book.release(&g, &at("e", 0), true),
            Released::Done(Vec::new())
        );
        // Live again: the next delivery is past a gap, which is read.
        assert_eq!(
            book.admit(&g, &at("e", 400), &frame(400)),
            Admit::Gap(at("e", 0))
        );
    }

    #[test]
    fn a_skipped_offset_holds_the_topic_until_the_gap_is_read() {
        let mut book = PositionBook::default();
        let g = group();
        assert_eq!(book.admit(&g, &at("e", 1), &frame(1)), Admit::Deliver);
        assert_eq!(
            book.admit(&g, &at("e", 3), &frame(3)),
            Admit::Gap(at("e", 1))
        );
        assert_eq!(book.admit(&g, &at("e", 4), &frame(4)), Admit::Held);
        // The read gave 2 and 3: only 4 follows, and 3 never twice.
        let out = book.release(&g, &at("e", 3), false);
        assert_eq!(out, Released::Done(vec![frame(4)]));
        assert_eq!(book.position(&g), Some(at("e", 4)));
        assert_eq!(book.admit(&g, &at("e", 5), &frame(5)), Admit::Deliver);
    }

    #[test]
    fn a_hold_lets_out_only_what_follows_on_and_keeps_the_rest() {
        let mut book = PositionBook::default();
        let g = group();
        book.hold(&g);
        // Two owners for a moment: out of order, and 6 missing.
        for n in [7, 5] {
            assert_eq!(book.admit(&g, &at("e", n), &frame(n)), Admit::Held);
        }
        let out = book.release(&g, &at("e", 4), false);
        assert_eq!(out, Released::Again(vec![frame(5)]));
        assert_eq!(book.position(&g), Some(at("e", 5)), "read again from 5");
        assert_eq!(book.admit(&g, &at("e", 8), &frame(8)), Admit::Held);
        let out = book.release(&g, &at("e", 6), false);
        assert_eq!(out, Released::Done(vec![frame(7), frame(8)]));
    }

    #[test]
    fn the_last_round_lets_a_gap_through() {
        let mut book = PositionBook::default();
        let g = group();
        book.hold(&g);
        book.admit(&g, &at("e", 9), &frame(9));
        let out = book.release(&g, &at("e", 4), true);
        assert_eq!(out, Released::Done(vec![frame(9)]));
    }

    #[test]
    fn a_catch_up_starts_only_where_the_socket_has_a_place_and_none_runs() {
        let mut book = PositionBook::default();
        let g = group();
        assert_eq!(book.hold_from(&g), None, "nothing of it yet");
        book.admit(&g, &at("e", 2), &frame(2));
        assert_eq!(book.hold_from(&g), Some(at("e", 2)));
        assert_eq!(book.hold_from(&g), None, "one catch-up at a time");
        assert_eq!(book.admit(&g, &at("e", 3), &frame(3)), Admit::Held);
        book.forget(&g);
        assert_eq!(book.position(&g), None);
        assert_eq!(
            book.admit(&g, &at("e", 9), &frame(9)),
            Admit::Deliver,
            "a topic left and joined again starts afresh"
        );
    }
}
