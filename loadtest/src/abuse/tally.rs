//! What the server did to each kind of abuser: live counters shared by
//! the abuser tasks, and the per-kind summary they become (merged across
//! processes, printed under the run's summary).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use super::AbuserKind;

/// How one abuser's connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The server sent a close frame with this code.
    Closed(u16),
    /// The connection ended with no close frame (reset, or cut off).
    Ended,
    /// Still open when the abuser stopped waiting; it closed it itself.
    StillOpen,
}

#[derive(Default)]
struct Counters {
    connections: AtomicU64,
    connect_failures: AtomicU64,
    sent: AtomicU64,
    error_replies: AtomicU64,
    other_frames: AtomicU64,
    ended: AtomicU64,
    still_open: AtomicU64,
    closes: Mutex<BTreeMap<u16, u64>>,
    refusals: Mutex<BTreeMap<u16, u64>>,
}

/// Live counters of every abuser kind.
#[derive(Default)]
pub struct Tally {
    kinds: [Counters; AbuserKind::ALL.len()],
}

impl Tally {
    fn of(&self, kind: AbuserKind) -> &Counters {
        &self.kinds[kind as usize]
    }

    pub fn connected(&self, kind: AbuserKind) {
        self.of(kind).connections.fetch_add(1, Ordering::Relaxed);
    }

    /// A connection that failed; `status` is the HTTP refusal, if any.
    pub fn connect_failed(&self, kind: AbuserKind, status: Option<u16>) {
        let c = self.of(kind);
        c.connect_failures.fetch_add(1, Ordering::Relaxed);
        if let Some(status) = status {
            bump(&c.refusals, status);
        }
    }

    /// Abusive messages (frames, batches) sent.
    pub fn sent(&self, kind: AbuserKind, n: u64) {
        self.of(kind).sent.fetch_add(n, Ordering::Relaxed);
    }

    /// Frames received: error replies (one per refused call in a batch) and anything else (presence, results, backlog).
    pub fn replies(&self, kind: AbuserKind, errors: u64, ok: u64) {
        let c = self.of(kind);
        c.error_replies.fetch_add(errors, Ordering::Relaxed);
        c.other_frames.fetch_add(ok, Ordering::Relaxed);
    }

