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

    /// The name of this topic's history, for the topics that keep one:
    /// groups, client ids and a tenant's broadcast (group dialect), and a
    /// JSON-RPC user, conversation, device and app channel. IoT and IM
    /// keep none. Every name but a channel's is also how the server API
    /// spells it; a channel's keeps the topic name (`{appId}/{channel}`,
    /// the app id escaped), which no two (app, channel) pairs share.
    pub fn history_stream(&self) -> Option<String> {
        match self.kind {
            TopicKind::Group => Some(format!("group:{}", self.name)),
            TopicKind::Client => Some(format!("client:{}", self.name)),
            TopicKind::Tenant => Some("broadcast".to_owned()),
            TopicKind::User => Some(format!("user:{}", self.name)),
            TopicKind::Conv => Some(format!("conv:{}", self.name)),
            TopicKind::Device => Some(format!("device:{}", self.name)),
            TopicKind::AppChannel => Some(format!("channel:{}", self.name)),
            _ => None,
        }
    }

    /// The topic a history name of the server API (`group:{id}`,
    /// `client:{id}`, `broadcast`, `user:{id}`, `conv:{id}`, `device:{id}`,
    /// `channel:{appId}:{channel}`) stands for in `tenant`; `None` for any
    /// other name or an invalid id. In a channel's name the app id ends at
    /// the first `:`, and the channel is the rest, colons and all.
    pub fn from_history_stream(tenant: &str, stream: &str) -> Option<Self> {
        use switchboard_proto::jsonrpc::{channel_topic_name, is_valid_key, is_valid_ref};
        let (kind, name) = match stream.split_once(':') {
            Some(("group", id)) if switchboard_proto::is_valid_id(id) => (TopicKind::Group, id),
            Some(("client", id)) if switchboard_proto::is_valid_id(id) => (TopicKind::Client, id),
            Some(("user", id)) if is_valid_ref(id) => (TopicKind::User, id),
            Some(("conv", id)) if is_valid_ref(id) => (TopicKind::Conv, id),
            Some(("device", id)) if is_valid_ref(id) => (TopicKind::Device, id),
            Some(("channel", rest)) => {
                let (app, channel) = rest.split_once(':')?;
                if !is_valid_ref(app) || !is_valid_key(channel) {
                    return None;
                }
                let name = channel_topic_name(app, channel);
                return Some(Self::new(tenant, TopicKind::AppChannel, &name));
            }
            None if stream == "broadcast" => (TopicKind::Tenant, ""),
            _ => return None,
        };
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

    #[test]
    fn the_topics_with_a_history_are_those_edges_keep_publishes_for() {
        // Edges keep (and resend with an id) publishes to the kinds that
        // `TopicKind::keeps_history` names; only these dedupe by id here.
        for value in 0..=32 {
            let Ok(kind) = TopicKind::try_from(value) else {
                continue;
            };
            let topic = TopicKey::new("t", kind, "x");
            assert_eq!(
                topic.history_stream().is_some(),
                kind.keeps_history(),
                "{kind:?}"
            );
        }
    }

    #[test]
    fn history_streams_name_jsonrpc_topics_both_ways() {
        for (kind, name, stream) in [
            (TopicKind::User, "alice", "user:alice"),
            (TopicKind::Conv, "42", "conv:42"),
            (TopicKind::Conv, "a:b", "conv:a:b"),
            (TopicKind::Device, "hd-1", "device:hd-1"),
        ] {
            let topic = TopicKey::new("t", kind, name);
            assert_eq!(topic.history_stream().as_deref(), Some(stream));
            assert_eq!(TopicKey::from_history_stream("t", stream), Some(topic));
        }
        // A channel: the app id up to the first colon, the channel the rest.
        let news = TopicKey::from_history_stream("t", "channel:shop:news:eu/1").unwrap();
        assert_eq!(news.kind, TopicKind::AppChannel);
        assert_eq!(
            news.name,
            switchboard_proto::jsonrpc::channel_topic_name("shop", "news:eu/1")
        );
        assert_eq!(
            news.history_stream().as_deref(),
            Some("channel:shop/news:eu/1")
        );
        // Tools and app keys keep no history.
        for kind in [TopicKind::Tool, TopicKind::App] {
            assert_eq!(TopicKey::new("t", kind, "a/b").history_stream(), None);
        }
        let long = format!("channel:app:{}", "x".repeat(257));
        for bad in [
            "user:",
            "user:a/b",
            "conv:a b",
            "device:{t}",
            "channel:",
            "channel:app",
            "channel:app:",
            "channel::news",
            "channel:a/b:news",
            long.as_str(),
            "tool:a:b",
        ] {
            assert_eq!(TopicKey::from_history_stream("t", bad), None, "{bad}");
        }
    }

    #[test]
    fn history_streams_of_different_topics_differ() {
        let topics = [
            TopicKey::new("t", TopicKind::User, "x"),
            TopicKey::new("t", TopicKind::Conv, "x"),
            TopicKey::new("t", TopicKind::Device, "x"),
            TopicKey::new("t", TopicKind::Client, "x"),
            TopicKey::new("t", TopicKind::Group, "x"),
            TopicKey::new("t", TopicKind::AppChannel, "x/y"),
            TopicKey::new("t", TopicKind::AppChannel, "x%2Fy/z"),
            TopicKey::new("t", TopicKind::AppChannel, "x/y/z"),
        ];
        let mut seen = std::collections::HashSet::new();
        for topic in &topics {
            assert!(seen.insert(topic.history_stream().unwrap()), "{topic}");
        }
    }
}
