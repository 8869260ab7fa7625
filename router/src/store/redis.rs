//! The Redis store. Every script touches keys of one tenant only, and each
//! key carries the tenant as a hash tag (`sb:{tenant}:…`), so every
//! multi-key operation stays in one slot and Redis Cluster works.
//!
//! Presence is one sorted set per (tenant, group): member → last refresh in
//! ms. Entries older than the TTL are expired; the key itself expires a
//! while after its last write so an abandoned group leaves nothing behind.

use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Script, Value};

use super::{GroupRef, PresenceChange, Store, StoreError};

/// Lua scripts, one place, each with its KEYS and ARGV.
mod scripts {
    /// KEYS[1] presence zset; ARGV[1] member, ARGV[2] now ms, ARGV[3] cutoff ms,
    /// ARGV[4] key ttl ms. Returns {changed 0|1, live count}.
    pub const REFRESH: &str = r"
local old = redis.call('ZSCORE', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
local changed = 0
if (not old) or tonumber(old) <= tonumber(ARGV[3]) then changed = 1 end
return {changed, redis.call('ZCOUNT', KEYS[1], '(' .. ARGV[3], '+inf')}
";

    /// KEYS[1] presence zset; ARGV[1] member, ARGV[2] cutoff ms.
    /// Returns {removed 0|1, live count}.
    pub const LEAVE: &str = r"
local removed = redis.call('ZREM', KEYS[1], ARGV[1])
return {removed, redis.call('ZCOUNT', KEYS[1], '(' .. ARGV[2], '+inf')}
";

    /// KEYS[1] presence zset; ARGV[1] cutoff ms.
    /// Returns {count left, expired members...}.
    pub const EXPIRE: &str = r"
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if #expired > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1]) end
local out = {redis.call('ZCARD', KEYS[1])}
for i = 1, #expired do out[i + 1] = expired[i] end
return out
";
}

/// A single server (reconnecting manager) or a Redis Cluster (slot-aware,
/// reconnecting); both are cheap to clone per operation.
#[derive(Clone)]
pub(super) enum Connection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

/// URL scheme for a Redis Cluster: `redis+cluster://host:port,host:port`.
pub const CLUSTER_SCHEME: &str = "redis+cluster://";

pub struct RedisStore {
    pub(super) connection: Connection,
    ttl_ms: u64,
    refresh: Script,
    leave: Script,
    expire: Script,
    pub(super) im: super::redis_im::ImScripts,
}

impl RedisStore {
    /// Connects to `url`: `redis://…` for one server, connected lazily so
    /// the router starts while Redis is down and reports not-ready until it
    /// answers; `redis+cluster://h1:p1,h2:p2` for a Redis Cluster, whose
    /// nodes must answer at start. Timeouts are explicit because the
    /// client's defaults (500 ms response, 1 s connect) are too tight for a
    /// loaded server and would surface as spurious errors.
    pub async fn connect(url: &str, presence_ttl_ms: u64) -> Result<Self, StoreError> {
        const TIMEOUT: Duration = Duration::from_secs(3);
        let connection = if let Some(nodes) = url.strip_prefix(CLUSTER_SCHEME) {
            let nodes: Vec<String> = nodes
                .split(',')
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(|n| format!("redis://{n}"))
                .collect();
            let client = ClusterClient::builder(nodes)
                .connection_timeout(TIMEOUT)
                .response_timeout(TIMEOUT)
                .build()?;
            Connection::Cluster(client.get_async_connection().await?)
        } else {
            let client = redis::Client::open(url)?;
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(TIMEOUT))
                .set_response_timeout(Some(TIMEOUT))
                .set_number_of_retries(3)
                .set_max_delay(Duration::from_secs(2));
            Connection::Single(ConnectionManager::new_lazy_with_config(client, config)?)
        };
        Ok(Self {
            connection,
            ttl_ms: presence_ttl_ms,
            refresh: Script::new(scripts::REFRESH),
            leave: Script::new(scripts::LEAVE),
            expire: Script::new(scripts::EXPIRE),
            im: Default::default(),
        })
    }

    /// A connection handle for one operation (cheap to clone).
    pub(super) fn connection(&self) -> impl ConnectionLike + Send + use<> {
        self.connection.clone()
    }

    fn presence_key(group: &GroupRef<'_>) -> String {
        super::keys::presence(group.tenant, group.group)
    }

    fn cutoff(&self, now_ms: u64) -> u64 {
        now_ms.saturating_sub(self.ttl_ms)
    }
}

fn change(reply: Vec<u64>) -> Result<PresenceChange, StoreError> {
    match reply.as_slice() {
        [changed, count] => Ok(PresenceChange {
            changed: *changed == 1,
            count: u32::try_from(*count).unwrap_or(u32::MAX),
        }),
        other => Err(StoreError::Protocol(format!("presence reply {other:?}"))),
    }
}

fn parse_error(e: impl std::fmt::Display) -> StoreError {
    StoreError::Protocol(e.to_string())
}

