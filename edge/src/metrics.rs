//! Every metric an edge exports, described and created at start, so
//! dashboards and alerts see zeros instead of missing series.

use metrics::{describe_counter, describe_gauge};

const DIALECTS: [&str; 3] = ["group", "group_v2", "iot"];
/// Close codes the `code` label of `switchboard_edge_closes_total` names:
/// those the edge sends itself, 1006 (no close frame) and the standard
/// codes a client may send, whose close the edge echoes. Any other code
/// is counted as [`OTHER_CLOSE_CODE`], so a client cannot mint series.
const CLOSE_CODES: [(u16, &str); 11] = [
    (1000, "1000"),
    (1001, "1001"),
    (1002, "1002"),
    (1003, "1003"),
    (1006, "1006"),
    (1007, "1007"),
    (1008, "1008"),
    (1009, "1009"),
    (1011, "1011"),
    (1013, "1013"),
    (4401, "4401"),
];
/// The label of every close code not in [`CLOSE_CODES`].
pub const OTHER_CLOSE_CODE: &str = "other";

/// The `code` label for a close code: itself when known, else `other`.
pub fn close_code_label(code: u16) -> &'static str {
    CLOSE_CODES
        .iter()
        .find(|(known, _)| *known == code)
        .map_or(OTHER_CLOSE_CODE, |(_, label)| label)
}

pub fn register() {
    switchboard_cluster::metrics::register();
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
    describe_gauge!(
        "switchboard_edge_unauthenticated_sockets",
        "Sockets that have yet to authenticate (IM sockets before they register)"
    );
    describe_counter!(
        "switchboard_edge_unauthenticated_refused_total",
        "Sockets closed with 1008 because the unauthenticated-socket cap was reached"
    );
    describe_counter!(
        "switchboard_edge_im_backlog_windows_total",
        "Windows of kept IM messages asked for, each once the socket's queue drained"
    );
    describe_counter!(
        "switchboard_edge_im_backlog_retries_total",
        "Backlog windows asked for again after a router did not answer"
    );
    describe_counter!(
        "switchboard_edge_recoveries_total",
        "Streams a reconnecting socket asked to recover, by outcome"
    );
    describe_counter!(
        "switchboard_edge_replayed_messages_total",
        "Messages replayed from history to recovering sockets"
    );
    describe_counter!(
        "switchboard_edge_recovery_rounds_total",
        "History reads repeated because live messages overflowed a recovery's hold"
    );
    describe_counter!(
        "switchboard_edge_duplicates_dropped_total",
        "Deliveries dropped because the socket already had that position"
    );
    describe_counter!(
        "switchboard_edge_recovery_retries_total",
        "History reads of a recovery or catch-up asked again because the owner did not answer (ownership moving)"
    );
    describe_counter!(
        "switchboard_edge_publishes_kept_total",
        "Publishes to topics with history kept for a later send: no owner could take them yet"
    );
    describe_counter!(
        "switchboard_edge_publishes_resent_total",
        "Kept publishes sent again to their topic's owner (after a view change, a new session or a router's unavailable answer)"
    );
    describe_counter!(
        "switchboard_edge_gaps_total",
        "Deliveries that skipped offsets of a socket's stream, each starting a catch-up"
    );
    describe_counter!(
        "switchboard_edge_catch_ups_total",
        "Live sockets caught up from history, by cause (gap, moved)"
    );
    describe_counter!(
        "switchboard_edge_requests_refused_total",
        "Requests answered unavailable at once because the pending table was full"
    );
    describe_counter!(
        "switchboard_edge_presence_touches_lost_total",
        "Presence refreshes that found no router; the next one makes up for it"
    );
    for cause in ["gap", "moved"] {
        metrics::counter!("switchboard_edge_catch_ups_total", "cause" => cause).absolute(0);
    }
    metrics::counter!("switchboard_edge_requests_refused_total", "reason" => "too_many_pending")
        .absolute(0);
    for outcome in ["recovered", "lost", "ahead", "unavailable"] {
        metrics::counter!("switchboard_edge_recoveries_total", "outcome" => outcome).absolute(0);
    }

    for dialect in DIALECTS {
        metrics::gauge!("switchboard_edge_connections", "dialect" => dialect).increment(0.0);
        metrics::counter!("switchboard_edge_connections_opened_total", "dialect" => dialect)
            .absolute(0);
        metrics::counter!("switchboard_edge_messages_in_total", "dialect" => dialect).absolute(0);
        metrics::counter!("switchboard_edge_slow_consumer_closes_total", "dialect" => dialect)
            .absolute(0);
    }
    let labels = CLOSE_CODES.iter().map(|(_, label)| *label);
    for code in labels.chain([OTHER_CLOSE_CODE]) {
        metrics::counter!("switchboard_edge_closes_total", "code" => code).absolute(0);
    }
    for status in ["400", "401"] {
        metrics::counter!("switchboard_edge_rejected_upgrades_total", "status" => status)
            .absolute(0);
    }
    metrics::gauge!("switchboard_edge_router_links_up").increment(0.0);
    metrics::gauge!("switchboard_edge_unauthenticated_sockets").increment(0.0);
    for name in [
        "switchboard_edge_messages_out_total",
        "switchboard_edge_deliveries_total",
        "switchboard_edge_rate_limited_total",
        "switchboard_edge_ownership_moves_total",
        "switchboard_edge_replayed_subscriptions_total",
        "switchboard_edge_request_timeouts_total",
        "switchboard_edge_im_logins_total",
        "switchboard_edge_unauthenticated_refused_total",
        "switchboard_edge_im_backlog_windows_total",
        "switchboard_edge_im_backlog_retries_total",
        "switchboard_edge_replayed_messages_total",
        "switchboard_edge_recovery_rounds_total",
        "switchboard_edge_duplicates_dropped_total",
        "switchboard_edge_publishes_kept_total",
        "switchboard_edge_publishes_resent_total",
        "switchboard_edge_recovery_retries_total",
        "switchboard_edge_gaps_total",
        "switchboard_edge_presence_touches_lost_total",
    ] {
        metrics::counter!(name).absolute(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_code_labels_are_bounded() {
        for (code, label) in CLOSE_CODES {
            assert_eq!(label, code.to_string());
            assert_eq!(close_code_label(code), label);
        }
        let labels: std::collections::HashSet<&str> =
            (0..=u16::MAX).map(close_code_label).collect();
        assert_eq!(labels.len(), CLOSE_CODES.len() + 1, "{labels:?}");
        assert!(labels.contains(OTHER_CLOSE_CODE));
        assert_eq!(close_code_label(3000), OTHER_CLOSE_CODE);
        assert_eq!(close_code_label(4999), OTHER_CLOSE_CODE);
        assert_eq!(close_code_label(1005), OTHER_CLOSE_CODE);
    }
}
