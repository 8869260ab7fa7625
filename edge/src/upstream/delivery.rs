//! Frames from a router: a delivery goes to the local sockets it names,
//! encoded once per dialect (and compressed once per dialect and window
//! size) however many sockets share it; an answer goes to the request
//! awaiting it; a reset ends the session.

use std::sync::Arc;

use bytes::Bytes;
use switchboard_proto::{Delivery, RouterFrame, payload, router_frame};

use super::Upstream;
use crate::dialect::DIALECTS;
use crate::recovery::{Admit, CatchUp};

impl Upstream {
    /// Handles one frame from a router; false when the router reset the
    /// session.
    pub(super) fn dispatch(self: &Arc<Self>, frame: RouterFrame) -> bool {
        match frame.body {
            Some(router_frame::Body::Delivery(delivery)) => self.deliver(delivery),
            Some(router_frame::Body::Response(response)) => self.answered(response),
            Some(router_frame::Body::Reset(_)) => return false,
            None => {}
        }
        true
    }

    /// Hands one delivery to its local sockets, encoding it once per
    /// dialect; a backlog that waits for a socket starts its hand-over.
    fn deliver(self: &Arc<Self>, delivery: Delivery) {
        let Some(payload) = delivery.payload else {
            return;
        };
        if let Some(payload::Body::ImBacklog(ready)) = payload.body {
            for conn in delivery
                .conn_ids
                .iter()
                .filter_map(|id| self.registry.get(*id))
            {
                crate::backlog::start(self, conn, ready.clone());
            }
            return;
        }
        metrics::counter!("switchboard_edge_deliveries_total").increment(1);
        let mut encoded: [Option<Option<Bytes>>; DIALECTS] = Default::default();
        let mut compressed: Vec<((usize, u8), Bytes)> = Vec::new();
        let mut sent = 0u64;
        for id in delivery.conn_ids {
            let Some(conn) = self.registry.get(id) else {
                continue;
            };
            let Some(slot) = encoded.get_mut(conn.dialect.index()) else {
                continue;
            };
            let Some(frame) = slot
                .get_or_insert_with(|| conn.dialect.encode(&payload, delivery.position.as_ref()))
            else {
                continue;
            };
            // A socket drops what it has (a replay gave it, or an old
            // owner did), and holds what comes while it recovers.
            if let (Some(topic), Some(position)) = (&delivery.topic, &delivery.position) {
                match conn.positions().admit(topic, position, frame) {
                    Admit::Deliver => {}
                    Admit::Drop => {
                        metrics::counter!("switchboard_edge_duplicates_dropped_total").increment(1);
                        continue;
                    }
                    Admit::Held => continue,
                    Admit::Gap(since) => {
                        metrics::counter!("switchboard_edge_gaps_total").increment(1);
                        tokio::spawn(crate::recovery::catch_up(
                            self.clone(),
                            conn.clone(),
                            topic.clone(),
                            since,
                            CatchUp::Gap,
                        ));
                        continue;
                    }
                }
            }
            // A socket that agreed to deflate gets the frame compressed
            // once per dialect and window size, however many share them.
            let pushed = match conn.deflate {
                Some(deflate) if deflate.compresses(frame.len()) => {
                    let key = (conn.dialect.index(), deflate.server_window_bits);
                    let packed = match compressed.iter().find(|(k, _)| *k == key) {
                        Some((_, packed)) => packed.clone(),
                        None => {
                            let packed = crate::deflate::compress(frame, deflate);
                            compressed.push((key, packed.clone()));
                            packed
                        }
                    };
                    conn.push_compressed(packed)
                }
                _ => conn.push(frame.clone()),
            };
            if pushed {
                sent += 1;
            }
        }
        metrics::counter!("switchboard_edge_messages_out_total").increment(sent);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use switchboard_proto::{Payload, RouterFrame};

    use super::*;
    use crate::dialect::im::IM;
    use crate::outbound::ConnHandle;
    use crate::upstream::correlation::tests::{frames, upstream};

    #[test]
    fn a_delivery_reaches_each_named_local_socket_once() {
        let (upstream, group) = upstream();
        let im = Arc::new(ConnHandle::new(8, &IM, "t".into(), "p".into(), 64, 1 << 16));
        upstream.registry.insert(im.clone());
        let idle = Arc::new(ConnHandle::new(9, &IM, "t".into(), "p".into(), 64, 1 << 16));
        upstream.registry.insert(idle.clone());
        let delivery = Delivery {
            // 42 is not a socket of this edge.
            conn_ids: vec![group.id, 42, im.id],
            payload: Some(Payload::json(Bytes::from_static(b"{\"x\":1}"))),
            ..Delivery::default()
        };
        let frame = RouterFrame {
            body: Some(router_frame::Body::Delivery(delivery)),
        };
        assert!(upstream.dispatch(frame));
        assert_eq!(frames(&group), ["{\"x\":1}"]);
        assert_eq!(frames(&im), ["{\"x\":1}"]);
        assert!(frames(&idle).is_empty(), "only the sockets named");
    }

    #[test]
    fn a_delivery_without_a_payload_is_skipped() {
        let (upstream, group) = upstream();
        let delivery = Delivery {
            conn_ids: vec![group.id],
            payload: None,
            ..Delivery::default()
        };
        let frame = RouterFrame {
            body: Some(router_frame::Body::Delivery(delivery)),
        };
        assert!(upstream.dispatch(frame));
        assert!(frames(&group).is_empty());
    }
}
