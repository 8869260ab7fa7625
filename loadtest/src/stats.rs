//! Live counters and latency histograms of one run, shared by every
//! virtual user; turned into a [`crate::summary::Summary`] at the end.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Microseconds since the Unix epoch: the clock stamped into payloads, so
/// it means the same in every process of a multi-process run.
pub fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// The latencies a run records, each its own histogram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trend {
    /// Send to each receipt of a message (the main figure).
    Delivery,
    /// TCP connect to the upgrade's 101 answer.
    Connect,
    /// Send to the server's acknowledgement (IM send status, JSON-RPC reply).
    Ack,
    /// IM: send to the recipient's receive status coming back.
    Receipt,
    /// Server API: HTTP request to its answer.
    Request,
    /// Deliveries of messages sent inside the abuse window.
    Window,
    /// `recovery`: reconnect to the first live message after the replay.
    Replay,
}

impl Trend {
    pub const ALL: [Trend; 7] = [
        Trend::Delivery,
        Trend::Connect,
        Trend::Ack,
        Trend::Receipt,
        Trend::Request,
        Trend::Window,
        Trend::Replay,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Trend::Delivery => "delivery",
            Trend::Connect => "connect",
            Trend::Ack => "ack",
            Trend::Receipt => "receipt",
            Trend::Request => "request",
            Trend::Window => "window",
            Trend::Replay => "replay",
        }
    }
}

/// Highest latency recorded, in microseconds (larger values are clamped).
const MAX_MICROS: u64 = 600_000_000;
/// Histograms per trend; a socket records into `index % SHARDS`, so
/// concurrent recorders rarely meet on one lock.
const SHARDS: usize = 8;

/// A new latency histogram: 1 µs to 10 min, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("constant bounds are valid")
}

struct Sharded([Mutex<Histogram<u64>>; SHARDS]);

impl Sharded {
    fn new() -> Self {
        Self(std::array::from_fn(|_| Mutex::new(histogram())))
    }

    fn record(&self, key: usize, micros: u64) {
        // A poisoned lock only means another recorder panicked mid-record;
        // the histogram is still usable.
        let mut h = self.0[key % SHARDS]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        h.saturating_record(micros.clamp(1, MAX_MICROS));
    }

    fn merged(&self) -> Histogram<u64> {
        let mut all = histogram();
        for shard in &self.0 {
            let h = shard
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let _ = all.add(&*h);
        }
        all
    }
}

/// Counters and histograms of a run. Every field is safe to bump from
/// any task.
pub struct Stats {
    /// Sockets whose upgrade succeeded.
    pub connections: AtomicU64,
    pub connect_failures: AtomicU64,
    /// Sockets open right now.
    pub open: AtomicU64,
    /// Messages (or HTTP publishes) sent by publishers.
    pub sent: AtomicU64,
    /// Stamped messages received.
    pub received: AtomicU64,
    /// Deliveries the plan expects.
    pub expected: AtomicU64,
    /// Error replies, failed sends, failed requests.
    pub errors: AtomicU64,
    /// Sockets the server closed, or that vanished, while the plan held them.
    pub unexpected_closes: AtomicU64,
    /// When the last stamped message arrived (µs since the epoch).
    pub last_receive: AtomicU64,
    /// Sockets whose upgrade agreed to permessage-deflate.
    pub negotiated: AtomicU64,
    /// Bytes on the wire of every data message received (frame headers
    /// and payloads as read, before inflating).
    pub wire_bytes: AtomicU64,
    /// The same for stamped messages only (deliveries).
    pub delivered_wire_bytes: AtomicU64,
    /// Deliveries' payload bytes after inflating.
    pub delivered_bytes: AtomicU64,
    /// Deliveries that came compressed.
    pub compressed_deliveries: AtomicU64,
    /// Set once the plan closes its sockets, so their ends are expected.
    pub closing: AtomicBool,
    /// Send times (µs since the epoch) bounding the abuse window, `[from,
    /// to)`; messages sent inside it are also timed as [`Trend::Window`].
    /// Both 0 when the scenario has none.
    pub window: (AtomicU64, AtomicU64),
    trends: [Sharded; Trend::ALL.len()],
    error_samples: Mutex<Vec<String>>,
}

impl Default for Stats {
    fn default() -> Self {
        Self::new()
    }
}

