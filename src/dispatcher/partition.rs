//! [`PartitionDispatcher`]: each event to the one consumer of the partition its hash picks.

use std::collections::{HashMap, VecDeque};
use std::fmt;

use log::{error, warn};

use super::{Dispatcher, Outbox};
use crate::error::{BuildError, SubscribeError};
use crate::subscription::{Partition, SubscribeOptions, SubscriptionId};

/// Splits events among a fixed set of partitions (GenStage's `PartitionDispatcher`): a hash
/// function maps each event to a partition, and each partition has at most one consumer, which
/// names it with [`SubscribeOptions::partition`]. Events with the same key go to the same
/// consumer, in the order they were emitted.
///
/// Make one from a count with [`PartitionDispatcher::new`] (partitions `0..n`, the hash returns
/// an index) or from names with [`PartitionDispatcher::named`].
///
/// # Demand
///
/// The producer is asked for the sum of the consumers' asks (less demand already requested for
/// consumers that left, as with [`DemandDispatcher`](super::DemandDispatcher)). A dispatch
/// hashes events only while that upstream demand lasts; the rest stay with the producer, in
/// its buffer. A hashed event goes to its partition's consumer if it has demand; otherwise it
/// waits in that partition's queue, inside the dispatcher, until the consumer asks (queued
/// events go first, in one message) or until someone subscribes to that partition.
///
/// An event the hash maps to no partition (`None`) is dropped without using any demand, and
/// reported as discarded (the producer counts and logs it); the dispatcher asks the producer
/// for one more event in its place. (GenStage only leaves the demand unused, which stalls a
/// producer that emits exactly what it is asked for: it has met its demand, and the consumers
/// wait for events that the dispatcher still expects.) A hash that returns a partition that
/// does not exist is a bug: the event is dropped the same way and an error naming the stage is
/// logged (GenStage crashes the producer).
///
/// When a consumer cancels, the events queued for its partition are dropped (and counted as
/// discarded), and as many new events are asked from the producer; its unmet demand was
/// already requested and is not asked again.
///
/// # Memory
///
/// Upstream demand is shared: the producer is asked for events as consumers ask, whatever
/// partition the events then fall into. If keys are skewed (one partition gets most events) or
/// one consumer is slow, its partition's queue grows with every event the others' demand pulls
/// in, without limit by default, and outside the producer's `buffer_size`. Bound it with
/// [`max_queue`](PartitionDispatcher::max_queue), which drops the oldest queued events;
/// [`queued`](PartitionDispatcher::queued) tells how many are held.
///
/// # Finishing
///
/// A producer that [finishes](crate::Context::finish) delivers its own buffer and the
/// partitions' queues (it waits while [`Dispatcher::held`] is not 0) before its consumers see it
/// end: nothing is lost on a normal finish. A producer that stops counts what its queues held
/// as discarded.
///
/// # Errors
///
/// Subscribing fails, and the producer keeps running, when the `partition` option is missing
/// or names no partition ([`SubscribeError::InvalidOption`] naming `partition`), or when the
/// partition already has a consumer ([`SubscribeError::Rejected`]).
///
/// # Examples
///
/// ```
/// use stageflow::dispatcher::{Dispatcher, Outbox, PartitionDispatcher};
/// use stageflow::{SubscribeOptions, SubscriptionId};
///
/// // Even numbers to partition 0, odd ones to 1.
/// let mut dispatcher = PartitionDispatcher::new(2, |x: &u32| Some(u64::from(x % 2)))?;
/// let d: &mut dyn Dispatcher<u32> = &mut dispatcher;
/// let (even, odd) = (SubscriptionId::unique(), SubscriptionId::unique());
/// d.subscribe(even, &SubscribeOptions::new().partition(0u64))?;
/// d.subscribe(odd, &SubscribeOptions::new().partition(1u64))?;
///
/// let mut sent = Vec::new();
/// let mut record = |sub, batch| sent.push((sub, batch));
/// let mut out = Outbox::new(&mut record);
/// assert_eq!(d.ask(even, 10, &mut out), 10);
/// let mut events = vec![1, 2, 3, 4];
/// d.dispatch(&mut events, &mut out);
/// // `odd` has not asked: its events wait in the dispatcher until it does.
/// assert_eq!(d.ask(odd, 1, &mut out), 1);
/// drop(out);
/// assert_eq!(sent, vec![(even, vec![2, 4]), (odd, vec![1])]);
/// assert_eq!(dispatcher.queued(), 1); // 3, for `odd`
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct PartitionDispatcher<T> {
    /// Partition `i`'s name.
    names: Vec<Partition>,
    /// Name to index.
    index: HashMap<Partition, usize>,
    hash: Hash<T>,
    slots: Vec<Slot<T>>,
    /// Demand requested upstream whose events have not been hashed yet.
    waiting: usize,
    /// Unmet demand of consumers that left: already requested, so not asked again.
    pending: usize,
    max_queue: Option<usize>,
    name: Option<String>,
}

