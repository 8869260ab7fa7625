//! Abusers that run beside any scenario's normal traffic, from the
//! `[abuse]` table of its file: sockets that send oversized, malformed or
//! batched input, sockets that never read, and IM sockets that never
//! register. They join inside the measured phase and leave before its
//! end, so a run measures the normal clients' deliveries and latency in
//! that window (the `window` trend) and the server's memory before,
//! during and after; `--no-abuse` runs the same window without them.
//!
//! - [`spec`]: the `[abuse]` table; [`frames`]: what abusers send.
//! - [`sockets`]: one abuser's loop; [`tally`]: what the server did.
//! - [`server`]: the edge's own counters of what it did (`--metrics`).
//! - [`pairs`]: runs with and without abusers, alternately, compared.

pub mod frames;
pub mod pairs;
pub mod server;
pub mod sockets;
pub mod spec;
pub mod tally;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use self::sockets::AbuseEnv;
pub use self::spec::AbuseSpec;
pub use self::tally::{KindSummary, Tally};
use crate::rss::RssMarker;

/// The kinds of abuser.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AbuserKind {
    /// Messages over the edge's size limit, whole and fragmented (1009).
    Oversized,
    /// Invalid JSON (error reply), binary frames (1003), invalid UTF-8 (1007).
    Malformed,
    /// JSON-RPC user sockets sending 50-call and over-50 batches.
    Batched,
    /// Fan-out group members that never read (1013).
    Slow,
    /// IM sockets that never register (1008).
    Unauthenticated,
}

impl AbuserKind {
    pub const ALL: [AbuserKind; 5] = [
        AbuserKind::Oversized,
        AbuserKind::Malformed,
        AbuserKind::Batched,
        AbuserKind::Slow,
        AbuserKind::Unauthenticated,
    ];

    pub fn name(self) -> &'static str {
        match self {
            AbuserKind::Oversized => "oversized",
            AbuserKind::Malformed => "malformed",
            AbuserKind::Batched => "batched",
            AbuserKind::Slow => "slow",
            AbuserKind::Unauthenticated => "unauthenticated",
        }
    }
}

/// The server's memory around the abuse window, in KiB.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct AbuseRss {
    /// When the abusers joined.
    pub baseline_kib: u64,
    /// Highest sample from their joining to the end of the run.
    pub peak_kib: u64,
    /// At the end of the run, after they left.
    pub after_kib: u64,
}

impl AbuseRss {
    /// `after` above `baseline`, as a fraction of it (0.05 = 5 %).
    pub fn growth(&self) -> Option<f64> {
        (self.baseline_kib > 0)
            .then(|| (self.after_kib as f64 - self.baseline_kib as f64) / self.baseline_kib as f64)
    }
}

/// What the abusers of a run met.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct AbuseSummary {
    /// The window, in seconds from the start of the measured phase.
    pub start_secs: f64,
    pub stop_secs: f64,
    /// Per abuser kind (kinds with no abusers are left out).
    pub kinds: BTreeMap<String, KindSummary>,
    pub rss: Option<AbuseRss>,
    /// Growth of the edge's counters from the abusers' joining to the end
    /// of the run (`--metrics`), series by series.
    #[serde(default)]
    pub server: BTreeMap<String, u64>,
}

impl AbuseSummary {
    pub fn merge(&mut self, other: &AbuseSummary) {
        for (name, theirs) in &other.kinds {
            self.kinds.entry(name.clone()).or_default().merge(theirs);
        }
        if self.rss.is_none() {
            self.rss = other.rss.clone();
        }
        if self.server.is_empty() {
            self.server = other.server.clone();
        }
    }
}

/// Starts the abusers `spec.start` after `measure_start`, and stops them
/// (dropping their sockets) at `spec.stop`; marks the watched server's
/// memory at both moments, even when there are no abusers, so runs with
/// and without them are measured alike.
pub async fn run(env: Arc<AbuseEnv>, measure_start: Instant, rss: Option<RssMarker>) {
    let spec = env.spec.clone();
    tokio::time::sleep_until((measure_start + spec.start).into()).await;
    if let Some(rss) = &rss {
        rss.mark("abuse_start");
    }
    env.scrape_before().await;
    let stop = CancellationToken::new();
    let mut abusers = JoinSet::new();
    for (kind, i) in spec.abusers() {
        abusers.spawn(sockets::run(env.clone(), kind, i, stop.clone()));
    }
    tokio::time::sleep_until((measure_start + spec.stop).into()).await;
    stop.cancel();
    while abusers.join_next().await.is_some() {}
    if let Some(rss) = &rss {
        rss.mark("abuse_stop");
    }
}

/// The kinds of `spec` and their counts, for [`Tally::summary`].
pub fn counts(spec: &AbuseSpec) -> Vec<(AbuserKind, usize)> {
    AbuserKind::ALL
        .iter()
        .map(|&kind| (kind, spec.count(kind)))
        .collect()
}
