//! [`DemandDispatcher`]: each event to one consumer, highest outstanding demand first.

use log::warn;

use super::{Dispatcher, Outbox};
use crate::error::SubscribeError;
use crate::subscription::{SubscribeOptions, SubscriptionId};

/// Sends each event to exactly one consumer: the one with the most outstanding demand gets the
/// next events, in one message as large as its demand allows (ties go to the consumer that
/// reached that demand first); then the next, one message per consumer per dispatch. What no
/// consumer has demand for is left for the producer's buffer.
///
/// When a consumer leaves, its unmet demand becomes *pending*: it was already requested from the
/// producer, so the next asks of other consumers are reduced by it instead of asking twice.
///
/// Like GenStage, it expects every consumer to ask at most the first ask it ever saw (the
/// common `max_demand`), and logs a warning when one asks more; the ask is still honoured.
/// (A subscription with [adaptive demand](crate::SubscribeOptions::adaptive_demand) asks
/// more on purpose: up to its limit, no warning.)
///
/// # Examples
///
/// ```
/// use stageflow::dispatcher::{DemandDispatcher, Dispatcher, Outbox};
/// use stageflow::{SubscribeOptions, SubscriptionId};
///
/// let (a, b) = (SubscriptionId::unique(), SubscriptionId::unique());
/// let mut dispatcher = DemandDispatcher::new();
/// let d: &mut dyn Dispatcher<u32> = &mut dispatcher;
/// d.subscribe(a, &SubscribeOptions::new()).unwrap();
/// d.subscribe(b, &SubscribeOptions::new()).unwrap();
/// let mut sent = Vec::new();
/// let mut record = |sub, batch| sent.push((sub, batch));
/// let mut out = Outbox::new(&mut record);
/// assert_eq!(d.ask(a, 2, &mut out), 2);
/// assert_eq!(d.ask(b, 3, &mut out), 3);
///
/// let mut events = (0..10).collect();
/// d.dispatch(&mut events, &mut out);
/// drop(out);
/// assert_eq!(sent, vec![(b, vec![0, 1, 2]), (a, vec![3, 4])]);
/// assert_eq!(events, vec![5, 6, 7, 8, 9]); // leftovers, for the buffer
/// ```
#[derive(Debug, Default)]
pub struct DemandDispatcher {
    /// (demand, subscription), sorted by demand, highest first; stable among equals.
    entries: Vec<(usize, SubscriptionId)>,
    /// The sum of the entries' demands.
    total: usize,
    pending: usize,
    max_demand: Option<usize>,
    /// The largest limit of a subscription with adaptive demand.
    adaptive_limit: usize,
    /// Shuffle the entries on the next dispatch (once).
    shuffle: bool,
    name: Option<String>,
}

/// How many consumers a dispatcher passes one at a time when a consumer's demand moves it
/// (a swap with each, as cheap as it gets for a few); past that, a binary search and one
/// shift of memory.
const FEW: usize = 16;

impl DemandDispatcher {
    /// A dispatcher with no consumers.
    pub fn new() -> DemandDispatcher {
        DemandDispatcher::default()
    }

    /// Shuffles the consumers on the first dispatch, so that consumers that subscribed at the
    /// same time and asked the same do not always get the first events in subscription order
    /// (GenStage's `shuffle_demands_on_first_dispatch`, which Broadway's producers use). Like
    /// GenStage, the shuffled order is not re-sorted by demand for that one dispatch. Defaults
    /// to off.
    ///
    /// # Examples
    ///
    /// ```
    /// let dispatcher = stageflow::dispatcher::DemandDispatcher::new().shuffle_demands_on_first_dispatch();
    /// # let _ = dispatcher;
    /// ```
    pub fn shuffle_demands_on_first_dispatch(mut self) -> DemandDispatcher {
        self.shuffle = true;
        self
    }

    /// Demand already requested upstream for consumers that have left.
    pub fn pending(&self) -> usize {
        self.pending
    }

