//! The `recovery` kind (`spec/60-recovery.md`): some subscribers close
//! their socket during the measured phase, stay away while publishing goes
//! on, and come back with `since_group=E:O`, the last position they saw.
//! Each such socket keeps a [`Track`] of every position it received, so
//! the run can say whether what it missed came back once and in full:
//! how many reconnects were answered `recovered:true`, how many messages
//! were missed and replayed, the gaps and duplicates by offset, and the
//! replay time (reconnect to the first live message after the replay).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::client;
use crate::plan::SocketPlan;
use crate::run::{Env, Open};
use crate::scenario::{de_duration, ser_duration};
use crate::stats::{Stats, Trend};

/// The `[recovery]` table of a scenario.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecoverySpec {
    /// Subscribers that drop and come back (spread evenly over them all).
    pub drop: usize,
    /// When the first one closes, from the start of the measured phase:
    /// late enough that each has seen a position to come back with.
    #[serde(deserialize_with = "de_duration", serialize_with = "ser_duration")]
    pub at: Duration,
    /// The closes are spread over this long after `at`, as a flaky
    /// network drops sockets one after another (0: all at once).
    #[serde(deserialize_with = "de_duration", serialize_with = "ser_duration")]
    pub spread: Duration,
    /// How long each stays away before reconnecting. What it misses
    /// (`away` × rate × publishers) must fit the server's history (100
    /// messages by default) to be recovered.
    #[serde(deserialize_with = "de_duration", serialize_with = "ser_duration")]
    pub away: Duration,
}

impl Default for RecoverySpec {
    fn default() -> Self {
        Self {
            drop: 1,
            at: Duration::from_secs(2),
            spread: Duration::ZERO,
            away: Duration::from_secs(2),
        }
    }
}

impl RecoverySpec {
    /// Checks the table against the scenario's subscribers and duration:
    /// every socket must be back while live messages still flow.
    pub fn validate(&self, subscribers: usize, duration: Duration) -> Result<(), String> {
        if self.drop == 0 || self.drop > subscribers {
            return Err(format!(
                "recovery.drop must be between 1 and the {subscribers} subscribers"
            ));
        }
        if self.at.is_zero() {
            return Err("recovery.at must be after the start: a socket needs a position".into());
        }
        if self.at + self.spread + self.away >= duration {
            return Err(format!(
                "recovery.at + spread + away must end before the measured phase does ({duration:?})"
            ));
        }
        Ok(())
    }

    /// The subscribers that drop, evenly spaced among `subscribers`, each
    /// with its close time counted from the start of the measured phase.
    /// Close times follow the golden-ratio sequence over `spread`: evenly
    /// stepped ones would fall on the publishers' own staggered ticks, so
    /// every return would wait a whole publish interval for its first live
    /// message and the replay time would measure the alignment.
    pub fn drops(&self, subscribers: usize) -> Vec<(usize, Duration)> {
        const GOLDEN: f64 = 0.618_033_988_749_894_9;
        let n = self.drop.min(subscribers);
        (0..n)
            .map(|k| {
                let socket = k * subscribers / n;
                let at = self.at + self.spread.mul_f64((k as f64 * GOLDEN).fract());
                (socket, at)
            })
            .collect()
    }
}

/// Why a history position did not parse.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PositionError {
    #[error("position `{0}` is not EPOCH:OFFSET")]
    Shape(String),
    #[error("position `{0}`: the offset is not a number")]
    Offset(String),
}

/// A place in a topic's history: the epoch that numbers it and an offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub epoch: String,
    pub offset: u64,
}

impl FromStr for Position {
    type Err = PositionError;

    /// `EPOCH:OFFSET`, as the `since_*` query parameters take it.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (epoch, offset) = text
            .rsplit_once(':')
            .filter(|(epoch, _)| !epoch.is_empty())
            .ok_or_else(|| PositionError::Shape(text.to_owned()))?;
        let offset = offset
            .parse()
            .map_err(|_| PositionError::Offset(text.to_owned()))?;
        Ok(Self {
            epoch: epoch.to_owned(),
            offset,
        })
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.epoch, self.offset)
    }
}

