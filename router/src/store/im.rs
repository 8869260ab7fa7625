//! IM state that must outlive any router: login sessions and each user's
//! stored messages (kept until the user's receipt, capped in number and
//! age). Times are milliseconds since the Unix epoch, passed in like
//! presence times.

use async_trait::async_trait;

use super::StoreError;

/// A user's stored messages, scoped by tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ImUser<'a> {
    pub tenant: &'a str,
    pub user: &'a str,
}

/// What a login session is bound to.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ImSessionRecord {
    pub user: String,
    pub client_name: String,
    /// The login token had scope `notice`.
    pub notice: bool,
}

/// A message kept for its recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    pub id: String,
    /// The sender, whom the receipt goes to.
    pub from: String,
    /// The wire form, as delivered.
    pub json: String,
}

/// How much is kept per user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImLimits {
    /// Most messages kept; the oldest go first.
    pub max_messages: usize,
    /// Messages older than this are dropped.
    pub max_age_ms: u64,
}

#[async_trait]
pub trait ImStore: Send + Sync {
    /// Saves a session that lives `ttl_ms` unless used.
    async fn im_session_create(
        &self,
        tenant: &str,
        session_id: &str,
        record: &ImSessionRecord,
        now_ms: u64,
        ttl_ms: u64,
    ) -> Result<(), StoreError>;

    /// The session, its `ttl_ms` restarted; `None` when unknown or expired.
    async fn im_session_get(
        &self,
        tenant: &str,
        session_id: &str,
        now_ms: u64,
        ttl_ms: u64,
    ) -> Result<Option<ImSessionRecord>, StoreError>;

    /// Keeps `message` for `user` after the ones already kept. False when
    /// a message with this id is already kept (the first copy stays).
    async fn im_keep(
        &self,
        user: ImUser<'_>,
        message: &StoredMessage,
        now_ms: u64,
        limits: ImLimits,
    ) -> Result<bool, StoreError>;

    /// Up to `count` kept messages after cursor `after` (0: from the
    /// oldest), oldest first, each with its cursor.
    async fn im_kept(
        &self,
        user: ImUser<'_>,
        after: u64,
        count: usize,
        now_ms: u64,
        limits: ImLimits,
    ) -> Result<Vec<(u64, StoredMessage)>, StoreError>;

    /// Forgets the kept message `id` if `from` sent it; whether it did.
    async fn im_forget(&self, user: ImUser<'_>, id: &str, from: &str) -> Result<bool, StoreError>;
}

/// The behaviour tests every [`ImStore`] must pass.
#[cfg(test)]
pub(crate) mod contract {
    use super::*;

    pub const LIMITS: ImLimits = ImLimits {
        max_messages: 5,
        max_age_ms: 60_000,
    };

    fn user(tenant: &str) -> ImUser<'_> {
        ImUser {
            tenant,
            user: "bob",
        }
    }