    /// [`Dispatcher::ask`], which never uses its outbox here: for the runtime's direct call.
    pub(crate) fn record_ask(&mut self, sub: SubscriptionId, n: usize) -> usize {
        let max = *self.max_demand.get_or_insert(n);
        if n > max && n > self.adaptive_limit {
            warn!(
                "stage {}: DemandDispatcher expects a maximum demand of {max}; using different \
                 maximum demands will overload greedy consumers; got demand for {n} events from \
                 subscription {sub}",
                self.name.as_deref().unwrap_or("?"),
            );
        }
        let Some(i) = self.entries.iter().position(|&(_, s)| s == sub) else {
            return 0;
        };
        // Raise its demand and move it up past entries with strictly lower demand: where
        // removing it and inserting it before the first strictly lower entry would put it
        // (found by a binary search of the sorted entries above it, reached in one shift).
        let before = self.entries[i].0;
        let demand = before.saturating_add(n);
        self.entries[i].0 = demand;
        self.total = self.total.saturating_add(demand - before);
        if i <= FEW {
            let mut i = i;
            while i > 0 && self.entries[i - 1].0 < demand {
                self.entries.swap(i - 1, i);
                i -= 1;
            }
        } else {
            let to = self.entries[..i].partition_point(|&(d, _)| d >= demand);
            self.entries[to..=i].rotate_right(1);
        }
        let covered = self.pending.min(n);
        self.pending -= covered;
        n - covered
    }

    /// If the consumer with the most demand can take all `n` events, records that it does
    /// and returns its subscription: what [`Dispatcher::dispatch`] would do with the batch,
    /// for the runtime to send it without an outbox. `None` (nothing recorded) otherwise, and
    /// before the first dispatch of one that shuffles.
    #[inline]
    pub(crate) fn take_whole(&mut self, n: usize) -> Option<SubscriptionId> {
        if self.shuffle || n == 0 {
            return None;
        }
        let &(demand, sub) = self.entries.first()?;
        if demand < n {
            return None;
        }
        self.entries[0].0 = demand - n;
        self.total = self.total.saturating_sub(n);
        self.sink_first();
        Some(sub)
    }

    /// Moves the first entry, whose demand just fell, down past entries with demand at least
    /// as high: where removing it and inserting it before the first strictly lower entry would.
    /// Among [`FEW`] consumers or fewer, one swap at a time; past that the rest are sorted,
    /// so where it goes is a binary search and getting it there one shift of the entries it
    /// passes (with 50 consumers of equal demand, one served sinks past all the others).
    #[inline]
    fn sink_first(&mut self) {
        let entries = &mut self.entries[..];
        if entries.len() <= FEW + 1 {
            let mut i = 0;
            while i + 1 < entries.len() && entries[i + 1].0 >= entries[i].0 {
                entries.swap(i, i + 1);
                i += 1;
            }
            return;
        }
        let demand = entries[0].0;
        let to = entries[1..].partition_point(|&(d, _)| d >= demand);
        entries[..=to].rotate_left(1);
    }

    fn remove(&mut self, sub: SubscriptionId) -> Option<usize> {
        let i = self.entries.iter().position(|&(_, s)| s == sub)?;
        let demand = self.entries.remove(i).0;
        self.total = self.total.saturating_sub(demand);
        Some(demand)
    }

