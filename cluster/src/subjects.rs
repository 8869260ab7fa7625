//! Every NATS subject Switchboard uses, named in one place, all under the
//! configured prefix (`SWITCHBOARD_SUBJECT_PREFIX`, default `switchboard`).
//!
//! Two trees, so NATS permissions can tell them apart:
//! - `{prefix}.internal.>`: the cluster's own plane (edge sessions,
//!   forwarded calls, membership, request/reply inboxes); only processes
//!   that hold the cluster secret publish there.
//! - `{prefix}.api.{tenant}.>`: the server API over NATS, the tenant one
//!   subject token, so a backend's NATS user can be confined to its tenant.

/// Frames an edge sends to a router over the NATS transport.
pub fn router_subject(prefix: &str, router_id: &str, edge_id: &str) -> String {
    format!("{prefix}.internal.r.{router_id}.{edge_id}")
}

/// What a router subscribes to for the frames of every edge.
pub fn router_inbound(prefix: &str, router_id: &str) -> String {
    router_subject(prefix, router_id, "*")
}

/// Frames a router sends back to an edge over the NATS transport.
pub fn edge_subject(prefix: &str, edge_id: &str, router_id: &str) -> String {
    format!("{prefix}.internal.e.{edge_id}.{router_id}")
}

/// Requests forwarded to the router that owns their topic (request/reply).
pub fn forward_subject(prefix: &str, router_id: &str) -> String {
    format!("{prefix}.internal.router.{router_id}.forward")
}

/// Routers' heartbeats: who is alive, where, in which pool.
pub fn announce_subject(prefix: &str) -> String {
    format!("{prefix}.internal.cluster.routers")
}

/// A router's goodbye, so watchers drop it at once.
pub fn leave_subject(prefix: &str) -> String {
    format!("{prefix}.internal.cluster.leave")
}

/// A new watcher's request that every router announce itself now.
pub fn probe_subject(prefix: &str) -> String {
    format!("{prefix}.internal.cluster.probe")
}

/// Where a Switchboard process gets its request/reply answers (forwarded
/// requests): inside the internal tree, which backends cannot subscribe,
/// rather than `_INBOX.>`, which they may.
pub fn inbox_prefix(prefix: &str) -> String {
    format!("{prefix}.internal.inbox")
}

/// The subject a backend of `tenant` publishes `subject` on.
pub fn api_subject(prefix: &str, tenant: &str, subject: ApiSubject) -> String {
    format!("{prefix}.api.{tenant}.{}", subject.suffix())
}

/// The server API's subjects, and what each is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiSubject {
    IotEvents,
    Notify,
    Stream,
    AppsPublish,
    GroupsMessages,
    ToolsCall,
    ImMessages,
}

impl ApiSubject {
    pub const ALL: [ApiSubject; 7] = [
        Self::IotEvents,
        Self::Notify,
        Self::Stream,
        Self::AppsPublish,
        Self::GroupsMessages,
        Self::ToolsCall,
        Self::ImMessages,
    ];

    /// What follows the tenant token; also the metric label.
    pub fn suffix(self) -> &'static str {
        match self {
            Self::IotEvents => "iot.events",
            Self::Notify => "notify",
            Self::Stream => "stream",
            Self::AppsPublish => "apps.publish",
            Self::GroupsMessages => "groups.messages",
            Self::ToolsCall => "tools.call",
            Self::ImMessages => "im.messages",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_subjects_stay_in_the_internal_tree() {
        let internal = [
            router_subject("sb", "r1", "e1"),
            router_inbound("sb", "r1"),
            edge_subject("sb", "e1", "r1"),
            forward_subject("sb", "r1"),
            announce_subject("sb"),
            leave_subject("sb"),
            probe_subject("sb"),
            inbox_prefix("sb"),
        ];
        for subject in &internal {
            assert!(subject.starts_with("sb.internal."), "{subject}");
        }
        assert_eq!(router_inbound("sb", "r1"), "sb.internal.r.r1.*");
    }

    #[test]
    fn api_subjects_carry_the_tenant_as_one_token() {
        for subject in ApiSubject::ALL {
            let full = api_subject("sb", "acme", subject);
            assert_eq!(full, format!("sb.api.acme.{}", subject.suffix()));
        }
    }
}
