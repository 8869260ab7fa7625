//! IM limits and lifetimes: flags, `SWITCHBOARD_IM_*` env vars, config
//! file keys. Shared by routers and standalone mode.

use std::time::Duration;

use switchboard_common::config::duration;

use crate::store::im::ImLimits;

#[derive(Debug, Clone, clap::Args)]
pub struct ImSettings {
    /// IM messages kept per user until their receipt; the oldest go first.
    #[arg(long, env = "SWITCHBOARD_IM_OFFLINE_MAX", default_value_t = 1_000)]
    pub im_offline_max: usize,
    /// How long an IM message is kept for its recipient.
    #[arg(long, env = "SWITCHBOARD_IM_OFFLINE_TTL", default_value = "7d", value_parser = duration)]
    pub im_offline_ttl: Duration,
    /// How long an unused IM login session lives.
    #[arg(long, env = "SWITCHBOARD_IM_SESSION_TTL", default_value = "5m", value_parser = duration)]
    pub im_session_ttl: Duration,
    /// IM messages a user may have kept and not yet receipted (each kept
    /// once, however many recipients); over it a send is refused. The
    /// server API's `SYSTEM` has no quota.
    #[arg(long, env = "SWITCHBOARD_IM_SENDER_QUOTA", default_value_t = 10_000)]
    pub im_sender_quota: usize,
    /// Jobs (deliveries, receipts, backlog windows) waiting in one IM
    /// user's queue on its router; over it they are refused.
    #[arg(long, env = "SWITCHBOARD_IM_QUEUE_MAX", default_value_t = 1_024)]
    pub im_queue_max: usize,
}

impl ImSettings {
    pub fn config(&self) -> ImConfig {
        ImConfig {
            offline_max: self.im_offline_max.max(1),
            offline_ttl: self.im_offline_ttl,
            session_ttl: self.im_session_ttl,
            sender_quota: self.im_sender_quota,
            queue_max: self.im_queue_max.max(1),
        }
    }
}

/// What a router node needs of the IM settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImConfig {
    pub offline_max: usize,
    pub offline_ttl: Duration,
    pub session_ttl: Duration,
    pub sender_quota: usize,
    pub queue_max: usize,
}

impl Default for ImConfig {
    fn default() -> Self {
        Self {
            offline_max: 1_000,
            offline_ttl: Duration::from_secs(7 * 86_400),
            session_ttl: Duration::from_secs(300),
            sender_quota: 10_000,
            queue_max: 1_024,
        }
    }
}

impl ImConfig {
    pub fn limits(&self) -> ImLimits {
        ImLimits {
            max_messages: self.offline_max,
            max_age_ms: self.offline_ttl.as_millis() as u64,
            sender_quota: Some(self.sender_quota),
        }
    }

    /// [`ImConfig::limits`] for what `sender` sends: the system has no
    /// quota.
    pub fn limits_for(&self, sender: &str) -> ImLimits {
        ImLimits {
            sender_quota: (sender != switchboard_proto::im::SYSTEM).then_some(self.sender_quota),
            ..self.limits()
        }
    }

    pub fn session_ttl_ms(&self) -> u64 {
        (self.session_ttl.as_millis() as u64).max(1)
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Settings {
        #[command(flatten)]
        im: ImSettings,
    }

    #[test]
    fn defaults_match_the_spec() {
        let s = Settings::try_parse_from(["router"]).unwrap();
        assert_eq!(s.im.config(), ImConfig::default());
        let limits = s.im.config().limits();
        assert_eq!(limits.max_messages, 1_000);
        assert_eq!(limits.max_age_ms, 7 * 86_400_000);
        assert_eq!(s.im.config().session_ttl_ms(), 300_000);
        assert_eq!(limits.sender_quota, Some(10_000));
        assert_eq!(s.im.config().limits_for("SYSTEM").sender_quota, None);
        assert_eq!(s.im.config().queue_max, 1_024);
    }

    #[test]
    fn the_quota_and_queue_bound_come_from_flags() {
        let s =
            Settings::try_parse_from(["router", "--im-sender-quota", "3", "--im-queue-max", "10"])
                .unwrap();
        assert_eq!(s.im.config().limits_for("alice").sender_quota, Some(3));
        assert_eq!(s.im.config().queue_max, 10);
    }
}
