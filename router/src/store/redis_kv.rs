//! [`KvStore`] for Redis: plain strings with `PX` expiry, sets, and one
//! script for the atomic rebind.

use std::sync::LazyLock;

use async_trait::async_trait;
use redis::Script;

use super::keys::LUA_PART;
use super::kv::{ConvBind, ConvBound, KvStore};
use super::redis::observed;
use super::{RedisStore, StoreError};

/// KEYS[1] pointer; ARGV[1] new value, ARGV[2] member, ARGV[3] set-key
/// prefix, ARGV[4] set-key suffix. The set keys share the pointer's hash
/// tag (the tenant), so the script stays in one slot. Returns the old value.
const REBIND: &str = r"
local old = redis.call('GET', KEYS[1])
if old then redis.call('SREM', ARGV[3] .. part(old) .. ARGV[4], ARGV[2]) end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('SADD', ARGV[3] .. part(ARGV[1]) .. ARGV[4], ARGV[2])
return old
";

/// KEYS[1] pointer; ARGV[1] member, ARGV[2] set-key prefix, ARGV[3]
/// set-key suffix. Returns the old value.
const UNBIND: &str = r"
local old = redis.call('GET', KEYS[1])
if old then redis.call('SREM', ARGV[2] .. part(old) .. ARGV[3], ARGV[1]) end
redis.call('DEL', KEYS[1])
return old
";

/// KEYS[1] conversation owner, KEYS[2] the user's last conversation,
/// KEYS[3] the device's conversation, KEYS[4] the device's owner (a key
/// not used is passed as KEYS[1], so every key stays in the tenant's slot);
/// ARGV[1] conversation, ARGV[2] user, ARGV[3] '1': set KEYS[2],
/// ARGV[4] '1': rebind the device, ARGV[5] '1': KEYS[4] must hold the
/// user, ARGV[6] device (set member), ARGV[7]/ARGV[8] set-key prefix and
/// suffix. Returns {'bound'}, {'owned', owner} or {'device'}.
const CONV_BIND: &str = r"
local conv, user = ARGV[1], ARGV[2]
if ARGV[5] == '1' and redis.call('GET', KEYS[4]) ~= user then return {'device'} end
local owner = redis.call('GET', KEYS[1])
if owner and owner ~= user then return {'owned', owner} end
if not owner then redis.call('SET', KEYS[1], user) end
if ARGV[3] == '1' then redis.call('SET', KEYS[2], conv) end
if ARGV[4] == '1' then
  local old = redis.call('GET', KEYS[3])
  if old then redis.call('SREM', ARGV[7] .. part(old) .. ARGV[8], ARGV[6]) end
  redis.call('SET', KEYS[3], conv)
  redis.call('SADD', ARGV[7] .. part(conv) .. ARGV[8], ARGV[6])
end
return {'bound'}
";

/// A script with the key-part escape it needs in front.
fn with_part(body: &str) -> Script {
    Script::new(&format!("{LUA_PART}{body}"))
}

static REBIND_SCRIPT: LazyLock<Script> = LazyLock::new(|| with_part(REBIND));
static UNBIND_SCRIPT: LazyLock<Script> = LazyLock::new(|| with_part(UNBIND));
static CONV_BIND_SCRIPT: LazyLock<Script> = LazyLock::new(|| with_part(CONV_BIND));

fn flag(on: bool) -> &'static str {
    if on { "1" } else { "0" }
}

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
            Ok(REBIND_SCRIPT
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

    async fn kv_unbind(
        &self,
        pointer: &str,
        member: &str,
        set_prefix: &str,
        set_suffix: &str,
    ) -> Result<Option<String>, StoreError> {
        let mut connection = self.connection();
        observed("kv_unbind", async {
            Ok(UNBIND_SCRIPT
                .key(pointer)
                .arg(member)
                .arg(set_prefix)
                .arg(set_suffix)
                .invoke_async(&mut connection)
                .await?)
        })
        .await
    }

    async fn conv_bind(&self, bind: &ConvBind<'_>) -> Result<ConvBound, StoreError> {
        let mut connection = self.connection();
        let device = bind.device.as_ref();
        let owned_by = device.and_then(|d| d.owned_by);
        let mut invocation = CONV_BIND_SCRIPT.key(bind.owner_key);
        invocation
            .key(bind.last.unwrap_or(bind.owner_key))
            .key(device.map_or(bind.owner_key, |d| d.pointer))
            .key(owned_by.unwrap_or(bind.owner_key))
            .arg(bind.conv)
            .arg(bind.user)
            .arg(flag(bind.last.is_some()))
            .arg(flag(device.is_some()))
            .arg(flag(owned_by.is_some()))
            .arg(device.map_or("", |d| d.member))
            .arg(device.map_or("", |d| d.set_prefix))
            .arg(device.map_or("", |d| d.set_suffix));
        observed("conv_bind", async {
            let reply: Vec<String> = invocation.invoke_async(&mut connection).await?;
            match reply.as_slice() {
                [bound] if bound == "bound" => Ok(ConvBound::Bound),
                [device] if device == "device" => Ok(ConvBound::DeviceNotOwned),
                [owned, owner] if owned == "owned" => Ok(ConvBound::OwnedBy(owner.clone())),
                other => Err(StoreError::Protocol(format!("conv_bind reply {other:?}"))),
            }
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
        contract::colliding_apps_are_isolated(&store).await;
        contract::conversations_have_one_owner(&store).await;
        contract::device_bindings_follow_ownership(&store).await;
    }

    #[tokio::test]
    async fn the_kv_contract_holds_on_a_redis_cluster() {
        let cluster = switchboard_testkit::redis::RedisCluster::start(3).await;
        let store = RedisStore::connect(&cluster.url(), 90_000).await.unwrap();
        contract::values_set_get_delete(&store).await;
        contract::rebind_moves_the_member(&store).await;
        contract::colliding_apps_are_isolated(&store).await;
        contract::conversations_have_one_owner(&store).await;
        contract::device_bindings_follow_ownership(&store).await;
    }
}
