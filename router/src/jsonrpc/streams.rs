//! Stream chunks reach each socket in `seq` order. Every chunk of a stream
//! goes to the owner of its target, where one task per stream delivers
//! chunks one at a time and holds back a chunk that arrives before its
//! predecessor (two API calls racing, two NATS consumers) until the gap
//! fills or a short wait passes (a stream numbered from 1 waits briefly
//! for a chunk 0 before its first chunk goes out). Only out-of-order chunks are held; the
//! rest go out as they come, so a stream is never buffered whole.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use switchboard_proto::{ErrorCode, Notify, Response};
use tokio::sync::mpsc;

use crate::node::{RouterNode, error_response};
use crate::reply::Reply;
use crate::topic::TopicKey;

/// How long a chunk waits for a missing predecessor before the gap is skipped.
const GAP_WAIT: Duration = Duration::from_secs(1);
/// How long a stream whose first chunk is not `seq` 0 waits for lower ones.
/// Streams number from 0; one numbered from 1 pays this once, on its
/// first chunk. It covers a first forward between routers (a new channel).
const FIRST_WAIT: Duration = Duration::from_millis(250);
/// A stream with no chunk for this long is forgotten (and after `done`).
const IDLE: Duration = Duration::from_secs(30);
/// Chunks held back per stream at most; past it the gap is skipped.
const MAX_HELD: usize = 1_024;

struct Chunk {
    seq: u64,
    done: bool,
    frame: prost::bytes::Bytes,
    reply: Reply,
}

type StreamKey = (TopicKey, String);

/// The streams this router is sequencing.
#[derive(Default)]
pub struct Streams {
    active: Mutex<HashMap<StreamKey, mpsc::UnboundedSender<Chunk>>>,
}

impl Streams {
    pub(crate) async fn push(
        &self,
        node: &Arc<RouterNode>,
        topic: TopicKey,
        notify: Notify,
        reply: Reply,
    ) {
        let key = (topic, notify.stream_id);
        let mut chunk = Chunk {
            seq: notify.seq,
            done: notify.done,
            frame: notify.frame,
            reply,
        };
        // A task that just ended drops its receiver: start a new one.
        for _ in 0..2 {
            let tx = {
                let mut active = self.active.lock().unwrap_or_else(|e| e.into_inner());
                active
                    .entry(key.clone())
                    .or_insert_with(|| {
                        let (tx, rx) = mpsc::unbounded_channel();
                        tokio::spawn(sequence(Arc::downgrade(node), key.clone(), rx));
                        tx
                    })
                    .clone()
            };
            match tx.send(chunk) {
                Ok(()) => return,
                Err(mpsc::error::SendError(back)) => {
                    chunk = back;
                    let mut active = self.active.lock().unwrap_or_else(|e| e.into_inner());
                    if active.get(&key).is_some_and(|t| t.same_channel(&tx)) {
                        active.remove(&key);
                    }
                }
            }
        }
        chunk
            .reply
            .send(error_response(ErrorCode::Internal, "stream unavailable"));
    }

    fn forget(&self, key: &StreamKey) {
        let mut active = self.active.lock().unwrap_or_else(|e| e.into_inner());
        active.remove(key);
    }
}

/// Where the next chunk to deliver stands.
#[derive(Default)]
struct Order {
    next: Option<u64>,
    held: BTreeMap<u64, Chunk>,
    finished: bool,
}

impl Order {
    /// Chunks ready to go now, in order, after `chunk` arrived.
    fn arrive(&mut self, chunk: Chunk) -> Vec<Chunk> {
        if self.finished || self.next.is_some_and(|next| chunk.seq < next) {
            // After `done`, or a late duplicate: already past it.
            chunk.reply.send(Response::default());
            return Vec::new();
        }
        if self.next.is_none() && chunk.seq == 0 {
            self.next = Some(0);
        }
        self.held.insert(chunk.seq, chunk);
        if self.held.len() > MAX_HELD {
            return self.skip_gap();
        }
        self.ready()
    }

    fn ready(&mut self) -> Vec<Chunk> {
        let mut out = Vec::new();
        while let Some(next) = self.next {
            let Some(chunk) = self.held.remove(&next) else {
                break;
            };
            self.next = Some(next + 1);
            self.finished |= chunk.done;
            out.push(chunk);
        }
        out
    }