/// A hash to partition numbers.
type IndexHash<T> = Box<dyn Fn(&T) -> Option<u64> + Send>;
/// A hash to partition names.
type NameHash<T> = Box<dyn Fn(&T) -> Option<Partition> + Send>;

enum Hash<T> {
    Index(IndexHash<T>),
    Named(NameHash<T>),
}

/// One partition: its consumer, and either its demand or its queue (never both).
struct Slot<T> {
    sub: Option<SubscriptionId>,
    demand: usize,
    queue: VecDeque<T>,
}

/// Where the hash sends one event.
enum Route {
    To(usize),
    Nowhere,
    Unknown(Partition),
}

impl<T> PartitionDispatcher<T> {
    /// A dispatcher with `partitions` partitions, numbered from 0, and a `hash` that maps
    /// each event to a partition number, or to `None` to drop it.
    ///
    /// # Errors
    ///
    /// [`BuildError::InvalidOption`] naming `partitions` if `partitions` is 0.
    pub fn new(
        partitions: usize,
        hash: impl Fn(&T) -> Option<u64> + Send + 'static,
    ) -> Result<PartitionDispatcher<T>, BuildError> {
        if partitions == 0 {
            return Err(BuildError::InvalidOption {
                option: "partitions",
                message: "expected partitions to be at least 1, got 0".into(),
            });
        }
        let names = (0..partitions as u64).map(Partition::Index).collect();
        Ok(PartitionDispatcher::with(
            names,
            Hash::Index(Box::new(hash)),
        ))
    }

    /// A dispatcher with one partition for each of `names` (such as `["eu", "us"]`), and a
    /// `hash` that maps each event to one of them, or to `None` to drop it.
    ///
    /// The hash runs once per event: to avoid allocating a name each time, make the
    /// [`Partition`] values once and return clones of them (a clone of a name is a reference
    /// count increment).
    ///
    /// # Errors
    ///
    /// [`BuildError::InvalidOption`] naming `partitions` if `names` is empty or names a
    /// partition twice.
    ///
    /// # Examples
    ///
    /// ```
    /// use stageflow::dispatcher::PartitionDispatcher;
    /// use stageflow::Partition;
    ///
    /// struct Order {
    ///     region: String,
    /// }
    ///
    /// let (eu, us) = (Partition::from("eu"), Partition::from("us"));
    /// let dispatcher = PartitionDispatcher::named(["eu", "us"], move |o: &Order| {
    ///     match o.region.as_str() {
    ///         "eu" => Some(eu.clone()),
    ///         "us" => Some(us.clone()),
    ///         _ => None, // dropped, and counted as discarded
    ///     }
    /// })?;
    /// assert_eq!(dispatcher.partitions(), ["eu".into(), "us".into()]);
    /// # Ok::<(), stageflow::BuildError>(())
    /// ```
    pub fn named<P: Into<Partition>>(
        names: impl IntoIterator<Item = P>,
        hash: impl Fn(&T) -> Option<Partition> + Send + 'static,
    ) -> Result<PartitionDispatcher<T>, BuildError> {
        let names: Vec<Partition> = names.into_iter().map(Into::into).collect();
        if names.is_empty() {
            return Err(BuildError::InvalidOption {
                option: "partitions",
                message: "expected at least one partition name, got none".into(),
            });
        }
        for (i, name) in names.iter().enumerate() {
            if names[..i].contains(name) {
                return Err(BuildError::InvalidOption {
                    option: "partitions",
                    message: format!("expected partition names to be unique, got {name} twice"),
                });
            }
        }
        Ok(PartitionDispatcher::with(
            names,
            Hash::Named(Box::new(hash)),
        ))
    }

