//! Live connection counts for `/stats` and the dialect metric label.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use switchboard_proto::Dialect;

/// Live counts for `/stats`: every connection opened on this router, and
/// per tenant those whose tenant is known (an IM socket's once it
/// registered).
#[derive(Default)]
pub struct Stats {
    /// Connections per dialect, indexed by the proto enum value.
    connections: [AtomicI64; 8],
    /// Per tenant, the same. An entry is removed when its counts fall to
    /// zero, so the map holds no more tenants than there are connections.
    tenants: Mutex<HashMap<Arc<str>, [i64; 8]>>,
}

impl Stats {
    pub fn add(&self, dialect: Dialect, delta: i64) {
        if let Some(slot) = self.connections.get(dialect as usize) {
            slot.fetch_add(delta, Ordering::Relaxed);
        }
        metrics::gauge!("switchboard_router_connections", "dialect" => dialect_label(dialect))
            .increment(delta as f64);
    }

    /// Counts a connection of `tenant` (`delta` 1 when it is known, -1 when
    /// the connection goes).
    pub fn add_tenant(&self, tenant: &Arc<str>, dialect: Dialect, delta: i64) {
        let index = dialect as usize;
        if index >= 8 {
            return;
        }
        // Held for one map update, never across an await.
        let mut tenants = self.tenants.lock().unwrap_or_else(|e| e.into_inner());
        let counts = tenants.entry(tenant.clone()).or_default();
        counts[index] += delta;
        if counts.iter().all(|n| *n <= 0) {
            tenants.remove(tenant);
        }
    }

    pub fn connections(&self, dialect: Dialect) -> i64 {
        self.connections
            .get(dialect as usize)
            .map_or(0, |slot| slot.load(Ordering::Relaxed))
    }

    /// `tenant`'s connections of `dialect`.
    pub fn tenant_connections(&self, tenant: &str, dialect: Dialect) -> i64 {
        let tenants = self.tenants.lock().unwrap_or_else(|e| e.into_inner());
        tenants
            .get(tenant)
            .and_then(|counts| counts.get(dialect as usize).copied())
            .unwrap_or(0)
    }

    /// The tenants with connections here, sorted.
    pub fn tenants(&self) -> Vec<String> {
        let tenants = self.tenants.lock().unwrap_or_else(|e| e.into_inner());
        let mut names: Vec<String> = tenants.keys().map(|t| t.to_string()).collect();
        names.sort_unstable();
        names
    }
}

pub fn dialect_label(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Group => "group",
        Dialect::GroupV2 => "group_v2",
        Dialect::Jsonrpc => "jsonrpc",
        Dialect::Iot => "iot",
        Dialect::Im => "im",
        Dialect::Unspecified => "unknown",
    }
}
