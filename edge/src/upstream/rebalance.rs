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
use crate::recovery::CatchUp;

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
    /// Moves every subscription whose owner changed; a socket that has a
    /// place in a moved topic's history is caught up from it by the new
    /// owner, for what the old one may have accepted and not delivered.
    pub(super) async fn rebalance(self: &Arc<Self>) {
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
                    let since = conn.positions().hold_from(&sub.topic);
                    let subscribed = self.subscribe_at(&conn, &new, &sub).await;
                    self.start_catch_up(&conn, &sub.topic, since, subscribed.is_ok());
                }
            }
            self.close_unused(&conn).await;
        }
        if moved > 0 {
            metrics::counter!("switchboard_edge_ownership_moves_total").increment(moved);
            tracing::info!(edge_id = %self.edge_id, moved, "subscriptions moved to new owners");
        }
    }

    /// Catches `conn` up on `topic` from `since` (held by
    /// [`crate::recovery::PositionBook::hold_from`]) once its subscription
    /// went to the new owner; without one the hold is let go at once.
    fn start_catch_up(
        self: &Arc<Self>,
        conn: &Arc<ConnHandle>,
        topic: &Topic,
        since: Option<switchboard_proto::Position>,
        subscribed: bool,
    ) {
        let Some(since) = since else {
            return;
        };
        if subscribed {
            tokio::spawn(crate::recovery::catch_up(
                self.clone(),
                conn.clone(),
                topic.clone(),
                since,
                CatchUp::Moved,
            ));
        } else {
            // The next move or session catches it up; what is held goes
            // out as it came.
            let released = conn.positions().release(topic, &since, true);
            if let crate::recovery::Released::Done(frames) = released {
                for frame in frames {
                    conn.push(frame);
                }
            }
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
    pub(super) async fn replay(self: &Arc<Self>, link: &Link) {
        let mut replayed = 0u64;
        for conn in self.registry.all() {
            let subs = {
                let mut routing = conn.routing();
                let owners = self.ownership.owner_ids(&routing.topics);
                replay_plan(&mut routing, &link.id, owners)
            };
            for sub in subs {
                // What went out on the session that ended may be lost.
                let since = conn.positions().hold_from(&sub.topic);
                let subscribed = self.subscribe_at(&conn, link, &sub).await.is_ok();
                if subscribed {
                    replayed += 1;
                }
                self.start_catch_up(&conn, &sub.topic, since, subscribed);
            }
        }
        if replayed > 0 {
            metrics::counter!("switchboard_edge_replayed_subscriptions_total").increment(replayed);
            tracing::info!(router_id = %link.id, replayed, "state replayed to router");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use switchboard_cluster::{TenantPools, View};
    use switchboard_proto::TopicKind;
    use switchboard_testkit::views::view_of as view;

    use super::*;

    fn owner_in(view: &View) -> impl Fn(&Topic) -> Option<Arc<str>> + '_ {
        let pools = TenantPools::default();
        move |topic| {
            view.owner(&pools, &topic.tenant, topic.stable_hash())
                .map(|r| Arc::from(r.id.as_str()))
        }
    }

    fn topics(n: usize) -> Vec<Topic> {
        (0..n)
            .map(|i| Topic::new(&format!("t{}", i % 3), TopicKind::Group, &format!("g{i}")))
            .collect()
    }

    fn subscribed(
        topics: &[Topic],
        mut at: impl FnMut(&Topic) -> Option<Arc<str>>,
    ) -> Vec<Subscription> {
        topics
            .iter()
            .map(|topic| Subscription {
                topic: topic.clone(),
                member: None,
                at: at(topic),
            })
            .collect()
    }

    fn name(sub: &Subscription) -> String {
        format!("{}/{}", sub.topic.tenant, sub.topic.name)
    }

    #[test]
    fn a_view_change_moves_exactly_the_topics_whose_owner_changed() {
        let before = view(&["r1", "r2", "r3"]);
        let topics = topics(300);
        for after in [view(&["r1", "r2", "r3", "r4"]), view(&["r1", "r3"])] {
            let mut subs = subscribed(&topics, owner_in(&before));
            let old: HashMap<String, Option<Arc<str>>> =
                subs.iter().map(|s| (name(s), s.at.clone())).collect();
            let expected: Vec<String> = topics
                .iter()
                .filter(|t| owner_in(&before)(t) != owner_in(&after)(t))
                .map(|t| format!("{}/{}", t.tenant, t.name))
                .collect();
            assert!(
                !expected.is_empty() && expected.len() < topics.len(),
                "some topics move and some stay ({} of {})",
                expected.len(),
                topics.len()
            );

            let moved = moves(&mut subs, owner_in(&after));

            let moved_names: Vec<String> = moved.iter().map(|m| name(&m.sub)).collect();
            assert_eq!(moved_names, expected);
            for m in &moved {
                assert_eq!(m.from, old[&name(&m.sub)], "the move names the old owner");
                assert_eq!(m.sub.at, owner_in(&after)(&m.sub.topic));
            }
            for sub in &subs {
                assert_eq!(
                    sub.at,
                    owner_in(&after)(&sub.topic),
                    "every topic at its owner"
                );
            }
            assert!(
                moves(&mut subs, owner_in(&after)).is_empty(),
                "the same view again moves nothing"
            );
        }
    }

    #[test]
    fn topics_without_an_owner_wait_and_move_once_one_appears() {
        let topics = topics(10);
        let nobody = view(&[]);
        let mut subs = subscribed(&topics, owner_in(&nobody));
        assert!(subs.iter().all(|s| s.at.is_none()));
        assert!(moves(&mut subs, owner_in(&nobody)).is_empty());

        let one = view(&["r1"]);
        let moved = moves(&mut subs, owner_in(&one));
        assert_eq!(moved.len(), topics.len());
        assert!(
            moved
                .iter()
                .all(|m| m.from.is_none() && m.sub.at.as_deref() == Some("r1"))
        );

        // The owner's link may be missing (no transport): the topic is
        // held nowhere, and the move says where it was.
        let moved = moves(&mut subs, |_| None);
        assert_eq!(moved.len(), topics.len());
        assert!(
            moved
                .iter()
                .all(|m| m.from.as_deref() == Some("r1") && m.sub.at.is_none())
        );
    }

    #[test]
    fn replay_covers_every_live_subscription_once() {
        let routers = ["r1", "r2", "r3"];
        let current = view(&routers);
        let topics = topics(120);
        // A third of the topics found no owner when they were made.
        let mut unowned = 0;
        let subs = subscribed(&topics, |topic| {
            unowned += 1;
            if unowned % 3 == 0 {
                None
            } else {
                owner_in(&current)(topic)
            }
        });
        let mut told: HashMap<String, usize> = HashMap::new();
        let mut routing = Routing {
            opened_on: routers.iter().map(|id| Arc::from(*id)).collect(),
            topics: subs,
        };
        for id in routers {
            let link: Arc<str> = Arc::from(id);
            let owners: Vec<_> = routing
                .topics
                .iter()
                .map(|s| owner_in(&current)(&s.topic))
                .collect();
            let plan = replay_plan(&mut routing, &link, owners);
            assert!(!plan.is_empty());
            for sub in &plan {
                assert_eq!(sub.at.as_deref(), Some(id), "only what the router holds");
                *told.entry(name(sub)).or_default() += 1;
            }
            assert!(
                !routing.opened_on.contains(&link),
                "a new session knows nothing"
            );
        }
        assert_eq!(told.len(), topics.len(), "every subscription is replayed");
        assert!(told.values().all(|n| *n == 1), "and each once");
        assert!(routing.topics.iter().all(|s| s.at.is_some()));
    }

    #[test]
    fn replay_leaves_out_what_another_router_holds() {
        let topic = Topic::new("t", TopicKind::Client, "c");
        let mut routing = Routing {
            opened_on: vec![Arc::from("r1"), Arc::from("r2")],
            topics: vec![
                Subscription {
                    topic: topic.clone(),
                    member: Some("m".to_owned()),
                    at: Some(Arc::from("r2")),
                },
                Subscription {
                    topic: topic.clone(),
                    member: None,
                    at: None,
                },
            ],
        };
        let r1: Arc<str> = Arc::from("r1");
        // The unowned one is owned by r2, so r1 is told nothing.
        let plan = replay_plan(&mut routing, &r1, vec![Some(r1.clone()), Some("r2".into())]);
        assert!(plan.is_empty());
        assert_eq!(routing.opened_on, vec![Arc::<str>::from("r2")]);
        assert!(routing.topics[1].at.is_none());
    }

    #[test]
    fn routers_left_with_none_of_a_sockets_topics_are_closed() {
        let mut routing = Routing {
            opened_on: vec![Arc::from("r1"), Arc::from("r2"), Arc::from("r3")],
            topics: subscribed(&topics(1), |_| Some(Arc::from("r2"))),
        };
        let unused = take_unused(&mut routing);
        assert_eq!(unused, vec![Arc::<str>::from("r1"), Arc::from("r3")]);
        assert_eq!(routing.opened_on, vec![Arc::<str>::from("r2")]);
        assert!(take_unused(&mut routing).is_empty());
    }
}