impl Stats {
    pub fn new() -> Self {
        Self {
            connections: AtomicU64::new(0),
            connect_failures: AtomicU64::new(0),
            open: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            received: AtomicU64::new(0),
            expected: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            unexpected_closes: AtomicU64::new(0),
            last_receive: AtomicU64::new(0),
            negotiated: AtomicU64::new(0),
            wire_bytes: AtomicU64::new(0),
            delivered_wire_bytes: AtomicU64::new(0),
            delivered_bytes: AtomicU64::new(0),
            compressed_deliveries: AtomicU64::new(0),
            closing: AtomicBool::new(false),
            window: (AtomicU64::new(0), AtomicU64::new(0)),
            trends: std::array::from_fn(|_| Sharded::new()),
            error_samples: Mutex::new(Vec::new()),
        }
    }

    pub fn record(&self, trend: Trend, key: usize, micros: u64) {
        self.trends[trend as usize].record(key, micros);
    }

    /// A stamped message arrived: count it and time it from its stamp.
    pub fn delivered(&self, key: usize, stamp: u64) {
        let now = now_micros();
        self.received.fetch_add(1, Ordering::Relaxed);
        self.last_receive.fetch_max(now, Ordering::Relaxed);
        self.record(Trend::Delivery, key, now.saturating_sub(stamp));
        let from = self.window.0.load(Ordering::Relaxed);
        if from > 0 && stamp >= from && stamp < self.window.1.load(Ordering::Relaxed) {
            self.record(Trend::Window, key, now.saturating_sub(stamp));
        }
    }

    /// A replayed message arrived: counted, but not timed as a delivery,
    /// since it waited in the history for as long as its socket was away.
    pub fn delivered_replayed(&self) {
        self.received.fetch_add(1, Ordering::Relaxed);
        self.last_receive.fetch_max(now_micros(), Ordering::Relaxed);
    }

