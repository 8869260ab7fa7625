//! Every metric a router exports, described and created at start, so
//! dashboards and alerts see zeros instead of missing series before the
//! first event.

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};

/// Label values that exist from the start.
const DIALECTS: [&str; 5] = ["group", "group_v2", "jsonrpc", "iot", "im"];
const TOPIC_KINDS: [&str; 10] = [
    "TOPIC_KIND_GROUP",
    "TOPIC_KIND_CLIENT",
    "TOPIC_KIND_TENANT",
    "TOPIC_KIND_IOT",
    "TOPIC_KIND_USER",
    "TOPIC_KIND_CONV",
    "TOPIC_KIND_DEVICE",
    "TOPIC_KIND_APP_CHANNEL",
    "TOPIC_KIND_TOOL",
    "TOPIC_KIND_APP",
];
const STORE_OPS: [&str; 14] = [
    "presence_refresh",
    "presence_leave",
    "presence_expire",
    "presence_members",
    "kv_get",
    "kv_set",
    "kv_del",
    "set_members",
    "kv_rebind",
    "im_session_create",
    "im_session_get",
    "im_keep",
    "im_kept",
    "im_forget",
];

/// The cluster machinery's metrics (membership, transport, NATS, refused
/// proofs), which edges register too.
pub use switchboard_cluster::metrics::register as register_cluster;

/// Describes and creates the router's metrics.
pub fn register() {
    register_cluster();
    crate::im::register_metrics();
    describe_gauge!("switchboard_router_edges", "Edges attached to this router");
    describe_gauge!(
        "switchboard_router_connections",
        "Connections known to this router, by dialect"
    );
    describe_counter!(
        "switchboard_router_history_refused_total",
        "Publishes to topics with history refused unappended, by reason (queue_full, store)"
    );
    for reason in ["queue_full", "store"] {
        metrics::counter!("switchboard_router_history_refused_total", "reason" => reason)
            .absolute(0);
    }
    describe_counter!(
        "switchboard_router_history_duplicates_total",
        "Publishes whose id the history held already: answered, not appended or delivered"
    );
    metrics::counter!("switchboard_router_history_duplicates_total").absolute(0);
    describe_counter!(
        "switchboard_router_history_evicted_total",
        "In-memory histories dropped to stay within the history byte budget"
    );
    metrics::counter!("switchboard_router_history_evicted_total").absolute(0);
    describe_histogram!(
        "switchboard_router_history_batch_size",
        "Publishes one history writer batch appended"
    );
    describe_counter!(
        "switchboard_router_publishes_total",
        "Publishes fanned out, by topic kind"
    );
    describe_counter!(
        "switchboard_router_deliveries_total",
        "Delivery frames sent to edges (one per edge per message)"
    );
    describe_counter!(
        "switchboard_router_delivered_sockets_total",
        "Sockets deliveries were handed to"
    );
    describe_histogram!(
        "switchboard_router_fanout_size",
        Unit::Count,
        "Sockets per delivery frame"
    );
    describe_counter!(
        "switchboard_router_edge_queue_full_total",
        "Deliveries dropped because an edge's queue was full"
    );
    describe_counter!(
        "switchboard_router_presence_jobs_dropped_total",
        "Presence store jobs dropped on a full shard queue (the shard resyncs its members once the queue has room), by job"
    );
    for job in ["refresh", "leave", "query"] {
        metrics::counter!("switchboard_router_presence_jobs_dropped_total", "job" => job)
            .absolute(0);
    }
    describe_counter!(
        "switchboard_router_tool_progress_dropped_total",
        "Tool-call progress notes dropped because the caller (HTTP body, NATS reply) was not reading"
    );
    metrics::counter!("switchboard_router_tool_progress_dropped_total").absolute(0);
    describe_counter!(
        "switchboard_router_edge_sessions_refused_total",
        "Edge sessions refused because another session holds the edge id"
    );
    describe_counter!(
        "switchboard_router_forwarded_total",
        "Requests forwarded to the owning router"
    );
    describe_counter!(
        "switchboard_router_forward_errors_total",
        "Forwarded requests that failed"
    );
    describe_counter!(
        "switchboard_router_presence_expired_total",
        "Presence entries expired by the sweep"
    );
    describe_counter!(
        "switchboard_router_out_of_order_frames_total",
        "Frames for connections the router does not know"
    );
    describe_histogram!(
        "switchboard_store_op_seconds",
        Unit::Seconds,
        "Store operation latency"
    );
    describe_counter!(
        "switchboard_store_errors_total",
        "Store operations that failed"
    );
    describe_counter!(
        "switchboard_api_requests_total",
        "Server API requests, by route and status"
    );
    describe_histogram!(
        "switchboard_api_request_seconds",
        Unit::Seconds,
        "Server API latency"
    );
    describe_counter!(
        "switchboard_api_nats_rejected_total",
        "NATS API messages refused, by subject (without the tenant) and error code; `forbidden` is a body tenant other than the subject's (under subject `reply`: a reply subject in the gateway's own trees, never answered); `unavailable` is a router at its in-flight bound"
    );
    describe_counter!(
        "switchboard_router_tool_calls_total",
        "Tool calls handed to a tool socket"
    );
    describe_counter!(
        "switchboard_router_tool_timeouts_total",
        "Tool calls that got no answer in time"
    );
    describe_counter!(
        "switchboard_router_stream_gaps_total",
        "Stream chunks given up on after waiting for them"
    );

    metrics::gauge!("switchboard_router_edges").increment(0.0);
    for dialect in DIALECTS {
        metrics::gauge!("switchboard_router_connections", "dialect" => dialect).increment(0.0);
    }
    for kind in TOPIC_KINDS {
        metrics::counter!("switchboard_router_publishes_total", "kind" => kind).absolute(0);
    }
    for name in [
        "switchboard_router_deliveries_total",
        "switchboard_router_delivered_sockets_total",
        "switchboard_router_edge_queue_full_total",
        "switchboard_router_edge_sessions_refused_total",
        "switchboard_router_forwarded_total",
        "switchboard_router_forward_errors_total",
        "switchboard_router_presence_expired_total",
        "switchboard_router_tool_calls_total",
        "switchboard_router_tool_timeouts_total",
        "switchboard_router_stream_gaps_total",
    ] {
        metrics::counter!(name).absolute(0);
    }
    for op in STORE_OPS {
        metrics::counter!("switchboard_store_errors_total", "op" => op).absolute(0);
    }
    for subject in crate::nats_api::Subject::ALL {
        for code in ["validation_error", "forbidden"] {
            metrics::counter!("switchboard_api_nats_rejected_total",
                "subject" => subject.suffix(), "code" => code)
            .absolute(0);
        }
    }
}