/// The recovery message a reconnect starts with (its `payload`).
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub recovered: bool,
    /// What the server says it replays.
    pub missed: u64,
    /// The latest position: the replay ends there, live messages follow.
    pub latest: Position,
}

/// What a frame received by a tracked socket says about history.
#[derive(Debug, PartialEq)]
pub enum Frame {
    /// `msg_type: recovery` for the group stream.
    Answer(Answer),
    /// A delivered message at this position.
    At(Position),
    /// Anything without a position (presence, echo, errors).
    Other,
}

/// Reads a group-dialect frame: a recovery answer, a position, or neither.
pub fn read_frame(text: &[u8]) -> Frame {
    let Ok(value) = serde_json::from_slice::<Value>(text) else {
        return Frame::Other;
    };
    if value["msg_type"] == "recovery" {
        let p = &value["payload"];
        if p["stream"] != "group" {
            return Frame::Other;
        }
        let (Some(recovered), Some(latest)) = (p["recovered"].as_bool(), position_in(p)) else {
            return Frame::Other;
        };
        return Frame::Answer(Answer {
            recovered,
            missed: p["missed"].as_u64().unwrap_or(0),
            latest,
        });
    }
    position_in(&value).map_or(Frame::Other, Frame::At)
}

fn position_in(value: &Value) -> Option<Position> {
    Some(Position {
        epoch: value["epoch"].as_str()?.to_owned(),
        offset: value["offset"].as_u64()?,
    })
}

/// Gaps and duplicates among the offsets one socket received of one
/// epoch: offsets between the lowest and the highest that never came, and
/// receipts of an offset beyond its first.
pub fn gaps_and_duplicates(offsets: &[u64]) -> (u64, u64) {
    let mut sorted = offsets.to_vec();
    sorted.sort_unstable();
    let received = sorted.len() as u64;
    sorted.dedup();
    let duplicates = received - sorted.len() as u64;
    let gaps = match (sorted.first(), sorted.last()) {
        (Some(low), Some(high)) => (high - low + 1) - sorted.len() as u64,
        _ => 0,
    };
    (gaps, duplicates)
}

/// What a tracked socket does with a delivered message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// A live message: timed as a delivery.
    Live,
    /// Part of a replay: counted but not timed (it waited in the history).
    Replayed,
}

/// A reconnect in progress: what it asked for and what it has had.
#[derive(Debug)]
struct Return {
    since: Option<Position>,
    started: Instant,
    answer: Option<Answer>,
    /// Whether the first live message after the replay has been timed.
    timed: bool,
}

#[derive(Debug, Default)]
struct TrackState {
    /// Set while the harness closes the socket itself.
    leaving: bool,
    last: Option<Position>,
    /// Every offset received, per epoch, on either connection.
    offsets: BTreeMap<String, Vec<u64>>,
    back: Option<Return>,
}

/// One dropping socket's history positions, shared by its read loops.
#[derive(Debug, Default)]
pub struct Track {
    state: Mutex<TrackState>,
}

impl Track {
    fn state(&self) -> std::sync::MutexGuard<'_, TrackState> {
        // A poisoned lock only means a reader panicked mid-update; the
        // positions it holds are still the best there are.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The harness is about to close the socket: its end is expected.
    pub fn leave(&self) {
        self.state().leaving = true;
    }

    pub fn leaving(&self) -> bool {
        self.state().leaving
    }

    /// The last position received.
    pub fn last(&self) -> Option<Position> {
        self.state().last.clone()
    }

    /// A reconnect with `since` starts now.
    pub fn reconnecting(&self, since: Option<Position>, started: Instant) {
        let mut s = self.state();
        s.leaving = false;
        s.back = Some(Return {
            since,
            started,
            answer: None,
            timed: false,
        });
    }

