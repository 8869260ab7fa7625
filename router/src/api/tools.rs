//! A tool call's HTTP answer. Its answer is one JSON body; when the tool
//! reports progress first, the body is streamed as JSON lines: each
//! progress note as it comes, then the answer (or `{"error":…}` when the
//! call fails after its first note).

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, StreamBody};
use hyper::Response;
use hyper::body::Frame;
use serde_json::Value;
use switchboard_common::http::json_response;

use super::jsonrpc::tool_answer;
use super::{ApiBody, ApiError, boxed};
use crate::jsonrpc::tools::{self, PROGRESS_QUEUE, ToolError, ToolRequest};
use crate::node::RouterNode;

/// Runs `call` and answers with the tool's answer, streamed behind its
/// progress notes when it sends any.
pub(super) async fn call(
    node: Arc<RouterNode>,
    call: ToolRequest,
) -> Result<Response<ApiBody>, ApiError> {
    let (progress_tx, mut progress) = tokio::sync::mpsc::channel(PROGRESS_QUEUE);
    // The call runs on its own task: it keeps taking the tool's events
    // (and dropping notes past the progress bound) however slowly the
    // caller reads, so the tool's answer is never crowded out.
    let call = tokio::spawn(async move { tools::call(&node, &call, progress_tx).await });
    let mut running = Box::pin(async move {
        call.await.unwrap_or_else(|e| {
            Err(ToolError::Unavailable(format!(
                "the call's task ended: {e}"
            )))
        })
    });
    // Notes come first: a note sent in the poll that also ends the call
    // is still streamed before the answer.
    let mut finished = None;
    let first_note = tokio::select! {
        biased;
        Some(note) = progress.recv() => note,
        outcome = &mut running => match progress.try_recv() {
            Ok(note) => {
                finished = Some(outcome);
                note
            }
            Err(_) => {
                let answer = outcome?;
                return Ok(boxed(json_response(StatusCode::OK, &tool_answer(&answer))));
            }
        },
    };
    // Lines wait here for a slow reader; while they do, the call's notes
    // wait in (and past its bound, drop out of) the progress queue.
    let (lines, body) =
        tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(PROGRESS_QUEUE);
    let line = |value: &Value| Ok(Frame::data(Bytes::from(format!("{value}\n"))));
    let _ = lines.send(line(&first_note)).await;
    tokio::spawn(async move {
        let outcome = match finished {
            Some(outcome) => outcome,
            None => loop {
                tokio::select! {
                    biased;
                    Some(note) = progress.recv() => {
                        if lines.send(line(&note)).await.is_err() {
                            return;
                        }
                    }
                    outcome = &mut running => break outcome,
                }
            },
        };
        while let Ok(note) = progress.try_recv() {
            if lines.send(line(&note)).await.is_err() {
                return;
            }
        }
        let last = match outcome {
            Ok(answer) => tool_answer(&answer),
            Err(e) => ApiError::from(e).body(),
        };
        let _ = lines.send(line(&last)).await;
    });
    let stream = StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(body));
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(http::header::CONTENT_TYPE, "application/x-ndjson")
        .body(stream.boxed_unsync())?)
}
