//! The in-memory store: standalone mode and unit tests.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;

use super::{GroupRef, PresenceChange, Store, StoreError};

/// Presence per (tenant, group): member → last refresh (ms).
/// One mutex, held only for map operations, never across an await.
pub struct MemoryStore {
    ttl_ms: u64,
    presence: Mutex<HashMap<(String, String), HashMap<String, u64>>>,
    pub(super) kv: Mutex<super::memory_kv::KvState>,
    pub(super) im: super::memory_im::MemoryIm,
    pub(super) history: super::memory_history::MemoryHistory,
}

impl MemoryStore {
    pub fn new(presence_ttl_ms: u64) -> Self {
        Self {
            ttl_ms: presence_ttl_ms,
            presence: Mutex::default(),
            kv: Mutex::default(),
            im: Default::default(),
            history: Default::default(),
        }
    }

    fn with_group<R>(
        &self,
        group: &GroupRef<'_>,
        f: impl FnOnce(&mut HashMap<String, u64>) -> R,
    ) -> R {
        let mut all = self.presence.lock().unwrap_or_else(|e| e.into_inner());
        let key = (group.tenant.to_owned(), group.group.to_owned());
        let members = all.entry(key.clone()).or_default();
        let result = f(members);
        if members.is_empty() {
            all.remove(&key);
        }
        result
    }

    fn live(&self, members: &HashMap<String, u64>, now_ms: u64) -> u32 {
        let cutoff = now_ms.saturating_sub(self.ttl_ms);
        members.values().filter(|&&at| at > cutoff).count() as u32
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn presence_refresh(
        &self,
        group: GroupRef<'_>,
        member: &str,
        now_ms: u64,
    ) -> Result<PresenceChange, StoreError> {
        let cutoff = now_ms.saturating_sub(self.ttl_ms);
        Ok(self.with_group(&group, |members| {
            let previous = members.insert(member.to_owned(), now_ms);
            PresenceChange {
                changed: previous.is_none_or(|at| at <= cutoff),
                count: self.live(members, now_ms),
            }
        }))
    }

    async fn presence_leave(
        &self,
        group: GroupRef<'_>,
        member: &str,
        now_ms: u64,
    ) -> Result<PresenceChange, StoreError> {
        Ok(self.with_group(&group, |members| PresenceChange {
            changed: members.remove(member).is_some(),
            count: self.live(members, now_ms),
        }))
    }

    async fn presence_expire(
        &self,
        group: GroupRef<'_>,
        now_ms: u64,
    ) -> Result<(Vec<String>, u32), StoreError> {
        let cutoff = now_ms.saturating_sub(self.ttl_ms);
        Ok(self.with_group(&group, |members| {
            let mut expired: Vec<String> = members
                .iter()
                .filter(|&(_, &at)| at <= cutoff)
                .map(|(m, _)| m.clone())
                .collect();
            for m in &expired {
                members.remove(m);
            }
            expired.sort();
            (expired, members.len() as u32)
        }))
    }

    async fn presence_members(
        &self,
        group: GroupRef<'_>,
        now_ms: u64,
    ) -> Result<Vec<String>, StoreError> {
        let cutoff = now_ms.saturating_sub(self.ttl_ms);
        Ok(self.with_group(&group, |members| {
            let mut live: Vec<String> = members
                .iter()
                .filter(|&(_, &at)| at > cutoff)
                .map(|(m, _)| m.clone())
                .collect();
            live.sort();
            live
        }))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::contract;
    use super::*;

    fn store() -> MemoryStore {
        MemoryStore::new(contract::TTL_MS)
    }

    #[tokio::test]
    async fn presence_join_leave_and_count() {
        contract::presence_join_leave_and_count(&store()).await;
    }

    #[tokio::test]
    async fn presence_expires_after_ttl() {
        contract::presence_expires_after_ttl(&store()).await;
    }

    #[tokio::test]
    async fn tenants_are_isolated() {
        contract::tenants_are_isolated(&store()).await;
    }
}