/// Runs one store operation, recording its latency and any error.
pub(super) async fn observed<T>(
    op: &'static str,
    operation: impl std::future::Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    let started = std::time::Instant::now();
    let result = operation.await;
    metrics::histogram!("switchboard_store_op_seconds", "op" => op)
        .record(started.elapsed().as_secs_f64());
    if result.is_err() {
        metrics::counter!("switchboard_store_errors_total", "op" => op).increment(1);
    }
    result
}

#[async_trait]
impl Store for RedisStore {
    async fn presence_refresh(
        &self,
        group: GroupRef<'_>,
        member: &str,
        now_ms: u64,
    ) -> Result<PresenceChange, StoreError> {
        let mut connection = self.connection.clone();
        observed("presence_refresh", async {
            let reply: Vec<u64> = self
                .refresh
                .key(Self::presence_key(&group))
                .arg(member)
                .arg(now_ms)
                .arg(self.cutoff(now_ms))
                .arg(self.ttl_ms * 2)
                .invoke_async(&mut connection)
                .await?;
            change(reply)
        })
        .await
    }

    async fn presence_leave(
        &self,
        group: GroupRef<'_>,
        member: &str,
        now_ms: u64,
    ) -> Result<PresenceChange, StoreError> {
        let mut connection = self.connection.clone();
        observed("presence_leave", async {
            let reply: Vec<u64> = self
                .leave
                .key(Self::presence_key(&group))
                .arg(member)
                .arg(self.cutoff(now_ms))
                .invoke_async(&mut connection)
                .await?;
            change(reply)
        })
        .await
    }

    async fn presence_expire(
        &self,
        group: GroupRef<'_>,
        now_ms: u64,
    ) -> Result<(Vec<String>, u32), StoreError> {
        let mut connection = self.connection.clone();
        observed("presence_expire", async {
            let reply: Vec<redis::Value> = self
                .expire
                .key(Self::presence_key(&group))
                .arg(self.cutoff(now_ms))
                .invoke_async(&mut connection)
                .await?;
            let mut items = reply.into_iter();
            let left: u64 = match items.next() {
                Some(v) => redis::from_redis_value(v).map_err(parse_error)?,
                None => return Err(StoreError::Protocol("empty expire reply".to_owned())),
            };
            let mut expired = items
                .map(redis::from_redis_value::<String>)
                .collect::<Result<Vec<_>, _>>()
                .map_err(parse_error)?;
            expired.sort();
            Ok((expired, u32::try_from(left).unwrap_or(u32::MAX)))
        })
        .await
    }

    async fn presence_members(
        &self,
        group: GroupRef<'_>,
        now_ms: u64,
    ) -> Result<Vec<String>, StoreError> {
        let mut connection = self.connection.clone();
        observed("presence_members", async {
            let mut members: Vec<String> = redis::cmd("ZRANGEBYSCORE")
                .arg(Self::presence_key(&group))
                .arg(format!("({}", self.cutoff(now_ms)))
                .arg("+inf")
                .query_async(&mut connection)
                .await?;
            members.sort();
            Ok(members)
        })
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let mut connection = self.connection.clone();
        let _: String = redis::cmd("PING").query_async(&mut connection).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::contract;
    use super::*;
    use switchboard_testkit::RedisServer;
    use switchboard_testkit::redis::RedisCluster;

    async fn store() -> (RedisServer, RedisStore) {
        let server = RedisServer::start().await;
        let store = RedisStore::connect(&server.url(), contract::TTL_MS)
            .await
            .unwrap();
        (server, store)
    }

    /// The same contract against a three-node Redis Cluster: every script
    /// touches one slot, thanks to the tenant hash tag.
    #[tokio::test]
    async fn the_contract_holds_on_a_redis_cluster() {
        let cluster = RedisCluster::start(3).await;
        let store = RedisStore::connect(&cluster.url(), contract::TTL_MS)
            .await
            .unwrap();
        store.ping().await.unwrap();
        contract::presence_join_leave_and_count(&store).await;
        contract::presence_expires_after_ttl(&store).await;
        contract::tenants_are_isolated(&store).await;
    }

    #[tokio::test]
    async fn presence_join_leave_and_count() {
        let (_server, store) = store().await;
        contract::presence_join_leave_and_count(&store).await;
    }

    #[tokio::test]
    async fn presence_expires_after_ttl() {
        let (_server, store) = store().await;
        contract::presence_expires_after_ttl(&store).await;
    }

    #[tokio::test]
    async fn tenants_are_isolated() {
        let (_server, store) = store().await;
        contract::tenants_are_isolated(&store).await;
    }

    #[tokio::test]
    async fn keys_carry_the_tenant_hash_tag() {
        let key = RedisStore::presence_key(&GroupRef {
            tenant: "acme",
            group: "g1",
        });
        assert_eq!(key, "sb:{acme}:presence:g1");
    }
}
