//! JWT verification and minting.
//!
//! HS256 with a shared secret is the default; RS256/ES256 with a PEM public
//! key, or any of those through a JWKS file, also work. `exp` is required,
//! `nbf` is checked when present, with 30 s of leeway for clock skew. An
//! operator may also require an audience, an issuer and a longest lifetime
//! ([`Policy`]). Each route takes one token [`Kind`]; [`Claims::check_kind`]
//! is the one place that rule lives.

use std::path::Path;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use switchboard_proto::ids::is_valid_tenant;

/// Leeway for `exp` and `nbf`, in seconds.
pub const LEEWAY_SECS: u64 = 30;
pub const DEFAULT_TENANT: &str = "default";

/// Who a token says the caller is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    /// Absent means the default tenant; see [`Claims::tenant`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// Checked against the configured audience, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<Audience>,
    /// Checked against the configured issuer, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
}

/// A JWT `aud` claim: one audience or several.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Claims {
    /// The tenant the token acts for: its `tenant` claim, else `default`.
    pub fn tenant(&self) -> &str {
        self.tenant.as_deref().unwrap_or(DEFAULT_TENANT)
    }

    pub fn has_scope(&self, wanted: &str) -> bool {
        self.scope
            .as_deref()
            .is_some_and(|s| s.split_ascii_whitespace().any(|s| s == wanted))
    }

    /// `kind`, with `user` when the token names none.
    pub fn kind(&self) -> &str {
        self.kind.as_deref().unwrap_or("user")
    }

    /// Whether this token may open a route that takes `route` tokens: its
    /// `kind` must be `route`'s. A token without a kind counts as the
    /// route's kind only on routes whose kind grants nothing beyond the
    /// token's own `sub` (user and client routes): the dialect files name
    /// `kind=app`, `kind=device` and `kind=service` tokens outright, and a
    /// kindless token minted for a user must not act as a backend.
    pub fn check_kind(&self, route: Kind) -> Result<Kind, KindError> {
        let Some(named) = self.kind.as_deref() else {
            return if route.is_privileged() {
                Err(KindError::Missing { route })
            } else {
                Ok(route)
            };
        };
        match named.parse::<Kind>() {
            Ok(kind) if kind == route => Ok(kind),
            Ok(kind) => Err(KindError::Wrong { route, token: kind }),
            Err(unknown) => Err(unknown),
        }
    }
}

/// The token kinds of `00-common.md`; each route takes one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    User,
    App,
    Device,
    Client,
    Service,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::User,
        Kind::App,
        Kind::Device,
        Kind::Client,
        Kind::Service,
    ];

    /// Kinds that act beyond their own `sub`: an app, a device's hardware
    /// socket, a backend on the server API. They must be named in the token.
    pub fn is_privileged(self) -> bool {
        matches!(self, Kind::App | Kind::Device | Kind::Service)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::User => "user",
            Kind::App => "app",
            Kind::Device => "device",
            Kind::Client => "client",
            Kind::Service => "service",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Kind {
    type Err = KindError;

    fn from_str(text: &str) -> Result<Self, KindError> {
        Kind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == text)
            .ok_or_else(|| KindError::Unknown(KindError::shown(text)))
    }
}

/// Why a token's kind does not fit a route. The message names the kind
/// and fits in a WebSocket close reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KindError {
    #[error("token kind `{0}` is not one of user, app, device, client, service")]
    Unknown(String),
    #[error("this route takes {route} tokens, not a {token} token")]
    Wrong { route: Kind, token: Kind },
    #[error("this route takes {route} tokens; this token has no kind")]
    Missing { route: Kind },
}

impl KindError {
    /// Longest part of an unknown kind repeated in a reason: a close reason
    /// holds at most 123 bytes.
    const SHOWN: usize = 24;

    /// The first characters of `text`, printable ASCII only.
    fn shown(text: &str) -> String {
        text.chars()
            .filter(|c| c.is_ascii_graphic())
            .take(Self::SHOWN)
            .collect()
    }
}

