//! Every metric an edge exports, described and created at start, so
//! dashboards and alerts see zeros instead of missing series.

use metrics::{describe_counter, describe_gauge};

const DIALECTS: [&str; 3] = ["group", "group_v2", "iot"];
/// Close codes the edge sends itself.
const CLOSE_CODES: [&str; 9] = [
    "1000", "1001", "1002", "1003", "1006", "1007", "1008", "1009", "1013",
];

pub fn register() {
    switchboard_router::metrics::register_cluster();
    describe_gauge!("switchboard_edge_connections", "Open sockets, by dialect");
    describe_counter!(
        "switchboard_edge_connections_opened_total",
        "Sockets opened, by dialect"
    );
    describe_counter!(
        "switchboard_edge_messages_in_total",
        "Messages received from clients, by dialect"
    );
    describe_counter!(
        "switchboard_edge_messages_out_total",
        "Messages queued to clients"
    );
    describe_counter!(
        "switchboard_edge_deliveries_total",
        "Delivery frames received from routers"
    );
    describe_counter!(
        "switchboard_edge_slow_consumer_closes_total",
        "Sockets closed with 1013 for not keeping up"
    );
    describe_counter!(
        "switchboard_edge_closes_total",
        "Socket closes, by close code"
    );
    describe_counter!(
        "switchboard_edge_rejected_upgrades_total",
        "Upgrade requests refused, by HTTP status"
    );
    describe_counter!(
        "switchboard_edge_rate_limited_total",
        "Messages refused by the rate limit"
    );
    describe_gauge!(
        "switchboard_edge_router_links_up",
        "Routers this edge has a live session with"
    );
    describe_counter!(
        "switchboard_edge_ownership_moves_total",
        "Subscriptions moved to a new owning router"
    );
    describe_counter!(
        "switchboard_edge_replayed_subscriptions_total",
        "Subscriptions replayed to a (re)connected router"
    );
    describe_counter!(
        "switchboard_edge_request_timeouts_total",
        "Requests to routers that timed out"
    );
    describe_counter!(
        "switchboard_edge_im_logins_total",
        "IM login sessions opened"
    );

    for dialect in DIALECTS {
        metrics::gauge!("switchboard_edge_connections", "dialect" => dialect).increment(0.0);
        metrics::counter!("switchboard_edge_connections_opened_total", "dialect" => dialect)
            .absolute(0);
        metrics::counter!("switchboard_edge_messages_in_total", "dialect" => dialect).absolute(0);
        metrics::counter!("switchboard_edge_slow_consumer_closes_total", "dialect" => dialect)
            .absolute(0);
    }
    for code in CLOSE_CODES {
        metrics::counter!("switchboard_edge_closes_total", "code" => code).absolute(0);
    }
    for status in ["400", "401"] {
        metrics::counter!("switchboard_edge_rejected_upgrades_total", "status" => status)
            .absolute(0);
    }
    metrics::gauge!("switchboard_edge_router_links_up").increment(0.0);
    for name in [
        "switchboard_edge_messages_out_total",
        "switchboard_edge_deliveries_total",
        "switchboard_edge_rate_limited_total",
        "switchboard_edge_ownership_moves_total",
        "switchboard_edge_replayed_subscriptions_total",
        "switchboard_edge_request_timeouts_total",
        "switchboard_edge_im_logins_total",
    ] {
        metrics::counter!(name).absolute(0);
    }
}
