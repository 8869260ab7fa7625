//! Wall-clock helpers for wire timestamps.

use std::time::{SystemTime, UNIX_EPOCH};

use time::OffsetDateTime;
use time::macros::format_description;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    now_ms() / 1000
}

/// ISO 8601 UTC with milliseconds, e.g. `2026-11-21T08:15:30.123Z`.
pub fn iso8601_now() -> String {
    iso8601(OffsetDateTime::now_utc())
}

fn iso8601(at: OffsetDateTime) -> String {
    let format =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    at.format(&format)
        .unwrap_or_else(|_| "1970-01-01T00:00:00.000Z".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_with_milliseconds_and_zulu() {
        let at = OffsetDateTime::from_unix_timestamp_nanos(1_795_248_930_123_456_789).unwrap();
        assert_eq!(iso8601(at), "2026-11-21T08:15:30.123Z");
    }
}
