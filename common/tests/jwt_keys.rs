//! RS256 and ES256 tokens with PEM public keys and with a JWKS file. The
//! key pairs in `fixtures/` exist only for these tests.

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

#[test]
fn unreadable_keys_are_errors() {
    assert!(Verifier::from_pem_file(&fixture("missing.pem")).is_err());
    assert!(Verifier::from_pem_file(&PathBuf::from(file!())).is_err());
    assert!(Verifier::from_jwks_file(&fixture("rsa_public.pem")).is_err());
}
