//! One attached edge: the single owner of that edge's connection table.
//! It turns the edge's frames into shard commands, remembers what each
//! connection subscribed to, and unsubscribes everything when a connection
//! closes or the edge goes away.

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::{Stream, StreamExt};
use switchboard_proto::{
    Dialect, EdgeFrame, ErrorCode, Publish, Request, Response, RouterFrame, edge_frame, request,
};
use tokio::sync::mpsc;

use crate::feature::{self, Ctx};
use crate::node::{Owner, RouterNode, request_topic};
use crate::reply::Reply;
use crate::shard::{EdgeIdx, ShardCommand};
use crate::topic::TopicKey;

struct Connection {
    dialect: Dialect,
    /// The tenant the connection belongs to: from `Opened`, or for a socket
    /// that learns it later (IM, at registration) from its first
    /// subscription. Every subscription must be in it.
    tenant: Option<Arc<str>>,
    /// Each topic with its presence member: a repeated subscription is
    /// found in O(1), however many the connection holds.
    subscriptions: HashMap<TopicKey, Option<Arc<str>>>,
}

pub async fn run<S>(
    node: &Arc<RouterNode>,
    edge: EdgeIdx,
    edge_id: &str,
    mut inbound: S,
    tx: mpsc::Sender<RouterFrame>,
) where
    S: Stream<Item = EdgeFrame> + Unpin,
{
    let mut connections: HashMap<u64, Connection> = HashMap::new();
    while let Some(frame) = inbound.next().await {
        let Some(body) = frame.body else { continue };
        handle(node, edge, edge_id, &mut connections, body, &tx).await;
    }
    tracing::debug!(
        edge_id,
        connections = connections.len(),
        "edge stream ended"
    );
    for (conn, connection) in connections.drain() {
        close(node, edge, conn, connection).await;
    }
}

async fn close(node: &RouterNode, edge: EdgeIdx, conn: u64, connection: Connection) {
    node.stats.add(connection.dialect, -1);
    if let Some(tenant) = &connection.tenant {
        node.stats.add_tenant(tenant, connection.dialect, -1);
    }
    for (topic, member) in connection.subscriptions {
        node.to_shard(
            &topic.clone(),
            ShardCommand::Unsubscribe {
                edge,
                conn,
                topic,
                member,
                moved: false,
            },
        )
        .await;
    }
}

fn out_of_order(what: &'static str, conn: u64) {
    metrics::counter!("switchboard_router_out_of_order_frames_total", "frame" => what).increment(1);
    tracing::debug!(
        conn,
        frame = what,
        "frame for a connection that is not open"
    );
}

