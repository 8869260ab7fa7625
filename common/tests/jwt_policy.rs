//! The operator's token rules: audience, issuer, longest lifetime, and the
//! one kind each route takes.

use switchboard_common::auth::{
    Audience, AuthError, AuthSettings, Claims, Kind, KindError, Minter, Policy, Verifier, claims,
};
use switchboard_common::clock::now_secs;

const SECRET: &[u8] = b"policy-secret";

fn verifier(policy: Policy) -> Verifier {
    Verifier::hs256(SECRET).with_policy(policy)
}

fn mint(claims: &Claims) -> String {
    Minter::hs256(SECRET).mint(claims)
}

fn user() -> Claims {
    claims("alice", "user", "acme", None, 600)
}

#[test]
fn audience_must_be_named_when_configured() {
    let v = verifier(Policy {
        audience: Some("switchboard".into()),
        ..Policy::default()
    });
    let mut c = user();
    assert_eq!(v.verify(&mint(&c)), Err(AuthError::WrongAudience), "no aud");
    c.aud = Some(Audience::One("other".into()));
    assert_eq!(v.verify(&mint(&c)), Err(AuthError::WrongAudience));
    c.aud = Some(Audience::One("switchboard".into()));
    assert_eq!(v.verify(&mint(&c)).map(|c| c.sub), Ok("alice".to_owned()));
    c.aud = Some(Audience::Many(vec!["billing".into(), "switchboard".into()]));
    assert!(v.verify(&mint(&c)).is_ok(), "one of several audiences");
    // Without a configured audience, any aud (or none) is fine.
    assert!(verifier(Policy::default()).verify(&mint(&c)).is_ok());
    assert!(verifier(Policy::default()).verify(&mint(&user())).is_ok());
}

#[test]
fn issuer_must_match_when_configured() {
    let v = verifier(Policy {
        issuer: Some("https://id.example".into()),
        ..Policy::default()
    });
    let mut c = user();
    assert_eq!(v.verify(&mint(&c)), Err(AuthError::WrongIssuer), "no iss");
    c.iss = Some("https://evil.example".into());
    assert_eq!(v.verify(&mint(&c)), Err(AuthError::WrongIssuer));
    c.iss = Some("https://id.example".into());
    assert!(v.verify(&mint(&c)).is_ok());
}

#[test]
fn max_lifetime_refuses_longer_tokens() {
    let v = verifier(Policy {
        max_lifetime_secs: Some(3600),
        ..Policy::default()
    });
    let now = now_secs();
    let mut c = user();
    c.iat = Some(now);
    c.exp = now + 3600;
    assert!(v.verify(&mint(&c)).is_ok(), "exactly the limit");
    c.exp = now + 3601;
    assert_eq!(
        v.verify(&mint(&c)),
        Err(AuthError::TooLongLived { max_secs: 3600 })
    );
    // Issued long ago, nearly expired: still longer lived than allowed.
    c.iat = Some(now - 7200);
    c.exp = now + 60;
    assert_eq!(
        v.verify(&mint(&c)),
        Err(AuthError::TooLongLived { max_secs: 3600 })
    );
    // Without iat, what is left from now counts.
    c.iat = None;
    c.exp = now + 600;
    assert!(v.verify(&mint(&c)).is_ok());
    c.exp = now + 7200;
    assert_eq!(
        v.verify(&mint(&c)),
        Err(AuthError::TooLongLived { max_secs: 3600 })
    );
    // An iat in the future does not stretch the window.
    c.iat = Some(now + 86_400);
    c.exp = now + 86_400 + 60;
    assert_eq!(
        v.verify(&mint(&c)),
        Err(AuthError::TooLongLived { max_secs: 3600 })
    );
}

#[test]
fn settings_build_the_policy_and_stamp_minted_tokens() {
    use clap::Parser;
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        auth: AuthSettings,
    }
    let cli = Cli::try_parse_from([
        "x",
        "--jwt-secret",
        "policy-secret",
        "--jwt-audience",
        "switchboard",
        "--jwt-issuer",
        "idp",
        "--jwt-max-lifetime",
        "24h",
    ])
    .unwrap();
    let policy = cli.auth.policy();
    assert_eq!(policy.audience.as_deref(), Some("switchboard"));
    assert_eq!(policy.issuer.as_deref(), Some("idp"));
    assert_eq!(policy.max_lifetime_secs, Some(86_400));
    let v = cli.auth.verifier().unwrap();
    let mut c = user();
    assert_eq!(v.verify(&mint(&c)), Err(AuthError::WrongAudience));
    cli.auth.stamp(&mut c);
    assert!(v.verify(&mint(&c)).is_ok(), "a stamped token is accepted");
}

#[test]
fn each_route_takes_one_kind() {
    let mut c = user();
    assert_eq!(c.check_kind(Kind::User), Ok(Kind::User));
    assert_eq!(
        c.check_kind(Kind::Client),
        Err(KindError::Wrong {
            route: Kind::Client,
            token: Kind::User
        })
    );
    let reason = c.check_kind(Kind::Service).unwrap_err().to_string();
    assert!(
        reason.contains("service") && reason.contains("user"),
        "{reason}"
    );
    c.kind = None;
    for kind in [Kind::User, Kind::Client] {
        assert_eq!(
            c.check_kind(kind),
            Ok(kind),
            "no kind counts as the route's"
        );
    }
    for kind in [Kind::App, Kind::Device, Kind::Service] {
        let refused = c.check_kind(kind).unwrap_err();
        assert_eq!(refused, KindError::Missing { route: kind });
        let reason = refused.to_string();
        assert!(
            reason.contains(kind.as_str()) && reason.contains("no kind"),
            "{reason}"
        );
    }
    c.kind = Some("clients".into());
    let refused = c.check_kind(Kind::Client).unwrap_err();
    assert_eq!(refused, KindError::Unknown("clients".into()));
    assert!(refused.to_string().contains("`clients`"));
    // A huge or unprintable kind is cut to fit a close reason.
    c.kind = Some(format!("\u{7}{}", "x".repeat(500)));
    let reason = c.check_kind(Kind::User).unwrap_err().to_string();
    assert!(reason.len() <= 123, "{} bytes", reason.len());
    assert!(!reason.contains('\u{7}'));
    assert_eq!("service".parse::<Kind>(), Ok(Kind::Service));
    assert!("Service".parse::<Kind>().is_err());
}
