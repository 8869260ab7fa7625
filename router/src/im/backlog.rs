//! Handing a user's kept messages to a socket that joins, at the pace the
//! socket reads them.
//!
//! When a socket joins its user's topic and something is kept for the
//! user, the owner marks it *reading* and tells its edge that a backlog
//! waits ([`ImBacklogReady`]); with nothing kept, it is live at once. The edge asks
//! for one window at a time ([`window`]), each time the socket's outbound
//! queue has drained, so however large the backlog, nothing piles up on
//! either side. While a socket reads, kept messages are not delivered to
//! it live: they are in the store, after its cursor, and come in a later
//! window, so nothing overtakes the backlog. The window that reaches the
//! end makes the socket *live* and remembers the cursor it ended at: a
//! kept message at or before that cursor was in a window already, later
//! ones are delivered live. Everything here runs in the user's queue, so
//! no delivery slips between a window and the switch to live.
//!
//! Frames that are not kept (receipts relayed to a sender, a sender's
//! messages echoed to its other devices) have no place in the store and
//! reach a reading socket at once.

use std::collections::HashMap;
use std::sync::Mutex;

use switchboard_common::clock::now_ms;
use switchboard_proto::{
    Delivery, ErrorCode, ImAnswer, ImBacklogReady, Payload, Response, RouterFrame, payload,
    router_frame,
};

use crate::node::{RouterNode, error_response};
use crate::shard::EdgeIdx;
use crate::store::im::{ImUser, Window};
use crate::topic::TopicKey;

/// Where one socket is in its user's backlog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reader {
    /// Reading its backlog: kept messages reach it through windows only.
    Reading,
    /// Done: its last window ended at `through`.
    Live { through: u64 },
}

/// One socket: its edge session and its connection there.
type Socket = (EdgeIdx, u64);

/// Each user topic's sockets.
type ByUser = HashMap<TopicKey, HashMap<Socket, Reader>>;

/// The sockets of each user topic this router owns. An entry lives from
/// the socket's join to its leave.
#[derive(Default)]
pub(crate) struct Readers {
    /// Held only to look up or change an entry.
    by_user: Mutex<ByUser>,
}

impl Readers {
    fn lock(&self) -> std::sync::MutexGuard<'_, ByUser> {
        self.by_user.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set(&self, topic: &TopicKey, socket: Socket, reader: Reader) {
        self.lock()
            .entry(topic.clone())
            .or_default()
            .insert(socket, reader);
    }

    fn get(&self, topic: &TopicKey, socket: Socket) -> Option<Reader> {
        self.lock().get(topic)?.get(&socket).copied()
    }

    /// The socket left the topic.
    pub(crate) fn leave(&self, topic: &TopicKey, socket: Socket) {
        let mut by_user = self.lock();
        if let Some(sockets) = by_user.get_mut(topic) {
            sockets.remove(&socket);
            if sockets.is_empty() {
                by_user.remove(topic);
            }
        }
    }

    /// Whether the kept message at `cursor` goes to the socket live.
    pub(crate) fn takes_live(&self, topic: &TopicKey, socket: Socket, cursor: u64) -> bool {
        match self.get(topic, socket) {
            // Joined before this router owned the topic's readers (none
            // are lost, but be safe): deliver.
            None => true,
            Some(Reader::Reading) => false,
            Some(Reader::Live { through }) => cursor > through,
        }
    }
}