async fn handle(
    node: &Arc<RouterNode>,
    edge: EdgeIdx,
    edge_id: &str,
    connections: &mut HashMap<u64, Connection>,
    body: edge_frame::Body,
    tx: &mpsc::Sender<RouterFrame>,
) {
    match body {
        edge_frame::Body::Hello(_) => {}
        edge_frame::Body::Opened(opened) => {
            // A repeated Opened (replay racing a new subscription) must not
            // forget what the connection already subscribed to.
            let dialect = opened.dialect();
            if let std::collections::hash_map::Entry::Vacant(entry) =
                connections.entry(opened.conn_id)
            {
                let tenant = (!opened.tenant.is_empty()).then(|| Arc::from(opened.tenant.as_str()));
                if let Some(tenant) = &tenant {
                    node.stats.add_tenant(tenant, dialect, 1);
                }
                entry.insert(Connection {
                    dialect,
                    tenant,
                    subscriptions: HashMap::new(),
                });
                node.stats.add(dialect, 1);
            }
        }
        edge_frame::Body::Closed(closed) => {
            if let Some(connection) = connections.remove(&closed.conn_id) {
                close(node, edge, closed.conn_id, connection).await;
            }
        }
        edge_frame::Body::Subscribe(subscribe) => {
            let confirm = (subscribe.confirm != 0).then(|| Reply::Edge {
                tx: tx.clone(),
                correlation_id: subscribe.confirm,
            });
            let Some(connection) = connections.get_mut(&subscribe.conn_id) else {
                if let Some(reply) = confirm {
                    reply.send(invalid("subscription for a connection that is not open"));
                }
                return out_of_order("subscribe", subscribe.conn_id);
            };
            let Some(topic) = subscribe.topic.map(TopicKey::from) else {
                if let Some(reply) = confirm {
                    reply.send(invalid("subscription without a topic"));
                }
                return;
            };
            match &connection.tenant {
                Some(tenant) if **tenant != *topic.tenant => {
                    // Edges never send this; a connection is confined to
                    // its tenant whatever an edge asks.
                    metrics::counter!("switchboard_router_cross_tenant_frames_total",
                        "frame" => "subscribe")
                    .increment(1);
                    tracing::warn!(
                        conn = subscribe.conn_id,
                        "subscription outside the connection's tenant refused"
                    );
                    if let Some(reply) = confirm {
                        reply.send(crate::node::error_response(
                            ErrorCode::Forbidden,
                            "a connection subscribes in its own tenant only",
                        ));
                    }
                    return;
                }
                Some(_) => {}
                None => {
                    let tenant: Arc<str> = Arc::from(topic.tenant.as_str());
                    node.stats.add_tenant(&tenant, connection.dialect, 1);
                    connection.tenant = Some(tenant);
                }
            }
            if let std::collections::hash_map::Entry::Vacant(entry) =
                connection.subscriptions.entry(topic.clone())
            {
                let member: Option<Arc<str>> = (!subscribe.presence_member.is_empty())
                    .then(|| Arc::from(subscribe.presence_member.as_str()));
                entry.insert(member.clone());
                node.to_shard(
                    &topic.clone(),
                    ShardCommand::Subscribe {
                        edge,
                        conn: subscribe.conn_id,
                        topic: topic.clone(),
                        member,
                    },
                )
                .await;
            }
            if let Some(reply) = confirm {
                // Once applied: in the shard, or where the topic's feature
                // orders its joins (an IM user's queue).
                let ctx = Ctx {
                    node: node.clone(),
                    reply,
                };
                feature::confirm(ctx, topic).await;
            }
        }
        edge_frame::Body::Unsubscribe(unsubscribe) => {
            let Some(connection) = connections.get_mut(&unsubscribe.conn_id) else {
                return out_of_order("unsubscribe", unsubscribe.conn_id);
            };
            let Some(topic) = unsubscribe.topic.map(TopicKey::from) else {
                return;
            };
            let Some((topic, member)) = connection.subscriptions.remove_entry(&topic) else {
                return;
            };
            node.to_shard(
                &topic.clone(),
                ShardCommand::Unsubscribe {
                    edge,
                    conn: unsubscribe.conn_id,
                    topic,
                    member,
                    moved: unsubscribe.moved,
                },
            )
            .await;
        }
        edge_frame::Body::Touch(touch) => {
            let Some(connection) = connections.get(&touch.conn_id) else {
                return out_of_order("touch", touch.conn_id);
            };
            let Some(topic) = touch.topic.map(TopicKey::from) else {
                return;
            };
            let member = connection.subscriptions.get(&topic).cloned().flatten();
            if let Some(member) = member {
                node.to_shard(&topic.clone(), ShardCommand::Touch { topic, member })
                    .await;
            }
        }
        edge_frame::Body::Heartbeat(_) => {}
        edge_frame::Body::Publish(publish) => {
            let Some(topic) = publish.topic.clone().map(TopicKey::from) else {
                return;
            };
            match (node.owner(&topic), publish.payload) {
                (Owner::Local, Some(payload)) => {
                    node.to_shard(
                        &topic.clone(),
                        ShardCommand::Publish {
                            topic,
                            payload,
                            publish_id: Some(publish.publish_id).filter(|id| !id.is_empty()),
                            reply: None,
                        },
                    )
                    .await;
                }
                (_, payload) => {
                    // Not ours (views differ for a moment): the owner delivers.
                    let node = node.clone();
                    let request = Request {
                        correlation_id: 0,
                        body: Some(request::Body::Publish(Publish { payload, ..publish })),
                    };
                    tokio::spawn(async move { node.request(request).await });
                }
            }
        }
        edge_frame::Body::Request(mut request) => {
            stamp_sender(&mut request, edge_id);
            let reply = Reply::Edge {
                tx: tx.clone(),
                correlation_id: request.correlation_id,
            };
            if let Some(request::Body::Collect(_)) = request.body {
                // Asked of this router on purpose (a sync after subscribing,
                // or a peer collecting): answer from here, after the frames
                // this edge sent before it.
                return node.request_here_to(request, reply).await;
            }
            let Some(topic) = request_topic(&request) else {
                return reply.send(invalid("request without a topic"));
            };
            if let Owner::Local = node.owner(&topic) {
                node.request_here_to(request, reply).await;
            } else {
                let node = node.clone();
                tokio::spawn(async move { reply.send(node.request(request).await) });
            }
        }
    }
}

/// Names the edge a request came from by this session, never by what the
/// edge wrote: a tool answer is taken only from the socket (edge and
/// connection) its call was handed to, and an IM echo skips the sender.
fn stamp_sender(request: &mut Request, edge_id: &str) {
    match &mut request.body {
        Some(request::Body::ToolEvent(event)) => edge_id.clone_into(&mut event.from_edge),
        Some(request::Body::Im(im)) => edge_id.clone_into(&mut im.from_edge),
        _ => {}
    }
}