/// Why a token was refused. The message is safe to show the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing token")]
    Missing,
    #[error("token expired")]
    Expired,
    #[error("token not yet valid")]
    NotYetValid,
    #[error("token signature is invalid")]
    BadSignature,
    #[error("token is malformed: {0}")]
    Malformed(String),
    #[error("token claims are invalid: {0}")]
    InvalidClaims(String),
    #[error("token audience is missing or not accepted here")]
    WrongAudience,
    #[error("token issuer is missing or not accepted here")]
    WrongIssuer,
    #[error("token lifetime exceeds the {max_secs} s this gateway accepts")]
    TooLongLived { max_secs: u64 },
}

impl AuthError {
    /// A bounded metrics label for this refusal.
    pub fn label(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::Expired => "expired",
            AuthError::NotYetValid => "not_yet_valid",
            AuthError::BadSignature => "bad_signature",
            AuthError::Malformed(_) => "malformed",
            AuthError::InvalidClaims(_) => "invalid_claims",
            AuthError::WrongAudience => "audience",
            AuthError::WrongIssuer => "issuer",
            AuthError::TooLongLived { .. } => "lifetime",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read key file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("key file {path} holds no RSA or EC public key")]
    NotAKey { path: String },
    #[error("JWKS file {path} is invalid: {reason}")]
    Jwks { path: String, reason: String },
    #[error("no JWT secret or key configured")]
    Nothing,
}

/// One verification key.
struct Key {
    /// The JWKS `kid`, when the key has one.
    id: Option<String>,
    key: DecodingKey,
    algorithm: Algorithm,
}

/// What a token must claim beyond a valid signature and validity window.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// When set, `aud` must name it.
    pub audience: Option<String>,
    /// When set, `iss` must equal it.
    pub issuer: Option<String>,
    /// When set, a token may live at most this long (seconds): `exp` minus
    /// `iat`, or minus now when `iat` is absent or in the future.
    pub max_lifetime_secs: Option<u64>,
}

/// Checks tokens. Cheap to share behind an `Arc`.
pub struct Verifier {
    /// A JWKS holds several (rotation); a secret or a PEM key is one.
    keys: Vec<Key>,
    /// Whether `keys` came from a JWKS, where `kid` picks the key.
    by_kid: bool,
    policy: Policy,
}

impl Verifier {
    fn single(key: DecodingKey, algorithm: Algorithm) -> Self {
        Self {
            keys: vec![Key {
                id: None,
                key,
                algorithm,
            }],
            by_kid: false,
            policy: Policy::default(),
        }
    }

    pub fn hs256(secret: &[u8]) -> Self {
        Self::single(DecodingKey::from_secret(secret), Algorithm::HS256)
    }

    /// The same verifier, also enforcing `policy`.
    pub fn with_policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// A PEM public key: RSA keys verify RS256, EC keys ES256.
    pub fn from_pem_file(path: &Path) -> Result<Self, KeyError> {
        let pem = std::fs::read(path).map_err(|source| KeyError::Read {
            path: path.display().to_string(),
            source,
        })?;
        if let Ok(key) = DecodingKey::from_rsa_pem(&pem) {
            Ok(Self::single(key, Algorithm::RS256))
        } else if let Ok(key) = DecodingKey::from_ec_pem(&pem) {
            Ok(Self::single(key, Algorithm::ES256))
        } else {
            Err(KeyError::NotAKey {
                path: path.display().to_string(),
            })
        }
    }

