//! Cluster trust: what an edge or router shows to be let onto the internal
//! plane (router gRPC, internal NATS subjects).
//!
//! Every internal stream and forwarded call carries a *proof* of the shared
//! `SWITCHBOARD_CLUSTER_SECRET`: an HMAC-SHA256 over a purpose, the caller's
//! id, a timestamp and a fresh random nonce. The secret itself never crosses
//! the wire; the MAC is compared in constant time; a proof is good only for
//! its purpose and its caller id, within [`PROOF_WINDOW`] of its timestamp,
//! and (through [`ReplayGuard`]) only once. Mutual TLS
//! (`SWITCHBOARD_TLS_CERT`/`KEY`/`CA`) is the other way in, and the one that
//! also protects against an on-path observer.
//!
//! - [`session`]: keys that prove every frame of a NATS edge session.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use rand::RngCore;

pub mod session;
use sha2::{Digest, Sha256};

/// gRPC metadata key (and NATS header name) that carries a proof.
pub const PROOF_HEADER: &str = "x-switchboard-proof";

/// gRPC metadata key (and NATS header name) naming the caller a proof is
/// by: the edge id on an attach, the calling router's id on a forward.
pub const PEER_HEADER: &str = "x-switchboard-peer";

/// How far a proof's timestamp may be from the verifier's clock.
pub const PROOF_WINDOW: Duration = Duration::from_secs(30);

/// Proofs remembered against replay; past this, the oldest are forgotten
/// first (an on-path observer is what mutual TLS is for).
pub const REPLAY_CAPACITY: usize = 200_000;

const VERSION: &str = "v1";
/// Shortest accepted secret: a guessable one would make the HMAC moot.
pub const MIN_SECRET_LEN: usize = 16;

/// What a proof is for: one purpose's proof is refused for any other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// An edge's `Attach` stream (gRPC) or its NATS session `Hello`.
    Attach,
    /// A request forwarded from one router to another.
    Forward,
    /// A router's membership announcement on NATS.
    Announce,
}

impl Purpose {
    fn as_str(self) -> &'static str {
        match self {
            Purpose::Attach => "attach",
            Purpose::Forward => "forward",
            Purpose::Announce => "announce",
        }
    }
}

/// The shared secret. Its `Debug` never shows the value.
#[derive(Clone)]
pub struct ClusterSecret(std::sync::Arc<[u8]>);

impl fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClusterSecret(…)")
    }
}

impl ClusterSecret {
    /// A clap value parser: refuses secrets shorter than [`MIN_SECRET_LEN`].
    pub fn parse(value: &str) -> Result<Self, String> {
        if value.len() < MIN_SECRET_LEN {
            return Err(format!(
                "SWITCHBOARD_CLUSTER_SECRET must be at least {MIN_SECRET_LEN} bytes \
                 (e.g. `openssl rand -hex 32`)"
            ));
        }
        Ok(Self(value.as_bytes().into()))
    }

    /// An HMAC keyed with the secret.
    fn keyed(&self) -> Hmac<Sha256> {
        <Hmac<Sha256> as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"))
    }

