//! One queue per IM user on the router that owns the user's topic: the
//! user's jobs run one at a time, in arrival order, on a task that lives
//! while the queue has work. A job never waits for another user's queue,
//! so queues cannot wait on each other.
//!
//! A queue holds at most `im_queue_max` jobs; a job over it is refused
//! with an answer that says so (`switchboard_router_im_queue_full_total`).
//! Joins and leaves are never refused: each stands for a socket, which
//! the edges already bound, and dropping one would leave a subscription
//! or a backlog reader behind.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use switchboard_common::clock::now_ms;
use switchboard_proto::{ErrorCode, ImAnswer, Payload, Response};
use tokio::sync::mpsc;

use super::backlog;
use crate::node::{RouterNode, error_response};
use crate::reply::Reply;
use crate::shard::ShardCommand;
use crate::store::im::{ImUser, Window};
use crate::topic::TopicKey;

pub(crate) enum Job {
    /// A socket joins (`Subscribe`, then reads its backlog) or leaves
    /// (`Unsubscribe`) the user's topic.
    Membership(ShardCommand),
    /// Hand a message kept for the user at `cursor` to the user's sockets
    /// that take it live.
    Deliver {
        message: Bytes,
        cursor: u64,
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
    /// Answered once the jobs before it ran: a registering socket's
    /// subscription, sent right before, is applied and its backlog found.
    Sync { reply: Reply },
    /// The next backlog window for one socket (edge id, connection).
    Backlog {
        socket: (String, u64),
        after: u64,
        window: Window,
        reply: Reply,
    },
}

impl Job {
    /// Answers a job refused for a full queue, naming the outcome.
    fn refuse(self, topic: &TopicKey, bound: usize) {
        let (label, outcome) = match &self {
            Job::Membership(_) => ("membership", "not refused"),
            Job::Deliver { .. } => ("deliver", "kept for the next registration"),
            Job::Relay { .. } => ("relay", "dropped"),
            Job::Ack { .. } => ("ack", "send the receipt again"),
            Job::Backlog { .. } => ("backlog", "asked again later"),
            Job::Sync { .. } => ("sync", "register again"),
        };
        metrics::counter!("switchboard_router_im_queue_full_total", "job" => label).increment(1);
        let message = format!(
            "the IM queue of {} is full ({bound} jobs): {outcome}",
            topic.name
        );
        match self {
            Job::Membership(_) => {}
            Job::Deliver { reply, .. }
            | Job::Relay { reply, .. }
            | Job::Ack { reply, .. }
            | Job::Backlog { reply, .. }
            | Job::Sync { reply } => {
                reply.send(error_response(ErrorCode::Internal, &message));
            }
        }
    }
}

/// A user's running queue: its jobs and how many wait.
struct Running {
    tx: mpsc::UnboundedSender<Job>,
    waiting: Arc<AtomicUsize>,
}

/// The running queues, by user topic.
#[derive(Default)]
pub(crate) struct Queues {
    /// Held only to look up, add or remove a queue.
    running: Mutex<HashMap<TopicKey, Running>>,
}

impl Queues {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TopicKey, Running>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `job` for `topic`'s user, starting its task if it has none;
    /// refuses it when the queue is full.
    pub(crate) fn submit(&self, node: &Arc<RouterNode>, topic: &TopicKey, job: Job) {
        let bound = node.im.config.queue_max;
        let mut running = self.lock();
        let job = match running.get(topic) {
            Some(queue) => {
                let always = matches!(job, Job::Membership(_));
                if !always && queue.waiting.load(Ordering::Relaxed) >= bound {
                    drop(running);
                    return job.refuse(topic, bound);
                }
                queue.waiting.fetch_add(1, Ordering::Relaxed);
                match queue.tx.send(job) {
                    Ok(()) => return,
                    Err(mpsc::error::SendError(job)) => job,
                }
            }
            None => job,
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let waiting = Arc::new(AtomicUsize::new(1));
        // The receiver is alive until the task below ends.
        let _ = tx.send(job);
        running.insert(
            topic.clone(),
            Running {
                tx,
                waiting: waiting.clone(),
            },
        );
        tokio::spawn(run(node.clone(), topic.clone(), rx, waiting));
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

async fn run(
    node: Arc<RouterNode>,
    topic: TopicKey,
    mut rx: mpsc::UnboundedReceiver<Job>,
    waiting: Arc<AtomicUsize>,
) {
    loop {
        match rx.try_recv() {
            Ok(job) => {
                waiting.fetch_sub(1, Ordering::Relaxed);
                handle(&node, &topic, job).await;
            }
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
            let joined = match &command {
                ShardCommand::Subscribe { edge, conn, .. } => Some((*edge, *conn)),
                ShardCommand::Unsubscribe { edge, conn, .. } => {
                    node.im.readers.leave(topic, (*edge, *conn));
                    None
                }
                _ => None,
            };
            node.to_shard_direct(topic, command).await;
            if let Some((edge, conn)) = joined {
                backlog::join(node, topic, edge, conn).await;
            }
        }
        Job::Deliver {
            message,
            cursor,
            reply,
        } => {
            let delivered = fan_out(node, topic, message, None, Some(cursor)).await;
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
            let delivered = fan_out(node, topic, message, exclude, None).await;
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
        } => {
            let limits = node.im.config.limits();
            let forgotten = node
                .store()
                .im_forget(user(topic), &id, &sender, now_ms(), limits)
                .await;
            match forgotten {
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
            }
        }
        Job::Sync { reply } => reply.send(node.collected(vec![topic.clone()]).await),
        Job::Backlog {
            socket: (edge_id, conn),
            after,
            window,
            reply,
        } => {
            let answer = backlog::window(node, topic, (&edge_id, conn), after, window).await;
            reply.send(answer);
        }
    }
}

/// Hands `message` to every socket of the topic but `exclude`, and for a
/// message kept at `cursor`, but the sockets that do not take it live;
/// returns the number of sockets.
async fn fan_out(
    node: &RouterNode,
    topic: &TopicKey,
    message: Bytes,
    exclude: Option<(String, u64)>,
    cursor: Option<u64>,
) -> u32 {
    let mut targets: HashMap<String, BTreeSet<u64>> = HashMap::new();
    for found in node.collect_here(vec![topic.clone()]).await {
        let excluded = exclude
            .as_ref()
            .filter(|(edge, _)| *edge == found.edge_id)
            .map(|(_, conn)| *conn);
        let edge = cursor.and(node.edge_index(&found.edge_id));
        let takes = |conn: &u64| match (cursor, edge) {
            (Some(cursor), Some(edge)) => node.im.readers.takes_live(topic, (edge, *conn), cursor),
            _ => true,
        };
        targets.entry(found.edge_id).or_default().extend(
            found
                .conn_ids
                .into_iter()
                .filter(|c| Some(*c) != excluded && takes(c)),
        );
    }
    node.deliver_to_edges(targets, &Payload::json(message))
}
