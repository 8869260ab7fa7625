//! Each socket's outbound side: a bounded queue drained by one writer task,
//! and the registry that maps connection ids to it. Whoever must not
//! outrun the socket (a backlog handed over a window at a time) waits
//! until the queue has drained below a mark ([`ConnHandle::drained_to`]).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use dashmap::DashMap;
use switchboard_proto::Topic;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::dialect::Dialect;

/// A frame for the writer task.
pub enum Outbound {
    Text(Bytes),
    Binary(Bytes),
    /// A text message already compressed for this socket's deflate
    /// parameters (a delivery compressed once for many sockets).
    CompressedText(Bytes),
    Pong(Bytes),
}

/// Why and how a socket is being closed. The first reason wins.
#[derive(Debug, Clone)]
pub struct CloseReason {
    pub code: u16,
    pub reason: String,
    /// Write what is already queued before the close frame (drain).
    pub flush_first: bool,
}

/// One subscription of a socket and the router that holds it.
#[derive(Debug, Clone)]
pub struct Subscription {
    pub topic: Topic,
    /// Presence member, for group topics.
    pub member: Option<String>,
    /// The router it was sent to; `None` while no router owns the topic.
    pub at: Option<Arc<str>>,
}

/// What a socket told the routers, so it can be moved, replayed and closed.
#[derive(Default)]
pub struct Routing {
    /// Routers (by id) that were sent `ConnectionOpened` for this socket.
    pub opened_on: Vec<Arc<str>>,
    pub topics: Vec<Subscription>,
}

/// Frames waiting for the writer. A plain deque under a lock rather than
/// a channel: an idle socket's queue allocates nothing (a bounded tokio
/// channel allocates about 2 KiB up front), and every push and take is a
/// short critical section with one writer on the other side.
#[derive(Default)]
struct Queue {
    frames: Mutex<VecDeque<Outbound>>,
    ready: Notify,
}

/// A drained queue keeps at most this many slots allocated.
const KEEP_SLOTS: usize = 16;

pub struct ConnHandle {
    pub id: u64,
    pub dialect: &'static dyn Dialect,
    pub tenant: String,
    pub principal: String,
    /// What permessage-deflate agreed, if it was negotiated.
    pub deflate: Option<crate::deflate::Deflate>,
    queue: Queue,
    max_messages: usize,
    queued_bytes: AtomicUsize,
    max_bytes: usize,
    /// Fired once the socket must close; the writer sends the close frame.
    pub kill: CancellationToken,
    close: OnceLock<CloseReason>,
    /// Woken each time the writer has written a batch.
    written: Notify,
    /// The newest backlog hand-over for this socket; an older one stops.
    pub backlog_run: AtomicU64,
    /// Owned by the socket's reader; read by router replay and close.
    pub routing: Mutex<Routing>,
    /// What the socket has of each topic with history.
    positions: Mutex<crate::recovery::PositionBook>,
}

impl ConnHandle {
    pub fn new(
        id: u64,
        dialect: &'static dyn Dialect,
        tenant: String,
        principal: String,
        max_messages: usize,
        max_bytes: usize,
    ) -> Self {
        Self {
            id,
            dialect,
            tenant,
            principal,
            deflate: None,
            queue: Queue::default(),
            max_messages,
            queued_bytes: AtomicUsize::new(0),
            max_bytes,
            kill: CancellationToken::new(),
            close: OnceLock::new(),
            written: Notify::new(),
            backlog_run: AtomicU64::new(0),
            routing: Mutex::default(),
            positions: Mutex::default(),
        }
    }

    /// Queues a frame; a socket whose queue is full is closed with 1013
    /// instead of slowing anyone else down. Returns whether it was queued.
    pub fn push(&self, frame: Bytes) -> bool {
        self.push_message(Outbound::Text(frame))
    }

    /// Queues a text message compressed for this socket's deflate
    /// parameters, under the same bounds.
    pub fn push_compressed(&self, frame: Bytes) -> bool {
        self.push_message(Outbound::CompressedText(frame))
    }

    /// Queues a binary frame, under the same bounds as text.
    pub fn push_binary(&self, frame: Bytes) -> bool {
        self.push_message(Outbound::Binary(frame))
    }

