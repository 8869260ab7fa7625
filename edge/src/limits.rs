//! Per-socket limits (message size, inbound rate, outbound queue,
//! keep-alive, subscriptions), the token bucket behind the inbound rate
//! limit, and the edge's cap on sockets that have not authenticated yet.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Limits every socket gets. The defaults are the ones clients are built
/// for: 64 KiB messages, 50 messages a second with bursts of 100, an
/// outbound queue of 1,024 messages or 4 MiB, a ping every 25 s and a close
/// after 60 s of silence, 1,024 subscriptions.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest inbound message, after reassembly (close 1009 above it).
    pub max_message: usize,
    /// Sustained inbound messages per second.
    pub rate_per_sec: f64,
    /// Inbound burst above the sustained rate.
    pub rate_burst: f64,
    /// A socket over the rate limit for this long is closed with 1008.
    pub rate_grace: Duration,
    /// Outbound queue bound, in messages and in bytes (close 1013 above).
    pub outbound_messages: usize,
    pub outbound_bytes: usize,
    /// Server ping interval, and the silence after which a socket is closed.
    pub ping_interval: Duration,
    pub idle_timeout: Duration,
    /// How long a drained socket's queued frames get to flush.
    pub flush_timeout: Duration,
    /// Subscriptions one socket may hold.
    pub max_subscriptions: usize,
    /// Whether permessage-deflate is negotiated when a client offers it.
    pub deflate: bool,
    /// Messages shorter than this go uncompressed on a deflate socket.
    pub deflate_threshold: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message: 64 * 1024,
            rate_per_sec: 50.0,
            rate_burst: 100.0,
            rate_grace: Duration::from_secs(5),
            outbound_messages: 1024,
            outbound_bytes: 4 << 20,
            ping_interval: Duration::from_secs(25),
            idle_timeout: Duration::from_secs(60),
            flush_timeout: Duration::from_secs(5),
            max_subscriptions: 1024,
            deflate: true,
            deflate_threshold: 256,
        }
    }
}

/// A token bucket: `rate` tokens a second, up to `burst`.
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(rate: f64, burst: f64) -> Self {
        Self {
            rate,
            burst,
            tokens: burst,
            last: Instant::now(),
        }
    }

    /// Takes one token if there is one.
    pub fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Tracks how long a socket has stayed over its rate limit: a streak of
/// refusals with no gap longer than [`OverLimit::GAP`] between them.
/// Messages that get through between refusals do not end the streak, so a
/// client sending at ten times the limit is closed even though a tenth of
/// its messages pass.
#[derive(Default)]
pub struct OverLimit {
    since: Option<Instant>,
    last: Option<Instant>,
}

impl OverLimit {
    /// A quiet second ends a streak.
    pub const GAP: Duration = Duration::from_secs(1);

    /// Records a refused message; true once the streak has lasted `grace`.
    pub fn refused(&mut self, now: Instant, grace: Duration) -> bool {
        let gap = self
            .last
            .is_none_or(|last| now.saturating_duration_since(last) > Self::GAP);
        if gap {
            self.since = Some(now);
        }
        self.last = Some(now);
        let since = self.since.unwrap_or(now);
        now.saturating_duration_since(since) >= grace
    }
}

/// The edge's cap on sockets that have not authenticated yet (the IM
/// socket before it registers): each holds an [`UnauthenticatedSlot`].
pub struct UnauthenticatedSockets {
    slots: Arc<Semaphore>,
}

impl UnauthenticatedSockets {
    pub fn new(max: usize) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(max.min(Semaphore::MAX_PERMITS))),
        }
    }

    /// A slot for one more such socket; `None` at the cap (counted).
    pub fn try_hold(&self) -> Option<UnauthenticatedSlot> {
        let Ok(permit) = self.slots.clone().try_acquire_owned() else {
            metrics::counter!("switchboard_edge_unauthenticated_refused_total").increment(1);
            return None;
        };
        metrics::gauge!("switchboard_edge_unauthenticated_sockets").increment(1.0);
        Some(UnauthenticatedSlot { _permit: permit })
    }
}

/// One socket's place under [`UnauthenticatedSockets`]: dropped when the
/// socket authenticates or closes, which frees it.
pub struct UnauthenticatedSlot {
    _permit: OwnedSemaphorePermit,
}

impl Drop for UnauthenticatedSlot {
    fn drop(&mut self) {
        metrics::gauge!("switchboard_edge_unauthenticated_sockets").decrement(1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unauthenticated_slots_are_capped_and_freed_on_drop() {
        let cap = UnauthenticatedSockets::new(2);
        let first = cap.try_hold().expect("first slot");
        let _second = cap.try_hold().expect("second slot");
        assert!(cap.try_hold().is_none(), "at the cap");
        drop(first);
        assert!(cap.try_hold().is_some(), "a freed slot is reused");
    }

    #[test]
    fn burst_then_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(50.0, 100.0);
        let taken = (0..150).filter(|_| bucket.take(start)).count();
        assert_eq!(taken, 100, "the burst");
        assert!(!bucket.take(start));
        let later = start + Duration::from_millis(100);
        let taken = (0..10).filter(|_| bucket.take(later)).count();
        assert_eq!(taken, 5, "50/s for 100 ms");
    }

    #[test]
    fn bucket_never_exceeds_burst() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(50.0, 100.0);
        let later = start + Duration::from_secs(3600);
        let taken = (0..1000).filter(|_| bucket.take(later)).count();
        assert_eq!(taken, 100);
    }

    #[test]
    fn a_streak_of_refusals_lasting_the_grace_closes() {
        let start = Instant::now();
        let grace = Duration::from_secs(5);
        let mut over = OverLimit::default();
        let at = |ms: u64| start + Duration::from_millis(ms);
        for ms in (0..5000).step_by(200) {
            assert!(!over.refused(at(ms), grace), "{ms} ms into the streak");
        }
        assert!(over.refused(at(5000), grace));
    }

    #[test]
    fn a_quiet_second_ends_the_streak() {
        let start = Instant::now();
        let grace = Duration::from_secs(5);
        let mut over = OverLimit::default();
        let at = |ms: u64| start + Duration::from_millis(ms);
        assert!(!over.refused(at(0), grace));
        assert!(!over.refused(at(900), grace));
        // 1.1 s without a refusal: the streak restarts at 2 s.
        assert!(!over.refused(at(2000), grace));
        assert!(!over.refused(at(2900), grace));
        assert!(!over.refused(at(3800), grace));
        assert!(!over.refused(at(4700), grace));
        assert!(!over.refused(at(5600), grace));
        assert!(!over.refused(at(6500), grace), "4.5 s into the new streak");
        assert!(over.refused(at(7000), grace), "5 s into the new streak");
    }
}
