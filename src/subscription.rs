//! Subscriptions: their ids, their options (with GenStage's validation), cancel and demand modes.

use std::any::{type_name, Any};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::error::SubscribeError;

/// Identifies one subscription: one consumer subscribed to one producer.
///
/// Ids are unique within the process. A consumer sees the id of the subscription an event batch
/// came from in [`Events::subscription`](crate::Events::subscription); a producer sees the ids of
/// its consumers in [`Producer::handle_subscribe`](crate::Producer::handle_subscribe).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubscriptionId(u64);

impl SubscriptionId {
    pub(crate) fn next() -> SubscriptionId {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        SubscriptionId(NEXT.fetch_add(1, Ordering::Relaxed))
    }

    /// A fresh id that no other subscription has or will have: for driving a
    /// [`Dispatcher`](crate::dispatcher::Dispatcher) in tests without threads.
    pub fn unique() -> SubscriptionId {
        SubscriptionId::next()
    }

    /// The id as a number, for logs and maps.
    pub fn as_u64(self) -> u64 {
        self.0
    }
}

impl fmt::Display for SubscriptionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// What a consumer does when one of its subscriptions ends (GenStage's `:cancel` option).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum CancelMode {
    /// The consumer ends, with the subscription's reason, whatever that reason is. The default.
    ///
    /// With a normal reason ([`Reason::is_normal`](crate::Reason::is_normal)) and other
    /// subscriptions still open (fan-in), the consumer ends once the last of them has ended
    /// too, so no producer's events are cut off; with an abnormal reason it ends at once. (A
    /// difference from GenStage, which ends it at the first producer's exit.)
    #[default]
    Permanent,
    /// The consumer ends only if the reason is not normal (see [`Reason::is_normal`](crate::Reason::is_normal)).
    Transient,
    /// The consumer keeps running whatever the reason.
    Temporary,
}

impl CancelMode {
    /// Whether a consumer with this mode ends when a subscription ends with `reason`.
    pub fn exits_on(self, reason: &crate::Reason) -> bool {
        match self {
            CancelMode::Permanent => true,
            CancelMode::Transient => !reason.is_normal(),
            CancelMode::Temporary => false,
        }
    }
}

/// Who asks for events on a subscription (returned by a consumer's `handle_subscribe`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum DemandMode {
    /// The stage asks by GenStage's rule: `max_demand` at first, then `max_demand - D` whenever
    /// the outstanding demand `D` falls to `min_demand` or below. The default.
    #[default]
    Automatic,
    /// The consumer asks itself with [`Context::ask`](crate::Context::ask) or
    /// [`Stage::ask`](crate::Stage::ask). Each incoming message is handled whole, in one
    /// `handle_events` call.
    Manual,
}

/// What a producer does with demand (GenStage's `:demand` option).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ProducerDemand {
    /// Demand reaches `handle_demand` as it arrives. The default.
    #[default]
    Forward,
    /// Demand is recorded, ask by ask, and events emitted meanwhile are held back, until the
    /// producer is switched to [`ProducerDemand::Forward`]: then each recorded demand becomes
    /// its own `handle_demand` call (never summed) and the held events are dispatched, oldest
    /// first. Start a producer this way when it must not emit before all its consumers have
    /// subscribed (a broadcast to a known set of consumers, say). Held events are not limited
    /// by `buffer_size`.
    Accumulate,
}

/// Which events a full producer buffer keeps (GenStage's `:buffer_keep`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum BufferKeep {
    /// Keep what is buffered and drop the incoming events.
    First,
    /// Drop the oldest buffered events to make room for the incoming ones. The default.
    #[default]
    Last,
}

/// Options of one subscription, checked when the consumer subscribes.
///
/// Every setter's documentation gives its default. Invalid values are reported by
/// [`StageBuilder::subscribe_to`](crate::StageBuilder::subscribe_to) and
/// [`Stage::subscribe_to`](crate::Stage::subscribe_to) as
/// [`SubscribeError::InvalidOption`] naming the option and the value.
///
/// # Examples
///
/// ```
/// use stageflow::{CancelMode, SubscribeOptions};
///
/// let opts = SubscribeOptions::new()
///     .max_demand(10)
///     .min_demand(5)
///     .cancel(CancelMode::Transient);
/// assert_eq!(opts.get_max_demand(), 10);
/// ```
#[derive(Clone)]
pub struct SubscribeOptions {
    pub(crate) max_demand: usize,
    pub(crate) min_demand: Option<usize>,
    pub(crate) cancel: CancelMode,
    pub(crate) timeout: Duration,
    pub(crate) partition: Option<Partition>,
    pub(crate) selector: Option<Arc<dyn Any + Send + Sync>>,
    pub(crate) tag: Option<Arc<str>>,
    pub(crate) adaptive: Option<usize>,
}

