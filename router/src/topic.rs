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

    /// The name of this topic's history, as the server API spells it, for
    /// the topics that keep one: groups, client ids and a tenant's
    /// broadcast (group dialect). IoT and IM keep none.
    pub fn history_stream(&self) -> Option<String> {
        match self.kind {
            TopicKind::Group => Some(format!("group:{}", self.name)),
            TopicKind::Client => Some(format!("client:{}", self.name)),
            TopicKind::Tenant => Some("broadcast".to_owned()),
            _ => None,
        }
    }

    /// The topic a history stream name (`group:{id}`, `client:{id}`,
    /// `broadcast`) stands for in `tenant`; `None` for any other name.
    pub fn from_history_stream(tenant: &str, stream: &str) -> Option<Self> {
        let (kind, name) = match stream.split_once(':') {
            Some(("group", id)) => (TopicKind::Group, id),
            Some(("client", id)) => (TopicKind::Client, id),
            None if stream == "broadcast" => (TopicKind::Tenant, ""),
            _ => return None,
        };
        if kind != TopicKind::Tenant && !switchboard_proto::is_valid_id(name) {
            return None;
        }
        Some(Self::new(tenant, kind, name))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_streams_name_group_topics_both_ways() {
        for (kind, name, stream) in [
            (TopicKind::Group, "g1", "group:g1"),
            (TopicKind::Client, "c-1", "client:c-1"),
            (TopicKind::Tenant, "", "broadcast"),
        ] {
            let topic = TopicKey::new("t", kind, name);
            assert_eq!(topic.history_stream().as_deref(), Some(stream));
            assert_eq!(TopicKey::from_history_stream("t", stream), Some(topic));
        }
        assert_eq!(
            TopicKey::new("t", TopicKind::Iot, "x").history_stream(),
            None
        );
        for bad in ["group:", "group:a/b", "iot:x", "broadcast:x", "", "client"] {
            assert_eq!(TopicKey::from_history_stream("t", bad), None, "{bad}");
        }
    }
}
