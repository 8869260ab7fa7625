//! The NATS transport: frames to `{prefix}.internal.r.{router}.{edge}`, frames back
//! on `{prefix}.internal.e.{edge}.{router}`. Core NATS keeps order per publisher and
//! subject, so each direction stays in order; heartbeats keep the session
//! alive at the router, and a router that lost the session says `Reset`.
//!
//! The `Hello` carries a proof of the cluster secret by this edge's id and
//! a fresh session nonce; the session is open once the router's verdict for
//! that nonce says attached (and carries the session's MAC). Every frame
//! after it, each way, is sealed under the session key. Until then nothing else is sent, so a refused
//! edge (another session holds its id) lets a dead session expire.

use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use prost::Message;
use std::sync::Arc;
use switchboard_proto::{EdgeFrame, Heartbeat, Hello, RouterFrame, edge_frame, router_frame};

use switchboard_cluster::nats_session::{
    ATTACHED, SESSION_HEADER, VERDICT_HEADER, hello_binding, open_frame, publish, verdict_is_proven,
};
use switchboard_cluster::subjects::{edge_subject, router_subject};
use switchboard_cluster::trust::{Gate, Plane, refused};
use switchboard_common::trust::Purpose;
use switchboard_common::trust::session::{Direction, MAC_HEADER, Opener, Sealer};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::{Transport, TransportError, TransportSession, UPSTREAM_QUEUE};

/// Heartbeats go out when the edge has sent nothing for this long.
const HEARTBEAT: Duration = Duration::from_secs(2);
/// Router frames waiting for the edge's session task.
const DOWNSTREAM_QUEUE: usize = 1024;
/// How long a `Hello` waits for the router's verdict.
const VERDICT_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Nats {
    pub client: async_nats::Client,
    pub prefix: String,
    pub router_id: String,
    pub gate: Arc<Gate>,
}

fn header<'a>(message: &'a async_nats::Message, name: &str) -> Option<&'a str> {
    message
        .headers
        .as_ref()
        .and_then(|h| h.get(name))
        .map(|v| v.as_str())
}

#[async_trait]
impl Transport for Nats {
    async fn open(&self, edge_id: &str) -> Result<TransportSession, TransportError> {
        let failed = |reason: String| TransportError::Connect {
            addr: format!("nats:{}", self.router_id),
            reason,
        };
        let mut inbound = self
            .client
            .subscribe(edge_subject(&self.prefix, edge_id, &self.router_id))
            .await
            .map_err(|e| failed(e.to_string()))?;
        let (tx, mut frames) = mpsc::channel::<EdgeFrame>(UPSTREAM_QUEUE);
        let client = self.client.clone();
        let subject = router_subject(&self.prefix, &self.router_id, edge_id);
        let hello: EdgeFrame = edge_frame::Body::Hello(Hello {
            edge_id: edge_id.to_owned(),
        })
        .into();
        let body = hello.encode_to_vec();
        let nonce = format!("{:032x}", rand::random::<u128>());
        let bound = hello_binding(&body, &nonce);
        let mut headers = self.gate.message_headers(Purpose::Attach, edge_id, &bound);
        headers.insert(SESSION_HEADER, nonce.as_str());
        client
            .publish_with_headers(subject.clone(), headers, body.into())
            .await
            .map_err(|e| failed(e.to_string()))?;
        let key = self.gate.session_key(edge_id, &self.router_id, &nonce);
        // Frames on the subject before the verdict belong to another
        // session of this id (an edge misconfigured with the same id); a
        // verdict that does not carry this session's MAC is not the
        // router's.
        let verdict = tokio::time::timeout(VERDICT_TIMEOUT, async {
            while let Some(message) = inbound.next().await {
                if header(&message, SESSION_HEADER) == Some(nonce.as_str())
                    && let Some(verdict) = header(&message, VERDICT_HEADER)
                {
                    if !verdict_is_proven(key.as_ref(), verdict, header(&message, MAC_HEADER)) {
                        refused(Plane::Nats, Purpose::Attach, "bad_mac");
                        continue;
                    }
                    return Some(verdict == ATTACHED);
                }
            }
            None
        })
        .await;
        match verdict {
            Ok(Some(true)) => {}
            Ok(Some(false)) => {
                return Err(TransportError::Refused {
                    addr: format!("nats:{}", self.router_id),
                    reason: "another live session holds this edge id".to_owned(),
                });
            }
            Ok(None) => return Err(failed("subscription closed".to_owned())),
            Err(_) => return Err(failed("no answer to Hello".to_owned())),
        }
        let mut sealer = key.clone().map(|k| Sealer::new(k, Direction::ToRouter));
        tokio::spawn(async move {
            let heartbeat: EdgeFrame = edge_frame::Body::Heartbeat(Heartbeat {}).into();
            loop {
                let frame = match tokio::time::timeout(HEARTBEAT, frames.recv()).await {
                    Ok(Some(frame)) => frame,
                    Ok(None) => return,
                    Err(_) => heartbeat.clone(),
                };
                publish(&client, &subject, &frame, sealer.as_mut()).await;
            }
        });
        let (down_tx, down_rx) = mpsc::channel::<RouterFrame>(DOWNSTREAM_QUEUE);
        let opener = key.map(|k| Opener::new(k, Direction::ToEdge));
        let gate = self.gate.clone();
        let router_id = self.router_id.clone();
        tokio::spawn(receive(inbound, opener, gate, router_id, down_tx));
        let rx = ReceiverStream::new(down_rx);
        Ok(TransportSession {
            tx,
            rx: Box::pin(rx),
        })
    }
}

/// Passes the router's frames on, each only if it opens under the session
/// key (a `Reset` also if the router proved it by its id: a router that
/// lost the session has no key), until a reset, the end of the
/// subscription, or the end of the session.
///
/// The subscription goes as soon as the upstream drops the session: a
/// router restarted under the same id sends its new session's frames on
/// the same subject, and a stale subscriber would get each of them too,
/// refuse it as forged and never learn it was no longer wanted.
async fn receive(
    mut inbound: async_nats::Subscriber,
    mut opener: Option<Opener>,
    gate: Arc<Gate>,
    router_id: String,
    frames: mpsc::Sender<RouterFrame>,
) {
    loop {
        let message = tokio::select! {
            message = inbound.next() => message,
            () = frames.closed() => return,
        };
        let Some(message) = message else {
            return;
        };
        if header(&message, VERDICT_HEADER).is_some() {
            continue;
        }
        let sealed = match opener.as_mut() {
            None => Ok(()),
            Some(opener) => open_frame(opener, message.headers.as_ref(), &message.payload),
        };
        let Ok(frame) = RouterFrame::decode(message.payload.clone()) else {
            continue;
        };
        let reset = matches!(frame.body, Some(router_frame::Body::Reset(_)));
        let accepted = match sealed {
            Ok(()) => true,
            Err(_) if reset => matches!(
                gate.admit_message(Purpose::Attach, message.headers.as_ref(), &message.payload),
                Ok(Some(ref by)) if *by == router_id
            ),
            Err(e) => {
                refused(Plane::Nats, Purpose::Attach, e.label());
                false
            }
        };
        if !accepted {
            continue;
        }
        // A reset ends the session; the upstream opens a new one.
        if reset || frames.send(frame).await.is_err() {
            return;
        }
    }
}