    /// Shuffles the entries (Fisher–Yates, with a small xorshift generator seeded from the
    /// clock: a fair order, not a cryptographic one).
    fn shuffle_entries(&mut self) {
        let mut seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0x9E37_79B9_7F4A_7C15, |d| d.as_nanos() as u64)
            | 1;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for i in (1..self.entries.len()).rev() {
            let j = (next() % (i as u64 + 1)) as usize;
            self.entries.swap(i, j);
        }
    }

    /// A dispatch walking the shuffled entries in order, each taking what its demand allows.
    fn dispatch_shuffled<T>(&mut self, events: &mut Vec<T>, out: &mut Outbox<'_, T>) {
        for entry in &mut self.entries {
            if events.is_empty() {
                break;
            }
            let k = entry.0.min(events.len());
            if k == 0 {
                // GenStage stops at the first entry with no demand.
                break;
            }
            let batch = if k == events.len() {
                std::mem::take(events)
            } else {
                events.drain(..k).collect()
            };
            entry.0 -= k;
            self.total = self.total.saturating_sub(k);
            out.send(entry.1, batch);
        }
        // Back to sorted order (stable): highest demand first.
        self.entries
            .sort_by_key(|&(demand, _)| std::cmp::Reverse(demand));
    }

    /// The outstanding demand of one consumer (0 for an unknown one).
    pub fn demand_of(&self, sub: SubscriptionId) -> usize {
        self.entries
            .iter()
            .find(|&&(_, s)| s == sub)
            .map_or(0, |&(d, _)| d)
    }
}

impl<T: Send> Dispatcher<T> for DemandDispatcher {
    fn into_inline(self) -> Result<DemandDispatcher, Self> {
        Ok(self)
    }

    fn attach(&mut self, stage: &str) {
        self.name = Some(stage.to_owned());
    }

    fn subscribe(
        &mut self,
        sub: SubscriptionId,
        options: &SubscribeOptions,
    ) -> Result<(), SubscribeError> {
        if let Some(limit) = options.get_adaptive_demand() {
            // Its asks grow up to its limit on purpose: no warning below it.
            self.adaptive_limit = self.adaptive_limit.max(limit);
        }
        self.entries.push((0, sub));
        Ok(())
    }

    fn cancel(&mut self, sub: SubscriptionId, _out: &mut Outbox<'_, T>) -> usize {
        if let Some(demand) = self.remove(sub) {
            self.pending = self.pending.saturating_add(demand);
        }
        0
    }

    fn ready(&self) -> usize {
        self.total
    }

    #[inline]
    fn ask(&mut self, sub: SubscriptionId, n: usize, _out: &mut Outbox<'_, T>) -> usize {
        self.record_ask(sub, n)
    }

