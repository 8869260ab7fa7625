//! Each socket's outbound side: a bounded queue drained by one writer task,
//! and the registry that maps connection ids to it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use dashmap::DashMap;
use switchboard_proto::Topic;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::dialect::Dialect;

/// A frame for the writer task.
pub enum Outbound {
    Text(Bytes),
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

pub struct ConnHandle {
    pub id: u64,
    pub dialect: &'static dyn Dialect,
    pub tenant: String,
    pub principal: String,
    queue: mpsc::Sender<Outbound>,
    queued_bytes: AtomicUsize,
    max_bytes: usize,
    /// Fired once the socket must close; the writer sends the close frame.
    pub kill: CancellationToken,
    close: OnceLock<CloseReason>,
    /// Owned by the socket's reader; read by router replay and close.
    pub routing: Mutex<Routing>,
}

impl ConnHandle {
    pub fn new(
        id: u64,
        dialect: &'static dyn Dialect,
        tenant: String,
        principal: String,
        queue: mpsc::Sender<Outbound>,
        max_bytes: usize,
    ) -> Self {
        Self {
            id,
            dialect,
            tenant,
            principal,
            queue,
            queued_bytes: AtomicUsize::new(0),
            max_bytes,
            kill: CancellationToken::new(),
            close: OnceLock::new(),
            routing: Mutex::default(),
        }
    }

    /// Queues a frame; a socket whose queue is full is closed with 1013
    /// instead of slowing anyone else down. Returns whether it was queued.
    pub fn push(&self, frame: Bytes) -> bool {
        if self.kill.is_cancelled() {
            return false;
        }
        let len = frame.len();
        let queued = self.queued_bytes.fetch_add(len, Ordering::Relaxed) + len;
        if queued > self.max_bytes || self.queue.try_send(Outbound::Text(frame)).is_err() {
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
        let _ = self.queue.try_send(Outbound::Pong(payload));
    }

    /// Called by the writer once a queued text frame is written.
    pub fn written(&self, len: usize) {
        self.queued_bytes.fetch_sub(len, Ordering::Relaxed);
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

    fn handle(messages: usize, bytes: usize) -> (ConnHandle, mpsc::Receiver<Outbound>) {
        let (tx, rx) = mpsc::channel(messages);
        (
            ConnHandle::new(1, &V3, "t".into(), "p".into(), tx, bytes),
            rx,
        )
    }

    #[test]
    fn full_queue_closes_with_1013() {
        let (h, _rx) = handle(2, 1 << 20);
        assert!(h.push(Bytes::from_static(b"a")));
        assert!(h.push(Bytes::from_static(b"b")));
        assert!(!h.push(Bytes::from_static(b"c")));
        assert!(h.kill.is_cancelled());
        assert_eq!(h.close_reason().unwrap().code, 1013);
        assert!(!h.push(Bytes::from_static(b"d")), "nothing after close");
    }

    #[test]
    fn byte_bound_closes_with_1013() {
        let (h, _rx) = handle(100, 10);
        assert!(h.push(Bytes::from_static(b"12345")));
        assert!(h.push(Bytes::from_static(b"12345")));
        assert!(!h.push(Bytes::from_static(b"1")));
        assert_eq!(h.close_reason().unwrap().code, 1013);
    }

    #[test]
    fn written_frees_bytes() {
        let (h, mut rx) = handle(100, 10);
        assert!(h.push(Bytes::from_static(b"1234567890")));
        let Ok(Outbound::Text(frame)) = rx.try_recv() else {
            panic!()
        };
        h.written(frame.len());
        assert!(h.push(Bytes::from_static(b"1234567890")));
    }

    #[test]
    fn first_close_reason_wins() {
        let (h, _rx) = handle(1, 1);
        h.close(1001, "drain", true);
        h.close(1013, "slow", false);
        assert_eq!(h.close_reason().unwrap().code, 1001);
    }
}
