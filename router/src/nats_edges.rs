//! The NATS transport, router side: one session per edge that proved the
//! cluster secret in its `Hello` (the protocol is
//! `switchboard_cluster::nats_session`). A session ends when its edge has
//! been silent for [`SESSION_EXPIRY`], which drops its connections like a
//! closed gRPC stream. A frame that does not open under the session key is
//! dropped and counted, and does not keep the session alive. A session
//! whose queue is full is dropped rather than stalling every other edge's
//! frames; the edge starts over and replays. The router answers a proven
//! `Hello` with a verdict for that nonce: attached, or refused while another
//! session holds the id. A refused edge stays silent and retries, so a
//! session whose edge really died expires and the id is free again.
//!
//! Forwarded requests from other routers arrive here too (request/reply on
//! this router's forward subject).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use prost::Message;
use switchboard_proto::{EdgeFrame, Reset, RouterFrame, edge_frame, router_frame};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use switchboard_cluster::nats_session::{
    ATTACHED, REFUSED, SESSION_EXPIRY, SESSION_HEADER, hello_binding, is_session_nonce, open_frame,
    publish, verdict_headers,
};
use switchboard_cluster::subjects::{edge_subject, forward_subject, router_inbound};
use switchboard_common::trust::Purpose;
use switchboard_common::trust::session::{Direction, Opener, Sealer, SessionKey};

use crate::node::RouterNode;
use crate::trust::{Gate, PEER_MISMATCH, Plane, forward_binding, refused};

struct EdgeSession {
    frames: mpsc::Sender<EdgeFrame>,
    last_seen: Instant,
    /// Checks each frame's MAC; `None` without a cluster secret.
    opener: Option<Opener>,
}

/// Serves edges over NATS until `stop`.
pub async fn serve(
    client: async_nats::Client,
    prefix: String,
    node: Arc<RouterNode>,
    gate: Arc<Gate>,
    stop: CancellationToken,
) -> Result<(), async_nats::SubscribeError> {
    let router_id = node.id().to_owned();
    let mut inbound = client
        .subscribe(router_inbound(&prefix, &router_id))
        .await?;
    let mut sessions: HashMap<String, EdgeSession> = HashMap::new();
    let mut sweep = tokio::time::interval(Duration::from_secs(1));
    loop {
        let message = tokio::select! {
            Some(message) = inbound.next() => message,
            _ = sweep.tick() => {
                sessions.retain(|edge_id, session| {
                    let alive = session.last_seen.elapsed() < SESSION_EXPIRY;
                    if !alive {
                        tracing::info!(edge_id, router_id = %router_id, "edge silent: session expired");
                    }
                    alive
                });
                continue;
            }
            () = stop.cancelled() => return Ok(()),
        };
        let Some(edge_id) = message.subject.rsplit('.').next().map(str::to_owned) else {
            continue;
        };
        // A Hello names its session nonce; one without (unproven, or
        // from an old edge) is still treated, and refused, as a Hello when
        // no session is open: a frame of a live session must be sealed.
        let says_hello = message
            .headers
            .as_ref()
            .and_then(|h| h.get(SESSION_HEADER))
            .is_some()
            || (!sessions.contains_key(&edge_id) && is_hello(&message.payload));
        if says_hello {
            hello(
                &client,
                &prefix,
                &node,
                &gate,
                &mut sessions,
                edge_id,
                message,
            )
            .await;
            continue;
        }
        let Some(session) = sessions.get_mut(&edge_id) else {
            // This router does not know the edge (it restarted, or the
            // session expired): ask it to start over and replay. The reset
            // is proven by this router's id, as there is no session key.
            let reset = RouterFrame::from(router_frame::Body::Reset(Reset {})).encode_to_vec();
            let headers = gate.message_headers(Purpose::Attach, &router_id, &reset);
            let subject = edge_subject(&prefix, &edge_id, &router_id);
            let _ = client
                .publish_with_headers(subject, headers, reset.into())
                .await;
            continue;
        };
        if let Some(opener) = session.opener.as_mut()
            && let Err(e) = open_frame(opener, message.headers.as_ref(), &message.payload)
        {
            // Not this session's: it neither reaches the router nor keeps
            // the session alive.
            refused(Plane::Nats, Purpose::Attach, e.label());
            continue;
        }
        let Ok(frame) = EdgeFrame::decode(message.payload.clone()) else {
            metrics::counter!("switchboard_transport_errors_total", "transport" => "nats")
                .increment(1);
            continue;
        };
        session.last_seen = Instant::now();
        match session.frames.try_send(frame) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                // One slow session never stalls the others: it is dropped
                // (its connections close at this router), and the edge,
                // told to reset by its next frame, opens a new one and
                // replays its subscriptions.
                metrics::counter!("switchboard_transport_sessions_dropped_total",
                    "transport" => "nats", "reason" => "queue_full")
                .increment(1);
                tracing::warn!(edge_id, router_id = %router_id,
                    "edge session queue full: session dropped");
                sessions.remove(&edge_id);
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                sessions.remove(&edge_id);
            }
        }
    }
}

