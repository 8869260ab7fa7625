//! One queue per IM user on the router that owns the user's topic: the
//! user's jobs run one at a time, in arrival order, on a task that lives
//! while the queue has work. A job never waits for another user's queue,
//! so queues cannot wait on each other.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use switchboard_common::clock::now_ms;
use switchboard_proto::{
    Delivery, ErrorCode, ImAnswer, Payload, Response, RouterFrame, router_frame,
};
use tokio::sync::mpsc;

use crate::node::{RouterNode, error_response};
use crate::reply::Reply;
use crate::shard::ShardCommand;
use crate::store::im::{ImUser, StoredMessage};
use crate::topic::TopicKey;

/// Stored messages fetched per store call when a socket registers.
const PAGE: usize = 100;

pub(crate) enum Job {
    /// A socket joins (`Subscribe`, after the user's stored messages were
    /// sent to it) or leaves (`Unsubscribe`) live delivery.
    Membership(ShardCommand),
    /// Keep a copy, then hand it to the user's sockets.
    Deliver {
        id: String,
        from: String,
        message: Bytes,
        reply: Reply,
    },
    /// Hand a frame to the user's sockets, all but one, without keeping it.
    Relay {
        message: Bytes,
        exclude: Option<(String, u64)>,
        reply: Reply,
    },
    /// The user received `id` from `sender`: forget it, tell the sender.
    Ack {
        id: String,
        sender: String,
        receipt: Bytes,
        reply: Reply,
    },
}

/// The running queues, by user topic.
#[derive(Default)]
pub(crate) struct Queues {
    /// Held only to look up, add or remove a queue.
    running: Mutex<HashMap<TopicKey, mpsc::UnboundedSender<Job>>>,
}

impl Queues {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TopicKey, mpsc::UnboundedSender<Job>>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `job` for `topic`'s user, starting its task if it has none.
    pub(crate) fn submit(&self, node: &Arc<RouterNode>, topic: &TopicKey, job: Job) {
        let mut running = self.lock();
        let job = match running.get(topic) {
            Some(tx) => match tx.send(job) {
                Ok(()) => return,
                Err(mpsc::error::SendError(job)) => job,
            },
            None => job,
        };
        let (tx, rx) = mpsc::unbounded_channel();
        // The receiver is alive until the task below ends.
        let _ = tx.send(job);
        running.insert(topic.clone(), tx);
        tokio::spawn(run(node.clone(), topic.clone(), rx));
    }

    /// The task ends only with nothing queued: submitters send under the
    /// same lock, so no job is left behind.
    fn finish(&self, topic: &TopicKey, rx: &mpsc::UnboundedReceiver<Job>) -> bool {
        let mut running = self.lock();
        if rx.is_empty() {
            running.remove(topic);
            true
        } else {
            false
        }
    }
}

async fn run(node: Arc<RouterNode>, topic: TopicKey, mut rx: mpsc::UnboundedReceiver<Job>) {
    loop {
        match rx.try_recv() {
            Ok(job) => handle(&node, &topic, job).await,
            Err(mpsc::error::TryRecvError::Empty) => {
                if node.im.queues.finish(&topic, &rx) {
                    return;
                }
            }
            Err(mpsc::error::TryRecvError::Disconnected) => return,
        }
    }
}

fn user(topic: &TopicKey) -> ImUser<'_> {
    ImUser {
        tenant: &topic.tenant,
        user: &topic.name,
    }
}