    fn message(id: &str) -> StoredMessage {
        StoredMessage {
            id: id.to_owned(),
            from: "alice".to_owned(),
            json: format!(r#"{{"id":"{id}","body":"line one\nline two"}}"#),
        }
    }

    fn record() -> ImSessionRecord {
        ImSessionRecord {
            user: "bob".into(),
            client_name: "web".into(),
            notice: true,
        }
    }

    async fn ids(store: &dyn ImStore, user: ImUser<'_>, now: u64) -> Vec<String> {
        store
            .im_kept(user, 0, 100, now, LIMITS)
            .await
            .unwrap()
            .into_iter()
            .map(|(_, m)| m.id)
            .collect()
    }

    pub async fn sessions_expire_unless_used(store: &dyn ImStore) {
        // Real time: the Redis store expires keys on its own clock.
        let now = switchboard_common::clock::now_ms();
        store
            .im_session_create("t1", "s1", &record(), now, 400)
            .await
            .unwrap();
        let got = store.im_session_get("t1", "s1", now, 400).await.unwrap();
        assert_eq!(got, Some(record()));
        assert_eq!(
            store.im_session_get("t2", "s1", now, 400).await.unwrap(),
            None,
            "sessions belong to their tenant"
        );
        // Using it restarts its lifetime.
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        let now = switchboard_common::clock::now_ms();
        assert!(
            store
                .im_session_get("t1", "s1", now, 400)
                .await
                .unwrap()
                .is_some()
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        let now = switchboard_common::clock::now_ms();
        assert!(
            store
                .im_session_get("t1", "s1", now, 400)
                .await
                .unwrap()
                .is_some(),
            "used 250 ms ago, ttl 400 ms"
        );
        tokio::time::sleep(std::time::Duration::from_millis(600)).await;
        let now = switchboard_common::clock::now_ms();
        assert_eq!(
            store.im_session_get("t1", "s1", now, 400).await.unwrap(),
            None
        );
        assert_eq!(
            store.im_session_get("t1", "nope", now, 400).await.unwrap(),
            None
        );
    }

    pub async fn messages_keep_their_order_and_forget_on_receipt(store: &dyn ImStore) {
        let u = user("t1");
        for (i, id) in ["m1", "m2", "m3"].iter().enumerate() {
            assert!(
                store
                    .im_keep(u, &message(id), 1_000 + i as u64, LIMITS)
                    .await
                    .unwrap()
            );
        }
        assert!(
            !store
                .im_keep(u, &message("m2"), 2_000, LIMITS)
                .await
                .unwrap(),
            "an id is kept once"
        );
        let kept = store.im_kept(u, 0, 100, 2_000, LIMITS).await.unwrap();
        assert_eq!(kept.len(), 3);
        assert_eq!(kept[0].1, message("m1"), "text and sender survive");
        assert!(kept[0].0 < kept[1].0 && kept[1].0 < kept[2].0);
        // Pages continue after their cursor.
        let first = store.im_kept(u, 0, 2, 2_000, LIMITS).await.unwrap();
        assert_eq!(first.len(), 2);
        let rest = store
            .im_kept(u, first[1].0, 2, 2_000, LIMITS)
            .await
            .unwrap();
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].1.id, "m3");
        assert!(
            !store.im_forget(u, "m2", "mallory").await.unwrap(),
            "only the sender's receipt matches"
        );
        assert!(store.im_forget(u, "m2", "alice").await.unwrap());
        assert!(!store.im_forget(u, "m2", "alice").await.unwrap());
        assert!(!store.im_forget(u, "nope", "alice").await.unwrap());
        assert_eq!(ids(store, u, 2_000).await, vec!["m1", "m3"]);
        // A message kept after one was forgotten still comes last.
        store
            .im_keep(u, &message("m4"), 3_000, LIMITS)
            .await
            .unwrap();
        assert_eq!(ids(store, u, 3_000).await, vec!["m1", "m3", "m4"]);
    }

    pub async fn messages_are_capped_in_number_and_age(store: &dyn ImStore) {
        let u = user("t2");
        for i in 0..7u64 {
            store
                .im_keep(u, &message(&format!("m{i}")), 10_000 + i, LIMITS)
                .await
                .unwrap();
        }
        assert_eq!(
            ids(store, u, 10_010).await,
            vec!["m2", "m3", "m4", "m5", "m6"],
            "the oldest beyond the cap are dropped"
        );
        // m2..m4 are older than the age limit at this time; m5, m6 are not.
        let now = 10_004 + LIMITS.max_age_ms + 1;
        assert_eq!(ids(store, u, now).await, vec!["m5", "m6"]);
        assert!(
            store.im_keep(u, &message("m2"), now, LIMITS).await.unwrap(),
            "an expired id is gone"
        );
        assert_eq!(ids(store, u, now).await, vec!["m5", "m6", "m2"]);
    }

    pub async fn users_and_tenants_are_isolated(store: &dyn ImStore) {
        let a = ImUser {
            tenant: "ta",
            user: "bob",
        };
        let b = ImUser {
            tenant: "tb",
            user: "bob",
        };
        let other = ImUser {
            tenant: "ta",
            user: "carol",
        };
        store
            .im_keep(a, &message("m1"), 1_000, LIMITS)
            .await
            .unwrap();
        assert!(ids(store, b, 1_000).await.is_empty());
        assert!(ids(store, other, 1_000).await.is_empty());
        assert!(!store.im_forget(b, "m1", "alice").await.unwrap());
        assert_eq!(ids(store, a, 1_000).await, vec!["m1"]);
    }
}
