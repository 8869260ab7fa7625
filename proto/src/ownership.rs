//! Which router owns a topic: rendezvous (highest-random-weight) hashing.
//!
//! Every edge and router computes the same owner from the same set of
//! router ids, with no coordination, and when a router joins or leaves only
//! the topics it gains or loses move. The hash is FNV-1a with a 64-bit
//! finaliser: stable across builds and platforms, unlike `std`'s hasher.

use crate::{Topic, TopicKind};

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

fn fnv1a(mut hash: u64, bytes: &[u8]) -> u64 {
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(FNV_PRIME);
    }
    hash
}

/// splitmix64's finaliser: spreads FNV's weak low bits over the word.
fn mix(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A stable 64-bit hash of a topic.
pub fn topic_hash(tenant: &str, kind: TopicKind, name: &str) -> u64 {
    let mut h = fnv1a(FNV_OFFSET, tenant.as_bytes());
    h = fnv1a(h, &[0, kind as u8, 0]);
    mix(fnv1a(h, name.as_bytes()))
}

impl Topic {
    /// See [`topic_hash`].
    pub fn stable_hash(&self) -> u64 {
        topic_hash(&self.tenant, self.kind(), &self.name)
    }
}

/// The weight of `router` for a topic with hash `topic_hash`.
fn weight(router: &str, topic_hash: u64) -> u64 {
    mix(fnv1a(FNV_OFFSET ^ topic_hash, router.as_bytes()))
}

/// Index into `routers` of the owner of the topic with hash `topic_hash`;
/// `None` when there are no routers. Ties (astronomically unlikely) go to
/// the smaller id, so the answer never depends on the order of `routers`.
pub fn owner_index<S: AsRef<str>>(routers: &[S], topic_hash: u64) -> Option<usize> {
    pick(
        routers.iter().enumerate(),
        |(_, id)| id.as_ref(),
        topic_hash,
    )
    .map(|(index, _)| index)
}

/// The owner among `candidates`, each named by `id`; like [`owner_index`]
/// but over any iterator, so callers filtering a router set (by pool) need
/// not collect it first.
pub fn pick<T>(
    candidates: impl IntoIterator<Item = T>,
    id: impl Fn(&T) -> &str,
    topic_hash: u64,
) -> Option<T> {
    candidates.into_iter().max_by(|a, b| {
        let (a, b) = (id(a), id(b));
        weight(a, topic_hash)
            .cmp(&weight(b, topic_hash))
            .then_with(|| b.cmp(a))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routers(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("router-{i}")).collect()
    }

    #[test]
    fn no_routers_no_owner() {
        assert_eq!(owner_index::<String>(&[], 42), None);
    }

    #[test]
    fn single_router_owns_everything() {
        let one = routers(1);
        for i in 0..100 {
            let h = topic_hash("t", TopicKind::Group, &format!("g{i}"));
            assert_eq!(owner_index(&one, h), Some(0));
        }
    }

    #[test]
    fn hash_is_stable_across_builds() {
        // Literal values: changing the hash or the weight would move every
        // topic in a running cluster during a rolling upgrade, so a change
        // here must be deliberate.
        assert_eq!(
            topic_hash("default", TopicKind::Group, "g1"),
            0xbc97_2304_5872_11d2
        );
        assert_eq!(
            topic_hash("default", TopicKind::Client, "g1"),
            0x5fb7_965c_232c_5a40
        );
        assert_eq!(
            topic_hash("acme", TopicKind::User, "alice"),
            0x2dbf_3ea8_d474_450d
        );
        assert_eq!(
            topic_hash("t", TopicKind::ImUser, ""),
            0xe4d4_e20f_fea4_19f2
        );
        assert_ne!(
            topic_hash("a", TopicKind::Group, "bc"),
            topic_hash("ab", TopicKind::Group, "c")
        );
        // And the owners those hashes pick among three routers.
        let three = routers(3);
        let owner = |name: &str| {
            let h = topic_hash("t", TopicKind::Group, name);
            three[owner_index(&three, h).unwrap()].clone()
        };
        let owners: Vec<String> = (0..5).map(|i| owner(&format!("g{i}"))).collect();
        assert_eq!(
            owners,
            ["router-1", "router-1", "router-0", "router-1", "router-2"]
        );
        let h = topic_hash("default", TopicKind::Group, "g1");
        assert_eq!(three[owner_index(&three, h).unwrap()], "router-2");
    }

    #[test]
    fn order_of_routers_does_not_matter() {
        let mut set = routers(5);
        let owners: Vec<String> = (0..200)
            .map(|i| {
                let h = topic_hash("t", TopicKind::Group, &format!("g{i}"));
                set[owner_index(&set, h).unwrap()].clone()
            })
            .collect();
        set.reverse();
        for (i, expected) in owners.iter().enumerate() {
            let h = topic_hash("t", TopicKind::Group, &format!("g{i}"));
            assert_eq!(&set[owner_index(&set, h).unwrap()], expected);
        }
    }

    #[test]
    fn spread_is_roughly_even() {
        let set = routers(3);
        let mut counts = [0usize; 3];
        for i in 0..30_000 {
            let h = topic_hash("t", TopicKind::Group, &format!("group-{i}"));
            counts[owner_index(&set, h).unwrap()] += 1;
        }
        for count in counts {
            assert!((8_000..12_000).contains(&count), "{counts:?}");
        }
    }

    #[test]
    fn removing_a_router_moves_only_its_topics() {
        let four = routers(4);
        let three: Vec<String> = four[..3].to_vec();
        for i in 0..5_000 {
            let h = topic_hash("t", TopicKind::Client, &format!("c{i}"));
            let before = &four[owner_index(&four, h).unwrap()];
            let after = &three[owner_index(&three, h).unwrap()];
            if before != "router-3" {
                assert_eq!(before, after, "topic c{i} moved without cause");
            }
        }
    }
}
