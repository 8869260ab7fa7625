//! History: the last messages of a topic, numbered by the topic's owner,
//! so a client that reconnects (or an edge whose router went away) gets
//! what it missed.
//!
//! Each topic with history has an `epoch`, a short random string chosen
//! when its history is created, and a `top`: the offset of its latest
//! message (1, 2, 3, … with no gaps and no reuse). A new epoch voids every
//! earlier position: the history was lost (store flushed, standalone
//! restarted, history expired). The store keeps the last `size` messages
//! for `ttl` after the last one; a message may carry a publish id, and
//! appending an id the history holds answers the position it already has
//! instead of appending it twice.

use async_trait::async_trait;
use bytes::Bytes;

use super::StoreError;

/// One topic's history, scoped by tenant. `stream` names the topic the
/// way the server API does (`group:{id}`, `client:{id}`, `broadcast`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HistoryRef<'a> {
    pub tenant: &'a str,
    pub stream: &'a str,
}

/// How much a history keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryLimits {
    /// Most messages kept; the oldest go first. At least 1 (a size of 0
    /// turns history off, and then nothing is appended at all).
    pub size: usize,
    /// The history goes this long after its last message.
    pub ttl_ms: u64,
}

/// A place in a history: the wire's own position, so what the store
/// answers goes to edges and the server API as it is.
pub use switchboard_proto::Position;

/// What an append did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Appended {
    /// Appended at this position.
    New(Position),
    /// The publish id is in the history already, at this position: nothing
    /// was appended.
    Duplicate(Position),
}

impl Appended {
    pub fn position(&self) -> &Position {
        match self {
            Appended::New(p) | Appended::Duplicate(p) => p,
        }
    }
}

/// One message to append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Append<'a> {
    /// Makes a resend idempotent: an id the history holds is not appended
    /// again. `None` for messages nobody will resend.
    pub publish_id: Option<&'a str>,
    pub data: Bytes,
}

/// What a read found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Since {
    /// The position is in the history: the messages after it, oldest
    /// first, at most the limit asked for.
    Recovered {
        epoch: String,
        /// The latest offset (0 when nothing was appended yet).
        top: u64,
        messages: Vec<(u64, Bytes)>,
    },
    /// The epoch differs, or the position is older than the history
    /// holds: nothing can be replayed.
    Lost { epoch: String, top: u64 },
    /// The position is ahead of the latest offset of this epoch.
    Ahead { epoch: String, top: u64 },
}

impl Since {
    /// The history's current epoch and latest offset, whatever was found.
    pub fn latest(&self) -> Position {
        let (epoch, top) = match self {
            Since::Recovered { epoch, top, .. }
            | Since::Lost { epoch, top }
            | Since::Ahead { epoch, top } => (epoch, top),
        };
        Position {
            epoch: epoch.clone(),
            offset: *top,
        }
    }
}

/// Letters and digits in an epoch: 62^8 (about 2^47) choices, so a
/// history made again after it expired or was flushed does not come back
/// with the epoch its clients hold, while every delivery carries only 8
/// bytes of it.
const EPOCH_LEN: usize = 8;

/// A short random epoch for a new history.
pub fn new_epoch() -> String {
    use rand::Rng;
    rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(EPOCH_LEN)
        .map(char::from)
        .collect()
}

