//! IM sessions and kept messages on Redis.
//!
//! - `sb:{tenant}:im:session:{id}`: a session record (JSON), with a TTL
//!   restarted at each use.
//! - `sb:{tenant}:im:body:{sender}:{id}`: a kept message, once for all its
//!   recipients: hash `g` (generation), `at` (kept at, ms), `n`
//!   (recipients that refer to it), `from`, `id`, `json`.
//! - `sb:{tenant}:im:queue:{user}`: sorted set of the user's references
//!   `{sender}:{id}` ([`keys::im_ref`]); the score is the generation of
//!   the message referred to, which is also its cursor. A reference whose
//!   body is gone, older than the age limit or of another generation (the
//!   name was reused after the first message aged out) is stale and is
//!   dropped wherever a script meets it.
//! - `sb:{tenant}:im:sent:{sender}`: sorted set of the sender's kept
//!   message ids by time kept: its quota.
//! - `sb:{tenant}:im:generation`: the counter generations come from.
//!
//! Every key carries the tenant hash tag, so each script (which builds
//! body and quota keys from references it reads) stays in one slot. Keys
//! expire once nothing was kept in them for the age limit.
//!
//! [`keys::im_ref`]: super::keys::im_ref

use async_trait::async_trait;
use redis::Script;

use super::im::{
    ImLimits, ImSessionRecord, ImStore, ImUser, Keep, KeptPage, StoredMessage, Window,
};
use super::keys;
use super::redis::observed;
use super::{RedisStore, StoreError};

/// Lua scripts, each with its KEYS and ARGV.
mod scripts {
    /// Helpers every message script starts with. `bp` and `sp` are the
    /// tenant's body and quota key prefixes; `ref` a reference, `g` its
    /// generation.
    const COMMON: &str = r"
local function drop_body(bp, sp, ref)
  redis.call('DEL', bp .. ref)
  local sender, id = string.match(ref, '^([^:]*):(.*)$')
  if sender then redis.call('ZREM', sp .. sender, id) end
end

-- The body `ref` of generation `g` names, while it is live: {at, json, from, id}.
local function live(bp, ref, g, cutoff)
  local b = redis.call('HMGET', bp .. ref, 'g', 'at', 'json', 'from', 'id')
  if not b[1] or tonumber(b[1]) ~= tonumber(g) or tonumber(b[2]) < cutoff then return nil end
  return b
end

-- One recipient lets go of `ref`: the body goes with its last recipient.
local function release(bp, sp, ref, g)
  local key = bp .. ref
  local bg = redis.call('HGET', key, 'g')
  if not bg or tonumber(bg) ~= tonumber(g) then return end
  if redis.call('HINCRBY', key, 'n', -1) <= 0 then drop_body(bp, sp, ref) end
end

-- Drops the queue's stale references from the oldest on.
local function expire(q, bp, sp, cutoff)
  while true do
    local oldest = redis.call('ZRANGE', q, 0, 0, 'WITHSCORES')
    if #oldest == 0 then return end
    if live(bp, oldest[1], oldest[2], cutoff) then return end
    redis.call('ZREM', q, oldest[1])
    release(bp, sp, oldest[1], oldest[2])
  end
end
";