/// A socket joins `topic`: with nothing kept it is live at once;
/// otherwise it reads its backlog before anything kept reaches it live,
/// and its edge is told to ask for the first window.
pub(crate) async fn join(node: &RouterNode, topic: &TopicKey, edge: EdgeIdx, conn: u64) {
    let user = ImUser {
        tenant: &topic.tenant,
        user: &topic.name,
    };
    let first = Window {
        messages: 1,
        bytes: 0,
    };
    let limits = node.im.config.limits();
    match node.store().im_kept(user, 0, first, now_ms(), limits).await {
        Ok(page) if page.messages.is_empty() && !page.more => {
            // Anything kept from now on has a later cursor than 0.
            node.im
                .readers
                .set(topic, (edge, conn), Reader::Live { through: 0 });
            return;
        }
        Ok(_) => {}
        Err(e) => {
            // The edge asks again until the store answers.
            metrics::counter!("switchboard_router_im_backlog_errors_total").increment(1);
            tracing::warn!(topic = %topic, error = %e, "kept IM messages not looked up");
        }
    }
    node.im.readers.set(topic, (edge, conn), Reader::Reading);
    let Some((_, tx)) = node.edge_link(edge) else {
        return;
    };
    let ready = Payload {
        body: Some(payload::Body::ImBacklog(ImBacklogReady {
            topic: Some(topic.to_proto()),
        })),
    };
    let frame: RouterFrame = router_frame::Body::Delivery(Delivery {
        conn_ids: vec![conn],
        payload: Some(ready),
        ..Delivery::default()
    })
    .into();
    // The edge is gone when this fails; its leave follows.
    let _ = tx.send(frame).await;
}

/// The next window of `topic`'s kept messages for the socket `conn` of
/// the edge `edge_id`, after `after`.
pub(crate) async fn window(
    node: &RouterNode,
    topic: &TopicKey,
    (edge_id, conn): (&str, u64),
    after: u64,
    window: Window,
) -> Response {
    let socket = node.edge_index(edge_id).map(|edge| (edge, conn));
    let Some(socket) = socket.filter(|s| node.im.readers.get(topic, *s).is_some()) else {
        return error_response(
            ErrorCode::NotFound,
            "this socket reads no backlog on this router",
        );
    };
    let user = ImUser {
        tenant: &topic.tenant,
        user: &topic.name,
    };
    let limits = node.im.config.limits();
    let page = match node
        .store()
        .im_kept(user, after, window, now_ms(), limits)
        .await
    {
        Ok(page) => page,
        Err(e) => {
            // Still kept: the edge asks again.
            metrics::counter!("switchboard_router_im_backlog_errors_total").increment(1);
            tracing::warn!(topic = %topic, error = %e, "kept IM messages not fetched");
            return error_response(ErrorCode::Internal, &format!("backlog not read: {e}"));
        }
    };
    let cursor = page.messages.last().map_or(after, |(cursor, _)| *cursor);
    let reader = if page.more {
        Reader::Reading
    } else {
        Reader::Live { through: cursor }
    };
    node.im.readers.set(topic, socket, reader);
    let count = page.messages.len() as u64;
    metrics::counter!("switchboard_router_im_backlog_windows_total").increment(1);
    metrics::counter!("switchboard_router_im_backlog_sent_total").increment(count);
    Response {
        im: Some(Box::new(ImAnswer {
            backlog: page
                .messages
                .into_iter()
                .map(|(_, m)| m.json.into_bytes().into())
                .collect(),
            cursor,
            more: page.more,
            ..ImAnswer::default()
        })),
        ..Response::default()
    }
}

#[cfg(test)]
mod tests {
    use switchboard_proto::TopicKind;

    use super::*;

    #[test]
    fn reading_sockets_take_nothing_kept_and_live_ones_nothing_read() {
        let readers = Readers::default();
        let topic = TopicKey {
            tenant: "t".into(),
            kind: TopicKind::ImUser,
            name: "bob".into(),
        };
        let socket = (1, 7);
        assert!(readers.takes_live(&topic, socket, 1), "unknown: delivered");
        readers.set(&topic, socket, Reader::Reading);
        assert!(!readers.takes_live(&topic, socket, 100));
        readers.set(&topic, socket, Reader::Live { through: 10 });
        assert!(!readers.takes_live(&topic, socket, 10), "was in a window");
        assert!(readers.takes_live(&topic, socket, 11));
        assert!(
            readers.takes_live(&topic, (2, 7), 1),
            "another edge's socket"
        );
        readers.leave(&topic, socket);
        assert!(readers.lock().is_empty(), "nothing left behind");
    }
}
