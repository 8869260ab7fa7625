//! Router envelopes: the bytes are read as length-delimited `EdgeFrame`s
//! (as an edge's stream carries them) and handed to a fresh router as one
//! edge's session. The whole input is also decoded as a `RouterFrame` and
//! a `Request` (what edges and peers decode), and what decodes must
//! survive an encode/decode round trip.
#![no_main]

use bytes::Buf;
use libfuzzer_sys::fuzz_target;
use prost::Message;
use switchboard_proto::{EdgeFrame, Request, RouterFrame};

fn round_trip<M: Message + Default + PartialEq + std::fmt::Debug>(data: &[u8]) {
    if let Ok(message) = M::decode(data) {
        let again =
            M::decode(message.encode_to_vec().as_slice()).expect("re-encoded message decodes");
        assert_eq!(message, again, "round trip changed the message");
    }
}

fuzz_target!(|data: &[u8]| {
    round_trip::<RouterFrame>(data);
    round_trip::<Request>(data);
    let mut buf = data;
    let mut frames = Vec::new();
    while buf.has_remaining() && frames.len() < 64 {
        match EdgeFrame::decode_length_delimited(&mut buf) {
            Ok(frame) => frames.push(frame),
            Err(_) => break,
        }
    }
    if frames.is_empty() {
        return;
    }
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
    else {
        return;
    };
    runtime.block_on(switchboard_router::fuzzing::edge_frames(frames));
});
