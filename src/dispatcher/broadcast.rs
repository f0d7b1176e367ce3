//! [`BroadcastDispatcher`]: every event to every consumer, at the pace of the slowest one.

use std::fmt;

use super::{Dispatcher, Outbox};
use crate::error::SubscribeError;
use crate::subscription::{Selector, SubscribeOptions, SubscriptionId};

/// Sends every event to every consumer (GenStage's `BroadcastDispatcher`): each consumer gets
/// its own copy, cloned for all but the last receiver, which gets the event itself.
///
/// # Demand
///
/// An event can only go out when *every* consumer has demand for it, so the producer is asked
/// for the minimum of the consumers' demands, and only once: with consumers asking 10 and 20,
/// the producer sees a demand of 10, not 30. The slowest consumer sets the pace. What the
/// producer emits beyond that goes to its buffer and is sent as the consumers ask again.
/// Cancelling the slowest consumer can make the others' demand available at once (the cancel
/// then returns new upstream demand).
///
/// # Selectors
///
/// A consumer that subscribes with [`SubscribeOptions::selector`] receives only the events its
/// selector accepts. Rejected events do not use up its demand (GenStage refunds them with an
/// ask on the consumer's behalf; here the refund is immediate). A consumer whose share of a
/// dispatch is empty is sent nothing. An event that no consumer accepts is dropped and
/// reported as discarded (the producer counts and logs it). A selector made for another event
/// type makes the subscription fail with [`SubscribeError::InvalidOption`] naming `selector`.
///
/// # Late subscribers and the buffer
///
/// A consumer that subscribes late receives only events dispatched after it subscribed (events
/// still in the producer's buffer count: they have not been dispatched yet). Unlike GenStage
/// (whose stale `requested` count can strand buffered events after a cancellation), events the
/// producer buffered always go out first, in order, before anything emitted later: the
/// dispatcher keeps track of how many events it left in the buffer and asks for them before
/// asking the producer for new ones. The price is that, in rare interleavings (the last
/// consumer leaves before the producer delivered what it was asked for), the producer can be
/// asked again for events it still owes; the surplus is buffered, never lost.
///
/// Options other than `selector` (such as `partition`) are ignored.
///
/// # Examples
///
/// ```
/// use stageflow::dispatcher::{BroadcastDispatcher, Dispatcher, Outbox};
/// use stageflow::{SubscribeOptions, SubscriptionId};
///
/// let (all, even) = (SubscriptionId::unique(), SubscriptionId::unique());
/// let mut dispatcher = BroadcastDispatcher::new();
/// let d: &mut dyn Dispatcher<u32> = &mut dispatcher;
/// d.subscribe(all, &SubscribeOptions::new()).unwrap();
/// let only_even = SubscribeOptions::new().selector(|x: &u32| x % 2 == 0);
/// d.subscribe(even, &only_even).unwrap();
///
/// let mut sent = Vec::new();
/// let mut record = |sub, batch| sent.push((sub, batch));
/// let mut out = Outbox::new(&mut record);
/// assert_eq!(d.ask(all, 3, &mut out), 0); // `even` has not asked yet
/// assert_eq!(d.ask(even, 5, &mut out), 3); // the minimum, asked once
///
/// let mut events = vec![1, 2, 3, 4];
/// d.dispatch(&mut events, &mut out);
/// assert_eq!(events, vec![4]); // beyond the demand: for the producer's buffer
/// assert_eq!(out.upstream_demand(), 0); // `even`'s refunds do not lift the minimum yet
/// drop(out);
/// assert_eq!(sent, vec![(all, vec![1, 2, 3]), (even, vec![2])]);
/// ```
pub struct BroadcastDispatcher<T> {
    /// The consumers, in subscription order.
    entries: Vec<Entry<T>>,
    /// Demand every consumer has: the next `waiting` events go to all of them.
    waiting: usize,
    /// Demand handed to the producer (as `handle_demand`) whose events have not reached
    /// `dispatch` yet.
    requested: usize,
    /// Events left in the producer's buffer by `dispatch` (or owed when the last consumer
    /// left), not yet asked back. An estimate: the buffer may have dropped some.
    buffered: usize,
    /// Buffered events asked back (part of the demand returned last), not yet dispatched.
    flushing: usize,
    name: Option<String>,
}