    fn mac(&self, purpose: Purpose, peer: &str, at_ms: u64, nonce: &str) -> Hmac<Sha256> {
        let mut mac = self.keyed();
        for part in [
            "switchboard-cluster",
            VERSION,
            purpose.as_str(),
            peer,
            &at_ms.to_string(),
            nonce,
        ] {
            // Length-prefixed, so no two part lists feed the same bytes.
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part.as_bytes());
        }
        mac
    }

    /// A fresh proof for `purpose` by `peer` (the caller's edge or router id).
    pub fn prove(&self, purpose: Purpose, peer: &str) -> String {
        self.prove_at(purpose, peer, now_ms())
    }

    fn prove_at(&self, purpose: Purpose, peer: &str, at_ms: u64) -> String {
        let mut bytes = [0u8; 16];
        rand::rng().fill_bytes(&mut bytes);
        let nonce = hex(&bytes);
        let tag = self
            .mac(purpose, peer, at_ms, &nonce)
            .finalize()
            .into_bytes();
        format!("{VERSION}.{at_ms}.{nonce}.{}", hex(&tag))
    }

    /// Checks `proof` for `purpose` by `peer`; on success returns its nonce
    /// (for a [`ReplayGuard`]).
    pub fn verify(&self, purpose: Purpose, peer: &str, proof: &str) -> Result<String, ProofError> {
        self.verify_at(purpose, peer, proof, now_ms())
    }

    fn verify_at(
        &self,
        purpose: Purpose,
        peer: &str,
        proof: &str,
        now: u64,
    ) -> Result<String, ProofError> {
        let mut parts = proof.split('.');
        let (Some(version), Some(at), Some(nonce), Some(tag), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(ProofError::Malformed);
        };
        if version != VERSION || nonce.len() != 32 || !nonce.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Err(ProofError::Malformed);
        }
        let at: u64 = at.parse().map_err(|_| ProofError::Malformed)?;
        let tag = unhex(tag).ok_or(ProofError::Malformed)?;
        // The MAC first, so a forged proof learns nothing from the clock.
        self.mac(purpose, peer, at, nonce)
            .verify_slice(&tag)
            .map_err(|_| ProofError::BadMac)?;
        if now.abs_diff(at) > PROOF_WINDOW.as_millis() as u64 {
            return Err(ProofError::Stale);
        }
        Ok(nonce.to_owned())
    }
}

/// Why a proof was refused. The wire never says which (a refusal is a
/// refusal); logs and metrics do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("no cluster proof")]
    Missing,
    #[error("malformed cluster proof")]
    Malformed,
    #[error("cluster proof does not match the secret")]
    BadMac,
    #[error("cluster proof outside the time window")]
    Stale,
    #[error("cluster proof already used")]
    Replayed,
}

impl ProofError {
    /// A bounded metric label.
    pub fn label(self) -> &'static str {
        match self {
            ProofError::Missing => "missing",
            ProofError::Malformed => "malformed",
            ProofError::BadMac => "bad_mac",
            ProofError::Stale => "stale",
            ProofError::Replayed => "replayed",
        }
    }
}

/// Nonces of proofs already accepted, so a captured proof cannot be used
/// again within its window. Bounded by [`REPLAY_CAPACITY`].
#[derive(Default)]
pub struct ReplayGuard {
    // One short lock per accepted proof; never held across an await.
    seen: Mutex<Seen>,
}

#[derive(Default)]
struct Seen {
    at: HashMap<String, u64>,
    order: VecDeque<(u64, String)>,
}

impl ReplayGuard {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records `nonce`; `Err(Replayed)` if it was seen within the window.
    pub fn admit(&self, nonce: String) -> Result<(), ProofError> {
        self.admit_at(nonce, now_ms())
    }

    fn admit_at(&self, nonce: String, now: u64) -> Result<(), ProofError> {
        let horizon = now.saturating_sub(2 * PROOF_WINDOW.as_millis() as u64);
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        while let Some((at, _)) = seen.order.front() {
            if *at >= horizon && seen.order.len() < REPLAY_CAPACITY {
                break;
            }
            if let Some((_, old)) = seen.order.pop_front() {
                seen.at.remove(&old);
            }
        }
        if seen.at.contains_key(&nonce) {
            return Err(ProofError::Replayed);
        }
        seen.at.insert(nonce.clone(), now);
        seen.order.push_back((now, nonce));
        Ok(())
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.seen.lock().map(|s| s.at.len()).unwrap_or(0)
    }
}

/// Checks a proof and admits its nonce in one step.
pub fn check(
    secret: &ClusterSecret,
    guard: &ReplayGuard,
    purpose: Purpose,
    peer: &str,
    proof: Option<&str>,
) -> Result<(), ProofError> {
    let proof = proof.ok_or(ProofError::Missing)?;
    let nonce = secret.verify(purpose, peer, proof)?;
    guard.admit(nonce)
}

