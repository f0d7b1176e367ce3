//! Dispatchers: how a producer shares its events among its consumers.
//!
//! A producer owns one dispatcher. The dispatcher keeps the demand of every consumer and, given
//! a batch of events, decides which consumer gets which events. It does no I/O: it hands each
//! consumer's message to an [`Outbox`] and leaves what it cannot deliver in the batch, which the
//! producer then buffers. That makes a dispatcher a pure value, testable without threads.
//!
//! [`DemandDispatcher`] (the default) sends each event to one consumer, the one with the most
//! outstanding demand. [`BroadcastDispatcher`] sends every event to every consumer (each may
//! filter with a selector), at the pace of the slowest. [`PartitionDispatcher`] sends each
//! event to the one consumer of the partition a hash picks. Write your own by implementing
//! [`Dispatcher`]; the built-in ones use nothing that is not public. (With the default one,
//! the runtime takes two shortcuts on its hot path, an ask without an outbox and a batch sent
//! whole to one consumer; they record exactly what its `ask` and `dispatch` would.)
//!
//! # For implementors
//!
//! The producer calls the methods in this order of events: `subscribe` when a consumer
//! subscribes, `ask` for each of its asks, `dispatch` whenever there are events to send, and
//! `cancel` when the consumer leaves. The value returned by `ask` and `cancel` is the demand the
//! producer should now satisfy (GenStage's "upstream demand"): it is served from the buffer
//! first, and the rest goes to `handle_demand`. Through the [`Outbox`] a dispatcher sends
//! events, reports events it drops on purpose (they are counted and logged), and can create
//! upstream demand while dispatching (for example to refund demand a selector did not use).
//!
//! A dispatcher MUST NOT send a consumer more events than that consumer asked for, and MUST
//! send at most one message per consumer per call.
//!
//! # Examples
//!
//! A dispatcher that deals events out in turn, one at a time, to the consumers that still have
//! demand, driven by hand as the producer would drive it:
//!
//! ```
//! use stageflow::dispatcher::{Dispatcher, Outbox};
//! use stageflow::{SubscribeError, SubscribeOptions, SubscriptionId};
//!
//! #[derive(Debug, Default)]
//! struct RoundRobin {
//!     /// Each consumer and its outstanding demand, in subscription order.
//!     consumers: Vec<(SubscriptionId, usize)>,
//!     /// Whose turn it is.
//!     next: usize,
//! }
//!
//! impl<T: Send + 'static> Dispatcher<T> for RoundRobin {
//!     fn subscribe(
//!         &mut self,
//!         sub: SubscriptionId,
//!         _: &SubscribeOptions,
//!     ) -> Result<(), SubscribeError> {
//!         self.consumers.push((sub, 0));
//!         Ok(())
//!     }
//!
//!     fn cancel(&mut self, sub: SubscriptionId, _: &mut Outbox<'_, T>) -> usize {
//!         // Simple, not thrifty: the demand it leaves unmet is not reused.
//!         self.consumers.retain(|&(s, _)| s != sub);
//!         0
//!     }
//!
//!     fn ask(&mut self, sub: SubscriptionId, n: usize, _: &mut Outbox<'_, T>) -> usize {
//!         match self.consumers.iter_mut().find(|(s, _)| *s == sub) {
//!             Some((_, demand)) => {
//!                 *demand += n;
//!                 n // every ask goes upstream
//!             }
//!             None => 0,
//!         }
//!     }
//!
//!     fn dispatch(&mut self, events: &mut Vec<T>, out: &mut Outbox<'_, T>) {
//!         // Whose each event is: in turn, among the consumers with demand left.
//!         let mut owners = Vec::new();
//!         while owners.len() < events.len() && self.consumers.iter().any(|&(_, d)| d > 0) {
//!             let i = self.next % self.consumers.len();
//!             self.next = i + 1;
//!             if self.consumers[i].1 > 0 {
//!                 self.consumers[i].1 -= 1;
//!                 owners.push(i);
//!             }
//!         }
//!         // One message per consumer; what nobody could take stays for the buffer.
//!         let mut batches: Vec<Vec<T>> = self.consumers.iter().map(|_| Vec::new()).collect();
//!         for (event, i) in events.drain(..owners.len()).zip(owners) {
//!             batches[i].push(event);
//!         }
//!         for (&(sub, _), batch) in self.consumers.iter().zip(batches) {
//!             if !batch.is_empty() {
//!                 out.send(sub, batch);
//!             }
//!         }
//!     }
//! }
//!
//! let (a, b) = (SubscriptionId::unique(), SubscriptionId::unique());
//! let mut dispatcher = RoundRobin::default();
//! let d: &mut dyn Dispatcher<char> = &mut dispatcher;
//! d.subscribe(a, &SubscribeOptions::new())?;
//! d.subscribe(b, &SubscribeOptions::new())?;
//!
//! let mut sent = Vec::new();
//! let mut record = |sub, batch| sent.push((sub, batch));
//! let mut out = Outbox::new(&mut record);
//! assert_eq!(d.ask(a, 2, &mut out), 2);
//! assert_eq!(d.ask(b, 3, &mut out), 3);
//! let mut events = vec!['p', 'q', 'r', 's', 't', 'u'];
//! d.dispatch(&mut events, &mut out);
//! drop(out);
//! assert_eq!(sent, vec![(a, vec!['p', 'r']), (b, vec!['q', 's', 't'])]);
//! assert_eq!(events, vec!['u']); // no demand left: for the producer's buffer
//!
//! // The producer takes any dispatcher: `stageflow::producer(p).dispatcher(RoundRobin::default())`.
//! # Ok::<(), SubscribeError>(())
//! ```

