//! [`KvStore`] for Redis: plain strings with `PX` expiry, sets, and one
//! script for the atomic rebind.

use async_trait::async_trait;
use redis::Script;

use super::kv::KvStore;
use super::redis::observed;
use super::{RedisStore, StoreError};

/// KEYS[1] pointer; ARGV[1] new value, ARGV[2] member, ARGV[3] set-key
/// prefix, ARGV[4] set-key suffix. The set keys share the pointer's hash
/// tag (the tenant), so the script stays in one slot. Returns the old value.
const REBIND: &str = r"
local old = redis.call('GET', KEYS[1])
if old then redis.call('SREM', ARGV[3] .. old .. ARGV[4], ARGV[2]) end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('SADD', ARGV[3] .. ARGV[1] .. ARGV[4], ARGV[2])
return old
";

#[async_trait]
impl KvStore for RedisStore {
    async fn kv_get(&self, key: &str) -> Result<Option<String>, StoreError> {
        let mut connection = self.connection();
        observed("kv_get", async {
            Ok(redis::cmd("GET")
                .arg(key)
                .query_async(&mut connection)
                .await?)
        })
        .await
    }

    async fn kv_set(&self, key: &str, value: &str, ttl_ms: Option<u64>) -> Result<(), StoreError> {
        let mut connection = self.connection();
        observed("kv_set", async {
            let mut command = redis::cmd("SET");
            command.arg(key).arg(value);
            if let Some(ttl) = ttl_ms {
                command.arg("PX").arg(ttl.max(1));
            }
            let () = command.query_async(&mut connection).await?;
            Ok(())
        })
        .await
    }

    async fn kv_del(&self, key: &str) -> Result<bool, StoreError> {
        let mut connection = self.connection();
        observed("kv_del", async {
            let removed: u64 = redis::cmd("DEL")
                .arg(key)
                .query_async(&mut connection)
                .await?;
            Ok(removed > 0)
        })
        .await
    }

    async fn set_members(&self, key: &str) -> Result<Vec<String>, StoreError> {
        let mut connection = self.connection();
        observed("set_members", async {
            let mut members: Vec<String> = redis::cmd("SMEMBERS")
                .arg(key)
                .query_async(&mut connection)
                .await?;
            members.sort();
            Ok(members)
        })
        .await
    }

    async fn kv_rebind(
        &self,
        pointer: &str,
        value: &str,
        member: &str,
        set_prefix: &str,
        set_suffix: &str,
    ) -> Result<Option<String>, StoreError> {
        let mut connection = self.connection();
        observed("kv_rebind", async {
            Ok(Script::new(REBIND)
                .key(pointer)
                .arg(value)
                .arg(member)
                .arg(set_prefix)
                .arg(set_suffix)
                .invoke_async(&mut connection)
                .await?)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::super::kv::contract;
    use super::*;
    use switchboard_testkit::RedisServer;

    /// One private server for the whole contract: each case uses its own keys.
    #[tokio::test]
    async fn the_kv_contract_holds_on_redis() {
        let server = RedisServer::start().await;
        let store = RedisStore::connect(&server.url(), 90_000).await.unwrap();
        contract::values_set_get_delete(&store).await;
        contract::values_expire(&store).await;
        contract::rebind_moves_the_member(&store).await;
        contract::tenants_and_apps_are_isolated(&store).await;
    }

    #[tokio::test]
    async fn the_kv_contract_holds_on_a_redis_cluster() {
        let cluster = switchboard_testkit::redis::RedisCluster::start(3).await;
        let store = RedisStore::connect(&cluster.url(), 90_000).await.unwrap();
        contract::values_set_get_delete(&store).await;
        contract::rebind_moves_the_member(&store).await;
    }
}
