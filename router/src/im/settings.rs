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
}

impl ImSettings {
    pub fn config(&self) -> ImConfig {
        ImConfig {
            offline_max: self.im_offline_max.max(1),
            offline_ttl: self.im_offline_ttl,
            session_ttl: self.im_session_ttl,
        }
    }
}

/// What a router node needs of the IM settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImConfig {
    pub offline_max: usize,
    pub offline_ttl: Duration,
    pub session_ttl: Duration,
}

impl Default for ImConfig {
    fn default() -> Self {
        Self {
            offline_max: 1_000,
            offline_ttl: Duration::from_secs(7 * 86_400),
            session_ttl: Duration::from_secs(300),
        }
    }
}

impl ImConfig {
    pub fn limits(&self) -> ImLimits {
        ImLimits {
            max_messages: self.offline_max,
            max_age_ms: self.offline_ttl.as_millis() as u64,
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
    }
}
