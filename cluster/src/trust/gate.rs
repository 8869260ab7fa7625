//! The [`Gate`]: proofs of the cluster secret made and checked, one replay
//! guard per process, every refusal counted.

use std::sync::Arc;

use switchboard_common::trust::{
    ClusterSecret, PEER_HEADER, PROOF_HEADER, ProofError, Purpose, ReplayGuard, bound_peer, check,
    session::SessionKey,
};

use super::{Plane, refused};

/// Makes and checks proofs. Without a secret (mutual TLS alone, or
/// `--insecure-cluster`) nothing is proven and everything is admitted:
/// TLS, or nothing, guards the plane then.
#[derive(Default)]
pub struct Gate {
    secret: Option<ClusterSecret>,
    guard: ReplayGuard,
}

impl Gate {
    pub fn new(secret: Option<ClusterSecret>) -> Arc<Self> {
        Arc::new(Self {
            secret,
            guard: ReplayGuard::new(),
        })
    }

    /// Whether proofs are required (a secret is configured).
    pub fn requires_proofs(&self) -> bool {
        self.secret.is_some()
    }

    /// The key of the NATS session `edge` opened with `router` under
    /// `nonce`, if a secret is configured (without one frames go unproven).
    pub fn session_key(&self, edge: &str, router: &str, nonce: &str) -> Option<SessionKey> {
        self.secret
            .as_ref()
            .map(|s| s.session_key(edge, router, nonce))
    }

    /// A fresh proof for `purpose` by `peer`, if a secret is configured.
    pub fn prove(&self, purpose: Purpose, peer: &str) -> Option<String> {
        self.secret.as_ref().map(|s| s.prove(purpose, peer))
    }

    /// A fresh proof for one NATS message of `peer` with `body`.
    pub fn prove_message(&self, purpose: Purpose, peer: &str, body: &[u8]) -> Option<String> {
        self.prove(purpose, &bound_peer(peer, body))
    }

    /// Checks `proof` for `purpose` by `peer`, counting a refusal.
    pub fn admit(
        &self,
        plane: Plane,
        purpose: Purpose,
        peer: &str,
        proof: Option<&str>,
    ) -> Result<(), ProofError> {
        let Some(secret) = &self.secret else {
            return Ok(());
        };
        check(secret, &self.guard, purpose, peer, proof).inspect_err(|e| {
            refused(plane, purpose, e.label());
        })
    }

    /// [`Gate::admit`] for a NATS message: the peer and proof headers, the
    /// proof bound to `body`. Returns the proven peer id (the header's, or
    /// `None` with no secret configured and no header given).
    pub fn admit_message(
        &self,
        purpose: Purpose,
        headers: Option<&async_nats::HeaderMap>,
        body: &[u8],
    ) -> Result<Option<String>, ProofError> {
        let header = |name: &str| {
            headers
                .and_then(|h| h.get(name))
                .map(|v| v.as_str().to_owned())
        };
        let peer = header(PEER_HEADER);
        if self.secret.is_none() {
            return Ok(peer);
        }
        let Some(peer) = peer else {
            refused(Plane::Nats, purpose, ProofError::Missing.label());
            return Err(ProofError::Missing);
        };
        let proof = header(PROOF_HEADER);
        self.admit(
            Plane::Nats,
            purpose,
            &bound_peer(&peer, body),
            proof.as_deref(),
        )?;
        Ok(Some(peer))
    }

    /// NATS headers proving one message of `peer` with `body`.
    pub fn message_headers(
        &self,
        purpose: Purpose,
        peer: &str,
        body: &[u8],
    ) -> async_nats::HeaderMap {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(PEER_HEADER, peer);
        if let Some(proof) = self.prove_message(purpose, peer, body) {
            headers.insert(PROOF_HEADER, proof.as_str());
        }
        headers
    }
}
