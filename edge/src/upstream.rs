//! The edge's side of the routers: which router owns a topic (from the
//! membership view), one link per live router kept open and replayed when
//! it reopens, subscriptions moved when ownership changes, requests
//! awaiting answers, and the dispatch of deliveries to local sockets.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use switchboard_cluster::{DEFAULT_POOL, RouterInfo, TenantPools, View};
use switchboard_proto::{
    ConnectionClosed, ConnectionOpened, Delivery, EdgeFrame, Publish, Request, RouterFrame,
    Subscribe, Topic, Unsubscribe, edge_frame, payload, request, router_frame,
};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::dialect::{DIALECTS, RequestBody, ResponseMapper, Unavailable};
use crate::outbound::{ConnHandle, Registry, Subscription};
use crate::transport::{Transport, TransportError};

/// Makes the transport that reaches one router.
pub type Connector =
    Arc<dyn Fn(&RouterInfo) -> Result<Arc<dyn Transport>, TransportError> + Send + Sync>;

/// One live router as seen from this edge.
pub struct Link {
    pub info: RouterInfo,
    pub id: Arc<str>,
    transport: Arc<dyn Transport>,
    /// The open session's sender; `None` while disconnected.
    tx: RwLock<Option<mpsc::Sender<EdgeFrame>>>,
    stop: CancellationToken,
}

impl Link {
    fn sender(&self) -> Option<mpsc::Sender<EdgeFrame>> {
        self.tx.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set(&self, tx: Option<mpsc::Sender<EdgeFrame>>) {
        *self.tx.write().unwrap_or_else(|e| e.into_inner()) = tx;
    }

    pub fn is_up(&self) -> bool {
        self.sender().is_some_and(|tx| !tx.is_closed())
    }

    async fn send(&self, frame: EdgeFrame) -> Result<(), Unavailable> {
        let tx = self.sender().ok_or(Unavailable)?;
        tx.send(frame).await.map_err(|_| Unavailable)
    }
}

struct Pending {
    conn: u64,
    deadline: Instant,
    on_response: ResponseMapper,
}

pub struct Upstream {
    edge_id: String,
    pools: TenantPools,
    connector: Connector,
    view: RwLock<View>,
    links: RwLock<HashMap<String, Arc<Link>>>,
    registry: Arc<Registry>,
    pending: Mutex<HashMap<u64, Pending>>,
    next_correlation: AtomicU64,
    request_timeout: Duration,
    stop: CancellationToken,
}

impl Upstream {
    pub fn new(
        edge_id: String,
        pools: TenantPools,
        connector: Connector,
        registry: Arc<Registry>,
        request_timeout: Duration,
    ) -> Arc<Self> {
        Arc::new(Self {
            edge_id,
            pools,
            connector,
            view: RwLock::default(),
            links: RwLock::default(),
            registry,
            pending: Mutex::default(),
            next_correlation: AtomicU64::new(1),
            request_timeout,
            stop: CancellationToken::new(),
        })
    }

    pub fn edge_id(&self) -> &str {
        &self.edge_id
    }

    /// Follows the membership view until [`Upstream::stop`].
    pub fn start(self: &Arc<Self>, mut view: watch::Receiver<View>) {
        let upstream = self.clone();
        tokio::spawn(async move {
            let first = view.borrow_and_update().clone();
            upstream.apply(first).await;
            loop {
                tokio::select! {
                    changed = view.changed() => {
                        if changed.is_err() {
                            // A fixed view: nothing will change any more.
                            upstream.stop.cancelled().await;
                            return;
                        }
                        let next = view.borrow_and_update().clone();
                        upstream.apply(next).await;
                    }
                    () = upstream.stop.cancelled() => return,
                }
            }
        });
        tokio::spawn(self.clone().expire_requests());
    }

    /// Closes every link.
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// Ready when a router of the default pool is reachable.
    pub fn ready(&self) -> bool {
        self.read_links()
            .values()
            .any(|l| l.info.pool == DEFAULT_POOL && l.is_up())
    }