struct Entry<T> {
    sub: SubscriptionId,
    /// This consumer's demand above `waiting`.
    extra: usize,
    selector: Option<Selector<T>>,
}

impl<T> BroadcastDispatcher<T> {
    /// A dispatcher with no consumers.
    pub fn new() -> BroadcastDispatcher<T> {
        BroadcastDispatcher {
            entries: Vec::new(),
            waiting: 0,
            requested: 0,
            buffered: 0,
            flushing: 0,
            name: None,
        }
    }

    /// The outstanding demand of one consumer: how many more events it can be sent (0 for an
    /// unknown one).
    pub fn demand_of(&self, sub: SubscriptionId) -> usize {
        self.entries
            .iter()
            .find(|e| e.sub == sub)
            .map_or(0, |e| self.waiting + e.extra)
    }

    /// How many consumers are subscribed.
    pub fn consumers(&self) -> usize {
        self.entries.len()
    }

    /// Moves the demand every consumer has into `waiting`.
    fn rebalance(&mut self) {
        let min = self.entries.iter().map(|e| e.extra).min().unwrap_or(0);
        if min > 0 {
            for e in &mut self.entries {
                e.extra -= min;
            }
            self.waiting = self.waiting.saturating_add(min);
        }
    }

    /// The demand to return for `waiting` events that nothing is on its way for yet: buffered
    /// events first (even if the producer still owes events, so that nothing it emits later
    /// overtakes them), then new events from the producer.
    fn upstream(&mut self) -> usize {
        // Events being flushed already cover part of `waiting`.
        let mut need = self.waiting.saturating_sub(self.flushing);
        let from_buffer = need.min(self.buffered);
        self.buffered -= from_buffer;
        self.flushing += from_buffer;
        need -= from_buffer;
        let from_producer = need.saturating_sub(self.requested);
        self.requested += from_producer;
        from_buffer + from_producer
    }

    /// Called on each new ask or subscription. The producer flushes the demand we return at
    /// once; if some of the buffered events we asked back never came, its buffer held fewer
    /// than we thought (its keep policy dropped some, or it had not yet emitted what it owed
    /// when its last consumer left), and it asked its stage for the rest instead.
    fn settle(&mut self) {
        if self.flushing > 0 {
            self.requested = self.requested.saturating_add(self.flushing);
            self.flushing = 0;
            self.buffered = 0;
        }
    }

    fn producer_name(&self) -> String {
        self.name.clone().unwrap_or_else(|| "?".to_owned())
    }
}

impl<T: Clone> BroadcastDispatcher<T> {
    /// Adds `chunk` to every consumer's batch, by its selector. Rejected events are refunded
    /// to the consumer's demand. Returns how many events no consumer accepted.
    fn share(&mut self, chunk: Vec<T>, batches: &mut [Vec<T>]) -> usize {
        let Some(last) = self.entries.len().checked_sub(1) else {
            return chunk.len();
        };
        if self.entries.iter().all(|e| e.selector.is_none()) {
            for batch in &mut batches[..last] {
                batch.extend_from_slice(&chunk);
            }
            if batches[last].is_empty() {
                batches[last] = chunk;
            } else {
                batches[last].extend(chunk);
            }
            return 0;
        }
        let mut refused = 0;
        let mut takers = Vec::with_capacity(self.entries.len());
        for event in chunk {
            takers.clear();
            for (i, e) in self.entries.iter_mut().enumerate() {
                match &e.selector {
                    Some(accepts) if !accepts(&event) => e.extra = e.extra.saturating_add(1),
                    _ => takers.push(i),
                }
            }
            // Clone for all but the last taker; move the event into the last.
            match takers.split_last() {
                None => refused += 1,
                Some((&owner, others)) => {
                    for &i in others {
                        batches[i].push(event.clone());
                    }
                    batches[owner].push(event);
                }
            }
        }
        refused
    }
}

