//! Properties of an edge's session at the router: any sequence of frames,
//! in any order and for connections opened or not, is taken without a
//! panic, the session ends when the edge goes away, and every response the
//! edge gets answers a request it sent.

use std::collections::HashSet;

use proptest::prelude::*;
use switchboard_proto::{
    ConnectionClosed, ConnectionOpened, EdgeFrame, Payload, PresenceQuery, Publish, Request,
    Subscribe, Topic, Touch, Unsubscribe, edge_frame, request, router_frame,
};

/// Few tenants, kinds and names, so frames meet the same topics.
fn topic() -> impl Strategy<Value = Topic> {
    (
        prop::sample::select(vec!["t", "u", ""]),
        0i32..8,
        prop::sample::select(vec!["g", "h", ""]),
    )
        .prop_map(|(tenant, kind, name)| Topic {
            tenant: tenant.to_owned(),
            kind,
            name: name.to_owned(),
        })
}

fn frame() -> impl Strategy<Value = EdgeFrame> {
    let conn = 0u64..4;
    let body = prop_oneof![
        (conn.clone(), prop::sample::select(vec!["t", ""]), 0i32..7).prop_map(
            |(conn_id, tenant, dialect)| {
                edge_frame::Body::Opened(ConnectionOpened {
                    conn_id,
                    tenant: tenant.to_owned(),
                    principal: format!("c{conn_id}"),
                    kind: String::new(),
                    dialect,
                })
            }
        ),
        conn.clone()
            .prop_map(|conn_id| edge_frame::Body::Closed(ConnectionClosed { conn_id })),
        (
            conn.clone(),
            prop::option::of(topic()),
            prop::sample::select(vec!["", "a", "b"]),
            prop::option::of(1u64..1000),
        )
            .prop_map(|(conn_id, topic, member, confirm)| {
                edge_frame::Body::Subscribe(Subscribe {
                    conn_id,
                    topic,
                    presence_member: member.to_owned(),
                    confirm: confirm.unwrap_or(0),
                })
            }),
        (conn.clone(), prop::option::of(topic()), any::<bool>()).prop_map(
            |(conn_id, topic, moved)| {
                edge_frame::Body::Unsubscribe(Unsubscribe {
                    conn_id,
                    topic,
                    moved,
                })
            }
        ),
        (conn.clone(), prop::option::of(topic()))
            .prop_map(|(conn_id, topic)| edge_frame::Body::Touch(Touch { conn_id, topic })),
        (prop::option::of(topic()), conn.clone(), "[a-c]{0,2}").prop_map(
            |(topic, from_conn, publish_id)| {
                edge_frame::Body::Publish(Publish {
                    topic,
                    payload: Some(Payload::json(&b"{}"[..])),
                    from_conn,
                    publish_id,
                })
            }
        ),
        (1u64..1000, prop::option::of(topic()), 0u64..5, 0u32..3).prop_map(
            |(correlation_id, topic, offset, limit)| {
                edge_frame::Body::Request(Request {
                    correlation_id,
                    body: Some(request::Body::History(switchboard_proto::HistoryRead {
                        topic,
                        since: Some(switchboard_proto::Position {
                            epoch: "e".into(),
                            offset,
                        }),
                        limit,
                    })),
                })
            }
        ),
        (1u64..1000, prop::option::of(topic())).prop_map(|(correlation_id, topic)| {
            edge_frame::Body::Request(Request {
                correlation_id,
                body: Some(request::Body::Presence(PresenceQuery { topic })),
            })
        }),
        (1u64..1000, prop::option::of(topic())).prop_map(|(correlation_id, topic)| {
            edge_frame::Body::Request(Request {
                correlation_id,
                body: Some(request::Body::Publish(Publish {
                    topic,
                    payload: Some(Payload::json(&b"{}"[..])),
                    from_conn: 0,
                    publish_id: String::new(),
                })),
            })
        }),
    ];
    prop::option::of(body).prop_map(|body| EdgeFrame { body })
}

proptest! {
    #[test]
    fn any_frames_are_taken_and_responses_answer_requests(
        frames in prop::collection::vec(frame(), 0..24),
    ) {
        let asked: HashSet<u64> = frames
            .iter()
            .filter_map(|f| match &f.body {
                Some(edge_frame::Body::Request(r)) => Some(r.correlation_id),
                // A subscription that asks to be confirmed is a request too.
                Some(edge_frame::Body::Subscribe(s)) if s.confirm != 0 => Some(s.confirm),
                _ => None,
            })
            .collect();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a runtime");
        let sent = runtime.block_on(switchboard_router::fuzzing::edge_frames(frames));
        for frame in sent {
            if let Some(router_frame::Body::Response(response)) = frame.body {
                prop_assert!(
                    asked.contains(&response.correlation_id),
                    "response to {} that was never asked",
                    response.correlation_id
                );
            }
        }
    }
}
