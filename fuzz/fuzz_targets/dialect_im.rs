//! IM dialect: messages (separated by 0xFF) on one socket; a register
//! message is answered as a success, so later messages are read as a
//! registered user's. Then the same with the router unavailable.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_edge::fuzzing::{Socket, dialect_messages, dialect_messages_unavailable};

fuzz_target!(|data: &[u8]| {
    dialect_messages(Socket::Im, data);
    dialect_messages_unavailable(Socket::Im, data);
});