    fn dispatch(&mut self, events: &mut Vec<T>, out: &mut Outbox<'_, T>) {
        if self.shuffle && !events.is_empty() && !self.entries.is_empty() {
            self.shuffle = false;
            self.shuffle_entries();
            self.dispatch_shuffled(events, out);
        }
        while !events.is_empty() {
            let Some(&(demand, sub)) = self.entries.first() else {
                break;
            };
            if demand == 0 {
                break;
            }
            let k = demand.min(events.len());
            let batch = if k == events.len() {
                std::mem::take(events)
            } else {
                events.drain(..k).collect()
            };
            // Lower its demand and move it down.
            self.entries[0].0 = demand - k;
            self.total = self.total.saturating_sub(k);
            self.sink_first();
            out.send(sub, batch);
        }
        self.pending = self.pending.saturating_sub(events.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subs(n: usize) -> Vec<SubscriptionId> {
        (0..n).map(|_| SubscriptionId::next()).collect()
    }

    fn order(d: &DemandDispatcher) -> Vec<(usize, SubscriptionId)> {
        d.entries.clone()
    }

    fn ask(d: &mut DemandDispatcher, sub: SubscriptionId, n: usize) -> usize {
        let mut ignore = |_, _: Vec<u32>| {};
        Dispatcher::<u32>::ask(d, sub, n, &mut Outbox::new(&mut ignore))
    }

    fn cancel(d: &mut DemandDispatcher, sub: SubscriptionId) -> usize {
        let mut ignore = |_, _: Vec<u32>| {};
        Dispatcher::<u32>::cancel(d, sub, &mut Outbox::new(&mut ignore))
    }

    fn dispatch(
        d: &mut DemandDispatcher,
        events: &mut Vec<u32>,
    ) -> Vec<(SubscriptionId, Vec<u32>)> {
        crate::dispatcher::record(d, |d, out| d.dispatch(events, out)).1
    }

    #[test]
    fn highest_demand_first_ties_to_the_earlier() {
        let s = subs(3);
        let mut d = DemandDispatcher::new();
        for &x in &s {
            Dispatcher::<u32>::subscribe(&mut d, x, &SubscribeOptions::new()).unwrap();
        }
        ask(&mut d, s[0], 4);
        ask(&mut d, s[1], 2);
        ask(&mut d, s[2], 3);
        assert_eq!(order(&d), vec![(4, s[0]), (3, s[2]), (2, s[1])]);
        ask(&mut d, s[2], 2);
        assert_eq!(order(&d), vec![(5, s[2]), (4, s[0]), (2, s[1])]);
    }

    #[test]
    fn one_message_per_consumer_and_leftovers() {
        let s = subs(2);
        let mut d = DemandDispatcher::new();
        for &x in &s {
            Dispatcher::<u32>::subscribe(&mut d, x, &SubscribeOptions::new()).unwrap();
        }
        ask(&mut d, s[0], 3);
        ask(&mut d, s[1], 3);
        let mut ev: Vec<u32> = (0..8).collect();
        let out = dispatch(&mut d, &mut ev);
        assert_eq!(out, vec![(s[0], vec![0, 1, 2]), (s[1], vec![3, 4, 5])]);
        assert_eq!(ev, vec![6, 7]);
    }

    #[test]
    fn cancelled_demand_becomes_pending() {
        // Ask 10, cancel, a new consumer asks 5: upstream demand 0, pending 5.
        let s = subs(2);
        let mut d = DemandDispatcher::new();
        Dispatcher::<u32>::subscribe(&mut d, s[0], &SubscribeOptions::new()).unwrap();
        assert_eq!(ask(&mut d, s[0], 10), 10);
        assert_eq!(cancel(&mut d, s[0]), 0);
        Dispatcher::<u32>::subscribe(&mut d, s[1], &SubscribeOptions::new()).unwrap();
        assert_eq!(ask(&mut d, s[1], 5), 0);
        assert_eq!(d.pending(), 5);
        assert_eq!(ask(&mut d, s[1], 10), 5);
        assert_eq!(d.pending(), 0);
    }

    #[test]
    fn huge_demands_saturate_instead_of_overflowing() {
        let s = subs(3);
        let mut d = DemandDispatcher::new();
        for &x in &s {
            Dispatcher::<u32>::subscribe(&mut d, x, &SubscribeOptions::new()).unwrap();
        }
        let huge = usize::MAX - 1;
        assert_eq!(ask(&mut d, s[0], huge), huge);
        assert_eq!(ask(&mut d, s[1], huge), huge);
        assert_eq!(Dispatcher::<u32>::ready(&d), usize::MAX);
        cancel(&mut d, s[0]);
        cancel(&mut d, s[1]);
        assert_eq!(d.pending(), usize::MAX);
        assert_eq!(ask(&mut d, s[2], 10), 0, "covered by what is pending");
        let mut ev: Vec<u32> = (0..20).collect();
        let out = dispatch(&mut d, &mut ev);
        assert_eq!(out, vec![(s[2], (0..10).collect())]);
    }

    #[test]
    fn ready_is_the_sum_of_the_demands() {
        let s = subs(2);
        let mut d = DemandDispatcher::new();
        for &x in &s {
            Dispatcher::<u32>::subscribe(&mut d, x, &SubscribeOptions::new()).unwrap();
        }
        ask(&mut d, s[0], 4);
        ask(&mut d, s[1], 3);
        assert_eq!(Dispatcher::<u32>::ready(&d), 7);
        dispatch(&mut d, &mut (0..5).collect());
        assert_eq!(Dispatcher::<u32>::ready(&d), 2);
        cancel(&mut d, s[1]);
        assert_eq!(Dispatcher::<u32>::ready(&d), d.demand_of(s[0]));
    }

    #[test]
    fn shuffle_on_first_dispatch_gives_anyone_the_first_events() {
        // Two consumers with equal demand: without the shuffle the first always wins; with
        // it, over 64 fresh dispatchers both must win at least once (odds of failing: 2^-63).
        let mut winners = std::collections::HashSet::new();
        for _ in 0..64 {
            let s = subs(2);
            let mut d = DemandDispatcher::new().shuffle_demands_on_first_dispatch();
            for &x in &s {
                Dispatcher::<u32>::subscribe(&mut d, x, &SubscribeOptions::new()).unwrap();
            }
            ask(&mut d, s[0], 5);
            ask(&mut d, s[1], 5);
            let out = dispatch(&mut d, &mut (0..3).collect());
            winners.insert(s.iter().position(|&x| x == out[0].0).unwrap());
            // Only the first dispatch is shuffled: the order is sorted again after it.
            let out = dispatch(&mut d, &mut (0..7).collect());
            assert_eq!(out.len(), 2);
            assert_eq!(Dispatcher::<u32>::ready(&d), 0);
        }
        assert_eq!(winners.len(), 2, "the shuffle never changed the order");
    }

    #[test]
    fn whole_batch_moves_without_copy_when_demand_covers_it() {
        let s = subs(1);
        let mut d = DemandDispatcher::new();
        Dispatcher::<u32>::subscribe(&mut d, s[0], &SubscribeOptions::new()).unwrap();
        ask(&mut d, s[0], 100);
        let mut ev: Vec<u32> = Vec::with_capacity(64);
        ev.extend(0..10);
        let ptr = ev.as_ptr();
        let got = dispatch(&mut d, &mut ev);
        assert_eq!(got[0].1.as_ptr(), ptr);
        assert_eq!(d.demand_of(s[0]), 90);
    }

    /// GenStage's own bookkeeping: remove the entry, re-insert it before the first entry with
    /// strictly lower demand.
    fn reference_insert(
        entries: &mut Vec<(usize, SubscriptionId)>,
        demand: usize,
        sub: SubscriptionId,
    ) {
        let at = entries
            .iter()
            .position(|&(d, _)| d < demand)
            .unwrap_or(entries.len());
        entries.insert(at, (demand, sub));
    }

    proptest::proptest! {
        #[test]
        fn in_place_moves_match_genstage_remove_and_insert(
            consumers in proptest::sample::select(vec![4usize, 24]),
            ops in proptest::collection::vec((0usize..24, 1usize..8, proptest::bool::ANY), 1..200)
        ) {
            // 4 consumers move by swaps, 24 by a search and a shift (more than `FEW`).
            let s = subs(consumers);
            let mut d = DemandDispatcher::new();
            let mut model: Vec<(usize, SubscriptionId)> = Vec::new();
            for &x in &s {
                Dispatcher::<u32>::subscribe(&mut d, x, &SubscribeOptions::new()).unwrap();
                model.push((0, x));
            }
            for (who, n, is_ask) in ops {
                let who = who % consumers;
                if is_ask {
                    ask(&mut d, s[who], n);
                    let i = model.iter().position(|&(_, x)| x == s[who]).unwrap();
                    let (demand, sub) = model.remove(i);
                    reference_insert(&mut model, demand + n, sub);
                } else {
                    let mut events: Vec<u32> = (0..n as u32).collect();
                    dispatch(&mut d, &mut events);
                    let mut left = n;
                    while left > 0 && model[0].0 > 0 {
                        let (demand, sub) = model.remove(0);
                        let k = demand.min(left);
                        left -= k;
                        reference_insert(&mut model, demand - k, sub);
                    }
                }
                proptest::prop_assert_eq!(&order(&d), &model);
            }
        }
    }
}