/// Names one partition of a partitioning dispatcher: by index, or by name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Partition {
    /// Partition number `n` (partitions made from a count are numbered from 0).
    Index(u64),
    /// A named partition.
    Name(Arc<str>),
}

impl From<u64> for Partition {
    fn from(n: u64) -> Partition {
        Partition::Index(n)
    }
}

impl From<usize> for Partition {
    /// Partition number `n`, as [`PartitionDispatcher::new`](crate::dispatcher::PartitionDispatcher::new)
    /// numbers them.
    fn from(n: usize) -> Partition {
        Partition::Index(n as u64)
    }
}

impl From<u32> for Partition {
    fn from(n: u32) -> Partition {
        Partition::Index(u64::from(n))
    }
}

impl From<i32> for Partition {
    /// Partition number `n`, so that `partition(0)` reads as it should. A negative number names
    /// no partition: subscribing with it fails with
    /// [`SubscribeError::InvalidOption`](crate::SubscribeError::InvalidOption) naming it.
    fn from(n: i32) -> Partition {
        match u64::try_from(n) {
            Ok(n) => Partition::Index(n),
            Err(_) => Partition::Name(n.to_string().into()),
        }
    }
}

impl From<&str> for Partition {
    fn from(name: &str) -> Partition {
        Partition::Name(name.into())
    }
}

impl From<String> for Partition {
    fn from(name: String) -> Partition {
        Partition::Name(name.into())
    }
}

impl fmt::Display for Partition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Partition::Index(n) => write!(f, "{n}"),
            Partition::Name(name) => write!(f, "{name:?}"),
        }
    }
}

/// A predicate that picks the events one subscriber of a broadcasting producer receives.
pub type Selector<T> = Arc<dyn Fn(&T) -> bool + Send + Sync>;

impl Default for SubscribeOptions {
    fn default() -> Self {
        SubscribeOptions::new()
    }
}

impl fmt::Debug for SubscribeOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubscribeOptions")
            .field("max_demand", &self.max_demand)
            .field("min_demand", &self.get_min_demand())
            .field("cancel", &self.cancel)
            .field("timeout", &self.timeout)
            .field("partition", &self.partition)
            .field("selector", &self.selector.is_some())
            .field("tag", &self.tag)
            .field("adaptive_demand", &self.adaptive)
            .finish()
    }
}

impl SubscribeOptions {
    /// The default options: `max_demand` 1000, `min_demand` 500, permanent.
    pub fn new() -> SubscribeOptions {
        SubscribeOptions {
            max_demand: 1000,
            min_demand: None,
            cancel: CancelMode::Permanent,
            timeout: Duration::from_secs(5),
            partition: None,
            selector: None,
            tag: None,
            adaptive: None,
        }
    }

    /// The most events the consumer will have asked for and not yet received on this
    /// subscription. Must be at least 1. Defaults to `1000`.
    pub fn max_demand(mut self, max_demand: usize) -> SubscribeOptions {
        self.max_demand = max_demand;
        self
    }

    /// When the outstanding demand falls to this value or below, the consumer asks again, up
    /// to `max_demand`. Must be at most `max_demand - 1`. Defaults to `max_demand / 2` (integer
    /// division: 1000 gives 500, 3 gives 1, 1 gives 0).
    pub fn min_demand(mut self, min_demand: usize) -> SubscribeOptions {
        self.min_demand = Some(min_demand);
        self
    }

    /// What the consumer does when this subscription ends. Defaults to
    /// [`CancelMode::Permanent`].
    pub fn cancel(mut self, mode: CancelMode) -> SubscribeOptions {
        self.cancel = mode;
        self
    }

