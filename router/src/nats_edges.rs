//! The NATS transport, router side. Edges publish their frames on
//! `{prefix}.internal.r.{router_id}.{edge_id}`; this router answers on
//! `{prefix}.internal.e.{edge_id}.{router_id}`. A session starts with `Hello` and
//! ends when the edge has been silent for [`SESSION_EXPIRY`] (edges send
//! heartbeats), which drops its connections like a closed gRPC stream.
//!
//! A `Hello` carries a proof of the cluster secret by its edge id (NATS
//! headers, bound to the frame) and a session nonce; one without a valid
//! proof is ignored and counted. The router answers a proven `Hello` with a
//! verdict for that nonce: attached, or refused while another session holds
//! the id. A refused edge stays silent and retries, so a session whose
//! edge really died expires and the id is free again.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use prost::Message;
use switchboard_proto::{EdgeFrame, Reset, RouterFrame, edge_frame, router_frame};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use switchboard_common::trust::Purpose;

use crate::node::RouterNode;
use crate::trust::{Gate, PEER_MISMATCH, Plane, refused};

/// NATS header of a `Hello`'s session nonce, echoed in the verdict.
pub const SESSION_HEADER: &str = "x-switchboard-session";
/// NATS header of the router's answer to a `Hello`: [`ATTACHED`] or
/// [`REFUSED`]; a message with it has no frame.
pub const VERDICT_HEADER: &str = "x-switchboard-verdict";
pub const ATTACHED: &str = "attached";
pub const REFUSED: &str = "refused";

/// An edge silent this long is gone.
pub const SESSION_EXPIRY: Duration = Duration::from_secs(6);

pub fn router_subject(prefix: &str, router_id: &str, edge_id: &str) -> String {
    format!("{prefix}.internal.r.{router_id}.{edge_id}")
}

pub fn edge_subject(prefix: &str, edge_id: &str, router_id: &str) -> String {
    format!("{prefix}.internal.e.{edge_id}.{router_id}")
}

struct EdgeSession {
    frames: mpsc::Sender<EdgeFrame>,
    last_seen: Instant,
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
        .subscribe(format!("{prefix}.internal.r.{router_id}.*"))
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
        let proof_headers = message.headers.clone();
        let Ok(frame) = EdgeFrame::decode(message.payload.clone()) else {
            metrics::counter!("switchboard_transport_errors_total", "transport" => "nats")
                .increment(1);
            continue;
        };
        if let Some(edge_frame::Body::Hello(hello)) = &frame.body {
            let Some(headers) = proof_headers else {
                // No headers at all: no proof, no session nonce.
                let _ = gate.admit_message(Purpose::Attach, None, &message.payload);
                continue;
            };
            if !hello_is_proven(&gate, &headers, &message.payload, &edge_id, &hello.edge_id) {
                continue;
            }
            let nonce = headers
                .get(SESSION_HEADER)
                .map(|v| v.as_str().to_owned())
                .unwrap_or_default();
            let reply = edge_subject(&prefix, &edge_id, &router_id);
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
            publish_verdict(&client, &reply, &nonce, verdict).await;
            if let Some(downstream) = attached {
                // After the verdict, so the edge sees it first.
                tokio::spawn(pump(client.clone(), reply, downstream));
                sessions.insert(
                    edge_id,
                    EdgeSession {
                        frames: tx,
                        last_seen: Instant::now(),
                    },
                );
            }
            continue;
        }
        match sessions.get_mut(&edge_id) {
            Some(session) => {
                session.last_seen = Instant::now();
                if session.frames.send(frame).await.is_err() {
                    sessions.remove(&edge_id);
                }
            }
            None => {
                // This router does not know the edge (it restarted, or the
                // session expired): ask it to start over and replay.
                let reset: RouterFrame = router_frame::Body::Reset(Reset {}).into();
                publish(
                    &client,
                    &edge_subject(&prefix, &edge_id, &router_id),
                    &reset,
                )
                .await;
            }
        }
    }
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
async fn publish_verdict(client: &async_nats::Client, subject: &str, nonce: &str, verdict: &str) {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(SESSION_HEADER, nonce);
    headers.insert(VERDICT_HEADER, verdict);
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
) {
    while let Some(frame) = frames.recv().await {
        publish(&client, &subject, &frame).await;
    }
}

/// Publishes one envelope, counting failures (core NATS is at-most-once).
pub async fn publish(client: &async_nats::Client, subject: &str, frame: &impl Message) {
    if client
        .publish(subject.to_owned(), frame.encode_to_vec().into())
        .await
        .is_err()
    {
        metrics::counter!("switchboard_transport_errors_total", "transport" => "nats").increment(1);
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
    let subject = crate::forward::forward_subject(&prefix, node.id());
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
            let proven =
                gate.admit_message(Purpose::Forward, message.headers.as_ref(), &message.payload);
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
