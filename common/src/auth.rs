//! JWT verification and minting.
//!
//! HS256 with a shared secret is the default; RS256/ES256 with a PEM public
//! key, or any of those through a JWKS file, also work. `exp` is required,
//! `nbf` is checked when present, with 30 s of leeway for clock skew.

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

enum Keys {
    Single {
        key: DecodingKey,
        algorithm: Algorithm,
    },
    Set(Vec<(Option<String>, DecodingKey, Algorithm)>),
}

/// Checks tokens. Cheap to share behind an `Arc`.
pub struct Verifier {
    keys: Keys,
}

impl Verifier {
    pub fn hs256(secret: &[u8]) -> Self {
        Self {
            keys: Keys::Single {
                key: DecodingKey::from_secret(secret),
                algorithm: Algorithm::HS256,
            },
        }
    }

    /// A PEM public key: RSA keys verify RS256, EC keys ES256.
    pub fn from_pem_file(path: &Path) -> Result<Self, KeyError> {
        let pem = std::fs::read(path).map_err(|source| KeyError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let (key, algorithm) = if let Ok(key) = DecodingKey::from_rsa_pem(&pem) {
            (key, Algorithm::RS256)
        } else if let Ok(key) = DecodingKey::from_ec_pem(&pem) {
            (key, Algorithm::ES256)
        } else {
            return Err(KeyError::NotAKey {
                path: path.display().to_string(),
            });
        };
        Ok(Self {
            keys: Keys::Single { key, algorithm },
        })
    }

    /// A JWKS document; keys are picked by `kid` when the token names one.
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
            keys.push((jwk.common.key_id.clone(), key, algorithm));
        }
        if keys.is_empty() {
            return Err(err("no keys".to_owned()));
        }
        Ok(Self {
            keys: Keys::Set(keys),
        })
    }

    /// Verifies a token and returns its claims.
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| AuthError::Malformed(e.to_string()))?;
        let (key, algorithm) = match &self.keys {
            Keys::Single { key, algorithm } => (key, *algorithm),
            Keys::Set(keys) => keys
                .iter()
                .find(|(kid, _, alg)| match (&header.kid, kid) {
                    (Some(wanted), Some(kid)) => wanted == kid,
                    _ => *alg == header.alg,
                })
                .map(|(_, key, alg)| (key, *alg))
                .ok_or(AuthError::BadSignature)?,
        };
        let mut validation = Validation::new(algorithm);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["exp", "sub"]);
        let data = jsonwebtoken::decode::<Claims>(token, key, &validation).map_err(|e| {
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
        if claims.sub.is_empty() {
            return Err(AuthError::InvalidClaims("sub is empty".to_owned()));
        }
        if !is_valid_tenant(claims.tenant()) {
            return Err(AuthError::InvalidClaims(
                "tenant must match [A-Za-z0-9_.-]{1,64}".to_owned(),
            ));
        }
        Ok(claims)
    }
}

/// Signs HS256 tokens (the `token` subcommand, tests, sample tokens).
pub struct Minter {
    key: EncodingKey,
}

impl Minter {
    pub fn hs256(secret: &[u8]) -> Self {
        Self {
            key: EncodingKey::from_secret(secret),
        }
    }

    pub fn mint(&self, claims: &Claims) -> String {
        // Encoding our own well-formed claims with an HMAC key cannot fail.
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.key).unwrap_or_default()
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

/// Token settings shared by the edge and the router.
#[derive(Debug, Clone, clap::Args)]
pub struct AuthSettings {
    /// HS256 secret. Standalone mode makes a random one when unset.
    #[arg(long, env = "SWITCHBOARD_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// PEM public key (RSA for RS256, EC for ES256) instead of a secret.
    #[arg(long, env = "SWITCHBOARD_JWT_PUBLIC_KEY")]
    pub jwt_public_key: Option<std::path::PathBuf>,
    /// JWKS file instead of a secret; keys are picked by `kid`.
    #[arg(long, env = "SWITCHBOARD_JWT_JWKS")]
    pub jwt_jwks: Option<std::path::PathBuf>,
}

impl AuthSettings {
    /// The verifier these settings describe: a JWKS file, else a PEM key,
    /// else the shared secret.
    pub fn verifier(&self) -> Result<Verifier, KeyError> {
        if let Some(path) = &self.jwt_jwks {
            return Verifier::from_jwks_file(path);
        }
        if let Some(path) = &self.jwt_public_key {
            return Verifier::from_pem_file(path);
        }
        match &self.jwt_secret {
            Some(secret) if !secret.is_empty() => Ok(Verifier::hs256(secret.as_bytes())),
            _ => Err(KeyError::Nothing),
        }
    }
}
