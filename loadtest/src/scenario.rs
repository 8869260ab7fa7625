//! Scenario files (`loadtest/scenarios/*.toml`): what to run, against
//! what, at which load, and which thresholds decide pass or fail.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

use crate::abuse::AbuseSpec;
use crate::recovery::RecoverySpec;
use crate::threshold::{Threshold, ThresholdError};

/// Why a scenario file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("scenario {name}: {source}")]
    Toml {
        name: String,
        source: Box<toml::de::Error>,
    },
    #[error("scenario {name}: {message}")]
    Invalid { name: String, message: String },
    #[error("scenario {name}: {source}")]
    Threshold {
        name: String,
        source: ThresholdError,
    },
}

/// What a scenario exercises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Sockets opened and held, sending only heartbeats.
    Idle,
    /// Virtual users that connect, get their upgrade, close, and repeat.
    Connect,
    /// Each socket sends messages to itself and times the round trip.
    Echo,
    /// One group, `vus` subscribers, `message.publishers` publishers.
    Fanout,
    /// `groups` groups of `group_size` members, one publisher per group.
    Groups,
    /// Sockets in pairs sending direct messages to each other.
    Direct,
    /// Subscribers in groups; messages come in through the server API.
    ApiPublish,
    /// IoT sockets subscribed to one device; events through the server API.
    IotEvents,
    /// JSON-RPC app sockets subscribed to a channel; apps publish on it.
    JsonrpcPubsub,
    /// IM users in pairs: text messages, send statuses and receipts.
    ImChat,
    /// Subscribers in `groups` groups fed by `message.publishers`
    /// publishers each; the `[recovery]` table's share of them drop and
    /// come back with their last history position.
    Recovery,
}

impl Kind {
    /// The dialect a kind speaks when its file names none.
    pub fn default_dialect(self) -> Dialect {
        match self {
            Kind::IotEvents => Dialect::Iot,
            Kind::JsonrpcPubsub => Dialect::Jsonrpc,
            Kind::ImChat => Dialect::Im,
            _ => Dialect::Group,
        }
    }

    /// The dialects a kind can drive.
    pub fn dialects(self) -> &'static [Dialect] {
        match self {
            Kind::Idle | Kind::Connect => &[Dialect::Group, Dialect::Iot, Dialect::Raw],
            Kind::Echo | Kind::Fanout | Kind::Groups => &[Dialect::Group, Dialect::Raw],
            Kind::Direct | Kind::ApiPublish | Kind::Recovery => &[Dialect::Group],
            Kind::IotEvents => &[Dialect::Iot],
            Kind::JsonrpcPubsub => &[Dialect::Jsonrpc],
            Kind::ImChat => &[Dialect::Im],
        }
    }

    /// Whether the kind publishes through the server API.
    pub fn needs_api(self) -> bool {
        matches!(self, Kind::ApiPublish | Kind::IotEvents)
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Idle => "idle",
            Kind::Connect => "connect",
            Kind::Echo => "echo",
            Kind::Fanout => "fanout",
            Kind::Groups => "groups",
            Kind::Direct => "direct",
            Kind::ApiPublish => "api_publish",
            Kind::IotEvents => "iot_events",
            Kind::JsonrpcPubsub => "jsonrpc_pubsub",
            Kind::ImChat => "im_chat",
            Kind::Recovery => "recovery",
        }
    }
}

/// The wire dialect the virtual users speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Dialect {
    /// Group messaging V3 (`spec/30-groups.md`).
    Group,
    /// IoT subscriptions (`spec/20-iot.md`).
    Iot,
    /// JSON-RPC app sockets (`spec/10-jsonrpc.md`).
    Jsonrpc,
    /// Instant messages (`spec/40-im.md`).
    Im,
    /// The baseline server: bare frames, no auth, no JSON.
    Raw,
}

impl Dialect {
    pub fn name(self) -> &'static str {
        match self {
            Dialect::Group => "group",
            Dialect::Iot => "iot",
            Dialect::Jsonrpc => "jsonrpc",
            Dialect::Im => "im",
            Dialect::Raw => "raw",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "group" => Dialect::Group,
            "iot" => Dialect::Iot,
            "jsonrpc" => Dialect::Jsonrpc,
            "im" => Dialect::Im,
            "raw" => Dialect::Raw,
            _ => return None,
        })
    }
}

/// One ramp stage: move linearly to `target` open sockets over `duration`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Stage {
    #[serde(deserialize_with = "de_duration", serialize_with = "ser_duration")]
    pub duration: Duration,
    pub target: usize,
}

