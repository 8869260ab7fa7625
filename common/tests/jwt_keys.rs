//! RS256 and ES256 tokens with PEM public keys and with a JWKS file, and
//! key rotation through a JWKS. The key pairs in `fixtures/` exist only for
//! these tests.

use std::path::PathBuf;

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use switchboard_common::auth::{AuthError, Minter, Verifier, claims};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn key(name: &str, algorithm: Algorithm) -> EncodingKey {
    let pem = std::fs::read(fixture(name)).unwrap();
    match algorithm {
        Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem).unwrap(),
        _ => EncodingKey::from_ec_pem(&pem).unwrap(),
    }
}

fn sign(key: &EncodingKey, algorithm: Algorithm, kid: Option<&str>) -> String {
    let mut header = Header::new(algorithm);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, &claims("alice", "user", "acme", None, 60), key).unwrap()
}

#[test]
fn rs256_with_a_pem_public_key() {
    let verifier = Verifier::from_pem_file(&fixture("rsa_public.pem")).unwrap();
    let token = sign(
        &key("rsa_private.pem", Algorithm::RS256),
        Algorithm::RS256,
        None,
    );
    let got = verifier.verify(&token).unwrap();
    assert_eq!((got.sub.as_str(), got.tenant()), ("alice", "acme"));
    // A token signed with the other family, or an HMAC secret, is refused.
    let ec = sign(
        &key("ec_private.pem", Algorithm::ES256),
        Algorithm::ES256,
        None,
    );
    assert_eq!(verifier.verify(&ec), Err(AuthError::BadSignature));
    let hs = Minter::hs256(b"secret").mint(&claims("alice", "user", "acme", None, 60));
    assert_eq!(verifier.verify(&hs), Err(AuthError::BadSignature));
}

#[test]
fn es256_with_a_pem_public_key() {
    let verifier = Verifier::from_pem_file(&fixture("ec_public.pem")).unwrap();
    let token = sign(
        &key("ec_private.pem", Algorithm::ES256),
        Algorithm::ES256,
        None,
    );
    assert_eq!(verifier.verify(&token).unwrap().sub, "alice");
    let mut tampered = token.clone();
    tampered.insert(tampered.len() - 5, 'A');
    assert!(verifier.verify(&tampered).is_err());
}

#[test]
fn jwks_picks_the_key_by_kid() {
    let rsa = key("rsa_private.pem", Algorithm::RS256);
    let ec = key("ec_private.pem", Algorithm::ES256);
    let mut rsa_jwk = Jwk::from_encoding_key(&rsa, Algorithm::RS256).unwrap();
    rsa_jwk.common.key_id = Some("rsa-1".to_owned());
    let mut ec_jwk = Jwk::from_encoding_key(&ec, Algorithm::ES256).unwrap();
    ec_jwk.common.key_id = Some("ec-1".to_owned());
    let set = JwkSet {
        keys: vec![rsa_jwk, ec_jwk],
    };
    let path = std::env::temp_dir().join(format!("switchboard-jwks-{}.json", std::process::id()));
    std::fs::write(&path, serde_json::to_vec(&set).unwrap()).unwrap();
    let verifier = Verifier::from_jwks_file(&path);
    let _ = std::fs::remove_file(&path);
    let verifier = verifier.unwrap();
    assert!(
        verifier
            .verify(&sign(&rsa, Algorithm::RS256, Some("rsa-1")))
            .is_ok()
    );
    assert!(
        verifier
            .verify(&sign(&ec, Algorithm::ES256, Some("ec-1")))
            .is_ok()
    );
    // The right key id with the wrong key, or an unknown id: refused.
    assert!(
        verifier
            .verify(&sign(&ec, Algorithm::ES256, Some("rsa-1")))
            .is_err()
    );
    assert_eq!(
        verifier.verify(&sign(&rsa, Algorithm::RS256, Some("nope"))),
        Err(AuthError::BadSignature)
    );
}

