//! IoT dialect: `up.*` requests (separated by 0xFF), every router call
//! answered, then unavailable.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_edge::fuzzing::{Socket, dialect_messages, dialect_messages_unavailable};

fuzz_target!(|data: &[u8]| {
    dialect_messages(Socket::Iot, data);
    dialect_messages_unavailable(Socket::Iot, data);
});
