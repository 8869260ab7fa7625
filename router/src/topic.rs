//! Topic keys as the router holds them.

use std::fmt;

use switchboard_proto::{Topic, TopicKind};

/// A topic, hashable, scoped by tenant.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TopicKey {
    pub tenant: String,
    pub kind: TopicKind,
    pub name: String,
}

impl TopicKey {
    pub fn new(tenant: &str, kind: TopicKind, name: &str) -> Self {
        Self {
            tenant: tenant.to_owned(),
            kind,
            name: name.to_owned(),
        }
    }

    pub fn stable_hash(&self) -> u64 {
        switchboard_proto::ownership::topic_hash(&self.tenant, self.kind, &self.name)
    }

    pub fn to_proto(&self) -> Topic {
        Topic::new(&self.tenant, self.kind, &self.name)
    }

    /// Presence is kept for group topics only.
    pub fn has_presence(&self) -> bool {
        self.kind == TopicKind::Group
    }
}

impl From<Topic> for TopicKey {
    fn from(topic: Topic) -> Self {
        let kind = topic.kind();
        Self {
            tenant: topic.tenant,
            kind,
            name: topic.name,
        }
    }
}

impl fmt::Display for TopicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}/{}",
            self.tenant,
            self.kind.as_str_name(),
            self.name
        )
    }
}
