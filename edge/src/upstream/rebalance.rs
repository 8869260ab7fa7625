//! Keeping the routers in step with the sockets. The edge is the one place
//! that knows what each socket subscribed to, so when the view changes it
//! moves each subscription whose owner changed ([`moves`]), and when a
//! router's session opens anew (the router starts with nothing) it tells
//! that router again what it holds ([`replay_plan`]). What to send is
//! decided here by plain functions over a socket's [`Routing`]; the
//! sending is [`Upstream::rebalance`] and [`Upstream::replay`].

use std::sync::Arc;

use switchboard_proto::{Topic, Unsubscribe, edge_frame};

use super::Upstream;
use super::link::Link;
use crate::outbound::{ConnHandle, Routing, Subscription};

/// A subscription whose owner changed: `sub.at` is the new owner (if
/// any), `from` the router that held it (if any).
#[derive(Debug)]
pub(super) struct Move {
    pub sub: Subscription,
    pub from: Option<Arc<str>>,
}

/// Points each of `topics` at its owner now (`owner`); returns those whose
/// owner changed.
pub(super) fn moves(
    topics: &mut [Subscription],
    mut owner: impl FnMut(&Topic) -> Option<Arc<str>>,
) -> Vec<Move> {
    let mut moves = Vec::new();
    for sub in topics {
        let now = owner(&sub.topic);
        if now != sub.at {
            let from = std::mem::replace(&mut sub.at, now);
            moves.push(Move {
                sub: sub.clone(),
                from,
            });
        }
    }
    moves
}

/// What a new session on router `link` must be told of one socket: every
/// subscription held there, and those that had no owner and now have
/// `link` (`owners` holds each topic's owner in the current view, in
/// order). The router also forgets that the socket was opened on it.
pub(super) fn replay_plan(
    routing: &mut Routing,
    link: &Arc<str>,
    owners: Vec<Option<Arc<str>>>,
) -> Vec<Subscription> {
    routing.opened_on.retain(|id| id != link);
    let mut subs = Vec::new();
    for (sub, owner) in routing.topics.iter_mut().zip(owners) {
        // Also pick up subscriptions that found no owner before.
        if sub.at.is_none() && owner.as_deref() == Some(&**link) {
            sub.at = owner;
        }
        if sub.at.as_deref() == Some(&**link) {
            subs.push(sub.clone());
        }
    }
    subs
}

/// Takes out of `routing.opened_on` the routers that hold none of its
/// topics any more.
pub(super) fn take_unused(routing: &mut Routing) -> Vec<Arc<str>> {
    let opened = std::mem::take(&mut routing.opened_on);
    let (keep, unused): (Vec<_>, Vec<_>) = opened
        .into_iter()
        .partition(|id| routing_uses(&routing.topics, id));
    routing.opened_on = keep;
    unused
}

fn routing_uses(topics: &[Subscription], router: &Arc<str>) -> bool {
    topics.iter().any(|sub| sub.at.as_ref() == Some(router))
}

impl Upstream {
    /// Moves every subscription whose owner changed.
    pub(super) async fn rebalance(&self) {
        let mut moved = 0u64;
        for conn in self.registry.all() {
            let moves = moves(&mut conn.routing().topics, |topic| {
                self.owner(topic).map(|l| l.id.clone())
            });
            for Move { sub, from } in moves {
                moved += 1;
                if let Some(old) = from.and_then(|id| self.links.get(&id)) {
                    let frame = edge_frame::Body::Unsubscribe(Unsubscribe {
                        conn_id: conn.id,
                        topic: Some(sub.topic.clone()),
                        moved: true,
                    });
                    let _ = old.send(frame.into()).await;
                }
                if let Some(new) = sub.at.as_deref().and_then(|id| self.links.get(id)) {
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
        let unused = take_unused(&mut conn.routing());
        self.send_closed(conn.id, unused).await;
    }

    /// Re-announces every local socket's state held at `link`'s router: a
    /// new session starts with nothing.
    pub(super) async fn replay(&self, link: &Link) {
        let mut replayed = 0u64;
        for conn in self.registry.all() {
            let subs = {
                let mut routing = conn.routing();
                let owners = self.ownership.owner_ids(&routing.topics);
                replay_plan(&mut routing, &link.id, owners)
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
}