/// The peer a proof over one NATS message names: the sender's id bound to
/// a digest of the message body. Anyone allowed on a subject sees its
/// headers; bound, a proof lifted off one message proves no other body.
pub fn bound_peer(peer: &str, body: &[u8]) -> String {
    format!("{peer}#{}", hex(&Sha256::digest(body)))
}

/// How the internal plane is protected; flattened into the edge's and the
/// router's settings.
#[derive(Debug, Clone, clap::Args)]
pub struct TrustSettings {
    /// Secret shared by every edge and router; internal gRPC streams and
    /// forwarded calls prove it with an HMAC (it never crosses the wire).
    /// At least 16 bytes, e.g. `openssl rand -hex 32`.
    #[arg(
        long,
        env = "SWITCHBOARD_CLUSTER_SECRET",
        hide_env_values = true,
        value_parser = ClusterSecret::parse
    )]
    pub cluster_secret: Option<ClusterSecret>,
    /// PEM certificate of this process for mutual TLS on internal gRPC.
    #[arg(long, env = "SWITCHBOARD_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key matching `--tls-cert`.
    #[arg(long, env = "SWITCHBOARD_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA that signed every edge's and router's certificate.
    #[arg(long, env = "SWITCHBOARD_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// Name checked in a router's certificate when dialing it (default:
    /// the host of the address dialed), for certificates that name a
    /// service rather than each router's address.
    #[arg(long, env = "SWITCHBOARD_TLS_SERVER_NAME")]
    pub tls_server_name: Option<String>,
    /// Run the internal plane with neither the secret nor TLS: anyone who
    /// reaches a router's gRPC port can read and inject every tenant's
    /// traffic. For local experiments only.
    #[arg(long, env = "SWITCHBOARD_INSECURE_CLUSTER")]
    pub insecure_cluster: bool,
}

/// Mutual TLS files, all three given.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
    pub server_name: Option<String>,
}

/// How the internal plane is protected, once the settings are checked.
/// With both a secret and TLS, both are required of every peer.
#[derive(Debug, Clone, Default)]
pub struct ClusterTrust {
    pub secret: Option<ClusterSecret>,
    pub tls: Option<TlsFiles>,
}

impl ClusterTrust {
    /// Neither a secret nor TLS (`--insecure-cluster`).
    pub fn is_insecure(&self) -> bool {
        self.secret.is_none() && self.tls.is_none()
    }
}

/// Why a process in cluster mode will not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrustConfigError {
    #[error(
        "the internal plane would be open to anyone who reaches it: set \
         SWITCHBOARD_CLUSTER_SECRET (at least {MIN_SECRET_LEN} bytes, e.g. `openssl rand -hex 32`, \
         the same on every edge and router) and/or SWITCHBOARD_TLS_CERT, SWITCHBOARD_TLS_KEY and \
         SWITCHBOARD_TLS_CA for mutual TLS; --insecure-cluster runs without either, for local \
         experiments only"
    )]
    Unprotected,
    #[error(
        "mutual TLS is half configured: {missing} missing (SWITCHBOARD_TLS_CERT, \
         SWITCHBOARD_TLS_KEY and SWITCHBOARD_TLS_CA go together)"
    )]
    IncompleteTls { missing: String },
}

