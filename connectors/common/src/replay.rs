//! The sources' guard against replays: the ids a source's topic received most recently, so that a record a
//! crashed predecessor already wrote (Fluvio acknowledged it, the Kafka offset or Pub/Sub ack was lost with
//! the process) is not written a second time at a new offset. See docs/decisions.md, "Sources skip their own
//! replays".

use std::collections::{HashSet, VecDeque};

/// The key the guard holds for a record: a 128-bit hash of its id and its whole value, so that only a true
/// replay (the same input converted again: the same bytes) matches. An id alone would skip, and so lose, a
/// different image that reuses an id (a producer's own event id, a Kafka position of a topic deleted and
/// created again). A hash, so every key takes 16 bytes whatever the id (a producer's id may be MBs). `None`
/// for an empty id (never skipped).
pub fn replay_key(id: &str, value: &[u8]) -> Option<u128> {
    if id.is_empty() {
        return None;
    }
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    hasher.update(&(id.len() as u64).to_le_bytes());
    hasher.update(id.as_bytes());
    hasher.update(value);
    Some(hasher.digest128())
}

/// The key of an id alone (`None` when empty), for ids that name one immutable image.
pub fn id_key(id: &str) -> Option<u128> {
    (!id.is_empty()).then(|| xxhash_rust::xxh3::xxh3_128(id.as_bytes()))
}

/// The last `capacity` distinct keys seen ([`replay_key`]s, 16 bytes each), oldest evicted first.
#[derive(Debug, Clone, Default)]
pub struct RecentKeys {
    capacity: usize,
    order: VecDeque<u128>,
    held: HashSet<u128>,
}

impl RecentKeys {
    /// An empty set that holds at most `capacity` keys (0: holds nothing, so nothing is ever skipped).
    pub fn new(capacity: usize) -> Self {
        Self { capacity, order: VecDeque::new(), held: HashSet::new() }
    }

    /// Whether `key` is among the recent keys (never for `None`, an empty id).
    pub fn contains(&self, key: Option<u128>) -> bool {
        key.is_some_and(|key| self.held.contains(&key))
    }

    /// Remembers `key` as the newest (`None`, or a key already held, changes nothing), evicting the oldest
    /// beyond the capacity.
    pub fn insert(&mut self, key: Option<u128>) {
        let Some(key) = key else { return };
        if self.capacity == 0 || self.held.contains(&key) {
            return;
        }
        if self.order.len() == self.capacity {
            if let Some(oldest) = self.order.pop_front() {
                self.held.remove(&oldest);
            }
        }
        self.order.push_back(key);
        self.held.insert(key);
    }

    /// Keys held.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

/// What became of a send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Sent {
    /// Produced to the topic (acknowledged at the next [`crate::SourceOutput::acknowledge`]).
    Produced,
    /// Not produced: the topic received this id recently (a replay); the input may be committed all the same.
    Replay,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(id: &str) -> Option<u128> {
        id_key(id)
    }

    #[test]
    fn keys_are_held_until_the_capacity_evicts_the_oldest() {
        let mut keys = RecentKeys::new(3);
        for key in ["a", "b", "c"] {
            assert!(!keys.contains(k(key)));
            keys.insert(k(key));
        }
        assert!(["a", "b", "c"].iter().all(|key| keys.contains(k(key))));
        keys.insert(k("d"));
        assert!(!keys.contains(k("a")), "the oldest is evicted");
        assert!(["b", "c", "d"].iter().all(|key| keys.contains(k(key))));
        assert_eq!(keys.len(), 3);
    }

    #[test]
    fn a_key_inserted_again_keeps_its_place_and_is_not_held_twice() {
        let mut keys = RecentKeys::new(2);
        keys.insert(k("a"));
        keys.insert(k("a"));
        assert_eq!(keys.len(), 1);
        keys.insert(k("b"));
        keys.insert(k("c"));
        assert!(!keys.contains(k("a")) && keys.contains(k("b")) && keys.contains(k("c")));
    }

    #[test]
    fn the_replay_key_matches_only_the_same_id_with_the_same_value() {
        assert_eq!(replay_key("a", b"image 1"), replay_key("a", b"image 1"));
        assert_ne!(replay_key("a", b"image 1"), replay_key("a", b"image 2"), "another image under a reused id");
        assert_ne!(replay_key("a", b"image 1"), replay_key("b", b"image 1"));
        assert_ne!(replay_key("a\u{0}b", b"c"), replay_key("a", b"\x00bc"), "the id's length is hashed");
        assert_eq!(replay_key("", b"image 1"), None, "no id: never skipped");
        let mut keys = RecentKeys::new(4);
        keys.insert(replay_key("kafka://t/0/5", b"{\"old\"}"));
        assert!(keys.contains(replay_key("kafka://t/0/5", b"{\"old\"}")));
        assert!(!keys.contains(replay_key("kafka://t/0/5", b"{\"new\"}")));
    }

    #[test]
    fn empty_keys_and_a_zero_capacity_never_match() {
        let mut keys = RecentKeys::new(4);
        keys.insert(k(""));
        assert!(!keys.contains(k("")) && keys.is_empty());
        let mut off = RecentKeys::new(0);
        off.insert(k("a"));
        assert!(!off.contains(k("a")) && off.is_empty());
    }
}