impl<T> Default for BroadcastDispatcher<T> {
    fn default() -> Self {
        BroadcastDispatcher::new()
    }
}

impl<T> fmt::Debug for BroadcastDispatcher<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Consumers<'a, T>(&'a BroadcastDispatcher<T>);
        impl<T> fmt::Debug for Consumers<'_, T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_list()
                    .entries(
                        self.0
                            .entries
                            .iter()
                            .map(|e| (e.sub, self.0.waiting + e.extra, e.selector.is_some())),
                    )
                    .finish()
            }
        }
        f.debug_struct("BroadcastDispatcher")
            .field("consumers (sub, demand, selector)", &Consumers(self))
            .field("waiting", &self.waiting)
            .field("requested", &self.requested)
            .field("buffered", &self.buffered)
            .field("flushing", &self.flushing)
            .finish()
    }
}

impl<T: Clone + Send + 'static> Dispatcher<T> for BroadcastDispatcher<T> {
    fn attach(&mut self, stage: &str) {
        self.name = Some(stage.to_owned());
    }

    fn subscribe(
        &mut self,
        sub: SubscriptionId,
        options: &SubscribeOptions,
    ) -> Result<(), SubscribeError> {
        let selector = options.get_selector::<T>()?;
        if self.entries.iter().any(|e| e.sub == sub) {
            return Err(SubscribeError::Rejected {
                producer: self.producer_name(),
                message: format!("subscription {sub} is already subscribed"),
            });
        }
        self.settle();
        // The newcomer has no demand yet, so nothing can go to everyone: what everyone else
        // could take becomes their own extra demand again.
        for e in &mut self.entries {
            e.extra = e.extra.saturating_add(self.waiting);
        }
        self.waiting = 0;
        self.entries.push(Entry {
            sub,
            extra: 0,
            selector,
        });
        Ok(())
    }

    fn ready(&self) -> usize {
        if self.entries.is_empty() {
            0
        } else {
            self.waiting
        }
    }

    fn one_subscription_per_consumer(&self) -> bool {
        true
    }

    fn cancel(&mut self, sub: SubscriptionId, _out: &mut Outbox<'_, T>) -> usize {
        let Some(i) = self.entries.iter().position(|e| e.sub == sub) else {
            return 0;
        };
        self.entries.remove(i);
        if self.entries.is_empty() {
            // A producer without consumers buffers what it emits without dispatching it, so
            // what it still owes will be in its buffer: ask for it first when someone asks.
            self.buffered = self
                .buffered
                .saturating_add(self.requested)
                .saturating_add(self.flushing);
            self.requested = 0;
            self.flushing = 0;
            self.waiting = 0;
            return 0;
        }
        // The one that left may have been the slowest.
        self.rebalance();
        self.upstream()
    }

    fn ask(&mut self, sub: SubscriptionId, n: usize, _out: &mut Outbox<'_, T>) -> usize {
        let Some(entry) = self.entries.iter_mut().find(|e| e.sub == sub) else {
            return 0;
        };
        entry.extra = entry.extra.saturating_add(n);
        self.settle();
        self.rebalance();
        self.upstream()
    }

    fn dispatch(&mut self, events: &mut Vec<T>, out: &mut Outbox<'_, T>) {
        // Where the events come from: the buffered ones asked back come first.
        let from_buffer = events.len().min(self.flushing);
        self.flushing -= from_buffer;
        let fresh = events.len() - from_buffer;
        self.requested = self.requested.saturating_sub(fresh);

        let mut batches: Vec<Vec<T>> = self.entries.iter().map(|_| Vec::new()).collect();
        let mut refused = 0;
        // Refunded rejections can lift the minimum again: keep going while they do.
        while !events.is_empty() && self.waiting > 0 && !self.entries.is_empty() {
            let n = self.waiting.min(events.len());
            let chunk = if n == events.len() {
                std::mem::take(events)
            } else {
                events.drain(..n).collect()
            };
            self.waiting -= n;
            refused += self.share(chunk, &mut batches);
            self.rebalance();
        }
        self.buffered = self.buffered.saturating_add(events.len());

        if refused > 0 {
            out.discard(refused);
        }
        for (entry, batch) in self.entries.iter().zip(batches) {
            if !batch.is_empty() {
                out.send(entry.sub, batch);
            }
        }
        if self.waiting > 0 {
            let demand = self.upstream();
            if demand > 0 {
                out.ask_upstream(demand);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Sent = Vec<(SubscriptionId, Vec<u32>)>;

    fn subs(n: usize) -> Vec<SubscriptionId> {
        (0..n).map(|_| SubscriptionId::unique()).collect()
    }

    fn with(subs: &[SubscriptionId]) -> BroadcastDispatcher<u32> {
        let mut d = BroadcastDispatcher::new();
        for &s in subs {
            d.subscribe(s, &SubscribeOptions::new()).unwrap();
        }
        d
    }

    /// Runs `f` with a recording outbox; returns its result, the messages, the discards and
    /// the demand created.
    fn run<R>(
        d: &mut BroadcastDispatcher<u32>,
        f: impl FnOnce(&mut BroadcastDispatcher<u32>, &mut Outbox<'_, u32>) -> R,
    ) -> (R, Sent, usize, usize) {
        crate::dispatcher::record(d, f)
    }

    fn ask(d: &mut BroadcastDispatcher<u32>, sub: SubscriptionId, n: usize) -> usize {
        let (demand, sent, _, _) = run(d, |d, out| d.ask(sub, n, out));
        assert!(sent.is_empty(), "an ask sends nothing");
        demand
    }

    fn cancel(d: &mut BroadcastDispatcher<u32>, sub: SubscriptionId) -> usize {
        run(d, |d, out| d.cancel(sub, out)).0
    }

    /// Dispatches `events`; returns the messages and the leftovers.
    fn dispatch(d: &mut BroadcastDispatcher<u32>, events: &[u32]) -> (Sent, Vec<u32>) {
        let mut events = events.to_vec();
        let ((), sent, _, _) = run(d, |d, out| d.dispatch(&mut events, out));
        (sent, events)
    }

    #[test]
    fn minimum_demand_is_requested_once() {
        // BD "subscribes, asks and dispatches to multiple consumers": p1 asks 3 (0 upstream),
        // p2 asks 2 (2 upstream); both get [a, b]. p2 asks 2 (1 upstream); both get [c], and
        // d is a leftover.
        let s = subs(2);
        let mut d = with(&s);
        assert_eq!(ask(&mut d, s[0], 3), 0);
        assert_eq!(ask(&mut d, s[1], 2), 2);
        let (sent, left) = dispatch(&mut d, &[1, 2]);
        assert_eq!(sent, vec![(s[0], vec![1, 2]), (s[1], vec![1, 2])]);
        assert!(left.is_empty());
        assert_eq!(ask(&mut d, s[1], 2), 1);
        let (sent, left) = dispatch(&mut d, &[3, 4]);
        assert_eq!(sent, vec![(s[0], vec![3]), (s[1], vec![3])]);
        assert_eq!(left, vec![4]);
    }

    #[test]
    fn shared_demand_does_not_ask_twice() {
        // GS "with shared (broadcast) demand does not result in duplicate upstream demand":
        // max 10 and max 20 give a demand of 10, once, whatever the order of subscriptions.
        let s = subs(2);
        let mut d = with(&s[..1]);
        assert_eq!(ask(&mut d, s[0], 10), 10);
        d.subscribe(s[1], &SubscribeOptions::new()).unwrap();
        assert_eq!(ask(&mut d, s[1], 20), 0);

        let mut d = with(&s);
        assert_eq!(ask(&mut d, s[0], 10), 0);
        assert_eq!(ask(&mut d, s[1], 20), 10);
        assert_eq!((d.demand_of(s[0]), d.demand_of(s[1])), (10, 20));
    }

    #[test]
    fn every_consumer_gets_the_same_events_the_last_by_move() {
        let s = subs(3);
        let mut d = with(&s);
        for &x in &s {
            ask(&mut d, x, 100);
        }
        let mut events: Vec<u32> = Vec::with_capacity(16);
        events.extend(0..10);
        let ptr = events.as_ptr();
        let ((), sent, _, _) = run(&mut d, |d, out| d.dispatch(&mut events, out));
        assert_eq!(sent.len(), 3);
        for (i, (sub, batch)) in sent.iter().enumerate() {
            assert_eq!(*sub, s[i]);
            assert_eq!(*batch, (0..10).collect::<Vec<_>>());
        }
        assert_eq!(
            sent[2].1.as_ptr(),
            ptr,
            "the last consumer gets the batch itself"
        );
        assert_eq!(d.demand_of(s[0]), 90);
    }

    #[test]
    fn selector_rejections_are_refunded() {
        // BD "subscribing with a selector function": both ask 4; of four events p1 accepts 3
        // and p2 accepts 2. GenStage asks 1 for p1 and 2 for p2; here the refunds are
        // immediate and the one unit of new shared demand is asked upstream.
        let s = subs(2);
        let mut d = BroadcastDispatcher::new();
        let prefix = |p: &'static str| move |e: &&'static str| e.starts_with(p);
        d.subscribe(s[0], &SubscribeOptions::new().selector(prefix("pre")))
            .unwrap();
        d.subscribe(s[1], &SubscribeOptions::new().selector(prefix("pref")))
            .unwrap();
        let mut sent = Vec::new();
        {
            let mut record = |sub, batch| sent.push((sub, batch));
            let mut out = Outbox::new(&mut record);
            assert_eq!(d.ask(s[0], 4, &mut out), 0);
            assert_eq!(d.ask(s[1], 4, &mut out), 4);
            let mut events = vec!["pref", "prefix", "preview", "other"];
            d.dispatch(&mut events, &mut out);
            assert!(events.is_empty());
            assert_eq!(out.upstream_demand(), 1);
            assert_eq!(out.discarded(), 1, "no one took \"other\"");
        }
        assert_eq!(
            sent,
            vec![
                (s[0], vec!["pref", "prefix", "preview"]),
                (s[1], vec!["pref", "prefix"]),
            ]
        );
        // p1 was refunded 1, p2 2: demands 1 and 2.
        assert_eq!((d.demand_of(s[0]), d.demand_of(s[1])), (1, 2));
    }

    #[test]
    fn refunds_deliver_more_of_the_same_batch_in_one_message() {
        // Odd and even consumers, each asking 2. [1, 2] goes out; each rejected one, so both
        // are refunded 1 and 3 goes out too, in the same message. Then odd has no demand
        // left, and 4 must wait (like GenStage, an event goes out only when every consumer
        // has demand, whether or not its selector wants the event).
        let s = subs(2);
        let mut d = BroadcastDispatcher::new();
        d.subscribe(
            s[0],
            &SubscribeOptions::new().selector(|x: &u32| x % 2 == 1),
        )
        .unwrap();
        d.subscribe(
            s[1],
            &SubscribeOptions::new().selector(|x: &u32| x.is_multiple_of(2)),
        )
        .unwrap();
        ask(&mut d, s[0], 2);
        ask(&mut d, s[1], 2);
        let mut events = vec![1, 2, 3, 4, 5, 6];
        let ((), sent, _, demand) = run(&mut d, |d, out| d.dispatch(&mut events, out));
        assert_eq!(sent, vec![(s[0], vec![1, 3]), (s[1], vec![2])]);
        assert_eq!(events, vec![4, 5, 6]);
        assert_eq!(demand, 0);
        assert_eq!((d.demand_of(s[0]), d.demand_of(s[1])), (0, 1));
    }

    #[test]
    fn an_empty_share_sends_no_message() {
        let s = subs(2);
        let mut d = BroadcastDispatcher::new();
        d.subscribe(s[0], &SubscribeOptions::new()).unwrap();
        d.subscribe(s[1], &SubscribeOptions::new().selector(|x: &u32| *x > 100))
            .unwrap();
        ask(&mut d, s[0], 5);
        ask(&mut d, s[1], 5);
        let (sent, left) = dispatch(&mut d, &[1, 2, 3]);
        assert_eq!(sent, vec![(s[0], vec![1, 2, 3])]);
        assert!(left.is_empty());
    }

    #[test]
    fn selector_of_another_type_is_an_invalid_option() {
        let mut d = BroadcastDispatcher::<u32>::new();
        let e = d
            .subscribe(
                SubscriptionId::unique(),
                &SubscribeOptions::new().selector(|_: &String| true),
            )
            .unwrap_err();
        assert!(matches!(
            e,
            SubscribeError::InvalidOption {
                option: "selector",
                ..
            }
        ));
        assert_eq!(d.consumers(), 0);
    }

    #[test]
    fn the_same_subscription_twice_is_rejected() {
        let s = subs(1);
        let mut d = with(&s);
        d.attach("numbers");
        let e = d.subscribe(s[0], &SubscribeOptions::new()).unwrap_err();
        assert_eq!(
            e,
            SubscribeError::Rejected {
                producer: "numbers".into(),
                message: format!("subscription {} is already subscribed", s[0]),
            }
        );
    }

    #[test]
    fn cancelling_the_slowest_creates_demand() {
        // GS "cancels blocking subscriber": the others' demand is released at cancel.
        let s = subs(2);
        let mut d = with(&s);
        assert_eq!(ask(&mut d, s[0], 5), 0);
        assert_eq!(cancel(&mut d, s[1]), 5);
        let (sent, _) = dispatch(&mut d, &[1, 2, 3, 4, 5]);
        assert_eq!(sent, vec![(s[0], vec![1, 2, 3, 4, 5])]);
    }

    #[test]
    fn a_late_subscriber_gets_only_later_events() {
        let s = subs(2);
        let mut d = with(&s[..1]);
        assert_eq!(ask(&mut d, s[0], 4), 4);
        let (sent, _) = dispatch(&mut d, &[1, 2]);
        assert_eq!(sent, vec![(s[0], vec![1, 2])]);
        d.subscribe(s[1], &SubscribeOptions::new()).unwrap();
        // The newcomer has no demand: nothing can go to everyone.
        let (sent, left) = dispatch(&mut d, &[3, 4]);
        assert!(sent.is_empty());
        assert_eq!(left, vec![3, 4]);
        // Once it asks, the buffered events go to both, before anything new.
        assert_eq!(ask(&mut d, s[1], 4), 2);
        let (sent, _) = dispatch(&mut d, &[3, 4]);
        assert_eq!(sent, vec![(s[0], vec![3, 4]), (s[1], vec![3, 4])]);
    }

    #[test]
    fn no_event_is_stranded_after_a_cancel() {
        // Probe p13, fixed: a consumer asks 5 and cancels; the producer then emits 5 events,
        // which it buffers (no consumer: the dispatcher does not see them). A new consumer
        // asking 5 gets them: the demand returned covers the buffer.
        let s = subs(2);
        let mut d = with(&s[..1]);
        assert_eq!(ask(&mut d, s[0], 5), 5);
        assert_eq!(cancel(&mut d, s[0]), 0);
        d.subscribe(s[1], &SubscribeOptions::new()).unwrap();
        assert_eq!(
            ask(&mut d, s[1], 5),
            5,
            "the buffered events are asked back"
        );
        // The producer flushes its buffer: those five events come first.
        let (sent, left) = dispatch(&mut d, &[0, 1, 2, 3, 4]);
        assert_eq!(sent, vec![(s[1], vec![0, 1, 2, 3, 4])]);
        assert!(left.is_empty());
        // Newer events wait for the next ask.
        let (sent, left) = dispatch(&mut d, &[5]);
        assert!(sent.is_empty());
        assert_eq!(left, vec![5]);
        assert_eq!(ask(&mut d, s[1], 3), 3);
    }

    #[test]
    fn fresh_events_never_overtake_buffered_ones() {
        // A owes 10 from the producer when B subscribes; the producer delivers 4 of them
        // (all buffered, B has no demand), then both ask. The buffered 4 are asked back
        // first even though 6 more are still owed, and the 6, when they come, follow them.
        let s = subs(2);
        let mut d = with(&s[..1]);
        assert_eq!(ask(&mut d, s[0], 10), 10);
        d.subscribe(s[1], &SubscribeOptions::new()).unwrap();
        let (sent, left) = dispatch(&mut d, &[0, 1, 2, 3]);
        assert!(sent.is_empty());
        assert_eq!(left, vec![0, 1, 2, 3]);
        assert_eq!(
            ask(&mut d, s[1], 10),
            4,
            "the buffered events, and nothing new"
        );
        let (sent, _) = dispatch(&mut d, &[0, 1, 2, 3]);
        assert_eq!(
            sent,
            vec![(s[0], vec![0, 1, 2, 3]), (s[1], vec![0, 1, 2, 3])]
        );
        let (sent, left) = dispatch(&mut d, &[4, 5, 6, 7, 8, 9]);
        assert_eq!(sent.len(), 2);
        assert_eq!(sent[1], (s[1], vec![4, 5, 6, 7, 8, 9]));
        assert!(left.is_empty());
    }

    #[test]
    fn leftovers_are_asked_back_before_new_events() {
        // Events left for the buffer are what the next ask brings back, and events the
        // producer emits meanwhile (say, on a timer) queue behind them.
        let s = subs(1);
        let mut d = with(&s);
        assert_eq!(ask(&mut d, s[0], 2), 2);
        let (sent, left) = dispatch(&mut d, &[0, 1, 2, 3]);
        assert_eq!(sent, vec![(s[0], vec![0, 1])]);
        assert_eq!(left, vec![2, 3]);
        let (sent, left) = dispatch(&mut d, &[4]);
        assert!(sent.is_empty());
        assert_eq!(left, vec![4]);
        assert_eq!(ask(&mut d, s[0], 5), 5, "3 buffered, 2 new");
        let (sent, _) = dispatch(&mut d, &[2, 3, 4]);
        assert_eq!(sent, vec![(s[0], vec![2, 3, 4])]);
        let (sent, _) = dispatch(&mut d, &[5, 6]);
        assert_eq!(sent, vec![(s[0], vec![5, 6])]);
        assert_eq!(d.demand_of(s[0]), 0);
    }

    #[test]
    fn a_short_buffer_turns_into_producer_demand() {
        // The buffer dropped events the dispatcher counted on: the producer asked its stage
        // for the rest, and the next ask does not count them twice.
        let s = subs(1);
        let mut d = with(&s);
        assert_eq!(ask(&mut d, s[0], 2), 2);
        let (_, left) = dispatch(&mut d, &[0, 1, 2, 3, 4, 5]);
        assert_eq!(left.len(), 4);
        assert_eq!(ask(&mut d, s[0], 4), 4);
        // The buffer had only 1 event left; the producer was asked for 3 and emits 2 now.
        let (sent, _) = dispatch(&mut d, &[5]);
        assert_eq!(sent, vec![(s[0], vec![5])]);
        let (sent, _) = dispatch(&mut d, &[6, 7]);
        assert_eq!(sent, vec![(s[0], vec![6, 7])]);
        // One event is still owed (and covers one unit of the old demand): an ask of 3 is
        // asked upstream as 3, not 4.
        assert_eq!(ask(&mut d, s[0], 3), 3);
        assert_eq!(d.demand_of(s[0]), 4);
        assert_eq!((d.requested, d.flushing, d.buffered), (4, 0, 0));
    }

    #[test]
    fn no_consumers_means_everything_is_left() {
        let mut d = BroadcastDispatcher::<u32>::new();
        let (sent, left) = dispatch(&mut d, &[1, 2, 3]);
        assert!(sent.is_empty());
        assert_eq!(left, vec![1, 2, 3]);
    }
}
