//! `GET /api/v1/stats`: this router's connections per dialect.

use serde_json::{Value, json};
use switchboard_proto::Dialect;

use super::ApiContext;
use super::auth::Caller;
use crate::node::dialect_label;

/// The dialects `/stats` reports, in its order.
const STATS_DIALECTS: [Dialect; 5] = [
    Dialect::Group,
    Dialect::GroupV2,
    Dialect::Jsonrpc,
    Dialect::Iot,
    Dialect::Im,
];

/// `{"connections":{dialect: n,…},"total_connections":n}` from `count`.
fn connection_counts(count: impl Fn(Dialect) -> i64) -> Value {
    let mut connections = serde_json::Map::new();
    let mut total = 0;
    for dialect in STATS_DIALECTS {
        let n = count(dialect);
        total += n;
        connections.insert(dialect_label(dialect).to_owned(), json!(n));
    }
    json!({"connections": connections, "total_connections": total})
}

/// This router's connections: the caller's tenant's only, or, for the
/// operator, every tenant's plus the routers and edges of the cluster.
pub(super) fn stats(context: &ApiContext, caller: &Caller) -> Value {
    let stats = &context.node.stats;
    if !caller.operator {
        let mut body =
            connection_counts(|dialect| stats.tenant_connections(&caller.tenant, dialect));
        body["tenant"] = json!(caller.tenant);
        return body;
    }
    let mut tenants = serde_json::Map::new();
    for tenant in stats.tenants() {
        let counts = connection_counts(|dialect| stats.tenant_connections(&tenant, dialect));
        tenants.insert(tenant, counts);
    }
    // Everything opened here, including sockets not yet in a tenant (an
    // IM socket before it registers).
    let mut body = connection_counts(|dialect| stats.connections(dialect));
    body["router_id"] = json!(context.node.id());
    body["routers"] = json!((context.routers)());
    body["edges"] = json!(context.node.edges());
    body["tenants"] = Value::Object(tenants);
    body
}
