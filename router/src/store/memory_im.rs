//! IM sessions and stored messages in memory (standalone mode, tests).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use async_trait::async_trait;

use super::im::{ImLimits, ImSessionRecord, ImStore, ImUser, StoredMessage};
use super::{MemoryStore, StoreError};

/// Sessions and queues; each mutex is held only for map operations.
#[derive(Default)]
pub(super) struct MemoryIm {
    /// (tenant, session id) → record and expiry (ms).
    sessions: Mutex<HashMap<(String, String), (ImSessionRecord, u64)>>,
    /// Session inserts since the last sweep of expired sessions.
    inserts: Mutex<u64>,
    queues: Mutex<HashMap<(String, String), Queue>>,
}

#[derive(Default)]
struct Queue {
    /// Cursor of the next kept message.
    next: u64,
    /// (cursor, kept at ms, message), oldest first.
    entries: VecDeque<(u64, u64, StoredMessage)>,
}

impl Queue {
    fn expire(&mut self, now_ms: u64, limits: ImLimits) {
        while let Some((_, at, _)) = self.entries.front() {
            if at.saturating_add(limits.max_age_ms) >= now_ms {
                break;
            }
            self.entries.pop_front();
        }
    }
}

/// Expired sessions are swept every this many logins, so abandoned ones
/// do not pile up in a long-running standalone process.
const SWEEP_EVERY: u64 = 1_024;

fn key(tenant: &str, name: &str) -> (String, String) {
    (tenant.to_owned(), name.to_owned())
}

impl MemoryStore {
    fn with_queue<R>(&self, user: ImUser<'_>, f: impl FnOnce(&mut Queue) -> R) -> R {
        let mut queues = self.im.queues.lock().unwrap_or_else(|e| e.into_inner());
        let k = key(user.tenant, user.user);
        let queue = queues.entry(k.clone()).or_default();
        let result = f(queue);
        if queue.entries.is_empty() {
            queues.remove(&k);
        }
        result
    }
}

#[async_trait]
impl ImStore for MemoryStore {
    async fn im_session_create(
        &self,
        tenant: &str,
        session_id: &str,
        record: &ImSessionRecord,
        now_ms: u64,
        ttl_ms: u64,
    ) -> Result<(), StoreError> {
        let sweep = {
            let mut inserts = self.im.inserts.lock().unwrap_or_else(|e| e.into_inner());
            *inserts += 1;
            inserts.is_multiple_of(SWEEP_EVERY)
        };
        let mut sessions = self.im.sessions.lock().unwrap_or_else(|e| e.into_inner());
        if sweep {
            sessions.retain(|_, (_, expires)| *expires > now_ms);
        }
        sessions.insert(
            key(tenant, session_id),
            (record.clone(), now_ms.saturating_add(ttl_ms)),
        );
        Ok(())
    }

    async fn im_session_get(
        &self,
        tenant: &str,
        session_id: &str,
        now_ms: u64,
        ttl_ms: u64,
    ) -> Result<Option<ImSessionRecord>, StoreError> {
        let mut sessions = self.im.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let k = key(tenant, session_id);
        match sessions.get_mut(&k) {
            Some((record, expires)) if *expires > now_ms => {
                *expires = now_ms.saturating_add(ttl_ms);
                Ok(Some(record.clone()))
            }
            Some(_) => {
                sessions.remove(&k);
                Ok(None)
            }
            None => Ok(None),
        }
    }

    async fn im_keep(
        &self,
        user: ImUser<'_>,
        message: &StoredMessage,
        now_ms: u64,
        limits: ImLimits,
    ) -> Result<bool, StoreError> {
        Ok(self.with_queue(user, |queue| {
            queue.expire(now_ms, limits);
            if queue.entries.iter().any(|(_, _, m)| m.id == message.id) {
                return false;
            }
            queue.next += 1;
            queue
                .entries
                .push_back((queue.next, now_ms, message.clone()));
            while queue.entries.len() > limits.max_messages {
                queue.entries.pop_front();
            }
            true
        }))
    }

    async fn im_kept(
        &self,
        user: ImUser<'_>,
        after: u64,
        count: usize,
        now_ms: u64,
        limits: ImLimits,
    ) -> Result<Vec<(u64, StoredMessage)>, StoreError> {
        Ok(self.with_queue(user, |queue| {
            queue.expire(now_ms, limits);
            queue
                .entries
                .iter()
                .filter(|(cursor, _, _)| *cursor > after)
                .take(count)
                .map(|(cursor, _, m)| (*cursor, m.clone()))
                .collect()
        }))
    }

    async fn im_forget(&self, user: ImUser<'_>, id: &str, from: &str) -> Result<bool, StoreError> {
        Ok(self.with_queue(user, |queue| {
            let position = queue
                .entries
                .iter()
                .position(|(_, _, m)| m.id == id && m.from == from);
            position.and_then(|p| queue.entries.remove(p)).is_some()
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::super::im::contract;
    use super::*;

    fn store() -> MemoryStore {
        MemoryStore::new(90_000)
    }

    #[tokio::test]
    async fn sessions_expire_unless_used() {
        contract::sessions_expire_unless_used(&store()).await;
    }

    #[tokio::test]
    async fn messages_keep_their_order_and_forget_on_receipt() {
        contract::messages_keep_their_order_and_forget_on_receipt(&store()).await;
    }

    #[tokio::test]
    async fn messages_are_capped_in_number_and_age() {
        contract::messages_are_capped_in_number_and_age(&store()).await;
    }

    #[tokio::test]
    async fn users_and_tenants_are_isolated() {
        contract::users_and_tenants_are_isolated(&store()).await;
    }
}