fn invalid(message: &str) -> Response {
    crate::node::error_response(ErrorCode::Invalid, message)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use switchboard_proto::{ConnectionClosed, ConnectionOpened, Subscribe, Topic};
    use tokio_stream::wrappers::ReceiverStream;
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::node::NodeConfig;
    use crate::store::MemoryStore;

    fn opened(conn: u64) -> EdgeFrame {
        edge_frame::Body::Opened(ConnectionOpened {
            conn_id: conn,
            tenant: "t".into(),
            principal: format!("c{conn}"),
            kind: String::new(),
            dialect: Dialect::Group as i32,
        })
        .into()
    }

    fn subscribe(conn: u64, member: &str) -> EdgeFrame {
        edge_frame::Body::Subscribe(Subscribe {
            conn_id: conn,
            topic: Some(Topic::group("t", "g")),
            presence_member: member.into(),
            confirm: 0,
        })
        .into()
    }

    async fn members(node: &RouterNode) -> Vec<String> {
        let topic = TopicKey::new("t", switchboard_proto::TopicKind::Group, "g");
        node.presence(topic).await.unwrap().members
    }

    async fn eventually(node: &RouterNode, expected: &[&str]) {
        for _ in 0..100 {
            if members(node).await == expected {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(members(node).await, expected);
    }

    /// A node with one edge attached through a channel.
    fn attached_edge() -> (
        Arc<RouterNode>,
        mpsc::Sender<EdgeFrame>,
        mpsc::Receiver<RouterFrame>,
        CancellationToken,
    ) {
        let stop = CancellationToken::new();
        let node = RouterNode::start(
            NodeConfig::default(),
            Arc::new(MemoryStore::new(90_000)),
            stop.clone(),
        );
        let (tx, rx) = mpsc::channel(16);
        let downstream = node
            .attach("edge-1".into(), ReceiverStream::new(rx))
            .expect("the only edge");
        (node, tx, downstream, stop)
    }

    #[tokio::test]
    async fn repeated_open_keeps_subscriptions_and_close_cleans_up() {
        let (node, tx, _downstream, stop) = attached_edge();
        tx.send(opened(1)).await.unwrap();
        tx.send(subscribe(1, "alice")).await.unwrap();
        tx.send(opened(1)).await.unwrap();
        eventually(&node, &["alice"]).await;
        assert_eq!(node.stats.connections(Dialect::Group), 1, "counted once");
        tx.send(edge_frame::Body::Closed(ConnectionClosed { conn_id: 1 }).into())
            .await
            .unwrap();
        eventually(&node, &[]).await;
        assert_eq!(node.stats.connections(Dialect::Group), 0);
        stop.cancel();
    }

    #[tokio::test]
    async fn a_live_edge_id_is_held_by_one_session_until_it_ends() {
        let (node, tx, _downstream, stop) = attached_edge();
        tx.send(opened(1)).await.unwrap();
        tx.send(subscribe(1, "alice")).await.unwrap();
        eventually(&node, &["alice"]).await;
        let (_other_tx, other_rx) = mpsc::channel(16);
        assert!(matches!(
            node.attach("edge-1".into(), ReceiverStream::new(other_rx)),
            Err(crate::node::AttachError::AlreadyAttached)
        ));
        // The live session is untouched.
        eventually(&node, &["alice"]).await;
        assert_eq!(node.edges(), vec!["edge-1".to_owned()]);
        drop(tx);
        eventually(&node, &[]).await;
        for _ in 0..100 {
            if node.edges().is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let (_again_tx, again_rx) = mpsc::channel(16);
        assert!(
            node.attach("edge-1".into(), ReceiverStream::new(again_rx))
                .is_ok(),
            "the id is free once its session ended"
        );
        stop.cancel();
    }

    #[tokio::test]
    async fn a_lost_edge_takes_its_connections_with_it() {
        let (node, tx, _downstream, stop) = attached_edge();
        for (conn, member) in [(1, "alice"), (2, "bob")] {
            tx.send(opened(conn)).await.unwrap();
            tx.send(subscribe(conn, member)).await.unwrap();
        }
        // A frame for a connection that was never opened is ignored.
        tx.send(subscribe(9, "mallory")).await.unwrap();
        eventually(&node, &["alice", "bob"]).await;
        drop(tx);
        eventually(&node, &[]).await;
        assert!(node.edges().is_empty());
        stop.cancel();
    }

    /// The next response on the edge's stream, skipping deliveries.
    async fn next_response(downstream: &mut mpsc::Receiver<RouterFrame>) -> Response {
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(5), downstream.recv())
                .await
                .expect("an answer in time")
                .expect("the session is open");
            if let Some(switchboard_proto::router_frame::Body::Response(response)) = frame.body {
                return response;
            }
        }
    }

    fn confirmed(conn: u64, topic: Topic, confirm: u64) -> EdgeFrame {
        edge_frame::Body::Subscribe(Subscribe {
            conn_id: conn,
            topic: Some(topic),
            presence_member: String::new(),
            confirm,
        })
        .into()
    }

    #[tokio::test]
    async fn a_subscription_that_asks_is_confirmed_once_applied() {
        let (_node, tx, mut downstream, stop) = attached_edge();
        tx.send(opened(1)).await.unwrap();
        // A group topic: the confirmation lists the socket as subscribed.
        tx.send(confirmed(1, Topic::group("t", "g"), 7))
            .await
            .unwrap();
        let response = next_response(&mut downstream).await;
        assert_eq!((response.correlation_id, response.error), (7, 0));
        assert_eq!(response.targets.len(), 1);
        assert_eq!(response.targets[0].conn_ids, vec![1]);
        // An IM user topic: confirmed through the user's queue, after the
        // join; asking again for the same topic is confirmed too.
        for correlation_id in [8, 9] {
            tx.send(confirmed(1, Topic::im_user("t", "bob"), correlation_id))
                .await
                .unwrap();
            let response = next_response(&mut downstream).await;
            assert_eq!(
                (response.correlation_id, response.error),
                (correlation_id, 0)
            );
            assert_eq!(response.targets[0].conn_ids, vec![1]);
        }
        // Outside the connection's tenant: refused, and said so.
        tx.send(confirmed(1, Topic::group("u", "g"), 10))
            .await
            .unwrap();
        let response = next_response(&mut downstream).await;
        assert_eq!(
            (response.correlation_id, response.error),
            (10, ErrorCode::Forbidden as i32)
        );
        // For a connection never opened: refused as invalid.
        tx.send(confirmed(5, Topic::group("t", "g"), 11))
            .await
            .unwrap();
        let response = next_response(&mut downstream).await;
        assert_eq!(
            (response.correlation_id, response.error),
            (11, ErrorCode::Invalid as i32)
        );
        stop.cancel();
    }

    /// Waits until `check` holds of the node's stats.
    async fn stats_reach(node: &RouterNode, check: impl Fn(&crate::node::Stats) -> bool) {
        for _ in 0..200 {
            if check(&node.stats) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("stats never reached the expected counts");
    }

    #[tokio::test]
    async fn a_connection_stays_in_its_tenant_and_is_counted_there() {
        let (node, tx, _downstream, stop) = attached_edge();
        // Opened in tenant t: a subscription in tenant u is refused.
        tx.send(opened(1)).await.unwrap();
        tx.send(
            edge_frame::Body::Subscribe(Subscribe {
                conn_id: 1,
                topic: Some(Topic::group("u", "g")),
                presence_member: "mallory".into(),
                confirm: 0,
            })
            .into(),
        )
        .await
        .unwrap();
        // The sentinel: a subscription in its own tenant arrives after it.
        tx.send(subscribe(1, "alice")).await.unwrap();
        eventually(&node, &["alice"]).await;
        let foreign = TopicKey::new("u", switchboard_proto::TopicKind::Group, "g");
        assert!(node.presence(foreign).await.unwrap().members.is_empty());
        assert_eq!(node.stats.tenant_connections("t", Dialect::Group), 1);
        assert_eq!(node.stats.tenant_connections("u", Dialect::Group), 0);
        // A connection opened without a tenant (IM before registering)
        // takes its first subscription's, and is counted there from then.
        tx.send(
            edge_frame::Body::Opened(ConnectionOpened {
                conn_id: 2,
                tenant: String::new(),
                principal: String::new(),
                kind: String::new(),
                dialect: Dialect::Im as i32,
            })
            .into(),
        )
        .await
        .unwrap();
        stats_reach(&node, |s| s.connections(Dialect::Im) == 1).await;
        assert_eq!(node.stats.tenants(), vec!["t".to_owned()]);
        tx.send(
            edge_frame::Body::Subscribe(Subscribe {
                conn_id: 2,
                topic: Some(Topic::im_user("v", "bob")),
                presence_member: String::new(),
                confirm: 0,
            })
            .into(),
        )
        .await
        .unwrap();
        stats_reach(&node, |s| s.tenant_connections("v", Dialect::Im) == 1).await;
        for conn in [1, 2] {
            tx.send(edge_frame::Body::Closed(ConnectionClosed { conn_id: conn }).into())
                .await
                .unwrap();
        }
        stats_reach(&node, |s| s.tenants().is_empty()).await;
        assert_eq!(node.stats.connections(Dialect::Group), 0);
        stop.cancel();
    }
}