    fn read_links(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<Link>>> {
        self.links.read().unwrap_or_else(|e| e.into_inner())
    }

    fn link(&self, id: &str) -> Option<Arc<Link>> {
        self.read_links().get(id).cloned()
    }

    /// The link to the owner of `topic` in the current view.
    fn owner(&self, topic: &Topic) -> Option<Arc<Link>> {
        let id = {
            let view = self.view.read().unwrap_or_else(|e| e.into_inner());
            view.owner(&self.pools, &topic.tenant, topic.stable_hash())?
                .id
                .clone()
        };
        self.link(&id)
    }

    /// Takes a new view: links follow the live routers, and subscriptions
    /// whose owner changed move to the new owner.
    async fn apply(self: &Arc<Self>, view: View) {
        *self.view.write().unwrap_or_else(|e| e.into_inner()) = view.clone();
        let mut started = Vec::new();
        {
            let mut links = self.links.write().unwrap_or_else(|e| e.into_inner());
            links.retain(|id, link| {
                // A restarted router (new epoch or address) gets a new link.
                let keep = view.get(id).is_some_and(|info| *info == link.info);
                if !keep {
                    link.stop.cancel();
                    link.set(None);
                }
                keep
            });
            for info in &view.routers {
                if links.contains_key(&info.id) {
                    continue;
                }
                match (self.connector)(info) {
                    Ok(transport) => {
                        let link = Arc::new(Link {
                            info: info.clone(),
                            id: Arc::from(info.id.as_str()),
                            transport,
                            tx: RwLock::new(None),
                            stop: self.stop.child_token(),
                        });
                        links.insert(info.id.clone(), link.clone());
                        started.push(link);
                    }
                    Err(e) => {
                        tracing::warn!(router_id = %info.id, error = %e, "no transport for router")
                    }
                }
            }
        }
        for link in started {
            tokio::spawn(self.clone().maintain(link));
        }
        self.rebalance().await;
    }

    /// Moves every subscription whose owner changed.
    async fn rebalance(&self) {
        let mut moved = 0u64;
        for conn in self.registry.all() {
            let moves: Vec<(Subscription, Option<Arc<str>>)> = {
                let mut routing = conn.routing();
                let mut moves = Vec::new();
                for sub in &mut routing.topics {
                    let owner = self.owner(&sub.topic).map(|l| l.id.clone());
                    if owner != sub.at {
                        let old = std::mem::replace(&mut sub.at, owner);
                        moves.push((sub.clone(), old));
                    }
                }
                moves
            };
            for (sub, old) in moves {
                moved += 1;
                if let Some(old) = old.and_then(|id| self.link(&id)) {
                    let frame = edge_frame::Body::Unsubscribe(Unsubscribe {
                        conn_id: conn.id,
                        topic: Some(sub.topic.clone()),
                        moved: true,
                    });
                    let _ = old.send(frame.into()).await;
                }
                if let Some(new) = sub.at.as_deref().and_then(|id| self.link(id)) {
                    let _ = self.subscribe_at(&conn, &new, &sub).await;
                }
            }
            self.close_unused(&conn).await;
        }
        if moved > 0 {
            metrics::counter!("switchboard_edge_ownership_moves_total").increment(moved);
            tracing::info!(edge_id = %self.edge_id, moved, "subscriptions moved to new owners");
        }
    }

    /// Tells routers that no longer hold any of `conn`'s topics that it is
    /// gone from them.
    async fn close_unused(&self, conn: &ConnHandle) {
        let unused: Vec<Arc<str>> = {
            let mut routing = conn.routing();
            let opened = std::mem::take(&mut routing.opened_on);
            let (keep, unused): (Vec<_>, Vec<_>) = opened
                .into_iter()
                .partition(|id| routing_uses(&routing.topics, id));
            routing.opened_on = keep;
            unused
        };
        self.send_closed(conn.id, unused).await;
    }

    fn opened_frame(conn: &ConnHandle) -> EdgeFrame {
        edge_frame::Body::Opened(ConnectionOpened {
            conn_id: conn.id,
            tenant: conn.tenant.clone(),
            principal: conn.principal.clone(),
            kind: String::new(),
            dialect: conn.dialect.proto() as i32,
        })
        .into()
    }

    /// Sends `Opened` to `link` unless it already has it for `conn`.
    async fn ensure_opened(&self, conn: &ConnHandle, link: &Link) -> Result<(), Unavailable> {
        let first = {
            let mut routing = conn.routing();
            if routing.opened_on.contains(&link.id) {
                false
            } else {
                routing.opened_on.push(link.id.clone());
                true
            }
        };
        if first {
            link.send(Self::opened_frame(conn)).await?;
        }
        Ok(())
    }

    async fn subscribe_at(
        &self,
        conn: &ConnHandle,
        link: &Link,
        sub: &Subscription,
    ) -> Result<(), Unavailable> {
        self.subscribe_asking(conn, link, sub, 0).await
    }

    /// Sends `sub` to `link`; a nonzero `confirm` asks the router to answer
    /// that correlation id once the subscription is applied.
    async fn subscribe_asking(
        &self,
        conn: &ConnHandle,
        link: &Link,
        sub: &Subscription,
        confirm: u64,
    ) -> Result<(), Unavailable> {
        self.ensure_opened(conn, link).await?;
        let frame = edge_frame::Body::Subscribe(Subscribe {
            conn_id: conn.id,
            topic: Some(sub.topic.clone()),
            presence_member: sub.member.clone().unwrap_or_default(),
            confirm,
        });
        link.send(frame.into()).await
    }

    /// Sends `body` to the owner of `topic`. Publishes and requests need
    /// no open connection at the router; touches follow a subscription.
    async fn send_for(&self, topic: &Topic, body: edge_frame::Body) -> Result<(), Unavailable> {
        let link = self.owner(topic).ok_or(Unavailable)?;
        link.send(body.into()).await
    }

    pub async fn subscribe(
        &self,
        conn: &ConnHandle,
        topic: Topic,
        member: Option<String>,
    ) -> Result<(), Unavailable> {
        let link = self.owner(&topic);
        let sub = Subscription {
            topic,
            member,
            at: link.as_ref().map(|l| l.id.clone()),
        };
        conn.routing().topics.push(sub.clone());
        // Without an owner now, the subscription is made when one appears.
        let link = link.ok_or(Unavailable)?;
        self.subscribe_at(conn, &link, &sub).await
    }

    /// Subscribes `conn` to `topic` and has the owner confirm once the
    /// subscription is applied (answered to `on_confirmed`, whose frame
    /// goes to the socket). The request rides in the subscription's own
    /// frame, so nothing the subscription brings (the first window of an
    /// IM backlog) is asked for, or answered, before the confirmation.
    pub async fn subscribe_confirmed(
        &self,
        conn: &ConnHandle,
        topic: Topic,
        on_confirmed: ResponseMapper,
    ) {
        let link = self.owner(&topic);
        let sub = Subscription {
            topic,
            member: None,
            at: link.as_ref().map(|l| l.id.clone()),
        };
        conn.routing().topics.push(sub.clone());
        // Without an owner now, the subscription is made when one appears;
        // the confirmation says the router is unavailable.
        let correlation_id = self.pend(conn.id, on_confirmed);
        let sent = match link {
            Some(link) => {
                self.subscribe_asking(conn, &link, &sub, correlation_id)
                    .await
            }
            None => Err(Unavailable),
        };
        if sent.is_err() {
            self.unanswered(correlation_id);
        }
    }

    /// Drops `conn`'s subscription to `topic` at the router that holds it.
    pub async fn unsubscribe(&self, conn: &ConnHandle, topic: &Topic) -> Result<(), Unavailable> {
        let removed = {
            let mut routing = conn.routing();
            let position = routing.topics.iter().position(|s| s.topic == *topic);
            position.map(|p| routing.topics.swap_remove(p))
        };
        let Some(at) = removed.and_then(|sub| sub.at) else {
            return Ok(());
        };
        let link = self.link(&at).ok_or(Unavailable)?;
        let frame = edge_frame::Body::Unsubscribe(Unsubscribe {
            conn_id: conn.id,
            topic: Some(topic.clone()),
            moved: false,
        });
        link.send(frame.into()).await
    }

    pub async fn touch(&self, conn: &ConnHandle, topic: Topic) -> Result<(), Unavailable> {
        let body = edge_frame::Body::Touch(switchboard_proto::Touch {
            conn_id: conn.id,
            topic: Some(topic.clone()),
        });
        self.send_for(&topic, body).await
    }

    pub async fn publish(
        &self,
        conn: &ConnHandle,
        topic: Topic,
        payload: switchboard_proto::Payload,
    ) -> Result<(), Unavailable> {
        let body = edge_frame::Body::Publish(Publish {
            topic: Some(topic.clone()),
            payload: Some(payload),
            from_conn: conn.id,
        });
        self.send_for(&topic, body).await
    }

    /// Sends a request; its answer (or a timeout) reaches `on_response`,
    /// whose frame goes to the socket.
    pub async fn request(
        &self,
        conn: &ConnHandle,
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
    ) -> Result<switchboard_proto::Response, Unavailable> {
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
        let correlation_id = self.pend(conn, on_response);
        let frame = edge_frame::Body::Request(Request {
            correlation_id,
            body: Some(self.request_body(conn, topic.clone(), body)),
        });
        if self.send_for(&topic, frame).await.is_err() {
            self.unanswered(correlation_id);
        }
    }

    /// Waits for the answer to a request of `conn`: returns the request's
    /// correlation id.
    fn pend(&self, conn: u64, on_response: ResponseMapper) -> u64 {
        let correlation_id = self.next_correlation.fetch_add(1, Ordering::Relaxed);
        self.lock_pending().insert(
            correlation_id,
            Pending {
                conn,
                deadline: Instant::now() + self.request_timeout,
                on_response,
            },
        );
        correlation_id
    }

    /// The request `correlation_id` could not be sent: it is answered as
    /// unavailable now.
    fn unanswered(&self, correlation_id: u64) {
        let pending = self.lock_pending().remove(&correlation_id);
        if let Some(pending) = pending
            && let Some(reply) = (pending.on_response)(Err(Unavailable))
            && let Some(conn) = self.registry.get(pending.conn)
        {
            conn.push(reply);
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

    /// Tells every router that knew the connection that it closed.
    pub async fn closed(&self, conn: &ConnHandle) {
        let routers = std::mem::take(&mut conn.routing().opened_on);
        self.send_closed(conn.id, routers).await;
    }

    /// Sends `ConnectionClosed` for `conn_id` to each of `routers` still linked.
    async fn send_closed(&self, conn_id: u64, routers: Vec<Arc<str>>) {
        for id in routers {
            if let Some(link) = self.link(&id) {
                let frame = edge_frame::Body::Closed(ConnectionClosed { conn_id });
                let _ = link.send(frame.into()).await;
            }
        }
    }

    fn lock_pending(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Pending>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn maintain(self: Arc<Self>, link: Arc<Link>) {
        let mut backoff = Duration::from_millis(100);
        while !link.stop.is_cancelled() {
            let opened = tokio::select! {
                opened = link.transport.open(&self.edge_id) => opened,
                () = link.stop.cancelled() => break,
            };
            match opened {
                Ok(session) => {
                    backoff = Duration::from_millis(100);
                    link.set(Some(session.tx));
                    metrics::gauge!("switchboard_edge_router_links_up").increment(1.0);
                    tracing::info!(edge_id = %self.edge_id, router_id = %link.id, "router link up");
                    self.replay(&link).await;
                    let mut rx = session.rx;
                    loop {
                        tokio::select! {
                            frame = rx.next() => match frame {
                                Some(frame) => {
                                    if !self.dispatch(frame) {
                                        tracing::info!(router_id = %link.id, "router reset the session");
                                        break;
                                    }
                                }
                                None => break,
                            },
                            () = link.stop.cancelled() => break,
                        }
                    }
                    link.set(None);
                    metrics::gauge!("switchboard_edge_router_links_up").decrement(1.0);
                    if link.stop.is_cancelled() {
                        break;
                    }
                    tracing::warn!(edge_id = %self.edge_id, router_id = %link.id, "router link lost");
                }
                Err(e) => {
                    metrics::counter!("switchboard_transport_errors_total", "transport" => "edge")
                        .increment(1);
                    tracing::warn!(edge_id = %self.edge_id, router_id = %link.id, error = %e, "router unreachable");
                }
            }
            let jitter = Duration::from_millis(rand::random::<u64>() % 100);
            tokio::select! {
                () = tokio::time::sleep(backoff + jitter) => {}
                () = link.stop.cancelled() => break,
            }
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
        tracing::info!(edge_id = %self.edge_id, router_id = %link.id, "router link closed");
    }

    /// Re-announces every local socket's state held at `link`'s router: a
    /// new session starts with nothing.
    async fn replay(&self, link: &Link) {
        let mut replayed = 0u64;
        for conn in self.registry.all() {
            let subs: Vec<Subscription> = {
                let mut routing = conn.routing();
                routing.opened_on.retain(|id| *id != link.id);
                let owned = self.owner_ids(&routing.topics);
                let mut subs = Vec::new();
                for (sub, owner) in routing.topics.iter_mut().zip(owned) {
                    // Also pick up subscriptions that found no owner before.
                    if sub.at.is_none() && owner.as_deref() == Some(&*link.id) {
                        sub.at = owner;
                    }
                    if sub.at.as_deref() == Some(&*link.id) {
                        subs.push(sub.clone());
                    }
                }
                subs
            };
            for sub in subs {
                if self.subscribe_at(&conn, link, &sub).await.is_ok() {
                    replayed += 1;
                }
            }
        }
        if replayed > 0 {
            metrics::counter!("switchboard_edge_replayed_subscriptions_total").increment(replayed);
            tracing::info!(router_id = %link.id, replayed, "state replayed to router");
        }
    }

    fn owner_ids(&self, subs: &[Subscription]) -> Vec<Option<Arc<str>>> {
        let view = self.view.read().unwrap_or_else(|e| e.into_inner());
        subs.iter()
            .map(|sub| {
                view.owner(&self.pools, &sub.topic.tenant, sub.topic.stable_hash())
                    .map(|r| Arc::from(r.id.as_str()))
            })
            .collect()
    }

    /// Handles one frame from a router; false when the router reset the
    /// session.
    fn dispatch(self: &Arc<Self>, frame: RouterFrame) -> bool {
        match frame.body {
            Some(router_frame::Body::Delivery(delivery)) => self.deliver(delivery),
            Some(router_frame::Body::Response(response)) => {
                let pending = self.lock_pending().remove(&response.correlation_id);
                if let Some(pending) = pending
                    && let Some(reply) = (pending.on_response)(Ok(&response))
                    && let Some(conn) = self.registry.get(pending.conn)
                {
                    conn.push(reply);
                }
            }
            Some(router_frame::Body::Reset(_)) => return false,
            None => {}
        }
        true
    }

    /// Hands one delivery to its local sockets, encoding it once per
    /// dialect; a backlog that waits for a socket starts its hand-over.
    fn deliver(self: &Arc<Self>, delivery: Delivery) {
        let Some(payload) = delivery.payload else {
            return;
        };
        if let Some(payload::Body::ImBacklog(ready)) = payload.body {
            for conn in delivery
                .conn_ids
                .iter()
                .filter_map(|id| self.registry.get(*id))
            {
                crate::backlog::start(self, conn, ready.clone());
            }
            return;
        }
        metrics::counter!("switchboard_edge_deliveries_total").increment(1);
        let mut encoded: [Option<Option<Bytes>>; DIALECTS] = Default::default();
        let mut compressed: Vec<((usize, u8), Bytes)> = Vec::new();
        let mut sent = 0u64;
        for id in delivery.conn_ids {
            let Some(conn) = self.registry.get(id) else {
                continue;
            };
            let Some(slot) = encoded.get_mut(conn.dialect.index()) else {
                continue;
            };
            let Some(frame) = slot.get_or_insert_with(|| conn.dialect.encode(&payload)) else {
                continue;
            };
            // A socket that agreed to deflate gets the frame compressed
            // once per dialect and window size, however many share them.
            let pushed = match conn.deflate {
                Some(deflate) if deflate.compresses(frame.len()) => {
                    let key = (conn.dialect.index(), deflate.server_window_bits);
                    let packed = match compressed.iter().find(|(k, _)| *k == key) {
                        Some((_, packed)) => packed.clone(),
                        None => {
                            let packed = crate::deflate::compress(frame, deflate);
                            compressed.push((key, packed.clone()));
                            packed
                        }
                    };
                    conn.push_compressed(packed)
                }
                _ => conn.push(frame.clone()),
            };
            if pushed {
                sent += 1;
            }
        }
        metrics::counter!("switchboard_edge_messages_out_total").increment(sent);
    }

    async fn expire_requests(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = self.stop.cancelled() => return,
            }
            let now = Instant::now();
            let expired: Vec<Pending> = {
                let mut pending = self.lock_pending();
                let ids: Vec<u64> = pending
                    .iter()
                    .filter(|(_, p)| p.deadline <= now)
                    .map(|(id, _)| *id)
                    .collect();
                ids.iter().filter_map(|id| pending.remove(id)).collect()
            };
            for pending in expired {
                metrics::counter!("switchboard_edge_request_timeouts_total").increment(1);
                if let Some(reply) = (pending.on_response)(Err(Unavailable))
                    && let Some(conn) = self.registry.get(pending.conn)
                {
                    conn.push(reply);
                }
            }
        }
    }
}

fn routing_uses(topics: &[Subscription], router: &Arc<str>) -> bool {
    topics.iter().any(|sub| sub.at.as_ref() == Some(router))
}