    fn with(names: Vec<Partition>, hash: Hash<T>) -> PartitionDispatcher<T> {
        let index = names.iter().cloned().zip(0..).collect();
        let slots = names
            .iter()
            .map(|_| Slot {
                sub: None,
                demand: 0,
                queue: VecDeque::new(),
            })
            .collect();
        PartitionDispatcher {
            names,
            index,
            hash,
            slots,
            waiting: 0,
            pending: 0,
            max_queue: None,
            name: None,
        }
    }

    /// Bounds each partition's queue to `max` events: when more wait for a partition, the
    /// oldest are dropped, counted as discarded by the producer, and a warning names the
    /// partition. With 0, events that cannot be sent at once are dropped. Defaults to
    /// unbounded.
    pub fn max_queue(mut self, max: usize) -> PartitionDispatcher<T> {
        self.max_queue = Some(max);
        self
    }

    /// The partitions, in order (index `i` of a dispatcher made with
    /// [`new`](PartitionDispatcher::new) is `Partition::Index(i)`).
    pub fn partitions(&self) -> &[Partition] {
        &self.names
    }

    /// How many events wait in the partitions' queues, all partitions together.
    pub fn queued(&self) -> usize {
        self.slots.iter().map(|s| s.queue.len()).sum()
    }

    /// How many events wait in one partition's queue (0 for an unknown partition).
    pub fn queued_for(&self, partition: &Partition) -> usize {
        self.index
            .get(partition)
            .map_or(0, |&i| self.slots[i].queue.len())
    }

    /// Demand requested upstream for consumers that have left.
    pub fn pending(&self) -> usize {
        self.pending
    }

    fn route(&self, event: &T) -> Route {
        match &self.hash {
            Hash::Index(hash) => match hash(event) {
                None => Route::Nowhere,
                Some(i) => match usize::try_from(i) {
                    Ok(i) if i < self.slots.len() => Route::To(i),
                    _ => Route::Unknown(Partition::Index(i)),
                },
            },
            Hash::Named(hash) => match hash(event) {
                None => Route::Nowhere,
                Some(p) => match self.index.get(&p) {
                    Some(&i) => Route::To(i),
                    None => Route::Unknown(p),
                },
            },
        }
    }

    fn slot_of(&self, sub: SubscriptionId) -> Option<usize> {
        self.slots.iter().position(|s| s.sub == Some(sub))
    }

    fn stage(&self) -> &str {
        self.name.as_deref().unwrap_or("?")
    }

    fn list(&self) -> String {
        let names: Vec<String> = self.names.iter().map(ToString::to_string).collect();
        format!("[{}]", names.join(", "))
    }

    /// Sends partition `i` what its demand allows of `batch` (after its queue), queues the
    /// rest, and trims the queue to `max_queue`. Returns how many events the trim dropped.
    fn deliver(&mut self, i: usize, mut batch: Vec<T>, out: &mut Outbox<'_, T>) -> usize {
        let slot = &mut self.slots[i];
        if let (Some(sub), true) = (slot.sub, slot.demand > 0) {
            let k = slot.demand.min(slot.queue.len() + batch.len());
            slot.demand -= k;
            let message = if slot.queue.is_empty() {
                let rest = batch.split_off(k);
                std::mem::replace(&mut batch, rest)
            } else {
                slot.queue.extend(batch.drain(..));
                slot.queue.drain(..k).collect()
            };
            out.send(sub, message);
        }
        slot.queue.extend(batch);
        let Some(max) = self.max_queue else {
            return 0;
        };
        let over = slot.queue.len().saturating_sub(max);
        if over > 0 {
            slot.queue.drain(..over);
            warn!(
                "stage {}: partition {} has more than {max} queued events (max_queue); dropped \
                 the {over} oldest",
                self.name.as_deref().unwrap_or("?"),
                self.names[i],
            );
        }
        over
    }
}

impl<T> fmt::Debug for PartitionDispatcher<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Slots<'a, T>(&'a PartitionDispatcher<T>);
        impl<T> fmt::Debug for Slots<'_, T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_list()
                    .entries(
                        self.0
                            .names
                            .iter()
                            .zip(&self.0.slots)
                            .map(|(name, s)| (name, s.sub, s.demand, s.queue.len())),
                    )
                    .finish()
            }
        }
        f.debug_struct("PartitionDispatcher")
            .field("partitions (name, sub, demand, queued)", &Slots(self))
            .field("waiting", &self.waiting)
            .field("pending", &self.pending)
            .field("max_queue", &self.max_queue)
            .finish()
    }
}

