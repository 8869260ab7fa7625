//! Who a server API request acts for: a `kind=service` token acts for its
//! own tenant only; the API key for `X-Tenant` (default `default`), or,
//! without that header, as the operator.

use http::HeaderMap;
use switchboard_common::auth::{DEFAULT_TENANT, Kind};

use super::{ApiContext, ApiError};

/// Who a request acts for.
pub(super) struct Caller {
    pub tenant: String,
    /// The API key without `X-Tenant`: the operator, who may read every
    /// tenant's stats and the cluster's shape.
    pub operator: bool,
}

/// Authenticates a request by its headers.
pub(super) fn authenticate(context: &ApiContext, headers: &HeaderMap) -> Result<Caller, ApiError> {
    let unauthorized = |message: &str| ApiError::Unauthorized(message.to_owned());
    let bearer = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .ok_or_else(|| unauthorized("missing Authorization: Bearer header"))?;
    let header_tenant = match headers.get("x-tenant") {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .filter(|t| switchboard_proto::ids::is_valid_tenant(t))
                .ok_or_else(|| ApiError::field("X-Tenant", "X-Tenant is not a valid tenant"))?
                .to_owned(),
        ),
    };
    if let Some(key) = &context.api_key
        && constant_time_eq(key.as_bytes(), bearer.as_bytes())
    {
        return Ok(Caller {
            operator: header_tenant.is_none(),
            tenant: header_tenant.unwrap_or_else(|| DEFAULT_TENANT.to_owned()),
        });
    }
    let verifier = context
        .verifier
        .as_ref()
        .ok_or_else(|| unauthorized("invalid API key"))?;
    let refused = |reason: &'static str, message: String| {
        metrics::counter!("switchboard_api_tokens_refused_total", "reason" => reason).increment(1);
        ApiError::Unauthorized(message)
    };
    let claims = verifier
        .verify(bearer)
        .map_err(|e| refused(e.label(), e.to_string()))?;
    claims
        .check_kind(Kind::Service)
        .map_err(|e| refused("kind", e.to_string()))?;
    match header_tenant {
        Some(other) if other != claims.tenant() => Err(ApiError::Forbidden(format!(
            "a service token of tenant {} cannot act for {other}",
            claims.tenant()
        ))),
        _ => Ok(Caller {
            tenant: claims.tenant().to_owned(),
            operator: false,
        }),
    }
}

/// Compares secrets without leaking where they differ through timing.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_compares() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
