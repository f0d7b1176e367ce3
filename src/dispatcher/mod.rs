//! Dispatchers: how a producer shares its events among its consumers.
//!
//! A producer owns one dispatcher. The dispatcher keeps the demand of every consumer and, given
//! a batch of events, decides which consumer gets which events. It does no I/O: it hands each
//! consumer's message to an [`Outbox`] and leaves what it cannot deliver in the batch, which the
//! producer then buffers. That makes a dispatcher a pure value, testable without threads.
//!
//! [`DemandDispatcher`] (the default) sends each event to one consumer, the one with the most
//! outstanding demand. Write your own by implementing [`Dispatcher`]; the built-in ones use
//! nothing that is not public.
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

mod demand;

pub use demand::DemandDispatcher;

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
pub trait Dispatcher<T>: Send + 'static {
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
}

impl<T: 'static> Dispatcher<T> for Box<dyn Dispatcher<T>> {
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
}
