//! The NATS transport's session protocol, both ends. An edge publishes its
//! frames on [`router_subject`](crate::subjects::router_subject); the router
//! answers on [`edge_subject`](crate::subjects::edge_subject). A session
//! starts with `Hello` and ends when the edge has been silent for
//! [`SESSION_EXPIRY`] (edges send heartbeats).
//!
//! A `Hello` carries a proof of the cluster secret by its edge id (NATS
//! headers, bound to the frame and its session nonce by [`hello_binding`]).
//! The router answers with a verdict for that nonce, [`ATTACHED`] or
//! [`REFUSED`], MACed under the session key so nobody else can attach or
//! refuse an edge. Both ends derive the session's key from the secret, and
//! every later frame each way carries a sequence number and a MAC under it
//! (`switchboard_common::trust::session`).

use std::time::Duration;

use prost::Message;
use switchboard_common::trust::session::{
    Direction, MAC_HEADER, Opener, SEQ_HEADER, SealError, Sealer, SessionKey,
};

/// NATS header of a `Hello`'s session nonce, echoed in the verdict.
pub const SESSION_HEADER: &str = "x-switchboard-session";
/// NATS header of the router's answer to a `Hello`: [`ATTACHED`] or
/// [`REFUSED`]; a message with it has no frame.
pub const VERDICT_HEADER: &str = "x-switchboard-verdict";
pub const ATTACHED: &str = "attached";
pub const REFUSED: &str = "refused";

/// An edge silent this long is gone.
pub const SESSION_EXPIRY: Duration = Duration::from_secs(6);

/// What a `Hello`'s proof covers: the frame and the session nonce.
pub fn hello_binding(frame: &[u8], nonce: &str) -> Vec<u8> {
    let mut bound = Vec::with_capacity(frame.len() + nonce.len() + 1);
    bound.extend_from_slice(frame);
    bound.push(0);
    bound.extend_from_slice(nonce.as_bytes());
    bound
}

/// A session nonce is 32 hex digits (128 random bits).
pub fn is_session_nonce(nonce: &str) -> bool {
    nonce.len() == 32 && nonce.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The MAC of a verdict: frame 0 of the router's direction, over the
/// verdict word, so nobody else can attach or refuse an edge's `Hello`.
fn verdict_mac(key: &SessionKey, verdict: &str) -> String {
    key.seal(Direction::ToEdge, 0, verdict.as_bytes())
}

/// NATS headers of the router's `verdict` on the `Hello` with `nonce`,
/// MACed when the session has a key.
pub fn verdict_headers(
    nonce: &str,
    verdict: &str,
    key: Option<&SessionKey>,
) -> async_nats::HeaderMap {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(SESSION_HEADER, nonce);
    headers.insert(VERDICT_HEADER, verdict);
    if let Some(key) = key {
        headers.insert(MAC_HEADER, verdict_mac(key, verdict).as_str());
    }
    headers
}

/// Whether a verdict message really comes from the router the session was
/// opened with (always, without a secret).
pub fn verdict_is_proven(key: Option<&SessionKey>, verdict: &str, mac: Option<&str>) -> bool {
    match (key, mac) {
        (None, _) => true,
        (Some(key), Some(mac)) => key
            .verify(Direction::ToEdge, 0, verdict.as_bytes(), mac)
            .is_ok(),
        (Some(_), None) => false,
    }
}

/// NATS headers carrying the next sequence number and MAC of `sealer`.
pub fn seal_headers(sealer: &mut Sealer, body: &[u8]) -> async_nats::HeaderMap {
    let (seq, mac) = sealer.seal(body);
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(SEQ_HEADER, seq.as_str());
    headers.insert(MAC_HEADER, mac.as_str());
    headers
}

/// Checks a session frame's sequence number and MAC.
pub fn open_frame(
    opener: &mut Opener,
    headers: Option<&async_nats::HeaderMap>,
    body: &[u8],
) -> Result<(), SealError> {
    let header = |name: &str| headers.and_then(|h| h.get(name)).map(|v| v.as_str());
    opener.open(header(SEQ_HEADER), header(MAC_HEADER), body)
}

/// Publishes one envelope, sealed when the session has a key, counting
/// failures (core NATS is at-most-once).
pub async fn publish(
    client: &async_nats::Client,
    subject: &str,
    frame: &impl Message,
    sealer: Option<&mut Sealer>,
) {
    let body = frame.encode_to_vec();
    let sent = match sealer {
        Some(sealer) => {
            let headers = seal_headers(sealer, &body);
            client
                .publish_with_headers(subject.to_owned(), headers, body.into())
                .await
        }
        None => client.publish(subject.to_owned(), body.into()).await,
    };
    if sent.is_err() {
        metrics::counter!("switchboard_transport_errors_total", "transport" => "nats").increment(1);
    }
}