    fn push_message(&self, message: Outbound) -> bool {
        if self.kill.is_cancelled() {
            return false;
        }
        let len = match &message {
            Outbound::Text(frame)
            | Outbound::Binary(frame)
            | Outbound::CompressedText(frame)
            | Outbound::Pong(frame) => frame.len(),
        };
        let queued = self.queued_bytes.fetch_add(len, Ordering::Relaxed) + len;
        if queued > self.max_bytes || !self.enqueue(message) {
            self.queued_bytes.fetch_sub(len, Ordering::Relaxed);
            metrics::counter!("switchboard_edge_slow_consumer_closes_total", "dialect" => self.dialect.label())
                .increment(1);
            self.close(1013, "slow consumer: outbound queue full", false);
            return false;
        }
        true
    }

    /// Queues a pong; dropped when the queue is full (the socket is closing).
    pub fn pong(&self, payload: Bytes) {
        self.enqueue(Outbound::Pong(payload));
    }

    fn enqueue(&self, frame: Outbound) -> bool {
        {
            let mut frames = self.frames();
            if frames.len() >= self.max_messages {
                return false;
            }
            frames.push_back(frame);
        }
        self.queue.ready.notify_one();
        true
    }

    fn frames(&self) -> std::sync::MutexGuard<'_, VecDeque<Outbound>> {
        self.queue.frames.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until a frame has been queued; the frame may already have
    /// been taken by then. For the writer, the one consumer: a push made
    /// before this is awaited is not missed.
    pub async fn queued(&self) {
        if self.frames().is_empty() {
            self.queue.ready.notified().await;
        }
    }

    /// The oldest queued frame.
    pub fn pop(&self) -> Option<Outbound> {
        let mut frames = self.frames();
        let frame = frames.pop_front();
        if frames.is_empty() && frames.capacity() > KEEP_SLOTS {
            *frames = VecDeque::new();
        }
        frame
    }

    /// Called by the writer once a queued text frame is written.
    pub fn written(&self, len: usize) {
        self.queued_bytes.fetch_sub(len, Ordering::Relaxed);
    }

    /// Called by the writer after each batch it wrote.
    pub fn batch_written(&self) {
        self.written.notify_waiters();
    }

    /// The queue's bounds: (messages, bytes).
    pub fn bounds(&self) -> (usize, usize) {
        (self.max_messages, self.max_bytes)
    }

    /// Waits until at most `messages` frames and `bytes` bytes are
    /// queued; false when the socket closes first.
    pub async fn drained_to(&self, messages: usize, bytes: usize) -> bool {
        loop {
            let written = self.written.notified();
            tokio::pin!(written);
            // Registered before the check, so a batch written in between
            // is not missed.
            written.as_mut().enable();
            if self.kill.is_cancelled() {
                return false;
            }
            let queued = self.frames().len();
            if queued <= messages && self.queued_bytes.load(Ordering::Relaxed) <= bytes {
                return true;
            }
            tokio::select! {
                () = written => {}
                () = self.kill.cancelled() => return false,
            }
        }
    }

    /// Asks the writer to close the socket with `code`.
    pub fn close(&self, code: u16, reason: &str, flush_first: bool) {
        let _ = self.close.set(CloseReason {
            code,
            reason: reason.to_owned(),
            flush_first,
        });
        self.kill.cancel();
    }

    pub fn close_reason(&self) -> Option<&CloseReason> {
        self.close.get()
    }

    pub fn routing(&self) -> std::sync::MutexGuard<'_, Routing> {
        self.routing.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn positions(&self) -> std::sync::MutexGuard<'_, crate::recovery::PositionBook> {
        self.positions.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Live sockets of this edge by connection id. Each entry is written only
/// by its own socket task (insert at open, remove at close).
#[derive(Default)]
pub struct Registry {
    connections: DashMap<u64, Arc<ConnHandle>>,
}

impl Registry {
    pub fn insert(&self, handle: Arc<ConnHandle>) {
        self.connections.insert(handle.id, handle);
    }

    pub fn remove(&self, id: u64) {
        self.connections.remove(&id);
    }

    pub fn get(&self, id: u64) -> Option<Arc<ConnHandle>> {
        self.connections.get(&id).map(|entry| entry.value().clone())
    }

    pub fn len(&self) -> usize {
        self.connections.len()
    }

    pub fn is_empty(&self) -> bool {
        self.connections.is_empty()
    }

