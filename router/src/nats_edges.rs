//! The NATS transport, router side. Edges publish their frames on
//! `{prefix}.internal.r.{router_id}.{edge_id}`; this router answers on
//! `{prefix}.internal.e.{edge_id}.{router_id}`. A session starts with `Hello` and
//! ends when the edge has been silent for [`SESSION_EXPIRY`] (edges send
//! heartbeats), which drops its connections like a closed gRPC stream.
//!
//! A `Hello` carries a proof of the cluster secret by its edge id (NATS
//! headers, bound to the frame and its session nonce); one without a valid
//! proof is ignored and counted. Both ends then derive the session's key
//! from the secret, and every later frame each way carries a sequence
//! number and a MAC under it (`switchboard_common::trust::session`): a frame
//! that does not open is dropped and counted, and does not keep the session
//! alive. A session whose queue is full is dropped rather than stalling
//! every other edge's frames; the edge starts over and replays. The router answers a proven `Hello` with a
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
use switchboard_common::trust::session::{
    Direction, MAC_HEADER, Opener, SEQ_HEADER, SealError, Sealer, SessionKey,
};

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

/// What a `Hello`'s proof covers: the frame and the session nonce.
pub fn hello_binding(frame: &[u8], nonce: &str) -> Vec<u8> {
    let mut bound = Vec::with_capacity(frame.len() + nonce.len() + 1);
    bound.extend_from_slice(frame);
    bound.push(0);
    bound.extend_from_slice(nonce.as_bytes());
    bound
}

/// A session nonce is 32 hex digits (128 random bits).
pub fn is_session_nonce(nonce: &str) -> bool {
    nonce.len() == 32 && nonce.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The MAC of a verdict: frame 0 of the router's direction, over the
/// verdict word, so nobody else can attach or refuse an edge's `Hello`.
fn verdict_mac(key: &SessionKey, verdict: &str) -> String {
    key.seal(Direction::ToEdge, 0, verdict.as_bytes())
}

/// Whether a verdict message really comes from the router the session was
/// opened with (always, without a secret).
pub fn verdict_is_proven(key: Option<&SessionKey>, verdict: &str, mac: Option<&str>) -> bool {
    match (key, mac) {
        (None, _) => true,
        (Some(key), Some(mac)) => key
            .verify(Direction::ToEdge, 0, verdict.as_bytes(), mac)
            .is_ok(),
        (Some(_), None) => false,
    }
}

/// NATS headers carrying the next sequence number and MAC of `sealer`.
pub fn seal_headers(sealer: &mut Sealer, body: &[u8]) -> async_nats::HeaderMap {
    let (seq, mac) = sealer.seal(body);
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(SEQ_HEADER, seq.as_str());
    headers.insert(MAC_HEADER, mac.as_str());
    headers
}

/// Checks a session frame's sequence number and MAC.
pub fn open_frame(
    opener: &mut Opener,
    headers: Option<&async_nats::HeaderMap>,
    body: &[u8],
) -> Result<(), SealError> {
    let header = |name: &str| headers.and_then(|h| h.get(name)).map(|v| v.as_str());
    opener.open(header(SEQ_HEADER), header(MAC_HEADER), body)
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
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(SESSION_HEADER, nonce);
    headers.insert(VERDICT_HEADER, verdict);
    if let Some(key) = key {
        headers.insert(MAC_HEADER, verdict_mac(key, verdict).as_str());
    }
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

/// Publishes one envelope, sealed when the session has a key, counting
/// failures (core NATS is at-most-once).
pub async fn publish(
    client: &async_nats::Client,
    subject: &str,
    frame: &impl Message,
    sealer: Option<&mut Sealer>,
) {
    let body = frame.encode_to_vec();
    let sent = match sealer {
        Some(sealer) => {
            let headers = seal_headers(sealer, &body);
            client
                .publish_with_headers(subject.to_owned(), headers, body.into())
                .await
        }
        None => client.publish(subject.to_owned(), body.into()).await,
    };
    if sent.is_err() {
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
            let bound = crate::trust::forward_binding(node.id(), &message.payload);
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
