//! One link per live router: the transport that reaches it, the session
//! open on it (if any), and the task that keeps a session open, reopening
//! it after a [`Backoff`] when it fails or ends. [`Links`] is the table of
//! links, which follows the membership view.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::Duration;

use futures_util::StreamExt;
use switchboard_cluster::{RouterInfo, View};
use switchboard_proto::EdgeFrame;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Upstream;
use crate::dialect::Unavailable;
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
    /// Counts the sessions opened: a frame sent on an earlier one may
    /// have been lost with it.
    session: AtomicU64,
    /// Fired when the router leaves the view, or the edge stops.
    stop: CancellationToken,
}

impl Link {
    fn sender(&self) -> Option<mpsc::Sender<EdgeFrame>> {
        self.tx.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set(&self, tx: Option<mpsc::Sender<EdgeFrame>>) {
        let mut slot = self.tx.write().unwrap_or_else(|e| e.into_inner());
        if tx.is_some() {
            self.session.fetch_add(1, Ordering::Relaxed);
        }
        *slot = tx;
    }

    /// The session frames sent now go out on (0: none opened yet).
    pub(super) fn session(&self) -> u64 {
        self.session.load(Ordering::Relaxed)
    }

    pub fn is_up(&self) -> bool {
        self.sender().is_some_and(|tx| !tx.is_closed())
    }

    pub(super) async fn send(&self, frame: EdgeFrame) -> Result<(), Unavailable> {
        let tx = self.sender().ok_or(Unavailable)?;
        tx.send(frame).await.map_err(|_| Unavailable)
    }
}

/// The wait before a router's session is opened again: 100 ms at first,
/// doubled after each attempt up to 2 s, and back to 100 ms once a session
/// opened. The cap is low because a router that comes back must get its
/// sockets' state back within seconds; the caller adds jitter so that
/// edges do not all reconnect at once.
#[derive(Debug)]
pub(super) struct Backoff {
    next: Duration,
}

impl Backoff {
    pub(super) const FIRST: Duration = Duration::from_millis(100);
    pub(super) const MAX: Duration = Duration::from_secs(2);

    /// A session opened: the next wait starts over.
    pub(super) fn reset(&mut self) {
        self.next = Self::FIRST;
    }

    /// The wait before the next attempt; the one after it is twice as
    /// long, up to [`Backoff::MAX`].
    pub(super) fn wait(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        wait
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self { next: Self::FIRST }
    }
}

/// The links by router id. Written only when the view changes, read for
/// every frame sent; the lock is never held across an `.await`.
#[derive(Default)]
pub(super) struct Links {
    by_id: RwLock<HashMap<String, Arc<Link>>>,
}

impl Links {
    fn read(&self) -> RwLockReadGuard<'_, HashMap<String, Arc<Link>>> {
        self.by_id.read().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn get(&self, id: &str) -> Option<Arc<Link>> {
        self.read().get(id).cloned()
    }

    /// Whether a router of `pool` has a session open.
    pub(super) fn any_up(&self, pool: &str) -> bool {
        self.read()
            .values()
            .any(|l| l.info.pool == pool && l.is_up())
    }

    /// Follows `view`: links to routers that left it stop, and each router
    /// new to it gets a link (stopped with `stop`), returned so that the
    /// caller starts it.
    pub(super) fn follow(
        &self,
        view: &View,
        connector: &Connector,
        stop: &CancellationToken,
    ) -> Vec<Arc<Link>> {
        let mut started = Vec::new();
        let mut links = self.by_id.write().unwrap_or_else(|e| e.into_inner());
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
            match connector(info) {
                Ok(transport) => {
                    let link = Arc::new(Link {
                        info: info.clone(),
                        id: Arc::from(info.id.as_str()),
                        transport,
                        tx: RwLock::new(None),
                        session: AtomicU64::new(0),
                        stop: stop.child_token(),
                    });
                    links.insert(info.id.clone(), link.clone());
                    started.push(link);
                }
                Err(e) => {
                    tracing::warn!(router_id = %info.id, error = %e, "no transport for router")
                }
            }
        }
        started
    }
}

