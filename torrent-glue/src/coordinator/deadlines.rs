//! The coordinator's deadline index: peers and identities kept in maps that remember which
//! entries were touched, so that the next deadline is found in O(log n) and
//! [`handle_timeout`](super::Coordinator::handle_timeout) visits only the entries that are due.
//!
//! Every mutable access to an entry (`get_mut`, `insert`, `remove`, `entry`) marks its key
//! dirty; a dirty entry's deadlines are recomputed from its state the next time the index is
//! read. The deadlines are therefore a pure function of the entries' state, exactly as the
//! scan over every entry that the index replaces computed them.

use std::cell::RefCell;
use std::collections::hash_map::Entry;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::hash::Hash;
use std::time::{Duration, Instant};

use super::state::has_open;
use super::state::{Class, Identity, Peer};

/// What an entry's deadlines are for; each lane is indexed separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lane {
    /// When [`poll_timeout`](super::Coordinator::poll_timeout) must wake the caller.
    Wake = 0,
    /// When [`handle_timeout`](super::Coordinator::handle_timeout) has something to do with
    /// the entry (for an identity, an idle deadline counts even without an open channel).
    Visit = 1,
    /// From when an identity may be reclaimed (its last connection left one grace ago).
    Reclaim = 2,
}

const LANES: usize = 3;

/// The configured durations the deadlines depend on (fixed for a coordinator's lifetime).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    /// [`LivenessConfig::idle_close_after`](crate::LivenessConfig::idle_close_after).
    pub(crate) idle_close_after: Option<Duration>,
    /// [`LivenessConfig::response_timeout`](crate::LivenessConfig::response_timeout): the grace
    /// after an identity's last connection before it may be reclaimed.
    pub(crate) reclaim_grace: Duration,
}

/// An entry whose state carries deadlines.
pub(crate) trait Deadlines {
    /// The entry's earliest deadline in each [`Lane`].
    fn deadlines(&self, timing: &Timing) -> [Option<Instant>; LANES];
}

impl Deadlines for Peer {
    fn deadlines(&self, _: &Timing) -> [Option<Instant>; LANES] {
        let pending = match self.class {
            Class::Pending { deadline } => Some(deadline),
            _ => None,
        };
        let gate = self.gate.controller().and_then(|c| c.next_deadline());
        let next = [pending, gate, self.stop_retry_at]
            .into_iter()
            .flatten()
            .min();
        [next, next, None]
    }
}

impl Deadlines for Identity {
    fn deadlines(&self, timing: &Timing) -> [Option<Instant>; LANES] {
        let idle_at = match (self.idle_since, timing.idle_close_after) {
            (Some(since), Some(after)) => since.checked_add(after),
            _ => None,
        };
        let next = self.next_deadline();
        let wake = if has_open(self) {
            min(next, idle_at)
        } else {
            next
        };
        let reclaim = self
            .departed_at
            .and_then(|at| at.checked_add(timing.reclaim_grace));
        [wake, min(next, idle_at), reclaim]
    }
}

fn min(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    [a, b].into_iter().flatten().min()
}

/// The index proper: each key's indexed deadlines, ordered per lane, and the keys whose
/// entries changed since.
#[derive(Debug)]
struct Index<K> {
    current: HashMap<K, [Option<Instant>; LANES]>,
    order: [BTreeSet<(Instant, K)>; LANES],
    dirty: HashSet<K>,
}

/// A walk over the due keys of a [`Timed`] map, in key order ([`Timed::next_due`]).
#[derive(Debug)]
pub(crate) struct DueWalk<K> {
    lane: Lane,
    now: Instant,
    /// The last key returned.
    after: Option<K>,
    /// The due keys after `after`.
    pending: BTreeSet<K>,
}

#[cfg(test)]
impl<K: Copy + Ord> DueWalk<K> {
    /// The brute-force walk the index replaced: the smallest of `keys` after the last key
    /// returned, due or not.
    pub(crate) fn scan_next(&mut self, keys: impl Iterator<Item = K>) -> Option<K> {
        let after = self.after;
        let next = keys.filter(|k| after.is_none_or(|a| *k > a)).min()?;
        self.after = Some(next);
        Some(next)
    }
}

