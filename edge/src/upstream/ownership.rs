//! Which router owns a topic: rendezvous hashing over the live routers of
//! the tenant's pool, in the membership view this edge applied last. Every
//! edge and router computes the same owner from the same view, which is
//! why the edge can send a frame straight to the owner.

use std::sync::{Arc, RwLock};

use switchboard_cluster::{TenantPools, View};
use switchboard_proto::Topic;

use crate::outbound::Subscription;

/// The current view and the tenants' pools.
pub(super) struct Ownership {
    pools: TenantPools,
    /// Replaced whole on each view change; each lookup holds the lock for
    /// that lookup only.
    view: RwLock<View>,
}

impl Ownership {
    pub(super) fn new(pools: TenantPools) -> Self {
        Self {
            pools,
            view: RwLock::default(),
        }
    }

    pub(super) fn set(&self, view: View) {
        *self.view.write().unwrap_or_else(|e| e.into_inner()) = view;
    }

    /// The id of the router that owns `topic`; `None` while no router of
    /// its tenant's pool is live.
    pub(super) fn owner_id(&self, topic: &Topic) -> Option<String> {
        let view = self.view.read().unwrap_or_else(|e| e.into_inner());
        view.owner(&self.pools, &topic.tenant, topic.stable_hash())
            .map(|router| router.id.clone())
    }

    /// The owner of each of `subs`, in order, from one look at the view.
    pub(super) fn owner_ids(&self, subs: &[Subscription]) -> Vec<Option<Arc<str>>> {
        let view = self.view.read().unwrap_or_else(|e| e.into_inner());
        subs.iter()
            .map(|sub| {
                view.owner(&self.pools, &sub.topic.tenant, sub.topic.stable_hash())
                    .map(|r| Arc::from(r.id.as_str()))
            })
            .collect()
    }
}