/// What fills a message beside its stamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Body {
    /// A run of `x` (compresses to almost nothing).
    #[default]
    Pad,
    /// A JSON document shaped like an application's event (an order with
    /// its lines, customer and tags), as compressible as real JSON is.
    Json,
}

/// The messages publishers send.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MessageSpec {
    /// Approximate size of each message's payload in bytes (padding added).
    pub size: usize,
    /// What fills it.
    pub body: Body,
    /// Messages per second per publisher (per group for `groups`, in
    /// total for the server-API kinds).
    pub rate: f64,
    /// How many publishers (HTTP connections for the server-API kinds).
    pub publishers: usize,
}

impl Default for MessageSpec {
    fn default() -> Self {
        Self {
            size: 64,
            body: Body::Pad,
            rate: 10.0,
            publishers: 1,
        }
    }
}

/// A scenario as read from its file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    pub kind: Kind,
    #[serde(default)]
    pub description: String,
    /// Defaults to the kind's own dialect.
    #[serde(default)]
    pub dialect: Option<Dialect>,
    /// WebSocket base URLs (`ws://host:port`); sockets are spread over them.
    #[serde(default)]
    pub targets: Vec<String>,
    /// Server API base URL (`http://host:port`), for the server-API kinds.
    #[serde(default)]
    pub api: Option<String>,
    #[serde(default = "default_tenant")]
    pub tenant: String,
    /// Virtual users: sockets (or concurrent connectors for `connect`).
    #[serde(default = "one")]
    pub vus: usize,
    /// How sockets are opened; without stages they open as fast as
    /// `connect_concurrency` allows.
    #[serde(default)]
    pub stages: Vec<Stage>,
    /// Length of the measured phase (the hold time for `idle`).
    #[serde(
        default = "ten_seconds",
        deserialize_with = "de_duration",
        serialize_with = "ser_duration"
    )]
    pub duration: Duration,
    /// Pause between the last socket opening and the measured phase.
    #[serde(
        default = "one_second",
        deserialize_with = "de_duration",
        serialize_with = "ser_duration"
    )]
    pub settle: Duration,
    /// How long to wait for late deliveries after the measured phase.
    #[serde(
        default = "two_seconds",
        deserialize_with = "de_duration",
        serialize_with = "ser_duration"
    )]
    pub drain: Duration,
    /// Memory samples of a watched server before this much of the
    /// measured phase are ignored by `rss_growth`.
    #[serde(
        default,
        deserialize_with = "de_duration",
        serialize_with = "ser_duration"
    )]
    pub warmup: Duration,
    #[serde(default)]
    pub message: MessageSpec,
    /// Groups for `groups` and `api_publish`.
    #[serde(default = "one")]
    pub groups: usize,
    /// Members per group (`groups`) or sockets per group (`idle`).
    #[serde(default = "default_group_size")]
    pub group_size: usize,
    /// Dialect-level heartbeat interval of idle sockets.
    #[serde(
        default = "thirty_seconds",
        deserialize_with = "de_duration",
        serialize_with = "ser_duration"
    )]
    pub heartbeat: Duration,
    /// Sockets being opened at once when there are no stages.
    #[serde(default = "default_concurrency")]
    pub connect_concurrency: usize,
    /// Local source addresses (127.0.0.1, 127.0.0.2, …) connections are
    /// spread over; 0 picks enough for the socket count.
    #[serde(default)]
    pub source_ips: usize,
    /// Offer permessage-deflate on every socket and inflate what comes
    /// compressed; a server that declines runs the socket uncompressed.
    #[serde(default)]
    pub compression: bool,
    /// Pass/fail rules such as `p99_ms < 10` or `errors < 0.1%`.
    #[serde(default)]
    pub thresholds: Vec<String>,
    /// Abusers that join the measured phase for a window of it.
    #[serde(default)]
    pub abuse: Option<AbuseSpec>,
    /// Subscribers that drop and recover (`recovery` only).
    #[serde(default)]
    pub recovery: Option<RecoverySpec>,
}

fn default_tenant() -> String {
    "bench".to_owned()
}
fn one() -> usize {
    1
}
fn default_group_size() -> usize {
    50
}
fn default_concurrency() -> usize {
    64
}
fn ten_seconds() -> Duration {
    Duration::from_secs(10)
}
fn thirty_seconds() -> Duration {
    Duration::from_secs(30)
}
fn one_second() -> Duration {
    Duration::from_secs(1)
}
fn two_seconds() -> Duration {
    Duration::from_secs(2)
}

