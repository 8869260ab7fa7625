//! The NATS transport: frames to `{prefix}.r.{router}.{edge}`, frames back
//! on `{prefix}.e.{edge}.{router}`. Core NATS keeps order per publisher and
//! subject, so each direction stays in order; heartbeats keep the session
//! alive at the router, and a router that lost the session says `Reset`.

use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use prost::Message;
use switchboard_proto::{EdgeFrame, Heartbeat, Hello, RouterFrame, edge_frame, router_frame};
use switchboard_router::nats_edges::{edge_subject, publish, router_subject};
use tokio::sync::mpsc;

use super::{Transport, TransportError, TransportSession, UPSTREAM_QUEUE};

/// Heartbeats go out when the edge has sent nothing for this long.
const HEARTBEAT: Duration = Duration::from_secs(2);

pub struct Nats {
    pub client: async_nats::Client,
    pub prefix: String,
    pub router_id: String,
}

#[async_trait]
impl Transport for Nats {
    async fn open(&self, edge_id: &str) -> Result<TransportSession, TransportError> {
        let failed = |reason: String| TransportError::Connect {
            addr: format!("nats:{}", self.router_id),
            reason,
        };
        let inbound = self
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
        client
            .publish(subject.clone(), hello.encode_to_vec().into())
            .await
            .map_err(|e| failed(e.to_string()))?;
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
            .filter_map(|message| async move { RouterFrame::decode(message.payload).ok() })
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
