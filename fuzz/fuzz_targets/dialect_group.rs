//! Group dialect: client messages (separated by 0xFF) on a V3 and a V2
//! socket, every router call answered, then unavailable.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_edge::fuzzing::{Socket, dialect_messages, dialect_messages_unavailable};

fuzz_target!(|data: &[u8]| {
    for socket in [Socket::GroupV3, Socket::GroupV2] {
        dialect_messages(socket, data);
        dialect_messages_unavailable(socket, data);
    }
});
