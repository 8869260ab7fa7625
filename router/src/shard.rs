//! A shard owns the subscriber state of the topics that hash to it. Each
//! shard is one task fed by a channel, so topic state has exactly one
//! writer and needs no lock. Fan-out sends one `Delivery` per edge, naming
//! every local connection on that edge.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use switchboard_proto::{
    Delivery, ErrorCode, Payload, Position, PresenceEvent, Response, RouterFrame, Topic,
    router_frame,
};
use tokio::sync::mpsc;

use crate::history::{AppendJob, HistoryQueue};
use crate::presence::PresenceJob;
use crate::reply::Reply;
use crate::topic::TopicKey;

/// An attached edge, numbered by this router.
pub type EdgeIdx = u32;

/// Connections a publish reaches besides its topic's subscribers, per edge.
pub type Also = Vec<(EdgeIdx, Vec<u64>)>;

pub enum ShardCommand {
    EdgeUp {
        edge: EdgeIdx,
        tx: mpsc::Sender<RouterFrame>,
    },
    EdgeDown {
        edge: EdgeIdx,
    },
    Subscribe {
        edge: EdgeIdx,
        conn: u64,
        topic: TopicKey,
        member: Option<Arc<str>>,
    },
    Unsubscribe {
        edge: EdgeIdx,
        conn: u64,
        topic: TopicKey,
        member: Option<Arc<str>>,
        /// Moved to another router: no presence leave.
        moved: bool,
    },
    Touch {
        topic: TopicKey,
        member: Arc<str>,
    },
    Publish {
        topic: TopicKey,
        payload: Payload,
        /// Makes a resend idempotent on a topic with history.
        publish_id: Option<String>,
        reply: Option<Reply>,
    },
    /// [`ShardCommand::Publish`] that also reaches `also`, connections
    /// subscribed elsewhere (the devices bound to a conversation): one
    /// message of `topic`'s history, delivered to its own subscribers and
    /// to them alike, once per connection.
    PublishAlso {
        topic: TopicKey,
        payload: Payload,
        publish_id: Option<String>,
        also: Also,
        reply: Option<Reply>,
    },
    /// A publish its history writer appended: fan it out with its place.
    Deliver {
        topic: TopicKey,
        payload: Payload,
        position: Position,
        also: Also,
        reply: Option<Reply>,
    },
    /// A presence change the store confirmed, to tell the group.
    Announce {
        topic: TopicKey,
        member: String,
        joined: bool,
        count: u32,
    },
    /// The connections subscribed to any of `topics`, per edge.
    Collect {
        topics: Vec<TopicKey>,
        reply: tokio::sync::oneshot::Sender<Vec<(EdgeIdx, Vec<u64>)>>,
    },
    /// Hands `payload` to one subscriber of `topic` (tool calls), taking
    /// turns; answers which connection took it, if one did.
    Dispatch {
        topic: TopicKey,
        payload: Payload,
        reply: tokio::sync::oneshot::Sender<Option<(EdgeIdx, u64)>>,
    },
    /// Forwarded to the presence worker so it runs after earlier joins.
    PresenceQuery {
        topic: TopicKey,
        reply: Reply,
    },
    /// The store came back after failing: write every member this shard
    /// holds again, since what the store had (or missed) is unknown.
    ResyncPresence,
}

/// Connection ids of one edge, with O(1) insert and remove. Most sets
/// are tiny (a client topic holds one socket), and every topic of every
/// socket has one, so the position index is only built once a set grows
/// past [`SMALL_SET`]; below that a scan is as fast and allocates nothing.
#[derive(Default)]
struct ConnSet {
    ids: Vec<u64>,
    /// Empty while the set is small, else the position of every id.
    index: HashMap<u64, usize>,
}

const SMALL_SET: usize = 32;

impl ConnSet {
    fn position(&self, conn: u64) -> Option<usize> {
        if self.index.is_empty() {
            self.ids.iter().position(|id| *id == conn)
        } else {
            self.index.get(&conn).copied()
        }
    }

