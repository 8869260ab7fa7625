//! Hands a socket the messages kept for it at the pace it reads them.
//!
//! A router says a backlog waits for a socket ([`ImBacklogReady`]); the
//! edge then asks for it one window at a time, each only once the socket's
//! outbound queue has drained to a low-water mark. A window is at most a
//! quarter of the queue's bounds and the mark is another quarter, so the
//! backlog never holds more than half the queue, however large it is: the
//! rest stays free for replies and live frames, and a registering socket
//! is never closed for a full queue. Until the last window the router
//! delivers no kept message to the socket live, so live messages follow
//! the backlog in order.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use switchboard_proto::{ErrorCode, ImBacklog, ImBacklogReady, Response, Topic, im_request};

use crate::dialect::{RequestBody, ResponseMapper, Unavailable};
use crate::outbound::ConnHandle;
use crate::upstream::Upstream;

/// The largest window asked for, whatever the queue's bounds (the router
/// caps it too): one window travels in one answer.
const MAX_WINDOW_BYTES: usize = 512 * 1024;

/// A failed window is asked for again after this long.
const RETRY_AFTER: Duration = Duration::from_millis(500);

/// The window and the low-water mark for a queue of these bounds:
/// (messages, bytes), each a quarter of the bound, at least 1.
pub fn window_for((messages, bytes): (usize, usize)) -> (usize, usize) {
    (
        (messages / 4).max(1),
        (bytes / 4).clamp(1, MAX_WINDOW_BYTES),
    )
}

/// Starts handing `conn` its backlog on the topic `ready` names; a
/// hand-over already running for the socket stops at its next step.
pub fn start(upstream: &Arc<Upstream>, conn: Arc<ConnHandle>, ready: ImBacklogReady) {
    let Some(topic) = ready.topic else {
        return;
    };
    let run = conn.backlog_run.fetch_add(1, Ordering::Relaxed) + 1;
    tokio::spawn(hand_over(upstream.clone(), conn, topic, run));
}

/// What became of one window.
enum Outcome {
    /// Pushed to the socket; more wait after `cursor`.
    More { cursor: u64 },
    /// Pushed, and it was the last; or the hand-over is over.
    Done,
    /// Not answered: ask again.
    Retry,
}

async fn hand_over(upstream: Arc<Upstream>, conn: Arc<ConnHandle>, topic: Topic, run: u64) {
    let (window_messages, window_bytes) = window_for(conn.bounds());
    let mut after = 0;
    loop {
        if !conn.drained_to(window_messages, window_bytes).await {
            return;
        }
        if conn.backlog_run.load(Ordering::Relaxed) != run {
            return;
        }
        let ask = im_request::Op::Backlog(ImBacklog {
            after,
            max_messages: u32::try_from(window_messages).unwrap_or(u32::MAX),
            max_bytes: u32::try_from(window_bytes).unwrap_or(u32::MAX),
        });
        metrics::counter!("switchboard_edge_im_backlog_windows_total").increment(1);
        let (tx, rx) = tokio::sync::oneshot::channel();
        let socket = conn.clone();
        // Runs where the answer is dispatched, so the window is queued
        // before any delivery the router sent after it (a live message
        // that follows the backlog).
        let on_answer: ResponseMapper = Box::new(move |answer| {
            let _ = tx.send(take_window(&socket, run, answer));
            None
        });
        upstream
            .request(
                &conn,
                topic.clone(),
                RequestBody::Im(Box::new(ask)),
                on_answer,
            )
            .await;
        match rx.await.unwrap_or(Outcome::Retry) {
            Outcome::More { cursor } => after = cursor,
            Outcome::Done => return,
            Outcome::Retry => {
                metrics::counter!("switchboard_edge_im_backlog_retries_total").increment(1);
                tokio::select! {
                    () = tokio::time::sleep(RETRY_AFTER) => {}
                    () = conn.kill.cancelled() => return,
                }
            }
        }
    }
}

/// Queues an answered window on the socket.
fn take_window(conn: &ConnHandle, run: u64, answer: Result<Response, Unavailable>) -> Outcome {
    let window = match answer.map(Response::into_result) {
        Ok(Ok(response)) => response.im.map(|im| *im).unwrap_or_default(),
        // The router no longer holds this socket's backlog (it left the
        // topic, or a new owner started one anew).
        Ok(Err(refusal)) if refusal.code == ErrorCode::NotFound => return Outcome::Done,
        _ => return Outcome::Retry,
    };
    if conn.backlog_run.load(Ordering::Relaxed) != run {
        return Outcome::Done;
    }
    let count = window.backlog.len() as u64;
    for message in window.backlog {
        if !conn.push(message) {
            return Outcome::Done;
        }
    }
    metrics::counter!("switchboard_edge_messages_out_total").increment(count);
    if window.more {
        Outcome::More {
            cursor: window.cursor,
        }
    } else {
        Outcome::Done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_and_its_mark_leave_half_the_queue_free() {
        assert_eq!(window_for((1_024, 4 << 20)), (256, 512 * 1024));
        assert_eq!(window_for((1_024, 1 << 20)), (256, 256 * 1024));
        assert_eq!(window_for((2, 3)), (1, 1), "never zero");
    }
}
