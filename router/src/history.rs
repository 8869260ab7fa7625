//! Each shard's history writer: a publish to a topic with history is
//! accepted only once it is appended to the store, and only then fanned
//! out, carrying its position.
//!
//! The shard hands publishes over without waiting ([`HistoryQueue`]); the
//! writer takes whatever has queued, appends each topic's messages in one
//! step (one script per topic on Redis, all topics of a batch at once),
//! and hands each message back to the shard in the order it came, so a
//! topic's deliveries leave in offset order. A busy shard thus costs one
//! store round trip per batch, not per message. A store that appends
//! without I/O (memory) is appended to in the shard's own turn instead:
//! no writer, no two hops between tasks per publish.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::join_all;
use switchboard_proto::{ErrorCode, Payload, Position, Response, payload};
use tokio::sync::mpsc;

use crate::node::error_response;
use crate::reply::Reply;
use crate::shard::ShardCommand;
use crate::store::Store;
use crate::store::history::{Append, Appended, HistoryLimits, HistoryRef};
use crate::topic::TopicKey;

/// Publishes waiting for one shard's writer. Past this the shard refuses
/// publishes to topics with history (`internal`, "history is behind")
/// instead of queueing without bound behind a slow store.
pub const HISTORY_QUEUE: usize = 16_384;

/// Most publishes one batch appends.
const BATCH: usize = 512;

/// One publish waiting to be appended.
pub struct AppendJob {
    pub topic: TopicKey,
    /// The history's name ([`TopicKey::history_stream`]).
    pub stream: String,
    pub payload: Payload,
    pub publish_id: Option<String>,
    /// Connections it reaches besides the topic's subscribers.
    pub also: crate::shard::Also,
    pub reply: Option<Reply>,
}

/// The shard's side of its writer.
pub struct HistoryQueue {
    jobs: mpsc::Sender<AppendJob>,
    store: Arc<dyn Store>,
    limits: HistoryLimits,
}

impl HistoryQueue {
    /// Appends `job` now if the store can without I/O, answering what to
    /// deliver; else queues it for the writer without waiting (a full or
    /// closed queue answers the publisher at once, and nothing is
    /// delivered).
    pub fn push(&self, job: AppendJob) -> Option<ShardCommand> {
        let message = [Append {
            publish_id: job.publish_id.as_deref(),
            data: json_of(&job.payload),
        }];
        let history = HistoryRef {
            tenant: &job.topic.tenant,
            stream: &job.stream,
        };
        let now_ms = switchboard_common::clock::now_ms();
        if let Some(mut appended) =
            self.store
                .history_append_now(history, &message, self.limits, now_ms)
        {
            metrics::histogram!("switchboard_router_history_batch_size").record(1.0);
            let appended = appended
                .pop()
                .ok_or_else(|| "history store answered the wrong count".to_owned());
            return settle(job, appended);
        }
        let (job, message) = match self.jobs.try_send(job) {
            Ok(()) => return None,
            Err(mpsc::error::TrySendError::Full(job)) => {
                metrics::counter!("switchboard_router_history_refused_total", "reason" => "queue_full")
                    .increment(1);
                (job, "history is behind; try again")
            }
            Err(mpsc::error::TrySendError::Closed(job)) => (job, "router is shutting down"),
        };
        if let Some(reply) = job.reply {
            reply.send(error_response(ErrorCode::Internal, message));
        }
        None
    }
}

/// Starts the writer of one shard; it ends when the shard drops its queue.
/// It holds its shard weakly, so the two do not keep each other alive.
pub fn start(
    store: Arc<dyn Store>,
    limits: HistoryLimits,
    shard: mpsc::WeakSender<ShardCommand>,
) -> HistoryQueue {
    let (jobs, rx) = mpsc::channel(HISTORY_QUEUE);
    tokio::spawn(run(store.clone(), limits, shard, rx));
    HistoryQueue {
        jobs,
        store,
        limits,
    }
}