    fn insert(&mut self, conn: u64) -> bool {
        if self.position(conn).is_some() {
            return false;
        }
        if !self.index.is_empty() {
            self.index.insert(conn, self.ids.len());
        } else if self.ids.len() == SMALL_SET {
            self.index = self
                .ids
                .iter()
                .enumerate()
                .map(|(i, id)| (*id, i))
                .collect();
            self.index.insert(conn, self.ids.len());
        }
        self.ids.push(conn);
        true
    }

    fn remove(&mut self, conn: u64) -> bool {
        let Some(position) = self.position(conn) else {
            return false;
        };
        self.index.remove(&conn);
        self.ids.swap_remove(position);
        if !self.index.is_empty()
            && let Some(moved) = self.ids.get(position)
        {
            self.index.insert(*moved, position);
        }
        true
    }
}

struct Member {
    conns: u32,
    last_refresh: Instant,
}

#[derive(Default)]
struct TopicState {
    /// A topic's sockets sit on a handful of edges: a list, grown one
    /// entry at a time, costs less than a map for every topic.
    by_edge: Vec<(EdgeIdx, ConnSet)>,
    members: HashMap<Arc<str>, Member>,
}

impl TopicState {
    fn is_empty(&self) -> bool {
        self.by_edge.is_empty()
    }

    fn conns_mut(&mut self, edge: EdgeIdx) -> &mut ConnSet {
        let at = match self.by_edge.iter().position(|(e, _)| *e == edge) {
            Some(at) => at,
            None => {
                self.by_edge.reserve_exact(1);
                self.by_edge.push((edge, ConnSet::default()));
                self.by_edge.len() - 1
            }
        };
        &mut self.by_edge[at].1
    }
}

/// Store jobs waiting for a shard's presence worker. While the store is
/// slow the queue fills; past this, refreshes and leaves are dropped and
/// counted, queries are answered `unavailable`, and once the worker has
/// caught up the shard refreshes every member it holds, so presence comes
/// back to the sockets that are open (a dropped leave ends at the TTL).
pub const PRESENCE_QUEUE: usize = 65_536;

pub struct Shard {
    topics: HashMap<TopicKey, TopicState>,
    edges: HashMap<EdgeIdx, mpsc::Sender<RouterFrame>>,
    presence: mpsc::Sender<PresenceJob>,
    /// A job was dropped on a full queue: resync once there is room.
    presence_lost: bool,
    /// Members a resync cut short by a full queue already refreshed, so
    /// the next round goes on from there instead of starving the rest.
    resync_from: usize,
    /// How often a member's presence is written to the store at most.
    touch_interval: Duration,
    /// Turn counter for [`ShardCommand::Dispatch`].
    turns: usize,
    /// Where publishes to topics with history wait to be appended; `None`
    /// with history off.
    history: Option<HistoryQueue>,
}

impl Shard {
    pub fn new(presence: mpsc::Sender<PresenceJob>, touch_interval: Duration) -> Self {
        Self {
            topics: HashMap::new(),
            edges: HashMap::new(),
            presence,
            presence_lost: false,
            resync_from: 0,
            touch_interval,
            turns: 0,
            history: None,
        }
    }

    /// Appends publishes to topics with history through `queue` before
    /// they are delivered.
    pub fn with_history(mut self, queue: HistoryQueue) -> Self {
        self.history = Some(queue);
        self
    }

    pub async fn run(mut self, mut commands: mpsc::Receiver<ShardCommand>) {
        while let Some(command) = commands.recv().await {
            self.handle(command);
        }
    }

