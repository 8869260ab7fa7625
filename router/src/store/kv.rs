//! Keys, conversation bindings and device state for the JSON-RPC dialect.
//!
//! The store offers a few primitives ([`KvStore`]); the key layout lives
//! in one place ([`super::keys`]), so memory and Redis agree on it. Every
//! key carries the tenant as a hash tag, so the binding script stays in one
//! Redis Cluster slot and nothing of one tenant is reachable from another.

use async_trait::async_trait;

use super::StoreError;
#[cfg(doc)]
use super::keys;

/// Plain values with optional expiry, and sets of members.
#[async_trait]
pub trait KvStore: Send + Sync + 'static {
    async fn kv_get(&self, key: &str) -> Result<Option<String>, StoreError>;

    /// Sets `key`; with `ttl_ms`, it expires after that many milliseconds.
    async fn kv_set(&self, key: &str, value: &str, ttl_ms: Option<u64>) -> Result<(), StoreError>;

    /// Removes `key`; true when it existed.
    async fn kv_del(&self, key: &str) -> Result<bool, StoreError>;

    /// Members of the set at `key`, sorted.
    async fn set_members(&self, key: &str) -> Result<Vec<String>, StoreError>;

    /// Atomically points `pointer` at `value` and moves `member` from the
    /// set of the old value to the set of the new one, where the set of a
    /// value `v` is `{set_prefix}{part(v)}{set_suffix}` ([`keys::part`]).
    /// Returns the old value.
    async fn kv_rebind(
        &self,
        pointer: &str,
        value: &str,
        member: &str,
        set_prefix: &str,
        set_suffix: &str,
    ) -> Result<Option<String>, StoreError>;

    /// Atomically removes `pointer` and `member` from the set of its value
    /// (laid out as for [`KvStore::kv_rebind`]). Returns the old value.
    async fn kv_unbind(
        &self,
        pointer: &str,
        member: &str,
        set_prefix: &str,
        set_suffix: &str,
    ) -> Result<Option<String>, StoreError>;

    /// Binds a conversation atomically with its ownership; see [`ConvBind`].
    async fn conv_bind(&self, bind: &ConvBind<'_>) -> Result<ConvBound, StoreError>;
}

/// One conversation binding, done as one atomic step:
///
/// 1. with `device`, when it names `owned_by`, the value there must be
///    `user`, else [`ConvBound::DeviceNotOwned`];
/// 2. the value at `owner_key` is set to `user` when there is none; when it
///    names someone else, [`ConvBound::OwnedBy`] and nothing changes;
/// 3. `last` (if any) is set to `conv`, and the device (if any) is rebound
///    to `conv` as by [`KvStore::kv_rebind`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConvBind<'a> {
    pub owner_key: &'a str,
    pub conv: &'a str,
    pub user: &'a str,
    pub last: Option<&'a str>,
    pub device: Option<DeviceBind<'a>>,
}

/// The device half of a [`ConvBind`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceBind<'a> {
    pub pointer: &'a str,
    pub member: &'a str,
    pub set_prefix: &'a str,
    pub set_suffix: &'a str,
    /// The key holding the device's owner, when it must be the binding user.
    pub owned_by: Option<&'a str>,
}

/// What a [`ConvBind`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConvBound {
    /// Bound; `user` owns the conversation (now, or already).
    Bound,
    /// The conversation belongs to this other user: nothing changed.
    OwnedBy(String),
    /// The device is not the binding user's: nothing changed.
    DeviceNotOwned,
}

/// The behaviour tests every [`KvStore`] must pass.
#[cfg(test)]
pub(crate) mod contract {
    use super::super::keys;
    use super::*;

    pub async fn values_set_get_delete(store: &dyn KvStore) {
        let key = keys::app_value("t1", "app", "k");
        assert_eq!(store.kv_get(&key).await.unwrap(), None);
        store.kv_set(&key, "v1", None).await.unwrap();
        assert_eq!(store.kv_get(&key).await.unwrap().as_deref(), Some("v1"));
        store.kv_set(&key, "v2", None).await.unwrap();
        assert_eq!(store.kv_get(&key).await.unwrap().as_deref(), Some("v2"));
        assert!(store.kv_del(&key).await.unwrap());
        assert!(!store.kv_del(&key).await.unwrap(), "deleting twice");
        assert_eq!(store.kv_get(&key).await.unwrap(), None);
    }

