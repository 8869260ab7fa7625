//! Requests awaiting a router's answer, by correlation id. Each pending
//! request is answered exactly once, by whichever comes first: the
//! router's response, the failure to send it, or its deadline (the edge's
//! request timeout, checked every [`SWEEP`]). Whatever comes later for the
//! same id, or for an id never given out, finds nothing and is dropped.
//! So an entry stays in the table no longer than its timeout and a sweep,
//! and the table holds at most [`MAX_PENDING`] entries.
//!
//! A publish to a topic with history is *kept* with its entry until its
//! owner accepts it: one that could not be sent waits for an owner, and
//! one sent to a router that left the view, or on a session that ended,
//! goes again to the owner now ([`Upstream::resend_kept`]), as does one a
//! router answered `unavailable` (it could not reach the owner), at the
//! next sweep. Its publish id makes the resend idempotent at the owner.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use switchboard_proto::{ErrorCode, Publish, Request, Response, Topic, edge_frame, request};

use super::Upstream;
use super::link::Link;
use crate::dialect::{RequestBody, ResponseMapper, Unavailable};
use crate::outbound::Registry;

/// How often deadlines are checked.
const SWEEP: Duration = Duration::from_millis(250);

/// Requests one edge waits on at most; past this a request is answered
/// unavailable at once rather than growing the table.
pub const MAX_PENDING: usize = 65_536;

/// One request awaiting its answer.
pub(super) struct Pending {
    /// The asking socket (0: none), which gets the frame the answer makes.
    conn: u64,
    deadline: Instant,
    on_response: ResponseMapper,
    /// A publish kept until it is accepted (boxed: most requests have
    /// none, and the table holds many).
    kept: Option<Box<Kept>>,
}

/// A publish kept for sending again.
pub(super) struct Kept {
    topic: Topic,
    body: request::Body,
    /// The router and session it last went out on; `None` while it could
    /// not be sent.
    sent_on: Option<(Arc<str>, u64)>,
}

impl Pending {
    /// Turns `answer` into the socket's frame, if any, and queues it on the
    /// asking socket if that is still open.
    fn answer(self, answer: Result<Response, Unavailable>, registry: &Registry) {
        if let Some(reply) = (self.on_response)(answer)
            && let Some(conn) = registry.get(self.conn)
        {
            conn.push(reply);
        }
    }
}

/// The pending requests. The lock is held only to insert or take entries:
/// answers are made, and resends sent, after it is released.
pub(super) struct Correlations {
    pending: Mutex<HashMap<u64, Pending>>,
    next: AtomicU64,
    timeout: Duration,
    /// Set once an owner answered a publish with its place in a history:
    /// owners then drop resends they already hold, so a publish sent to a
    /// router that went away may be sent again without a duplicate.
    idempotent: AtomicBool,
    /// Set when a kept publish may be waiting unsent (none could take it,
    /// or a router answered `unavailable`), so that the sweep looks for
    /// it; the sweep does not walk the table otherwise.
    parked: AtomicBool,
}

