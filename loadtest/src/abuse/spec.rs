//! The `[abuse]` table of a scenario: how many abusers of each kind join
//! the run, the window of the measured phase they are in it for, and how
//! hard they push.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::AbuserKind;
use crate::scenario::{de_duration, ser_duration};

/// Abusers that run beside a scenario's normal traffic.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AbuseSpec {
    /// When the abusers join, counted from the start of the measured phase
    /// (the time before it is the warm-up the abuse is compared with).
    #[serde(deserialize_with = "de_duration", serialize_with = "ser_duration")]
    pub start: Duration,
    /// When they leave; the rest of the measured phase shows whether the
    /// server's memory comes back down.
    #[serde(deserialize_with = "de_duration", serialize_with = "ser_duration")]
    pub stop: Duration,
    /// Sockets sending messages over the size limit, whole and fragmented.
    pub oversized: usize,
    /// Sockets sending invalid JSON, binary frames and invalid UTF-8.
    pub malformed: usize,
    /// JSON-RPC user sockets sending 50-call and over-50 batches.
    pub batched: usize,
    /// Sockets in the fan-out group that never read.
    pub slow: usize,
    /// IM sockets that never register.
    pub unauthenticated: usize,
    /// Pause between one abuser's connections: without it a few abusers
    /// would spend two shared cores on handshakes alone, and what is being
    /// measured is the edge's refusals, not a connection flood.
    #[serde(deserialize_with = "de_duration", serialize_with = "ser_duration")]
    pub pause: Duration,
    /// Batched: rounds per second per socket, each a 50-call batch (every
    /// call charged) and an over-50 batch. At the default 1 the 50 calls
    /// are what the default rate limit (50/s) lets through.
    pub batch_rate: f64,
    /// Slow: how long a socket goes unread before it reads what is left
    /// to find out how the server closed it. Long enough for its queue to
    /// fill; short enough that the server still waits to send its close
    /// frame (the edge gives that frame 5 s).
    #[serde(deserialize_with = "de_duration", serialize_with = "ser_duration")]
    pub slow_hold: Duration,
    /// Slow: receive buffer the socket asks its kernel for, so the backlog
    /// builds up in the server rather than in this side's kernel.
    pub slow_recv_buffer: u32,
    /// Slow: size of the `target: echo` messages a slow socket sends
    /// itself while it does not read (0: none). On loopback the edge's
    /// kernel send buffer alone takes over a megabyte per socket, which a
    /// fan-out of small messages takes a minute to fill; echoes it never
    /// reads fill it and the queue behind it in seconds.
    pub slow_echo_size: usize,
    /// Slow: echoes per second, under the default rate limit (50/s).
    pub slow_echo_rate: f64,
}

impl Default for AbuseSpec {
    fn default() -> Self {
        Self {
            start: Duration::ZERO,
            stop: Duration::ZERO,
            oversized: 0,
            malformed: 0,
            batched: 0,
            slow: 0,
            unauthenticated: 0,
            pause: Duration::from_millis(100),
            batch_rate: 1.0,
            slow_hold: Duration::from_secs(8),
            slow_recv_buffer: 4096,
            slow_echo_size: 32 * 1024,
            slow_echo_rate: 40.0,
        }
    }
}

impl AbuseSpec {
    /// How many abusers of `kind`.
    pub fn count(&self, kind: AbuserKind) -> usize {
        match kind {
            AbuserKind::Oversized => self.oversized,
            AbuserKind::Malformed => self.malformed,
            AbuserKind::Batched => self.batched,
            AbuserKind::Slow => self.slow,
            AbuserKind::Unauthenticated => self.unauthenticated,
        }
    }

    /// Every abuser to run, as (kind, number within its kind).
    pub fn abusers(&self) -> Vec<(AbuserKind, usize)> {
        AbuserKind::ALL
            .iter()
            .flat_map(|&kind| (0..self.count(kind)).map(move |i| (kind, i)))
            .collect()
    }

