//! IM sessions and stored messages on Redis.
//!
//! - `sb:{tenant}:im:session:{id}`: a session record (JSON), with a TTL
//!   restarted at each use.
//! - `sb:{tenant}:im:queue:{user}`: sorted set of kept message ids; the
//!   score is the cursor, one more than the last, so the set is in arrival
//!   order.
//! - `sb:{tenant}:im:msg:{user}`: hash id → `{kept at ms}\n{from}\n{json}`.
//!
//! A user's two keys share the tenant hash tag, so each script touches one
//! slot; both expire once nothing was kept for the age limit.

use async_trait::async_trait;
use redis::Script;

use super::im::{ImLimits, ImSessionRecord, ImStore, ImUser, StoredMessage};
use super::redis::observed;
use super::{RedisStore, StoreError};

/// Lua scripts, each with its KEYS and ARGV.
mod scripts {
    /// Drops kept messages older than ARGV[cutoff] from the oldest on, and
    /// ids whose record is gone. Uses KEYS[1] queue, KEYS[2] records.
    const EXPIRE: &str = r"
local function expire(cutoff)
  while true do
    local oldest = redis.call('ZRANGE', KEYS[1], 0, 0)
    if #oldest == 0 then return end
    local record = redis.call('HGET', KEYS[2], oldest[1])
    if record and tonumber(string.match(record, '^(%d+)')) >= cutoff then return end
    redis.call('ZREM', KEYS[1], oldest[1])
    if record then redis.call('HDEL', KEYS[2], oldest[1]) end
  end
end
";

    /// KEYS[1] queue, KEYS[2] records; ARGV[1] id, ARGV[2] record,
    /// ARGV[3] cutoff ms, ARGV[4] max messages, ARGV[5] key ttl ms.
    /// Returns 1 when kept, 0 when the id was already kept.
    pub fn keep() -> String {
        format!(
            "{EXPIRE}{}",
            r"
expire(tonumber(ARGV[3]))
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then return 0 end
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
local cursor = 1
if #last == 2 then cursor = tonumber(last[2]) + 1 end
redis.call('ZADD', KEYS[1], cursor, ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
local over = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[4])
if over > 0 then
  local gone = redis.call('ZRANGE', KEYS[1], 0, over - 1)
  redis.call('ZREMRANGEBYRANK', KEYS[1], 0, over - 1)
  for i = 1, #gone do redis.call('HDEL', KEYS[2], gone[i]) end
end
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('PEXPIRE', KEYS[2], ARGV[5])
return 1
"
        )
    }

    /// KEYS[1] queue, KEYS[2] records; ARGV[1] cursor (exclusive),
    /// ARGV[2] count, ARGV[3] cutoff ms.
    /// Returns {cursor, id, record, cursor, id, record, ...}.
    pub fn kept() -> String {
        format!(
            "{EXPIRE}{}",
            r"
expire(tonumber(ARGV[3]))
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[1], '+inf', 'WITHSCORES', 'LIMIT', 0, ARGV[2])
local out = {}
for i = 1, #ids, 2 do
  local record = redis.call('HGET', KEYS[2], ids[i])
  if record then
    out[#out + 1] = ids[i + 1]
    out[#out + 1] = ids[i]
    out[#out + 1] = record
  else
    redis.call('ZREM', KEYS[1], ids[i])
  end
end
return out
"
        )
    }

    /// KEYS[1] queue, KEYS[2] records; ARGV[1] id, ARGV[2] sender.
    /// Returns 1 when the message was kept and sent by the sender.
    pub const FORGET: &str = r"
local record = redis.call('HGET', KEYS[2], ARGV[1])
if not record then return 0 end
local from = string.match(record, '^%d+\n([^\n]*)\n')
if from ~= ARGV[2] then return 0 end
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[1], ARGV[1])
return 1
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
    session_get: Script,
}

impl Default for ImScripts {
    fn default() -> Self {
        Self {
            keep: Script::new(&scripts::keep()),
            kept: Script::new(&scripts::kept()),
            forget: Script::new(scripts::FORGET),
            session_get: Script::new(scripts::SESSION_GET),
        }
    }
}

fn session_key(tenant: &str, session_id: &str) -> String {
    super::keys::im_session(tenant, session_id)
}

fn queue_keys(user: ImUser<'_>) -> (String, String) {
    (
        super::keys::im_queue(user.tenant, user.user),
        super::keys::im_messages(user.tenant, user.user),
    )
}

fn cutoff(now_ms: u64, limits: ImLimits) -> u64 {
    now_ms.saturating_sub(limits.max_age_ms)
}

fn record(message: &StoredMessage, now_ms: u64) -> String {
    format!("{now_ms}\n{}\n{}", message.from, message.json)
}

fn parse_record(id: String, record: &str) -> Result<StoredMessage, StoreError> {
    let mut parts = record.splitn(3, '\n');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(_at), Some(from), Some(json)) => Ok(StoredMessage {
            id,
            from: from.to_owned(),
            json: json.to_owned(),
        }),
        _ => Err(StoreError::Protocol(format!("IM record of {id}"))),
    }
}

