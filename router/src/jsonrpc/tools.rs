//! Tool calls: the server API asks an app tool (appId, toolId) to run a
//! method. The router that takes the call makes an id naming itself (and
//! 128 random bits, so nobody guesses it), asks the tool topic's owner to
//! hand the request to one tool socket, and waits. The owner answers which
//! socket (edge id, connection id) got it. The app's answer and its
//! `tool.progress` notes travel back from whichever edge holds the tool
//! socket through any router, which relays them to the router named in the
//! id, stamped with the edge session they came on; the waiting router
//! takes them only from the socket it handed the call to, and drops and
//! counts everything else.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use switchboard_proto::jsonrpc::{call_id, call_router, tool_topic_name};
use switchboard_proto::{
    EdgeTargets, ErrorCode, Payload, Request, Response, RouterRefusal, ToolCall, ToolEvent,
    TopicKind, request,
};
use tokio::sync::mpsc;

use crate::node::{NodeError, RouterNode, error_response};
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

/// One tool socket: the edge (as its router session names it) and the
/// connection on that edge.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Socket {
    edge: String,
    conn: u64,
}

/// An event for a waiting call, with the socket it came from.
struct Event {
    from: Socket,
    topic: Option<TopicKey>,
    heard: Heard,
}

/// Events queued for one waiting call before it reads them; more are a
/// flood (nobody sends hundreds of progress notes between two reads) and
/// are dropped.
const EVENT_QUEUE: usize = 256;
/// Progress notes waiting for a slow caller (an HTTP body nobody reads, a
/// NATS relay); past this, notes are dropped and counted, never buffered.
pub const PROGRESS_QUEUE: usize = 256;

/// Calls waiting for an answer on this router.
#[derive(Default)]
pub struct Tools {
    waiting: Mutex<HashMap<String, mpsc::Sender<Event>>>,
}

/// Why an answer or progress note was not taken (a bounded label).
fn refused(reason: &'static str) {
    metrics::counter!("switchboard_router_tool_answers_refused_total", "reason" => reason)
        .increment(1);
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
    progress: mpsc::Sender<Value>,
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
    let id = call_id(rand::random::<u128>(), node.view_id());
    let (tx, mut rx) = mpsc::channel(EVENT_QUEUE);
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
    let handed = node
        .call(Request {
            correlation_id: 0,
            body: Some(request::Body::ToolCall(ToolCall {
                topic: Some(topic.to_proto()),
                frame: frame.to_string().into(),
            })),
        })
        .await;
    let sent_to = match handed {
        Ok(answer) => handed_to(&answer).ok_or_else(|| {
            ToolError::Unavailable(
                "the tool topic's owner did not say which socket took the call".to_owned(),
            )
        })?,
        Err(NodeError::Refused(RouterRefusal {
            code: ErrorCode::NotFound,
            ..
        })) => {
            return Err(ToolError::NotConnected {
                app: app.clone(),
                tool: tool.clone(),
            });
        }
        Err(e) => return Err(ToolError::Unavailable(e.to_string())),
    };
    metrics::counter!("switchboard_router_tool_calls_total").increment(1);
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            // Events that came before the owner's answer wait in the queue,
            // so they are checked here too.
            Ok(Some(event)) if event.from != sent_to || event.topic.as_ref() != Some(&topic) => {
                refused("wrong_socket");
                tracing::debug!(call_id = %id, "tool event from a socket the call was not sent to");
            }
            Ok(Some(Event {
                heard: Heard::Progress(note),
                ..
            })) => {
                if let Err(mpsc::error::TrySendError::Full(_)) = progress.try_send(note) {
                    metrics::counter!("switchboard_router_tool_progress_dropped_total")
                        .increment(1);
                }
            }
            Ok(Some(Event {
                heard: Heard::Answer(answer),
                ..
            })) => return Ok(answer),
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
    let taken = rx
        .await
        .ok()
        .flatten()
        .and_then(|(edge, conn)| Some((node.edge_link(edge)?.0, conn)));
    let response = match taken {
        Some((edge_id, conn)) => Response {
            delivered: 1,
            targets: vec![EdgeTargets {
                edge_id,
                conn_ids: vec![conn],
            }],
            ..Response::default()
        },
        None => error_response(ErrorCode::NotFound, "no tool socket is connected"),
    };
    reply.send(response);
}

/// The one socket a dispatched call went to, from the owner's answer.
fn handed_to(response: &Response) -> Option<Socket> {
    match response.targets.as_slice() {
        [EdgeTargets { edge_id, conn_ids }] if !edge_id.is_empty() => match conn_ids.as_slice() {
            [conn] => Some(Socket {
                edge: edge_id.clone(),
                conn: *conn,
            }),
            _ => None,
        },
        _ => None,
    }
}

/// Hands an app's answer or progress note to the router waiting for it:
/// this one, or the one its id names.
pub(crate) async fn relay(node: &RouterNode, event: ToolEvent) -> Response {
    let Some(router) = call_router(&event.call_id) else {
        refused("unknown_call");
        return error_response(ErrorCode::NotFound, "not a call id of this gateway");
    };
    if router != node.view_id() {
        let Some(peer) = node.router_info(router) else {
            refused("unknown_call");
            return error_response(ErrorCode::NotFound, "the calling router is gone");
        };
        let request = Request {
            correlation_id: 0,
            body: Some(request::Body::ToolEvent(event)),
        };
        return node.forward_to(&peer, request).await;
    }
    let event_call_id = event.call_id.clone();
    let Ok(json) = serde_json::from_slice::<Value>(&event.json) else {
        return error_response(ErrorCode::Invalid, "tool answer is not JSON");
    };
    let heard = if event.progress {
        Heard::Progress(json)
    } else {
        Heard::Answer(json)
    };
    let event = Event {
        from: Socket {
            edge: event.from_edge,
            conn: event.from_conn,
        },
        topic: event.topic.map(TopicKey::from),
        heard,
    };
    let waiting = node
        .tools()
        .waiting
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let Some(tx) = waiting.get(&event_call_id) else {
        refused("unknown_call");
        return error_response(ErrorCode::NotFound, "no call waits for this id");
    };
    match tx.try_send(event) {
        Ok(()) => Response::default(),
        Err(mpsc::error::TrySendError::Full(_)) => {
            refused("flood");
            error_response(ErrorCode::Internal, "too many events queued for this call")
        }
        Err(mpsc::error::TrySendError::Closed(_)) => {
            refused("unknown_call");
            error_response(ErrorCode::NotFound, "no call waits for this id")
        }
    }
}
