//! The NATS transport: frames to `{prefix}.internal.r.{router}.{edge}`, frames back
//! on `{prefix}.internal.e.{edge}.{router}`. Core NATS keeps order per publisher and
//! subject, so each direction stays in order; heartbeats keep the session
//! alive at the router, and a router that lost the session says `Reset`.
//!
//! The `Hello` carries a proof of the cluster secret by this edge's id and
//! a fresh session nonce; the session is open once the router's verdict for
//! that nonce says attached. Until then nothing else is sent, so a refused
//! edge (another session holds its id) lets a dead session expire.

use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use prost::Message;
use std::sync::Arc;
use switchboard_proto::{EdgeFrame, Heartbeat, Hello, RouterFrame, edge_frame, router_frame};

use switchboard_common::trust::Purpose;
use switchboard_router::nats_edges::{
    ATTACHED, SESSION_HEADER, VERDICT_HEADER, edge_subject, publish, router_subject,
};
use switchboard_router::trust::Gate;
use tokio::sync::mpsc;

use super::{Transport, TransportError, TransportSession, UPSTREAM_QUEUE};

/// Heartbeats go out when the edge has sent nothing for this long.
const HEARTBEAT: Duration = Duration::from_secs(2);
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
        let mut headers = self.gate.message_headers(Purpose::Attach, edge_id, &body);
        headers.insert(SESSION_HEADER, nonce.as_str());
        client
            .publish_with_headers(subject.clone(), headers, body.into())
            .await
            .map_err(|e| failed(e.to_string()))?;
        // Frames on the subject before the verdict belong to another
        // session of this id (an edge misconfigured with the same id).
        let verdict = tokio::time::timeout(VERDICT_TIMEOUT, async {
            while let Some(message) = inbound.next().await {
                if header(&message, SESSION_HEADER) == Some(nonce.as_str())
                    && let Some(verdict) = header(&message, VERDICT_HEADER)
                {
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
        tokio::spawn(async move {
            let heartbeat: EdgeFrame = edge_frame::Body::Heartbeat(Heartbeat {}).into();
            loop {
                let frame = match tokio::time::timeout(HEARTBEAT, frames.recv()).await {
                    Ok(Some(frame)) => frame,
                    Ok(None) => return,
                    Err(_) => heartbeat.clone(),
                };
                publish(&client, &subject, &frame).await;
            }
        });
        let rx = inbound
            .filter_map(|message| async move {
                if header(&message, VERDICT_HEADER).is_some() {
                    return None;
                }
                RouterFrame::decode(message.payload).ok()
            })
            // A reset ends the session; the upstream opens a new one.
            .take_while(|frame| {
                let reset = matches!(frame.body, Some(router_frame::Body::Reset(_)));
                async move { !reset }
            });
        Ok(TransportSession {
            tx,
            rx: Box::pin(rx),
        })
    }
}
