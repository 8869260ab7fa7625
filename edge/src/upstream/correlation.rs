//! Requests awaiting a router's answer, by correlation id. Each pending
//! request is answered exactly once, by whichever comes first: the
//! router's response, the failure to send it, or its deadline (the edge's
//! request timeout, checked every [`SWEEP`]). Whatever comes later for the
//! same id, or for an id never given out, finds nothing and is dropped.
//! So an entry stays in the table no longer than its timeout and a sweep.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use switchboard_proto::{Publish, Request, Response, Topic, edge_frame, request};

use super::Upstream;
use crate::dialect::{RequestBody, ResponseMapper, Unavailable};
use crate::outbound::Registry;

/// How often deadlines are checked.
const SWEEP: Duration = Duration::from_millis(250);

/// One request awaiting its answer.
pub(super) struct Pending {
    /// The asking socket (0: none), which gets the frame the answer makes.
    conn: u64,
    deadline: Instant,
    on_response: ResponseMapper,
}

impl Pending {
    /// Turns `answer` into the socket's frame, if any, and queues it on the
    /// asking socket if that is still open.
    fn answer(self, answer: Result<&Response, Unavailable>, registry: &Registry) {
        if let Some(reply) = (self.on_response)(answer)
            && let Some(conn) = registry.get(self.conn)
        {
            conn.push(reply);
        }
    }
}

/// The pending requests. The lock is held only to insert or take entries:
/// answers are made after it is released.
pub(super) struct Correlations {
    pending: Mutex<HashMap<u64, Pending>>,
    next: AtomicU64,
    timeout: Duration,
}

impl Correlations {
    pub(super) fn new(timeout: Duration) -> Self {
        Self {
            pending: Mutex::default(),
            next: AtomicU64::new(1),
            timeout,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Pending>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for the answer to a request of `conn`: returns the request's
    /// correlation id.
    pub(super) fn pend(&self, conn: u64, on_response: ResponseMapper) -> u64 {
        let correlation_id = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(
            correlation_id,
            Pending {
                conn,
                deadline: Instant::now() + self.timeout,
                on_response,
            },
        );
        correlation_id
    }

    /// The request `correlation_id`, if it still awaits its answer.
    fn take(&self, correlation_id: u64) -> Option<Pending> {
        self.lock().remove(&correlation_id)
    }

    /// Takes every request whose deadline is `now` or earlier.
    fn take_expired(&self, now: Instant) -> Vec<Pending> {
        let mut pending = self.lock();
        let ids: Vec<u64> = pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        ids.iter().filter_map(|id| pending.remove(id)).collect()
    }
}

impl Upstream {
    /// Sends a request; its answer (or a timeout) reaches `on_response`,
    /// whose frame goes to the socket.
    pub async fn request(
        &self,
        conn: &crate::outbound::ConnHandle,
        topic: Topic,
        body: RequestBody,
        on_response: ResponseMapper,
    ) {
        self.send_request(conn.id, topic, body, on_response).await;
    }

    /// Sends a request for connection `conn` (0: none) and waits for its
    /// answer, or the request timeout.
    pub async fn call(
        &self,
        conn: u64,
        topic: Topic,
        body: RequestBody,
    ) -> Result<Response, Unavailable> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let on_response: ResponseMapper = Box::new(move |answer| {
            let _ = tx.send(answer.cloned());
            None
        });
        self.send_request(conn, topic, body, on_response).await;
        rx.await.unwrap_or(Err(Unavailable))
    }

    async fn send_request(
        &self,
        conn: u64,
        topic: Topic,
        body: RequestBody,
        on_response: ResponseMapper,
    ) {
        let correlation_id = self.requests.pend(conn, on_response);
        let frame = edge_frame::Body::Request(Request {
            correlation_id,
            body: Some(self.request_body(conn, topic.clone(), body)),
        });
        if self.send_for(&topic, frame).await.is_err() {
            self.unanswered(correlation_id);
        }
    }

    /// The request `correlation_id` could not be sent: it is answered as
    /// unavailable now.
    pub(super) fn unanswered(&self, correlation_id: u64) {
        if let Some(pending) = self.requests.take(correlation_id) {
            pending.answer(Err(Unavailable), &self.registry);
        }
    }

    /// A router answered `response.correlation_id`.
    pub(super) fn answered(&self, response: &Response) {
        if let Some(pending) = self.requests.take(response.correlation_id) {
            pending.answer(Ok(response), &self.registry);
        }
    }

    /// Answers every request past its deadline as unavailable.
    fn expire(&self, now: Instant) {
        for pending in self.requests.take_expired(now) {
            metrics::counter!("switchboard_edge_request_timeouts_total").increment(1);
            pending.answer(Err(Unavailable), &self.registry);
        }
    }

    pub(super) async fn expire_requests(self: Arc<Self>) {
        let mut tick = tokio::time::interval(SWEEP);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = self.stop.cancelled() => return,
            }
            self.expire(Instant::now());
        }
    }

    /// The envelope of a dialect's request for connection `conn`.
    fn request_body(&self, conn: u64, topic: Topic, body: RequestBody) -> request::Body {
        match body {
            RequestBody::Publish(payload) => request::Body::Publish(Publish {
                topic: Some(topic),
                payload: Some(payload),
                from_conn: conn,
            }),
            RequestBody::Presence => {
                request::Body::Presence(switchboard_proto::PresenceQuery { topic: Some(topic) })
            }
            RequestBody::Sync => request::Body::Collect(switchboard_proto::Collect {
                topics: vec![topic],
            }),
            // A tool answer names the socket that sent it (its router
            // adds this edge's id from the session it arrived on).
            RequestBody::Envelope(request::Body::ToolEvent(mut event)) => {
                event.from_conn = conn;
                request::Body::ToolEvent(event)
            }
            RequestBody::Envelope(body) => body,
            RequestBody::Im(op) => request::Body::Im(Box::new(switchboard_proto::ImRequest {
                topic: Some(topic),
                from_edge: self.edge_id.clone(),
                from_conn: conn,
                op: Some(*op),
            })),
        }
    }
}

