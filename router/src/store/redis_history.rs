//! [`HistoryStore`] for Redis: per topic a hash (epoch, latest offset), a
//! list of kept messages and a hash of their publish ids, all under the
//! tenant's hash tag. One script per append numbers, keeps, trims and
//! moves the expiry in one step, so two routers (an old owner and a new
//! one, for a moment) can never hand out the same offset.

use std::sync::LazyLock;

use async_trait::async_trait;
use bytes::Bytes;
use redis::{Script, Value};

use super::history::{
    Append, Appended, HistoryLimits, HistoryRef, HistoryStore, Position, Since, new_epoch,
};
use super::keys;
use super::redis::observed;
use super::{RedisStore, StoreError};

/// KEYS[1] meta hash, KEYS[2] message list, KEYS[3] id hash; ARGV[1] an
/// epoch for a history that has none, ARGV[2] size, ARGV[3] ttl ms, then
/// per message its publish id ('' none) and its data. A list entry is
/// `<id length>:<id><message>`. Returns {epoch, then per message its
/// offset and 1 if it was a duplicate}.
const APPEND: &str = r"
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[1]
  redis.call('DEL', KEYS[2], KEYS[3])
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'top', 0)
end
local size = tonumber(ARGV[2])
local out = {epoch}
for i = 4, #ARGV, 2 do
  local id = ARGV[i]
  local seen = false
  if id ~= '' then seen = redis.call('HGET', KEYS[3], id) end
  if seen then
    out[#out + 1] = tonumber(seen)
    out[#out + 1] = 1
  else
    local top = redis.call('HINCRBY', KEYS[1], 'top', 1)
    redis.call('RPUSH', KEYS[2], string.len(id) .. ':' .. id .. ARGV[i + 1])
    if id ~= '' then redis.call('HSET', KEYS[3], id, top) end
    out[#out + 1] = top
    out[#out + 1] = 0
  end
end
local len = redis.call('LLEN', KEYS[2])
while len > size do
  local old = redis.call('LPOP', KEYS[2])
  local colon = string.find(old, ':', 1, true)
  local n = tonumber(string.sub(old, 1, colon - 1))
  if n > 0 then redis.call('HDEL', KEYS[3], string.sub(old, colon + 1, colon + n)) end
  len = len - 1
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
if redis.call('EXISTS', KEYS[3]) == 1 then redis.call('PEXPIRE', KEYS[3], ARGV[3]) end
return out
";

/// KEYS[1] meta hash, KEYS[2] message list; ARGV[1] an epoch for a
/// history that has none, ARGV[2] ttl ms for one created here, ARGV[3]
/// the asked epoch ('' to read the position only), ARGV[4] the asked
/// offset, ARGV[5] most messages. Returns {epoch, top, verdict,
/// entries…}; verdict 'recovered', 'lost' or 'ahead'.
const SINCE: &str = r"
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[1]
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'top', 0)
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
local top = tonumber(redis.call('HGET', KEYS[1], 'top'))
if ARGV[3] == '' then return {epoch, top, 'recovered'} end
if ARGV[3] ~= epoch then return {epoch, top, 'lost'} end
local since = tonumber(ARGV[4])
if since > top then return {epoch, top, 'ahead'} end
local len = redis.call('LLEN', KEYS[2])
local first = top - len + 1
if since + 1 < first then return {epoch, top, 'lost'} end
local from = since + 1 - first
local limit = tonumber(ARGV[5])
local out = {epoch, top, 'recovered'}
if limit > 0 and from < len then
  local entries = redis.call('LRANGE', KEYS[2], from, from + limit - 1)
  for i = 1, #entries do out[i + 3] = entries[i] end
end
return out
";

static APPEND_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(APPEND));
static SINCE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(SINCE));

fn protocol(what: &str) -> StoreError {
    StoreError::Protocol(format!("history: {what}"))
}

fn text(value: &Value) -> Result<String, StoreError> {
    match value {
        Value::BulkString(bytes) => Ok(String::from_utf8_lossy(bytes).into_owned()),
        Value::SimpleString(s) => Ok(s.clone()),
        _ => Err(protocol("expected a string")),
    }
}

fn number(value: &Value) -> Result<u64, StoreError> {
    match value {
        Value::Int(n) => u64::try_from(*n).map_err(|_| protocol("negative offset")),
        other => text(other)?
            .parse()
            .map_err(|_| protocol("expected a number")),
    }
}

/// A list entry without its `<id length>:<id>` prefix.
fn message(entry: &Value) -> Result<Bytes, StoreError> {
    let Value::BulkString(bytes) = entry else {
        return Err(protocol("expected an entry"));
    };
    let colon = bytes
        .iter()
        .position(|&b| b == b':')
        .ok_or_else(|| protocol("entry without an id length"))?;
    let id_len: usize = std::str::from_utf8(&bytes[..colon])
        .ok()
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| protocol("entry with a bad id length"))?;
    let start = colon + 1 + id_len;
    if start > bytes.len() {
        return Err(protocol("entry shorter than its id"));
    }
    Ok(Bytes::copy_from_slice(&bytes[start..]))
}