mod broadcast;
mod demand;
mod inline;
mod partition;

pub use broadcast::BroadcastDispatcher;
pub use demand::DemandDispatcher;
pub use partition::PartitionDispatcher;

pub(crate) use inline::Dispatch;

use crate::error::SubscribeError;
use crate::subscription::{SubscribeOptions, SubscriptionId};

/// What a dispatcher hands its results to: each consumer's message, the events it dropped on
/// purpose, and upstream demand it created.
///
/// The producer makes one for each call; to test a dispatcher, make one with [`Outbox::new`].
pub struct Outbox<'a, T> {
    send: &'a mut dyn FnMut(SubscriptionId, Vec<T>),
    discarded: usize,
    demand: usize,
}

impl<'a, T> Outbox<'a, T> {
    /// An outbox that hands each message to `send`.
    pub fn new(send: &'a mut dyn FnMut(SubscriptionId, Vec<T>)) -> Outbox<'a, T> {
        Outbox {
            send,
            discarded: 0,
            demand: 0,
        }
    }

    /// Sends `events` to the consumer of subscription `sub` as one message.
    pub fn send(&mut self, sub: SubscriptionId, events: Vec<T>) {
        (self.send)(sub, events);
    }

    /// Reports `n` events dropped on purpose (a hash that maps them nowhere, a queue dropped
    /// with its consumer). The producer counts them as discarded and logs them.
    pub fn discard(&mut self, n: usize) {
        self.discarded += n;
    }

    /// Asks the producer for `n` more events, as if a consumer had asked (GenStage's
    /// dispatchers send themselves an ask for this).
    pub fn ask_upstream(&mut self, n: usize) {
        self.demand = self.demand.saturating_add(n);
    }

    /// Events reported with [`Outbox::discard`] so far.
    pub fn discarded(&self) -> usize {
        self.discarded
    }

    /// Demand created with [`Outbox::ask_upstream`] so far.
    pub fn upstream_demand(&self) -> usize {
        self.demand
    }
}

impl<T> std::fmt::Debug for Outbox<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("discarded", &self.discarded)
            .field("demand", &self.demand)
            .finish()
    }
}

/// How a producer shares events among its consumers. See the [module docs](self).
pub trait Dispatcher<T>: Send {
    /// Called once, before anything else, with the producer's name, for log messages. The
    /// default does nothing.
    fn attach(&mut self, stage: &str) {
        let _ = stage;
    }

    /// A consumer subscribes. Returning an error refuses the subscription; the error is handed
    /// to whoever subscribed, and the producer keeps running.
    ///
    /// # Errors
    ///
    /// A [`SubscribeError`] (usually [`SubscribeError::Rejected`]) that says why.
    fn subscribe(
        &mut self,
        sub: SubscriptionId,
        options: &SubscribeOptions,
    ) -> Result<(), SubscribeError>;