    /// A recovery answer arrived; counts it in `tally`.
    pub fn answered(&self, answer: Answer, tally: &RecoveryTally) {
        let mut s = self.state();
        let Some(back) = s.back.as_mut() else {
            // An answer to a socket that asked for nothing.
            Stats::add(&tally.unasked, 1);
            return;
        };
        Stats::add(&tally.answers, 1);
        if answer.recovered {
            Stats::add(&tally.recovered, 1);
        }
        Stats::add(&tally.server_missed, answer.missed);
        if let Some(since) = &back.since
            && since.epoch == answer.latest.epoch
        {
            Stats::add(
                &tally.missed,
                answer.latest.offset.saturating_sub(since.offset),
            );
        }
        back.answer = Some(answer);
    }

    /// A message at `at` arrived. Returns whether it was live or replayed,
    /// and the replay time when it is the first live one after a replay.
    pub fn received(&self, at: Position, tally: &RecoveryTally) -> (Delivery, Option<Duration>) {
        let mut s = self.state();
        s.offsets
            .entry(at.epoch.clone())
            .or_default()
            .push(at.offset);
        s.last = Some(at.clone());
        let Some(back) = s.back.as_mut() else {
            return (Delivery::Live, None);
        };
        let Some(answer) = &back.answer else {
            // Live before the replay began: the spec forbids it, and the
            // message counts as live.
            return (Delivery::Live, None);
        };
        let same_epoch = answer.latest.epoch == at.epoch;
        if same_epoch && at.offset <= answer.latest.offset {
            let after_since = back
                .since
                .as_ref()
                .is_none_or(|since| since.epoch != at.epoch || at.offset > since.offset);
            if after_since {
                Stats::add(&tally.replayed, 1);
            }
            return (Delivery::Replayed, None);
        }
        if back.timed {
            return (Delivery::Live, None);
        }
        back.timed = true;
        (Delivery::Live, Some(back.started.elapsed()))
    }

    /// Gaps, duplicates and whether more than one epoch was seen.
    fn ledger(&self) -> (u64, u64, bool) {
        let s = self.state();
        let mut gaps = 0;
        let mut duplicates = 0;
        for offsets in s.offsets.values() {
            let (g, d) = gaps_and_duplicates(offsets);
            gaps += g;
            duplicates += d;
        }
        (gaps, duplicates, s.offsets.len() > 1)
    }
}

/// Counters of a run's reconnects, bumped from any task.
#[derive(Debug, Default)]
pub struct RecoveryTally {
    pub reconnects: AtomicU64,
    pub reconnect_failures: AtomicU64,
    /// Reconnects without a position (the socket had received nothing).
    pub unpositioned: AtomicU64,
    pub answers: AtomicU64,
    pub recovered: AtomicU64,
    /// Recovery answers to a socket that gave no position.
    pub unasked: AtomicU64,
    /// Messages sent while away: the answer's latest offset less the
    /// position given, same epoch only.
    pub missed: AtomicU64,
    /// The answers' own `missed` counts.
    pub server_missed: AtomicU64,
    /// Replayed messages after the position given.
    pub replayed: AtomicU64,
}

/// The recovery figures of a run, as its JSON summary holds them.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RecoverySummary {
    /// Sockets planned to drop.
    pub dropped: u64,
    pub reconnects: u64,
    pub reconnect_failures: u64,
    pub unpositioned: u64,
    /// Reconnects the server answered with a recovery message.
    pub answers: u64,
    pub recovered: u64,
    pub missed: u64,
    pub server_missed: u64,
    pub replayed: u64,
    pub gaps: u64,
    pub duplicates: u64,
    /// Sockets that saw more than one epoch (history lost meanwhile).
    pub epoch_changes: u64,
}

impl RecoverySummary {
    /// The figures of `tracks` and `tally` at the end of a run.
    pub fn collect(tally: &RecoveryTally, tracks: &[Arc<Track>]) -> Self {
        let mut summary = Self {
            dropped: tracks.len() as u64,
            reconnects: Stats::get(&tally.reconnects),
            reconnect_failures: Stats::get(&tally.reconnect_failures),
            unpositioned: Stats::get(&tally.unpositioned),
            answers: Stats::get(&tally.answers),
            recovered: Stats::get(&tally.recovered),
            missed: Stats::get(&tally.missed),
            server_missed: Stats::get(&tally.server_missed),
            replayed: Stats::get(&tally.replayed),
            ..Self::default()
        };
        for track in tracks {
            let (gaps, duplicates, changed) = track.ledger();
            summary.gaps += gaps;
            summary.duplicates += duplicates;
            summary.epoch_changes += u64::from(changed);
        }
        summary
    }

