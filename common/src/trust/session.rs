//! Keys for one NATS edge session, so every frame after a proven `Hello`
//! is proven too.
//!
//! A `Hello` proves the cluster secret once; the frames after it would
//! otherwise be open to anyone allowed to publish on the session's subjects.
//! Both ends derive a [`SessionKey`] from the secret, the edge id, the
//! router id and the `Hello`'s session nonce; each frame then carries a
//! sequence number and an HMAC over direction, sequence number and body.
//! The key never crosses the wire; a frame is accepted once, in order
//! ([`Opener`] admits only sequence numbers above the last it took), and
//! only in its direction.

use hmac::{Hmac, Mac};

use super::{ClusterSecret, hex, unhex};

/// NATS header of a session frame's sequence number.
pub const SEQ_HEADER: &str = "x-switchboard-seq";
/// NATS header of a session frame's MAC.
pub const MAC_HEADER: &str = "x-switchboard-mac";

/// Which way a frame travels: a frame sealed for one way never opens the
/// other way, so a router's frame cannot be reflected back at it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    ToRouter,
    ToEdge,
}

impl Direction {
    fn tag(self) -> &'static [u8] {
        match self {
            Direction::ToRouter => b"to-router",
            Direction::ToEdge => b"to-edge",
        }
    }
}

/// Why a session frame was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("session frame without a sequence number or MAC")]
    Missing,
    #[error("session frame MAC or sequence number is malformed")]
    Malformed,
    #[error("session frame MAC does not match")]
    BadMac,
    #[error("session frame sequence number already used")]
    Replayed,
}

impl SealError {
    /// A bounded metric label.
    pub fn label(self) -> &'static str {
        match self {
            SealError::Missing => "missing",
            SealError::Malformed => "malformed",
            SealError::BadMac => "bad_mac",
            SealError::Replayed => "replayed",
        }
    }
}

/// The key of one session. Its `Debug` never shows the value.
#[derive(Clone)]
pub struct SessionKey([u8; 32]);

impl std::fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKey(…)")
    }
}

impl ClusterSecret {
    /// The key of the session `edge` opened with `router` under `nonce`.
    pub fn session_key(&self, edge: &str, router: &str, nonce: &str) -> SessionKey {
        let mut mac = self.keyed();
        for part in ["switchboard-session", super::VERSION, edge, router, nonce] {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part.as_bytes());
        }
        SessionKey(mac.finalize().into_bytes().into())
    }
}

impl SessionKey {
    fn tag(&self, direction: Direction, seq: u64, body: &[u8]) -> Hmac<sha2::Sha256> {
        let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(direction.tag());
        mac.update(&seq.to_be_bytes());
        mac.update(body);
        mac
    }

    /// The MAC of frame `seq` going `direction` with `body`, as hex.
    pub fn seal(&self, direction: Direction, seq: u64, body: &[u8]) -> String {
        hex(&self.tag(direction, seq, body).finalize().into_bytes())
    }

    /// Whether `mac` is frame `seq`'s going `direction` with `body`
    /// (compared in constant time).
    pub fn verify(
        &self,
        direction: Direction,
        seq: u64,
        body: &[u8],
        mac: &str,
    ) -> Result<(), SealError> {
        let mac = unhex(mac).ok_or(SealError::Malformed)?;
        self.tag(direction, seq, body)
            .verify_slice(&mac)
            .map_err(|_| SealError::BadMac)
    }
}

/// The sending end of one direction: numbers frames from 1.
#[derive(Debug)]
pub struct Sealer {
    key: SessionKey,
    direction: Direction,
    next: u64,
}

impl Sealer {
    pub fn new(key: SessionKey, direction: Direction) -> Self {
        Self {
            key,
            direction,
            next: 1,
        }
    }

    /// The sequence number and MAC (both as header text) of the next frame.
    pub fn seal(&mut self, body: &[u8]) -> (String, String) {
        let seq = self.next;
        self.next += 1;
        (seq.to_string(), self.key.seal(self.direction, seq, body))
    }
}

