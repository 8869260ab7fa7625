//! Frame layer: raw client bytes after the upgrade through fastwebsockets'
//! reader (masking, lengths, control frames) and the edge's reassembly,
//! UTF-8 and close-frame checks, with a small message limit so the caps
//! are reached.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_edge::fuzzing::{Read, read_frames};

/// Small, so fuzzed inputs reach the per-frame and per-message caps.
const MAX_MESSAGE: usize = 256;

fuzz_target!(|data: &[u8]| {
    let events = read_frames(data, MAX_MESSAGE);
    for (i, event) in events.iter().enumerate() {
        match event {
            Read::Text(text) => assert!(text.len() <= MAX_MESSAGE, "message over the cap"),
            Read::Pong(payload) => assert!(payload.len() <= 125, "pong over 125 bytes"),
            Read::Close(code) => {
                assert_eq!(i + 1, events.len(), "events after a close");
                assert!(
                    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999),
                    "close code {code} may not be sent"
                );
            }
        }
    }
});