impl Correlations {
    pub(super) fn new(timeout: Duration) -> Self {
        Self {
            pending: Mutex::default(),
            next: AtomicU64::new(1),
            timeout,
            idempotent: AtomicBool::new(false),
            parked: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Pending>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for the answer to a request of `conn`: returns the request's
    /// correlation id, or the mapper back when the table is full.
    pub(super) fn pend(
        &self,
        conn: u64,
        on_response: ResponseMapper,
    ) -> Result<u64, ResponseMapper> {
        self.insert(Pending {
            conn,
            deadline: Instant::now() + self.timeout,
            on_response,
            kept: None,
        })
        .map_err(|pending| pending.on_response)
    }

    fn insert(&self, pending: Pending) -> Result<u64, Pending> {
        let mut table = self.lock();
        if table.len() >= MAX_PENDING {
            metrics::counter!("switchboard_edge_requests_refused_total", "reason" => "too_many_pending")
                .increment(1);
            return Err(pending);
        }
        let correlation_id = self.next.fetch_add(1, Ordering::Relaxed);
        if pending.kept.is_some() {
            // Unsent until it goes out.
            self.parked.store(true, Ordering::Relaxed);
        }
        table.insert(correlation_id, pending);
        Ok(correlation_id)
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

    /// The kept publishes to send now, as (correlation id, topic, body):
    /// those not sent, or sent elsewhere than `owner` answers for their
    /// topic (the router and session a frame would go out on now; `None`:
    /// no owner can take it yet).
    fn kept_due(
        &self,
        mut owner: impl FnMut(&Topic) -> Option<(Arc<str>, u64)>,
    ) -> Vec<(u64, Topic, request::Body)> {
        let idempotent = self.idempotent.load(Ordering::Relaxed);
        let pending = self.lock();
        let mut due = Vec::new();
        for (id, p) in pending.iter() {
            let Some(kept) = &p.kept else { continue };
            let Some(now) = owner(&kept.topic) else {
                if kept.sent_on.is_none() {
                    self.parked.store(true, Ordering::Relaxed);
                }
                continue;
            };
            let again = match &kept.sent_on {
                None => true,
                // A router that may hold it already would append a copy
                // unless it drops resends by publish id.
                Some(sent) => *sent != now && idempotent,
            };
            if again {
                due.push((*id, kept.topic.clone(), kept.body.clone()));
            }
        }
        due
    }

    /// Records where kept publish `correlation_id` went out (`None`: it
    /// could not be sent, or must go again); false when it is no kept
    /// publish (or no longer pending).
    fn sent(&self, correlation_id: u64, sent_on: Option<(Arc<str>, u64)>) -> bool {
        let mut table = self.lock();
        let Some(kept) = table.get_mut(&correlation_id).and_then(|p| p.kept.as_mut()) else {
            return false;
        };
        if sent_on.is_none() {
            self.parked.store(true, Ordering::Relaxed);
        }
        kept.sent_on = sent_on;
        true
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
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
            let _ = tx.send(answer);
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
        let body = self.request_body(conn, topic.clone(), body);
        let keep = matches!(body, request::Body::Publish(_)) && topic.kind().keeps_history();
        let pending = Pending {
            conn,
            deadline: Instant::now() + self.requests.timeout,
            on_response,
            kept: keep.then(|| {
                Box::new(Kept {
                    topic: topic.clone(),
                    body: body.clone(),
                    sent_on: None,
                })
            }),
        };
        let correlation_id = match self.requests.insert(pending) {
            Ok(id) => id,
            Err(pending) => return pending.answer(Err(Unavailable), &self.registry),
        };
        let sent = match self.owner(&topic) {
            Some(link) => self.send_on(&link, correlation_id, body, keep).await,
            None => false,
        };
        if sent {
            return;
        }
        if keep {
            // Sent once an owner can take it, or answered at its deadline.
            metrics::counter!("switchboard_edge_publishes_kept_total").increment(1);
        } else {
            self.unanswered(correlation_id);
        }
    }

    /// Sends request `correlation_id` on `link`; a kept publish records
    /// where it went first, so that a resend running meanwhile skips it.
    async fn send_on(
        &self,
        link: &Link,
        correlation_id: u64,
        body: request::Body,
        kept: bool,
    ) -> bool {
        if kept {
            self.requests
                .sent(correlation_id, Some((link.id.clone(), link.session())));
        }
        let frame = edge_frame::Body::Request(Request {
            correlation_id,
            body: Some(body),
        });
        let sent = link.send(frame.into()).await.is_ok();
        if kept && !sent {
            self.requests.sent(correlation_id, None);
        }
        sent
    }

    /// Sends again every kept publish that its topic's owner now has not
    /// had on its open session: after the view changed (the owner left,
    /// or a new one took the topic) and after a session opened.
    pub(super) async fn resend_kept(&self) {
        let due = self.requests.kept_due(|topic| {
            let link = self.owner(topic)?;
            link.is_up().then(|| (link.id.clone(), link.session()))
        });
        let mut resent = 0u64;
        for (correlation_id, topic, body) in due {
            let Some(link) = self.owner(&topic) else {
                continue;
            };
            if self.send_on(&link, correlation_id, body, true).await {
                resent += 1;
            }
        }
        if resent > 0 {
            metrics::counter!("switchboard_edge_publishes_resent_total").increment(resent);
            tracing::info!(edge_id = %self.edge_id, resent, "kept publishes sent to their owners");
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
    pub(super) fn answered(&self, response: Response) {
        if response.position.is_some() {
            self.requests.idempotent.store(true, Ordering::Relaxed);
        }
        if response.error == ErrorCode::Unavailable as i32
            && self.requests.sent(response.correlation_id, None)
        {
            // A router that could not reach the owner (its view lags, or
            // the owner just died): a kept publish goes again shortly.
            metrics::counter!("switchboard_edge_publishes_kept_total").increment(1);
            return;
        }
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
            // Publishes that found no owner, or one that could not reach
            // it, try again until their deadline.
            if self.requests.parked.swap(false, Ordering::Relaxed) {
                self.resend_kept().await;
            }
        }
    }

    /// The envelope of a dialect's request for connection `conn`.
    fn request_body(&self, conn: u64, topic: Topic, body: RequestBody) -> request::Body {
        match body {
            RequestBody::Publish(payload) => {
                // Publishes to topics with history carry an id, so that a
                // resend to a new owner is not appended twice.
                let publish_id = if topic.kind().keeps_history() {
                    self.next_publish_id()
                } else {
                    String::new()
                };
                request::Body::Publish(Publish {
                    topic: Some(topic),
                    payload: Some(payload),
                    from_conn: conn,
                    publish_id,
                })
            }
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

#[cfg(test)]
pub(super) mod tests {
    use std::sync::atomic::AtomicUsize;

    use bytes::Bytes;
    use switchboard_cluster::TenantPools;
    use switchboard_proto::{RouterFrame, TopicKind, router_frame};

    use super::*;
    use crate::dialect::group::V3;
    use crate::outbound::{ConnHandle, Outbound};
    use crate::transport::TransportError;
    use crate::upstream::Connector;

    const TIMEOUT: Duration = Duration::from_secs(5);

    /// An upstream with no router and one local socket (id 7): nothing in
    /// it opens a socket or a session.
    pub(in crate::upstream) fn upstream() -> (Arc<Upstream>, Arc<ConnHandle>) {
        let registry = Arc::new(Registry::default());
        let conn = Arc::new(ConnHandle::new(7, &V3, "t".into(), "p".into(), 64, 1 << 16));
        registry.insert(conn.clone());
        let connector: Connector = Arc::new(|info| {
            Err(TransportError::Connect {
                addr: info.grpc_addr.clone(),
                reason: "no router in this test".to_owned(),
            })
        });
        let upstream = Upstream::new(
            "edge-1".to_owned(),
            TenantPools::default(),
            connector,
            registry,
            TIMEOUT,
        );
        (upstream, conn)
    }

    /// A mapper that counts its calls and says what it got.
    fn counted(calls: &Arc<AtomicUsize>) -> ResponseMapper {
        let calls = calls.clone();
        Box::new(move |answer| {
            calls.fetch_add(1, Ordering::SeqCst);
            Some(Bytes::from(match answer {
                Ok(response) => format!("answer {}", response.delivered),
                Err(Unavailable) => "unavailable".to_owned(),
            }))
        })
    }

    fn response(correlation_id: u64, delivered: u32) -> RouterFrame {
        RouterFrame {
            body: Some(router_frame::Body::Response(Response {
                correlation_id,
                delivered,
                ..Response::default()
            })),
        }
    }

    pub(in crate::upstream) fn frames(conn: &ConnHandle) -> Vec<String> {
        std::iter::from_fn(|| conn.pop())
            .map(|frame| match frame {
                Outbound::Text(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
                _ => panic!("text frames only"),
            })
            .collect()
    }

    #[test]
    fn an_answer_reaches_its_socket_once() {
        let (upstream, conn) = upstream();
        let calls = Arc::new(AtomicUsize::new(0));
        let id = upstream
            .requests
            .pend(conn.id, counted(&calls))
            .ok()
            .unwrap();
        assert!(upstream.dispatch(response(id, 3)));
        assert!(
            upstream.dispatch(response(id, 4)),
            "a second answer ends nothing"
        );
        assert_eq!(frames(&conn), ["answer 3"]);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(upstream.requests.len(), 0);
    }

    #[test]
    fn each_request_gets_its_own_id_and_its_own_answer() {
        let (upstream, conn) = upstream();
        let calls = Arc::new(AtomicUsize::new(0));
        let first = upstream
            .requests
            .pend(conn.id, counted(&calls))
            .ok()
            .unwrap();
        let second = upstream
            .requests
            .pend(conn.id, counted(&calls))
            .ok()
            .unwrap();
        assert_ne!(first, second);
        assert!(upstream.dispatch(response(second, 2)));
        assert!(upstream.dispatch(response(first, 1)));
        assert_eq!(frames(&conn), ["answer 2", "answer 1"]);
    }

    #[test]
    fn an_answer_for_an_unknown_id_is_dropped() {
        let (upstream, conn) = upstream();
        let calls = Arc::new(AtomicUsize::new(0));
        let id = upstream
            .requests
            .pend(conn.id, counted(&calls))
            .ok()
            .unwrap();
        assert!(upstream.dispatch(response(id + 100, 1)));
        assert!(upstream.dispatch(response(0, 1)));
        assert!(frames(&conn).is_empty());
        assert_eq!(calls.load(Ordering::SeqCst), 0);
        assert_eq!(upstream.requests.len(), 1, "the real request still waits");
    }

    #[test]
    fn a_request_never_answered_times_out_as_unavailable() {
        let (upstream, conn) = upstream();
        let calls = Arc::new(AtomicUsize::new(0));
        upstream
            .requests
            .pend(conn.id, counted(&calls))
            .ok()
            .unwrap();
        upstream.expire(Instant::now());
        assert_eq!(upstream.requests.len(), 1, "not before its deadline");
        assert!(frames(&conn).is_empty());
        upstream.expire(Instant::now() + TIMEOUT);
        assert_eq!(frames(&conn), ["unavailable"]);
        assert_eq!(upstream.requests.len(), 0);
        upstream.expire(Instant::now() + TIMEOUT * 2);
        assert_eq!(calls.load(Ordering::SeqCst), 1, "timed out once");
    }

    #[test]
    fn an_answer_after_the_timeout_is_dropped() {
        let (upstream, conn) = upstream();
        let calls = Arc::new(AtomicUsize::new(0));
        let id = upstream
            .requests
            .pend(conn.id, counted(&calls))
            .ok()
            .unwrap();
        upstream.expire(Instant::now() + TIMEOUT);
        assert!(upstream.dispatch(response(id, 9)));
        assert_eq!(frames(&conn), ["unavailable"]);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn an_answer_for_a_closed_socket_still_reaches_its_mapper() {
        let (upstream, conn) = upstream();
        let calls = Arc::new(AtomicUsize::new(0));
        let id = upstream
            .requests
            .pend(conn.id + 1, counted(&calls))
            .ok()
            .unwrap();
        assert!(upstream.dispatch(response(id, 1)));
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "a waiting call learns its answer"
        );
        assert!(frames(&conn).is_empty(), "no other socket gets the frame");
    }

    #[test]
    fn no_request_outlives_its_deadline() {
        let (upstream, conn) = upstream();
        let calls = Arc::new(AtomicUsize::new(0));
        for _ in 0..500 {
            upstream
                .requests
                .pend(conn.id + 1, counted(&calls))
                .ok()
                .unwrap();
        }
        let first_deadline = Instant::now() + TIMEOUT;
        std::thread::sleep(Duration::from_millis(5));
        for _ in 0..300 {
            upstream
                .requests
                .pend(conn.id + 1, counted(&calls))
                .ok()
                .unwrap();
        }
        assert_eq!(upstream.requests.len(), 800);
        upstream.expire(first_deadline);
        assert_eq!(
            upstream.requests.len(),
            300,
            "exactly the older ones are due"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 500);
        upstream.expire(Instant::now() + TIMEOUT);
        assert_eq!(
            upstream.requests.len(),
            0,
            "the table empties once all are due"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 800);
    }

    #[test]
    fn a_reset_ends_the_session() {
        let (upstream, _) = upstream();
        let reset = RouterFrame {
            body: Some(router_frame::Body::Reset(Default::default())),
        };
        assert!(!upstream.dispatch(reset));
        assert!(
            upstream.dispatch(RouterFrame::default()),
            "an empty frame is skipped"
        );
    }

    #[tokio::test]
    async fn a_request_with_no_router_is_answered_unavailable_at_once() {
        let (upstream, conn) = upstream();
        let calls = Arc::new(AtomicUsize::new(0));
        let topic = Topic::new("t", TopicKind::Group, "g");
        upstream
            .request(&conn, topic.clone(), RequestBody::Sync, counted(&calls))
            .await;
        assert_eq!(frames(&conn), ["unavailable"]);
        assert_eq!(upstream.requests.len(), 0);
        let answer = upstream
            .call(conn.id, topic.clone(), RequestBody::Presence)
            .await;
        assert!(matches!(answer, Err(Unavailable)));
        assert_eq!(upstream.requests.len(), 0);

        upstream
            .subscribe_confirmed(&conn, topic.clone(), counted(&calls))
            .await;
        assert_eq!(frames(&conn), ["unavailable"], "the confirmation says so");
        let routing = conn.routing();
        assert_eq!(routing.topics.len(), 1, "made once an owner appears");
        assert!(routing.topics[0].at.is_none());
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_publish_to_a_topic_with_history_waits_for_an_owner() {
        let (upstream, conn) = upstream();
        let calls = Arc::new(AtomicUsize::new(0));
        let group = Topic::new("t", TopicKind::Group, "g");
        let payload = || RequestBody::Publish(switchboard_proto::Payload::json(Bytes::new()));
        upstream
            .request(&conn, group, payload(), counted(&calls))
            .await;
        assert!(frames(&conn).is_empty(), "kept, not refused");
        assert_eq!(upstream.requests.len(), 1);
        // Without history (IoT) nothing is kept: refused at once.
        let iot = Topic::new("t", TopicKind::Iot, "d");
        upstream
            .request(&conn, iot, payload(), counted(&calls))
            .await;
        assert_eq!(frames(&conn), ["unavailable"]);
        assert_eq!(upstream.requests.len(), 1);
        // No owner before the deadline: answered then.
        upstream.expire(Instant::now() + TIMEOUT);
        assert_eq!(frames(&conn), ["unavailable"]);
        assert_eq!(upstream.requests.len(), 0);
    }

    fn kept(correlations: &Correlations, topic: &Topic) -> u64 {
        correlations
            .insert(Pending {
                conn: 7,
                deadline: Instant::now() + TIMEOUT,
                on_response: Box::new(|_| None),
                kept: Some(Box::new(Kept {
                    topic: topic.clone(),
                    body: request::Body::Publish(Publish::default()),
                    sent_on: None,
                })),
            })
            .ok()
            .unwrap()
    }

    fn due(correlations: &Correlations, owner: Option<(&str, u64)>) -> Vec<u64> {
        let mut ids: Vec<u64> = correlations
            .kept_due(|_| owner.map(|(id, session)| (Arc::from(id), session)))
            .into_iter()
            .map(|(id, _, _)| id)
            .collect();
        ids.sort_unstable();
        ids
    }

    #[test]
    fn a_kept_publish_goes_again_where_the_owner_has_not_had_it() {
        let correlations = Correlations::new(TIMEOUT);
        let topic = Topic::new("t", TopicKind::Group, "g");
        let unsent = kept(&correlations, &topic);
        let sent = kept(&correlations, &topic);
        correlations.sent(sent, Some((Arc::from("r1"), 1)));
        assert_eq!(due(&correlations, None), Vec::<u64>::new(), "no owner yet");
        assert_eq!(due(&correlations, Some(("r1", 1))), [unsent]);
        // Until an owner has shown it drops resends by id, what a router
        // may hold already is not sent again.
        assert_eq!(due(&correlations, Some(("r2", 1))), [unsent]);
        correlations.idempotent.store(true, Ordering::Relaxed);
        assert_eq!(due(&correlations, Some(("r2", 1))), [unsent, sent]);
        assert_eq!(
            due(&correlations, Some(("r1", 2))),
            [unsent, sent],
            "a new session of the same router lost what the old one had"
        );
        assert_eq!(due(&correlations, Some(("r1", 1))), [unsent]);
    }

    #[test]
    fn the_table_refuses_past_its_bound() {
        let correlations = Correlations::new(TIMEOUT);
        for _ in 0..MAX_PENDING {
            assert!(correlations.pend(1, Box::new(|_| None)).is_ok());
        }
        assert!(correlations.pend(1, Box::new(|_| None)).is_err());
        assert_eq!(correlations.len(), MAX_PENDING);
    }

    #[test]
    fn a_kept_publish_a_router_could_not_take_waits_for_the_next_try() {
        let (upstream, _) = upstream();
        let topic = Topic::new("t", TopicKind::Group, "g");
        let id = kept(&upstream.requests, &topic);
        upstream.requests.sent(id, Some((Arc::from("r1"), 1)));
        let refusal = |error: ErrorCode| RouterFrame {
            body: Some(router_frame::Body::Response(Response {
                correlation_id: id,
                error: error as i32,
                ..Response::default()
            })),
        };
        upstream.requests.parked.store(false, Ordering::Relaxed);
        assert!(upstream.dispatch(refusal(ErrorCode::Unavailable)));
        assert_eq!(upstream.requests.len(), 1, "still kept");
        assert!(
            upstream.requests.parked.load(Ordering::Relaxed),
            "the sweep looks for it"
        );
        assert_eq!(due(&upstream.requests, Some(("r1", 1))), [id], "sent again");
        // Any other refusal is the answer.
        assert!(upstream.dispatch(refusal(ErrorCode::Internal)));
        assert_eq!(upstream.requests.len(), 0);
    }
}
