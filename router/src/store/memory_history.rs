//! [`HistoryStore`] in memory: one map of histories behind a mutex held
//! only for map operations. Expired histories are swept as appends go on,
//! so topics nobody publishes to any more do not stay, and all histories
//! together hold at most a byte budget: past it, the histories that would
//! expire first are dropped (their clients are told `recovered: false`),
//! so messages to ever new topics (direct messages to made-up client ids)
//! cannot grow the process without bound.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use async_trait::async_trait;
use bytes::Bytes;

use super::StoreError;
use super::history::{
    Append, Appended, HistoryLimits, HistoryRef, HistoryStore, Position, Since, new_epoch,
};

/// Appends between two sweeps of expired histories: each sweep walks
/// every history, so it runs once per this many appends.
const SWEEP_EVERY: u64 = 4_096;

/// Bytes of kept messages (and their ids) all histories hold at most.
pub const DEFAULT_BUDGET_BYTES: usize = 256 << 20;

/// What a history costs besides its messages: its map entry, epoch and
/// bookkeeping, so that many empty histories count too.
const HISTORY_OVERHEAD: usize = 256;

struct History {
    epoch: String,
    top: u64,
    /// The last messages, oldest first; the last one has offset `top`.
    messages: VecDeque<(Option<String>, Bytes)>,
    /// Publish ids of the kept messages → offset.
    ids: HashMap<String, u64>,
    /// Bytes of `messages` and `ids` together, kept as they change so an
    /// append costs the same however many messages the history keeps.
    kept_bytes: usize,
    expires_at_ms: u64,
}

impl History {
    fn new(now_ms: u64, ttl_ms: u64) -> Self {
        Self {
            epoch: new_epoch(),
            top: 0,
            messages: VecDeque::new(),
            ids: HashMap::new(),
            kept_bytes: 0,
            expires_at_ms: now_ms.saturating_add(ttl_ms),
        }
    }

    fn position(&self, offset: u64) -> Position {
        Position {
            epoch: self.epoch.clone(),
            offset,
        }
    }

    /// Offset of the oldest kept message (`top + 1` when none is kept).
    fn first(&self) -> u64 {
        self.top + 1 - self.messages.len() as u64
    }
}

pub struct MemoryHistory {
    state: Mutex<State>,
}

impl Default for MemoryHistory {
    fn default() -> Self {
        Self::with_budget(DEFAULT_BUDGET_BYTES)
    }
}

struct State {
    histories: HashMap<(String, String), History>,
    appends: u64,
    /// Bytes held now, as [`History::cost`] counts them.
    bytes: usize,
    budget: usize,
}

impl History {
    fn cost(&self) -> usize {
        HISTORY_OVERHEAD + self.kept_bytes
    }

    /// What one kept message counts for: its data, and its id twice (in
    /// the message and in the id index).
    fn cost_of(id: Option<&String>, data: &Bytes) -> usize {
        data.len() + id.map_or(0, |id| 2 * id.len())
    }
}

impl State {
    /// The live history of `key`, a new one if it has none or it expired;
    /// its cost is taken off [`State::bytes`] until [`State::put_back`].
    fn take(&mut self, key: &(String, String), now_ms: u64, ttl_ms: u64) -> History {
        match self.histories.remove(key) {
            Some(history) => {
                self.bytes -= history.cost();
                if history.expires_at_ms <= now_ms {
                    History::new(now_ms, ttl_ms)
                } else {
                    history
                }
            }
            None => History::new(now_ms, ttl_ms),
        }
    }

    /// Keeps `history` under `key` and, past the budget, drops the
    /// histories that would expire first (never the one just kept).
    fn put_back(&mut self, key: (String, String), history: History) {
        self.bytes += history.cost();
        self.histories.insert(key.clone(), history);
        if self.bytes <= self.budget {
            return;
        }
        // Down to 90% at once, so a full budget costs one sort per many
        // appends rather than one per append.
        let target = self.budget / 10 * 9;
        let mut by_expiry: Vec<(u64, (String, String))> = self
            .histories
            .iter()
            .filter(|(k, _)| **k != key)
            .map(|(k, h)| (h.expires_at_ms, k.clone()))
            .collect();
        by_expiry.sort_unstable();
        let mut evicted = 0u64;
        for (_, old) in by_expiry {
            if self.bytes <= target {
                break;
            }
            if let Some(h) = self.histories.remove(&old) {
                self.bytes -= h.cost();
                evicted += 1;
            }
        }
        metrics::counter!("switchboard_router_history_evicted_total").increment(evicted);
    }

    fn sweep(&mut self, now_ms: u64) {
        self.appends += 1;
        if self.appends.is_multiple_of(SWEEP_EVERY) {
            let mut freed = 0;
            self.histories.retain(|_, h| {
                let live = h.expires_at_ms > now_ms;
                if !live {
                    freed += h.cost();
                }
                live
            });
            self.bytes -= freed;
        }
    }
}