impl Upstream {
    /// Keeps a session open on `link` until it stops: each new session is
    /// first told this edge's state ([`Upstream::replay`]), then read until
    /// it ends or the router resets it.
    pub(super) async fn maintain(self: Arc<Self>, link: Arc<Link>) {
        let mut backoff = Backoff::default();
        while !link.stop.is_cancelled() {
            let opened = tokio::select! {
                opened = link.transport.open(&self.edge_id) => opened,
                () = link.stop.cancelled() => break,
            };
            match opened {
                Ok(session) => {
                    backoff.reset();
                    link.set(Some(session.tx));
                    metrics::gauge!("switchboard_edge_router_links_up").increment(1.0);
                    tracing::info!(edge_id = %self.edge_id, router_id = %link.id, "router link up");
                    self.replay(&link).await;
                    // Publishes kept for this router go out again on the
                    // new session, after the subscriptions.
                    self.resend_kept().await;
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
                () = tokio::time::sleep(backoff.wait() + jitter) => {}
                () = link.stop.cancelled() => break,
            }
        }
        tracing::info!(edge_id = %self.edge_id, router_id = %link.id, "router link closed");
    }
}

#[cfg(test)]
mod tests {
    use async_trait::async_trait;

    use super::*;
    use crate::transport::TransportSession;

    #[test]
    fn backoff_doubles_up_to_its_cap_and_starts_over_after_a_session() {
        let mut backoff = Backoff::default();
        let waits: Vec<u64> = (0..7).map(|_| backoff.wait().as_millis() as u64).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1_600, 2_000, 2_000]);
        backoff.reset();
        assert_eq!(backoff.wait(), Backoff::FIRST);
        assert_eq!(backoff.wait(), Duration::from_millis(200));
    }

    /// A router that is never reached: only the table is under test.
    struct Nowhere;

    #[async_trait]
    impl Transport for Nowhere {
        async fn open(&self, _edge_id: &str) -> Result<TransportSession, TransportError> {
            Err(TransportError::Connect {
                addr: String::new(),
                reason: "not dialled in this test".to_owned(),
            })
        }
    }

    use switchboard_testkit::views::router;

    fn ids(links: &[Arc<Link>]) -> Vec<&str> {
        let mut ids: Vec<&str> = links.iter().map(|l| &*l.id).collect();
        ids.sort_unstable();
        ids
    }

    #[test]
    fn links_follow_the_view_and_a_restarted_router_gets_a_new_one() {
        let connector: Connector = Arc::new(|info: &RouterInfo| {
            if info.id == "broken" {
                return Err(TransportError::Connect {
                    addr: info.grpc_addr.clone(),
                    reason: "no transport".to_owned(),
                });
            }
            Ok(Arc::new(Nowhere) as Arc<dyn Transport>)
        });
        let stop = CancellationToken::new();
        let links = Links::default();

        let first = View::new(vec![router("a", 1), router("b", 1), router("broken", 1)]);
        let started = links.follow(&first, &connector, &stop);
        assert_eq!(ids(&started), ["a", "b"], "no link without a transport");
        let (a, b) = (links.get("a").unwrap(), links.get("b").unwrap());

        assert!(links.follow(&first, &connector, &stop).is_empty());

        let next = View::new(vec![router("a", 2), router("c", 1)]);
        let started = links.follow(&next, &connector, &stop);
        assert_eq!(ids(&started), ["a", "c"]);
        assert!(a.stop.is_cancelled(), "the old epoch's link stops");
        assert!(b.stop.is_cancelled(), "a router that left stops");
        assert!(links.get("b").is_none());
        assert_eq!(links.get("a").unwrap().info.epoch, 2);
        assert!(!links.any_up("default"), "nothing opened a session");

        stop.cancel();
        assert!(
            links.get("c").unwrap().stop.is_cancelled(),
            "the edge's stop reaches every link"
        );
    }
}