pub(crate) fn de_duration<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Duration, D::Error> {
    let text = String::deserialize(deserializer)?;
    switchboard_common::config::duration(&text).map_err(serde::de::Error::custom)
}

pub(crate) fn ser_duration<S: serde::Serializer>(
    value: &Duration,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&format!("{}ms", value.as_millis()))
}

impl Scenario {
    /// Reads and checks a scenario file.
    pub fn load(path: &Path) -> Result<Self, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        Self::parse(&name, &text)
    }

    /// Parses and checks scenario text; `name` labels errors.
    pub fn parse(name: &str, text: &str) -> Result<Self, ScenarioError> {
        let scenario: Scenario = toml::from_str(text).map_err(|source| ScenarioError::Toml {
            name: name.to_owned(),
            source: Box::new(source),
        })?;
        scenario.validate()?;
        Ok(scenario)
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect.unwrap_or_else(|| self.kind.default_dialect())
    }

    /// The parsed thresholds.
    pub fn thresholds(&self) -> Result<Vec<Threshold>, ScenarioError> {
        self.thresholds
            .iter()
            .map(|t| {
                t.parse().map_err(|source| ScenarioError::Threshold {
                    name: self.name.clone(),
                    source,
                })
            })
            .collect()
    }

    /// How many sockets the scenario opens in all.
    pub fn sockets(&self) -> usize {
        match self.kind {
            Kind::Groups => self.groups * self.group_size,
            Kind::Fanout | Kind::JsonrpcPubsub => self.vus + self.message.publishers,
            Kind::Recovery => self.vus + self.groups * self.message.publishers,
            _ => self.vus,
        }
    }

    /// Checks what serde cannot: sizes, rates, dialects, thresholds.
    pub fn validate(&self) -> Result<(), ScenarioError> {
        let invalid = |message: String| ScenarioError::Invalid {
            name: self.name.clone(),
            message,
        };
        let dialect = self.dialect();
        if !self.kind.dialects().contains(&dialect) {
            return Err(invalid(format!(
                "kind {} does not speak the {} dialect",
                self.kind.name(),
                dialect.name()
            )));
        }
        if self.vus == 0 {
            return Err(invalid("vus must be at least 1".into()));
        }
        if self.kind == Kind::Groups && (self.groups == 0 || self.group_size < 2) {
            return Err(invalid(
                "groups needs groups >= 1 and group_size >= 2".into(),
            ));
        }
        if matches!(self.kind, Kind::Direct | Kind::ImChat)
            && (self.vus < 2 || !self.vus.is_multiple_of(2))
        {
            return Err(invalid("pairs need an even vus of at least 2".into()));
        }
        if !(self.message.rate.is_finite() && self.message.rate > 0.0) {
            return Err(invalid("message.rate must be a positive number".into()));
        }
        if self.message.publishers == 0 {
            return Err(invalid("message.publishers must be at least 1".into()));
        }
        if self.group_size == 0 || self.connect_concurrency == 0 {
            return Err(invalid(
                "group_size and connect_concurrency must be at least 1".into(),
            ));
        }
        if self.heartbeat.is_zero() {
            return Err(invalid("heartbeat must be longer than 0".into()));
        }
        if self.stages.iter().any(|s| s.target > self.sockets()) {
            return Err(invalid(format!(
                "a stage target exceeds the {} sockets of the scenario",
                self.sockets()
            )));
        }
        for target in &self.targets {
            if !target.starts_with("ws://") {
                return Err(invalid(format!("target `{target}` must be a ws:// URL")));
            }
        }
        if let Some(api) = &self.api
            && !api.starts_with("http://")
        {
            return Err(invalid(format!("api `{api}` must be an http:// URL")));
        }
        match (&self.recovery, self.kind) {
            (Some(spec), Kind::Recovery) => {
                if self.groups == 0 {
                    return Err(invalid("recovery needs groups >= 1".into()));
                }
                spec.validate(self.vus, self.duration).map_err(invalid)?;
            }
            (None, Kind::Recovery) => {
                return Err(invalid(
                    "kind recovery needs a [recovery] table (drop, at, away)".into(),
                ));
            }
            (Some(_), _) => {
                return Err(invalid(
                    "a [recovery] table only suits kind recovery".into(),
                ));
            }
            (None, _) => {}
        }
        if let Some(abuse) = &self.abuse {
            if dialect == Dialect::Raw {
                return Err(invalid(
                    "abusers speak the product's dialects, not the baseline's".into(),
                ));
            }
            if self.kind == Kind::Connect {
                return Err(invalid(
                    "connect runs have no measured traffic to abuse".into(),
                ));
            }
            let has_group = matches!(
                self.kind,
                Kind::Fanout | Kind::Groups | Kind::ApiPublish | Kind::Recovery
            );
            abuse.validate(self.duration, has_group).map_err(invalid)?;
        }
        self.thresholds()?;
        Ok(())
    }

    /// The measured phase's planned message count per publisher.
    pub fn planned_messages(&self) -> u64 {
        (self.message.rate * self.duration.as_secs_f64()).round() as u64
    }

    /// Time until the ramp of `stages` ends.
    pub fn ramp_time(&self) -> Duration {
        self.stages.iter().map(|s| s.duration).sum()
    }

    /// Open sockets the stages ask for `elapsed` after the start.
    pub fn ramp_target(&self, elapsed: Duration) -> usize {
        let mut from = 0usize;
        let mut start = Duration::ZERO;
        for stage in &self.stages {
            let end = start + stage.duration;
            if elapsed < end {
                let part = (elapsed - start).as_secs_f64() / stage.duration.as_secs_f64();
                let value = from as f64 + (stage.target as f64 - from as f64) * part;
                return value.round().max(0.0) as usize;
            }
            from = stage.target;
            start = end;
        }
        if self.stages.is_empty() {
            self.sockets()
        } else {
            from
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FANOUT: &str = r#"
name = "fanout"
kind = "fanout"
targets = ["ws://127.0.0.1:8080"]
vus = 1000
duration = "20s"
stages = [{ duration = "5s", target = 500 }, { duration = "5s", target = 1001 }]
thresholds = ["p99_ms < 10", "errors < 0.1%"]
[message]
size = 128
rate = 200
"#;

    #[test]
    fn parses_a_full_file() {
        let s = Scenario::parse("fanout", FANOUT).unwrap();
        assert_eq!(s.kind, Kind::Fanout);
        assert_eq!(s.dialect(), Dialect::Group);
        assert_eq!(s.vus, 1000);
        assert_eq!(s.duration, Duration::from_secs(20));
        assert_eq!(s.message.size, 128);
        assert_eq!(s.message.rate, 200.0);
        assert_eq!(s.message.publishers, 1);
        assert_eq!(s.sockets(), 1001);
        assert_eq!(s.planned_messages(), 4000);
        assert_eq!(s.thresholds().unwrap().len(), 2);
        assert_eq!(s.ramp_time(), Duration::from_secs(10));
        assert_eq!(s.tenant, "bench");
        assert!(!s.compression);
        assert_eq!(s.message.body, Body::Pad);
        let compressed = Scenario::parse(
            "x",
            "name='x'\nkind='fanout'\ncompression=true\n[message]\nsize=1024\nbody='json'\n",
        )
        .unwrap();
        assert!(compressed.compression);
        assert_eq!(compressed.message.body, Body::Json);
        assert!(Scenario::parse("x", "name='x'\nkind='fanout'\n[message]\nbody='xml'\n").is_err());
    }

    #[test]
    fn unknown_fields_are_refused() {
        // A key after [message] belongs to that table, which has no such key.
        let misplaced = format!("{FANOUT}thresholds = []\n");
        let err = Scenario::parse("fanout", &misplaced).unwrap_err();
        assert!(err.to_string().contains("thresholds"), "{err}");
        let err = Scenario::parse("x", "name='x'\nkind='echo'\nvu=3\n").unwrap_err();
        assert!(err.to_string().contains("vu"), "{err}");
    }

    #[test]
    fn refusals_name_the_problem() {
        let cases = [
            ("name='x'\nkind='warp'\n", "warp"),
            ("name='x'\nkind='direct'\nvus=3\n", "even"),
            (
                "name='x'\nkind='iot_events'\ndialect='group'\n",
                "does not speak",
            ),
            ("name='x'\nkind='echo'\nduration='soon'\n", "not a duration"),
            ("name='x'\nkind='echo'\n[message]\nrate=0\n", "message.rate"),
            ("name='x'\nkind='echo'\ntargets=['http://a']\n", "ws://"),
            ("name='x'\nkind='echo'\nthresholds=['p99_ms <']\n", "p99_ms"),
            (
                "name='x'\nkind='idle'\nvus=10\nstages=[{duration='1s',target=11}]\n",
                "stage target",
            ),
        ];
        for (text, wanted) in cases {
            let err = Scenario::parse("x", text).unwrap_err().to_string();
            assert!(err.contains(wanted), "{text:?}: {err}");
        }
    }

    #[test]
    fn ramp_targets_move_linearly_between_stages() {
        let s = Scenario::parse(
            "x",
            "name='x'\nkind='idle'\nvus=100\nstages=[{duration='10s',target=100},{duration='10s',target=100},{duration='5s',target=0}]\n",
        )
        .unwrap();
        assert_eq!(s.ramp_target(Duration::ZERO), 0);
        assert_eq!(s.ramp_target(Duration::from_secs(5)), 50);
        assert_eq!(s.ramp_target(Duration::from_secs(15)), 100);
        assert_eq!(s.ramp_target(Duration::from_millis(22_500)), 50);
        assert_eq!(s.ramp_target(Duration::from_secs(60)), 0);
        let no_stages = Scenario::parse("x", "name='x'\nkind='idle'\nvus=7\n").unwrap();
        assert_eq!(no_stages.ramp_target(Duration::ZERO), 7);
    }

    #[test]
    fn an_abuse_table_rides_along_with_a_scenario() {
        let text = "name='x'\nkind='fanout'\nvus=10\nduration='30s'\n[abuse]\nstart='5s'\nstop='25s'\nslow=2\nbatched=1\n";
        let s = Scenario::parse("x", text).unwrap();
        let abuse = s.abuse.as_ref().expect("[abuse] table");
        assert_eq!((abuse.slow, abuse.batched, abuse.oversized), (2, 1, 0));
        assert_eq!(abuse.stop, Duration::from_secs(25));
        assert!(
            Scenario::parse("x", "name='x'\nkind='fanout'\n")
                .unwrap()
                .abuse
                .is_none()
        );
        let cases = [
            (
                "name='x'\nkind='im_chat'\nvus=2\n[abuse]\nstart='1s'\nstop='2s'\nslow=1\n",
                "fan-out group",
            ),
            (
                "name='x'\nkind='fanout'\ndialect='raw'\n[abuse]\nstart='1s'\nstop='2s'\n",
                "baseline",
            ),
            (
                "name='x'\nkind='fanout'\nduration='10s'\n[abuse]\nstart='1s'\nstop='12s'\n",
                "after the end",
            ),
            (
                "name='x'\nkind='connect'\n[abuse]\nstart='1s'\nstop='2s'\n",
                "connect",
            ),
        ];
        for (text, wanted) in cases {
            let err = Scenario::parse("x", text).unwrap_err().to_string();
            assert!(err.contains(wanted), "{text:?}: {err}");
        }
    }

    #[test]
    fn a_recovery_scenario_needs_its_table_and_only_it_has_one() {
        let text = "name='x'\nkind='recovery'\nvus=20\ngroups=2\nduration='10s'\n[message]\npublishers=2\n[recovery]\ndrop=5\nat='2s'\nspread='1s'\naway='3s'\n";
        let s = Scenario::parse("x", text).unwrap();
        let spec = s.recovery.as_ref().expect("[recovery] table");
        assert_eq!((spec.drop, spec.away), (5, Duration::from_secs(3)));
        assert_eq!(
            s.sockets(),
            24,
            "20 subscribers, 2 publishers in each of 2 groups"
        );
        assert_eq!(s.dialect(), Dialect::Group);
        let cases = [
            ("name='x'\nkind='recovery'\n", "needs a [recovery] table"),
            (
                "name='x'\nkind='fanout'\n[recovery]\ndrop=1\n",
                "only suits kind recovery",
            ),
            (
                "name='x'\nkind='recovery'\nvus=4\n[recovery]\ndrop=5\n",
                "recovery.drop",
            ),
            (
                "name='x'\nkind='recovery'\nvus=4\nduration='4s'\n[recovery]\nat='2s'\naway='2s'\n",
                "before the measured phase",
            ),
            (
                "name='x'\nkind='recovery'\ndialect='raw'\n[recovery]\ndrop=1\n",
                "does not speak",
            ),
            ("name='x'\nkind='recovery'\n[recovery]\ndrops=1\n", "drops"),
        ];
        for (text, wanted) in cases {
            let err = Scenario::parse("x", text).unwrap_err().to_string();
            assert!(err.contains(wanted), "{text:?}: {err}");
        }
    }

    #[test]
    fn every_shipped_scenario_file_parses() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                Scenario::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                seen += 1;
            }
        }
        assert!(seen > 0, "no scenario files in {}", dir.display());
    }
}
