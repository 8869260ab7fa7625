//! The internal plane's gate, used by routers and edges alike: proofs of
//! the cluster secret made and checked (with one replay guard per
//! process), refusals counted, and the mutual TLS configurations built from
//! the PEM files.

use std::sync::Arc;

use anyhow::Context;
use switchboard_common::trust::{
    ClusterSecret, ClusterTrust, PEER_HEADER, PROOF_HEADER, ProofError, Purpose, ReplayGuard,
    TlsFiles, bound_peer, check, session::SessionKey,
};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

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

/// Refusal reasons besides [`ProofError`]'s: a good proof for another id
/// than the one the message claims.
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

/// Puts a fresh proof by `peer` on a gRPC request.
pub fn prove_request<T>(
    gate: &Gate,
    purpose: Purpose,
    peer: &str,
    request: &mut tonic::Request<T>,
) {
    let metadata = request.metadata_mut();
    if let Ok(value) = peer.parse() {
        metadata.insert(PEER_HEADER, value);
    }
    if let Some(proof) = gate.prove(purpose, peer)
        && let Ok(value) = proof.parse()
    {
        metadata.insert(PROOF_HEADER, value);
    }
}

/// Checks the proof on a gRPC request before anything of it is read;
/// returns the proven caller id (or the claimed one without a secret).
pub fn admit_request<T>(
    gate: &Gate,
    purpose: Purpose,
    request: &tonic::Request<T>,
) -> Result<String, tonic::Status> {
    let text = |name: &str| {
        request
            .metadata()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let peer = text(PEER_HEADER).unwrap_or_default();
    if !gate.requires_proofs() {
        return Ok(peer);
    }
    if peer.is_empty() {
        refused(Plane::Grpc, purpose, ProofError::Missing.label());
        return Err(unauthenticated());
    }
    gate.admit(Plane::Grpc, purpose, &peer, text(PROOF_HEADER).as_deref())
        .map_err(|_| unauthenticated())?;
    Ok(peer)
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

/// Puts a fresh proof by `caller` of a call to `callee` on a forwarded
/// gRPC request, bound to its body.
pub fn prove_forward<T: prost::Message>(
    gate: &Gate,
    caller: &str,
    callee: &str,
    request: &mut tonic::Request<T>,
) {
    let bound = bound_peer(
        caller,
        &forward_binding(callee, &request.get_ref().encode_to_vec()),
    );
    let metadata = request.metadata_mut();
    if let Ok(value) = caller.parse() {
        metadata.insert(PEER_HEADER, value);
    }
    if let Some(proof) = gate.prove(Purpose::Forward, &bound)
        && let Ok(value) = proof.parse()
    {
        metadata.insert(PROOF_HEADER, value);
    }
}

/// Checks the proof on a forwarded gRPC request to this router (`own_id`)
/// against its body, re-encoded: prost encodes a message one way, so the
/// bytes are the caller's.
pub fn admit_forward<T: prost::Message>(
    gate: &Gate,
    own_id: &str,
    request: &tonic::Request<T>,
) -> Result<(), tonic::Status> {
    if !gate.requires_proofs() {
        return Ok(());
    }
    let text = |name: &str| {
        request
            .metadata()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let Some(peer) = text(PEER_HEADER).filter(|p| !p.is_empty()) else {
        refused(Plane::Grpc, Purpose::Forward, ProofError::Missing.label());
        return Err(unauthenticated());
    };
    let bound = bound_peer(
        &peer,
        &forward_binding(own_id, &request.get_ref().encode_to_vec()),
    );
    gate.admit(
        Plane::Grpc,
        Purpose::Forward,
        &bound,
        text(PROOF_HEADER).as_deref(),
    )
    .map_err(|_| unauthenticated())
}

/// The one answer to a caller that did not prove the secret: it never says
/// why (logs and metrics do).
pub fn unauthenticated() -> tonic::Status {
    tonic::Status::unauthenticated("cluster proof required")
}

/// What mutual TLS alone does not cover: NATS. Edge sessions, forwarded
/// calls and membership announcements on NATS are proven by the secret
/// only; without it a stranger on NATS could read and inject edge frames,
/// or add and remove routers. So with NATS in use, a secret is required.
pub fn check_nats(
    trust: &ClusterTrust,
    cluster: &crate::cluster::ClusterSettings,
) -> anyhow::Result<()> {
    if trust.secret.is_some() || trust.is_insecure() || cluster.nats_url.is_none() {
        return Ok(());
    }
    let what = if cluster.transport == crate::cluster::TransportKind::Nats {
        "SWITCHBOARD_TRANSPORT=nats"
    } else {
        "router membership on NATS"
    };
    anyhow::bail!(
        "{what} is protected by SWITCHBOARD_CLUSTER_SECRET only \
         (SWITCHBOARD_TLS_CERT/KEY/CA cover gRPC, not NATS): set the secret as well"
    )
}

/// Mutual TLS as read from its PEM files at start.
#[derive(Clone)]
pub struct Tls {
    identity: Identity,
    ca: Certificate,
    server_name: Option<String>,
}

impl Tls {
    pub fn load(files: &TlsFiles) -> anyhow::Result<Self> {
        let read = |path: &std::path::Path, what: &str| {
            std::fs::read(path).with_context(|| format!("cannot read {what} {}", path.display()))
        };
        let cert = read(&files.cert, "SWITCHBOARD_TLS_CERT")?;
        let key = read(&files.key, "SWITCHBOARD_TLS_KEY")?;
        let ca = read(&files.ca, "SWITCHBOARD_TLS_CA")?;
        Ok(Self {
            identity: Identity::from_pem(cert, key),
            ca: Certificate::from_pem(ca),
            server_name: files.server_name.clone(),
        })
    }

    /// The router's gRPC server: client certificates signed by the CA are
    /// required.
    pub fn server(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(self.identity.clone())
            .client_ca_root(self.ca.clone())
    }

    /// Dialing a router: its certificate must be signed by the CA, and this
    /// process presents its own.
    pub fn client(&self) -> ClientTlsConfig {
        let config = ClientTlsConfig::new()
            .ca_certificate(self.ca.clone())
            .identity(self.identity.clone());
        match &self.server_name {
            Some(name) => config.domain_name(name.clone()),
            None => config,
        }
    }
}

/// What a process on the internal plane uses: the gate and, with TLS, the
/// loaded certificates.
#[derive(Clone)]
pub struct Access {
    pub gate: Arc<Gate>,
    pub tls: Option<Tls>,
}

impl Access {
    /// Loads what the checked settings name; warns loudly when nothing
    /// protects the plane.
    pub fn load(trust: &ClusterTrust, process: &str) -> anyhow::Result<Self> {
        if trust.is_insecure() {
            tracing::warn!(
                process,
                "INSECURE CLUSTER: --insecure-cluster is set and neither SWITCHBOARD_CLUSTER_SECRET \
                 nor mutual TLS is configured; anyone who reaches the internal gRPC port or the \
                 internal NATS subjects can read and inject every tenant's traffic"
            );
        }
        let tls = trust.tls.as_ref().map(Tls::load).transpose()?;
        Ok(Self {
            gate: Gate::new(trust.secret.clone()),
            tls,
        })
    }

    /// Neither a secret nor TLS (tests and standalone helpers).
    pub fn open() -> Self {
        Self {
            gate: Gate::new(None),
            tls: None,
        }
    }

    /// The URI scheme to dial routers with.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }
}
