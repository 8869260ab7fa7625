//! Id rules shared by every dialect and by tenant names.

/// Group and client ids, tenants: `[A-Za-z0-9_-]{1,64}`, not only digits.
/// Digit-only ids are refused because they are database integers, which the
/// protocol replaced with random string ids.
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        && !id.bytes().all(|b| b.is_ascii_digit())
}

/// What a refused id is told, naming the field.
pub fn invalid_id_message(field: &str) -> String {
    format!("{field} must match [A-Za-z0-9_-]{{1,64}} and not be only digits")
}

/// Tenants also allow `.` (domain-like names) and may be digits, but never
/// characters that could break a Redis key or hash tag.
pub fn is_valid_tenant(tenant: &str) -> bool {
    !tenant.is_empty()
        && tenant.len() <= 64
        && tenant
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

/// Edge and router ids: they appear in NATS subjects, so no dots,
/// wildcards or spaces.
pub fn is_valid_process_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert!(is_valid_id("group_abc123"));
        assert!(is_valid_id("a"));
        assert!(is_valid_id("A-b_9"));
        assert!(is_valid_id(&"x".repeat(64)));
        assert!(!is_valid_id(&"x".repeat(65)));
        assert!(!is_valid_id(""));
        assert!(!is_valid_id("12345"));
        assert!(!is_valid_id("has space"));
        assert!(!is_valid_id("dot.ted"));
        assert!(!is_valid_id("é"));
    }

    #[test]
    fn process_ids() {
        assert!(is_valid_process_id("vm-edge-1a2b3c"));
        assert!(is_valid_process_id("123"));
        assert!(!is_valid_process_id("host.example.com"));
        assert!(!is_valid_process_id("a*"));
        assert!(!is_valid_process_id(""));
    }

    #[test]
    fn tenants() {
        assert!(is_valid_tenant("default"));
        assert!(is_valid_tenant("acme.io"));
        assert!(is_valid_tenant("42"));
        assert!(!is_valid_tenant("a}b"));
        assert!(!is_valid_tenant(""));
        assert!(!is_valid_tenant("a:b"));
    }
}