    /// A JWKS document. A token naming a `kid` is checked against that key
    /// only; a token without one against every key of its algorithm, so
    /// keys can be rotated by publishing the new one beside the old.
    pub fn from_jwks_file(path: &Path) -> Result<Self, KeyError> {
        let err = |reason: String| KeyError::Jwks {
            path: path.display().to_string(),
            reason,
        };
        let text = std::fs::read(path).map_err(|source| KeyError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let set: JwkSet = serde_json::from_slice(&text).map_err(|e| err(e.to_string()))?;
        let mut keys = Vec::new();
        for jwk in &set.keys {
            let algorithm = match jwk.common.key_algorithm.map(|a| a.to_string()) {
                Some(name) => name.parse::<Algorithm>().map_err(|e| err(e.to_string()))?,
                None => match &jwk.algorithm {
                    jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(_) => Algorithm::ES256,
                    jsonwebtoken::jwk::AlgorithmParameters::RSA(_) => Algorithm::RS256,
                    _ => Algorithm::HS256,
                },
            };
            let key = DecodingKey::from_jwk(jwk).map_err(|e| err(e.to_string()))?;
            keys.push(Key {
                id: jwk.common.key_id.clone(),
                key,
                algorithm,
            });
        }
        if keys.is_empty() {
            return Err(err("no keys".to_owned()));
        }
        Ok(Self {
            keys,
            by_kid: true,
            policy: Policy::default(),
        })
    }

    /// Verifies a token and returns its claims.
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| AuthError::Malformed(e.to_string()))?;
        let candidates = self.keys.iter().filter(|key| match &header.kid {
            Some(kid) if self.by_kid => key.id.as_deref() == Some(kid.as_str()),
            _ => key.algorithm == header.alg,
        });
        // A key whose signature does not match lets the next one try; any
        // other failure means the signature held, so it is the answer.
        let mut outcome = Err(AuthError::BadSignature);
        for key in candidates {
            outcome = self.decode(token, key);
            if !matches!(outcome, Err(AuthError::BadSignature)) {
                break;
            }
        }
        let claims = outcome?;
        if claims.sub.is_empty() {
            return Err(AuthError::InvalidClaims("sub is empty".to_owned()));
        }
        if !is_valid_tenant(claims.tenant()) {
            return Err(AuthError::InvalidClaims(
                "tenant must match [A-Za-z0-9_.-]{1,64}".to_owned(),
            ));
        }
        if let Some(max_secs) = self.policy.max_lifetime_secs {
            let now = crate::clock::now_secs();
            // An `iat` in the future must not stretch what is left.
            let from = claims.iat.map_or(now, |iat| iat.min(now));
            if claims.exp.saturating_sub(from) > max_secs {
                return Err(AuthError::TooLongLived { max_secs });
            }
        }
        Ok(claims)
    }

    fn decode(&self, token: &str, key: &Key) -> Result<Claims, AuthError> {
        let mut validation = Validation::new(key.algorithm);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        // Audience and issuer are checked below, in a fixed order: the
        // library finds missing claims in hash-set order, so a token
        // lacking both would be refused for either at random.
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["exp", "sub"]);
        let data = jsonwebtoken::decode::<Claims>(token, &key.key, &validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::ImmatureSignature => AuthError::NotYetValid,
                ErrorKind::InvalidSignature | ErrorKind::InvalidAlgorithm => {
                    AuthError::BadSignature
                }
                ErrorKind::Json(_) | ErrorKind::MissingRequiredClaim(_) => {
                    AuthError::InvalidClaims(e.to_string())
                }
                _ => AuthError::Malformed(e.to_string()),
            }
        })?;
        let claims = data.claims;
        if let Some(audience) = &self.policy.audience {
            let named = match &claims.aud {
                Some(Audience::One(one)) => one == audience,
                Some(Audience::Many(many)) => many.iter().any(|a| a == audience),
                None => false,
            };
            if !named {
                return Err(AuthError::WrongAudience);
            }
        }
        if let Some(issuer) = &self.policy.issuer
            && claims.iss.as_deref() != Some(issuer.as_str())
        {
            return Err(AuthError::WrongIssuer);
        }
        Ok(claims)
    }
}

/// Signs tokens: HS256 with the shared secret (the `token` subcommand,
/// sample tokens), or RS256 with a private key (tests of key files).
pub struct Minter {
    key: EncodingKey,
    header: Header,
}

impl Minter {
    pub fn hs256(secret: &[u8]) -> Self {
        Self {
            key: EncodingKey::from_secret(secret),
            header: Header::new(Algorithm::HS256),
        }
    }

    /// RS256 with a PEM private key, naming `kid` in the header when given.
    pub fn rs256_pem(pem: &[u8], kid: Option<&str>) -> Result<Self, KeyError> {
        let key = EncodingKey::from_rsa_pem(pem).map_err(|_| KeyError::NotAKey {
            path: "<pem>".to_owned(),
        })?;
        let mut header = Header::new(Algorithm::RS256);
        header.kid = kid.map(str::to_owned);
        Ok(Self { key, header })
    }