    pub async fn values_expire(store: &dyn KvStore) {
        let key = keys::app_value("t1", "app", "short");
        store.kv_set(&key, "v", Some(150)).await.unwrap();
        assert_eq!(store.kv_get(&key).await.unwrap().as_deref(), Some("v"));
        tokio::time::sleep(std::time::Duration::from_millis(400)).await;
        assert_eq!(store.kv_get(&key).await.unwrap(), None, "expired");
        assert!(!store.kv_del(&key).await.unwrap());
        store.kv_set(&key, "kept", Some(150)).await.unwrap();
        store.kv_set(&key, "kept", None).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(400)).await;
        assert_eq!(
            store.kv_get(&key).await.unwrap().as_deref(),
            Some("kept"),
            "a set without ttl clears the old expiry"
        );
    }

    pub async fn rebind_moves_the_member(store: &dyn KvStore) {
        let (prefix, suffix) = keys::conv_devices_parts("t1");
        let pointer = keys::device_conv("t1", "hd1");
        let old = store
            .kv_rebind(&pointer, "c1", "hd1", &prefix, suffix)
            .await
            .unwrap();
        assert_eq!(old, None);
        store
            .kv_rebind(
                &keys::device_conv("t1", "hd2"),
                "c1",
                "hd2",
                &prefix,
                suffix,
            )
            .await
            .unwrap();
        let c1 = keys::conv_devices("t1", "c1");
        assert_eq!(store.set_members(&c1).await.unwrap(), ["hd1", "hd2"]);
        let old = store
            .kv_rebind(&pointer, "c2", "hd1", &prefix, suffix)
            .await
            .unwrap();
        assert_eq!(old.as_deref(), Some("c1"));
        assert_eq!(store.set_members(&c1).await.unwrap(), ["hd2"]);
        let c2 = keys::conv_devices("t1", "c2");
        assert_eq!(store.set_members(&c2).await.unwrap(), ["hd1"]);
        assert_eq!(store.kv_get(&pointer).await.unwrap().as_deref(), Some("c2"));
        let again = store
            .kv_rebind(&pointer, "c2", "hd1", &prefix, suffix)
            .await
            .unwrap();
        assert_eq!(again.as_deref(), Some("c2"), "rebinding to the same value");
        assert_eq!(store.set_members(&c2).await.unwrap(), ["hd1"]);
    }

    pub async fn tenants_and_apps_are_isolated(store: &dyn KvStore) {
        store
            .kv_set(&keys::app_value("ta", "app", "k"), "a", None)
            .await
            .unwrap();
        for other in [
            keys::app_value("tb", "app", "k"),
            keys::app_value("ta", "other", "k"),
        ] {
            assert_eq!(store.kv_get(&other).await.unwrap(), None);
        }
    }

    /// The two apps that shared keys under the old `app:{app}:kv:{key}`
    /// layout do not see each other's values.
    pub async fn colliding_apps_are_isolated(store: &dyn KvStore) {
        let first = keys::app_value("t1", "shop", "x:kv:secret");
        let second = keys::app_value("t1", "shop:kv:x", "secret");
        store.kv_set(&first, "first", None).await.unwrap();
        assert_eq!(store.kv_get(&second).await.unwrap(), None);
        store.kv_set(&second, "second", None).await.unwrap();
        assert_eq!(
            store.kv_get(&first).await.unwrap().as_deref(),
            Some("first")
        );
        assert_eq!(
            store.kv_get(&second).await.unwrap().as_deref(),
            Some("second")
        );
        assert!(store.kv_del(&second).await.unwrap());
        assert_eq!(
            store.kv_get(&first).await.unwrap().as_deref(),
            Some("first")
        );
    }

    fn user_bind<'a>(
        owner_key: &'a str,
        conv: &'a str,
        user: &'a str,
        last: &'a str,
    ) -> ConvBind<'a> {
        ConvBind {
            owner_key,
            conv,
            user,
            last: Some(last),
            device: None,
        }
    }

    /// The first user to bind a conversation owns it; nobody else may
    /// bind it, and a refused binding changes nothing.
    pub async fn conversations_have_one_owner(store: &dyn KvStore) {
        let conv = "c:1";
        let owner_key = keys::conv_owner("t1", conv);
        let (alice_last, bob_last) = (keys::user_conv("t1", "alice"), keys::user_conv("t1", "bob"));
        let bound = store
            .conv_bind(&user_bind(&owner_key, conv, "alice", &alice_last))
            .await
            .unwrap();
        assert_eq!(bound, ConvBound::Bound);
        assert_eq!(
            store.kv_get(&alice_last).await.unwrap().as_deref(),
            Some(conv)
        );
        store.kv_set(&bob_last, "bobs", None).await.unwrap();
        let refused = store
            .conv_bind(&user_bind(&owner_key, conv, "bob", &bob_last))
            .await
            .unwrap();
        assert_eq!(refused, ConvBound::OwnedBy("alice".to_owned()));
        assert_eq!(
            store.kv_get(&bob_last).await.unwrap().as_deref(),
            Some("bobs"),
            "the refused user stays where he was"
        );
        let again = store
            .conv_bind(&user_bind(&owner_key, conv, "alice", &alice_last))
            .await
            .unwrap();
        assert_eq!(again, ConvBound::Bound, "the owner binds again");
        assert_eq!(
            store.kv_get(&owner_key).await.unwrap().as_deref(),
            Some("alice")
        );
        // The same conversation id in another tenant is another conversation.
        let other_key = keys::conv_owner("t2", conv);
        let other_last = keys::user_conv("t2", "bob");
        let other = store
            .conv_bind(&user_bind(&other_key, conv, "bob", &other_last))
            .await
            .unwrap();
        assert_eq!(other, ConvBound::Bound);
    }

    /// A device binds with its owner's rights, and only when its owner
    /// record names the binding user.
    pub async fn device_bindings_follow_ownership(store: &dyn KvStore) {
        let (prefix, suffix) = keys::conv_devices_parts("t1");
        let pointer = keys::device_conv("t1", "hd:1");
        let owned_by = keys::device_owner("t1", "hd:1");
        store.kv_set(&owned_by, "alice", None).await.unwrap();
        let device = |owned_by| DeviceBind {
            pointer: &pointer,
            member: "hd:1",
            set_prefix: &prefix,
            set_suffix: suffix,
            owned_by,
        };
        let conv_owner = keys::conv_owner("t1", "dc");
        let bind = |user, owned_by| ConvBind {
            owner_key: &conv_owner,
            conv: "dc",
            user,
            last: None,
            device: Some(device(owned_by)),
        };
        let refused = store
            .conv_bind(&bind("bob", Some(owned_by.as_str())))
            .await
            .unwrap();
        assert_eq!(refused, ConvBound::DeviceNotOwned);
        assert_eq!(
            store.kv_get(&conv_owner).await.unwrap(),
            None,
            "bob claimed nothing"
        );
        let bound = store
            .conv_bind(&bind("alice", Some(owned_by.as_str())))
            .await
            .unwrap();
        assert_eq!(bound, ConvBound::Bound);
        assert_eq!(
            store
                .set_members(&keys::conv_devices("t1", "dc"))
                .await
                .unwrap(),
            ["hd:1"]
        );
        assert_eq!(store.kv_get(&pointer).await.unwrap().as_deref(), Some("dc"));
        // Without an owner check, the conversation's ownership still rules.
        let refused = store.conv_bind(&bind("bob", None)).await.unwrap();
        assert_eq!(refused, ConvBound::OwnedBy("alice".to_owned()));
        let old = store
            .kv_unbind(&pointer, "hd:1", &prefix, suffix)
            .await
            .unwrap();
        assert_eq!(old.as_deref(), Some("dc"));
        assert!(
            store
                .set_members(&keys::conv_devices("t1", "dc"))
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(store.kv_get(&pointer).await.unwrap(), None);
        let none = store
            .kv_unbind(&pointer, "hd:1", &prefix, suffix)
            .await
            .unwrap();
        assert_eq!(none, None, "unbinding twice");
    }
}