    /// A consumer left. Returns the demand this creates upstream (0 for most dispatchers).
    /// Events it held for that consumer are dropped through `out`.
    fn cancel(&mut self, sub: SubscriptionId, out: &mut Outbox<'_, T>) -> usize;

    /// A consumer asked for `n` more events. Returns the demand the producer should now
    /// satisfy. Events the dispatcher held for that consumer may be sent through `out`.
    fn ask(&mut self, sub: SubscriptionId, n: usize, out: &mut Outbox<'_, T>) -> usize;

    /// Sends what it can of `events` through `out` and leaves the rest, in order, in
    /// `events`, for the producer's buffer.
    fn dispatch(&mut self, events: &mut Vec<T>, out: &mut Outbox<'_, T>);

    /// How many events [`dispatch`](Dispatcher::dispatch) would take right now (send, or
    /// drop on purpose) if it were given that many: the consumers' outstanding demand, as the
    /// dispatcher counts it. The producer uses it to deliver its buffer: while events wait
    /// there, newly emitted events queue behind them, and the buffer is offered to the
    /// dispatcher as soon as it has demand, however that demand arose (an ask, a cancel, a
    /// subscription). A dispatcher that does not know returns `usize::MAX` (the default): the
    /// producer then offers it the whole buffer and takes back what it leaves.
    fn ready(&self) -> usize {
        usize::MAX
    }

    /// Whether a consumer may hold only one subscription to this producer at a time. A second
    /// subscription from the same consumer is then refused with
    /// [`SubscribeError::Rejected`] (`"… is already subscribed"`), and the first one is kept.
    /// Defaults to `false`; the [`BroadcastDispatcher`] says `true` (a consumer subscribed
    /// twice would get every event twice), as GenStage's does.
    fn one_subscription_per_consumer(&self) -> bool {
        false
    }

    /// How many events the dispatcher holds itself (in per-consumer queues, say). A finishing
    /// producer waits until they have been delivered; a producer that stops counts them as
    /// discarded. Defaults to 0.
    fn held(&self) -> usize {
        0
    }

    /// The runtime's own: hands a [`DemandDispatcher`] back as itself, so that the stage holds
    /// it inline (its calls direct, its shortcuts taken); any other dispatcher as it is.
    #[doc(hidden)]
    fn into_inline(self) -> Result<DemandDispatcher, Self>
    where
        Self: Sized,
    {
        Err(self)
    }

    /// The runtime's own: the dispatcher in a box (a box as it is).
    #[doc(hidden)]
    fn into_boxed<'a>(self) -> Box<dyn Dispatcher<T> + 'a>
    where
        Self: Sized + 'a,
    {
        Box::new(self)
    }
}

impl<'d, T> Dispatcher<T> for Box<dyn Dispatcher<T> + 'd> {
    fn attach(&mut self, stage: &str) {
        (**self).attach(stage)
    }
    fn subscribe(
        &mut self,
        sub: SubscriptionId,
        options: &SubscribeOptions,
    ) -> Result<(), SubscribeError> {
        (**self).subscribe(sub, options)
    }
    fn cancel(&mut self, sub: SubscriptionId, out: &mut Outbox<'_, T>) -> usize {
        (**self).cancel(sub, out)
    }
    fn ask(&mut self, sub: SubscriptionId, n: usize, out: &mut Outbox<'_, T>) -> usize {
        (**self).ask(sub, n, out)
    }
    fn dispatch(&mut self, events: &mut Vec<T>, out: &mut Outbox<'_, T>) {
        (**self).dispatch(events, out)
    }
    fn held(&self) -> usize {
        (**self).held()
    }
    fn ready(&self) -> usize {
        (**self).ready()
    }
    fn one_subscription_per_consumer(&self) -> bool {
        (**self).one_subscription_per_consumer()
    }
    fn into_boxed<'a>(self) -> Box<dyn Dispatcher<T> + 'a>
    where
        Self: 'a,
    {
        self
    }
}

/// Runs `f` on a dispatcher with an outbox that records what it does: the result, the
/// messages sent, the events discarded and the upstream demand created. For unit tests.
#[cfg(test)]
pub(crate) fn record<D, T, R>(
    d: &mut D,
    f: impl FnOnce(&mut D, &mut Outbox<'_, T>) -> R,
) -> (R, Vec<(SubscriptionId, Vec<T>)>, usize, usize) {
    let mut sent = Vec::new();
    let (r, discarded, demand) = {
        let mut keep = |sub, batch| sent.push((sub, batch));
        let mut out = Outbox::new(&mut keep);
        let r = f(d, &mut out);
        (r, out.discarded(), out.upstream_demand())
    };
    (r, sent, discarded, demand)
}