    pub fn mint(&self, claims: &Claims) -> String {
        // Encoding our own well-formed claims with a loaded key cannot fail.
        jsonwebtoken::encode(&self.header, claims, &self.key).unwrap_or_default()
    }
}

/// Claims for a token of `kind` for `sub`, valid for `ttl_secs` from now.
pub fn claims(sub: &str, kind: &str, tenant: &str, scope: Option<&str>, ttl_secs: u64) -> Claims {
    let now = crate::clock::now_secs();
    Claims {
        sub: sub.to_owned(),
        tenant: Some(tenant.to_owned()),
        kind: Some(kind.to_owned()),
        scope: scope.map(str::to_owned),
        owner: None,
        app: None,
        exp: now + ttl_secs,
        nbf: None,
        iat: Some(now),
        aud: None,
        iss: None,
    }
}

/// The token of a request: `token` query parameter, then
/// `Authorization: Bearer …`, then a `token` header.
pub fn token_from_request<B>(request: &http::Request<B>) -> Option<String> {
    if let Some(token) = request
        .uri()
        .query()
        .and_then(|q| crate::http::query_param(q, "token"))
    {
        return Some(token);
    }
    let headers = request.headers();
    if let Some(bearer) = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
    {
        return Some(bearer.trim().to_owned());
    }
    headers
        .get("token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Parses a duration such as `90s`, `15m`, `1h`, `7d` or a plain number of seconds.
pub fn parse_ttl(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration like 90s, 15m, 1h or 7d"))?;
    let factor = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("`{text}`: unit must be s, m, h or d")),
    };
    Ok(number.saturating_mul(factor))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"test-secret";

    fn mint(claims: &Claims) -> String {
        Minter::hs256(SECRET).mint(claims)
    }

    #[test]
    fn round_trip() {
        let c = claims("alice", "user", "acme", Some("broadcast read"), 60);
        let got = Verifier::hs256(SECRET).verify(&mint(&c)).unwrap();
        assert_eq!(got, c);
        assert!(got.has_scope("broadcast"));
        assert!(!got.has_scope("write"));
    }

    #[test]
    fn wrong_secret_is_bad_signature() {
        let token = mint(&claims("alice", "user", "default", None, 60));
        assert_eq!(
            Verifier::hs256(b"other").verify(&token),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn expired_beyond_leeway() {
        let mut c = claims("alice", "user", "default", None, 0);
        c.exp = crate::clock::now_secs() - LEEWAY_SECS - 5;
        assert_eq!(
            Verifier::hs256(SECRET).verify(&mint(&c)),
            Err(AuthError::Expired)
        );
        c.exp = crate::clock::now_secs() - 5;
        assert!(
            Verifier::hs256(SECRET).verify(&mint(&c)).is_ok(),
            "within leeway"
        );
    }

    #[test]
    fn not_before_is_checked() {
        let mut c = claims("alice", "user", "default", None, 600);
        c.nbf = Some(crate::clock::now_secs() + 300);
        assert_eq!(
            Verifier::hs256(SECRET).verify(&mint(&c)),
            Err(AuthError::NotYetValid)
        );
    }

    #[test]
    fn garbage_is_malformed() {
        assert!(matches!(
            Verifier::hs256(SECRET).verify("not.a.jwt"),
            Err(AuthError::Malformed(_))
        ));
        assert_eq!(Verifier::hs256(SECRET).verify(""), Err(AuthError::Missing));
    }

    #[test]
    fn bad_tenant_is_refused() {
        let c = claims("alice", "user", "a}b", None, 60);
        assert!(matches!(
            Verifier::hs256(SECRET).verify(&mint(&c)),
            Err(AuthError::InvalidClaims(_))
        ));
    }

    #[test]
    fn token_sources_in_order() {
        let req = http::Request::builder()
            .uri("/x?token=q")
            .header("authorization", "Bearer b")
            .header("token", "h")
            .body(())
            .unwrap();
        assert_eq!(token_from_request(&req).as_deref(), Some("q"));
        let req = http::Request::builder()
            .uri("/x")
            .header("authorization", "Bearer b")
            .header("token", "h")
            .body(())
            .unwrap();
        assert_eq!(token_from_request(&req).as_deref(), Some("b"));
        let req = http::Request::builder()
            .uri("/x")
            .header("token", "h")
            .body(())
            .unwrap();
        assert_eq!(token_from_request(&req).as_deref(), Some("h"));
    }

    #[test]
    fn ttl_parsing() {
        assert_eq!(parse_ttl("90"), Ok(90));
        assert_eq!(parse_ttl("15m"), Ok(900));
        assert_eq!(parse_ttl("1h"), Ok(3600));
        assert_eq!(parse_ttl("7d"), Ok(604_800));
        assert!(parse_ttl("1y").is_err());
        assert!(parse_ttl("h").is_err());
    }
}

/// Token settings shared by the edge and the router. They are global so
/// `edge token --jwt-secret …` reads them after the subcommand too.
#[derive(Debug, Clone, clap::Args)]
pub struct AuthSettings {
    /// HS256 secret tokens are verified with (one of this, a PEM public
    /// key or a JWKS is needed; `switchboard`, standalone mode, makes a
    /// random secret when none is given).
    #[arg(
        long,
        env = "SWITCHBOARD_JWT_SECRET",
        hide_env_values = true,
        global = true
    )]
    pub jwt_secret: Option<String>,
    /// PEM public key (RSA for RS256, EC for ES256) instead of a secret.
    #[arg(long, env = "SWITCHBOARD_JWT_PUBLIC_KEY", global = true)]
    pub jwt_public_key: Option<std::path::PathBuf>,
    /// JWKS file instead of a secret: a token naming a `kid` is checked
    /// against that key, one without against every key of its algorithm.
    #[arg(long, env = "SWITCHBOARD_JWT_JWKS", global = true)]
    pub jwt_jwks: Option<std::path::PathBuf>,
    /// When set, every token's `aud` must name this audience.
    #[arg(long, env = "SWITCHBOARD_JWT_AUDIENCE", global = true)]
    pub jwt_audience: Option<String>,
    /// When set, every token's `iss` must be this issuer.
    #[arg(long, env = "SWITCHBOARD_JWT_ISSUER", global = true)]
    pub jwt_issuer: Option<String>,
    /// When set, tokens that live longer (exp − iat, or exp − now without
    /// iat) are refused, e.g. `24h`.
    #[arg(
        long,
        env = "SWITCHBOARD_JWT_MAX_LIFETIME",
        global = true,
        value_parser = crate::config::duration
    )]
    pub jwt_max_lifetime: Option<std::time::Duration>,
}