    /// A snapshot, so no map guard is held while the caller works.
    pub fn all(&self) -> Vec<Arc<ConnHandle>> {
        self.connections.iter().map(|e| e.value().clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dialect::group::V3;

    fn handle(messages: usize, bytes: usize) -> ConnHandle {
        ConnHandle::new(1, &V3, "t".into(), "p".into(), messages, bytes)
    }

    fn text(frame: Option<Outbound>) -> Bytes {
        match frame {
            Some(Outbound::Text(bytes)) => bytes,
            _ => panic!("expected a text frame"),
        }
    }

    #[test]
    fn full_queue_closes_with_1013() {
        let h = handle(2, 1 << 20);
        assert!(h.push(Bytes::from_static(b"a")));
        assert!(h.push(Bytes::from_static(b"b")));
        assert!(!h.push(Bytes::from_static(b"c")));
        assert!(h.kill.is_cancelled());
        assert_eq!(h.close_reason().unwrap().code, 1013);
        assert!(!h.push(Bytes::from_static(b"d")), "nothing after close");
    }

    #[test]
    fn byte_bound_closes_with_1013() {
        let h = handle(100, 10);
        assert!(h.push(Bytes::from_static(b"12345")));
        assert!(h.push(Bytes::from_static(b"12345")));
        assert!(!h.push(Bytes::from_static(b"1")));
        assert_eq!(h.close_reason().unwrap().code, 1013);
    }

    #[test]
    fn written_frees_bytes() {
        let h = handle(100, 10);
        assert!(h.push(Bytes::from_static(b"1234567890")));
        let frame = text(h.pop());
        h.written(frame.len());
        assert!(h.push(Bytes::from_static(b"1234567890")));
    }

    #[test]
    fn first_close_reason_wins() {
        let h = handle(1, 1);
        h.close(1001, "drain", true);
        h.close(1013, "slow", false);
        assert_eq!(h.close_reason().unwrap().code, 1001);
    }

    #[test]
    fn frames_leave_in_order_and_pongs_share_the_bound() {
        let h = handle(3, 1 << 20);
        assert!(h.push(Bytes::from_static(b"a")));
        h.pong(Bytes::from_static(b"p"));
        assert!(h.push(Bytes::from_static(b"b")));
        h.pong(Bytes::from_static(b"dropped: queue full"));
        assert_eq!(text(h.pop()), "a");
        assert!(matches!(h.pop(), Some(Outbound::Pong(p)) if p == "p"));
        assert_eq!(text(h.pop()), "b");
        assert!(h.pop().is_none());
        assert!(!h.kill.is_cancelled(), "a dropped pong closes nothing");
    }

    #[test]
    fn a_drained_burst_gives_its_memory_back() {
        let h = handle(1000, 1 << 20);
        for _ in 0..500 {
            assert!(h.push(Bytes::from_static(b"x")));
        }
        assert!(h.frames().capacity() >= 500);
        while h.pop().is_some() {}
        assert_eq!(h.frames().capacity(), 0);
    }

    #[tokio::test]
    async fn waiting_for_a_drain_ends_once_the_writer_took_enough() {
        let h = Arc::new(handle(10, 1 << 20));
        for _ in 0..4 {
            assert!(h.push(Bytes::from_static(b"xx")));
        }
        assert!(h.drained_to(4, 8).await, "already there");
        let waiter = {
            let h = h.clone();
            tokio::spawn(async move { h.drained_to(1, 2).await })
        };
        for _ in 0..3 {
            let frame = text(h.pop());
            h.written(frame.len());
        }
        h.batch_written();
        let drained = tokio::time::timeout(std::time::Duration::from_secs(5), waiter).await;
        assert!(drained.expect("woken by the batch").unwrap());
        let stuck = {
            let h = h.clone();
            tokio::spawn(async move { h.drained_to(0, 0).await })
        };
        h.close(1000, "bye", false);
        let closed = tokio::time::timeout(std::time::Duration::from_secs(5), stuck).await;
        assert!(!closed.expect("woken by the close").unwrap());
    }

    #[tokio::test]
    async fn the_writer_is_woken_by_a_push_made_before_it_waits() {
        let h = Arc::new(handle(10, 1 << 20));
        assert!(h.push(Bytes::from_static(b"early")));
        tokio::time::timeout(std::time::Duration::from_secs(5), h.queued())
            .await
            .expect("a queued frame is seen at once");
        assert_eq!(text(h.pop()), "early");
        let pusher = h.clone();
        let push = tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            pusher.push(Bytes::from_static(b"late"))
        });
        tokio::time::timeout(std::time::Duration::from_secs(5), h.queued())
            .await
            .expect("a later push wakes the waiting writer");
        assert!(push.await.unwrap());
        assert_eq!(text(h.pop()), "late");
    }
}
