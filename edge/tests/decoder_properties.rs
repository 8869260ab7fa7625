//! Properties of the edge's decoders, on the same entry points as the fuzz
//! targets (`fuzz/`): the frame layer's reassembly, UTF-8 and close checks,
//! and each dialect's handling of arbitrary client messages.

use proptest::prelude::*;
use switchboard_edge::fuzzing::{
    MESSAGE_SEPARATOR, Read, Socket, dialect_messages, dialect_messages_unavailable, read_frames,
};

const MAX_MESSAGE: usize = 512;

const SOCKETS: [Socket; 7] = [
    Socket::GroupV3,
    Socket::GroupV2,
    Socket::Iot,
    Socket::JsonRpcUser,
    Socket::JsonRpcApp,
    Socket::JsonRpcHardware,
    Socket::Im,
];

/// One client frame: masked, as RFC 6455 requires of clients.
fn client_frame(fin: bool, opcode: u8, mask: [u8; 4], payload: &[u8]) -> Vec<u8> {
    let mut out = vec![(u8::from(fin) << 7) | opcode];
    match payload.len() {
        len @ 0..=125 => out.push(0x80 | len as u8),
        len @ 126..=65535 => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        len => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// `message` cut at `cuts` (positions, in any order, repeats allowed) into
/// a text frame and continuations; a ping after each fragment when `pings`.
fn fragmented(message: &[u8], cuts: &[usize], mask: [u8; 4], pings: bool) -> Vec<u8> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (message.len() + 1)).collect();
    points.push(0);
    points.push(message.len());
    points.sort_unstable();
    points.dedup();
    // A message with no bytes is one empty frame.
    let pieces: Vec<&[u8]> = if points.len() < 2 {
        vec![message]
    } else {
        points.windows(2).map(|w| &message[w[0]..w[1]]).collect()
    };
    let mut out = Vec::new();
    for (i, piece) in pieces.iter().enumerate() {
        let opcode = if i == 0 { 0x1 } else { 0x0 };
        out.extend(client_frame(i + 1 == pieces.len(), opcode, mask, piece));
        if pings && i + 1 < pieces.len() {
            out.extend(client_frame(true, 0x9, mask, b"p"));
        }
    }
    out
}

proptest! {
    /// However a message is cut into fragments, and whatever control
    /// frames come between them, the dialect gets the message whole.
    #[test]
    fn any_fragmentation_yields_the_message(
        message in "\\PC{0,120}",
        cuts in prop::collection::vec(any::<usize>(), 0..8),
        mask in any::<[u8; 4]>(),
        pings in any::<bool>(),
    ) {
        prop_assume!(message.len() <= MAX_MESSAGE);
        let events = read_frames(&fragmented(message.as_bytes(), &cuts, mask, pings), MAX_MESSAGE);
        let texts: Vec<&Read> = events.iter().filter(|e| !matches!(e, Read::Pong(_))).collect();
        let whole = Read::Text(message.clone());
        prop_assert_eq!(texts, vec![&whole]);
        for event in &events {
            if let Read::Pong(payload) = event {
                prop_assert_eq!(&payload[..], b"p");
            }
        }
    }

    /// A message over the limit is refused with 1009 however it is cut,
    /// and nothing of it reaches the dialect.
    #[test]
    fn a_message_over_the_limit_closes_with_1009(
        extra in 1usize..64,
        cuts in prop::collection::vec(any::<usize>(), 0..8),
        mask in any::<[u8; 4]>(),
    ) {
        let message = vec![b'a'; MAX_MESSAGE + extra];
        let events = read_frames(&fragmented(&message, &cuts, mask, false), MAX_MESSAGE);
        prop_assert_eq!(events, vec![Read::Close(1009)]);
    }

    /// Arbitrary bytes never panic the frame layer; a close is the last
    /// event and carries a code an endpoint may send; no message exceeds
    /// the limit.
    #[test]
    fn arbitrary_bytes_end_in_a_valid_close(input in prop::collection::vec(any::<u8>(), 0..512)) {
        let events = read_frames(&input, MAX_MESSAGE);
        for (i, event) in events.iter().enumerate() {
            match event {
                Read::Text(text) => prop_assert!(text.len() <= MAX_MESSAGE),
                Read::Pong(payload) => prop_assert!(payload.len() <= 125),
                Read::Close(code) => {
                    prop_assert_eq!(i + 1, events.len());
                    prop_assert!(matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999));
                }
            }
        }
    }

    /// A text message that is not UTF-8 is closed with 1007, whole or in
    /// fragments.
    #[test]
    fn invalid_utf8_closes_with_1007(
        prefix in "[a-z]{0,20}",
        cuts in prop::collection::vec(any::<usize>(), 0..4),
        mask in any::<[u8; 4]>(),
    ) {
        let mut message = prefix.into_bytes();
        message.extend_from_slice(&[0xC3, 0x28]);
        let events = read_frames(&fragmented(&message, &cuts, mask, false), MAX_MESSAGE);
        prop_assert_eq!(events, vec![Read::Close(1007)]);
    }

    /// Whatever a client sends, every dialect answers without panicking,
    /// and every frame it sends back is JSON (the JSON-RPC `pong` to a
    /// `ping` aside).
    #[test]
    fn dialects_answer_arbitrary_messages_with_json(
        messages in prop::collection::vec(
            prop_oneof![
                "\\PC{0,64}",
                // JSON-shaped input reaches past the parsers.
                r#"\{"(id|type|method|jsonrpc|msg|target|to_id|body|handler|from|to)":("[a-z0-9._]{0,8}"|[0-9]{1,4}|null|\{\}|\[\])\}"#,
            ],
            1..4,
        ),
    ) {
        let mut bytes = Vec::new();
        for (i, message) in messages.iter().enumerate() {
            if i > 0 {
                bytes.push(MESSAGE_SEPARATOR);
            }
            bytes.extend_from_slice(message.as_bytes());
        }
        for socket in SOCKETS {
            for frame in dialect_messages(socket, &bytes)
                .into_iter()
                .chain(dialect_messages_unavailable(socket, &bytes))
            {
                if &frame[..] == b"pong" {
                    continue;
                }
                prop_assert!(
                    serde_json::from_slice::<serde_json::Value>(&frame).is_ok(),
                    "{:?} sent a frame that is not JSON: {:?}",
                    socket,
                    String::from_utf8_lossy(&frame)
                );
            }
        }
    }

    /// A JSON-RPC error answer carries the call's id exactly as the client
    /// wrote it.
    #[test]
    fn jsonrpc_answers_keep_the_id_as_written(
        id in prop_oneof![
            any::<i64>().prop_map(|n| n.to_string()),
            "[a-zA-Z0-9 _.-]{0,16}".prop_map(|s| format!("\"{s}\"")),
        ],
    ) {
        let call = format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"no.such.method"}}"#);
        let replies = dialect_messages(Socket::JsonRpcUser, call.as_bytes());
        let expected: serde_json::Value = serde_json::from_str(&id).expect("a JSON id");
        let answered = replies.iter().any(|frame| {
            serde_json::from_slice::<serde_json::Value>(frame)
                .is_ok_and(|reply| reply["id"] == expected && reply.get("error").is_some())
        });
        prop_assert!(answered, "no error answer with id {}", id);
    }
}
