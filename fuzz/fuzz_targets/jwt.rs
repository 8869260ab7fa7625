//! JWT path: `Verifier::verify` with a policy. The first byte picks the
//! input's shape: an arbitrary token, or claims (and a header) that the
//! target signs with the verifier's secret, so claim checks are reached
//! past the signature.
#![no_main]

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use libfuzzer_sys::fuzz_target;
use sha2::Sha256;
use switchboard_common::auth::{Policy, Verifier};

const SECRET: &[u8] = b"fuzz-secret";

fn verifier() -> Verifier {
    Verifier::hs256(SECRET).with_policy(Policy {
        audience: Some("switchboard".to_owned()),
        issuer: Some("https://issuer.example".to_owned()),
        max_lifetime_secs: Some(86_400),
    })
}

/// `header.claims.signature`, signed with [`SECRET`].
fn signed(header: &[u8], claims: &[u8]) -> String {
    let message = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(SECRET) else {
        return message;
    };
    mac.update(message.as_bytes());
    let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{message}.{signature}")
}

fuzz_target!(|data: &[u8]| {
    let Some((&shape, rest)) = data.split_first() else {
        return;
    };
    let verifier = verifier();
    match shape % 3 {
        0 => {
            let token = String::from_utf8_lossy(rest);
            let _ = verifier.verify(&token);
        }
        1 => {
            let token = signed(br#"{"alg":"HS256","typ":"JWT"}"#, rest);
            let _ = verifier.verify(&token);
        }
        _ => {
            // Header and claims, split at the first 0xFF.
            let at = rest.iter().position(|b| *b == 0xFF).unwrap_or(rest.len());
            let (header, claims) = rest.split_at(at);
            let token = signed(header, claims.get(1..).unwrap_or_default());
            if let Ok(claims) = verifier.verify(&token) {
                assert!(!claims.sub.is_empty(), "accepted an empty sub");
            }
        }
    }
});
