//! JSON-RPC dialect: calls and batches (separated by 0xFF) on a user, an
//! app and a hardware socket, every router call answered, then unavailable.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_edge::fuzzing::{Socket, dialect_messages, dialect_messages_unavailable};

fuzz_target!(|data: &[u8]| {
    for socket in [
        Socket::JsonRpcUser,
        Socket::JsonRpcApp,
        Socket::JsonRpcHardware,
    ] {
        dialect_messages(socket, data);
        dialect_messages_unavailable(socket, data);
    }
});
