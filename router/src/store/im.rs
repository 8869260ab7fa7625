//! IM state that must outlive any router: login sessions and kept
//! messages. A message is identified by (sender, id) and kept once,
//! however many users it is for: each recipient's queue holds a
//! reference to it, in arrival order, until the recipient's receipt, its
//! age limit or the recipient's cap drops the reference; the message goes
//! with its last reference. Each sender's kept messages count against its
//! quota. Times are milliseconds since the Unix epoch, passed in like
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

/// A kept message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    pub id: String,
    /// The sender, whom the receipt goes to; with `id`, what names it.
    pub from: String,
    /// The wire form, as delivered.
    pub json: String,
}

/// How much is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImLimits {
    /// Most messages kept per recipient; the oldest go first.
    pub max_messages: usize,
    /// Messages older than this are dropped.
    pub max_age_ms: u64,
    /// Most kept, unreceipted messages per sender; `None`: no quota (the
    /// system's own messages).
    pub sender_quota: Option<usize>,
}

/// What [`ImStore::im_keep`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Keep {
    /// Kept once, referenced by each recipient: the message's cursor in
    /// every recipient's queue (cursors only grow, per tenant).
    Kept(u64),
    /// The sender's message with this id is kept already: nothing changed.
    Duplicate,
    /// The sender has its quota of kept messages: nothing was kept.
    OverQuota,
}

/// How much one [`ImStore::im_kept`] call returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Most messages.
    pub messages: usize,
    /// Most bytes of wire form; the first message is returned whatever
    /// its size, so a window always makes progress.
    pub bytes: usize,
}

/// A window of a user's kept messages.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeptPage {
    /// Oldest first, each with its cursor.
    pub messages: Vec<(u64, StoredMessage)>,
    /// Messages may follow the last one (a window that stopped at its
    /// bound); false once the window reached the end.
    pub more: bool,
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

    /// Keeps `message` once for every user of `to` (distinct), after the
    /// messages each already has, all or nothing.
    async fn im_keep(
        &self,
        tenant: &str,
        message: &StoredMessage,
        to: &[String],
        now_ms: u64,
        limits: ImLimits,
    ) -> Result<Keep, StoreError>;

    /// Kept messages after cursor `after` (0: from the oldest), oldest
    /// first, at most one `window`.
    async fn im_kept(
        &self,
        user: ImUser<'_>,
        after: u64,
        window: Window,
        now_ms: u64,
        limits: ImLimits,
    ) -> Result<KeptPage, StoreError>;

    /// Forgets `user`'s reference to the message `id` of `from`; whether
    /// there was one.
    async fn im_forget(
        &self,
        user: ImUser<'_>,
        id: &str,
        from: &str,
        now_ms: u64,
        limits: ImLimits,
    ) -> Result<bool, StoreError>;

    /// How many kept messages count against `sender`'s quota.
    async fn im_sender_kept(
        &self,
        tenant: &str,
        sender: &str,
        now_ms: u64,
        limits: ImLimits,
    ) -> Result<usize, StoreError>;

    /// The messages a tenant keeps (each once) and the bytes of their
    /// wire forms, for tests that check a message is not copied.
    #[cfg(test)]
    async fn im_bodies(&self, tenant: &str) -> Result<(usize, usize), StoreError>;
}

/// The behaviour tests every [`ImStore`] must pass.
#[cfg(test)]
pub(crate) mod contract {
    use super::*;

    pub const LIMITS: ImLimits = ImLimits {
        max_messages: 5,
        max_age_ms: 60_000,
        sender_quota: Some(100),
    };

    const ALL: Window = Window {
        messages: 100,
        bytes: 1 << 20,
    };