    fn handle(&mut self, command: ShardCommand) {
        if self.presence_lost && self.presence.capacity() > self.presence.max_capacity() / 2 {
            self.presence_lost = false;
            self.resync_presence();
        }
        match command {
            ShardCommand::EdgeUp { edge, tx } => {
                self.edges.insert(edge, tx);
            }
            ShardCommand::EdgeDown { edge } => {
                self.edges.remove(&edge);
            }
            ShardCommand::Subscribe {
                edge,
                conn,
                topic,
                member,
            } => self.subscribe(edge, conn, topic, member),
            ShardCommand::Unsubscribe {
                edge,
                conn,
                topic,
                member,
                moved,
            } => self.unsubscribe(edge, conn, &topic, member, moved),
            ShardCommand::Touch { topic, member } => self.touch(topic, member),
            ShardCommand::ResyncPresence => self.resync_presence(),
            ShardCommand::Publish {
                topic,
                payload,
                publish_id,
                reply,
            } => self.publish(topic, payload, publish_id, Also::new(), reply),
            ShardCommand::PublishAlso {
                topic,
                payload,
                publish_id,
                also,
                reply,
            } => self.publish(topic, payload, publish_id, also, reply),
            ShardCommand::Deliver {
                topic,
                payload,
                position,
                also,
                reply,
            } => self.deliver(topic, payload, position, also, reply),
            ShardCommand::Announce {
                topic,
                member,
                joined,
                count,
            } => {
                let event = PresenceEvent {
                    group: topic.name.clone(),
                    member,
                    joined,
                    count,
                };
                self.fan_out(&topic, &Payload::presence(event), None);
            }
            ShardCommand::Collect { topics, reply } => {
                let mut found = Vec::new();
                for topic in &topics {
                    if let Some(state) = self.topics.get(topic) {
                        for (edge, conns) in &state.by_edge {
                            found.push((*edge, conns.ids.clone()));
                        }
                    }
                }
                let _ = reply.send(found);
            }
            ShardCommand::Dispatch {
                topic,
                payload,
                reply,
            } => {
                let _ = reply.send(self.dispatch(&topic, &payload));
            }
            ShardCommand::PresenceQuery { topic, reply } => {
                self.queue_presence(PresenceJob::Query { topic, reply });
            }
        }
    }

    /// A publish: appended first when its topic keeps history (delivered
    /// once appended, with its place), else fanned out at once.
    fn publish(
        &mut self,
        topic: TopicKey,
        payload: Payload,
        publish_id: Option<String>,
        also: Also,
        reply: Option<Reply>,
    ) {
        if let Some(history) = &self.history
            && crate::history::is_message(&payload)
            && let Some(stream) = topic.history_stream()
        {
            if let Some(ShardCommand::Deliver {
                topic,
                payload,
                position,
                also,
                reply,
            }) = history.push(AppendJob {
                topic,
                stream,
                payload,
                publish_id,
                also,
                reply,
            }) {
                self.deliver(topic, payload, position, also, reply);
            }
            return;
        }
        let delivered = self.fan_out_also(&topic, &payload, None, also);
        metrics::counter!("switchboard_router_publishes_total", "kind" => topic.kind.as_str_name())
            .increment(1);
        if let Some(reply) = reply {
            reply.send(Response {
                delivered,
                ..Response::default()
            });
        }
    }

    /// A publish appended to its topic's history: fanned out with its
    /// place, and its publisher told where it is.
    fn deliver(
        &mut self,
        topic: TopicKey,
        payload: Payload,
        position: Position,
        also: Also,
        reply: Option<Reply>,
    ) {
        let delivered = self.fan_out_also(&topic, &payload, Some(&position), also);
        metrics::counter!("switchboard_router_publishes_total", "kind" => topic.kind.as_str_name())
            .increment(1);
        if let Some(reply) = reply {
            reply.send(crate::history::accepted(delivered, position));
        }
    }

    /// Queues a store job without waiting: the shard never blocks on the
    /// store. The worker lives as long as the shard; a closed queue means
    /// shutdown.
    fn queue_presence(&mut self, job: PresenceJob) {
        let job = match self.presence.try_send(job) {
            Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => return,
            Err(mpsc::error::TrySendError::Full(job)) => job,
        };
        let label = match job {
            PresenceJob::Refresh { .. } => "refresh",
            PresenceJob::Leave { .. } => "leave",
            PresenceJob::Query { reply, .. } => {
                reply.send(Response {
                    error: ErrorCode::Internal as i32,
                    error_message: "presence store is behind; try again".to_owned(),
                    ..Response::default()
                });
                "query"
            }
        };
        metrics::counter!("switchboard_router_presence_jobs_dropped_total", "job" => label)
            .increment(1);
        if label != "query" {
            self.presence_lost = true;
        }
    }

