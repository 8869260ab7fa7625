//! IM sessions and kept messages in memory (standalone mode, tests).
//!
//! Each message is kept once, in `bodies`; a recipient's queue holds
//! references (sender, id, generation) to it. A body counts its
//! references and goes with the last one, or when it ages out; the
//! generation tells a reference to an aged-out body from one to a later
//! message that reuses its (sender, id).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::im::{
    ImLimits, ImSessionRecord, ImStore, ImUser, Keep, KeptPage, StoredMessage, Window,
};
use super::{MemoryStore, StoreError};

/// Sessions and kept messages; each mutex is held only for map operations.
#[derive(Default)]
pub(super) struct MemoryIm {
    /// (tenant, session id) → record and expiry (ms).
    sessions: Mutex<HashMap<(String, String), (ImSessionRecord, u64)>>,
    /// Session inserts since the last sweep of expired sessions.
    inserts: Mutex<u64>,
    messages: Mutex<Messages>,
}

/// (tenant, sender, id): what names a kept message.
type BodyKey = Arc<(String, String, String)>;

#[derive(Default)]
struct Messages {
    /// The generation of the next body.
    next_generation: u64,
    bodies: HashMap<BodyKey, Body>,
    /// Every body by age, oldest first: aged-out bodies are swept from the
    /// front even when no recipient ever reads its queue again.
    by_age: VecDeque<(u64, u64, BodyKey)>,
    /// (tenant, sender) → bodies kept, what the quota counts.
    per_sender: HashMap<(String, String), usize>,
    /// (tenant, user) → the user's references.
    queues: HashMap<(String, String), Queue>,
}

struct Body {
    generation: u64,
    /// Kept at (ms).
    at: u64,
    /// Recipients whose queue refers to it.
    references: usize,
    json: Arc<str>,
}

#[derive(Default)]
struct Queue {
    /// Oldest first.
    entries: VecDeque<Reference>,
}

/// A recipient's reference to a body: its generation, which is also its
/// cursor (generations only grow, so a queue is in cursor order).
struct Reference {
    generation: u64,
    at: u64,
    key: BodyKey,
}

impl Messages {
    /// Drops bodies older than `cutoff`, oldest first.
    fn sweep(&mut self, cutoff: u64) {
        while let Some((at, generation, _)) = self.by_age.front() {
            if *at >= cutoff {
                break;
            }
            let generation = *generation;
            if let Some((_, _, key)) = self.by_age.pop_front() {
                self.drop_body_if(&key, generation);
            }
        }
    }

    fn drop_body_if(&mut self, key: &BodyKey, generation: u64) {
        if self
            .bodies
            .get(key)
            .is_some_and(|b| b.generation == generation)
        {
            self.bodies.remove(key);
            let sender = (key.0.clone(), key.1.clone());
            if let Some(count) = self.per_sender.get_mut(&sender) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    self.per_sender.remove(&sender);
                }
            }
        }
    }

    /// The body `reference` points to, when it is still that one.
    fn resolve(&self, reference: &Reference) -> Option<&Body> {
        self.bodies
            .get(&reference.key)
            .filter(|b| b.generation == reference.generation)
    }

    /// A recipient lets go of `reference`; its body goes with the last.
    fn release(&mut self, reference: &Reference) {
        let Some(body) = self.bodies.get_mut(&reference.key) else {
            return;
        };
        if body.generation != reference.generation {
            return;
        }
        body.references = body.references.saturating_sub(1);
        if body.references == 0 {
            self.drop_body_if(&reference.key, reference.generation);
        }
    }

    /// Drops `user`'s references older than `cutoff` or to bodies gone,
    /// from the oldest on, and a queue left empty.
    fn expire_queue(&mut self, user: &(String, String), cutoff: u64) {
        loop {
            let Some(queue) = self.queues.get_mut(user) else {
                return;
            };
            let stale = match queue.entries.front() {
                None => {
                    self.queues.remove(user);
                    return;
                }
                Some(front) => {
                    let live = self
                        .bodies
                        .get(&front.key)
                        .is_some_and(|b| b.generation == front.generation);
                    front.at < cutoff || !live
                }
            };
            if !stale {
                return;
            }
            if let Some(reference) = queue.entries.pop_front() {
                self.release(&reference);
            }
        }
    }

    fn per_sender(&self, tenant: &str, sender: &str) -> usize {
        self.per_sender
            .get(&(tenant.to_owned(), sender.to_owned()))
            .copied()
            .unwrap_or(0)
    }
}

