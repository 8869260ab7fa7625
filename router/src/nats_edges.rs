//! The NATS transport, router side. Edges publish their frames on
//! `{prefix}.r.{router_id}.{edge_id}`; this router answers on
//! `{prefix}.e.{edge_id}.{router_id}`. A session starts with `Hello` and
//! ends when the edge has been silent for [`SESSION_EXPIRY`] (edges send
//! heartbeats), which drops its connections like a closed gRPC stream.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use prost::Message;
use switchboard_proto::{EdgeFrame, Reset, RouterFrame, edge_frame, router_frame};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use crate::node::RouterNode;

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
        let Ok(frame) = EdgeFrame::decode(message.payload) else {
            metrics::counter!("switchboard_transport_errors_total", "transport" => "nats")
                .increment(1);
            continue;
        };
        if let Some(edge_frame::Body::Hello(_)) = frame.body {
            // A new session replaces any earlier one of the same edge.
            let (tx, rx) = mpsc::channel(crate::node::EDGE_UPSTREAM_QUEUE);
            let downstream = node.attach(edge_id.clone(), ReceiverStream::new(rx));
            tokio::spawn(pump(
                client.clone(),
                edge_subject(&prefix, &edge_id, &router_id),
                downstream,
            ));
            sessions.insert(
                edge_id,
                EdgeSession {
                    frames: tx,
                    last_seen: Instant::now(),
                },
            );
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

/// Answers forwarded requests from other routers (NATS request/reply).
pub async fn serve_forwards(
    client: async_nats::Client,
    prefix: String,
    node: Arc<RouterNode>,
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
        tokio::spawn(async move {
            let response = match switchboard_proto::Request::decode(message.payload) {
                Ok(request) => node.request_here(request).await,
                Err(e) => crate::node::error_response(
                    switchboard_proto::ErrorCode::Invalid,
                    &format!("undecodable request: {e}"),
                ),
            };
            let _ = client
                .publish(reply_to, response.encode_to_vec().into())
                .await;
        });
    }
}
