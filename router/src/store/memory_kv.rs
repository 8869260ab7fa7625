//! [`KvStore`] for the in-memory store.

use std::collections::{BTreeSet, HashMap};

use async_trait::async_trait;
use switchboard_common::clock::now_ms;

use super::keys::part;
use super::kv::{ConvBind, ConvBound, KvStore};
use super::{MemoryStore, StoreError};

/// Values (with their expiry, ms since the epoch) and sets.
#[derive(Default)]
pub(super) struct KvState {
    values: HashMap<String, (String, Option<u64>)>,
    sets: HashMap<String, BTreeSet<String>>,
}

impl KvState {
    /// The live value of `key`; an expired one is dropped on the way.
    fn live(&mut self, key: &str, now: u64) -> Option<&String> {
        let expired = matches!(self.values.get(key), Some((_, Some(at))) if *at <= now);
        if expired {
            self.values.remove(key);
        }
        self.values.get(key).map(|(value, _)| value)
    }

    /// Takes `member` out of the set of `value`, dropping an empty set.
    fn leave_set(&mut self, value: &str, member: &str, prefix: &str, suffix: &str) {
        let set = format!("{prefix}{}{suffix}", part(value));
        if let Some(members) = self.sets.get_mut(&set) {
            members.remove(member);
            if members.is_empty() {
                self.sets.remove(&set);
            }
        }
    }

    fn rebind(
        &mut self,
        pointer: &str,
        value: &str,
        member: &str,
        prefix: &str,
        suffix: &str,
    ) -> Option<String> {
        let old = self.live(pointer, now_ms()).cloned();
        if let Some(old) = &old {
            self.leave_set(old, member, prefix, suffix);
        }
        self.values
            .insert(pointer.to_owned(), (value.to_owned(), None));
        self.sets
            .entry(format!("{prefix}{}{suffix}", part(value)))
            .or_default()
            .insert(member.to_owned());
        old
    }
}

impl MemoryStore {
    fn with_kv<R>(&self, f: impl FnOnce(&mut KvState) -> R) -> R {
        let mut state = self.kv.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut state)
    }
}

#[async_trait]
impl KvStore for MemoryStore {
    async fn kv_get(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self.with_kv(|kv| kv.live(key, now_ms()).cloned()))
    }

    async fn kv_set(&self, key: &str, value: &str, ttl_ms: Option<u64>) -> Result<(), StoreError> {
        let expires = ttl_ms.map(|ttl| now_ms().saturating_add(ttl));
        self.with_kv(|kv| {
            kv.values
                .insert(key.to_owned(), (value.to_owned(), expires));
        });
        Ok(())
    }

    async fn kv_del(&self, key: &str) -> Result<bool, StoreError> {
        Ok(self.with_kv(|kv| {
            let existed = kv.live(key, now_ms()).is_some();
            kv.values.remove(key);
            existed
        }))
    }

    async fn set_members(&self, key: &str) -> Result<Vec<String>, StoreError> {
        Ok(self.with_kv(|kv| {
            kv.sets
                .get(key)
                .map(|members| members.iter().cloned().collect())
                .unwrap_or_default()
        }))
    }

    async fn kv_rebind(
        &self,
        pointer: &str,
        value: &str,
        member: &str,
        set_prefix: &str,
        set_suffix: &str,
    ) -> Result<Option<String>, StoreError> {
        Ok(self.with_kv(|kv| kv.rebind(pointer, value, member, set_prefix, set_suffix)))
    }

    async fn kv_unbind(
        &self,
        pointer: &str,
        member: &str,
        set_prefix: &str,
        set_suffix: &str,
    ) -> Result<Option<String>, StoreError> {
        Ok(self.with_kv(|kv| {
            let old = kv.live(pointer, now_ms()).cloned();
            if let Some(old) = &old {
                kv.leave_set(old, member, set_prefix, set_suffix);
            }
            kv.values.remove(pointer);
            old
        }))
    }

    async fn conv_bind(&self, bind: &ConvBind<'_>) -> Result<ConvBound, StoreError> {
        // One lock for the whole binding: the memory store's atomicity.
        Ok(self.with_kv(|kv| {
            let now = now_ms();
            if let Some(owned_by) = bind.device.as_ref().and_then(|d| d.owned_by)
                && kv.live(owned_by, now).map(String::as_str) != Some(bind.user)
            {
                return ConvBound::DeviceNotOwned;
            }
            match kv.live(bind.owner_key, now) {
                Some(owner) if owner != bind.user => return ConvBound::OwnedBy(owner.clone()),
                Some(_) => {}
                None => {
                    kv.values
                        .insert(bind.owner_key.to_owned(), (bind.user.to_owned(), None));
                }
            }
            if let Some(last) = bind.last {
                kv.values
                    .insert(last.to_owned(), (bind.conv.to_owned(), None));
            }
            if let Some(device) = &bind.device {
                kv.rebind(
                    device.pointer,
                    bind.conv,
                    device.member,
                    device.set_prefix,
                    device.set_suffix,
                );
            }
            ConvBound::Bound
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::super::kv::contract;
    use super::*;

    fn store() -> MemoryStore {
        MemoryStore::new(90_000)
    }

    #[tokio::test]
    async fn values_set_get_delete() {
        contract::values_set_get_delete(&store()).await;
    }

    #[tokio::test]
    async fn values_expire() {
        contract::values_expire(&store()).await;
    }

    #[tokio::test]
    async fn rebind_moves_the_member() {
        contract::rebind_moves_the_member(&store()).await;
    }

    #[tokio::test]
    async fn tenants_and_apps_are_isolated() {
        contract::tenants_and_apps_are_isolated(&store()).await;
    }

    #[tokio::test]
    async fn colliding_apps_are_isolated() {
        contract::colliding_apps_are_isolated(&store()).await;
    }

    #[tokio::test]
    async fn conversations_have_one_owner() {
        contract::conversations_have_one_owner(&store()).await;
    }

    #[tokio::test]
    async fn device_bindings_follow_ownership() {
        contract::device_bindings_follow_ownership(&store()).await;
    }
}
