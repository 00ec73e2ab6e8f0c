//! The in-memory counters: one slot per (account, metric, label), holding the hour it counts
//! for and a count, both atomics.
//!
//! Counting is `fetch_add` on the slot. A hot path (the token API's per-key reads) holds a
//! [`Counter`], a handle to its slot, so it takes no lock and looks nothing up: one clock read,
//! one atomic load to check the hour, one atomic add. Other paths, which wait on WeChat or the
//! database anyway, find their slot in a 32-way sharded map whose shard lock is held for one
//! hash lookup.
//!
//! When a count arrives for a later hour than its slot's, the slot moves to the new hour and
//! what it held for the old one goes into the `rotated` list, so each hour's counts stay
//! apart. A count racing that move within nanoseconds may land in the neighbouring hour;
//! no count is ever lost or counted twice: every increment lands in an atomic that exactly one
//! `swap(0)` takes out (the flush's or the move's).

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::calendar::hour_start;
use crate::metric::Metric;

const SHARDS: usize = 32;

/// The label an open-ended label becomes past the per-account cap.
pub const OTHER_LABEL: &str = "other";

/// What a slot counts.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    pub account_id: Arc<str>,
    pub metric: Metric,
    pub label: Arc<str>,
}

pub(crate) struct Slot {
    key: Key,
    /// Unix ms of the start of the hour `value` counts for.
    hour: AtomicI64,
    value: AtomicU64,
}

impl Slot {
    fn new(key: Key, hour: i64) -> Self {
        Self {
            key,
            hour: AtomicI64::new(hour),
            value: AtomicU64::new(0),
        }
    }

    fn add(&self, registry: &Registry, now: i64, n: u64) {
        let hour = hour_start(now);
        let current = self.hour.load(Ordering::Acquire);
        if current != hour
            && self
                .hour
                .compare_exchange(current, hour, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            let old = self.value.swap(0, Ordering::AcqRel);
            if old > 0 {
                registry.rotated(self.key.clone(), current, old);
            }
        }
        self.value.fetch_add(n, Ordering::Relaxed);
    }

    /// What the slot holds, taken out: its hour and count.
    fn take(&self) -> (i64, u64) {
        let hour = self.hour.load(Ordering::Acquire);
        (hour, self.value.swap(0, Ordering::AcqRel))
    }
}

/// Counts taken out of memory, by key and hour.
pub(crate) type Drained = HashMap<(Key, i64), u64>;

/// The open-ended labels each (account, metric) has used.
type SeenLabels = HashMap<(Arc<str>, Metric), HashSet<Arc<str>>>;

/// Every slot, sharded, and the counts moved out of slots by a change of hour.
pub(crate) struct Registry {
    shards: Vec<Mutex<HashMap<Key, Arc<Slot>>>>,
    rotated: Mutex<Drained>,
    /// Open-ended labels seen per (account, metric), to cap them.
    labels: Mutex<SeenLabels>,
    max_labels: usize,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Registry {
    pub(crate) fn new(max_labels: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            rotated: Mutex::new(HashMap::new()),
            labels: Mutex::new(HashMap::new()),
            max_labels,
        }
    }

    fn shard(&self, key: &Key) -> &Mutex<HashMap<Key, Arc<Slot>>> {
        let mut hasher = DefaultHasher::new();
        key.hash(&mut hasher);
        &self.shards[(hasher.finish() as usize) % SHARDS]
    }

    fn rotated(&self, key: Key, hour: i64, n: u64) {
        *lock(&self.rotated).entry((key, hour)).or_default() += n;
    }

    /// `label`, or [`OTHER_LABEL`] when the metric's labels are open-ended and the account
    /// already has `max_labels` others.
    fn bounded_label(&self, account_id: &Arc<str>, metric: Metric, label: &str) -> Arc<str> {
        if !metric.open_labels() {
            return Arc::from(label);
        }
        let mut labels = lock(&self.labels);
        let seen = labels.entry((account_id.clone(), metric)).or_default();
        if let Some(known) = seen.get(label) {
            return known.clone();
        }
        if seen.len() >= self.max_labels {
            return Arc::from(OTHER_LABEL);
        }
        let label: Arc<str> = Arc::from(label);
        seen.insert(label.clone());
        label
    }

    /// The slot for `(account, metric, label)`, created if new.
    pub(crate) fn slot(
        &self,
        account_id: &str,
        metric: Metric,
        label: &str,
        now: i64,
    ) -> Arc<Slot> {
        let account_id: Arc<str> = Arc::from(account_id);
        let label = self.bounded_label(&account_id, metric, label);
        let key = Key {
            account_id,
            metric,
            label,
        };
        let mut shard = lock(self.shard(&key));
        shard
            .entry(key.clone())
            .or_insert_with(|| Arc::new(Slot::new(key, hour_start(now))))
            .clone()
    }