impl AuthSettings {
    /// The verifier these settings describe: a JWKS file, else a PEM key,
    /// else the shared secret; with the audience, issuer and lifetime rules.
    pub fn verifier(&self) -> Result<Verifier, KeyError> {
        let verifier = if let Some(path) = &self.jwt_jwks {
            Verifier::from_jwks_file(path)?
        } else if let Some(path) = &self.jwt_public_key {
            Verifier::from_pem_file(path)?
        } else {
            match &self.jwt_secret {
                Some(secret) if !secret.is_empty() => Verifier::hs256(secret.as_bytes()),
                _ => return Err(KeyError::Nothing),
            }
        };
        Ok(verifier.with_policy(self.policy()))
    }

    pub fn policy(&self) -> Policy {
        Policy {
            audience: self.jwt_audience.clone().filter(|a| !a.is_empty()),
            issuer: self.jwt_issuer.clone().filter(|i| !i.is_empty()),
            max_lifetime_secs: self.jwt_max_lifetime.map(|d| d.as_secs()),
        }
    }

    /// Adds the audience and issuer these settings require to `claims`, so
    /// tokens minted here are accepted here.
    pub fn stamp(&self, claims: &mut Claims) {
        let policy = self.policy();
        if let Some(audience) = policy.audience {
            claims.aud = Some(Audience::One(audience));
        }
        if let Some(issuer) = policy.issuer {
            claims.iss = Some(issuer);
        }
    }
}
