//! Router membership over plain NATS subjects (no JetStream: Debian's
//! nats-server 2.9 lacks per-key TTLs). Each router announces itself every
//! [`HEARTBEAT`]; watchers drop a router not heard from for [`EXPIRY`], or
//! at once when it says goodbye. A new watcher sends a probe so it learns
//! the whole set without waiting for the next heartbeat. While a watcher's
//! own NATS connection is down it keeps its last view instead of expiring
//! everyone.
//!
//! Announcements and goodbyes carry a proof of the cluster secret by the
//! router they name, bound to the message; watchers ignore (and count) any
//! other, so a stranger on NATS cannot add a router or remove one.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use switchboard_common::trust::Purpose;

use crate::subjects::{announce_subject, leave_subject, probe_subject};
use crate::trust::{Gate, PEER_MISMATCH, Plane, refused};
use crate::view::{RouterInfo, View};

pub const HEARTBEAT: Duration = Duration::from_millis(500);
pub const EXPIRY: Duration = Duration::from_millis(2_000);
/// Shortest time between two announcements, however many probes come.
const PROBE_GAP: Duration = Duration::from_millis(100);

/// Announces `me` until `stop`, then says goodbye.
pub async fn announce(
    client: async_nats::Client,
    prefix: String,
    me: RouterInfo,
    gate: std::sync::Arc<Gate>,
    stop: CancellationToken,
) {
    let payload = match serde_json::to_vec(&me) {
        Ok(bytes) => bytes::Bytes::from(bytes),
        Err(_) => return,
    };
    let mut probes = match client.subscribe(probe_subject(&prefix)).await {
        Ok(probes) => Some(probes),
        Err(e) => {
            tracing::warn!(error = %e, "membership probe subscription failed");
            None
        }
    };
    let mut tick = tokio::time::interval(HEARTBEAT);
    let mut last_sent: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            Some(_) = async { match probes.as_mut() { Some(p) => p.next().await, None => None } } => {
                // Probes are unproven (a new watcher knows nothing yet): a
                // flood of them gets at most one extra announcement per
                // gap, not one each.
                if last_sent.is_some_and(|at| at.elapsed() < PROBE_GAP) {
                    metrics::counter!("switchboard_membership_probes_ignored_total").increment(1);
                    continue;
                }
            }
            () = stop.cancelled() => break,
        }
        last_sent = Some(Instant::now());
        // A fresh proof each time: watchers admit every proof once.
        let headers = gate.message_headers(Purpose::Announce, &me.id, &payload);
        if client
            .publish_with_headers(announce_subject(&prefix), headers, payload.clone())
            .await
            .is_err()
        {
            metrics::counter!("switchboard_membership_errors_total").increment(1);
        }
    }
    let goodbye = bytes::Bytes::from(me.id.clone());
    let headers = gate.message_headers(Purpose::Announce, &me.id, &goodbye);
    let _ = client
        .publish_with_headers(leave_subject(&prefix), headers, goodbye)
        .await;
    let _ = client.flush().await;
}

/// Watches the announcements and keeps the live view.
pub async fn watch(
    client: async_nats::Client,
    prefix: String,
    gate: std::sync::Arc<Gate>,
    stop: CancellationToken,
) -> Result<watch::Receiver<View>, async_nats::SubscribeError> {
    let mut announcements = client.subscribe(announce_subject(&prefix)).await?;
    let mut leaves = client.subscribe(leave_subject(&prefix)).await?;
    let (tx, rx) = watch::channel(View::default());
    let _ = client
        .publish(probe_subject(&prefix), bytes::Bytes::new())
        .await;
    tokio::spawn(async move {
        let mut live: HashMap<String, (RouterInfo, Instant)> = HashMap::new();
        // While this process cannot hear NATS, silence says nothing about
        // routers: the view stays as it was (a bus outage must not become
        // a full outage) and expiry resumes once NATS is back.
        let mut deaf = false;
        let mut tick = tokio::time::interval(HEARTBEAT / 2);
        loop {
            tokio::select! {
                Some(message) = announcements.next() => {
                    let Some(proven) = proven_by(&gate, &message) else { continue };
                    match serde_json::from_slice::<RouterInfo>(&message.payload) {
                        Ok(info) if proven.is_some_and(|p| p != info.id) => {
                            refused(Plane::Nats, Purpose::Announce, PEER_MISMATCH);
                            continue;
                        }
                        Ok(info) => { live.insert(info.id.clone(), (info, Instant::now())); }
                        Err(_) => metrics::counter!("switchboard_membership_errors_total").increment(1),
                    }
                }
                Some(message) = leaves.next() => {
                    let Some(proven) = proven_by(&gate, &message) else { continue };
                    let id = String::from_utf8_lossy(&message.payload).into_owned();
                    if proven.is_some_and(|p| p != id) {
                        refused(Plane::Nats, Purpose::Announce, PEER_MISMATCH);
                        continue;
                    }
                    live.remove(&id);
                }
                _ = tick.tick() => {
                    let connected = matches!(
                        client.connection_state(),
                        async_nats::connection::State::Connected
                    );
                    match (deaf, connected) {
                        (false, false) => {
                            deaf = true;
                            metrics::gauge!("switchboard_membership_frozen").set(1.0);
                            tracing::warn!(
                                routers = live.len(),
                                "NATS connection lost: keeping the last router view until it returns"
                            );
                        }
                        (true, true) => {
                            deaf = false;
                            metrics::gauge!("switchboard_membership_frozen").set(0.0);
                            // Every router gets a full window to be heard
                            // again; a probe asks them to speak now.
                            let now = Instant::now();
                            for (_, seen) in live.values_mut() {
                                *seen = now;
                            }
                            let _ = client
                                .publish(probe_subject(&prefix), bytes::Bytes::new())
                                .await;
                            tracing::info!("NATS connection back: router view resumes");
                        }
                        _ => {}
                    }
                    if !deaf {
                        live.retain(|_, (_, seen)| seen.elapsed() < EXPIRY);
                    }
                }
                () = stop.cancelled() => return,
            }
            let view = View::new(live.values().map(|(info, _)| info.clone()).collect());
            tx.send_if_modified(|current| {
                if *current == view {
                    return false;
                }
                let joined = view
                    .routers
                    .iter()
                    .filter(|r| !current.routers.contains(r))
                    .count();
                let left = current
                    .routers
                    .iter()
                    .filter(|r| !view.routers.contains(r))
                    .count();
                tracing::info!(routers = ?view.ids(), joined, left, "router membership changed");
                metrics::counter!("switchboard_membership_changes_total").increment(1);
                metrics::gauge!("switchboard_live_routers").set(view.routers.len() as f64);
                *current = view;
                true
            });
        }
    });
    Ok(rx)
}

/// `Some(peer)`: the message proves the secret by `peer` (`Some(None)`
/// with no secret configured); `None`: refused, and counted.
fn proven_by(gate: &Gate, message: &async_nats::Message) -> Option<Option<String>> {
    let proven = gate
        .admit_message(
            Purpose::Announce,
            message.headers.as_ref(),
            &message.payload,
        )
        .ok()?;
    Some(proven.filter(|_| gate.requires_proofs()))
}

/// A view that never changes (`SWITCHBOARD_ROUTERS`): its sender is gone,
/// so watchers see the view and then the end of changes.
pub fn fixed(view: View) -> watch::Receiver<View> {
    metrics::gauge!("switchboard_live_routers").set(view.routers.len() as f64);
    watch::channel(view).1
}