    fn user(tenant: &str) -> ImUser<'_> {
        ImUser {
            tenant,
            user: "bob",
        }
    }

    fn from(sender: &str, id: &str) -> StoredMessage {
        StoredMessage {
            id: id.to_owned(),
            from: sender.to_owned(),
            json: format!(r#"{{"id":"{id}","from":"{sender}","body":"line one\nline two"}}"#),
        }
    }

    fn message(id: &str) -> StoredMessage {
        from("alice", id)
    }

    fn to(users: &[&str]) -> Vec<String> {
        users.iter().map(|u| (*u).to_owned()).collect()
    }

    fn record() -> ImSessionRecord {
        ImSessionRecord {
            user: "bob".into(),
            client_name: "web".into(),
            notice: true,
        }
    }

    async fn keep(store: &dyn ImStore, tenant: &str, m: &StoredMessage, now: u64) -> Keep {
        store
            .im_keep(tenant, m, &to(&["bob"]), now, LIMITS)
            .await
            .unwrap()
    }

    /// (sender, id) of everything kept for `user`.
    async fn kept(store: &dyn ImStore, user: ImUser<'_>, now: u64) -> Vec<(String, String)> {
        store
            .im_kept(user, 0, ALL, now, LIMITS)
            .await
            .unwrap()
            .messages
            .into_iter()
            .map(|(_, m)| (m.from, m.id))
            .collect()
    }

    async fn ids(store: &dyn ImStore, user: ImUser<'_>, now: u64) -> Vec<String> {
        kept(store, user, now)
            .await
            .into_iter()
            .map(|(_, id)| id)
            .collect()
    }

    async fn quota_used(store: &dyn ImStore, tenant: &str, sender: &str, now: u64) -> usize {
        store
            .im_sender_kept(tenant, sender, now, LIMITS)
            .await
            .unwrap()
    }

    fn kept_at(keep: Keep) -> u64 {
        match keep {
            Keep::Kept(cursors) => cursors,
            other => panic!("expected Kept, got {other:?}"),
        }
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
        let mut cursors = Vec::new();
        for (i, id) in ["m1", "m2", "m3"].iter().enumerate() {
            cursors.push(kept_at(
                keep(store, "t1", &message(id), 1_000 + i as u64).await,
            ));
        }
        assert!(cursors[0] < cursors[1] && cursors[1] < cursors[2]);
        assert_eq!(
            keep(store, "t1", &message("m2"), 2_000).await,
            Keep::Duplicate,
            "the same sender's id is kept once"
        );
        let page = store.im_kept(u, 0, ALL, 2_000, LIMITS).await.unwrap();
        assert_eq!(page.messages.len(), 3);
        assert!(!page.more, "the whole queue fits");
        assert_eq!(page.messages[0].1, message("m1"), "text and sender survive");
        let page_cursors: Vec<u64> = page.messages.iter().map(|(c, _)| *c).collect();
        assert_eq!(page_cursors, cursors, "keep names each message's cursor");
        // Windows continue after their cursor.
        let two = Window {
            messages: 2,
            bytes: 1 << 20,
        };
        let first = store.im_kept(u, 0, two, 2_000, LIMITS).await.unwrap();
        assert_eq!(first.messages.len(), 2);
        assert!(first.more);
        let rest = store
            .im_kept(u, first.messages[1].0, two, 2_000, LIMITS)
            .await
            .unwrap();
        assert_eq!(rest.messages.len(), 1);
        assert_eq!(rest.messages[0].1.id, "m3");
        assert!(!rest.more);
        // A byte bound stops a window, but never before its first message.
        let tiny = Window {
            messages: 100,
            bytes: 1,
        };
        let one = store.im_kept(u, 0, tiny, 2_000, LIMITS).await.unwrap();
        assert_eq!(one.messages.len(), 1);
        assert!(one.more);
        let size = message("m1").json.len();
        let fits_two = Window {
            messages: 100,
            bytes: 2 * size,
        };
        let two_by_bytes = store.im_kept(u, 0, fits_two, 2_000, LIMITS).await.unwrap();
        assert_eq!(two_by_bytes.messages.len(), 2);

        assert!(
            !store
                .im_forget(u, "m2", "mallory", 2_000, LIMITS)
                .await
                .unwrap(),
            "only the sender's receipt matches"
        );
        assert!(
            store
                .im_forget(u, "m2", "alice", 2_000, LIMITS)
                .await
                .unwrap()
        );
        assert!(
            !store
                .im_forget(u, "m2", "alice", 2_000, LIMITS)
                .await
                .unwrap()
        );
        assert!(
            !store
                .im_forget(u, "nope", "alice", 2_000, LIMITS)
                .await
                .unwrap()
        );
        assert_eq!(ids(store, u, 2_000).await, vec!["m1", "m3"]);
        // A message kept after one was forgotten still comes last; a
        // receipted id may be sent again as a new message.
        kept_at(keep(store, "t1", &message("m4"), 3_000).await);
        kept_at(keep(store, "t1", &message("m2"), 3_001).await);
        assert_eq!(ids(store, u, 3_001).await, vec!["m1", "m3", "m4", "m2"]);
    }

    pub async fn another_senders_id_is_another_message(store: &dyn ImStore) {
        let u = user("t3");
        kept_at(keep(store, "t3", &from("alice", "m1"), 1_000).await);
        kept_at(keep(store, "t3", &from("carol", "m1"), 1_001).await);
        assert_eq!(
            keep(store, "t3", &from("carol", "m1"), 1_002).await,
            Keep::Duplicate
        );
        assert_eq!(
            kept(store, u, 1_002).await,
            vec![
                ("alice".to_owned(), "m1".to_owned()),
                ("carol".to_owned(), "m1".to_owned())
            ],
            "neither is lost"
        );
        let page = store.im_kept(u, 0, ALL, 1_002, LIMITS).await.unwrap();
        assert_eq!(
            page.messages[1].1,
            from("carol", "m1"),
            "each keeps its text"
        );
        // A receipt names the sender: it forgets that message only.
        assert!(
            store
                .im_forget(u, "m1", "carol", 1_003, LIMITS)
                .await
                .unwrap()
        );
        assert_eq!(
            kept(store, u, 1_003).await,
            vec![("alice".to_owned(), "m1".to_owned())]
        );
        assert!(
            !store
                .im_forget(u, "m1", "carol", 1_003, LIMITS)
                .await
                .unwrap()
        );
        assert!(
            store
                .im_forget(u, "m1", "alice", 1_003, LIMITS)
                .await
                .unwrap()
        );
        assert!(ids(store, u, 1_003).await.is_empty());
    }

    /// Ids and senders made of key separators never meet another pair.
    pub async fn senders_and_ids_never_collide(store: &dyn ImStore) {
        let u = user("t6");
        kept_at(keep(store, "t6", &from("a:b", "c"), 1_000).await);
        kept_at(keep(store, "t6", &from("a", "b:c"), 1_001).await);
        kept_at(keep(store, "t6", &from("a%3Ab", "c"), 1_002).await);
        assert_eq!(kept(store, u, 1_002).await.len(), 3);
        assert!(store.im_forget(u, "b:c", "a", 1_003, LIMITS).await.unwrap());
        assert_eq!(
            kept(store, u, 1_003).await,
            vec![
                ("a:b".to_owned(), "c".to_owned()),
                ("a%3Ab".to_owned(), "c".to_owned())
            ]
        );
    }

    pub async fn a_message_to_many_is_kept_once(store: &dyn ImStore) {
        let tenant = "t4";
        let many = to(&["bob", "carol", "dave"]);
        let big = StoredMessage {
            json: "x".repeat(10_000),
            ..message("m1")
        };
        let cursor = kept_at(
            store
                .im_keep(tenant, &big, &many, 1_000, LIMITS)
                .await
                .unwrap(),
        );
        assert_eq!(
            store.im_bodies(tenant).await.unwrap(),
            (1, 10_000),
            "one copy, however many recipients"
        );
        assert_eq!(quota_used(store, tenant, "alice", 1_000).await, 1);
        for name in ["bob", "carol", "dave"] {
            let u = ImUser { tenant, user: name };
            let page = store.im_kept(u, 0, ALL, 1_000, LIMITS).await.unwrap();
            assert_eq!(page.messages, vec![(cursor, big.clone())], "{name}");
        }
        // The copy stays while any recipient has not receipted it.
        for name in ["bob", "carol"] {
            let u = ImUser { tenant, user: name };
            assert!(
                store
                    .im_forget(u, "m1", "alice", 1_001, LIMITS)
                    .await
                    .unwrap()
            );
            assert_eq!(quota_used(store, tenant, "alice", 1_001).await, 1);
        }
        assert_eq!(store.im_bodies(tenant).await.unwrap(), (1, 10_000));
        let dave = ImUser {
            tenant,
            user: "dave",
        };
        assert_eq!(ids(store, dave, 1_001).await, vec!["m1"]);
        assert!(
            store
                .im_forget(dave, "m1", "alice", 1_001, LIMITS)
                .await
                .unwrap()
        );
        assert_eq!(store.im_bodies(tenant).await.unwrap(), (0, 0), "freed");
        assert_eq!(quota_used(store, tenant, "alice", 1_001).await, 0);
    }

    pub async fn the_sender_quota_counts_kept_unreceipted_messages(store: &dyn ImStore) {
        let tenant = "t5";
        let limits = ImLimits {
            sender_quota: Some(2),
            ..LIMITS
        };
        let bob = ImUser {
            tenant,
            user: "bob",
        };
        let keep = |m: StoredMessage, users: &'static [&'static str], now: u64| async move {
            store
                .im_keep(tenant, &m, &to(users), now, limits)
                .await
                .unwrap()
        };
        kept_at(keep(message("m1"), &["bob"], 1_000).await);
        kept_at(keep(message("m2"), &["bob", "carol"], 1_001).await);
        assert_eq!(
            quota_used(store, tenant, "alice", 1_001).await,
            2,
            "messages, not copies"
        );
        assert_eq!(keep(message("m3"), &["bob"], 1_002).await, Keep::OverQuota);
        assert_eq!(
            keep(message("m2"), &["bob"], 1_002).await,
            Keep::Duplicate,
            "a duplicate is no new message"
        );
        assert_eq!(
            ids(store, bob, 1_002).await,
            vec!["m1", "m2"],
            "nothing kept"
        );
        assert!(
            matches!(
                keep(from("carol", "m3"), &["bob"], 1_002).await,
                Keep::Kept(_)
            ),
            "the quota is per sender"
        );
        let system = ImLimits {
            sender_quota: None,
            ..limits
        };
        for i in 0..3 {
            let m = from("SYSTEM", &format!("s{i}"));
            let dave = to(&["dave"]);
            kept_at(
                store
                    .im_keep(tenant, &m, &dave, 1_002, system)
                    .await
                    .unwrap(),
            );
        }
        // A receipt frees quota.
        assert!(
            store
                .im_forget(bob, "m1", "alice", 1_003, limits)
                .await
                .unwrap()
        );
        kept_at(keep(message("m3"), &["bob"], 1_003).await);
        assert_eq!(keep(message("m4"), &["bob"], 1_003).await, Keep::OverQuota);
        // So does the recipients' cap: bob's queue holds 5; m2 stays
        // kept for carol, m3 only for bob.
        for i in 0..5 {
            let m = from("erin", &format!("e{i}"));
            kept_at(
                store
                    .im_keep(tenant, &m, &to(&["bob"]), 1_004, LIMITS)
                    .await
                    .unwrap(),
            );
        }
        assert_eq!(ids(store, bob, 1_004).await.len(), 5);
        assert!(!ids(store, bob, 1_004).await.contains(&"m3".to_owned()));
        assert_eq!(
            quota_used(store, tenant, "alice", 1_004).await,
            1,
            "m2 for carol"
        );
        // And age: nothing older than the limit counts.
        let later = 1_004 + LIMITS.max_age_ms + 1;
        assert_eq!(quota_used(store, tenant, "alice", later).await, 0);
        assert_eq!(quota_used(store, tenant, "erin", later).await, 0);
        kept_at(keep(message("m5"), &["bob"], later).await);
        kept_at(keep(message("m6"), &["bob"], later).await);
        assert_eq!(keep(message("m7"), &["bob"], later).await, Keep::OverQuota);
    }

    pub async fn messages_are_capped_in_number_and_age(store: &dyn ImStore) {
        let u = user("t2");
        for i in 0..7u64 {
            kept_at(keep(store, "t2", &message(&format!("m{i}")), 10_000 + i).await);
        }
        assert_eq!(
            ids(store, u, 10_010).await,
            vec!["m2", "m3", "m4", "m5", "m6"],
            "the oldest beyond the cap are dropped"
        );
        assert_eq!(
            quota_used(store, "t2", "alice", 10_010).await,
            5,
            "and freed"
        );
        kept_at(keep(store, "t2", &message("m0"), 10_010).await);
        assert_eq!(
            ids(store, u, 10_010).await,
            vec!["m3", "m4", "m5", "m6", "m0"],
            "a capped-out id is gone: sent again, it is a new message"
        );
        // m3 and m4 are older than the age limit at this time; m5 is not.
        let now = 10_004 + LIMITS.max_age_ms + 1;
        assert_eq!(ids(store, u, now).await, vec!["m5", "m6", "m0"]);
        assert!(
            !store
                .im_forget(u, "m4", "alice", now, LIMITS)
                .await
                .unwrap()
        );
        kept_at(keep(store, "t2", &message("m3"), now).await);
        assert_eq!(ids(store, u, now).await, vec!["m5", "m6", "m0", "m3"]);
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
        kept_at(keep(store, "ta", &message("m1"), 1_000).await);
        assert!(ids(store, b, 1_000).await.is_empty());
        assert!(ids(store, other, 1_000).await.is_empty());
        assert!(
            !store
                .im_forget(b, "m1", "alice", 1_000, LIMITS)
                .await
                .unwrap()
        );
        assert_eq!(quota_used(store, "tb", "alice", 1_000).await, 0);
        assert!(
            matches!(
                keep(store, "tb", &message("m1"), 1_000).await,
                Keep::Kept(_)
            ),
            "another tenant's id is another message"
        );
        assert_eq!(ids(store, a, 1_000).await, vec!["m1"]);
    }
}
