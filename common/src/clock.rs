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
///
/// Every delivered message carries one, so each thread keeps the last
/// formatted millisecond and formats again only when the clock moves on.
pub fn iso8601_now() -> String {
    let now = OffsetDateTime::now_utc();
    let ms = now.unix_timestamp_nanos() / 1_000_000;
    LAST_FORMATTED.with(|last| {
        let mut last = last.borrow_mut();
        if last.0 != ms {
            *last = (ms, iso8601(now));
        }
        last.1.clone()
    })
}

thread_local! {
    static LAST_FORMATTED: std::cell::RefCell<(i128, String)> =
        const { std::cell::RefCell::new((i128::MIN, String::new())) };
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
    fn now_matches_a_fresh_formatting_of_the_same_millisecond() {
        for _ in 0..1000 {
            let before = OffsetDateTime::now_utc();
            let formatted = iso8601_now();
            let after = OffsetDateTime::now_utc();
            let (a, b) = (iso8601(before), iso8601(after));
            assert!(
                a <= formatted && formatted <= b,
                "{a} <= {formatted} <= {b}"
            );
        }
    }

    #[test]
    fn formats_with_milliseconds_and_zulu() {
        let at = OffsetDateTime::from_unix_timestamp_nanos(1_795_248_930_123_456_789).unwrap();
        assert_eq!(iso8601(at), "2026-11-21T08:15:30.123Z");
    }
}