/// A map of entries with deadlines, and their index.
#[derive(Debug)]
pub(crate) struct Timed<K, V> {
    map: HashMap<K, V>,
    timing: Timing,
    /// Interior mutability so that [`poll_timeout`](super::Coordinator::poll_timeout) (`&self`)
    /// can bring the index up to date.
    index: RefCell<Index<K>>,
}

impl<K: Copy + Ord + Hash, V: Deadlines> Timed<K, V> {
    pub(crate) fn new(timing: Timing) -> Self {
        Self {
            map: HashMap::new(),
            timing,
            index: RefCell::new(Index {
                current: HashMap::new(),
                order: Default::default(),
                dirty: HashSet::new(),
            }),
        }
    }

    pub(crate) fn get(&self, key: &K) -> Option<&V> {
        self.map.get(key)
    }

    /// The entry, marked for re-indexing.
    pub(crate) fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        let v = self.map.get_mut(key)?;
        self.index.get_mut().dirty.insert(*key);
        Some(v)
    }

    pub(crate) fn contains_key(&self, key: &K) -> bool {
        self.map.contains_key(key)
    }

    pub(crate) fn insert(&mut self, key: K, value: V) -> Option<V> {
        self.index.get_mut().dirty.insert(key);
        self.map.insert(key, value)
    }

    pub(crate) fn remove(&mut self, key: &K) -> Option<V> {
        let v = self.map.remove(key)?;
        self.index.get_mut().dirty.insert(*key);
        Some(v)
    }

    /// The map entry, marked for re-indexing.
    pub(crate) fn entry(&mut self, key: K) -> Entry<'_, K, V> {
        self.index.get_mut().dirty.insert(key);
        self.map.entry(key)
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    #[cfg(test)]
    pub(crate) fn keys(&self) -> impl Iterator<Item = &K> {
        self.map.keys()
    }

    pub(crate) fn values(&self) -> impl Iterator<Item = &V> {
        self.map.values()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.map.iter()
    }

    /// Re-indexes the entries touched since the last call: O(touched × log n).
    fn refresh(&self) {
        self.refresh_observing(|_, _| {});
    }

    /// [`refresh`](Self::refresh), telling `seen` each touched key and its new deadlines.
    fn refresh_observing(&self, mut seen: impl FnMut(K, &[Option<Instant>; LANES])) {
        let mut index = self.index.borrow_mut();
        let index = &mut *index;
        for key in index.dirty.drain() {
            let new = self
                .map
                .get(&key)
                .map_or([None; LANES], |v| v.deadlines(&self.timing));
            seen(key, &new);
            let old = if new == [None; LANES] {
                index.current.remove(&key)
            } else {
                index.current.insert(key, new)
            }
            .unwrap_or([None; LANES]);
            for lane in 0..LANES {
                if old[lane] == new[lane] {
                    continue;
                }
                if let Some(at) = old[lane] {
                    index.order[lane].remove(&(at, key));
                }
                if let Some(at) = new[lane] {
                    index.order[lane].insert((at, key));
                }
            }
        }
    }

    /// The earliest deadline of any entry in `lane`.
    pub(crate) fn earliest(&self, lane: Lane) -> Option<Instant> {
        self.refresh();
        let index = self.index.borrow();
        index.order[lane as usize].first().map(|(at, _)| *at)
    }

    /// Starts a walk over the keys whose deadline in `lane` is at or before `now`, in
    /// increasing key order (see [`next_due`](Self::next_due)).
    pub(crate) fn walk_due(&self, lane: Lane, now: Instant) -> DueWalk<K> {
        DueWalk {
            lane,
            now,
            after: None,
            pending: self.due(lane, now).into_iter().collect(),
        }
    }

    /// The walk's next key: the smallest key after the last one returned whose deadline is
    /// due, with the index brought up to date first. Visiting keys this way sees every change
    /// the visits before made, as a scan of every key in order would: a key the visits made due
    /// is visited if it comes later, one they made not due is skipped. O(log n) per key due or
    /// touched.
    pub(crate) fn next_due(&self, walk: &mut DueWalk<K>) -> Option<K> {
        let DueWalk {
            lane,
            now,
            after,
            pending,
        } = walk;
        self.refresh_observing(|key, deadlines| {
            if after.is_some_and(|a| key <= a) {
                return;
            }
            if deadlines[*lane as usize].is_some_and(|at| at <= *now) {
                pending.insert(key);
            } else {
                pending.remove(&key);
            }
        });
        let next = pending.pop_first()?;
        *after = Some(next);
        Some(next)
    }

    /// Every key whose deadline in `lane` is at or before `now`, in increasing order.
    pub(crate) fn due(&self, lane: Lane, now: Instant) -> Vec<K> {
        self.refresh();
        let index = self.index.borrow();
        let mut keys: Vec<K> = index.order[lane as usize]
            .iter()
            .take_while(|(at, _)| *at <= now)
            .map(|(_, k)| *k)
            .collect();
        keys.sort_unstable();
        keys
    }

    /// Whether the index agrees with a fresh computation from every entry.
    #[cfg(test)]
    pub(crate) fn index_is_consistent(&self) -> bool {
        self.refresh();
        let index = self.index.borrow();
        let mut expected: [BTreeSet<(Instant, K)>; LANES] = Default::default();
        for (k, v) in &self.map {
            for (lane, at) in v.deadlines(&self.timing).into_iter().enumerate() {
                if let Some(at) = at {
                    expected[lane].insert((at, *k));
                }
            }
        }
        expected == index.order
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An entry with one deadline, the same in every lane.
    struct At(Option<Instant>);

    impl Deadlines for At {
        fn deadlines(&self, _: &Timing) -> [Option<Instant>; LANES] {
            [self.0; LANES]
        }
    }

    fn map(now: Instant, due: &[(u32, bool)]) -> Timed<u32, At> {
        let mut m = Timed::new(Timing {
            idle_close_after: None,
            reclaim_grace: Duration::ZERO,
        });
        for (k, is_due) in due {
            let at = if *is_due {
                now
            } else {
                now + Duration::from_secs(1)
            };
            m.insert(*k, At(Some(at)));
        }
        m
    }

    /// A visit that makes a later key due gets it visited, one that makes a later key not due
    /// gets it skipped, and a key before the walk's position is not visited again, as in a scan
    /// of every key in order.
    #[test]
    fn a_walk_sees_what_earlier_visits_changed() {
        let now = Instant::now();
        let mut m = map(
            now,
            &[(0, false), (1, true), (2, true), (3, false), (4, true)],
        );
        let mut walk = m.walk_due(Lane::Visit, now);
        assert_eq!(m.next_due(&mut walk), Some(1));
        m.get_mut(&0).unwrap().0 = Some(now);
        m.get_mut(&2).unwrap().0 = None;
        m.get_mut(&3).unwrap().0 = Some(now);
        assert_eq!(m.next_due(&mut walk), Some(3));
        m.remove(&4);
        assert_eq!(m.next_due(&mut walk), None);
        assert!(m.index_is_consistent());
        assert_eq!(m.earliest(Lane::Wake), Some(now));
        assert_eq!(m.due(Lane::Reclaim, now), vec![0, 1, 3]);
    }

    /// The earliest deadline follows inserts, changes and removals.
    #[test]
    fn the_earliest_deadline_follows_every_change() {
        let now = Instant::now();
        let later = now + Duration::from_secs(5);
        let mut m = map(now, &[(7, false)]);
        assert_eq!(m.earliest(Lane::Wake), Some(now + Duration::from_secs(1)));
        m.insert(3, At(Some(later)));
        m.entry(9).or_insert(At(Some(now)));
        assert_eq!(m.earliest(Lane::Wake), Some(now));
        m.get_mut(&9).unwrap().0 = None;
        m.remove(&7);
        assert_eq!(m.earliest(Lane::Wake), Some(later));
        m.remove(&3);
        assert_eq!(m.earliest(Lane::Wake), None);
        assert!(m.index_is_consistent());
    }
}
