//! Shared state that outlives a router: presence, app keys and bindings
//! ([`kv`]), IM sessions and stored messages ([`im`]), topic histories
//! ([`history`]), every key built by [`keys`]. Two implementations behave the same and run the same tests:
//! [`MemoryStore`] (standalone mode, unit tests) and [`RedisStore`].

pub mod history;
pub mod im;
pub mod keys;
pub mod kv;
mod memory;
mod memory_history;
mod memory_im;
mod memory_kv;
mod redis;
mod redis_history;
mod redis_im;
mod redis_kv;

use async_trait::async_trait;

pub use history::HistoryStore;
pub use im::ImStore;
pub use kv::{ConvBind, ConvBound, DeviceBind, KvStore};
pub use memory::MemoryStore;
pub use redis::RedisStore;

/// A group's presence set, scoped by tenant.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GroupRef<'a> {
    pub tenant: &'a str,
    pub group: &'a str,
}

/// The outcome of a presence change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PresenceChange {
    /// The member became present (refresh) or stopped being present (leave).
    pub changed: bool,
    /// Members present after the change.
    pub count: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("redis: {0}")]
    Redis(#[from] ::redis::RedisError),
    #[error("store returned an unexpected reply: {0}")]
    Protocol(String),
}

/// Presence: a member is present while its entry is younger than the TTL.
/// Times are milliseconds since the Unix epoch, passed in so tests and
/// every router agree on "now".
#[async_trait]
pub trait Store: KvStore + ImStore + HistoryStore + Send + Sync + 'static {
    /// Marks `member` present at `now_ms`; `changed` when it was absent or expired.
    async fn presence_refresh(
        &self,
        group: GroupRef<'_>,
        member: &str,
        now_ms: u64,
    ) -> Result<PresenceChange, StoreError>;

    /// Removes `member`; `changed` when it was present.
    async fn presence_leave(
        &self,
        group: GroupRef<'_>,
        member: &str,
        now_ms: u64,
    ) -> Result<PresenceChange, StoreError>;

    /// Removes and returns members whose entry expired, with the count left.
    async fn presence_expire(
        &self,
        group: GroupRef<'_>,
        now_ms: u64,
    ) -> Result<(Vec<String>, u32), StoreError>;

    /// Members present at `now_ms`, sorted.
    async fn presence_members(
        &self,
        group: GroupRef<'_>,
        now_ms: u64,
    ) -> Result<Vec<String>, StoreError>;

    /// Whether the store answers (readiness).
    async fn ping(&self) -> Result<(), StoreError>;
}

/// The behaviour tests every [`Store`] must pass.
#[cfg(test)]
pub(crate) mod contract {
    use super::*;

    const TTL: u64 = 90_000;

    fn group(tenant: &str) -> GroupRef<'_> {
        GroupRef {
            tenant,
            group: "g1",
        }
    }

    fn change(changed: bool, count: u32) -> PresenceChange {
        PresenceChange { changed, count }
    }

    pub async fn presence_join_leave_and_count(store: &dyn Store) {
        let g = group("t1");
        let c = store
            .presence_refresh(g.clone(), "alice", 1_000)
            .await
            .unwrap();
        assert_eq!(c, change(true, 1));
        let c = store
            .presence_refresh(g.clone(), "alice", 2_000)
            .await
            .unwrap();
        assert_eq!(c, change(false, 1), "second refresh is no join");
        let c = store
            .presence_refresh(g.clone(), "bob", 2_000)
            .await
            .unwrap();
        assert_eq!(c, change(true, 2));
        assert_eq!(
            store.presence_members(g.clone(), 3_000).await.unwrap(),
            vec!["alice".to_owned(), "bob".to_owned()]
        );
        let c = store
            .presence_leave(g.clone(), "alice", 3_000)
            .await
            .unwrap();
        assert_eq!(c, change(true, 1));
        let c = store
            .presence_leave(g.clone(), "alice", 3_000)
            .await
            .unwrap();
        assert_eq!(c, change(false, 1), "leaving twice");
        assert_eq!(
            store.presence_members(g, 3_000).await.unwrap(),
            vec!["bob".to_owned()]
        );
    }

    pub async fn presence_expires_after_ttl(store: &dyn Store) {
        let g = group("t2");
        store.presence_refresh(g.clone(), "old", 0).await.unwrap();
        store
            .presence_refresh(g.clone(), "new", 50_000)
            .await
            .unwrap();
        let now = TTL + 10;
        assert_eq!(
            store.presence_members(g.clone(), now).await.unwrap(),
            vec!["new".to_owned()]
        );
        let (expired, left) = store.presence_expire(g.clone(), now).await.unwrap();
        assert_eq!((expired, left), (vec!["old".to_owned()], 1));
        let (expired, _) = store.presence_expire(g.clone(), now).await.unwrap();
        assert!(expired.is_empty(), "expiry reports a member once");
        let c = store.presence_refresh(g, "old", now).await.unwrap();
        assert_eq!(c, change(true, 2), "rejoin after expiry");
    }

    pub async fn tenants_are_isolated(store: &dyn Store) {
        store
            .presence_refresh(group("ta"), "alice", 1_000)
            .await
            .unwrap();
        assert!(
            store
                .presence_members(group("tb"), 1_000)
                .await
                .unwrap()
                .is_empty()
        );
        let c = store
            .presence_refresh(group("tb"), "alice", 1_000)
            .await
            .unwrap();
        assert_eq!(c, change(true, 1));
    }

    pub const TTL_MS: u64 = TTL;
}
