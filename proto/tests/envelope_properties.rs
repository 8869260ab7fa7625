//! Properties of the envelope codec: frames survive encoding, a stream of
//! length-delimited frames decodes to the same frames, and arbitrary bytes
//! never panic the decoders.

use proptest::prelude::*;
use prost::Message;
use switchboard_proto::{
    ConnectionClosed, ConnectionOpened, EdgeFrame, Payload, PresenceQuery, Publish, Request,
    RouterFrame, Subscribe, Topic, Touch, Unsubscribe, edge_frame, request,
};

fn topic() -> impl Strategy<Value = Topic> {
    ("\\PC{0,12}", 0i32..20, "\\PC{0,12}").prop_map(|(tenant, kind, name)| Topic {
        tenant,
        kind,
        name,
    })
}

fn edge_frame() -> impl Strategy<Value = EdgeFrame> {
    let body = prop_oneof![
        (any::<u64>(), "\\PC{0,12}", "\\PC{0,12}", any::<i32>()).prop_map(
            |(conn_id, tenant, principal, dialect)| {
                edge_frame::Body::Opened(ConnectionOpened {
                    conn_id,
                    tenant,
                    principal,
                    kind: String::new(),
                    dialect,
                })
            }
        ),
        any::<u64>().prop_map(|conn_id| edge_frame::Body::Closed(ConnectionClosed { conn_id })),
        (
            any::<u64>(),
            prop::option::of(topic()),
            "\\PC{0,8}",
            any::<u64>()
        )
            .prop_map(|(conn_id, topic, presence_member, confirm)| {
                edge_frame::Body::Subscribe(Subscribe {
                    conn_id,
                    topic,
                    presence_member,
                    confirm,
                })
            }),
        (any::<u64>(), prop::option::of(topic()), any::<bool>()).prop_map(
            |(conn_id, topic, moved)| {
                edge_frame::Body::Unsubscribe(Unsubscribe {
                    conn_id,
                    topic,
                    moved,
                })
            }
        ),
        (any::<u64>(), prop::option::of(topic()))
            .prop_map(|(conn_id, topic)| edge_frame::Body::Touch(Touch { conn_id, topic })),
        (
            prop::option::of(topic()),
            prop::collection::vec(any::<u8>(), 0..64),
            any::<u64>(),
            "\\PC{0,8}"
        )
            .prop_map(|(topic, json, from_conn, publish_id)| {
                edge_frame::Body::Publish(Publish {
                    topic,
                    payload: Some(Payload::json(json)),
                    from_conn,
                    publish_id,
                })
            }),
        (any::<u64>(), prop::option::of(topic())).prop_map(|(correlation_id, topic)| {
            edge_frame::Body::Request(Request {
                correlation_id,
                body: Some(request::Body::Presence(PresenceQuery { topic })),
            })
        }),
    ];
    prop::option::of(body).prop_map(|body| EdgeFrame { body })
}

proptest! {
    #[test]
    fn edge_frames_survive_encoding(frame in edge_frame()) {
        let decoded = EdgeFrame::decode(frame.encode_to_vec().as_slice());
        prop_assert_eq!(decoded, Ok(frame));
    }

    /// A stream of length-delimited frames, as a transport carries them,
    /// decodes to the frames in order with nothing left over.
    #[test]
    fn a_delimited_stream_decodes_to_its_frames(frames in prop::collection::vec(edge_frame(), 0..8)) {
        let mut stream = Vec::new();
        for frame in &frames {
            frame.encode_length_delimited(&mut stream).expect("a Vec grows");
        }
        let mut rest = stream.as_slice();
        let mut decoded = Vec::new();
        while !rest.is_empty() {
            decoded.push(EdgeFrame::decode_length_delimited(&mut rest).expect("a frame"));
        }
        prop_assert_eq!(decoded, frames);
    }

    /// Arbitrary bytes never panic the decoders, and whatever decodes
    /// encodes to bytes that decode to it again.
    #[test]
    fn arbitrary_bytes_decode_or_fail_cleanly(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        if let Ok(frame) = EdgeFrame::decode(bytes.as_slice()) {
            prop_assert_eq!(EdgeFrame::decode(frame.encode_to_vec().as_slice()), Ok(frame));
        }
        if let Ok(frame) = RouterFrame::decode(bytes.as_slice()) {
            prop_assert_eq!(RouterFrame::decode(frame.encode_to_vec().as_slice()), Ok(frame));
        }
        if let Ok(request) = Request::decode(bytes.as_slice()) {
            prop_assert_eq!(Request::decode(request.encode_to_vec().as_slice()), Ok(request));
        }
    }
}
