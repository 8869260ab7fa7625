//! Tool calls: the server API asks an app tool (appId, toolId) to run a
//! method. The router that takes the call makes an id naming itself,
//! asks the tool topic's owner to hand the request to one tool socket, and
//! waits. The app's answer and its `tool.progress` notes travel back from
//! whichever edge holds the tool socket through any router, which relays
//! them to the router named in the id.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use switchboard_proto::jsonrpc::{call_id, call_router, tool_topic_name};
use switchboard_proto::{
    ErrorCode, Payload, Request, Response, ToolCall, ToolEvent, TopicKind, request,
};
use tokio::sync::mpsc;

use crate::node::{RouterNode, error_response};
use crate::reply::Reply;
use crate::shard::ShardCommand;
use crate::topic::TopicKey;

/// Longest timeout a caller may ask for.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("no tool socket is connected for {app}/{tool}")]
    NotConnected { app: String, tool: String },
    #[error("the tool did not answer within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Unavailable(String),
}

/// What a caller hears while it waits.
enum Heard {
    Progress(Value),
    Answer(Value),
}

/// Calls waiting for an answer on this router.
#[derive(Default)]
pub struct Tools {
    next: AtomicU64,
    waiting: Mutex<HashMap<String, mpsc::UnboundedSender<Heard>>>,
}

/// Removes a waiting call however its caller stops (answer, timeout, drop).
struct Waiting<'a> {
    tools: &'a Tools,
    id: String,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let mut waiting = self.tools.waiting.lock().unwrap_or_else(|e| e.into_inner());
        waiting.remove(&self.id);
    }
}

/// A tool call as the server API takes it.
#[derive(Debug, Clone)]
pub struct ToolRequest {
    pub tenant: String,
    pub app: String,
    pub tool: String,
    pub method: String,
    /// Absent when `Null`.
    pub params: Value,
    pub timeout: Duration,
}

/// Calls the method on a tool socket of (app, tool) and returns the app's
/// JSON-RPC answer object (`{"result":…}` or `{"error":…}`). Progress
/// notes (`{"type":"tool.progress","data":…}`) go to `progress` first.
pub async fn call(
    node: &RouterNode,
    call: &ToolRequest,
    progress: mpsc::UnboundedSender<Value>,
) -> Result<Value, ToolError> {
    let ToolRequest {
        tenant,
        app,
        tool,
        method,
        params,
        timeout,
    } = call;
    let timeout = *timeout;
    let tools = node.tools();
    let id = call_id(tools.next.fetch_add(1, Ordering::Relaxed), node.view_id());
    let (tx, mut rx) = mpsc::unbounded_channel();
    tools
        .waiting
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(id.clone(), tx);
    let _waiting = Waiting {
        tools,
        id: id.clone(),
    };
    let mut frame = json!({"jsonrpc": "2.0", "method": method, "id": id});
    if !params.is_null() {
        frame["params"] = params.clone();
    }
    let topic = TopicKey::new(tenant, TopicKind::Tool, &tool_topic_name(app, tool));
    let response = node
        .request(Request {
            correlation_id: 0,
            body: Some(request::Body::ToolCall(ToolCall {
                topic: Some(topic.to_proto()),
                frame: frame.to_string().into(),
            })),
        })
        .await;
    match ErrorCode::try_from(response.error) {
        Ok(ErrorCode::Unspecified) => {}
        Ok(ErrorCode::NotFound) => {
            return Err(ToolError::NotConnected {
                app: app.clone(),
                tool: tool.clone(),
            });
        }
        _ => return Err(ToolError::Unavailable(response.error_message)),
    }
    metrics::counter!("switchboard_router_tool_calls_total").increment(1);
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(Heard::Progress(note))) => {
                let _ = progress.send(note);
            }
            Ok(Some(Heard::Answer(answer))) => return Ok(answer),
            Ok(None) => return Err(ToolError::Unavailable("router stopping".to_owned())),
            Err(_) => {
                metrics::counter!("switchboard_router_tool_timeouts_total").increment(1);
                return Err(ToolError::Timeout(timeout));
            }
        }
    }
}

/// At the tool topic's owner: hands the call to one tool socket.
pub(crate) async fn dispatch(node: &Arc<RouterNode>, call: ToolCall, reply: Reply) {
    let Some(topic) = call.topic.map(TopicKey::from) else {
        return reply.send(error_response(
            ErrorCode::Invalid,
            "a tool call needs a topic",
        ));
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    node.to_shard(
        &topic.clone(),
        ShardCommand::Dispatch {
            topic,
            payload: Payload::json(call.frame),
            reply: tx,
        },
    )
    .await;
    let response = match rx.await {
        Ok(true) => Response {
            delivered: 1,
            ..Response::default()
        },
        _ => error_response(ErrorCode::NotFound, "no tool socket is connected"),
    };
    reply.send(response);
}

/// Hands an app's answer or progress note to the router waiting for it:
/// this one, or the one its id names.
pub(crate) async fn relay(node: &RouterNode, event: ToolEvent) -> Response {
    let Some(router) = call_router(&event.call_id) else {
        return error_response(ErrorCode::NotFound, "not a call id of this gateway");
    };
    if router != node.view_id() {
        let Some(peer) = node.router_info(router) else {
            return error_response(ErrorCode::NotFound, "the calling router is gone");
        };
        let request = Request {
            correlation_id: 0,
            body: Some(request::Body::ToolEvent(event)),
        };
        return node.forward_to(&peer, request).await;
    }
    let Ok(json) = serde_json::from_slice::<Value>(&event.json) else {
        return error_response(ErrorCode::Invalid, "tool answer is not JSON");
    };
    let heard = if event.progress {
        Heard::Progress(json)
    } else {
        Heard::Answer(json)
    };
    let waiting = node
        .tools()
        .waiting
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    match waiting.get(&event.call_id) {
        Some(tx) if tx.send(heard).is_ok() => Response::default(),
        _ => error_response(ErrorCode::NotFound, "no call waits for this id"),
    }
}
