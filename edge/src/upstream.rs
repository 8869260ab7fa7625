//! The edge's side of the routers: which router owns a topic, one link per
//! router kept open (and replayed after it reopens), requests awaiting
//! answers, and the dispatch of deliveries to local sockets.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use switchboard_proto::ownership::owner_index;
use switchboard_proto::{
    ConnectionClosed, ConnectionOpened, Delivery, EdgeFrame, Publish, Request, RouterFrame,
    Subscribe, Topic, edge_frame, request, router_frame,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::dialect::{DIALECTS, RequestBody, ResponseMapper, Unavailable};
use crate::outbound::{ConnHandle, Registry};
use crate::transport::Transport;

/// One router as seen from this edge.
pub struct Link {
    pub router_id: Arc<str>,
    transport: Arc<dyn Transport>,
    /// The open session's sender; `None` while disconnected.
    tx: RwLock<Option<mpsc::Sender<EdgeFrame>>>,
}

impl Link {
    pub fn new(router_id: &str, transport: Arc<dyn Transport>) -> Arc<Self> {
        Arc::new(Self {
            router_id: Arc::from(router_id),
            transport,
            tx: RwLock::new(None),
        })
    }

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
    /// Sorted by router id; ownership is computed over these ids.
    links: Vec<Arc<Link>>,
    router_ids: Vec<Arc<str>>,
    registry: Arc<Registry>,
    pending: Mutex<HashMap<u64, Pending>>,
    next_correlation: AtomicU64,
    request_timeout: Duration,
}

impl Upstream {
    pub fn new(
        edge_id: String,
        mut links: Vec<Arc<Link>>,
        registry: Arc<Registry>,
        request_timeout: Duration,
    ) -> Arc<Self> {
        links.sort_by(|a, b| a.router_id.cmp(&b.router_id));
        let router_ids = links.iter().map(|l| l.router_id.clone()).collect();
        Arc::new(Self {
            edge_id,
            links,
            router_ids,
            registry,
            pending: Mutex::default(),
            next_correlation: AtomicU64::new(1),
            request_timeout,
        })
    }

    pub fn edge_id(&self) -> &str {
        &self.edge_id
    }

    /// Keeps every link open until `shutdown`, and times out requests.
    pub fn start(self: &Arc<Self>, shutdown: CancellationToken) {
        for link in &self.links {
            tokio::spawn(self.clone().maintain(link.clone(), shutdown.clone()));
        }
        tokio::spawn(self.clone().expire_requests(shutdown));
    }

    /// Ready when at least one router is reachable.
    pub fn ready(&self) -> bool {
        self.links.iter().any(|l| l.is_up())
    }

    pub fn routers_up(&self) -> usize {
        self.links.iter().filter(|l| l.is_up()).count()
    }

    fn owner(&self, topic: &Topic) -> Option<&Arc<Link>> {
        owner_index(&self.router_ids, topic.stable_hash()).map(|i| &self.links[i])
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

    /// Sends `body` for `conn` to the owner of `topic`, telling that router
    /// about the connection first if it does not know it yet.
    async fn send_for(
        &self,
        conn: &ConnHandle,
        topic: &Topic,
        body: edge_frame::Body,
    ) -> Result<(), Unavailable> {
        let link = self.owner(topic).ok_or(Unavailable)?;
        let first = {
            let mut routing = conn.routing();
            if routing.opened_on.contains(&link.router_id) {
                false
            } else {
                routing.opened_on.push(link.router_id.clone());
                true
            }
        };
        if first {
            link.send(Self::opened_frame(conn)).await?;
        }
        link.send(body.into()).await
    }

    pub async fn subscribe(
        &self,
        conn: &ConnHandle,
        topic: Topic,
        member: Option<String>,
    ) -> Result<(), Unavailable> {
        conn.routing().topics.push((topic.clone(), member.clone()));
        let body = edge_frame::Body::Subscribe(Subscribe {
            conn_id: conn.id,
            topic: Some(topic.clone()),
            presence_member: member.unwrap_or_default(),
        });
        self.send_for(conn, &topic, body).await
    }

    pub async fn touch(&self, conn: &ConnHandle, topic: Topic) -> Result<(), Unavailable> {
        let body = edge_frame::Body::Touch(switchboard_proto::Touch {
            conn_id: conn.id,
            topic: Some(topic.clone()),
        });
        self.send_for(conn, &topic, body).await
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
        self.send_for(conn, &topic, body).await
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
        let correlation_id = self.next_correlation.fetch_add(1, Ordering::Relaxed);
        let body = match body {
            RequestBody::Publish(payload) => request::Body::Publish(Publish {
                topic: Some(topic.clone()),
                payload: Some(payload),
                from_conn: conn.id,
            }),
            RequestBody::Presence => request::Body::Presence(switchboard_proto::PresenceQuery {
                topic: Some(topic.clone()),
            }),
        };
        self.lock_pending().insert(
            correlation_id,
            Pending {
                conn: conn.id,
                deadline: Instant::now() + self.request_timeout,
                on_response,
            },
        );
        let frame = edge_frame::Body::Request(Request {
            correlation_id,
            body: Some(body),
        });
        if self.send_for(conn, &topic, frame).await.is_err() {
            let pending = self.lock_pending().remove(&correlation_id);
            if let Some(pending) = pending
                && let Some(reply) = (pending.on_response)(Err(Unavailable))
            {
                conn.push(reply);
            }
        }
    }

    /// Tells every router that knew the connection that it closed.
    pub async fn closed(&self, conn: &ConnHandle) {
        let routers = std::mem::take(&mut conn.routing().opened_on);
        for router_id in routers {
            if let Some(link) = self.links.iter().find(|l| l.router_id == router_id) {
                let frame = edge_frame::Body::Closed(ConnectionClosed { conn_id: conn.id });
                let _ = link.send(frame.into()).await;
            }
        }
    }

    fn lock_pending(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Pending>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn maintain(self: Arc<Self>, link: Arc<Link>, shutdown: CancellationToken) {
        let mut backoff = Duration::from_millis(100);
        while !shutdown.is_cancelled() {
            let opened = tokio::select! {
                opened = link.transport.open(&self.edge_id) => opened,
                () = shutdown.cancelled() => return,
            };
            match opened {
                Ok(session) => {
                    backoff = Duration::from_millis(100);
                    link.set(Some(session.tx));
                    metrics::gauge!("switchboard_edge_router_links_up").increment(1.0);
                    tracing::info!(edge_id = %self.edge_id, router_id = %link.router_id, "router link up");
                    self.replay(&link).await;
                    let mut rx = session.rx;
                    loop {
                        tokio::select! {
                            frame = rx.next() => match frame {
                                Some(frame) => self.dispatch(frame),
                                None => break,
                            },
                            () = shutdown.cancelled() => break,
                        }
                    }
                    link.set(None);
                    metrics::gauge!("switchboard_edge_router_links_up").decrement(1.0);
                    if shutdown.is_cancelled() {
                        return;
                    }
                    tracing::warn!(edge_id = %self.edge_id, router_id = %link.router_id, "router link lost");
                }
                Err(e) => {
                    metrics::counter!("switchboard_edge_transport_errors_total").increment(1);
                    tracing::warn!(edge_id = %self.edge_id, router_id = %link.router_id, error = %e, "router unreachable");
                }
            }
            let jitter = Duration::from_millis(rand::random::<u64>() % 100);
            tokio::select! {
                () = tokio::time::sleep(backoff + jitter) => {}
                () = shutdown.cancelled() => return,
            }
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    /// Re-announces every local socket's state owned by `link`'s router: a
    /// router that restarted (or a new session) knows nothing of it.
    async fn replay(&self, link: &Link) {
        let mut replayed = 0u64;
        for conn in self.registry.all() {
            let topics: Vec<(Topic, Option<String>)> = {
                let mut routing = conn.routing();
                let owned: Vec<_> = routing
                    .topics
                    .iter()
                    .filter(|(topic, _)| {
                        self.owner(topic)
                            .is_some_and(|o| o.router_id == link.router_id)
                    })
                    .cloned()
                    .collect();
                if !owned.is_empty() && !routing.opened_on.contains(&link.router_id) {
                    routing.opened_on.push(link.router_id.clone());
                }
                owned
            };
            if topics.is_empty() {
                continue;
            }
            let _ = link.send(Self::opened_frame(&conn)).await;
            for (topic, member) in topics {
                let frame = edge_frame::Body::Subscribe(Subscribe {
                    conn_id: conn.id,
                    topic: Some(topic),
                    presence_member: member.unwrap_or_default(),
                });
                let _ = link.send(frame.into()).await;
                replayed += 1;
            }
        }
        if replayed > 0 {
            metrics::counter!("switchboard_edge_replayed_subscriptions_total").increment(replayed);
            tracing::info!(router_id = %link.router_id, replayed, "state replayed to router");
        }
    }

    fn dispatch(&self, frame: RouterFrame) {
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
            None => {}
        }
    }

    /// Hands one delivery to its local sockets, encoding it once per dialect.
    fn deliver(&self, delivery: Delivery) {
        let Some(payload) = delivery.payload else {
            return;
        };
        metrics::counter!("switchboard_edge_deliveries_total").increment(1);
        let mut encoded: [Option<Option<Bytes>>; DIALECTS] = Default::default();
        let mut sent = 0u64;
        for id in delivery.conn_ids {
            let Some(conn) = self.registry.get(id) else {
                continue;
            };
            let Some(slot) = encoded.get_mut(conn.dialect.index()) else {
                continue;
            };
            if let Some(frame) = slot.get_or_insert_with(|| conn.dialect.encode(&payload))
                && conn.push(frame.clone())
            {
                sent += 1;
            }
        }
        metrics::counter!("switchboard_edge_messages_out_total").increment(sent);
    }

    async fn expire_requests(self: Arc<Self>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = shutdown.cancelled() => return,
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