fn protocol(e: impl std::fmt::Display) -> StoreError {
    StoreError::Protocol(e.to_string())
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
        user: ImUser<'_>,
        message: &StoredMessage,
        now_ms: u64,
        limits: ImLimits,
    ) -> Result<bool, StoreError> {
        let mut connection = self.connection.clone();
        let (queue, records) = queue_keys(user);
        observed("im_keep", async {
            let kept: u64 = self
                .im
                .keep
                .key(queue)
                .key(records)
                .arg(&message.id)
                .arg(record(message, now_ms))
                .arg(cutoff(now_ms, limits))
                .arg(limits.max_messages.max(1))
                .arg(limits.max_age_ms.max(1))
                .invoke_async(&mut connection)
                .await?;
            Ok(kept == 1)
        })
        .await
    }

    async fn im_kept(
        &self,
        user: ImUser<'_>,
        after: u64,
        count: usize,
        now_ms: u64,
        limits: ImLimits,
    ) -> Result<Vec<(u64, StoredMessage)>, StoreError> {
        let mut connection = self.connection.clone();
        let (queue, records) = queue_keys(user);
        observed("im_kept", async {
            let flat: Vec<String> = self
                .im
                .kept
                .key(queue)
                .key(records)
                .arg(after)
                .arg(count.max(1))
                .arg(cutoff(now_ms, limits))
                .invoke_async(&mut connection)
                .await?;
            flat.chunks(3)
                .map(|triple| match triple {
                    [cursor, id, record] => Ok((
                        cursor.parse::<u64>().map_err(protocol)?,
                        parse_record(id.clone(), record)?,
                    )),
                    _ => Err(StoreError::Protocol("IM page reply".to_owned())),
                })
                .collect()
        })
        .await
    }

    async fn im_forget(&self, user: ImUser<'_>, id: &str, from: &str) -> Result<bool, StoreError> {
        let mut connection = self.connection.clone();
        let (queue, records) = queue_keys(user);
        observed("im_forget", async {
            let forgotten: u64 = self
                .im
                .forget
                .key(queue)
                .key(records)
                .arg(id)
                .arg(from)
                .invoke_async(&mut connection)
                .await?;
            Ok(forgotten == 1)
        })
        .await
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
    async fn messages_are_capped_in_number_and_age() {
        let (_server, store) = store().await;
        contract::messages_are_capped_in_number_and_age(&store).await;
    }

    #[tokio::test]
    async fn users_and_tenants_are_isolated() {
        let (_server, store) = store().await;
        contract::users_and_tenants_are_isolated(&store).await;
    }

    /// Each script stays in one slot of a Redis Cluster.
    #[tokio::test]
    async fn the_contract_holds_on_a_redis_cluster() {
        let cluster = RedisCluster::start(3).await;
        let store = RedisStore::connect(&cluster.url(), 90_000).await.unwrap();
        contract::messages_keep_their_order_and_forget_on_receipt(&store).await;
        contract::users_and_tenants_are_isolated(&store).await;
    }

    #[test]
    fn keys_carry_the_tenant_hash_tag() {
        let (queue, records) = queue_keys(ImUser {
            tenant: "acme",
            user: "bob",
        });
        assert_eq!(queue, "sb:{acme}:im:queue:bob");
        assert_eq!(records, "sb:{acme}:im:msg:bob");
        assert_eq!(session_key("acme", "s1"), "sb:{acme}:im:session:s1");
    }
}
