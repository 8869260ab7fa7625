//! Keys, conversation bindings and device state for the JSON-RPC dialect.
//!
//! The store offers a few primitives ([`KvStore`]); the key layout lives
//! here, in one place ([`keys`]), so memory and Redis agree on it. Every key
//! carries the tenant as a hash tag, so the binding script stays in one
//! Redis Cluster slot and nothing of one tenant is reachable from another.

use async_trait::async_trait;

use super::StoreError;

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
    /// value `v` is `{set_prefix}{v}{set_suffix}`. Returns the old value.
    async fn kv_rebind(
        &self,
        pointer: &str,
        value: &str,
        member: &str,
        set_prefix: &str,
        set_suffix: &str,
    ) -> Result<Option<String>, StoreError>;
}

/// The key layout. `{tenant}` is the Redis Cluster hash tag.
pub mod keys {
    /// An app's key, private to (tenant, app).
    pub fn app_value(tenant: &str, app: &str, key: &str) -> String {
        format!("sb:{{{tenant}}}:app:{app}:kv:{key}")
    }

    /// The user's last active conversation.
    pub fn user_conv(tenant: &str, user: &str) -> String {
        format!("sb:{{{tenant}}}:user:{user}:conv")
    }

    /// The user that owns a device (its token's `owner` claim).
    pub fn device_owner(tenant: &str, hd: &str) -> String {
        format!("sb:{{{tenant}}}:dev:{hd}:owner")
    }

    /// The conversation a device is bound to.
    pub fn device_conv(tenant: &str, hd: &str) -> String {
        format!("sb:{{{tenant}}}:dev:{hd}:conv")
    }

    /// The device's latest status: `{"status":…,"updated_at":…}`.
    pub fn device_status(tenant: &str, hd: &str) -> String {
        format!("sb:{{{tenant}}}:dev:{hd}:status")
    }

    /// Set-key parts of the devices bound to a conversation.
    pub fn conv_devices_parts(tenant: &str) -> (String, &'static str) {
        (format!("sb:{{{tenant}}}:conv:"), ":devices")
    }

    pub fn conv_devices(tenant: &str, conv: &str) -> String {
        let (prefix, suffix) = conv_devices_parts(tenant);
        format!("{prefix}{conv}{suffix}")
    }
}

/// The behaviour tests every [`KvStore`] must pass.
#[cfg(test)]
pub(crate) mod contract {
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
}
