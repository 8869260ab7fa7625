//! Every store key, built in one place so memory and Redis agree on them.
//!
//! A key is `sb:{tenant}:kind:part:…`: fixed words and id parts joined by
//! `:`. Each id part is escaped ([`part`]: `%`, `:`, `{` and `}` become
//! `%XX`), so a part never holds a separator and two different id tuples
//! never map to the same key, whatever characters the ids contain. The
//! tenant is the Redis Cluster hash tag, so every key of one tenant (and
//! so every script) stays in one slot. Ids without those four characters
//! read exactly as they are written.

use std::borrow::Cow;

/// An id as a key part: `%`, `:`, `{` and `}` percent-escaped.
pub fn part(id: &str) -> Cow<'_, str> {
    if !id.bytes().any(needs_escape) {
        return Cow::Borrowed(id);
    }
    let mut out = String::with_capacity(id.len() + 8);
    for c in id.chars() {
        if c.is_ascii() && needs_escape(c as u8) {
            out.push_str(&format!("%{:02X}", c as u8));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

fn needs_escape(b: u8) -> bool {
    matches!(b, b'%' | b':' | b'{' | b'}')
}

/// The same escape in Lua, for scripts that build a key from a value they
/// read (`part(s)`); kept beside [`part`] so the two cannot drift apart.
pub const LUA_PART: &str = r"
local function part(s)
  return (string.gsub(s, '[%%:{}]', function(c) return string.format('%%%02X', string.byte(c)) end))
end
";

/// `sb:{tenant}`: the prefix and hash tag of every key of a tenant. An
/// empty tenant (never valid, but keys must not depend on that) is `%`,
/// which no escaped id can be, so the tag is never empty (an empty tag
/// would spread the tenant's keys over slots).
fn tenant_prefix(tenant: &str) -> String {
    if tenant.is_empty() {
        "sb:{%}".to_owned()
    } else {
        format!("sb:{{{}}}", part(tenant))
    }
}

/// An app's key, private to (tenant, app).
pub fn app_value(tenant: &str, app: &str, key: &str) -> String {
    format!(
        "{}:app:{}:kv:{}",
        tenant_prefix(tenant),
        part(app),
        part(key)
    )
}

/// The user's last active conversation.
pub fn user_conv(tenant: &str, user: &str) -> String {
    format!("{}:user:{}:conv", tenant_prefix(tenant), part(user))
}

/// The user that owns a conversation.
pub fn conv_owner(tenant: &str, conv: &str) -> String {
    format!("{}:conv:{}:owner", tenant_prefix(tenant), part(conv))
}

/// The user that owns a device (its token's `owner` claim).
pub fn device_owner(tenant: &str, hd: &str) -> String {
    format!("{}:dev:{}:owner", tenant_prefix(tenant), part(hd))
}

/// The conversation a device is bound to.
pub fn device_conv(tenant: &str, hd: &str) -> String {
    format!("{}:dev:{}:conv", tenant_prefix(tenant), part(hd))
}

/// The device's latest status: `{"status":…,"updated_at":…}`.
pub fn device_status(tenant: &str, hd: &str) -> String {
    format!("{}:dev:{}:status", tenant_prefix(tenant), part(hd))
}

/// Set-key parts of the devices bound to a conversation: the set of
/// conversation `c` is `{prefix}{part(c)}{suffix}`.
pub fn conv_devices_parts(tenant: &str) -> (String, &'static str) {
    (format!("{}:conv:", tenant_prefix(tenant)), ":devices")
}

pub fn conv_devices(tenant: &str, conv: &str) -> String {
    let (prefix, suffix) = conv_devices_parts(tenant);
    format!("{prefix}{}{suffix}", part(conv))
}

/// A group's presence: member → last refresh (ms).
pub fn presence(tenant: &str, group: &str) -> String {
    format!("{}:presence:{}", tenant_prefix(tenant), part(group))
}

/// An IM login session.
pub fn im_session(tenant: &str, session_id: &str) -> String {
    format!("{}:im:session:{}", tenant_prefix(tenant), part(session_id))
}

/// An IM user's queue: references to the messages kept for the user, in
/// arrival order.
pub fn im_queue(tenant: &str, user: &str) -> String {
    format!("{}:im:queue:{}", tenant_prefix(tenant), part(user))
}

/// How a queue names a kept message: `{sender}:{id}`, both escaped, so
/// the first `:` splits it.
pub fn im_ref(sender: &str, id: &str) -> String {
    format!("{}:{}", part(sender), part(id))
}

/// What every kept message's key starts with; [`im_ref`] completes it.
pub fn im_body_prefix(tenant: &str) -> String {
    format!("{}:im:body:", tenant_prefix(tenant))
}

/// A kept message, stored once for all its recipients.
pub fn im_body(tenant: &str, sender: &str, id: &str) -> String {
    format!("{}{}", im_body_prefix(tenant), im_ref(sender, id))
}

/// What every sender's quota key starts with; the escaped sender
/// completes it.
pub fn im_sent_prefix(tenant: &str) -> String {
    format!("{}:im:sent:", tenant_prefix(tenant))
}

/// A sender's kept messages (escaped ids by time kept): its quota.
pub fn im_sent(tenant: &str, sender: &str) -> String {
    format!("{}{}", im_sent_prefix(tenant), part(sender))
}

/// The tenant's counter of kept messages: each one's generation, and its
/// cursor in every recipient's queue.
pub fn im_generation(tenant: &str) -> String {
    format!("{}:im:generation", tenant_prefix(tenant))
}

/// A topic's history: its epoch and latest offset (a hash).
pub fn history_meta(tenant: &str, stream: &str) -> String {
    format!("{}:hist:{}:meta", tenant_prefix(tenant), part(stream))
}

/// A topic's kept messages, oldest first (a list).
pub fn history_messages(tenant: &str, stream: &str) -> String {
    format!("{}:hist:{}:msgs", tenant_prefix(tenant), part(stream))
}

/// The publish ids of a topic's kept messages → offset (a hash).
pub fn history_ids(tenant: &str, stream: &str) -> String {
    format!("{}:hist:{}:ids", tenant_prefix(tenant), part(stream))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// Ids made of separators and escapes, empty ones included.
    const IDS: &[&str] = &[
        "", "a", "b", "x", ":", "::", "/", "{", "}", "{}", ".", "|", " ", "%", "%3A", "%25", "a:b",
        "a:kv:b", "kv", "conv", "owner", "a}", "{a", "a b", "é:ü",
    ];

    /// Every key builder, by name, with the number of ids it takes
    /// (tenant included).
    #[allow(clippy::type_complexity)]
    fn builders() -> Vec<(&'static str, Box<dyn Fn(&[&str]) -> String>)> {
        vec![
            (
                "app_value",
                Box::new(|i: &[&str]| app_value(i[0], i[1], i[2])),
            ),
            ("user_conv", Box::new(|i: &[&str]| user_conv(i[0], i[1]))),
            ("conv_owner", Box::new(|i: &[&str]| conv_owner(i[0], i[1]))),
            (
                "device_owner",
                Box::new(|i: &[&str]| device_owner(i[0], i[1])),
            ),
            (
                "device_conv",
                Box::new(|i: &[&str]| device_conv(i[0], i[1])),
            ),
            (
                "device_status",
                Box::new(|i: &[&str]| device_status(i[0], i[1])),
            ),
            (
                "conv_devices",
                Box::new(|i: &[&str]| conv_devices(i[0], i[1])),
            ),
            ("presence", Box::new(|i: &[&str]| presence(i[0], i[1]))),
            ("im_session", Box::new(|i: &[&str]| im_session(i[0], i[1]))),
            ("im_queue", Box::new(|i: &[&str]| im_queue(i[0], i[1]))),
            ("im_body", Box::new(|i: &[&str]| im_body(i[0], i[1], i[2]))),
            ("im_sent", Box::new(|i: &[&str]| im_sent(i[0], i[1]))),
            ("im_generation", Box::new(|i: &[&str]| im_generation(i[0]))),
            (
                "history_meta",
                Box::new(|i: &[&str]| history_meta(i[0], i[1])),
            ),
            (
                "history_messages",
                Box::new(|i: &[&str]| history_messages(i[0], i[1])),
            ),
            (
                "history_ids",
                Box::new(|i: &[&str]| history_ids(i[0], i[1])),
            ),
        ]
    }

    fn arity(name: &str) -> usize {
        match name {
            "app_value" | "im_body" => 3,
            "im_generation" => 1,
            _ => 2,
        }
    }

    /// No two (builder, id tuple) pairs share a key: not within one kind
    /// of key, and not across kinds.
    #[test]
    fn distinct_id_tuples_never_share_a_key() {
        let mut seen: HashMap<String, (&str, Vec<&str>)> = HashMap::new();
        for (name, build) in builders() {
            let tuples: Vec<Vec<&str>> = match arity(name) {
                3 => IDS
                    .iter()
                    .flat_map(|a| {
                        IDS.iter()
                            .flat_map(move |b| IDS.iter().map(move |c| vec![*a, *b, *c]))
                    })
                    .collect(),
                2 => IDS
                    .iter()
                    .flat_map(|a| IDS.iter().map(move |b| vec![*a, *b]))
                    .collect(),
                _ => IDS.iter().map(|a| vec![*a]).collect(),
            };
            for ids in tuples {
                let key = build(&ids);
                if let Some((earlier_name, earlier_ids)) =
                    seen.insert(key.clone(), (name, ids.clone()))
                {
                    panic!("{key} is built by {earlier_name}{earlier_ids:?} and {name}{ids:?}");
                }
            }
        }
    }

    #[test]
    fn the_colliding_apps_of_the_old_layout_get_different_keys() {
        assert_ne!(
            app_value("t", "shop", "x:kv:secret"),
            app_value("t", "shop:kv:x", "secret")
        );
    }

    /// Every key of a tenant carries the same non-empty hash tag, so a
    /// script's keys stay in one Redis Cluster slot.
    #[test]
    fn every_key_of_a_tenant_has_one_hash_tag() {
        for tenant in IDS {
            let tags: std::collections::HashSet<String> = builders()
                .iter()
                .flat_map(|(name, build)| {
                    IDS.iter().map(move |id| {
                        let ids = if arity(name) == 3 {
                            vec![*tenant, *id, *id]
                        } else {
                            vec![*tenant, *id]
                        };
                        hash_tag(&build(&ids)).to_owned()
                    })
                })
                .collect();
            assert_eq!(tags.len(), 1, "tenant {tenant:?}: {tags:?}");
            assert!(!tags.iter().next().unwrap().is_empty());
        }
    }

    /// What Redis Cluster hashes: the part between the first `{` and the
    /// first `}` after it, when that is not empty.
    fn hash_tag(key: &str) -> &str {
        let open = key.find('{').expect("a tag");
        let close = key[open + 1..].find('}').expect("a closing brace") + open + 1;
        &key[open + 1..close]
    }

    #[test]
    fn plain_ids_read_as_written() {
        assert_eq!(app_value("acme", "shop", "k"), "sb:{acme}:app:shop:kv:k");
        assert_eq!(presence("acme", "g1"), "sb:{acme}:presence:g1");
        assert_eq!(im_queue("acme", "bob"), "sb:{acme}:im:queue:bob");
        assert_eq!(conv_devices("t", "a:b"), "sb:{t}:conv:a%3Ab:devices");
    }
}