    /// The same window with no abusers in it: the comparison run, which
    /// measures the same stretch of the same traffic.
    pub fn without_abusers(&self) -> Self {
        Self {
            oversized: 0,
            malformed: 0,
            batched: 0,
            slow: 0,
            unauthenticated: 0,
            ..self.clone()
        }
    }

    /// Checks the window against the measured phase's `duration` and
    /// whether the normal traffic has the fan-out group slow sockets join.
    pub fn validate(&self, duration: Duration, has_group: bool) -> Result<(), String> {
        if self.stop <= self.start {
            return Err("abuse.stop must come after abuse.start".into());
        }
        if self.stop > duration {
            return Err(format!(
                "abuse.stop ({:?}) is after the end of the measured phase ({duration:?})",
                self.stop
            ));
        }
        if !(self.batch_rate.is_finite() && self.batch_rate > 0.0) {
            return Err("abuse.batch_rate must be a positive number".into());
        }
        if self.slow_echo_size > 0
            && !(self.slow_echo_rate.is_finite() && self.slow_echo_rate > 0.0)
        {
            return Err("abuse.slow_echo_rate must be a positive number".into());
        }
        if self.slow_echo_size >= super::frames::MESSAGE_LIMIT {
            return Err("abuse.slow_echo_size must be under the 64 KiB message limit".into());
        }
        if self.slow_hold.is_zero() {
            return Err("abuse.slow_hold must be longer than 0".into());
        }
        if self.slow > 0 && !has_group {
            return Err(
                "slow abusers join the fan-out group: the kind must be fanout, groups or api_publish"
                    .into(),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(text: &str) -> AbuseSpec {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn a_table_lists_its_abusers_by_kind() {
        let s = spec("start='5s'\nstop='20s'\noversized=2\nslow=1\nunauthenticated=3\n");
        assert_eq!(s.start, Duration::from_secs(5));
        assert_eq!(s.pause, Duration::from_millis(100));
        let abusers = s.abusers();
        assert_eq!(abusers.len(), 6);
        assert_eq!(abusers[0], (AbuserKind::Oversized, 0));
        assert_eq!(abusers[1], (AbuserKind::Oversized, 1));
        assert_eq!(abusers[2], (AbuserKind::Slow, 0));
        assert_eq!(abusers[5], (AbuserKind::Unauthenticated, 2));
        let quiet = s.without_abusers();
        assert!(quiet.abusers().is_empty());
        assert_eq!((quiet.start, quiet.stop), (s.start, s.stop));
    }

    #[test]
    fn the_window_must_fit_the_measured_phase() {
        let ten = Duration::from_secs(10);
        assert!(spec("start='2s'\nstop='8s'\n").validate(ten, false).is_ok());
        let late = spec("start='2s'\nstop='11s'\n").validate(ten, false);
        assert!(late.unwrap_err().contains("after the end"));
        let backwards = spec("start='5s'\nstop='5s'\n").validate(ten, false);
        assert!(backwards.unwrap_err().contains("after abuse.start"));
        let slow = spec("start='1s'\nstop='2s'\nslow=1\n");
        assert!(slow.validate(ten, false).unwrap_err().contains("fan-out"));
        assert!(slow.validate(ten, true).is_ok());
        let rate = spec("start='1s'\nstop='2s'\nbatch_rate=0\n").validate(ten, false);
        assert!(rate.unwrap_err().contains("batch_rate"));
        let echo = spec("start='1s'\nstop='2s'\nslow_echo_size=70000\n").validate(ten, false);
        assert!(echo.unwrap_err().contains("slow_echo_size"));
        let echo = spec("start='1s'\nstop='2s'\nslow_echo_rate=-1\n").validate(ten, false);
        assert!(echo.unwrap_err().contains("slow_echo_rate"));
        let off = spec("start='1s'\nstop='2s'\nslow_echo_size=0\nslow_echo_rate=0\n");
        assert!(off.validate(ten, false).is_ok());
    }

    #[test]
    fn unknown_fields_are_refused() {
        assert!(toml::from_str::<AbuseSpec>("oversize=1\n").is_err());
    }
}