impl TrustSettings {
    /// Checks the settings of a process on the internal plane: a secret,
    /// complete TLS, or both; neither only with `--insecure-cluster`.
    pub fn cluster_trust(&self) -> Result<ClusterTrust, TrustConfigError> {
        let parts = [
            ("SWITCHBOARD_TLS_CERT", &self.tls_cert),
            ("SWITCHBOARD_TLS_KEY", &self.tls_key),
            ("SWITCHBOARD_TLS_CA", &self.tls_ca),
        ];
        let given = parts.iter().filter(|(_, p)| p.is_some()).count();
        let tls = match (&self.tls_cert, &self.tls_key, &self.tls_ca) {
            (Some(cert), Some(key), Some(ca)) => Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                ca: ca.clone(),
                server_name: self.tls_server_name.clone(),
            }),
            _ if given > 0 => {
                let missing: Vec<&str> = parts
                    .iter()
                    .filter(|(_, p)| p.is_none())
                    .map(|(name, _)| *name)
                    .collect();
                return Err(TrustConfigError::IncompleteTls {
                    missing: missing.join(" and "),
                });
            }
            _ => None,
        };
        let trust = ClusterTrust {
            secret: self.cluster_secret.clone(),
            tls,
        };
        if trust.is_insecure() && !self.insecure_cluster {
            return Err(TrustConfigError::Unprotected);
        }
        Ok(trust)
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(s: &str) -> ClusterSecret {
        ClusterSecret::parse(s).unwrap()
    }

    const NOW: u64 = 1_800_000_000_000;

    #[test]
    fn a_proof_checks_out_for_its_purpose_and_peer_only() {
        let s = secret("0123456789abcdef0123");
        let proof = s.prove_at(Purpose::Attach, "edge-1", NOW);
        assert!(s.verify_at(Purpose::Attach, "edge-1", &proof, NOW).is_ok());
        assert_eq!(
            s.verify_at(Purpose::Attach, "edge-2", &proof, NOW),
            Err(ProofError::BadMac)
        );
        assert_eq!(
            s.verify_at(Purpose::Forward, "edge-1", &proof, NOW),
            Err(ProofError::BadMac)
        );
        let other = secret("another-secret-of-16");
        assert_eq!(
            other.verify_at(Purpose::Attach, "edge-1", &proof, NOW),
            Err(ProofError::BadMac)
        );
    }

    #[test]
    fn the_secret_is_not_in_the_proof_or_the_debug_output() {
        let s = secret("a-very-private-secret");
        let proof = s.prove(Purpose::Attach, "e");
        assert!(!proof.contains("private"));
        assert!(!format!("{s:?}").contains("private"));
    }

    #[test]
    fn proofs_outside_the_window_are_stale() {
        let s = secret("0123456789abcdef0123");
        let window = PROOF_WINDOW.as_millis() as u64;
        let old = s.prove_at(Purpose::Forward, "r", NOW - window - 1);
        assert_eq!(
            s.verify_at(Purpose::Forward, "r", &old, NOW),
            Err(ProofError::Stale)
        );
        let edge = s.prove_at(Purpose::Forward, "r", NOW - window);
        assert!(s.verify_at(Purpose::Forward, "r", &edge, NOW).is_ok());
        let future = s.prove_at(Purpose::Forward, "r", NOW + window + 1);
        assert_eq!(
            s.verify_at(Purpose::Forward, "r", &future, NOW),
            Err(ProofError::Stale)
        );
    }

    #[test]
    fn a_tampered_timestamp_breaks_the_mac() {
        let s = secret("0123456789abcdef0123");
        let proof = s.prove_at(Purpose::Attach, "e", NOW - 600_000);
        let forged = proof.replacen(&(NOW - 600_000).to_string(), &NOW.to_string(), 1);
        assert_eq!(
            s.verify_at(Purpose::Attach, "e", &forged, NOW),
            Err(ProofError::BadMac)
        );
    }

    #[test]
    fn malformed_proofs_are_refused_without_panicking() {
        let s = secret("0123456789abcdef0123");
        for bad in [
            "",
            "v1",
            "v1.1.2",
            "v1.x.00000000000000000000000000000000.00",
            "v2.1.00000000000000000000000000000000.00",
            "v1.1.0000.00",
            "v1.1.00000000000000000000000000000000.0",
            "v1.1.00000000000000000000000000000000.zz",
            "v1.1.00000000000000000000000000000000.00.extra",
            "v1.1.ü0000000000000000000000000000000.00",
        ] {
            assert_eq!(
                s.verify_at(Purpose::Attach, "e", bad, NOW),
                Err(ProofError::Malformed),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_proof_is_admitted_once() {
        let s = secret("0123456789abcdef0123");
        let guard = ReplayGuard::new();
        let proof = s.prove(Purpose::Attach, "e");
        assert_eq!(
            check(&s, &guard, Purpose::Attach, "e", Some(&proof)),
            Ok(())
        );
        assert_eq!(
            check(&s, &guard, Purpose::Attach, "e", Some(&proof)),
            Err(ProofError::Replayed)
        );
        assert_eq!(
            check(&s, &guard, Purpose::Attach, "e", None),
            Err(ProofError::Missing)
        );
    }

    #[test]
    fn the_replay_guard_forgets_old_nonces_and_stays_bounded() {
        let guard = ReplayGuard::new();
        guard.admit_at("a".into(), NOW).unwrap();
        let later = NOW + 2 * PROOF_WINDOW.as_millis() as u64 + 1;
        guard.admit_at("b".into(), later).unwrap();
        assert_eq!(guard.len(), 1, "a fell out of the window");
        for i in 0..REPLAY_CAPACITY + 10 {
            guard.admit_at(format!("n{i}"), later).unwrap();
        }
        assert!(guard.len() <= REPLAY_CAPACITY + 1);
    }

    fn settings(args: &[&str]) -> TrustSettings {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            trust: TrustSettings,
        }
        let mut argv = vec!["test"];
        argv.extend_from_slice(args);
        <Cli as clap::Parser>::try_parse_from(argv).unwrap().trust
    }

    #[test]
    fn the_plane_needs_a_secret_or_complete_tls_or_the_insecure_flag() {
        let none = settings(&[]);
        let err = none.cluster_trust().unwrap_err();
        assert_eq!(err, TrustConfigError::Unprotected);
        let text = err.to_string();
        for name in [
            "SWITCHBOARD_CLUSTER_SECRET",
            "SWITCHBOARD_TLS_CERT",
            "SWITCHBOARD_TLS_KEY",
            "SWITCHBOARD_TLS_CA",
            "--insecure-cluster",
        ] {
            assert!(text.contains(name), "{text}");
        }
        assert!(
            settings(&["--insecure-cluster"])
                .cluster_trust()
                .unwrap()
                .is_insecure()
        );
        let secret = settings(&["--cluster-secret", "0123456789abcdef"]);
        let trust = secret.cluster_trust().unwrap();
        assert!(trust.secret.is_some() && trust.tls.is_none());
        let tls = settings(&["--tls-cert", "c", "--tls-key", "k", "--tls-ca", "a"]);
        let trust = tls.cluster_trust().unwrap();
        assert!(trust.secret.is_none() && trust.tls.is_some());
    }

    #[test]
    fn half_configured_tls_names_what_is_missing() {
        let err = settings(&["--tls-cert", "c", "--cluster-secret", "0123456789abcdef"])
            .cluster_trust()
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("SWITCHBOARD_TLS_KEY and SWITCHBOARD_TLS_CA missing"),
            "{text}"
        );
        let err = settings(&["--tls-cert", "c", "--tls-key", "k", "--insecure-cluster"])
            .cluster_trust()
            .unwrap_err();
        assert_eq!(
            err,
            TrustConfigError::IncompleteTls {
                missing: "SWITCHBOARD_TLS_CA".into()
            }
        );
    }

    #[test]
    fn a_bound_proof_proves_its_body_only() {
        let s = secret("0123456789abcdef0123");
        let proof = s.prove(Purpose::Announce, &bound_peer("r1", b"body"));
        assert!(
            s.verify(Purpose::Announce, &bound_peer("r1", b"body"), &proof)
                .is_ok()
        );
        assert_eq!(
            s.verify(Purpose::Announce, &bound_peer("r1", b"other"), &proof),
            Err(ProofError::BadMac)
        );
    }

    #[test]
    fn short_secrets_are_refused_with_the_variable_named() {
        let err = ClusterSecret::parse("short").unwrap_err();
        assert!(err.contains("SWITCHBOARD_CLUSTER_SECRET"), "{err}");
    }
}
