//! Proofs on gRPC calls: a fresh proof by the caller in the request
//! metadata, checked before anything of the call is read. A forwarded call's
//! proof is bound to its callee and body as well.

use switchboard_common::trust::{PEER_HEADER, PROOF_HEADER, ProofError, Purpose, bound_peer};

use super::{Gate, Plane, forward_binding, refused};

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
