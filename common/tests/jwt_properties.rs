//! Properties of token verification: what the minter signs verifies to the
//! same claims, a token with any one byte changed is refused, and no input
//! makes the verifier panic.

use proptest::prelude::*;
use switchboard_common::auth::{Claims, Minter, Verifier, claims};

const SECRET: &[u8] = b"property-secret";

fn token_claims() -> impl Strategy<Value = Claims> {
    (
        "[a-zA-Z0-9_.@-]{1,24}",
        "[A-Za-z0-9_.-]{1,16}",
        prop::option::of("[a-z ]{1,20}"),
        60u64..86_400,
    )
        .prop_map(|(sub, tenant, scope, ttl)| claims(&sub, "user", &tenant, scope.as_deref(), ttl))
}

proptest! {
    /// What the minter signs, the verifier accepts as the same claims.
    #[test]
    fn minted_tokens_verify_to_their_claims(claims in token_claims()) {
        let token = Minter::hs256(SECRET).mint(&claims);
        prop_assert_eq!(Verifier::hs256(SECRET).verify(&token), Ok(claims));
    }

    /// Changing any one byte of a valid token, to any other ASCII byte,
    /// gets it refused: the signature covers the header and the claims, and
    /// the signature itself admits one spelling only.
    #[test]
    fn a_token_with_one_byte_changed_is_refused(
        claims in token_claims(),
        at in any::<prop::sample::Index>(),
        replacement in 0x20u8..0x7f,
    ) {
        let token = Minter::hs256(SECRET).mint(&claims);
        let mut bytes = token.into_bytes();
        let at = at.index(bytes.len());
        prop_assume!(bytes[at] != replacement);
        bytes[at] = replacement;
        let changed = String::from_utf8(bytes).expect("ASCII");
        let outcome = Verifier::hs256(SECRET).verify(&changed);
        prop_assert!(outcome.is_err(), "accepted {} changed at {}", changed, at);
    }

    /// A token signed with another secret is refused.
    #[test]
    fn another_secret_is_refused(claims in token_claims(), secret in prop::collection::vec(any::<u8>(), 1..32)) {
        prop_assume!(secret != SECRET);
        let token = Minter::hs256(&secret).mint(&claims);
        prop_assert!(Verifier::hs256(SECRET).verify(&token).is_err());
    }

    /// Arbitrary text, and text shaped like a token, never panics the
    /// verifier and is never accepted.
    #[test]
    fn arbitrary_tokens_are_refused(token in prop_oneof![
        "\\PC{0,200}",
        "[A-Za-z0-9_-]{0,60}\\.[A-Za-z0-9_-]{0,80}\\.[A-Za-z0-9_-]{0,43}",
    ]) {
        prop_assert!(Verifier::hs256(SECRET).verify(&token).is_err());
    }
}