async fn run(
    store: Arc<dyn Store>,
    limits: HistoryLimits,
    shard: mpsc::WeakSender<ShardCommand>,
    mut jobs: mpsc::Receiver<AppendJob>,
) {
    let mut batch = Vec::with_capacity(BATCH);
    while jobs.recv_many(&mut batch, BATCH).await > 0 {
        metrics::histogram!("switchboard_router_history_batch_size").record(batch.len() as f64);
        let appended = append_batch(store.as_ref(), limits, &batch).await;
        let Some(shard) = shard.upgrade() else {
            return;
        };
        for (job, appended) in batch.drain(..).zip(appended) {
            let Some(command) = settle(job, appended) else {
                continue;
            };
            // The shard never waits on this writer, so waiting here for
            // room in its queue cannot deadlock; it only slows the writer
            // down to the shard's pace.
            if shard.send(command).await.is_err() {
                return;
            }
        }
    }
}

/// What to deliver of an appended job, or `None` once its publisher is
/// answered (a resend the history already holds, or a failed append).
fn settle(job: AppendJob, appended: Result<Appended, String>) -> Option<ShardCommand> {
    match appended {
        Ok(Appended::New(position)) => Some(ShardCommand::Deliver {
            topic: job.topic,
            payload: job.payload,
            position,
            also: job.also,
            reply: job.reply,
        }),
        // A resend of a publish the history holds: it was delivered when
        // it was appended, so only its place is answered.
        Ok(Appended::Duplicate(position)) => {
            metrics::counter!("switchboard_router_history_duplicates_total").increment(1);
            if let Some(reply) = job.reply {
                reply.send(accepted(0, position));
            }
            None
        }
        Err(message) => {
            metrics::counter!("switchboard_router_history_refused_total", "reason" => "store")
                .increment(1);
            if let Some(reply) = job.reply {
                reply.send(error_response(ErrorCode::Internal, &message));
            }
            None
        }
    }
}

/// Appends every job, one store step per topic, all topics at once;
/// answers what became of each job (or why nothing did) in the jobs' order.
async fn append_batch(
    store: &dyn Store,
    limits: HistoryLimits,
    batch: &[AppendJob],
) -> Vec<Result<Appended, String>> {
    // Jobs per stream, in order: (tenant, stream) → indexes into `batch`.
    let mut streams: Vec<((&str, &str), Vec<usize>)> = Vec::new();
    for (index, job) in batch.iter().enumerate() {
        let key = (job.topic.tenant.as_str(), job.stream.as_str());
        match streams.iter_mut().find(|(k, _)| *k == key) {
            Some((_, indexes)) => indexes.push(index),
            None => streams.push((key, vec![index])),
        }
    }
    let now_ms = switchboard_common::clock::now_ms();
    let appends = streams.iter().map(|((tenant, stream), indexes)| {
        let messages: Vec<Append<'_>> = indexes
            .iter()
            .map(|&i| Append {
                publish_id: batch[i].publish_id.as_deref(),
                data: json_of(&batch[i].payload),
            })
            .collect();
        let history = HistoryRef { tenant, stream };
        async move {
            store
                .history_append_batch(history, &messages, limits, now_ms)
                .await
        }
    });
    let results = join_all(appends).await;
    let mut answers: Vec<Result<Appended, String>> = vec![Err(String::new()); batch.len()];
    for ((_, indexes), result) in streams.iter().zip(results) {
        match result {
            Ok(appended) if appended.len() == indexes.len() => {
                for (&i, appended) in indexes.iter().zip(appended) {
                    answers[i] = Ok(appended);
                }
            }
            Ok(_) => {
                for &i in indexes {
                    answers[i] = Err("history store answered the wrong count".to_owned());
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "history append failed");
                for &i in indexes {
                    answers[i] = Err(format!("history store unavailable: {e}"));
                }
            }
        }
    }
    answers
}

/// The wire form a history keeps: a publish's JSON as it was completed.
fn json_of(payload: &Payload) -> Bytes {
    match &payload.body {
        Some(payload::Body::Json(json)) => json.clone(),
        _ => Bytes::new(),
    }
}

/// Whether `payload` is a message a history keeps (presence and IM
/// notices are not).
pub fn is_message(payload: &Payload) -> bool {
    matches!(payload.body, Some(payload::Body::Json(_)))
}

/// The answer to an accepted publish: sockets reached and where it is.
pub fn accepted(delivered: u32, position: Position) -> Response {
    Response {
        delivered,
        position: Some(position),
        ..Response::default()
    }
}
