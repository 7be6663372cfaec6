//! `ResponseCache`: an exact-match cache of whole responses for deterministic requests
//! (temperature 0, or a fixed seed), with a time-to-live and a least-recently-used capacity.
//! A plain state machine: time is passed in, keys are whatever identifies a request (the
//! server uses its canonical body), values whatever it replays (events or a response).

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::time::Duration;

/// Hit and miss counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    /// Entries dropped for capacity.
    pub evictions: u64,
    /// Entries dropped because their time to live ran out.
    pub expirations: u64,
}

struct Entry<V> {
    value: V,
    expires: Duration,
    stamp: u64,
}

/// TTL + LRU map from request key to response.
pub struct ResponseCache<K, V> {
    capacity: usize,
    ttl: Duration,
    map: HashMap<K, Entry<V>>,
    /// Keys by last use, oldest first.
    lru: BTreeMap<u64, K>,
    clock: u64,
    stats: CacheStats,
}

/// Whether a request's output is a function of its body alone: greedy decoding, or sampling
/// with a seed the client chose (not the server's default).
pub fn is_deterministic(temperature: f32, seed_given: bool) -> bool {
    temperature == 0.0 || seed_given
}

impl<K: Eq + Hash + Clone, V: Clone> ResponseCache<K, V> {
    /// A cache of at most `capacity` entries, each valid for `ttl` after insertion;
    /// capacity 0 disables it.
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        ResponseCache {
            capacity,
            ttl,
            map: HashMap::new(),
            lru: BTreeMap::new(),
            clock: 0,
            stats: CacheStats::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn stats(&self) -> CacheStats {
        self.stats
    }

    fn touch(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    /// The cached response for `key` if present and not expired at `now` (counted as a hit,
    /// and made most recently used); otherwise a miss.
    pub fn get(&mut self, key: &K, now: Duration) -> Option<V> {
        let expired = match self.map.get(key) {
            None => {
                self.stats.misses += 1;
                return None;
            }
            Some(e) => now >= e.expires,
        };
        if expired {
            self.remove(key);
            self.stats.expirations += 1;
            self.stats.misses += 1;
            return None;
        }
        let stamp = self.touch();
        let e = self.map.get_mut(key)?;
        self.lru.remove(&e.stamp);
        e.stamp = stamp;
        self.lru.insert(stamp, key.clone());
        self.stats.hits += 1;
        Some(e.value.clone())
    }

    /// Stores `value` for `key` (replacing any older one), evicting expired entries and then
    /// the least recently used ones beyond capacity.
    pub fn insert(&mut self, key: K, value: V, now: Duration) {
        if self.capacity == 0 {
            return;
        }
        self.remove(&key);
        self.purge_expired(now);
        while self.map.len() >= self.capacity {
            let Some((_, old)) = self.lru.pop_first() else {
                break;
            };
            self.map.remove(&old);
            self.stats.evictions += 1;
        }
        let stamp = self.touch();
        self.lru.insert(stamp, key.clone());
        self.map.insert(
            key,
            Entry {
                value,
                expires: now.saturating_add(self.ttl),
                stamp,
            },
        );
    }

    /// Drops every entry expired at `now`.
    pub fn purge_expired(&mut self, now: Duration) {
        let dead: Vec<K> = self
            .map
            .iter()
            .filter(|(_, e)| now >= e.expires)
            .map(|(k, _)| k.clone())
            .collect();
        for k in dead {
            self.remove(&k);
            self.stats.expirations += 1;
        }
    }

    fn remove(&mut self, key: &K) {
        if let Some(e) = self.map.remove(key) {
            self.lru.remove(&e.stamp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Get(u8),
        Insert(u8, u32),
        Wait(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u8..8).prop_map(Op::Get),
            (0u8..8, any::<u32>()).prop_map(|(k, v)| Op::Insert(k, v)),
            (0u64..30).prop_map(Op::Wait),
        ]
    }

    proptest! {
        /// Against a naive model (a list in recency order with insertion times): same answers,
        /// never over capacity, never an expired value, counters add up.
        #[test]
        fn cache_matches_a_naive_model(
            capacity in 0usize..5,
            ttl in 1u64..40,
            ops in proptest::collection::vec(op(), 1..100),
        ) {
            let ttl_d = Duration::from_millis(ttl);
            let mut c: ResponseCache<u8, u32> = ResponseCache::new(capacity, ttl_d);
            // (key, value, inserted at), most recently used last.
            let mut model: Vec<(u8, u32, u64)> = Vec::new();
            let mut now = 0u64;
            let (mut gets, mut hits) = (0u64, 0u64);
            for op in ops {
                let t = Duration::from_millis(now);
                match op {
                    Op::Get(k) => {
                        gets += 1;
                        let want = match model.iter().position(|e| e.0 == k) {
                            Some(i) if now < model[i].2 + ttl => {
                                let e = model.remove(i);
                                model.push(e);
                                Some(e.1)
                            }
                            Some(i) => {
                                model.remove(i);
                                None
                            }
                            None => None,
                        };
                        hits += u64::from(want.is_some());
                        prop_assert_eq!(c.get(&k, t), want);
                    }
                    Op::Insert(k, v) => {
                        c.insert(k, v, t);
                        if capacity > 0 {
                            model.retain(|e| e.0 != k && now < e.2 + ttl);
                            while model.len() >= capacity {
                                model.remove(0);
                            }
                            model.push((k, v, now));
                        }
                    }
                    Op::Wait(dt) => now += dt,
                }
                prop_assert!(c.len() <= capacity);
                prop_assert_eq!(c.len(), model.len());
            }
            let s = c.stats();
            prop_assert_eq!(s.hits, hits);
            prop_assert_eq!(s.hits + s.misses, gets);
        }
    }

    #[test]
    fn deterministic_requests_are_greedy_or_seeded() {
        assert!(is_deterministic(0.0, false));
        assert!(is_deterministic(0.7, true));
        assert!(!is_deterministic(0.7, false));
    }
}