    /// Gives up on the missing chunks before the first held one.
    fn skip_gap(&mut self) -> Vec<Chunk> {
        if let Some(first) = self.held.keys().next().copied() {
            self.next = Some(first);
        }
        self.ready()
    }
}

async fn sequence(node: Weak<RouterNode>, key: StreamKey, mut rx: mpsc::UnboundedReceiver<Chunk>) {
    let mut order = Order::default();
    loop {
        let wait = match (order.held.is_empty(), order.next) {
            (true, _) => IDLE,
            (false, None) => FIRST_WAIT,
            (false, Some(_)) => GAP_WAIT,
        };
        let ready = match tokio::time::timeout(wait, rx.recv()).await {
            Ok(Some(chunk)) => order.arrive(chunk),
            Ok(None) => break,
            Err(_) if order.held.is_empty() => break,
            Err(_) => {
                metrics::counter!("switchboard_router_stream_gaps_total").increment(1);
                order.skip_gap()
            }
        };
        let Some(node) = node.upgrade() else { break };
        for chunk in ready {
            let response = match super::deliver(&node, key.0.clone(), chunk.frame, None).await {
                Ok(delivered) => Response {
                    delivered,
                    ..Response::default()
                },
                Err(e) => error_response(ErrorCode::Internal, &e.to_string()),
            };
            chunk.reply.send(response);
        }
    }
    if let Some(node) = node.upgrade() {
        node.streams().forget(&key);
    }
    // Chunks that raced the end are answered rather than dropped.
    rx.close();
    while let Ok(chunk) = rx.try_recv() {
        chunk.reply.send(Response::default());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(seq: u64, done: bool) -> (Chunk, tokio::sync::oneshot::Receiver<Response>) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let chunk = Chunk {
            seq,
            done,
            frame: prost::bytes::Bytes::from(seq.to_string()),
            reply: Reply::Local(tx),
        };
        (chunk, rx)
    }

    fn seqs(chunks: &[Chunk]) -> Vec<u64> {
        chunks.iter().map(|c| c.seq).collect()
    }

    #[test]
    fn in_order_chunks_go_straight_out() {
        let mut order = Order::default();
        for seq in 0..5 {
            assert_eq!(seqs(&order.arrive(chunk(seq, false).0)), [seq]);
        }
    }

    #[test]
    fn an_early_chunk_waits_for_its_predecessor() {
        let mut order = Order::default();
        assert_eq!(seqs(&order.arrive(chunk(0, false).0)), [0]);
        assert_eq!(seqs(&order.arrive(chunk(1, false).0)), [1]);
        assert!(order.arrive(chunk(3, false).0).is_empty());
        assert!(order.arrive(chunk(4, false).0).is_empty());
        assert_eq!(seqs(&order.arrive(chunk(2, false).0)), [2, 3, 4]);
    }

    #[test]
    fn a_stream_numbered_from_one_starts_after_the_first_wait() {
        let mut order = Order::default();
        assert!(order.arrive(chunk(2, false).0).is_empty());
        assert!(
            order.arrive(chunk(1, false).0).is_empty(),
            "0 may still come"
        );
        assert_eq!(seqs(&order.skip_gap()), [1, 2]);
        assert_eq!(seqs(&order.arrive(chunk(3, false).0)), [3]);
    }

    #[test]
    fn a_first_chunk_overtaken_by_the_second_still_goes_first() {
        let mut order = Order::default();
        assert!(order.arrive(chunk(1, false).0).is_empty());
        assert_eq!(seqs(&order.arrive(chunk(0, false).0)), [0, 1]);
    }

    #[test]
    fn a_gap_is_skipped_when_asked() {
        let mut order = Order::default();
        order.arrive(chunk(0, false).0);
        assert!(order.arrive(chunk(5, false).0).is_empty());
        assert_eq!(seqs(&order.skip_gap()), [5]);
        let (late, answer) = chunk(3, false);
        assert!(
            order.arrive(late).is_empty(),
            "a skipped chunk stays skipped"
        );
        drop(answer);
    }

    #[test]
    fn nothing_follows_done() {
        let mut order = Order::default();
        assert_eq!(seqs(&order.arrive(chunk(0, true).0)), [0]);
        assert!(order.arrive(chunk(1, false).0).is_empty());
    }
}