    fn subscribe(&mut self, edge: EdgeIdx, conn: u64, topic: TopicKey, member: Option<Arc<str>>) {
        let state = self.topics.entry(topic.clone()).or_default();
        if !state.conns_mut(edge).insert(conn) {
            return;
        }
        if let Some(member) = member.filter(|_| topic.has_presence()) {
            let entry = state.members.entry(member.clone()).or_insert(Member {
                conns: 0,
                last_refresh: Instant::now(),
            });
            entry.conns += 1;
            if entry.conns == 1 {
                entry.last_refresh = Instant::now();
                self.queue_presence(PresenceJob::Refresh {
                    topic,
                    member: member.to_string(),
                });
            }
        }
    }

    fn unsubscribe(
        &mut self,
        edge: EdgeIdx,
        conn: u64,
        topic: &TopicKey,
        member: Option<Arc<str>>,
        moved: bool,
    ) {
        let Some(state) = self.topics.get_mut(topic) else {
            return;
        };
        let Some(at) = state.by_edge.iter().position(|(e, _)| *e == edge) else {
            return;
        };
        if !state.by_edge[at].1.remove(conn) {
            return;
        }
        if state.by_edge[at].1.ids.is_empty() {
            state.by_edge.swap_remove(at);
        }
        let mut left = None;
        if let Some(member) = member
            && let Some(entry) = state.members.get_mut(&member)
        {
            entry.conns -= 1;
            if entry.conns == 0 {
                state.members.remove(&member);
                if !moved {
                    left = Some(PresenceJob::Leave {
                        topic: topic.clone(),
                        member: member.to_string(),
                    });
                }
            }
        }
        if state.is_empty() {
            self.topics.remove(topic);
        }
        if let Some(job) = left {
            self.queue_presence(job);
        }
    }

    fn touch(&mut self, topic: TopicKey, member: Arc<str>) {
        let Some(entry) = self
            .topics
            .get_mut(&topic)
            .and_then(|state| state.members.get_mut(&member))
        else {
            return;
        };
        if entry.last_refresh.elapsed() < self.touch_interval {
            return;
        }
        entry.last_refresh = Instant::now();
        self.queue_presence(PresenceJob::Refresh {
            topic,
            member: member.to_string(),
        });
    }

    /// Refreshes every member held here: after the store lost or missed
    /// writes, presence again shows the sockets that are open. A member's
    /// expiry clock restarts, the price of not knowing its last activity.
    fn resync_presence(&mut self) {
        let now = Instant::now();
        let mut refreshes = Vec::new();
        for (topic, state) in &mut self.topics {
            for (member, entry) in &mut state.members {
                entry.last_refresh = now;
                refreshes.push(PresenceJob::Refresh {
                    topic: topic.clone(),
                    member: member.to_string(),
                });
            }
        }
        let total = refreshes.len();
        let from = self.resync_from.min(total);
        for (sent, refresh) in refreshes.into_iter().skip(from).enumerate() {
            if let Err(mpsc::error::TrySendError::Full(_)) = self.presence.try_send(refresh) {
                metrics::counter!("switchboard_router_presence_jobs_dropped_total", "job" => "refresh")
                    .increment(1);
                self.resync_from = from + sent;
                self.presence_lost = true;
                return;
            }
        }
        self.resync_from = 0;
    }

    /// Hands `payload` to one subscriber of `topic`, a different one each
    /// time; `None` when none can take it.
    fn dispatch(&mut self, topic: &TopicKey, payload: &Payload) -> Option<(EdgeIdx, u64)> {
        let state = self.topics.get(topic)?;
        let candidates: Vec<(EdgeIdx, u64)> = state
            .by_edge
            .iter()
            .filter(|(edge, _)| self.edges.contains_key(edge))
            .flat_map(|(edge, conns)| conns.ids.iter().map(move |conn| (*edge, *conn)))
            .collect();
        if candidates.is_empty() {
            return None;
        }
        self.turns = self.turns.wrapping_add(1);
        let (edge, conn) = candidates[self.turns % candidates.len()];
        self.edges
            .get(&edge)
            .is_some_and(|tx| send_delivery(tx, vec![conn], payload, None) == 1)
            .then_some((edge, conn))
    }