impl<T: Send> Dispatcher<T> for PartitionDispatcher<T> {
    fn attach(&mut self, stage: &str) {
        self.name = Some(stage.to_owned());
    }

    fn subscribe(
        &mut self,
        sub: SubscriptionId,
        options: &SubscribeOptions,
    ) -> Result<(), SubscribeError> {
        let Some(partition) = options.get_partition() else {
            return Err(SubscribeError::InvalidOption {
                option: "partition",
                message: "the partition option is required when subscribing to a producer \
                          with a partition dispatcher"
                    .into(),
            });
        };
        let Some(&i) = self.index.get(partition) else {
            return Err(SubscribeError::InvalidOption {
                option: "partition",
                message: format!(
                    "expected partition to be one of {}, got {partition}",
                    self.list()
                ),
            });
        };
        if let Some(other) = self.slots[i].sub {
            return Err(SubscribeError::Rejected {
                producer: self.stage().to_owned(),
                message: format!("partition {partition} is already taken by subscription {other}"),
            });
        }
        self.slots[i].sub = Some(sub);
        Ok(())
    }

    fn cancel(&mut self, sub: SubscriptionId, out: &mut Outbox<'_, T>) -> usize {
        let Some(i) = self.slot_of(sub) else {
            return 0;
        };
        let slot = &mut self.slots[i];
        slot.sub = None;
        self.pending = self
            .pending
            .saturating_add(std::mem::take(&mut slot.demand));
        let dropped = std::mem::take(&mut slot.queue).len();
        if dropped > 0 {
            // The queue is dropped with its consumer; ask for as many new events instead.
            out.discard(dropped);
            self.waiting = self.waiting.saturating_add(dropped);
        }
        dropped
    }

    fn ask(&mut self, sub: SubscriptionId, n: usize, out: &mut Outbox<'_, T>) -> usize {
        let Some(i) = self.slot_of(sub) else {
            return 0;
        };
        let slot = &mut self.slots[i];
        // Queued events go first, in one message; what the queue does not cover is demand.
        let k = n.min(slot.queue.len());
        if k > 0 {
            out.send(sub, slot.queue.drain(..k).collect());
        }
        slot.demand = slot.demand.saturating_add(n - k);
        // Like GenStage, the whole ask goes upstream even when the queue served it: events
        // are requested for all partitions together.
        let covered = self.pending.min(n);
        self.pending -= covered;
        let demand = n - covered;
        self.waiting = self.waiting.saturating_add(demand);
        demand
    }

    fn held(&self) -> usize {
        self.queued()
    }

    fn ready(&self) -> usize {
        self.waiting
    }

