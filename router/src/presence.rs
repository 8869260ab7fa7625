//! The presence worker of a shard: runs the shard's store operations in
//! order, off the shard's task, so a slow store never delays fan-out.
//! Confirmed joins and leaves go back to the shard to be announced, and a
//! periodic sweep expires members that sent nothing for the TTL.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use switchboard_common::clock::now_ms;
use switchboard_proto::{ErrorCode, Response};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::reply::Reply;
use crate::shard::ShardCommand;
use crate::store::{GroupRef, Store};
use crate::topic::TopicKey;

pub enum PresenceJob {
    Refresh { topic: TopicKey, member: String },
    Leave { topic: TopicKey, member: String },
    Query { topic: TopicKey, reply: Reply },
}

pub struct PresenceWorker {
    pub store: Arc<dyn Store>,
    pub shard: mpsc::Sender<ShardCommand>,
    pub sweep_interval: Duration,
    /// Groups with members this worker refreshed: the ones to sweep.
    pub known: HashSet<TopicKey>,
}

fn group(topic: &TopicKey) -> GroupRef<'_> {
    GroupRef {
        tenant: &topic.tenant,
        group: &topic.name,
    }
}

impl PresenceWorker {
    pub async fn run(mut self, mut jobs: mpsc::Receiver<PresenceJob>, stop: CancellationToken) {
        let mut sweep = tokio::time::interval(self.sweep_interval);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                job = jobs.recv() => match job {
                    Some(job) => self.handle(job).await,
                    None => return,
                },
                _ = sweep.tick() => self.sweep().await,
                () = stop.cancelled() => return,
            }
        }
    }

    async fn handle(&mut self, job: PresenceJob) {
        match job {
            PresenceJob::Refresh { topic, member } => {
                match self
                    .store
                    .presence_refresh(group(&topic), &member, now_ms())
                    .await
                {
                    Ok(change) => {
                        self.known.insert(topic.clone());
                        if change.changed {
                            self.announce(topic, member, true, change.count).await;
                        }
                    }
                    Err(e) => tracing::warn!(%topic, error = %e, "presence refresh failed"),
                }
            }
            PresenceJob::Leave { topic, member } => {
                match self
                    .store
                    .presence_leave(group(&topic), &member, now_ms())
                    .await
                {
                    Ok(change) if change.changed => {
                        self.announce(topic, member, false, change.count).await;
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(%topic, error = %e, "presence leave failed"),
                }
            }
            PresenceJob::Query { topic, reply } => {
                let response = match self.store.presence_members(group(&topic), now_ms()).await {
                    Ok(members) => Response {
                        delivered: members.len() as u32,
                        members,
                        ..Response::default()
                    },
                    Err(e) => Response {
                        error: ErrorCode::Internal as i32,
                        error_message: format!("presence store unavailable: {e}"),
                        ..Response::default()
                    },
                };
                reply.send(response);
            }
        }
    }

    async fn sweep(&mut self) {
        let now = now_ms();
        let topics: Vec<TopicKey> = self.known.iter().cloned().collect();
        for topic in topics {
            match self.store.presence_expire(group(&topic), now).await {
                Ok((expired, left)) => {
                    for member in expired {
                        metrics::counter!("switchboard_router_presence_expired_total").increment(1);
                        self.announce(topic.clone(), member, false, left).await;
                    }
                    if left == 0 {
                        self.known.remove(&topic);
                    }
                }
                Err(e) => tracing::warn!(%topic, error = %e, "presence sweep failed"),
            }
        }
    }

    async fn announce(&self, topic: TopicKey, member: String, joined: bool, count: u32) {
        let _ = self
            .shard
            .send(ShardCommand::Announce {
                topic,
                member,
                joined,
                count,
            })
            .await;
    }
}