#[async_trait]
pub trait HistoryStore: Send + Sync {
    /// Appends `messages` in order, creating the history (and its epoch)
    /// if it has none, keeping the last `limits.size` messages and moving
    /// its expiry to `limits.ttl_ms` after `now_ms`. One step for all of
    /// them (one script on Redis), so a busy topic costs one round trip per
    /// batch, not per message. Answers one [`Appended`] per message.
    async fn history_append_batch(
        &self,
        history: HistoryRef<'_>,
        messages: &[Append<'_>],
        limits: HistoryLimits,
        now_ms: u64,
    ) -> Result<Vec<Appended>, StoreError>;

    /// Appends at once when the store needs no round trip to do it (the
    /// memory store), so the shard delivers in the same turn instead of
    /// handing the publish to its writer task and back; `None` when
    /// appends wait on I/O (Redis), which then go through the writer. A
    /// store answers `Some` always or never, so one topic's appends never
    /// take both ways.
    fn history_append_now(
        &self,
        history: HistoryRef<'_>,
        messages: &[Append<'_>],
        limits: HistoryLimits,
        now_ms: u64,
    ) -> Option<Vec<Appended>> {
        let _ = (history, messages, limits, now_ms);
        None
    }

    /// Appends one message: [`HistoryStore::history_append_batch`] of one.
    async fn history_append(
        &self,
        history: HistoryRef<'_>,
        message: Append<'_>,
        limits: HistoryLimits,
        now_ms: u64,
    ) -> Result<Appended, StoreError> {
        let mut appended = self
            .history_append_batch(history, std::slice::from_ref(&message), limits, now_ms)
            .await?;
        appended
            .pop()
            .ok_or_else(|| StoreError::Protocol("history: an append answered nothing".into()))
    }

    /// The messages after `since` (at most `limit`), or why there are
    /// none. Without `since`, just the current position (`Recovered` with
    /// no messages). A history that does not exist is created empty with a
    /// new epoch, expiring `limits.ttl_ms` after `now_ms`, so a client that
    /// starts from it holds an epoch the next messages keep.
    async fn history_since(
        &self,
        history: HistoryRef<'_>,
        since: Option<&Position>,
        limit: usize,
        limits: HistoryLimits,
        now_ms: u64,
    ) -> Result<Since, StoreError>;
}

/// The behaviour tests every [`HistoryStore`] must pass. Expiry is
/// checked with real time: Redis expires keys by its own clock.
#[cfg(test)]
pub(crate) mod contract {
    use std::time::Duration;

    use super::*;

    pub const LIMITS: HistoryLimits = HistoryLimits {
        size: 5,
        ttl_ms: 60_000,
    };

    fn now() -> u64 {
        switchboard_common::clock::now_ms()
    }

    fn at<'a>(tenant: &'a str, stream: &'a str) -> HistoryRef<'a> {
        HistoryRef { tenant, stream }
    }

    fn message(text: &str) -> Append<'static> {
        Append {
            publish_id: None,
            data: Bytes::copy_from_slice(text.as_bytes()),
        }
    }

    fn with_id<'a>(id: &'a str, text: &str) -> Append<'a> {
        Append {
            publish_id: Some(id),
            data: Bytes::copy_from_slice(text.as_bytes()),
        }
    }

    async fn append(store: &dyn HistoryStore, h: HistoryRef<'_>, m: Append<'_>) -> Appended {
        store.history_append(h, m, LIMITS, now()).await.unwrap()
    }

    async fn since(
        store: &dyn HistoryStore,
        h: HistoryRef<'_>,
        position: Option<&Position>,
        limit: usize,
    ) -> Since {
        store
            .history_since(h, position, limit, LIMITS, now())
            .await
            .unwrap()
    }

    fn texts(found: &Since) -> Vec<(u64, String)> {
        match found {
            Since::Recovered { messages, .. } => messages
                .iter()
                .map(|(o, d)| (*o, String::from_utf8_lossy(d).into_owned()))
                .collect(),
            other => panic!("not recovered: {other:?}"),
        }
    }

    pub async fn offsets_count_from_one_in_one_epoch(store: &dyn HistoryStore) {
        let h = at("t1", "group:g1");
        let first = append(store, h, message("a")).await;
        let Appended::New(first) = first else {
            panic!("a first append is new: {first:?}");
        };
        assert_eq!(first.offset, 1);
        assert!(!first.epoch.is_empty());
        for (n, text) in ["b", "c"].iter().enumerate() {
            let next = append(store, h, message(text)).await;
            assert_eq!(
                next,
                Appended::New(Position {
                    epoch: first.epoch.clone(),
                    offset: n as u64 + 2,
                })
            );
        }
        let start = Position {
            epoch: first.epoch.clone(),
            offset: 0,
        };
        let all = since(store, h, Some(&start), 100).await;
        assert_eq!(
            texts(&all),
            vec![(1, "a".into()), (2, "b".into()), (3, "c".into())]
        );
        assert_eq!(all.latest().offset, 3);
        let after_b = Position {
            epoch: first.epoch.clone(),
            offset: 2,
        };
        assert_eq!(
            texts(&since(store, h, Some(&after_b), 100).await),
            vec![(3, "c".into())]
        );
        let now_latest = Position {
            epoch: first.epoch.clone(),
            offset: 3,
        };
        assert_eq!(
            texts(&since(store, h, Some(&now_latest), 100).await),
            vec![],
            "nothing after the latest"
        );
        let limited = since(store, h, Some(&start), 2).await;
        assert_eq!(texts(&limited), vec![(1, "a".into()), (2, "b".into())]);
        assert_eq!(
            limited.latest().offset,
            3,
            "the limit does not hide the top"
        );
    }

    pub async fn a_position_without_history_starts_an_epoch(store: &dyn HistoryStore) {
        let h = at("t1", "client:c1");
        let found = since(store, h, None, 10).await;
        let Since::Recovered {
            epoch,
            top,
            messages,
        } = &found
        else {
            panic!("a fresh history reads as recovered: {found:?}");
        };
        assert_eq!((*top, messages.len()), (0, 0));
        let appended = append(store, h, message("first")).await;
        assert_eq!(
            appended.position(),
            &Position {
                epoch: epoch.clone(),
                offset: 1,
            },
            "the next message keeps the epoch a reader was given"
        );
        let from_start = Position {
            epoch: epoch.clone(),
            offset: 0,
        };
        assert_eq!(
            texts(&since(store, h, Some(&from_start), 10).await),
            vec![(1, "first".into())]
        );
    }

    pub async fn old_positions_and_other_epochs_are_lost(store: &dyn HistoryStore) {
        let h = at("t1", "broadcast");
        let mut epoch = String::new();
        for n in 1..=8 {
            epoch = append(store, h, message(&format!("m{n}")))
                .await
                .position()
                .epoch
                .clone();
        }
        // Size 5 keeps 4..=8: a client at 3 has seen everything before 4.
        let at_three = Position {
            epoch: epoch.clone(),
            offset: 3,
        };
        assert_eq!(
            texts(&since(store, h, Some(&at_three), 100).await),
            (4..=8).map(|n| (n, format!("m{n}"))).collect::<Vec<_>>()
        );
        let at_two = Position {
            epoch: epoch.clone(),
            offset: 2,
        };
        assert_eq!(
            since(store, h, Some(&at_two), 100).await,
            Since::Lost {
                epoch: epoch.clone(),
                top: 8
            },
            "offset 3 was trimmed"
        );
        let other = Position {
            epoch: format!("{epoch}x"),
            offset: 8,
        };
        assert_eq!(
            since(store, h, Some(&other), 100).await,
            Since::Lost {
                epoch: epoch.clone(),
                top: 8
            }
        );
        let ahead = Position {
            epoch: epoch.clone(),
            offset: 9,
        };
        assert_eq!(
            since(store, h, Some(&ahead), 100).await,
            Since::Ahead { epoch, top: 8 }
        );
    }

    pub async fn a_publish_id_is_appended_once(store: &dyn HistoryStore) {
        let h = at("t1", "user:u1");
        let first = append(store, h, with_id("p1", "one")).await;
        let Appended::New(position) = first else {
            panic!("new: {first:?}");
        };
        append(store, h, message("between")).await;
        let again = append(store, h, with_id("p1", "one, resent")).await;
        assert_eq!(again, Appended::Duplicate(position.clone()));
        let start = Position {
            epoch: position.epoch.clone(),
            offset: 0,
        };
        assert_eq!(
            texts(&since(store, h, Some(&start), 10).await),
            vec![(1, "one".into()), (2, "between".into())]
        );
        // Another topic's id space is its own.
        let elsewhere = append(store, at("t1", "user:u2"), with_id("p1", "x")).await;
        assert!(matches!(elsewhere, Appended::New(_)), "{elsewhere:?}");
        // Once trimmed, an id no longer answers (the history is bounded).
        for n in 0..LIMITS.size {
            append(store, h, message(&format!("fill{n}"))).await;
        }
        let late = append(store, h, with_id("p1", "one, late")).await;
        assert!(matches!(late, Appended::New(_)), "{late:?}");
    }

    /// A batch numbers its messages in order, one after another, trims to
    /// the size as one append would, and finds a repeated id even within
    /// the batch.
    pub async fn a_batch_appends_in_order(store: &dyn HistoryStore) {
        let h = at("t1", "group:batch");
        let first = append(store, h, message("zero")).await;
        let batch = [
            message("a"),
            with_id("p", "b"),
            with_id("p", "b again"),
            message("c"),
        ];
        let appended = store
            .history_append_batch(h, &batch, LIMITS, now())
            .await
            .unwrap();
        let epoch = first.position().epoch.clone();
        let at_offset = |offset| Position {
            epoch: epoch.clone(),
            offset,
        };
        assert_eq!(
            appended,
            vec![
                Appended::New(at_offset(2)),
                Appended::New(at_offset(3)),
                Appended::Duplicate(at_offset(3)),
                Appended::New(at_offset(4)),
            ]
        );
        assert!(
            store
                .history_append_batch(h, &[], LIMITS, now())
                .await
                .unwrap()
                .is_empty()
        );
        let many: Vec<Append<'_>> = (0..LIMITS.size + 2)
            .map(|n| Append {
                publish_id: None,
                data: Bytes::from(format!("m{n}")),
            })
            .collect();
        let appended = store
            .history_append_batch(h, &many, LIMITS, now())
            .await
            .unwrap();
        let last = appended.last().unwrap().position().offset;
        assert_eq!(last, 4 + many.len() as u64);
        let from = since(store, h, Some(&at_offset(last - LIMITS.size as u64)), 100).await;
        assert_eq!(texts(&from).len(), LIMITS.size, "trimmed to the size");
        let older = since(
            store,
            h,
            Some(&at_offset(last - LIMITS.size as u64 - 1)),
            100,
        )
        .await;
        assert!(matches!(older, Since::Lost { .. }), "{older:?}");
    }

    pub async fn tenants_and_streams_are_isolated(store: &dyn HistoryStore) {
        let a = append(store, at("ta", "group:g"), message("a")).await;
        let b = append(store, at("tb", "group:g"), message("b")).await;
        let c = append(store, at("ta", "group:g:x"), message("c")).await;
        for appended in [&a, &b, &c] {
            assert_eq!(appended.position().offset, 1, "{appended:?}");
        }
        let from_b = Position {
            epoch: b.position().epoch.clone(),
            offset: 0,
        };
        assert_eq!(
            texts(&since(store, at("tb", "group:g"), Some(&from_b), 10).await),
            vec![(1, "b".into())]
        );
        // Separator characters in ids reach no one else's history.
        let odd = append(store, at("ta:", "group:g"), message("odd")).await;
        assert_eq!(odd.position().offset, 1);
    }

    pub async fn binary_messages_survive(store: &dyn HistoryStore) {
        let h = at("t1", "conv:c1");
        let data = Bytes::from_static(&[0, 1, 2, 0xff, b':', b'7', 0]);
        let appended = store
            .history_append(
                h,
                Append {
                    publish_id: Some("7:x"),
                    data: data.clone(),
                },
                LIMITS,
                now(),
            )
            .await
            .unwrap();
        let start = Position {
            epoch: appended.position().epoch.clone(),
            offset: 0,
        };
        match since(store, h, Some(&start), 10).await {
            Since::Recovered { messages, .. } => assert_eq!(messages, vec![(1, data)]),
            other => panic!("{other:?}"),
        }
    }

    pub async fn a_history_expires_after_its_last_message(store: &dyn HistoryStore) {
        let h = at("t1", "device:d1");
        let short = HistoryLimits {
            size: 10,
            ttl_ms: 300,
        };
        let first = store
            .history_append(h, message("old"), short, now())
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await;
        store
            .history_append(h, message("kept alive"), short, now())
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let start = Position {
            epoch: first.position().epoch.clone(),
            offset: 0,
        };
        let alive = store
            .history_since(h, Some(&start), 10, short, now())
            .await
            .unwrap();
        assert_eq!(
            texts(&alive).len(),
            2,
            "350 ms after the first, 200 after the last"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        let gone = store
            .history_since(h, Some(&start), 10, short, now())
            .await
            .unwrap();
        match gone {
            Since::Lost { epoch, top } => {
                assert_ne!(epoch, start.epoch, "a new history has a new epoch");
                assert_eq!(top, 0);
            }
            other => panic!("expired history still read: {other:?}"),
        }
    }
}
