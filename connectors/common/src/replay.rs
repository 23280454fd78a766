//! The sources' guard against replays: the ids a source's topic received most recently, so that a record a
//! crashed predecessor already wrote (Fluvio acknowledged it, the Kafka offset or Pub/Sub ack was lost with
//! the process) is not written a second time at a new offset. See docs/decisions.md, "Sources skip their own
//! replays".

use std::collections::{HashSet, VecDeque};

/// The last `capacity` distinct keys seen, oldest evicted first. Empty keys are never held.
#[derive(Debug, Clone, Default)]
pub struct RecentKeys {
    capacity: usize,
    order: VecDeque<String>,
    held: HashSet<String>,
}

impl RecentKeys {
    /// An empty set that holds at most `capacity` keys (0: holds nothing, so nothing is ever skipped).
    pub fn new(capacity: usize) -> Self {
        Self { capacity, order: VecDeque::new(), held: HashSet::new() }
    }

    /// Whether `key` is among the recent keys (never for an empty key).
    pub fn contains(&self, key: &str) -> bool {
        !key.is_empty() && self.held.contains(key)
    }

    /// Remembers `key` as the newest (an empty key, or a key already held, changes nothing), evicting the
    /// oldest beyond the capacity.
    pub fn insert(&mut self, key: &str) {
        if key.is_empty() || self.capacity == 0 || self.held.contains(key) {
            return;
        }
        if self.order.len() == self.capacity {
            if let Some(oldest) = self.order.pop_front() {
                self.held.remove(&oldest);
            }
        }
        self.order.push_back(key.to_string());
        self.held.insert(key.to_string());
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

    #[test]
    fn keys_are_held_until_the_capacity_evicts_the_oldest() {
        let mut keys = RecentKeys::new(3);
        for key in ["a", "b", "c"] {
            assert!(!keys.contains(key));
            keys.insert(key);
        }
        assert!(["a", "b", "c"].iter().all(|k| keys.contains(k)));
        keys.insert("d");
        assert!(!keys.contains("a"), "the oldest is evicted");
        assert!(["b", "c", "d"].iter().all(|k| keys.contains(k)));
        assert_eq!(keys.len(), 3);
    }

    #[test]
    fn a_key_inserted_again_keeps_its_place_and_is_not_held_twice() {
        let mut keys = RecentKeys::new(2);
        keys.insert("a");
        keys.insert("a");
        assert_eq!(keys.len(), 1);
        keys.insert("b");
        keys.insert("c");
        assert!(!keys.contains("a") && keys.contains("b") && keys.contains("c"));
    }

    #[test]
    fn empty_keys_and_a_zero_capacity_never_match() {
        let mut keys = RecentKeys::new(4);
        keys.insert("");
        assert!(!keys.contains("") && keys.is_empty());
        let mut off = RecentKeys::new(0);
        off.insert("a");
        assert!(!off.contains("a") && off.is_empty());
    }
}