    pub(crate) fn add(&self, account_id: &str, metric: Metric, label: &str, now: i64, n: u64) {
        self.slot(account_id, metric, label, now).add(self, now, n);
    }

    /// Takes every count out of memory. Slots nobody holds a handle to and that had nothing
    /// to give are forgotten, so memory follows what is in use.
    pub(crate) fn drain(&self) -> Drained {
        let mut out = std::mem::take(&mut *lock(&self.rotated));
        for shard in &self.shards {
            let mut shard = lock(shard);
            shard.retain(|key, slot| {
                let (hour, n) = slot.take();
                if n > 0 {
                    *out.entry((key.clone(), hour)).or_default() += n;
                }
                // Under the shard lock nobody can take a new handle meanwhile; a count = 1
                // means the map's is the only one.
                n > 0 || Arc::strong_count(slot) > 1
            });
        }
        out
    }
}

/// A handle to one counter, for hot paths: [`Counter::add`] takes no lock. Cheap to clone.
/// A counter of disabled statistics counts nothing.
#[derive(Clone, Default)]
pub struct Counter {
    pub(crate) slot: Option<(Arc<Slot>, Arc<crate::Inner>)>,
}

impl std::fmt::Debug for Counter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.slot {
            Some((slot, _)) => f
                .debug_struct("Counter")
                .field("metric", &slot.key.metric)
                .finish_non_exhaustive(),
            None => f.write_str("Counter(disabled)"),
        }
    }
}

impl Counter {
    /// Adds `n` in the current hour.
    pub fn add(&self, n: u64) {
        if let Some((slot, inner)) = &self.slot {
            slot.add(&inner.registry, inner.clock.now_ms(), n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calendar::HOUR_MS;

    fn total(drained: &Drained) -> u64 {
        drained.values().sum()
    }

    #[test]
    fn a_change_of_hour_keeps_each_hours_counts_apart() {
        let registry = Registry::new(8);
        registry.add("a", Metric::TokenReads, "k", 10, 2);
        registry.add("a", Metric::TokenReads, "k", HOUR_MS + 5, 3);
        registry.add("a", Metric::TokenReads, "k", HOUR_MS + 6, 1);
        let drained = registry.drain();
        let of = |hour| {
            drained
                .iter()
                .filter(|((_, h), _)| *h == hour)
                .map(|(_, n)| *n)
                .sum::<u64>()
        };
        assert_eq!((of(0), of(HOUR_MS)), (2, 4));
        assert!(registry.drain().is_empty(), "taken out once");
    }

    #[test]
    fn concurrent_counts_are_all_taken_out_exactly_once() {
        let registry = Arc::new(Registry::new(8));
        let mut drained = Drained::new();
        std::thread::scope(|scope| {
            for t in 0..4 {
                let registry = registry.clone();
                scope.spawn(move || {
                    for i in 0..50_000u64 {
                        // Hours change under the writers' feet.
                        let now = i64::try_from(i / 10_000).unwrap() * HOUR_MS;
                        registry.add("a", Metric::ProxyCalls, "p", now, 1);
                        if t == 0 && i % 7_000 == 0 {
                            registry.add("b", Metric::PushReceived, "", now, 1);
                        }
                    }
                });
            }
            for _ in 0..50 {
                for (key, n) in registry.drain() {
                    *drained.entry(key).or_default() += n;
                }
            }
        });
        for (key, n) in registry.drain() {
            *drained.entry(key).or_default() += n;
        }
        assert_eq!(total(&drained), 4 * 50_000 + 8);
    }

    #[test]
    fn open_labels_are_capped_per_account() {
        let registry = Registry::new(2);
        for path in ["p1", "p2", "p3", "p1", "p4"] {
            registry.add("a", Metric::ProxyCalls, path, 0, 1);
        }
        registry.add("b", Metric::ProxyCalls, "p3", 0, 1);
        let mut labels: Vec<(String, String, u64)> = registry
            .drain()
            .into_iter()
            .map(|((k, _), n)| (k.account_id.to_string(), k.label.to_string(), n))
            .collect();
        labels.sort();
        assert_eq!(
            labels,
            [
                ("a".into(), "other".into(), 2),
                ("a".into(), "p1".into(), 2),
                ("a".into(), "p2".into(), 1),
                ("b".into(), "p3".into(), 1),
            ]
        );
    }

    #[test]
    fn idle_slots_without_handles_are_forgotten() {
        let registry = Registry::new(8);
        let held = registry.slot("a", Metric::TokenReads, "k1", 0);
        registry.add("a", Metric::TokenReads, "k2", 0, 1);
        registry.drain();
        registry.drain();
        let left: usize = registry.shards.iter().map(|s| lock(s).len()).sum();
        assert_eq!(left, 1, "only the held slot stays");
        drop(held);
    }
}