    /// Adds another process's figures of the same run.
    pub fn merge(&mut self, other: &Self) {
        self.dropped += other.dropped;
        self.reconnects += other.reconnects;
        self.reconnect_failures += other.reconnect_failures;
        self.unpositioned += other.unpositioned;
        self.answers += other.answers;
        self.recovered += other.recovered;
        self.missed += other.missed;
        self.server_missed += other.server_missed;
        self.replayed += other.replayed;
        self.gaps += other.gaps;
        self.duplicates += other.duplicates;
        self.epoch_changes += other.epoch_changes;
    }

    /// Reconnects answered `recovered:true`, of all reconnects.
    pub fn recovered_ratio(&self) -> Option<f64> {
        (self.reconnects > 0).then(|| self.recovered as f64 / self.reconnects as f64)
    }

    /// Missed messages that were replayed.
    pub fn replayed_ratio(&self) -> Option<f64> {
        (self.missed > 0).then(|| self.replayed as f64 / self.missed as f64)
    }
}

/// How long the harness waits for a socket it closed to end.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// Closes `open` at `at`, stays away, and reconnects with the last
/// position seen; returns the new socket (none when it did not open).
pub(crate) async fn drop_and_return(
    env: Arc<Env>,
    socket: SocketPlan,
    open: Open,
    track: Arc<Track>,
    at: Instant,
    away: Duration,
) -> (usize, Option<Open>) {
    let stats = &env.stats;
    tokio::time::sleep_until(at.into()).await;
    track.leave();
    client::close(&open.writer).await;
    let mut reader = open.reader;
    // The position to come back with is the last one the old socket read,
    // so its reader must have ended before it is taken.
    if tokio::time::timeout(CLOSE_WAIT, &mut reader).await.is_err() {
        reader.abort();
        if reader.await.is_err() {
            // Aborted before its end was counted.
            stats.socket_left();
        }
    }
    tokio::time::sleep(away).await;
    let since = track.last();
    let tally = &env.recovery;
    Stats::add(&tally.reconnects, 1);
    if since.is_none() {
        Stats::add(&tally.unpositioned, 1);
    }
    let mut back = socket.clone();
    if let Some(since) = &since {
        back.path = format!("{}&since_group={since}", socket.path);
    }
    track.reconnecting(since, Instant::now());
    match crate::run::open_one(&env, &back).await {
        Ok(open) => (socket.index, Some(open)),
        Err(e) => {
            Stats::add(&tally.reconnect_failures, 1);
            stats.error(|| format!("reconnect {}: {e}", socket.me));
            (socket.index, None)
        }
    }
}