    fn dispatch(&mut self, events: &mut Vec<T>, out: &mut Outbox<'_, T>) {
        if self.waiting == 0 || events.is_empty() {
            return;
        }
        // Hash events while upstream demand lasts, in one pass, each straight into its
        // partition's batch; `None` and unknown partitions use no demand. What is left when the
        // demand runs out stays in `events`, unhashed, for the producer's buffer.
        let share = events.len() / self.slots.len() + 16;
        let mut batches: Vec<Vec<T>> = self
            .slots
            .iter()
            .map(|_| Vec::with_capacity(share))
            .collect();
        let (mut nowhere, mut unknown) = (0, 0);
        let mut first_unknown = None;
        let mut iter = std::mem::take(events).into_iter();
        for event in iter.by_ref() {
            match self.route(&event) {
                Route::To(i) => {
                    batches[i].push(event);
                    self.waiting -= 1;
                }
                Route::Nowhere => nowhere += 1,
                Route::Unknown(p) => {
                    unknown += 1;
                    first_unknown.get_or_insert(p);
                }
            }
            if self.waiting == 0 {
                break;
            }
        }
        if iter.len() > 0 {
            events.extend(iter);
        }
        if let Some(p) = first_unknown {
            error!(
                "stage {}: the partition hash returned partition {p}, expected one of {}; \
                 dropped {unknown} events with unknown partitions",
                self.stage(),
                self.list(),
            );
        }
        let unused = nowhere + unknown;
        let mut dropped = unused;
        for (i, batch) in batches.into_iter().enumerate() {
            if !batch.is_empty() {
                dropped += self.deliver(i, batch, out);
            }
        }
        if dropped > 0 {
            out.discard(dropped);
        }
        if unused > 0 {
            // The producer counts those events against the demand it was given, but they used
            // none of `waiting`: ask for as many more, or the demand would wait forever.
            out.ask_upstream(unused);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Sent = Vec<(SubscriptionId, Vec<u32>)>;

    fn parity() -> PartitionDispatcher<u32> {
        PartitionDispatcher::new(2, |x: &u32| Some(u64::from(x % 2))).unwrap()
    }

    fn on(partition: u64) -> SubscribeOptions {
        SubscribeOptions::new().partition(partition)
    }

    /// Runs `f` with a recording outbox; returns its result, the messages, the discards and
    /// the demand created.
    fn run<R>(
        d: &mut PartitionDispatcher<u32>,
        f: impl FnOnce(&mut PartitionDispatcher<u32>, &mut Outbox<'_, u32>) -> R,
    ) -> (R, Sent, usize, usize) {
        crate::dispatcher::record(d, f)
    }

    fn ask(d: &mut PartitionDispatcher<u32>, sub: SubscriptionId, n: usize) -> (usize, Sent) {
        let (demand, sent, discarded, created) = run(d, |d, out| d.ask(sub, n, out));
        assert_eq!((discarded, created), (0, 0));
        (demand, sent)
    }

    fn cancel(d: &mut PartitionDispatcher<u32>, sub: SubscriptionId) -> (usize, usize) {
        let (demand, sent, discarded, created) = run(d, |d, out| d.cancel(sub, out));
        assert!(sent.is_empty());
        assert_eq!(created, 0);
        (demand, discarded)
    }

    /// What one dispatch did.
    #[derive(Debug, PartialEq)]
    struct Dispatched {
        sent: Sent,
        left: Vec<u32>,
        discarded: usize,
        /// Demand asked upstream while dispatching.
        asked: usize,
    }

    fn dispatch(d: &mut PartitionDispatcher<u32>, events: &[u32]) -> Dispatched {
        let mut left = events.to_vec();
        let ((), sent, discarded, asked) = run(d, |d, out| d.dispatch(&mut left, out));
        Dispatched {
            sent,
            left,
            discarded,
            asked,
        }
    }

    fn queue(d: &PartitionDispatcher<u32>, i: usize) -> Vec<u32> {
        d.slots[i].queue.iter().copied().collect()
    }

    #[test]
    fn routes_each_event_to_its_partition() {
        let (a, b) = (SubscriptionId::unique(), SubscriptionId::unique());
        let mut d = parity();
        d.subscribe(a, &on(0)).unwrap();
        d.subscribe(b, &on(1)).unwrap();
        assert_eq!(ask(&mut d, a, 3).0, 3);
        assert_eq!(ask(&mut d, b, 3).0, 3);
        let r = dispatch(&mut d, &[1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(r.sent, vec![(a, vec![2, 4, 6]), (b, vec![1, 3, 5])]);
        assert_eq!(r.left, vec![7]);
        assert_eq!(d.waiting, 0);
    }

    #[test]
    fn the_probe_p7_trace() {
        // Two partitions, hash x % 2; partition 0 asks 4, partition 1 has no consumer. Four
        // hashed events use up the upstream demand: [2] to p0, [1, 3, 5] queued for p1, and
        // the rest, not hashed, for the producer's buffer.
        let a = SubscriptionId::unique();
        let mut d = parity();
        d.subscribe(a, &on(0)).unwrap();
        assert_eq!(ask(&mut d, a, 4).0, 4);
        let r = dispatch(&mut d, &[1, 3, 5, 2, 4, 7, 6, 8, 10]);
        assert_eq!(
            r,
            Dispatched {
                sent: vec![(a, vec![2])],
                left: vec![4, 7, 6, 8, 10],
                discarded: 0,
                asked: 0,
            }
        );
        assert_eq!(queue(&d, 1), vec![1, 3, 5]);
        assert_eq!(d.slots[0].demand, 3);
    }

    #[test]
    fn buffers_events_before_subscription() {
        // PD "buffers events before subscription", with a hash that sends everything to 0.
        let (p0, p1) = (SubscriptionId::unique(), SubscriptionId::unique());
        let mut d = PartitionDispatcher::new(2, |_: &u32| Some(0)).unwrap();
        d.subscribe(p1, &on(1)).unwrap();
        assert_eq!(ask(&mut d, p1, 5).0, 5);
        let r = dispatch(&mut d, &[1, 2, 5, 6, 7]);
        assert!(r.sent.is_empty());
        assert!(r.left.is_empty());
        assert_eq!(queue(&d, 0), vec![1, 2, 5, 6, 7]);
        let r = dispatch(&mut d, &[8, 9]);
        assert!(r.sent.is_empty());
        assert_eq!(r.left, vec![8, 9], "no upstream demand left");

        d.subscribe(p0, &on(0)).unwrap();
        let (demand, sent) = ask(&mut d, p0, 5);
        assert_eq!(sent, vec![(p0, vec![1, 2, 5, 6, 7])]);
        assert_eq!(demand, 5);
        assert_eq!(d.queued(), 0);
    }

    #[test]
    fn queued_events_go_first_then_demand() {
        let (a, b) = (SubscriptionId::unique(), SubscriptionId::unique());
        let mut d = parity();
        d.subscribe(a, &on(0)).unwrap();
        d.subscribe(b, &on(1)).unwrap();
        // b's demand pulls in events for a, which has not asked: they queue.
        assert_eq!(ask(&mut d, b, 3).0, 3);
        assert!(dispatch(&mut d, &[2, 4, 6]).sent.is_empty());
        assert_eq!(queue(&d, 0), vec![2, 4, 6]);
        // An ask of 2 takes two queued events; one of 4 takes the last and keeps 3 as demand.
        assert_eq!(ask(&mut d, a, 2), (2, vec![(a, vec![2, 4])]));
        assert_eq!(ask(&mut d, a, 4), (4, vec![(a, vec![6])]));
        assert_eq!(d.slots[0].demand, 3);
        let r = dispatch(&mut d, &[8, 10, 12, 14]);
        assert_eq!(r.sent, vec![(a, vec![8, 10, 12])]);
        assert_eq!(queue(&d, 0), vec![14]);
        assert_eq!(d.waiting, 2);
    }

    #[test]
    fn none_drops_without_using_demand() {
        let a = SubscriptionId::unique();
        let mut d =
            PartitionDispatcher::new(1, |x: &u32| (!x.is_multiple_of(3)).then_some(0)).unwrap();
        d.subscribe(a, &on(0)).unwrap();
        ask(&mut d, a, 4);
        let r = dispatch(&mut d, &[0, 1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(
            r,
            Dispatched {
                sent: vec![(a, vec![1, 2, 4, 5])],
                // Not hashed: the demand ran out at 5.
                left: vec![6, 7, 8],
                // 0 and 3, counted, and replaced by as many new events.
                discarded: 2,
                asked: 2,
            }
        );
        assert_eq!(d.waiting, 0);
    }

    #[test]
    fn an_unknown_partition_is_dropped_and_counted() {
        let a = SubscriptionId::unique();
        let mut d = PartitionDispatcher::new(2, |x: &u32| Some(u64::from(*x))).unwrap();
        d.attach("numbers");
        d.subscribe(a, &on(1)).unwrap();
        ask(&mut d, a, 2);
        let r = dispatch(&mut d, &[7, 1, 9, 1]);
        assert_eq!(
            r,
            Dispatched {
                sent: vec![(a, vec![1, 1])],
                left: vec![],
                discarded: 2,
                asked: 2,
            }
        );
    }

    #[test]
    fn cancel_drops_and_counts_the_queue_and_asks_for_as_many() {
        // PD "subscribes, asks and cancels with buffer": 5 queued events are dropped, and
        // the cancel returns 5.
        let (p0, p1) = (SubscriptionId::unique(), SubscriptionId::unique());
        let mut d = parity();
        d.subscribe(p0, &on(0)).unwrap();
        d.subscribe(p1, &on(1)).unwrap();
        assert_eq!(ask(&mut d, p1, 10).0, 10);
        assert!(dispatch(&mut d, &[0, 2, 4, 6, 8]).sent.is_empty());
        assert_eq!(d.queued(), 5);
        assert_eq!(cancel(&mut d, p0), (5, 5));
        assert_eq!(d.queued(), 0);
        assert_eq!(d.waiting, 10);
    }

    #[test]
    fn cancelled_demand_becomes_pending() {
        let (a, b) = (SubscriptionId::unique(), SubscriptionId::unique());
        let mut d = parity();
        d.subscribe(a, &on(0)).unwrap();
        assert_eq!(ask(&mut d, a, 10).0, 10);
        assert_eq!(cancel(&mut d, a), (0, 0));
        assert_eq!(d.pending(), 10);
        d.subscribe(b, &on(0)).unwrap();
        assert_eq!(ask(&mut d, b, 4).0, 0);
        assert_eq!(ask(&mut d, b, 10).0, 4);
        assert_eq!(d.pending(), 0);
    }

    #[test]
    fn max_queue_drops_the_oldest() {
        let (p0, p1) = (SubscriptionId::unique(), SubscriptionId::unique());
        let mut d = parity().max_queue(2);
        d.subscribe(p0, &on(0)).unwrap();
        d.subscribe(p1, &on(1)).unwrap();
        ask(&mut d, p0, 10);
        let r = dispatch(&mut d, &[1, 2, 3, 4, 5, 7]);
        assert_eq!(r.sent, vec![(p0, vec![2, 4])]);
        assert_eq!(queue(&d, 1), vec![5, 7]);
        // 1 and 3: counted, not replaced (they used demand, as queued events do).
        assert_eq!((r.discarded, r.asked), (2, 0));
        assert_eq!(ask(&mut d, p1, 5).1, vec![(p1, vec![5, 7])]);
    }

    #[test]
    fn subscribe_errors() {
        let mut d = parity();
        d.attach("numbers");
        let e = d
            .subscribe(SubscriptionId::unique(), &SubscribeOptions::new())
            .unwrap_err();
        assert_eq!(
            e,
            SubscribeError::InvalidOption {
                option: "partition",
                message: "the partition option is required when subscribing to a producer \
                          with a partition dispatcher"
                    .into(),
            }
        );
        let e = d.subscribe(SubscriptionId::unique(), &on(2)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid subscribe option: expected partition to be one of [0, 1], got 2"
        );
        let e = d
            .subscribe(
                SubscriptionId::unique(),
                &SubscribeOptions::new().partition("0"),
            )
            .unwrap_err();
        assert!(e.to_string().ends_with("got \"0\""), "{e}");
        let first = SubscriptionId::unique();
        d.subscribe(first, &on(0)).unwrap();
        let e = d.subscribe(SubscriptionId::unique(), &on(0)).unwrap_err();
        assert_eq!(
            e,
            SubscribeError::Rejected {
                producer: "numbers".into(),
                message: format!("partition 0 is already taken by subscription {first}"),
            }
        );
        // Once its consumer leaves, the partition is free again.
        cancel(&mut d, first);
        d.subscribe(SubscriptionId::unique(), &on(0)).unwrap();
    }

    #[test]
    fn named_partitions() {
        let (eu, us) = (Partition::from("eu"), Partition::from("us"));
        let mut d = PartitionDispatcher::named(["eu", "us"], move |x: &u32| match *x {
            0..=9 => Some(eu.clone()),
            10..=19 => Some(us.clone()),
            20..=29 => Some(Partition::from("ap")),
            _ => None,
        })
        .unwrap();
        let (a, b) = (SubscriptionId::unique(), SubscriptionId::unique());
        d.subscribe(a, &SubscribeOptions::new().partition("eu"))
            .unwrap();
        d.subscribe(b, &SubscribeOptions::new().partition("us"))
            .unwrap();
        let e = d
            .subscribe(
                SubscriptionId::unique(),
                &SubscribeOptions::new().partition("ap"),
            )
            .unwrap_err();
        assert!(
            e.to_string()
                .ends_with("expected partition to be one of [\"eu\", \"us\"], got \"ap\""),
            "{e}"
        );
        ask(&mut d, a, 10);
        ask(&mut d, b, 10);
        let r = dispatch(&mut d, &[1, 11, 21, 31, 2, 12]);
        assert_eq!(r.sent, vec![(a, vec![1, 2]), (b, vec![11, 12])]);
        assert!(r.left.is_empty());
        assert_eq!((r.discarded, r.asked), (2, 2));
    }

    #[test]
    fn bad_partition_sets_are_errors() {
        let e = PartitionDispatcher::new(0, |_: &u32| Some(0)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid stage option: expected partitions to be at least 1, got 0"
        );
        let e = PartitionDispatcher::named(Vec::<&str>::new(), |_: &u32| None).unwrap_err();
        assert!(matches!(
            e,
            BuildError::InvalidOption {
                option: "partitions",
                ..
            }
        ));
        let e = PartitionDispatcher::named(["eu", "us", "eu"], |_: &u32| None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid stage option: expected partition names to be unique, got \"eu\" twice"
        );
    }
}
