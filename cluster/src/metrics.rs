//! The metrics of the cluster machinery, shared by edges and routers:
//! membership, the edge↔router transport, NATS client events and refused
//! proofs. Described and created at start, so dashboards and alerts see
//! zeros instead of missing series before the first event.

use metrics::{describe_counter, describe_gauge};

use crate::trust::{REFUSAL_REASONS, REFUSAL_SERIES};

/// Metrics of the cluster machinery, shared by edges and routers.
pub fn register() {
    describe_gauge!(
        "switchboard_live_routers",
        "Routers in this process's membership view"
    );
    describe_counter!(
        "switchboard_membership_changes_total",
        "Changes of the membership view"
    );
    describe_gauge!(
        "switchboard_membership_frozen",
        "1 while this process's NATS connection is down and its router view is kept as it was"
    );
    describe_counter!(
        "switchboard_membership_errors_total",
        "Undecodable or unsendable membership messages"
    );
    describe_counter!(
        "switchboard_transport_errors_total",
        "Edge-router transport failures"
    );
    describe_counter!(
        "switchboard_transport_sessions_dropped_total",
        "NATS edge sessions dropped because their frame queue was full (the edge resets and replays)"
    );
    describe_counter!(
        "switchboard_membership_probes_ignored_total",
        "Membership probes ignored because an announcement went out moments before"
    );
    describe_counter!(
        "switchboard_nats_events_total",
        "NATS client events (disconnects, slow consumers, ...)"
    );
    describe_counter!(
        "switchboard_cluster_auth_refused_total",
        "Internal calls and messages refused for want of a valid proof of the cluster secret, \
         by plane, purpose and reason"
    );
    for (plane, purpose) in REFUSAL_SERIES {
        for reason in REFUSAL_REASONS {
            metrics::counter!("switchboard_cluster_auth_refused_total",
                "plane" => plane, "purpose" => purpose, "reason" => reason)
            .absolute(0);
        }
    }
    metrics::gauge!("switchboard_live_routers").increment(0.0);
    metrics::gauge!("switchboard_membership_frozen").set(0.0);
    metrics::counter!("switchboard_membership_changes_total").absolute(0);
    metrics::counter!("switchboard_membership_errors_total").absolute(0);
    for transport in ["edge", "nats"] {
        metrics::counter!("switchboard_transport_errors_total", "transport" => transport)
            .absolute(0);
    }
    metrics::counter!("switchboard_transport_sessions_dropped_total",
        "transport" => "nats", "reason" => "queue_full")
    .absolute(0);
    metrics::counter!("switchboard_membership_probes_ignored_total").absolute(0);
    for event in ["disconnected", "slow_consumer"] {
        metrics::counter!("switchboard_nats_events_total", "event" => event).absolute(0);
    }
}