    /// Hands `payload` to every edge with subscribers of `topic`, one frame
    /// per edge, with the message's place in the topic's history if it has
    /// one; returns the number of sockets it was handed to.
    fn fan_out(&self, topic: &TopicKey, payload: &Payload, position: Option<&Position>) -> u32 {
        let Some(state) = self.topics.get(topic) else {
            return 0;
        };
        let placed = position.map(|position| (topic.to_proto(), position.clone()));
        let mut delivered = 0u32;
        for (edge, conns) in &state.by_edge {
            if let Some(tx) = self.edges.get(edge) {
                delivered += send_delivery(tx, conns.ids.clone(), payload, placed.as_ref());
            }
        }
        metrics::counter!("switchboard_router_delivered_sockets_total")
            .increment(u64::from(delivered));
        delivered
    }
}

impl Shard {
    /// [`Shard::fan_out`] to the subscribers of `topic` and to `also`,
    /// once per connection, all carrying `topic`'s place.
    fn fan_out_also(
        &self,
        topic: &TopicKey,
        payload: &Payload,
        position: Option<&Position>,
        also: Also,
    ) -> u32 {
        if also.is_empty() {
            return self.fan_out(topic, payload, position);
        }
        let mut by_edge: HashMap<EdgeIdx, std::collections::BTreeSet<u64>> = HashMap::new();
        if let Some(state) = self.topics.get(topic) {
            for (edge, conns) in &state.by_edge {
                by_edge.entry(*edge).or_default().extend(&conns.ids);
            }
        }
        for (edge, conns) in also {
            by_edge.entry(edge).or_default().extend(conns);
        }
        let placed = position.map(|position| (topic.to_proto(), position.clone()));
        let mut delivered = 0u32;
        for (edge, conns) in by_edge {
            if let Some(tx) = self.edges.get(&edge) {
                delivered +=
                    send_delivery(tx, conns.into_iter().collect(), payload, placed.as_ref());
            }
        }
        metrics::counter!("switchboard_router_delivered_sockets_total")
            .increment(u64::from(delivered));
        delivered
    }
}