fn cutoff(now_ms: u64, limits: ImLimits) -> u64 {
    now_ms.saturating_sub(limits.max_age_ms)
}

/// Expired sessions are swept every this many logins, so abandoned ones
/// do not pile up in a long-running standalone process.
const SWEEP_EVERY: u64 = 1_024;

fn key(tenant: &str, name: &str) -> (String, String) {
    (tenant.to_owned(), name.to_owned())
}

impl MemoryStore {
    fn messages(&self) -> std::sync::MutexGuard<'_, Messages> {
        self.im.messages.lock().unwrap_or_else(|e| e.into_inner())
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
        tenant: &str,
        message: &StoredMessage,
        to: &[String],
        now_ms: u64,
        limits: ImLimits,
    ) -> Result<Keep, StoreError> {
        let mut m = self.messages();
        let cutoff = cutoff(now_ms, limits);
        m.sweep(cutoff);
        let body_key: BodyKey =
            Arc::new((tenant.to_owned(), message.from.clone(), message.id.clone()));
        if m.bodies.get(&body_key).is_some_and(|b| b.at >= cutoff) {
            return Ok(Keep::Duplicate);
        }
        if limits
            .sender_quota
            .is_some_and(|quota| m.per_sender(tenant, &message.from) >= quota)
        {
            return Ok(Keep::OverQuota);
        }
        // An aged-out body the sweep has not reached yet gives way.
        if let Some(old) = m.bodies.get(&body_key).map(|b| b.generation) {
            m.drop_body_if(&body_key, old);
        }
        m.next_generation += 1;
        let generation = m.next_generation;
        let mut references = 0;
        for user in to {
            let user_key = key(tenant, user);
            m.expire_queue(&user_key, cutoff);
            let queue = m.queues.entry(user_key.clone()).or_default();
            // A reference left to an aged-out message of this name gives
            // way, as in Redis, where a queue names each message once.
            queue.entries.retain(|r| r.key != body_key);
            queue.entries.push_back(Reference {
                generation,
                at: now_ms,
                key: body_key.clone(),
            });
            references += 1;
            // Beyond the cap the oldest go, the new one included when the
            // cap is 0 (never: settings keep it at least 1).
            let over = queue.entries.len().saturating_sub(limits.max_messages);
            let dropped: Vec<Reference> = queue.entries.drain(..over).collect();
            for reference in &dropped {
                if reference.generation == generation {
                    references -= 1;
                } else {
                    m.release(reference);
                }
            }
        }
        if references > 0 {
            m.bodies.insert(
                body_key.clone(),
                Body {
                    generation,
                    at: now_ms,
                    references,
                    json: Arc::from(message.json.as_str()),
                },
            );
            m.by_age.push_back((now_ms, generation, body_key));
            *m.per_sender
                .entry((tenant.to_owned(), message.from.clone()))
                .or_default() += 1;
        }
        Ok(Keep::Kept(generation))
    }

    async fn im_kept(
        &self,
        user: ImUser<'_>,
        after: u64,
        window: Window,
        now_ms: u64,
        limits: ImLimits,
    ) -> Result<KeptPage, StoreError> {
        let mut m = self.messages();
        let cutoff = cutoff(now_ms, limits);
        m.sweep(cutoff);
        let user_key = key(user.tenant, user.user);
        m.expire_queue(&user_key, cutoff);
        let mut page = KeptPage::default();
        let Some(queue) = m.queues.get(&user_key) else {
            return Ok(page);
        };
        let mut bytes = 0;
        for reference in queue.entries.iter().filter(|r| r.generation > after) {
            let Some(body) = m.resolve(reference).filter(|b| b.at >= cutoff) else {
                continue;
            };
            let full = page.messages.len() >= window.messages
                || (!page.messages.is_empty() && bytes + body.json.len() > window.bytes);
            if full {
                page.more = true;
                break;
            }
            bytes += body.json.len();
            let (_, from, id) = &*reference.key;
            page.messages.push((
                reference.generation,
                StoredMessage {
                    id: id.clone(),
                    from: from.clone(),
                    json: body.json.to_string(),
                },
            ));
        }
        Ok(page)
    }

    async fn im_forget(
        &self,
        user: ImUser<'_>,
        id: &str,
        from: &str,
        now_ms: u64,
        limits: ImLimits,
    ) -> Result<bool, StoreError> {
        let mut m = self.messages();
        let cutoff = cutoff(now_ms, limits);
        m.sweep(cutoff);
        let user_key = key(user.tenant, user.user);
        m.expire_queue(&user_key, cutoff);
        let Some(queue) = m.queues.get_mut(&user_key) else {
            return Ok(false);
        };
        let position = queue
            .entries
            .iter()
            .position(|r| r.key.1 == from && r.key.2 == id);
        let Some(reference) = position.and_then(|p| queue.entries.remove(p)) else {
            return Ok(false);
        };
        if queue.entries.is_empty() {
            m.queues.remove(&user_key);
        }
        let live = m.resolve(&reference).is_some_and(|b| b.at >= cutoff);
        m.release(&reference);
        Ok(live)
    }

    async fn im_sender_kept(
        &self,
        tenant: &str,
        sender: &str,
        now_ms: u64,
        limits: ImLimits,
    ) -> Result<usize, StoreError> {
        let mut m = self.messages();
        m.sweep(cutoff(now_ms, limits));
        Ok(m.per_sender(tenant, sender))
    }

    #[cfg(test)]
    async fn im_bodies(&self, tenant: &str) -> Result<(usize, usize), StoreError> {
        let m = self.messages();
        let bodies = m.bodies.iter().filter(|(k, _)| k.0 == tenant);
        Ok(bodies.fold((0, 0), |(n, bytes), (_, b)| (n + 1, bytes + b.json.len())))
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
    async fn another_senders_id_is_another_message() {
        contract::another_senders_id_is_another_message(&store()).await;
    }

    #[tokio::test]
    async fn senders_and_ids_never_collide() {
        contract::senders_and_ids_never_collide(&store()).await;
    }

    #[tokio::test]
    async fn a_message_to_many_is_kept_once() {
        contract::a_message_to_many_is_kept_once(&store()).await;
    }

    #[tokio::test]
    async fn the_sender_quota_counts_kept_unreceipted_messages() {
        contract::the_sender_quota_counts_kept_unreceipted_messages(&store()).await;
    }

    #[tokio::test]
    async fn messages_are_capped_in_number_and_age() {
        contract::messages_are_capped_in_number_and_age(&store()).await;
    }

    #[tokio::test]
    async fn users_and_tenants_are_isolated() {
        contract::users_and_tenants_are_isolated(&store()).await;
    }

    /// Bodies nobody reads again still go once they age out.
    #[tokio::test]
    async fn aged_out_bodies_are_swept_without_readers() {
        let store = store();
        let limits = contract::LIMITS;
        let m = StoredMessage {
            id: "m1".into(),
            from: "alice".into(),
            json: "x".repeat(1_000),
        };
        store
            .im_keep("t", &m, &["bob".to_owned()], 1_000, limits)
            .await
            .unwrap();
        let later = StoredMessage {
            id: "m2".into(),
            ..m.clone()
        };
        let now = 1_000 + limits.max_age_ms + 1;
        store
            .im_keep("t", &later, &["carol".to_owned()], now, limits)
            .await
            .unwrap();
        assert_eq!(store.im_bodies("t").await.unwrap(), (1, 1_000));
    }
}