/// Two RSA keys, as before and after a rotation, with their JWKs.
fn rotated_pair() -> (EncodingKey, EncodingKey, Jwk, Jwk) {
    let old = key("rsa_private.pem", Algorithm::RS256);
    let new = key("rsa2_private.pem", Algorithm::RS256);
    let old_jwk = Jwk::from_encoding_key(&old, Algorithm::RS256).unwrap();
    let new_jwk = Jwk::from_encoding_key(&new, Algorithm::RS256).unwrap();
    (old, new, old_jwk, new_jwk)
}

fn verifier_of(keys: Vec<Jwk>, tag: &str) -> Verifier {
    let path = std::env::temp_dir().join(format!(
        "switchboard-jwks-{}-{tag}.json",
        std::process::id()
    ));
    std::fs::write(&path, serde_json::to_vec(&JwkSet { keys }).unwrap()).unwrap();
    let verifier = Verifier::from_jwks_file(&path);
    let _ = std::fs::remove_file(&path);
    verifier.unwrap()
}

#[test]
fn without_kid_every_key_of_the_algorithm_is_tried() {
    let (old, new, old_jwk, new_jwk) = rotated_pair();
    // Rotation: the old key first, the new one beside it, neither named.
    let verifier = verifier_of(vec![old_jwk.clone(), new_jwk.clone()], "rotation");
    assert!(verifier.verify(&sign(&old, Algorithm::RS256, None)).is_ok());
    assert!(
        verifier.verify(&sign(&new, Algorithm::RS256, None)).is_ok(),
        "a token of the second key is accepted too"
    );
    // A key of another algorithm is never tried for it.
    let ec = key("ec_private.pem", Algorithm::ES256);
    assert_eq!(
        verifier.verify(&sign(&ec, Algorithm::ES256, None)),
        Err(AuthError::BadSignature)
    );
    // An expired token of the second key says expired, not bad signature.
    let mut header = Header::new(Algorithm::RS256);
    header.kid = None;
    let mut c = claims("alice", "user", "acme", None, 0);
    c.exp = switchboard_common::clock::now_secs() - 3600;
    let expired = jsonwebtoken::encode(&header, &c, &new).unwrap();
    assert_eq!(verifier.verify(&expired), Err(AuthError::Expired));
}

#[test]
fn with_kid_only_that_key_is_tried() {
    let (old, new, mut old_jwk, mut new_jwk) = rotated_pair();
    old_jwk.common.key_id = Some("old".into());
    new_jwk.common.key_id = Some("new".into());
    let verifier = verifier_of(vec![old_jwk, new_jwk], "kid");
    assert!(
        verifier
            .verify(&sign(&new, Algorithm::RS256, Some("new")))
            .is_ok()
    );
    assert!(
        verifier
            .verify(&sign(&old, Algorithm::RS256, Some("old")))
            .is_ok()
    );
    // Signed by the new key but naming the old one: only the old is tried.
    assert_eq!(
        verifier.verify(&sign(&new, Algorithm::RS256, Some("old"))),
        Err(AuthError::BadSignature)
    );
    // Without a kid, both are tried.
    assert!(verifier.verify(&sign(&new, Algorithm::RS256, None)).is_ok());
    // A kid naming no key matches no key-less entry either.
    let (_, other, _, unnamed) = rotated_pair();
    let verifier = verifier_of(vec![unnamed], "one");
    assert_eq!(
        verifier.verify(&sign(&other, Algorithm::RS256, Some("ghost"))),
        Err(AuthError::BadSignature)
    );
    assert!(
        verifier
            .verify(&sign(&other, Algorithm::RS256, None))
            .is_ok()
    );
}

#[test]
fn unreadable_keys_are_errors() {
    assert!(Verifier::from_pem_file(&fixture("missing.pem")).is_err());
    assert!(Verifier::from_pem_file(&PathBuf::from(file!())).is_err());
    assert!(Verifier::from_jwks_file(&fixture("rsa_public.pem")).is_err());
}