fn key(history: HistoryRef<'_>) -> (String, String) {
    (history.tenant.to_owned(), history.stream.to_owned())
}

impl MemoryHistory {
    /// Histories holding at most `budget` bytes in all.
    pub fn with_budget(budget: usize) -> Self {
        Self {
            state: Mutex::new(State {
                histories: HashMap::new(),
                appends: 0,
                bytes: 0,
                budget,
            }),
        }
    }

    fn append(
        &self,
        history: HistoryRef<'_>,
        messages: &[Append<'_>],
        limits: HistoryLimits,
        now_ms: u64,
    ) -> Vec<Appended> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.sweep(now_ms);
        let key = key(history);
        let mut history = state.take(&key, now_ms, limits.ttl_ms);
        let h = &mut history;
        let appended = messages
            .iter()
            .map(|message| {
                if let Some(id) = message.publish_id
                    && let Some(&offset) = h.ids.get(id)
                {
                    return Appended::Duplicate(h.position(offset));
                }
                h.top += 1;
                let offset = h.top;
                let id = message.publish_id.map(str::to_owned);
                if let Some(id) = &id {
                    h.ids.insert(id.clone(), offset);
                }
                h.kept_bytes += History::cost_of(id.as_ref(), &message.data);
                h.messages.push_back((id, message.data.clone()));
                Appended::New(h.position(offset))
            })
            .collect();
        while h.messages.len() > limits.size.max(1) {
            let Some((id, data)) = h.messages.pop_front() else {
                break;
            };
            h.kept_bytes -= History::cost_of(id.as_ref(), &data);
            if let Some(id) = id {
                h.ids.remove(&id);
            }
        }
        h.expires_at_ms = now_ms.saturating_add(limits.ttl_ms);
        state.put_back(key, history);
        appended
    }

    fn since(
        &self,
        history: HistoryRef<'_>,
        since: Option<&Position>,
        limit: usize,
        limits: HistoryLimits,
        now_ms: u64,
    ) -> Since {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let key = key(history);
        let h = state.take(&key, now_ms, limits.ttl_ms);
        let found = read(&h, since, limit);
        state.put_back(key, h);
        found
    }
}

/// What `h` holds after `since`, at most `limit` messages.
fn read(h: &History, since: Option<&Position>, limit: usize) -> Since {
    let (epoch, top) = (h.epoch.clone(), h.top);
    let Some(since) = since else {
        return Since::Recovered {
            epoch,
            top,
            messages: Vec::new(),
        };
    };
    if since.epoch != h.epoch {
        return Since::Lost { epoch, top };
    }
    if since.offset > top {
        return Since::Ahead { epoch, top };
    }
    let first = h.first();
    if since.offset + 1 < first {
        return Since::Lost { epoch, top };
    }
    let skip = (since.offset + 1 - first) as usize;
    let messages = h
        .messages
        .iter()
        .skip(skip)
        .take(limit)
        .zip(since.offset + 1..)
        .map(|((_, data), offset)| (offset, data.clone()))
        .collect();
    Since::Recovered {
        epoch,
        top,
        messages,
    }
}