    /// A delivery's size: `wire` bytes on the wire, `inflated` once read.
    pub fn delivery_bytes(&self, wire: u64, inflated: u64, compressed: bool) {
        self.delivered_wire_bytes.fetch_add(wire, Ordering::Relaxed);
        self.delivered_bytes.fetch_add(inflated, Ordering::Relaxed);
        if compressed {
            self.compressed_deliveries.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// Counts an error and keeps the first few descriptions.
    pub fn error(&self, what: impl FnOnce() -> String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut samples = self
            .error_samples
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if samples.len() < 5 {
            let mut text = what();
            if text.len() > 300 {
                let mut end = 300;
                while !text.is_char_boundary(end) {
                    end -= 1;
                }
                text.truncate(end);
            }
            samples.push(text);
        }
    }

    pub fn error_samples(&self) -> Vec<String> {
        self.error_samples
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// A socket ended; it counts as unexpected unless the plan is closing.
    pub fn socket_ended(&self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
        if !self.closing.load(Ordering::Relaxed) {
            self.unexpected_closes.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A socket the harness closed itself ended: expected, whenever.
    pub fn socket_left(&self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn histogram(&self, trend: Trend) -> Histogram<u64> {
        self.trends[trend as usize].merged()
    }
}

/// A latency trend as reported: milliseconds, plus the histogram's
/// recorded values so summaries of several processes can be merged.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct TrendSummary {
    pub count: u64,
    pub min_ms: f64,
    pub avg_ms: f64,
    pub med_ms: f64,
    pub p90_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// `(value µs, count)` of every recorded bucket.
    pub buckets: Vec<(u64, u64)>,
}

impl TrendSummary {
    pub fn from_histogram(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let ms = |micros: u64| micros as f64 / 1000.0;
        Self {
            count: h.len(),
            min_ms: ms(h.min()),
            avg_ms: h.mean() / 1000.0,
            med_ms: ms(h.value_at_quantile(0.5)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p95_ms: ms(h.value_at_quantile(0.95)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            max_ms: ms(h.max()),
            buckets: h
                .iter_recorded()
                .map(|v| (v.value_iterated_to(), v.count_at_value()))
                .collect(),
        }
    }

    /// The histogram these figures came from.
    pub fn to_histogram(&self) -> Histogram<u64> {
        let mut h = histogram();
        for &(value, count) in &self.buckets {
            let _ = h.record_n(value.clamp(1, MAX_MICROS), count);
        }
        h
    }

    /// One statistic by name (`p99`, `med`, …), in milliseconds.
    pub fn stat(&self, name: &str) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        Some(match name {
            "min" => self.min_ms,
            "avg" => self.avg_ms,
            "med" => self.med_ms,
            "p90" => self.p90_ms,
            "p95" => self.p95_ms,
            "p99" => self.p99_ms,
            "max" => self.max_ms,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(actual: f64, wanted: f64) -> bool {
        // Three significant digits: within 0.1 % (plus rounding).
        (actual - wanted).abs() <= wanted * 0.002 + 1e-9
    }

    #[test]
    fn percentiles_of_a_uniform_run() {
        let mut h = histogram();
        for micros in 1..=10_000u64 {
            h.record(micros).unwrap();
        }
        let t = TrendSummary::from_histogram(&h);
        assert_eq!(t.count, 10_000);
        assert!(close(t.min_ms, 0.001), "{}", t.min_ms);
        assert!(close(t.med_ms, 5.0), "{}", t.med_ms);
        assert!(close(t.p90_ms, 9.0), "{}", t.p90_ms);
        assert!(close(t.p95_ms, 9.5), "{}", t.p95_ms);
        assert!(close(t.p99_ms, 9.9), "{}", t.p99_ms);
        assert!(close(t.max_ms, 10.0), "{}", t.max_ms);
        assert!(close(t.avg_ms, 5.0005), "{}", t.avg_ms);
    }

    #[test]
    fn a_skewed_run_has_its_tail_in_p99_only() {
        let mut h = histogram();
        h.record_n(1_000, 990).unwrap();
        h.record_n(50_000, 10).unwrap();
        let t = TrendSummary::from_histogram(&h);
        assert!(close(t.med_ms, 1.0) && close(t.p95_ms, 1.0));
        // The 99th percentile is the 990th value: still in the fast group.
        assert!(close(t.p99_ms, 1.0), "{}", t.p99_ms);
        assert!(close(t.max_ms, 50.0), "{}", t.max_ms);
        assert!(
            close(t.avg_ms, (990.0 * 1.0 + 10.0 * 50.0) / 1000.0),
            "{}",
            t.avg_ms
        );
    }

    #[test]
    fn summaries_round_trip_through_their_buckets() {
        let stats = Stats::new();
        for i in 0..1000u64 {
            stats.record(Trend::Delivery, i as usize, 100 + i * 37);
        }
        let t = TrendSummary::from_histogram(&stats.histogram(Trend::Delivery));
        let again = TrendSummary::from_histogram(&t.to_histogram());
        assert_eq!(t, again);
        assert_eq!(TrendSummary::default().stat("p99"), None);
        assert_eq!(t.stat("p42"), None);
    }

    #[test]
    fn only_messages_sent_inside_the_window_are_timed_in_it() {
        let stats = Stats::new();
        let now = now_micros();
        stats.delivered(0, now - 1_000);
        assert_eq!(stats.histogram(Trend::Window).len(), 0, "no window set");
        stats.window.0.store(now - 5_000_000, Ordering::Relaxed);
        stats.window.1.store(now - 2_000_000, Ordering::Relaxed);
        stats.delivered(1, now - 6_000_000);
        stats.delivered(2, now - 3_000_000);
        stats.delivered(3, now - 2_000_000);
        assert_eq!(stats.histogram(Trend::Window).len(), 1);
        assert_eq!(stats.histogram(Trend::Delivery).len(), 4);
        assert_eq!(Stats::get(&stats.received), 4);
        stats.delivered_replayed();
        assert_eq!(Stats::get(&stats.received), 5);
        assert_eq!(
            stats.histogram(Trend::Delivery).len(),
            4,
            "replays are not timed"
        );
    }

    #[test]
    fn ends_while_closing_are_expected() {
        let stats = Stats::new();
        stats.open.store(3, Ordering::Relaxed);
        stats.socket_ended();
        stats.socket_ended();
        stats.closing.store(true, Ordering::Relaxed);
        stats.socket_ended();
        assert_eq!(Stats::get(&stats.unexpected_closes), 2);
        assert_eq!(Stats::get(&stats.open), 0);
        stats.closing.store(false, Ordering::Relaxed);
        stats.open.store(1, Ordering::Relaxed);
        stats.socket_left();
        assert_eq!(
            Stats::get(&stats.unexpected_closes),
            2,
            "a drop is no close"
        );
        assert_eq!(Stats::get(&stats.open), 0);
        for i in 0..7 {
            stats.error(|| format!("e{i} {}", "é".repeat(200)));
        }
        assert_eq!(Stats::get(&stats.errors), 7);
        let samples = stats.error_samples();
        assert_eq!(samples.len(), 5);
        assert!(samples[0].len() <= 300);
    }
}
