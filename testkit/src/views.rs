//! Cluster views without processes: routers that exist only as entries,
//! for tests of ownership, rebalancing and link lifecycles.

use switchboard_cluster::{RouterInfo, View};

/// A router of the default pool named `id`, at `epoch`, that nobody dials.
pub fn router(id: &str, epoch: u64) -> RouterInfo {
    RouterInfo {
        id: id.to_owned(),
        grpc_addr: format!("{id}:1"),
        api_addr: String::new(),
        pool: "default".to_owned(),
        epoch,
    }
}

/// A view of the routers `ids`, each at epoch 1.
pub fn view_of(ids: &[&str]) -> View {
    View::new(ids.iter().map(|id| router(id, 1)).collect())
}

/// Three routers, `router-0` to `router-2`: the cluster most tests model.
pub fn three_routers() -> View {
    view_of(&["router-0", "router-1", "router-2"])
}
