//! The internal plane's gate, used by routers and edges alike: proofs of
//! the cluster secret made and checked (with one replay guard per
//! process), refusals counted, and the mutual TLS configurations built from
//! the PEM files.
//!
//! - [`gate`]: [`Gate`], which makes and checks proofs (NATS messages too).
//! - [`grpc`]: proofs carried in gRPC metadata, attach and forward.
//! - [`tls`]: mutual TLS from PEM files, and [`Access`], what a process on
//!   the plane holds.

pub mod gate;
pub mod grpc;
pub mod tls;

use switchboard_common::trust::{ClusterTrust, Purpose};

use crate::settings::{ClusterSettings, TransportKind};

pub use gate::Gate;
pub use grpc::{admit_forward, admit_request, prove_forward, prove_request, unauthenticated};
pub use tls::{Access, Tls, TlsError};

/// Where a proof was checked (a metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plane {
    Grpc,
    Nats,
}

impl Plane {
    fn label(self) -> &'static str {
        match self {
            Plane::Grpc => "grpc",
            Plane::Nats => "nats",
        }
    }
}

fn purpose_label(purpose: Purpose) -> &'static str {
    match purpose {
        Purpose::Attach => "attach",
        Purpose::Forward => "forward",
        Purpose::Announce => "announce",
    }
}

/// Refusal reasons besides those of
/// [`ProofError`](switchboard_common::trust::ProofError): a good proof for
/// another id than the one the message claims.
pub const PEER_MISMATCH: &str = "peer_mismatch";

/// Every label combination that can occur, created at start.
pub const REFUSAL_SERIES: [(&str, &str); 5] = [
    ("grpc", "attach"),
    ("grpc", "forward"),
    ("nats", "attach"),
    ("nats", "forward"),
    ("nats", "announce"),
];
pub const REFUSAL_REASONS: [&str; 6] = [
    "missing",
    "malformed",
    "bad_mac",
    "stale",
    "replayed",
    PEER_MISMATCH,
];

/// Counts a refused proof; never logs the proof itself.
pub fn refused(plane: Plane, purpose: Purpose, reason: &'static str) {
    metrics::counter!("switchboard_cluster_auth_refused_total",
        "plane" => plane.label(), "purpose" => purpose_label(purpose), "reason" => reason)
    .increment(1);
    tracing::warn!(
        plane = plane.label(),
        purpose = purpose_label(purpose),
        reason,
        "internal call refused: no valid proof of the cluster secret"
    );
}

/// What a forwarded call's proof covers besides its purpose and caller:
/// the router it is meant for and its body, so a proof lifted off one call
/// neither serves another call nor the same call at another router.
pub fn forward_binding(callee: &str, body: &[u8]) -> Vec<u8> {
    let mut bound = Vec::with_capacity(callee.len() + 1 + body.len());
    bound.extend_from_slice(callee.as_bytes());
    bound.push(0);
    bound.extend_from_slice(body);
    bound
}

/// A process that would use NATS without the cluster secret.
#[derive(Debug, thiserror::Error)]
#[error(
    "{what} is protected by SWITCHBOARD_CLUSTER_SECRET only \
     (SWITCHBOARD_TLS_CERT/KEY/CA cover gRPC, not NATS): set the secret as well"
)]
pub struct NatsNeedsSecret {
    /// What uses NATS: the transport, or membership alone.
    pub what: &'static str,
}

/// What mutual TLS alone does not cover: NATS. Edge sessions, forwarded
/// calls and membership announcements on NATS are proven by the secret
/// only; without it a stranger on NATS could read and inject edge frames,
/// or add and remove routers. So with NATS in use, a secret is required.
pub fn check_nats(trust: &ClusterTrust, cluster: &ClusterSettings) -> Result<(), NatsNeedsSecret> {
    if trust.secret.is_some() || trust.is_insecure() || cluster.nats_url.is_none() {
        return Ok(());
    }
    let what = if cluster.transport == TransportKind::Nats {
        "SWITCHBOARD_TRANSPORT=nats"
    } else {
        "router membership on NATS"
    };
    Err(NatsNeedsSecret { what })
}