/// The receiving end of one direction: admits each sequence number once
/// and in order. Core NATS keeps one publisher's order on a subject and may
/// drop frames, so a gap is accepted and a step back is not.
#[derive(Debug)]
pub struct Opener {
    key: SessionKey,
    direction: Direction,
    last: u64,
}

impl Opener {
    pub fn new(key: SessionKey, direction: Direction) -> Self {
        Self {
            key,
            direction,
            last: 0,
        }
    }

    /// Checks a frame's header values against its body; on success the
    /// frame's sequence number is used up.
    pub fn open(
        &mut self,
        seq: Option<&str>,
        mac: Option<&str>,
        body: &[u8],
    ) -> Result<(), SealError> {
        let (Some(seq), Some(mac)) = (seq, mac) else {
            return Err(SealError::Missing);
        };
        let seq: u64 = seq.parse().map_err(|_| SealError::Malformed)?;
        // The MAC first: a forged frame learns nothing from the counter.
        self.key.verify(self.direction, seq, body, mac)?;
        if seq <= self.last {
            return Err(SealError::Replayed);
        }
        self.last = seq;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(nonce: &str) -> SessionKey {
        ClusterSecret::parse("0123456789abcdef0123")
            .unwrap()
            .session_key("edge-1", "router-a", nonce)
    }

    #[test]
    fn a_sealed_frame_opens_once_in_order_and_one_way() {
        let mut sealer = Sealer::new(key("n1"), Direction::ToRouter);
        let mut opener = Opener::new(key("n1"), Direction::ToRouter);
        let (s1, m1) = sealer.seal(b"one");
        let (s2, m2) = sealer.seal(b"two");
        let (s3, m3) = sealer.seal(b"three");
        assert_eq!(opener.open(Some(&s1), Some(&m1), b"one"), Ok(()));
        // A dropped frame leaves a gap; the next one still opens.
        assert_eq!(opener.open(Some(&s3), Some(&m3), b"three"), Ok(()));
        assert_eq!(
            opener.open(Some(&s2), Some(&m2), b"two"),
            Err(SealError::Replayed),
            "an older frame is never taken after a newer one"
        );
        assert_eq!(
            opener.open(Some(&s3), Some(&m3), b"three"),
            Err(SealError::Replayed)
        );
        let (s4, m4) = sealer.seal(b"four");
        assert_eq!(
            opener.open(Some(&s4), Some(&m4), b"forged"),
            Err(SealError::BadMac),
            "the MAC covers the body"
        );
        assert_eq!(
            opener.open(Some("99"), Some(&m4), b"four"),
            Err(SealError::BadMac),
            "the MAC covers the sequence number"
        );
        let mut back = Opener::new(key("n1"), Direction::ToEdge);
        assert_eq!(
            back.open(Some(&s4), Some(&m4), b"four"),
            Err(SealError::BadMac),
            "a frame does not open the other way"
        );
        let mut other = Opener::new(key("n2"), Direction::ToRouter);
        assert_eq!(
            other.open(Some(&s4), Some(&m4), b"four"),
            Err(SealError::BadMac),
            "another session's key does not open it"
        );
        assert_eq!(
            opener.open(None, Some(&m4), b"four"),
            Err(SealError::Missing)
        );
        assert_eq!(
            opener.open(Some("x"), Some(&m4), b"four"),
            Err(SealError::Malformed)
        );
        assert_eq!(
            opener.open(Some(&s4), Some("zz"), b"four"),
            Err(SealError::Malformed)
        );
        assert_eq!(opener.open(Some(&s4), Some(&m4), b"four"), Ok(()));
    }

    #[test]
    fn keys_differ_by_every_input_and_never_show() {
        let secret = ClusterSecret::parse("0123456789abcdef0123").unwrap();
        let base = secret.session_key("e", "r", "n");
        let others = [
            secret.session_key("e2", "r", "n"),
            secret.session_key("e", "r2", "n"),
            secret.session_key("e", "r", "n2"),
            ClusterSecret::parse("another-secret-0123")
                .unwrap()
                .session_key("e", "r", "n"),
        ];
        for other in others {
            assert_ne!(other.0, base.0);
        }
        assert_eq!(format!("{base:?}"), "SessionKey(…)");
    }
}