/// Hands one delivery frame to an edge without waiting; returns the
/// number of sockets it names, or 0 when the edge's queue is full or gone.
/// One congested edge must not stall the others, so its frame is dropped.
pub(crate) fn send_delivery(
    tx: &mpsc::Sender<RouterFrame>,
    conn_ids: Vec<u64>,
    payload: &Payload,
    placed: Option<&(Topic, Position)>,
) -> u32 {
    let count = conn_ids.len();
    let frame: RouterFrame = router_frame::Body::Delivery(Delivery {
        conn_ids,
        payload: Some(payload.clone()),
        topic: placed.map(|(topic, _)| topic.clone()),
        position: placed.map(|(_, position)| position.clone()),
    })
    .into();
    match tx.try_send(frame) {
        Ok(()) => {
            metrics::counter!("switchboard_router_deliveries_total").increment(1);
            metrics::histogram!("switchboard_router_fanout_size").record(count as f64);
            count as u32
        }
        Err(mpsc::error::TrySendError::Full(_)) => {
            metrics::counter!("switchboard_router_edge_queue_full_total").increment(1);
            0
        }
        Err(mpsc::error::TrySendError::Closed(_)) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_proto::TopicKind;

    fn shard() -> (Shard, mpsc::Receiver<PresenceJob>) {
        shard_with_queue(64)
    }

    fn shard_with_queue(capacity: usize) -> (Shard, mpsc::Receiver<PresenceJob>) {
        let (tx, rx) = mpsc::channel(capacity);
        (Shard::new(tx, Duration::from_secs(10)), rx)
    }

    #[test]
    fn a_full_presence_queue_drops_then_resyncs_when_the_worker_catches_up() {
        let (mut shard, mut jobs) = shard_with_queue(2);
        for (conn, member) in ["a", "b", "c", "d"].into_iter().enumerate() {
            shard.subscribe(1, conn as u64, group(), Some(Arc::from(member)));
        }
        // Two joins fit; two were dropped, and nothing waits on the store.
        assert!(shard.presence_lost);
        let mut seen: std::collections::HashSet<String> = std::collections::HashSet::new();
        // A query while full is answered at once, not queued.
        let (reply, answer) = tokio::sync::oneshot::channel();
        shard.handle(ShardCommand::PresenceQuery {
            topic: group(),
            reply: Reply::Local(reply),
        });
        let answer = answer.blocking_recv().expect("answered");
        assert_eq!(answer.error, ErrorCode::Internal as i32);
        // The worker drains; the next command resyncs. The queue holds two
        // at a time, so a round stops when it is full and the next goes on
        // where it stopped: every member is refreshed, none starved.
        let mut rounds = Vec::new();
        for _ in 0..2 {
            while jobs.try_recv().is_ok() {}
            shard.handle(ShardCommand::EdgeDown { edge: 9 });
            let mut round = Vec::new();
            while let Ok(PresenceJob::Refresh { member, .. }) = jobs.try_recv() {
                seen.insert(member.clone());
                round.push(member);
            }
            rounds.push(round);
        }
        assert_eq!(rounds[0].len(), 2, "{rounds:?}");
        assert_eq!(rounds[1].len(), 2, "{rounds:?}");
        let mut seen: Vec<String> = seen.into_iter().collect();
        seen.sort();
        assert_eq!(seen, ["a", "b", "c", "d"]);
        assert!(!shard.presence_lost, "the resync is through");
    }

    fn group() -> TopicKey {
        TopicKey::new("t", TopicKind::Group, "g")
    }

    fn deliveries(rx: &mut mpsc::Receiver<RouterFrame>) -> Vec<Delivery> {
        let mut out = Vec::new();
        while let Ok(frame) = rx.try_recv() {
            if let Some(router_frame::Body::Delivery(d)) = frame.body {
                out.push(d);
            }
        }
        out
    }

    #[test]
    fn one_delivery_per_edge_with_all_its_connections() {
        let (mut shard, _jobs) = shard();
        let (tx1, mut rx1) = mpsc::channel(16);
        let (tx2, mut rx2) = mpsc::channel(16);
        shard.handle(ShardCommand::EdgeUp { edge: 1, tx: tx1 });
        shard.handle(ShardCommand::EdgeUp { edge: 2, tx: tx2 });
        for conn in 1..=50 {
            shard.subscribe(1, conn, group(), None);
        }
        shard.subscribe(2, 7, group(), None);
        let delivered = shard.fan_out(&group(), &Payload::json(&b"{}"[..]), None);
        assert_eq!(delivered, 51);
        let d1 = deliveries(&mut rx1);
        assert_eq!(d1.len(), 1, "one frame for 50 sockets on one edge");
        let mut ids = d1[0].conn_ids.clone();
        ids.sort_unstable();
        assert_eq!(ids, (1..=50).collect::<Vec<_>>());
        assert_eq!(deliveries(&mut rx2)[0].conn_ids, vec![7]);
    }

    #[test]
    fn first_socket_joins_last_socket_leaves() {
        let (mut shard, mut jobs) = shard();
        let alice: Arc<str> = Arc::from("alice");
        shard.subscribe(1, 1, group(), Some(alice.clone()));
        shard.subscribe(1, 2, group(), Some(alice.clone()));
        assert!(matches!(jobs.try_recv(), Ok(PresenceJob::Refresh { .. })));
        assert!(jobs.try_recv().is_err(), "a second tab is no join");
        shard.unsubscribe(1, 1, &group(), Some(alice.clone()), false);
        assert!(jobs.try_recv().is_err(), "one tab left");
        shard.unsubscribe(1, 2, &group(), Some(alice), false);
        assert!(matches!(jobs.try_recv(), Ok(PresenceJob::Leave { .. })));
        assert!(shard.topics.is_empty(), "empty topics are dropped");
    }

    #[test]
    fn a_moved_subscription_leaves_without_a_presence_leave() {
        let (mut shard, mut jobs) = shard();
        let m: Arc<str> = Arc::from("m");
        shard.subscribe(1, 1, group(), Some(m.clone()));
        let _join = jobs.try_recv();
        shard.unsubscribe(1, 1, &group(), Some(m), true);
        assert!(
            jobs.try_recv().is_err(),
            "the member is present at the new owner"
        );
        assert!(shard.topics.is_empty());
    }

    #[test]
    fn duplicate_subscribe_and_unknown_unsubscribe_are_ignored() {
        let (mut shard, mut jobs) = shard();
        let m: Arc<str> = Arc::from("m");
        shard.subscribe(1, 1, group(), Some(m.clone()));
        shard.subscribe(1, 1, group(), Some(m.clone()));
        shard.unsubscribe(1, 99, &group(), Some(m.clone()), false);
        shard.unsubscribe(9, 1, &group(), Some(m.clone()), false);
        assert!(matches!(jobs.try_recv(), Ok(PresenceJob::Refresh { .. })));
        shard.unsubscribe(1, 1, &group(), Some(m), false);
        assert!(matches!(jobs.try_recv(), Ok(PresenceJob::Leave { .. })));
    }

    #[test]
    fn touches_are_throttled() {
        let (mut shard, mut jobs) = shard();
        let m: Arc<str> = Arc::from("m");
        shard.subscribe(1, 1, group(), Some(m.clone()));
        let _join = jobs.try_recv();
        shard.touch(group(), m.clone());
        assert!(jobs.try_recv().is_err(), "within the touch interval");
        shard.touch_interval = Duration::ZERO;
        shard.touch(group(), m);
        assert!(matches!(jobs.try_recv(), Ok(PresenceJob::Refresh { .. })));
    }

    #[test]
    fn a_resync_refreshes_every_member_held() {
        let (mut shard, mut jobs) = shard();
        shard.subscribe(1, 1, group(), Some(Arc::from("a")));
        shard.subscribe(1, 2, group(), Some(Arc::from("b")));
        while jobs.try_recv().is_ok() {}
        shard.resync_presence();
        let mut refreshed = Vec::new();
        while let Ok(job) = jobs.try_recv() {
            if let PresenceJob::Refresh { member, .. } = job {
                refreshed.push(member);
            }
        }
        refreshed.sort();
        assert_eq!(refreshed, ["a", "b"]);
    }

    #[test]
    fn conn_set_remove_keeps_index_consistent() {
        let mut set = ConnSet::default();
        for c in 0..10 {
            assert!(set.insert(c));
        }
        assert!(!set.insert(3));
        for c in [0, 5, 9, 1] {
            assert!(set.remove(c));
            assert!(!set.remove(c));
        }
        let mut left = set.ids.clone();
        left.sort_unstable();
        assert_eq!(left, vec![2, 3, 4, 6, 7, 8]);
        assert!(set.index.is_empty(), "a small set has no index");
    }

    #[test]
    fn conn_set_builds_its_index_when_it_grows() {
        let mut set = ConnSet::default();
        let n = SMALL_SET as u64 * 3;
        for c in 0..n {
            assert!(set.insert(c));
        }
        assert!(
            !set.insert(SMALL_SET as u64 + 1),
            "already in the indexed set"
        );
        for c in (0..n).step_by(2) {
            assert!(set.remove(c));
            assert!(!set.remove(c));
        }
        assert_eq!(set.ids.len(), set.index.len());
        for (position, id) in set.ids.iter().enumerate() {
            assert_eq!(set.index[id], position);
            assert_eq!(id % 2, 1);
        }
        for c in (1..n).step_by(2) {
            assert!(set.remove(c));
        }
        assert!(set.ids.is_empty() && set.index.is_empty());
        assert!(set.insert(7), "an emptied set starts small again");
        assert_eq!(set.position(7), Some(0));
    }
}