    /// How long subscribing waits for the producer to confirm. Defaults to 5 seconds.
    pub fn timeout(mut self, timeout: Duration) -> SubscribeOptions {
        self.timeout = timeout;
        self
    }

    /// The partition to consume, for producers with a partitioning dispatcher: an index
    /// (`0u64`) or a name (`"eu"`). Defaults to none.
    pub fn partition(mut self, partition: impl Into<Partition>) -> SubscribeOptions {
        self.partition = Some(partition.into());
        self
    }

    /// Receive only the events `selector` accepts, from a broadcasting producer; rejected
    /// events do not use up this subscription's demand. The type `T` must be the producer's
    /// event type, or subscribing fails naming `selector`. Defaults to none (every event).
    pub fn selector<T: 'static>(
        mut self,
        selector: impl Fn(&T) -> bool + Send + Sync + 'static,
    ) -> SubscribeOptions {
        let selector: Selector<T> = Arc::new(selector);
        self.selector = Some(Arc::new(selector));
        self
    }

    /// A free-form label passed to both sides' `handle_subscribe` (GenStage passes unknown
    /// options through the same way). Defaults to none.
    pub fn tag(mut self, tag: impl Into<Arc<str>>) -> SubscribeOptions {
        self.tag = Some(tag.into());
        self
    }

    /// Lets this subscription's demand adapt to its consumer, between `max_demand` and
    /// `limit` (not in GenStage: a stageflow extension for stages on threads). Defaults to
    /// none: the demand stays as set.
    ///
    /// Each time the consumer asks for more, it looks at its inbox. Empty: it is about to wait
    /// for the very events it asks for, so the subscription's `max_demand` doubles, up to
    /// `limit`, and `min_demand` with it (keeping their ratio), and the ask covers the
    /// difference at once. Full: it is behind, so both halve, down to where they started.
    /// A consumer that keeps waiting on a fast producer therefore asks for bigger batches,
    /// with fewer asks and fewer wake-ups per event; one that keeps up keeps the demand it
    /// was given. The bound on events in flight is `limit` instead of `max_demand`.
    ///
    /// Its refills ask in whole chunks of `max_demand - min_demand` where `max_demand` is two
    /// of them or more, whole (as at 10/5 doubled to 100/50): the most chunks that keep the
    /// demand at or below `max_demand`, where GenStage asks whatever tops it up. Growth asks
    /// odd amounts, and GenStage's rule would keep them going round for good, each message
    /// cut into a full batch and a small one (a pipeline's processors grown to 100/50 asked
    /// 65 and 85 and handled batches of 37 events on average); in whole chunks the asks
    /// fall back to `max_demand - min_demand` once the odd ones have come, and so do the
    /// batches (50 at 100/50).
    ///
    /// Automatic demand only (a manual subscription asks what it asks). `limit` must be at
    /// least `max_demand`, or subscribing fails naming `adaptive_demand`.
    ///
    /// ```
    /// use stageflow::SubscribeOptions;
    ///
    /// // Broadway's default demand, free to grow to 100 when the consumer starves.
    /// let opts = SubscribeOptions::new().max_demand(10).min_demand(5).adaptive_demand(100);
    /// assert_eq!(opts.get_adaptive_demand(), Some(100));
    /// assert!(opts.validate().is_ok());
    /// assert!(SubscribeOptions::new().max_demand(10).adaptive_demand(5).validate().is_err());
    /// ```
    pub fn adaptive_demand(mut self, limit: usize) -> SubscribeOptions {
        self.adaptive = Some(limit);
        self
    }

    /// The limit set with [`SubscribeOptions::adaptive_demand`], if any.
    pub fn get_adaptive_demand(&self) -> Option<usize> {
        self.adaptive
    }

    /// The configured `max_demand`.
    pub fn get_max_demand(&self) -> usize {
        self.max_demand
    }

    /// The effective `min_demand`: the configured one, or `max_demand / 2`.
    pub fn get_min_demand(&self) -> usize {
        self.min_demand.unwrap_or(self.max_demand / 2)
    }

    /// The configured cancel mode.
    pub fn get_cancel(&self) -> CancelMode {
        self.cancel
    }

    /// The configured partition, if any.
    pub fn get_partition(&self) -> Option<&Partition> {
        self.partition.as_ref()
    }

    /// The configured selector, if any, for events of type `T`.
    ///
    /// # Errors
    ///
    /// [`SubscribeError::InvalidOption`] naming `selector` if the selector was made for
    /// events of another type.
    pub fn get_selector<T: 'static>(&self) -> Result<Option<Selector<T>>, SubscribeError> {
        match &self.selector {
            None => Ok(None),
            Some(any) => match any.downcast_ref::<Selector<T>>() {
                Some(selector) => Ok(Some(selector.clone())),
                None => Err(SubscribeError::invalid(
                    "selector",
                    format!(
                        "expected selector to take events of type {}, got a selector of another type",
                        type_name::<T>()
                    ),
                )),
            },
        }
    }

    /// The configured tag, if any.
    pub fn get_tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// Checks the options in GenStage's order: `max_demand`, then `min_demand` (whose bound
    /// depends on `max_demand`). The first failure is reported.
    ///
    /// # Errors
    ///
    /// [`SubscribeError::InvalidOption`] naming the option and the bad value.
    pub fn validate(&self) -> Result<(), SubscribeError> {
        if self.max_demand < 1 {
            return Err(SubscribeError::invalid(
                "max_demand",
                format!(
                    "expected max_demand to be at least 1, got {}",
                    self.max_demand
                ),
            ));
        }
        let min = self.get_min_demand();
        if min > self.max_demand - 1 {
            return Err(SubscribeError::invalid(
                "min_demand",
                format!(
                    "expected min_demand to be at most {} (max_demand - 1), got {}",
                    self.max_demand - 1,
                    min
                ),
            ));
        }
        if let Some(limit) = self.adaptive {
            if limit < self.max_demand {
                return Err(SubscribeError::invalid(
                    "adaptive_demand",
                    format!(
                        "expected the adaptive_demand limit to be at least max_demand ({}), got \
                         {limit}",
                        self.max_demand
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Which side of a subscription a stage is on, as told to `handle_subscribe`/`handle_cancel`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// The peer is a producer this stage consumes from.
    Upstream,
    /// The peer is a consumer of this stage.
    Downstream,
}

/// What a stage is told about a subscription in `handle_subscribe` and `handle_cancel`.
#[derive(Clone, Debug)]
pub struct Subscription {
    pub(crate) id: SubscriptionId,
    pub(crate) direction: Direction,
    pub(crate) peer: Arc<str>,
    pub(crate) options: SubscribeOptions,
}

impl Subscription {
    /// The subscription's id.
    pub fn id(&self) -> SubscriptionId {
        self.id
    }

    /// Whether the peer is a producer ([`Direction::Upstream`]) or a consumer.
    pub fn direction(&self) -> Direction {
        self.direction
    }

    /// The peer stage's name.
    pub fn peer(&self) -> &str {
        &self.peer
    }

    /// The options the consumer subscribed with.
    pub fn options(&self) -> &SubscribeOptions {
        &self.options
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_genstage() {
        let o = SubscribeOptions::new();
        assert_eq!((o.get_max_demand(), o.get_min_demand()), (1000, 500));
        assert_eq!(SubscribeOptions::new().max_demand(3).get_min_demand(), 1);
        assert_eq!(SubscribeOptions::new().max_demand(1).get_min_demand(), 0);
        assert_eq!(o.get_cancel(), CancelMode::Permanent);
    }

    #[test]
    fn validation_names_option_and_value() {
        let e = SubscribeOptions::new()
            .max_demand(0)
            .validate()
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid subscribe option: expected max_demand to be at least 1, got 0"
        );
        let e = SubscribeOptions::new()
            .min_demand(2000)
            .validate()
            .unwrap_err();
        assert!(matches!(
            e,
            SubscribeError::InvalidOption {
                option: "min_demand",
                ..
            }
        ));
        assert!(e.to_string().contains("at most 999"), "{e}");
        assert!(e.to_string().contains("got 2000"), "{e}");
        // min == max is an error; min == max - 1 is fine.
        assert!(SubscribeOptions::new()
            .max_demand(10)
            .min_demand(10)
            .validate()
            .is_err());
        assert!(SubscribeOptions::new()
            .max_demand(10)
            .min_demand(9)
            .validate()
            .is_ok());
        assert!(SubscribeOptions::new().max_demand(1).validate().is_ok());
    }
}
