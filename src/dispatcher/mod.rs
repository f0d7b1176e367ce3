//! Dispatchers: how a producer shares its events among its consumers.
//!
//! A producer owns one dispatcher. The dispatcher keeps the demand of every consumer and, given
//! a batch of events, decides which consumer gets which events. It does no I/O: it hands each
//! consumer's message to a [`Deliver`] and leaves what it cannot deliver in the batch, which the
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
//! first, and the rest goes to `handle_demand`. A dispatcher MUST NOT deliver to a consumer more
//! events than that consumer asked for.

mod demand;

pub use demand::DemandDispatcher;

use crate::error::SubscribeError;
use crate::subscription::{SubscribeOptions, SubscriptionId};

/// Where a dispatcher sends each consumer's message: one call per consumer per dispatch.
pub type Deliver<'a, T> = dyn FnMut(SubscriptionId, Vec<T>) + 'a;

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
    fn cancel(&mut self, sub: SubscriptionId) -> usize;

    /// A consumer asked for `n` more events. Returns the demand the producer should now
    /// satisfy.
    fn ask(&mut self, sub: SubscriptionId, n: usize) -> usize;

    /// Sends what it can of `events` through `deliver` and leaves the rest, in order, in
    /// `events`.
    fn dispatch(&mut self, events: &mut Vec<T>, deliver: &mut Deliver<'_, T>);
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
    fn cancel(&mut self, sub: SubscriptionId) -> usize {
        (**self).cancel(sub)
    }
    fn ask(&mut self, sub: SubscriptionId, n: usize) -> usize {
        (**self).ask(sub, n)
    }
    fn dispatch(&mut self, events: &mut Vec<T>, deliver: &mut Deliver<'_, T>) {
        (**self).dispatch(events, deliver)
    }
}