    pub fn ended(&self, kind: AbuserKind, ending: Ending) {
        let c = self.of(kind);
        match ending {
            Ending::Closed(code) => bump(&c.closes, code),
            Ending::Ended => {
                c.ended.fetch_add(1, Ordering::Relaxed);
            }
            Ending::StillOpen => {
                c.still_open.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The summary of the kinds in `counts` (kind, abusers of it).
    pub fn summary(&self, counts: &[(AbuserKind, usize)]) -> BTreeMap<String, KindSummary> {
        counts
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|&(kind, abusers)| {
                let c = self.of(kind);
                let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
                let codes = |m: &Mutex<BTreeMap<u16, u64>>| {
                    lock(m)
                        .iter()
                        .map(|(code, n)| (code.to_string(), *n))
                        .collect()
                };
                let summary = KindSummary {
                    abusers: abusers as u64,
                    connections: get(&c.connections),
                    connect_failures: get(&c.connect_failures),
                    refusals: codes(&c.refusals),
                    sent: get(&c.sent),
                    error_replies: get(&c.error_replies),
                    other_frames: get(&c.other_frames),
                    closes: codes(&c.closes),
                    ended_without_close: get(&c.ended),
                    still_open: get(&c.still_open),
                };
                (kind.name().to_owned(), summary)
            })
            .collect()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned counter map only means a recorder panicked mid-insert.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn bump(map: &Mutex<BTreeMap<u16, u64>>, code: u16) {
    *lock(map).entry(code).or_default() += 1;
}

/// What one abuser kind got from the server over the run.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct KindSummary {
    pub abusers: u64,
    pub connections: u64,
    pub connect_failures: u64,
    /// HTTP statuses of refused upgrades.
    pub refusals: BTreeMap<String, u64>,
    pub sent: u64,
    pub error_replies: u64,
    pub other_frames: u64,
    /// Close codes the server sent, with how often.
    pub closes: BTreeMap<String, u64>,
    pub ended_without_close: u64,
    pub still_open: u64,
}

impl KindSummary {
    /// How often the server closed with `code`.
    pub fn closed_with(&self, code: u16) -> u64 {
        self.closes.get(&code.to_string()).copied().unwrap_or(0)
    }

    pub fn merge(&mut self, other: &KindSummary) {
        self.abusers += other.abusers;
        self.connections += other.connections;
        self.connect_failures += other.connect_failures;
        self.sent += other.sent;
        self.error_replies += other.error_replies;
        self.other_frames += other.other_frames;
        self.ended_without_close += other.ended_without_close;
        self.still_open += other.still_open;
        for (mine, theirs) in [
            (&mut self.closes, &other.closes),
            (&mut self.refusals, &other.refusals),
        ] {
            for (code, n) in theirs {
                *mine.entry(code.clone()).or_default() += n;
            }
        }
    }

    /// One line: `12 sockets, 40 sent, closes 1009 x12, …`.
    pub fn render(&self) -> String {
        let mut out = format!("{} abusers, {} connections", self.abusers, self.connections);
        if self.connect_failures > 0 {
            let _ = write!(out, " (+{} failed", self.connect_failures);
            for (status, n) in &self.refusals {
                let _ = write!(out, ", HTTP {status} x{n}");
            }
            out.push(')');
        }
        let _ = write!(
            out,
            ", {} sent, {} error replies, {} other frames",
            self.sent, self.error_replies, self.other_frames
        );
        let closes: Vec<String> = self
            .closes
            .iter()
            .map(|(code, n)| format!("{code} x{n}"))
            .collect();
        let _ = write!(
            out,
            ", closes [{}], {} ended without close, {} still open",
            closes.join(", "),
            self.ended_without_close,
            self.still_open
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_become_a_summary_per_kind() {
        let tally = Tally::default();
        tally.connected(AbuserKind::Oversized);
        tally.connected(AbuserKind::Oversized);
        tally.sent(AbuserKind::Oversized, 2);
        tally.ended(AbuserKind::Oversized, Ending::Closed(1009));
        tally.ended(AbuserKind::Oversized, Ending::Closed(1009));
        tally.ended(AbuserKind::Slow, Ending::Ended);
        tally.ended(AbuserKind::Slow, Ending::StillOpen);
        tally.connect_failed(AbuserKind::Batched, Some(429));
        tally.connect_failed(AbuserKind::Batched, None);
        tally.replies(AbuserKind::Batched, 51, 50);
        let s = tally.summary(&[
            (AbuserKind::Oversized, 2),
            (AbuserKind::Slow, 1),
            (AbuserKind::Batched, 1),
            (AbuserKind::Malformed, 0),
        ]);
        assert_eq!(s.len(), 3, "kinds with no abusers are left out");
        let o = &s["oversized"];
        assert_eq!((o.abusers, o.connections, o.sent), (2, 2, 2));
        assert_eq!(o.closed_with(1009), 2);
        assert_eq!(o.closed_with(1013), 0);
        assert_eq!(
            (s["slow"].ended_without_close, s["slow"].still_open),
            (1, 1)
        );
        let b = &s["batched"];
        assert_eq!((b.connect_failures, b.refusals["429"]), (2, 1));
        assert_eq!((b.error_replies, b.other_frames), (51, 50));
        assert!(o.render().contains("closes [1009 x2]"), "{}", o.render());
    }

    #[test]
    fn summaries_of_two_processes_add_up() {
        let tally = Tally::default();
        tally.ended(AbuserKind::Slow, Ending::Closed(1013));
        tally.connected(AbuserKind::Slow);
        let mut a = tally
            .summary(&[(AbuserKind::Slow, 1)])
            .remove("slow")
            .unwrap();
        let b = a.clone();
        tally.ended(AbuserKind::Slow, Ending::Closed(1000));
        let c = tally
            .summary(&[(AbuserKind::Slow, 1)])
            .remove("slow")
            .unwrap();
        a.merge(&b);
        a.merge(&c);
        assert_eq!((a.abusers, a.connections), (3, 3));
        assert_eq!((a.closed_with(1013), a.closed_with(1000)), (3, 1));
    }
}
