//! The cluster as every process sees it: which routers are alive, which
//! pool each serves, which pool each tenant maps to, and so which router
//! owns a topic.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use switchboard_proto::ownership::pick;

/// The pool routers serve, and tenants use, unless told otherwise.
pub const DEFAULT_POOL: &str = "default";

/// One live router, as announced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouterInfo {
    pub id: String,
    /// Address edges dial for gRPC.
    pub grpc_addr: String,
    /// Server API address (for operators and `/stats`).
    #[serde(default)]
    pub api_addr: String,
    pub pool: String,
    /// Start time in ms: a restarted router is a new member.
    pub epoch: u64,
}

/// The live routers, sorted by id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct View {
    pub routers: Vec<RouterInfo>,
}

impl View {
    pub fn new(mut routers: Vec<RouterInfo>) -> Self {
        routers.sort_by(|a, b| a.id.cmp(&b.id));
        routers.dedup_by(|a, b| a.id == b.id);
        Self { routers }
    }

    /// A view from a static list of gRPC addresses (`SWITCHBOARD_ROUTERS`):
    /// each address is its router's id, all in the default pool.
    pub fn from_addrs(addrs: &[String]) -> Self {
        Self::new(
            addrs
                .iter()
                .map(|addr| RouterInfo {
                    id: addr.clone(),
                    grpc_addr: addr.clone(),
                    api_addr: String::new(),
                    pool: DEFAULT_POOL.to_owned(),
                    epoch: 0,
                })
                .collect(),
        )
    }

    pub fn get(&self, id: &str) -> Option<&RouterInfo> {
        self.routers.iter().find(|r| r.id == id)
    }

    pub fn has_pool(&self, pool: &str) -> bool {
        self.routers.iter().any(|r| r.pool == pool)
    }

    /// The owner of a topic of `tenant` with hash `topic_hash`: rendezvous
    /// hashing over the live routers of the tenant's pool.
    pub fn owner(&self, pools: &TenantPools, tenant: &str, topic_hash: u64) -> Option<&RouterInfo> {
        let pool = pools.pool_of(tenant);
        let candidates = self.routers.iter().filter(|r| r.pool == pool);
        pick(candidates, |r| r.id.as_str(), topic_hash)
    }

    pub fn ids(&self) -> Vec<String> {
        self.routers.iter().map(|r| r.id.clone()).collect()
    }
}

/// Which pool serves which tenant (`SWITCHBOARD_TENANT_POOLS=tenant=pool,…`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TenantPools {
    pools: Arc<HashMap<String, String>>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("tenant pools: `{0}` is not tenant=pool")]
pub struct PoolsError(String);

impl TenantPools {
    pub fn parse(entries: &[String]) -> Result<Self, PoolsError> {
        let mut pools = HashMap::new();
        for entry in entries.iter().map(|e| e.trim()).filter(|e| !e.is_empty()) {
            let (tenant, pool) = entry
                .split_once('=')
                .map(|(t, p)| (t.trim(), p.trim()))
                .filter(|(t, p)| !t.is_empty() && !p.is_empty())
                .ok_or_else(|| PoolsError(entry.to_owned()))?;
            pools.insert(tenant.to_owned(), pool.to_owned());
        }
        Ok(Self {
            pools: Arc::new(pools),
        })
    }

    pub fn pool_of<'a>(&'a self, tenant: &str) -> &'a str {
        self.pools.get(tenant).map_or(DEFAULT_POOL, String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_proto::TopicKind;
    use switchboard_proto::ownership::topic_hash;

    fn router(id: &str, pool: &str) -> RouterInfo {
        RouterInfo {
            id: id.into(),
            grpc_addr: format!("{id}:1"),
            api_addr: String::new(),
            pool: pool.into(),
            epoch: 1,
        }
    }

    #[test]
    fn pools_parse() {
        let pools = TenantPools::parse(&["acme=vip".into(), " big = large ".into()]).unwrap();
        assert_eq!(pools.pool_of("acme"), "vip");
        assert_eq!(pools.pool_of("big"), "large");
        assert_eq!(pools.pool_of("other"), DEFAULT_POOL);
        assert!(TenantPools::parse(&["nopool".into()]).is_err());
        assert!(TenantPools::parse(&["=x".into()]).is_err());
    }

    #[test]
    fn owners_come_from_the_tenants_pool_only() {
        let view = View::new(vec![
            router("r1", "default"),
            router("r2", "default"),
            router("v1", "vip"),
        ]);
        let pools = TenantPools::parse(&["acme=vip".into()]).unwrap();
        for i in 0..200 {
            let h = topic_hash("acme", TopicKind::Group, &format!("g{i}"));
            assert_eq!(view.owner(&pools, "acme", h).unwrap().id, "v1");
            let h = topic_hash("other", TopicKind::Group, &format!("g{i}"));
            assert_ne!(view.owner(&pools, "other", h).unwrap().id, "v1");
        }
        let no_vip = View::new(vec![router("r1", "default")]);
        assert!(
            no_vip.owner(&pools, "acme", 1).is_none(),
            "no router of the pool: no owner"
        );
    }

    #[test]
    fn every_process_computes_the_same_owner() {
        let a = View::new(vec![
            router("r1", "default"),
            router("r2", "default"),
            router("r3", "default"),
        ]);
        let b = View::new(vec![
            router("r3", "default"),
            router("r1", "default"),
            router("r2", "default"),
        ]);
        let pools = TenantPools::default();
        for i in 0..500 {
            let h = topic_hash("t", TopicKind::Client, &format!("c{i}"));
            assert_eq!(
                a.owner(&pools, "t", h).unwrap().id,
                b.owner(&pools, "t", h).unwrap().id
            );
        }
    }

    #[test]
    fn static_view_uses_addresses_as_ids() {
        let view = View::from_addrs(&["b:2".into(), "a:1".into()]);
        assert_eq!(view.ids(), vec!["a:1", "b:2"]);
        assert!(view.has_pool(DEFAULT_POOL));
    }
}
