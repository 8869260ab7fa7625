//! The edge's side of the routers. [`Upstream`] is what sockets use to
//! subscribe, publish and ask; it sends each frame to the router that owns
//! its topic and keeps the routers in step with the sockets when the
//! membership view changes. Sockets stay open through such changes: only
//! what is in flight during the switch may be lost.
//!
//! - [`ownership`]: which router owns a topic in the current view.
//! - [`link`]: one link per live router, reopened with a backoff, and the
//!   table of links that follows the view.
//! - [`rebalance`]: what moves when the view changes, and what a reopened
//!   link is told again.
//! - [`correlation`]: requests awaiting their answer, by correlation id,
//!   until answered, unsendable or timed out.
//! - [`delivery`]: frames from a router: deliveries to local sockets,
//!   answers, resets.

mod correlation;
mod delivery;
mod link;
mod ownership;
mod rebalance;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use switchboard_cluster::{DEFAULT_POOL, TenantPools, View};
use switchboard_proto::{
    ConnectionClosed, ConnectionOpened, EdgeFrame, Publish, Subscribe, Topic, Unsubscribe,
    edge_frame,
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use self::correlation::Correlations;
use self::link::Links;
pub use self::link::{Connector, Link};
use self::ownership::Ownership;
use crate::dialect::{ResponseMapper, Unavailable};
use crate::outbound::{ConnHandle, Registry, Subscription};

pub struct Upstream {
    edge_id: String,
    /// Who owns what, from the view last applied.
    ownership: Ownership,
    connector: Connector,
    /// One link per router of that view.
    links: Links,
    /// The local sockets, for deliveries, answers and replay.
    registry: Arc<Registry>,
    /// Requests awaiting their answer.
    requests: Correlations,
    /// Publish ids: this process's random prefix, then a count, so that no
    /// two edges (nor two runs of one) ever make the same id.
    publish_prefix: String,
    next_publish: AtomicU64,
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
            ownership: Ownership::new(pools),
            connector,
            links: Links::default(),
            registry,
            requests: Correlations::new(request_timeout),
            publish_prefix: format!("e{:016x}-", rand::random::<u64>()),
            next_publish: AtomicU64::new(1),
            stop: CancellationToken::new(),
        })
    }

    /// A new publish id.
    fn next_publish_id(&self) -> String {
        let n = self.next_publish.fetch_add(1, Ordering::Relaxed);
        format!("{}{n:x}", self.publish_prefix)
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
        self.links.any_up(DEFAULT_POOL)
    }

    /// Takes a new view: links follow the live routers, and subscriptions
    /// whose owner changed move to the new owner.
    async fn apply(self: &Arc<Self>, view: View) {
        self.ownership.set(view.clone());
        let started = self.links.follow(&view, &self.connector, &self.stop);
        for link in started {
            tokio::spawn(self.clone().maintain(link));
        }
        self.rebalance().await;
        self.resend_kept().await;
    }

    /// The link to the owner of `topic` in the current view.
    fn owner(&self, topic: &Topic) -> Option<Arc<Link>> {
        let id = self.ownership.owner_id(topic)?;
        self.links.get(&id)
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
        let correlation_id = match self.requests.pend(conn.id, on_confirmed) {
            Ok(id) => id,
            Err(on_confirmed) => {
                if let Some(frame) = on_confirmed(Err(Unavailable)) {
                    conn.push(frame);
                }
                return;
            }
        };
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
        conn.positions().forget(topic);
        let removed = {
            let mut routing = conn.routing();
            let position = routing.topics.iter().position(|s| s.topic == *topic);
            position.map(|p| routing.topics.swap_remove(p))
        };
        let Some(at) = removed.and_then(|sub| sub.at) else {
            return Ok(());
        };
        let link = self.links.get(&at).ok_or(Unavailable)?;
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
            publish_id: String::new(),
        });
        self.send_for(&topic, body).await
    }

    /// Tells every router that knew the connection that it closed.
    pub async fn closed(&self, conn: &ConnHandle) {
        let routers = std::mem::take(&mut conn.routing().opened_on);
        self.send_closed(conn.id, routers).await;
    }

    /// Sends `body` to the owner of `topic`. Publishes and requests need
    /// no open connection at the router; touches follow a subscription.
    async fn send_for(&self, topic: &Topic, body: edge_frame::Body) -> Result<(), Unavailable> {
        let link = self.owner(topic).ok_or(Unavailable)?;
        link.send(body.into()).await
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

    /// Sends `ConnectionClosed` for `conn_id` to each of `routers` still linked.
    async fn send_closed(&self, conn_id: u64, routers: Vec<Arc<str>>) {
        for id in routers {
            if let Some(link) = self.links.get(&id) {
                let frame = edge_frame::Body::Closed(ConnectionClosed { conn_id });
                let _ = link.send(frame.into()).await;
            }
        }
    }
}
