//! Envelopes and the gRPC service between Switchboard edges and routers.
//!
//! Generated from `proto/switchboard.proto` at build time (protox, no system
//! `protoc`). See that file for what each message means.
//!
//! - [`group`]: the group dialect's V3 message schema and validation.
//! - [`ids`]: id rules shared by every dialect.
//! - [`jsonrpc`]: frames, topic names and ids of the JSON-RPC dialect.
//! - [`im`]: the IM dialect's message schema and status codes.
//! - [`ownership`]: which router owns a topic (rendezvous hashing).
//! - [`response`]: a router's answer as a `Result` ([`RouterRefusal`]).
#![forbid(unsafe_code)]

pub mod group;
pub mod ids;
pub mod im;
pub mod iot;
pub mod jsonrpc;
pub mod ownership;
pub mod response;

pub use ids::is_valid_id;
pub use response::RouterRefusal;

#[allow(clippy::all, clippy::pedantic)]
mod generated {
    tonic::include_proto!("switchboard.v1");
}

pub use generated::*;

impl Topic {
    pub fn group(tenant: &str, group: &str) -> Self {
        Self::new(tenant, TopicKind::Group, group)
    }

    pub fn client(tenant: &str, client: &str) -> Self {
        Self::new(tenant, TopicKind::Client, client)
    }

    pub fn tenant(tenant: &str) -> Self {
        Self::new(tenant, TopicKind::Tenant, "")
    }

    pub fn new(tenant: &str, kind: TopicKind, name: &str) -> Self {
        Self {
            tenant: tenant.to_owned(),
            kind: kind as i32,
            name: name.to_owned(),
        }
    }
}

impl TopicKind {
    /// Whether a topic of this kind keeps a history (positions on its
    /// deliveries, recovery, idempotent publishes): groups, client ids, a
    /// tenant's broadcast, and the JSON-RPC user, conversation, device and
    /// app channel topics. IoT events, presence and IM keep none.
    pub fn keeps_history(self) -> bool {
        matches!(
            self,
            Self::Group
                | Self::Client
                | Self::Tenant
                | Self::User
                | Self::Conv
                | Self::Device
                | Self::AppChannel
        )
    }
}

impl Payload {
    pub fn json(bytes: impl Into<prost::bytes::Bytes>) -> Self {
        Self {
            body: Some(payload::Body::Json(bytes.into())),
        }
    }

    pub fn presence(event: PresenceEvent) -> Self {
        Self {
            body: Some(payload::Body::Presence(event)),
        }
    }
}

impl From<edge_frame::Body> for EdgeFrame {
    fn from(body: edge_frame::Body) -> Self {
        Self { body: Some(body) }
    }
}

impl From<router_frame::Body> for RouterFrame {
    fn from(body: router_frame::Body) -> Self {
        Self { body: Some(body) }
    }
}

impl Position {
    /// A position as clients hold it, `epoch:offset`; `None` unless the
    /// epoch is 1 to 64 ASCII letters and digits and the offset a number.
    pub fn parse(text: &str) -> Option<Self> {
        let (epoch, offset) = text.rsplit_once(':')?;
        if !Self::is_valid_epoch(epoch)
            || offset.is_empty()
            || !offset.bytes().all(|b| b.is_ascii_digit())
        {
            return None;
        }
        Some(Self {
            epoch: epoch.to_owned(),
            offset: offset.parse().ok()?,
        })
    }

    /// Whether a client may present `epoch`: 1 to 64 ASCII letters and
    /// digits.
    pub fn is_valid_epoch(epoch: &str) -> bool {
        !epoch.is_empty() && epoch.len() <= 64 && epoch.bytes().all(|b| b.is_ascii_alphanumeric())
    }
}

#[cfg(test)]
mod position_tests {
    use super::Position;

    #[test]
    fn positions_parse_as_epoch_colon_offset() {
        let p = Position::parse("00ff:12").unwrap();
        assert_eq!((p.epoch.as_str(), p.offset), ("00ff", 12));
        for bad in [
            "",
            ":1",
            "a:",
            "a:-1",
            "a:+1",
            "a/b:1",
            "a:1x",
            "a:99999999999999999999999",
        ] {
            assert_eq!(Position::parse(bad), None, "{bad}");
        }
    }
}