    /// KEYS[1] body, KEYS[2] the sender's quota, KEYS[3] generation
    /// counter, then one queue per recipient. ARGV[1] reference, ARGV[2]
    /// escaped id, ARGV[3] json, ARGV[4] now ms, ARGV[5] cutoff ms,
    /// ARGV[6] max messages per queue, ARGV[7] key ttl ms, ARGV[8] quota
    /// (-1: none), ARGV[9] body prefix, ARGV[10] quota prefix, ARGV[11]
    /// sender, ARGV[12] id.
    /// Returns {'kept', generation}, {'duplicate'} or {'over'}.
    pub fn keep() -> String {
        format!(
            "{COMMON}{}",
            r"
local ref, cutoff = ARGV[1], tonumber(ARGV[5])
local max, ttl, quota = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local bp, sp = ARGV[9], ARGV[10]
local at = redis.call('HGET', KEYS[1], 'at')
if at and tonumber(at) >= cutoff then return {'duplicate'} end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[5])
if quota >= 0 and redis.call('ZCARD', KEYS[2]) >= quota then return {'over'} end
-- An aged-out message of this name gives way.
if at then drop_body(bp, sp, ref) end
local g = redis.call('INCR', KEYS[3])
local refs = 0
for i = 4, #KEYS do
  local q = KEYS[i]
  expire(q, bp, sp, cutoff)
  redis.call('ZADD', q, g, ref)
  refs = refs + 1
  local over = redis.call('ZCARD', q) - max
  if over > 0 then
    local gone = redis.call('ZRANGE', q, 0, over - 1, 'WITHSCORES')
    redis.call('ZREMRANGEBYRANK', q, 0, over - 1)
    for j = 1, #gone, 2 do
      if gone[j] == ref then refs = refs - 1 else release(bp, sp, gone[j], gone[j + 1]) end
    end
  end
  redis.call('PEXPIRE', q, ttl)
end
if refs > 0 then
  redis.call('HSET', KEYS[1], 'g', g, 'at', ARGV[4], 'n', refs, 'from', ARGV[11], 'id', ARGV[12], 'json', ARGV[3])
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('ZADD', KEYS[2], ARGV[4], ARGV[2])
  redis.call('PEXPIRE', KEYS[2], ttl)
end
return {'kept', g}
"
        )
    }

    /// KEYS[1] queue; ARGV[1] cursor (exclusive), ARGV[2] most messages,
    /// ARGV[3] most bytes, ARGV[4] cutoff ms, ARGV[5] body prefix,
    /// ARGV[6] quota prefix.
    /// Returns {more, cursor, from, id, json, cursor, from, id, json, ...}.
    pub fn kept() -> String {
        format!(
            "{COMMON}{}",
            r"
local count, max_bytes, cutoff = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local bp, sp = ARGV[5], ARGV[6]
expire(KEYS[1], bp, sp, cutoff)
local refs = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[1], '+inf', 'WITHSCORES', 'LIMIT', 0, count + 1)
local out = {0}
local n, bytes = 0, 0
local stopped = false
for i = 1, #refs, 2 do
  local b = live(bp, refs[i], refs[i + 1], cutoff)
  if b then
    if n >= count or (n > 0 and bytes + #b[3] > max_bytes) then
      stopped = true
      break
    end
    n = n + 1
    bytes = bytes + #b[3]
    out[#out + 1] = refs[i + 1]
    out[#out + 1] = b[4]
    out[#out + 1] = b[5]
    out[#out + 1] = b[3]
  else
    redis.call('ZREM', KEYS[1], refs[i])
    release(bp, sp, refs[i], refs[i + 1])
  end
end
-- A full fetch with stale references in it may hide more behind it.
if stopped or #refs == 2 * (count + 1) then out[1] = 1 end
return out
"
        )
    }

    /// KEYS[1] queue; ARGV[1] reference, ARGV[2] cutoff ms, ARGV[3] body
    /// prefix, ARGV[4] quota prefix.
    /// Returns 1 when the queue referred to a live message of that name.
    pub fn forget() -> String {
        format!(
            "{COMMON}{}",
            r"
local g = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not g then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
local was_live = live(ARGV[3], ARGV[1], g, tonumber(ARGV[2]))
release(ARGV[3], ARGV[4], ARGV[1], g)
if was_live then return 1 end
return 0
"
        )
    }

    /// KEYS[1] the sender's quota; ARGV[1] cutoff ms. Returns its count.
    pub const SENT: &str = r"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1])
return redis.call('ZCARD', KEYS[1])
";

    /// KEYS[1] session; ARGV[1] ttl ms. Returns the record, TTL restarted.
    pub const SESSION_GET: &str = r"
local record = redis.call('GET', KEYS[1])
if record then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return record
";
}

/// The IM scripts, loaded once per store.
pub(super) struct ImScripts {
    keep: Script,
    kept: Script,
    forget: Script,
    sent: Script,
    session_get: Script,
}

impl Default for ImScripts {
    fn default() -> Self {
        Self {
            keep: Script::new(&scripts::keep()),
            kept: Script::new(&scripts::kept()),
            forget: Script::new(&scripts::forget()),
            sent: Script::new(scripts::SENT),
            session_get: Script::new(scripts::SESSION_GET),
        }
    }
}

fn session_key(tenant: &str, session_id: &str) -> String {
    keys::im_session(tenant, session_id)
}

fn cutoff(now_ms: u64, limits: ImLimits) -> u64 {
    now_ms.saturating_sub(limits.max_age_ms)
}

fn protocol(e: impl std::fmt::Display) -> StoreError {
    StoreError::Protocol(e.to_string())
}

/// A page reply: `more`, then (cursor, from, id, json) per message.
fn parse_page(flat: Vec<String>) -> Result<KeptPage, StoreError> {
    let mut values = flat.into_iter();
    let more = values
        .next()
        .ok_or_else(|| protocol("empty IM page reply"))?
        == "1";
    let rest: Vec<String> = values.collect();
    let messages = rest
        .chunks(4)
        .map(|quad| match quad {
            [cursor, from, id, json] => Ok((
                cursor.parse::<u64>().map_err(protocol)?,
                StoredMessage {
                    id: id.clone(),
                    from: from.clone(),
                    json: json.clone(),
                },
            )),
            _ => Err(protocol("IM page reply")),
        })
        .collect::<Result<_, _>>()?;
    Ok(KeptPage { messages, more })
}

#[async_trait]
impl ImStore for RedisStore {
    async fn im_session_create(
        &self,
        tenant: &str,
        session_id: &str,
        record: &ImSessionRecord,
        _now_ms: u64,
        ttl_ms: u64,
    ) -> Result<(), StoreError> {
        let mut connection = self.connection.clone();
        observed("im_session_create", async {
            let value = serde_json::to_string(record).map_err(protocol)?;
            let _: () = redis::cmd("SET")
                .arg(session_key(tenant, session_id))
                .arg(value)
                .arg("PX")
                .arg(ttl_ms.max(1))
                .query_async(&mut connection)
                .await?;
            Ok(())
        })
        .await
    }

    async fn im_session_get(
        &self,
        tenant: &str,
        session_id: &str,
        _now_ms: u64,
        ttl_ms: u64,
    ) -> Result<Option<ImSessionRecord>, StoreError> {
        let mut connection = self.connection.clone();
        observed("im_session_get", async {
            let value: Option<String> = self
                .im
                .session_get
                .key(session_key(tenant, session_id))
                .arg(ttl_ms.max(1))
                .invoke_async(&mut connection)
                .await?;
            value
                .map(|v| serde_json::from_str(&v).map_err(protocol))
                .transpose()
        })
        .await
    }

    async fn im_keep(
        &self,
        tenant: &str,
        message: &StoredMessage,
        to: &[String],
        now_ms: u64,
        limits: ImLimits,
    ) -> Result<Keep, StoreError> {
        let mut connection = self.connection.clone();
        let mut invocation = self.im.keep.prepare_invoke();
        invocation
            .key(keys::im_body(tenant, &message.from, &message.id))
            .key(keys::im_sent(tenant, &message.from))
            .key(keys::im_generation(tenant));
        for user in to {
            invocation.key(keys::im_queue(tenant, user));
        }
        invocation
            .arg(keys::im_ref(&message.from, &message.id))
            .arg(keys::part(&message.id).as_ref())
            .arg(&message.json)
            .arg(now_ms)
            .arg(cutoff(now_ms, limits))
            .arg(limits.max_messages.max(1))
            .arg(limits.max_age_ms.max(1))
            .arg(
                limits
                    .sender_quota
                    .map_or(-1, |q| i64::try_from(q).unwrap_or(i64::MAX)),
            )
            .arg(keys::im_body_prefix(tenant))
            .arg(keys::im_sent_prefix(tenant))
            .arg(&message.from)
            .arg(&message.id);
        observed("im_keep", async {
            let reply: Vec<redis::Value> = invocation.invoke_async(&mut connection).await?;
            let word =
                |v: &redis::Value| redis::from_redis_value_ref::<String>(v).map_err(protocol);
            match reply.as_slice() {
                [outcome, generation] if word(outcome)? == "kept" => Ok(Keep::Kept(
                    redis::from_redis_value_ref(generation).map_err(protocol)?,
                )),
                [outcome] if word(outcome)? == "duplicate" => Ok(Keep::Duplicate),
                [outcome] if word(outcome)? == "over" => Ok(Keep::OverQuota),
                _ => Err(protocol("IM keep reply")),
            }
        })
        .await
    }

    async fn im_kept(
        &self,
        user: ImUser<'_>,
        after: u64,
        window: Window,
        now_ms: u64,
        limits: ImLimits,
    ) -> Result<KeptPage, StoreError> {
        let mut connection = self.connection.clone();
        observed("im_kept", async {
            let flat: Vec<String> = self
                .im
                .kept
                .key(keys::im_queue(user.tenant, user.user))
                .arg(after)
                .arg(window.messages.max(1))
                .arg(window.bytes)
                .arg(cutoff(now_ms, limits))
                .arg(keys::im_body_prefix(user.tenant))
                .arg(keys::im_sent_prefix(user.tenant))
                .invoke_async(&mut connection)
                .await?;
            parse_page(flat)
        })
        .await
    }

    async fn im_forget(
        &self,
        user: ImUser<'_>,
        id: &str,
        from: &str,
        now_ms: u64,
        limits: ImLimits,
    ) -> Result<bool, StoreError> {
        let mut connection = self.connection.clone();
        observed("im_forget", async {
            let forgotten: u64 = self
                .im
                .forget
                .key(keys::im_queue(user.tenant, user.user))
                .arg(keys::im_ref(from, id))
                .arg(cutoff(now_ms, limits))
                .arg(keys::im_body_prefix(user.tenant))
                .arg(keys::im_sent_prefix(user.tenant))
                .invoke_async(&mut connection)
                .await?;
            Ok(forgotten == 1)
        })
        .await
    }

    async fn im_sender_kept(
        &self,
        tenant: &str,
        sender: &str,
        now_ms: u64,
        limits: ImLimits,
    ) -> Result<usize, StoreError> {
        let mut connection = self.connection.clone();
        observed("im_sender_kept", async {
            let count: usize = self
                .im
                .sent
                .key(keys::im_sent(tenant, sender))
                .arg(cutoff(now_ms, limits))
                .invoke_async(&mut connection)
                .await?;
            Ok(count)
        })
        .await
    }

    #[cfg(test)]
    async fn im_bodies(&self, tenant: &str) -> Result<(usize, usize), StoreError> {
        let mut connection = self.connection.clone();
        let pattern = format!("{}*", keys::im_body_prefix(tenant));
        let bodies: Vec<String> = redis::cmd("KEYS")
            .arg(pattern)
            .query_async(&mut connection)
            .await?;
        let mut bytes = 0;
        for body in &bodies {
            let len: usize = redis::cmd("HSTRLEN")
                .arg(body)
                .arg("json")
                .query_async(&mut connection)
                .await?;
            bytes += len;
        }
        Ok((bodies.len(), bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::super::im::contract;
    use super::*;
    use switchboard_testkit::{RedisCluster, RedisServer};

    async fn store() -> (RedisServer, RedisStore) {
        let server = RedisServer::start().await;
        let store = RedisStore::connect(&server.url(), 90_000).await.unwrap();
        (server, store)
    }

    #[tokio::test]
    async fn sessions_expire_unless_used() {
        let (_server, store) = store().await;
        contract::sessions_expire_unless_used(&store).await;
    }

    #[tokio::test]
    async fn messages_keep_their_order_and_forget_on_receipt() {
        let (_server, store) = store().await;
        contract::messages_keep_their_order_and_forget_on_receipt(&store).await;
    }

    #[tokio::test]
    async fn another_senders_id_is_another_message() {
        let (_server, store) = store().await;
        contract::another_senders_id_is_another_message(&store).await;
    }

    #[tokio::test]
    async fn senders_and_ids_never_collide() {
        let (_server, store) = store().await;
        contract::senders_and_ids_never_collide(&store).await;
    }

    #[tokio::test]
    async fn a_message_to_many_is_kept_once() {
        let (_server, store) = store().await;
        contract::a_message_to_many_is_kept_once(&store).await;
    }

    #[tokio::test]
    async fn the_sender_quota_counts_kept_unreceipted_messages() {
        let (_server, store) = store().await;
        contract::the_sender_quota_counts_kept_unreceipted_messages(&store).await;
    }

    #[tokio::test]
    async fn messages_are_capped_in_number_and_age() {
        let (_server, store) = store().await;
        contract::messages_are_capped_in_number_and_age(&store).await;
    }

    #[tokio::test]
    async fn users_and_tenants_are_isolated() {
        let (_server, store) = store().await;
        contract::users_and_tenants_are_isolated(&store).await;
    }

    /// Each script stays in one slot of a Redis Cluster, the keys it
    /// builds from what it reads included.
    #[tokio::test]
    async fn the_contract_holds_on_a_redis_cluster() {
        let cluster = RedisCluster::start(3).await;
        let store = RedisStore::connect(&cluster.url(), 90_000).await.unwrap();
        contract::messages_keep_their_order_and_forget_on_receipt(&store).await;
        contract::another_senders_id_is_another_message(&store).await;
        contract::the_sender_quota_counts_kept_unreceipted_messages(&store).await;
        contract::messages_are_capped_in_number_and_age(&store).await;
        contract::users_and_tenants_are_isolated(&store).await;
    }

    #[test]
    fn keys_carry_the_tenant_hash_tag() {
        assert_eq!(keys::im_queue("acme", "bob"), "sb:{acme}:im:queue:bob");
        assert_eq!(
            keys::im_body("acme", "alice", "m:1"),
            "sb:{acme}:im:body:alice:m%3A1"
        );
        assert_eq!(keys::im_sent("acme", "alice"), "sb:{acme}:im:sent:alice");
        assert_eq!(session_key("acme", "s1"), "sb:{acme}:im:session:s1");
    }
}