async fn handle(node: &Arc<RouterNode>, topic: &TopicKey, job: Job) {
    match job {
        Job::Membership(command) => {
            if let ShardCommand::Subscribe { edge, conn, .. } = &command {
                send_kept(node, topic, *edge, *conn).await;
            }
            node.to_shard_direct(topic, command).await;
        }
        Job::Deliver {
            id,
            from,
            message,
            reply,
        } => {
            let kept = StoredMessage {
                id,
                from,
                json: String::from_utf8_lossy(&message).into_owned(),
            };
            let limits = node.im.config.limits();
            if let Err(e) = node
                .store()
                .im_keep(user(topic), &kept, now_ms(), limits)
                .await
            {
                tracing::warn!(topic = %topic, error = %e, "IM message not stored");
                return reply.send(error_response(
                    ErrorCode::Internal,
                    &format!("message not stored: {e}"),
                ));
            }
            metrics::counter!("switchboard_router_im_messages_kept_total").increment(1);
            let delivered = fan_out(node, topic, message, None).await;
            reply.send(Response {
                delivered,
                im: Some(Box::new(ImAnswer {
                    stored: u32::from(delivered == 0),
                    ..ImAnswer::default()
                })),
                ..Response::default()
            });
        }
        Job::Relay {
            message,
            exclude,
            reply,
        } => {
            let delivered = fan_out(node, topic, message, exclude).await;
            reply.send(Response {
                delivered,
                ..Response::default()
            });
        }
        Job::Ack {
            id,
            sender,
            receipt,
            reply,
        } => match node.store().im_forget(user(topic), &id, &sender).await {
            Ok(true) => {
                metrics::counter!("switchboard_router_im_receipts_total").increment(1);
                reply.send(Response::default());
                if sender != switchboard_proto::im::SYSTEM {
                    let relay = super::relay_request(&topic.tenant, &sender, receipt, None);
                    let node = node.clone();
                    tokio::spawn(async move { node.request(relay).await });
                }
            }
            Ok(false) => reply.send(error_response(
                ErrorCode::NotFound,
                &format!("no message {id} from {sender} waits for {}", topic.name),
            )),
            Err(e) => reply.send(error_response(
                ErrorCode::Internal,
                &format!("receipt not stored: {e}"),
            )),
        },
    }
}

/// Sends the user's kept messages, oldest first, to one new socket.
async fn send_kept(node: &RouterNode, topic: &TopicKey, edge: u32, conn: u64) {
    let Some((_, tx)) = node.edge_link(edge) else {
        return;
    };
    let limits = node.im.config.limits();
    let mut after = 0;
    loop {
        let page = match node
            .store()
            .im_kept(user(topic), after, PAGE, now_ms(), limits)
            .await
        {
            Ok(page) => page,
            Err(e) => {
                // They stay kept and go out at the next registration.
                metrics::counter!("switchboard_router_im_backlog_errors_total").increment(1);
                tracing::warn!(topic = %topic, error = %e, "stored IM messages not fetched");
                return;
            }
        };
        let last_page = page.len() < PAGE;
        for (cursor, message) in page {
            after = cursor;
            let frame: RouterFrame = router_frame::Body::Delivery(Delivery {
                conn_ids: vec![conn],
                payload: Some(Payload::json(message.json)),
            })
            .into();
            // Waits for room: a backlog is sent whole, in order.
            if tx.send(frame).await.is_err() {
                return;
            }
            metrics::counter!("switchboard_router_im_backlog_sent_total").increment(1);
        }
        if last_page {
            return;
        }
    }
}

/// Hands `message` to every socket of the topic but `exclude`; returns
/// the number of sockets.
async fn fan_out(
    node: &RouterNode,
    topic: &TopicKey,
    message: Bytes,
    exclude: Option<(String, u64)>,
) -> u32 {
    let mut targets: HashMap<String, BTreeSet<u64>> = HashMap::new();
    for found in node.collect_here(vec![topic.clone()]).await {
        let excluded = exclude
            .as_ref()
            .filter(|(edge, _)| *edge == found.edge_id)
            .map(|(_, conn)| *conn);
        targets
            .entry(found.edge_id)
            .or_default()
            .extend(found.conn_ids.into_iter().filter(|c| Some(*c) != excluded));
    }
    node.deliver_to_edges(targets, &Payload::json(message))
}