#[async_trait]
impl HistoryStore for RedisStore {
    async fn history_append_batch(
        &self,
        history: HistoryRef<'_>,
        messages: &[Append<'_>],
        limits: HistoryLimits,
        _now_ms: u64,
    ) -> Result<Vec<Appended>, StoreError> {
        if messages.is_empty() {
            return Ok(Vec::new());
        }
        let (tenant, stream) = (history.tenant, history.stream);
        let mut connection = self.connection();
        let mut invocation = APPEND_SCRIPT.key(keys::history_meta(tenant, stream));
        invocation
            .key(keys::history_messages(tenant, stream))
            .key(keys::history_ids(tenant, stream))
            .arg(new_epoch())
            .arg(limits.size.max(1))
            .arg(limits.ttl_ms.max(1));
        for message in messages {
            invocation
                .arg(message.publish_id.unwrap_or(""))
                .arg(message.data.as_ref());
        }
        let reply: Vec<Value> = observed("history_append", async {
            Ok(invocation.invoke_async(&mut connection).await?)
        })
        .await?;
        let [epoch, answers @ ..] = reply.as_slice() else {
            return Err(protocol("append answered the wrong shape"));
        };
        if answers.len() != messages.len() * 2 {
            return Err(protocol("append answered the wrong count"));
        }
        let epoch = text(epoch)?;
        answers
            .chunks_exact(2)
            .map(|answer| {
                let position = Position {
                    epoch: epoch.clone(),
                    offset: number(&answer[0])?,
                };
                Ok(if number(&answer[1])? == 1 {
                    Appended::Duplicate(position)
                } else {
                    Appended::New(position)
                })
            })
            .collect()
    }

    async fn history_since(
        &self,
        history: HistoryRef<'_>,
        since: Option<&Position>,
        limit: usize,
        limits: HistoryLimits,
        _now_ms: u64,
    ) -> Result<Since, StoreError> {
        let (tenant, stream) = (history.tenant, history.stream);
        let mut connection = self.connection();
        let mut invocation = SINCE_SCRIPT.key(keys::history_meta(tenant, stream));
        invocation
            .key(keys::history_messages(tenant, stream))
            .arg(new_epoch())
            .arg(limits.ttl_ms.max(1))
            .arg(since.map_or("", |p| p.epoch.as_str()))
            .arg(since.map_or(0, |p| p.offset))
            .arg(limit);
        let reply: Vec<Value> = observed("history_since", async {
            Ok(invocation.invoke_async(&mut connection).await?)
        })
        .await?;
        let [epoch, top, verdict, entries @ ..] = reply.as_slice() else {
            return Err(protocol("read answered the wrong shape"));
        };
        let (epoch, top) = (text(epoch)?, number(top)?);
        Ok(match text(verdict)?.as_str() {
            "recovered" => {
                let after = since.map_or(0, |p| p.offset);
                let messages = entries
                    .iter()
                    .zip(after + 1..)
                    .map(|(entry, offset)| Ok((offset, message(entry)?)))
                    .collect::<Result<_, StoreError>>()?;
                Since::Recovered {
                    epoch,
                    top,
                    messages,
                }
            }
            "lost" => Since::Lost { epoch, top },
            "ahead" => Since::Ahead { epoch, top },
            other => return Err(protocol(&format!("unknown verdict {other}"))),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::contract::TTL_MS;
    use super::super::history::contract;
    use super::*;
    use switchboard_testkit::RedisServer;
    use switchboard_testkit::redis::RedisCluster;

    async fn store() -> (RedisServer, RedisStore) {
        let server = RedisServer::start().await;
        let store = RedisStore::connect(&server.url(), TTL_MS).await.unwrap();
        (server, store)
    }

    #[tokio::test]
    async fn offsets_count_from_one_in_one_epoch() {
        let (_server, store) = store().await;
        contract::offsets_count_from_one_in_one_epoch(&store).await;
    }

    #[tokio::test]
    async fn a_position_without_history_starts_an_epoch() {
        let (_server, store) = store().await;
        contract::a_position_without_history_starts_an_epoch(&store).await;
    }

    #[tokio::test]
    async fn old_positions_and_other_epochs_are_lost() {
        let (_server, store) = store().await;
        contract::old_positions_and_other_epochs_are_lost(&store).await;
    }

    #[tokio::test]
    async fn a_publish_id_is_appended_once() {
        let (_server, store) = store().await;
        contract::a_publish_id_is_appended_once(&store).await;
    }

    #[tokio::test]
    async fn a_batch_appends_in_order() {
        let (_server, store) = store().await;
        contract::a_batch_appends_in_order(&store).await;
    }

    #[tokio::test]
    async fn tenants_and_streams_are_isolated() {
        let (_server, store) = store().await;
        contract::tenants_and_streams_are_isolated(&store).await;
    }

    #[tokio::test]
    async fn binary_messages_survive() {
        let (_server, store) = store().await;
        contract::binary_messages_survive(&store).await;
    }

    #[tokio::test]
    async fn a_history_expires_after_its_last_message() {
        let (_server, store) = store().await;
        contract::a_history_expires_after_its_last_message(&store).await;
    }

    /// Each script's keys share the tenant's slot: the contract holds on a
    /// three-node Redis Cluster.
    #[tokio::test]
    async fn the_history_contract_holds_on_a_redis_cluster() {
        let cluster = RedisCluster::start(3).await;
        let store = RedisStore::connect(&cluster.url(), TTL_MS).await.unwrap();
        contract::offsets_count_from_one_in_one_epoch(&store).await;
        contract::old_positions_and_other_epochs_are_lost(&store).await;
        contract::a_publish_id_is_appended_once(&store).await;
        contract::a_batch_appends_in_order(&store).await;
        contract::tenants_and_streams_are_isolated(&store).await;
    }

    /// A flushed store (lost history) gives the topic a new epoch: old
    /// positions are void, never silently reused.
    #[tokio::test]
    async fn a_flushed_store_starts_a_new_epoch() {
        let (server, store) = store().await;
        let h = HistoryRef {
            tenant: "t",
            stream: "group:g",
        };
        let limits = contract::LIMITS;
        let one = Append {
            publish_id: None,
            data: Bytes::from_static(b"x"),
        };
        let before = store
            .history_append(h, one.clone(), limits, 0)
            .await
            .unwrap();
        let mut admin = redis::Client::open(server.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let _: () = redis::cmd("FLUSHALL")
            .query_async(&mut admin)
            .await
            .unwrap();
        let after = store.history_append(h, one, limits, 0).await.unwrap();
        assert_eq!(after.position().offset, 1);
        assert_ne!(after.position().epoch, before.position().epoch);
    }
}