/// A `Hello`: a new session when it proves the cluster secret for the edge
/// id it names and no other live session holds that id.
async fn hello(
    client: &async_nats::Client,
    prefix: &str,
    node: &Arc<RouterNode>,
    gate: &Gate,
    sessions: &mut HashMap<String, EdgeSession>,
    edge_id: String,
    message: async_nats::Message,
) {
    let router_id = node.id().to_owned();
    let headers = message.headers.as_ref();
    let nonce = headers
        .and_then(|h| h.get(SESSION_HEADER))
        .map(|v| v.as_str().to_owned())
        .unwrap_or_default();
    let Ok(frame) = EdgeFrame::decode(message.payload.clone()) else {
        metrics::counter!("switchboard_transport_errors_total", "transport" => "nats").increment(1);
        return;
    };
    let Some(edge_frame::Body::Hello(hello)) = &frame.body else {
        refused(Plane::Nats, Purpose::Attach, "malformed");
        return;
    };
    // The proof covers the frame and the nonce: a nonce swapped in by
    // anyone else on the subject is a different message.
    let bound = hello_binding(&message.payload, &nonce);
    let Some(headers) = headers else {
        // No headers at all: no proof (counted when one is required).
        let _ = gate.admit_message(Purpose::Attach, None, &bound);
        return;
    };
    if !hello_is_proven(gate, headers, &bound, &edge_id, &hello.edge_id) {
        return;
    }
    if !is_session_nonce(&nonce) {
        refused(Plane::Nats, Purpose::Attach, "malformed");
        return;
    }
    let reply = edge_subject(prefix, &edge_id, &router_id);
    let key = gate.session_key(&edge_id, &router_id, &nonce);
    let live = sessions
        .get(&edge_id)
        .is_some_and(|session| !session.frames.is_closed());
    let (tx, rx) = mpsc::channel(crate::node::EDGE_UPSTREAM_QUEUE);
    let attached = if live {
        metrics::counter!("switchboard_router_edge_sessions_refused_total").increment(1);
        tracing::warn!(edge_id, router_id = %router_id,
            "second session for a live edge id refused");
        None
    } else {
        node.attach(edge_id.clone(), ReceiverStream::new(rx)).ok()
    };
    let verdict = if attached.is_some() {
        ATTACHED
    } else {
        REFUSED
    };
    publish_verdict(client, &reply, &nonce, verdict, key.as_ref()).await;
    if let Some(downstream) = attached {
        let sealer = key.clone().map(|k| Sealer::new(k, Direction::ToEdge));
        // After the verdict, so the edge sees it first.
        tokio::spawn(pump(client.clone(), reply, downstream, sealer));
        sessions.insert(
            edge_id,
            EdgeSession {
                frames: tx,
                last_seen: Instant::now(),
                opener: key.map(|k| Opener::new(k, Direction::ToRouter)),
            },
        );
    }
}

fn is_hello(payload: &[u8]) -> bool {
    matches!(
        EdgeFrame::decode(payload).map(|f| f.body),
        Ok(Some(edge_frame::Body::Hello(_)))
    )
}

/// Whether a `Hello` proves the cluster secret for the edge id its subject
/// and frame both name (counted when not).
fn hello_is_proven(
    gate: &Gate,
    headers: &async_nats::HeaderMap,
    body: &[u8],
    subject_edge: &str,
    hello_edge: &str,
) -> bool {
    let Ok(proven) = gate.admit_message(Purpose::Attach, Some(headers), body) else {
        return false;
    };
    if !gate.requires_proofs() {
        return true;
    }
    let claimed = proven.unwrap_or_default();
    if claimed != subject_edge || claimed != hello_edge {
        refused(Plane::Nats, Purpose::Attach, PEER_MISMATCH);
        return false;
    }
    true
}

/// Tells the edge that sent the `Hello` with `nonce` what became of it.
async fn publish_verdict(
    client: &async_nats::Client,
    subject: &str,
    nonce: &str,
    verdict: &str,
    key: Option<&SessionKey>,
) {
    let headers = verdict_headers(nonce, verdict, key);
    if client
        .publish_with_headers(subject.to_owned(), headers, bytes::Bytes::new())
        .await
        .is_err()
    {
        metrics::counter!("switchboard_transport_errors_total", "transport" => "nats").increment(1);
    }
}

/// Publishes a session's frames to its edge.
async fn pump(
    client: async_nats::Client,
    subject: String,
    mut frames: mpsc::Receiver<RouterFrame>,
    mut sealer: Option<Sealer>,
) {
    while let Some(frame) = frames.recv().await {
        publish(&client, &subject, &frame, sealer.as_mut()).await;
    }
}

/// Answers forwarded requests from other routers (NATS request/reply); one
/// without a valid proof is answered with an error.
pub async fn serve_forwards(
    client: async_nats::Client,
    prefix: String,
    node: Arc<RouterNode>,
    gate: Arc<Gate>,
    stop: CancellationToken,
) -> Result<(), async_nats::SubscribeError> {
    let subject = forward_subject(&prefix, node.id());
    let mut requests = client.subscribe(subject).await?;
    loop {
        let message = tokio::select! {
            Some(message) = requests.next() => message,
            () = stop.cancelled() => return Ok(()),
        };
        let Some(reply_to) = message.reply else {
            continue;
        };
        let node = node.clone();
        let client = client.clone();
        let gate = gate.clone();
        tokio::spawn(async move {
            // Checked before the request is even decoded.
            let bound = forward_binding(node.id(), &message.payload);
            let proven = gate.admit_message(Purpose::Forward, message.headers.as_ref(), &bound);
            let response = match proven {
                Err(_) => crate::node::error_response(
                    switchboard_proto::ErrorCode::Forbidden,
                    "cluster proof required",
                ),
                Ok(_) => match switchboard_proto::Request::decode(message.payload) {
                    Ok(request) => node.request_here(request).await,
                    Err(e) => crate::node::error_response(
                        switchboard_proto::ErrorCode::Invalid,
                        &format!("undecodable request: {e}"),
                    ),
                },
            };
            let _ = client
                .publish(reply_to, response.encode_to_vec().into())
                .await;
        });
    }
}