/// What a tracked socket's read loop does with one frame: counts the
/// answer, or tells a live delivery from a replayed one (timing the
/// replay when it ends).
pub(crate) fn on_frame(
    track: &Track,
    text: &[u8],
    tally: &RecoveryTally,
    stats: &Stats,
    key: usize,
) -> Delivery {
    match read_frame(text) {
        Frame::Answer(answer) => {
            track.answered(answer, tally);
            Delivery::Live
        }
        Frame::At(position) => {
            let (delivery, replay) = track.received(position, tally);
            if let Some(elapsed) = replay {
                stats.record(Trend::Replay, key, elapsed.as_micros() as u64);
            }
            delivery
        }
        Frame::Other => Delivery::Live,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(epoch: &str, offset: u64) -> Position {
        Position {
            epoch: epoch.to_owned(),
            offset,
        }
    }

    #[test]
    fn positions_parse_and_print_as_the_query_takes_them() {
        let p: Position = "0123456789abcdef:42".parse().unwrap();
        assert_eq!(p, at("0123456789abcdef", 42));
        assert_eq!(p.to_string(), "0123456789abcdef:42");
        assert_eq!(
            "nocolon".parse::<Position>(),
            Err(PositionError::Shape("nocolon".into()))
        );
        assert_eq!(
            ":4".parse::<Position>(),
            Err(PositionError::Shape(":4".into()))
        );
        assert_eq!(
            "ab:-1".parse::<Position>(),
            Err(PositionError::Offset("ab:-1".into()))
        );
        assert_eq!(
            "ab:".parse::<Position>(),
            Err(PositionError::Offset("ab:".into()))
        );
    }

    #[test]
    fn frames_give_their_positions_and_recovery_answers() {
        let delivered = br#"{"version":"3","msg_type":"msg","target":"group","from_id":"a","group_id":"g","payload":{"t":1,"pad":"x"},"epoch":"e1","offset":7,"sent_at":"now"}"#;
        assert_eq!(read_frame(delivered), Frame::At(at("e1", 7)));
        let answer = br#"{"version":"3","msg_type":"recovery","target":"echo","payload":{"stream":"group","recovered":true,"missed":3,"epoch":"e1","offset":10},"sent_at":"now"}"#;
        assert_eq!(
            read_frame(answer),
            Frame::Answer(Answer {
                recovered: true,
                missed: 3,
                latest: at("e1", 10)
            })
        );
        // Other streams' answers, positionless messages, junk.
        let direct = br#"{"msg_type":"recovery","payload":{"stream":"direct","recovered":true,"missed":0,"epoch":"e","offset":0}}"#;
        assert_eq!(read_frame(direct), Frame::Other);
        let echo = br#"{"msg_type":"msg","target":"echo","payload":{"t":1}}"#;
        assert_eq!(read_frame(echo), Frame::Other);
        let half = br#"{"msg_type":"msg","epoch":"e1"}"#;
        assert_eq!(read_frame(half), Frame::Other);
        assert_eq!(read_frame(b"not json"), Frame::Other);
    }

    #[test]
    fn gaps_and_duplicates_are_counted_by_offset() {
        assert_eq!(gaps_and_duplicates(&[]), (0, 0));
        assert_eq!(gaps_and_duplicates(&[5]), (0, 0));
        assert_eq!(gaps_and_duplicates(&[1, 2, 3, 4]), (0, 0));
        // Out of order is neither.
        assert_eq!(gaps_and_duplicates(&[3, 1, 2]), (0, 0));
        assert_eq!(gaps_and_duplicates(&[1, 2, 5, 6]), (2, 0));
        assert_eq!(gaps_and_duplicates(&[1, 2, 2, 3, 3, 3]), (0, 3));
        assert_eq!(gaps_and_duplicates(&[10, 12, 12]), (1, 1));
    }

    #[test]
    fn a_return_replays_what_was_missed_then_times_the_first_live_message() {
        let tally = RecoveryTally::default();
        let track = Track::default();
        for offset in 1..=4 {
            assert_eq!(track.received(at("e", offset), &tally).0, Delivery::Live);
        }
        track.leave();
        assert!(track.leaving());
        let since = track.last();
        assert_eq!(since, Some(at("e", 4)));
        track.reconnecting(since, Instant::now());
        assert!(!track.leaving());
        track.answered(
            Answer {
                recovered: true,
                missed: 3,
                latest: at("e", 7),
            },
            &tally,
        );
        for offset in 5..=7 {
            assert_eq!(
                track.received(at("e", offset), &tally),
                (Delivery::Replayed, None)
            );
        }
        let (first, replay) = track.received(at("e", 8), &tally);
        assert_eq!(first, Delivery::Live);
        assert!(replay.is_some(), "the first live message is timed");
        assert_eq!(track.received(at("e", 9), &tally), (Delivery::Live, None));
        Stats::add(&tally.reconnects, 1);
        let summary = RecoverySummary::collect(&tally, &[Arc::new(track)]);
        assert_eq!(
            (summary.missed, summary.server_missed, summary.replayed),
            (3, 3, 3)
        );
        assert_eq!((summary.gaps, summary.duplicates), (0, 0));
        assert_eq!(summary.recovered_ratio(), Some(1.0));
        assert_eq!(summary.replayed_ratio(), Some(1.0));
    }

    #[test]
    fn a_replay_that_repeats_or_skips_is_caught() {
        let tally = RecoveryTally::default();
        let track = Arc::new(Track::default());
        for offset in 1..=4 {
            track.received(at("e", offset), &tally);
        }
        track.reconnecting(track.last(), Instant::now());
        track.answered(
            Answer {
                recovered: true,
                missed: 4,
                latest: at("e", 8),
            },
            &tally,
        );
        // 4 again (already had), 5, then 7 and 8: 6 never comes.
        for offset in [4, 5, 7, 8, 9] {
            track.received(at("e", offset), &tally);
        }
        Stats::add(&tally.reconnects, 1);
        let summary = RecoverySummary::collect(&tally, &[track]);
        assert_eq!((summary.gaps, summary.duplicates), (1, 1));
        assert_eq!((summary.missed, summary.replayed), (4, 3));
        assert_eq!(summary.replayed_ratio(), Some(0.75));
    }

    #[test]
    fn an_unrecovered_return_counts_against_the_ratio_and_a_new_epoch_is_kept_apart() {
        let tally = RecoveryTally::default();
        let track = Arc::new(Track::default());
        track.received(at("old", 1), &tally);
        track.received(at("old", 2), &tally);
        track.reconnecting(track.last(), Instant::now());
        track.answered(
            Answer {
                recovered: false,
                missed: 0,
                latest: at("new", 0),
            },
            &tally,
        );
        let (delivery, replay) = track.received(at("new", 1), &tally);
        assert_eq!(delivery, Delivery::Live);
        assert!(replay.is_some());
        Stats::add(&tally.reconnects, 2);
        let summary = RecoverySummary::collect(&tally, &[track]);
        assert_eq!(summary.recovered_ratio(), Some(0.0));
        assert_eq!(summary.missed, 0, "positions of another epoch say nothing");
        assert_eq!(summary.replayed_ratio(), None);
        assert_eq!((summary.gaps, summary.epoch_changes), (0, 1));
        let mut merged = summary.clone();
        merged.merge(&summary);
        assert_eq!((merged.reconnects, merged.dropped), (4, 2));
        assert_eq!(RecoverySummary::default().recovered_ratio(), None);
    }

    #[test]
    fn drops_are_spread_over_the_subscribers_and_the_window() {
        let spec = RecoverySpec {
            drop: 4,
            at: Duration::from_secs(2),
            spread: Duration::from_secs(2),
            away: Duration::from_secs(1),
        };
        let drops = spec.drops(10);
        let sockets: Vec<usize> = drops.iter().map(|d| d.0).collect();
        assert_eq!(sockets, [0, 2, 5, 7]);
        let mut times: Vec<Duration> = drops.iter().map(|d| d.1).collect();
        assert_eq!(times[0], spec.at);
        assert!(
            times
                .iter()
                .all(|t| *t >= spec.at && *t < spec.at + spec.spread),
            "{times:?}"
        );
        // Not in order, not evenly stepped, never twice the same.
        assert!(times[1] > times[2], "{times:?}");
        times.sort();
        times.dedup();
        assert_eq!(times.len(), 4);
        let all_at_once = RecoverySpec {
            spread: Duration::ZERO,
            ..spec.clone()
        };
        assert!(all_at_once.drops(10).iter().all(|d| d.1 == spec.at));
        assert!(spec.validate(10, Duration::from_secs(6)).is_ok());
        assert!(spec.validate(3, Duration::from_secs(6)).is_err());
        let err = spec.validate(10, Duration::from_secs(5)).unwrap_err();
        assert!(err.contains("before the measured phase"), "{err}");
        let at_start = RecoverySpec {
            at: Duration::ZERO,
            ..spec.clone()
        };
        assert!(at_start.validate(10, Duration::from_secs(6)).is_err());
    }
}