/// The memory store's histories live in its [`MemoryHistory`]; nothing
/// here waits or fails.
#[async_trait]
impl HistoryStore for super::MemoryStore {
    async fn history_append_batch(
        &self,
        history: HistoryRef<'_>,
        messages: &[Append<'_>],
        limits: HistoryLimits,
        now_ms: u64,
    ) -> Result<Vec<Appended>, StoreError> {
        Ok(self.history.append(history, messages, limits, now_ms))
    }

    fn history_append_now(
        &self,
        history: HistoryRef<'_>,
        messages: &[Append<'_>],
        limits: HistoryLimits,
        now_ms: u64,
    ) -> Option<Vec<Appended>> {
        Some(self.history.append(history, messages, limits, now_ms))
    }

    async fn history_since(
        &self,
        history: HistoryRef<'_>,
        since: Option<&Position>,
        limit: usize,
        limits: HistoryLimits,
        now_ms: u64,
    ) -> Result<Since, StoreError> {
        Ok(self.history.since(history, since, limit, limits, now_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::super::history::contract;
    use super::super::{MemoryStore, contract::TTL_MS};
    use super::*;

    fn store() -> MemoryStore {
        MemoryStore::new(TTL_MS)
    }

    /// The running count of a history's bytes is what its messages and
    /// ids add up to, through appends that trim old messages, with and
    /// without publish ids.
    #[test]
    fn a_history_counts_the_bytes_it_keeps_as_it_trims() {
        let histories = MemoryHistory::default();
        let limits = HistoryLimits {
            size: 5,
            ttl_ms: 60_000,
        };
        let h = HistoryRef {
            tenant: "t",
            stream: "group:g",
        };
        for n in 0..40usize {
            let id = format!("e1-{n}");
            let message = Append {
                publish_id: (n % 3 != 0).then_some(id.as_str()),
                data: Bytes::from(vec![b'x'; 10 + n]),
            };
            histories.append(h, std::slice::from_ref(&message), limits, 1);
            let state = histories.state.lock().unwrap();
            let history = state.histories.values().next().unwrap();
            let recounted: usize = history
                .messages
                .iter()
                .map(|(id, data)| History::cost_of(id.as_ref(), data))
                .sum();
            assert_eq!(history.kept_bytes, recounted, "after append {n}");
            assert_eq!(
                history.ids.len(),
                history.messages.iter().filter(|m| m.0.is_some()).count()
            );
        }
    }

    /// Messages to ever new topics stay within the byte budget: the
    /// histories that would expire first go, and their next read starts
    /// a new epoch (so their clients are told nothing was recovered).
    #[test]
    fn all_histories_together_stay_within_the_budget() {
        let budget = 64 * 1024;
        let histories = MemoryHistory::with_budget(budget);
        let limits = HistoryLimits {
            size: 10,
            ttl_ms: 60_000,
        };
        let message = Append {
            publish_id: None,
            data: Bytes::from(vec![b'x'; 1024]),
        };
        let first = HistoryRef {
            tenant: "t",
            stream: "client:c0",
        };
        let before = histories.append(first, std::slice::from_ref(&message), limits, 1)[0].clone();
        for n in 1..1_000u64 {
            let stream = format!("client:c{n}");
            let h = HistoryRef {
                tenant: "t",
                stream: &stream,
            };
            histories.append(h, std::slice::from_ref(&message), limits, 1 + n);
            let state = histories.state.lock().unwrap();
            assert!(state.bytes <= budget, "{} bytes after {n}", state.bytes);
            let counted: usize = state.histories.values().map(History::cost).sum();
            assert_eq!(state.bytes, counted, "the count is exact");
        }
        // The oldest went; the newest is kept whole.
        let gone = histories.since(first, Some(before.position()), 10, limits, 2_000);
        assert!(matches!(gone, Since::Lost { .. }), "{gone:?}");
        let newest = HistoryRef {
            tenant: "t",
            stream: "client:c999",
        };
        let start = Position {
            epoch: histories
                .since(newest, None, 0, limits, 2_000)
                .latest()
                .epoch,
            offset: 0,
        };
        match histories.since(newest, Some(&start), 10, limits, 2_000) {
            Since::Recovered { messages, .. } => assert_eq!(messages.len(), 1),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn offsets_count_from_one_in_one_epoch() {
        contract::offsets_count_from_one_in_one_epoch(&store()).await;
    }

    #[tokio::test]
    async fn a_position_without_history_starts_an_epoch() {
        contract::a_position_without_history_starts_an_epoch(&store()).await;
    }

    #[tokio::test]
    async fn old_positions_and_other_epochs_are_lost() {
        contract::old_positions_and_other_epochs_are_lost(&store()).await;
    }

    #[tokio::test]
    async fn a_publish_id_is_appended_once() {
        contract::a_publish_id_is_appended_once(&store()).await;
    }

    #[tokio::test]
    async fn a_batch_appends_in_order() {
        contract::a_batch_appends_in_order(&store()).await;
    }

    #[tokio::test]
    async fn tenants_and_streams_are_isolated() {
        contract::tenants_and_streams_are_isolated(&store()).await;
    }

    #[tokio::test]
    async fn binary_messages_survive() {
        contract::binary_messages_survive(&store()).await;
    }

    #[tokio::test]
    async fn a_history_expires_after_its_last_message() {
        contract::a_history_expires_after_its_last_message(&store()).await;
    }

    /// Histories nobody appends to any more are swept, not kept forever.
    #[tokio::test]
    async fn expired_histories_are_swept() {
        let store = store();
        let limits = HistoryLimits {
            size: 2,
            ttl_ms: 10,
        };
        for n in 0..100 {
            let stream = format!("group:g{n}");
            let h = HistoryRef {
                tenant: "t",
                stream: &stream,
            };
            store
                .history_append(
                    h,
                    Append {
                        publish_id: None,
                        data: Bytes::new(),
                    },
                    limits,
                    0,
                )
                .await
                .unwrap();
        }
        let h = HistoryRef {
            tenant: "t",
            stream: "group:live",
        };
        for _ in 0..SWEEP_EVERY {
            store
                .history_append(
                    h,
                    Append {
                        publish_id: None,
                        data: Bytes::new(),
                    },
                    limits,
                    1_000,
                )
                .await
                .unwrap();
        }
        let left = store.history.state.lock().unwrap().histories.len();
        assert_eq!(left, 1, "only the live history stays");
    }
}
