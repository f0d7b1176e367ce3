//! The three traits a user implements: [`Producer`], [`ProducerConsumer`] and [`Consumer`].
//!
//! Each has one required callback (`handle_demand` or `handle_events`) and defaulted hooks for
//! the stage's own messages, subscriptions and cancellations. Every callback runs on the
//! stage's own thread, one at a time, and acts through its [`Context`].
//!
//! # Panics
//!
//! A callback that panics ends its stage with [`Reason::Panicked`] and the panic message. The
//! panic is caught on the stage's thread and never reaches other threads; the stage's consumers
//! are told and react by their [`CancelMode`](crate::CancelMode), its producers drop it.

use log::warn;

use crate::context::{ConsumerContext, Context};
use crate::events::Events;
use crate::reason::Reason;
use crate::subscription::{DemandMode, Subscription};

/// A stage that emits events when its consumers ask for them (GenStage's `:producer`).
///
/// # For implementors
///
/// `handle_demand(n)` is called once per ask that the buffer could not cover, with the part it
/// did not cover; demands are never summed. Emit up to `n` events with [`Context::emit`]: more
/// go to the buffer, fewer are fine, but then the producer must remember the unmet demand
/// itself (GenStage calls it "buffering demand"), because `handle_demand` is not called again
/// for it. Events can also be emitted from `handle_message` (a cast, a call, a timer).
///
/// Call [`Context::finish`] when there is nothing more to produce: the buffer is delivered,
/// then consumers see the end.
///
/// # Examples
///
/// ```
/// use stageflow::{Context, Producer};
///
/// /// Counts up from `next`, one event per unit of demand.
/// struct Counter {
///     next: u64,
/// }
///
/// impl Producer for Counter {
///     type Out = u64;
///     type Message = ();
///
///     fn handle_demand(&mut self, demand: usize, ctx: &mut Context<'_, u64>) {
///         for _ in 0..demand {
///             ctx.emit(self.next);
///             self.next += 1;
///         }
///     }
/// }
/// ```
pub trait Producer: Send {
    /// The events this producer emits.
    type Out: Send;
    /// Messages that [`cast`](crate::Stage::cast), [`call`](crate::Stage::call),
    /// [`info`](crate::Stage::info) and timers deliver to `handle_message`. Use `()` if none.
    type Message: Send;

    /// Consumers asked for `demand` more events than the buffer holds. Emit them with `ctx`.
    fn handle_demand(&mut self, demand: usize, ctx: &mut Context<'_, Self::Out, Self::Message>);

    /// Handles one of the stage's own messages. It may emit events. The default logs the
    /// message as unhandled at warn level and drops it (a call in it fails with
    /// [`CallError::NoReply`](crate::CallError::NoReply)).
    fn handle_message(
        &mut self,
        msg: Self::Message,
        ctx: &mut Context<'_, Self::Out, Self::Message>,
    ) {
        unhandled(ctx.name(), msg);
    }

    /// A consumer subscribed. It may emit events. The default does nothing.
    fn handle_subscribe(
        &mut self,
        consumer: &Subscription,
        ctx: &mut Context<'_, Self::Out, Self::Message>,
    ) {
        let _ = (consumer, ctx);
    }

    /// A consumer left, cancelled or ended, with `reason`. It may emit events. The default
    /// does nothing.
    fn handle_cancel(
        &mut self,
        consumer: &Subscription,
        reason: &Reason,
        ctx: &mut Context<'_, Self::Out, Self::Message>,
    ) {
        let _ = (consumer, reason, ctx);
    }

    /// The stage is ending with `reason`, after its peers were told and before its handles'
    /// [`join`](crate::Stage::join) returns: release what it holds, wait for work it started
    /// elsewhere (a [`Supervisor`](crate::Supervisor) waits for its running workers here).
    /// Called however the stage ends, even after a panic. GenStage's `terminate/2`. The
    /// default does nothing.
    fn terminate(&mut self, reason: &Reason) {
        let _ = reason;
    }

    /// The buffer was full and `count` events were discarded by its keep policy (they are
    /// counted in any case). Return `true` to have the runtime log the usual warning, `false`
    /// if you logged it yourself or want it quiet (GenStage's `format_discarded`). Defaults to
    /// `true`.
    fn format_discarded(&mut self, count: usize) -> bool {
        let _ = count;
        true
    }
}

/// A stage in the middle: it consumes events from producers and emits events to consumers
/// (GenStage's `:producer_consumer`).
///
/// It asks its producers for events at once, but handles an incoming message only while its
/// consumers have demand; what one message produces beyond that demand is buffered (1:n fan-out
/// is fine). When a producer finishes normally, it handles what it has received and delivers
/// its buffer before it finishes itself: nothing is lost.
///
/// # For implementors
///
/// `handle_events` turns a batch into any number of output events (1:1, 1:n or n:0).
///
/// # Examples
///
/// ```
/// use stageflow::{Context, Events, ProducerConsumer};
///
/// /// Doubles every number.
/// struct Doubler;
///
/// impl ProducerConsumer for Doubler {
///     type In = u64;
///     type Out = u64;
///     type Message = ();
///
///     fn handle_events(&mut self, events: Events<'_, u64>, ctx: &mut Context<'_, u64>) {
///         ctx.emit_all(events.map(|x| x * 2));
///     }
/// }
/// ```
pub trait ProducerConsumer: Send {
    /// The events it consumes.
    type In: Send;
    /// The events it emits.
    type Out: Send;
    /// The stage's own messages (see [`Producer::Message`]).
    type Message: Send;

    /// Handles one batch of incoming events; emit the results with `ctx`.
    fn handle_events(
        &mut self,
        events: Events<'_, Self::In>,
        ctx: &mut Context<'_, Self::Out, Self::Message>,
    );

    /// Handles one of the stage's own messages. The default logs it as unhandled and drops it.
    fn handle_message(
        &mut self,
        msg: Self::Message,
        ctx: &mut Context<'_, Self::Out, Self::Message>,
    ) {
        unhandled(ctx.name(), msg);
    }

    /// A subscription began: to a producer ([`Direction::Upstream`](crate::Direction)), where
    /// the returned mode applies, or from a consumer, where it is ignored. The default returns
    /// [`DemandMode::Automatic`].
    fn handle_subscribe(
        &mut self,
        subscription: &Subscription,
        ctx: &mut Context<'_, Self::Out, Self::Message>,
    ) -> DemandMode {
        let _ = (subscription, ctx);
        DemandMode::Automatic
    }

    /// A subscription ended, upstream or downstream, with `reason`. The default does nothing.
    fn handle_cancel(
        &mut self,
        subscription: &Subscription,
        reason: &Reason,
        ctx: &mut Context<'_, Self::Out, Self::Message>,
    ) {
        let _ = (subscription, reason, ctx);
    }

    /// The stage is ending with `reason`, after its peers were told and before its handles'
    /// [`join`](crate::Stage::join) returns: release what it holds, wait for work it started
    /// elsewhere (a [`Supervisor`](crate::Supervisor) waits for its running workers here).
    /// Called however the stage ends, even after a panic. GenStage's `terminate/2`. The
    /// default does nothing.
    fn terminate(&mut self, reason: &Reason) {
        let _ = reason;
    }

    /// The buffer was full and `count` events were discarded by its keep policy (they are
    /// counted in any case). Return `true` to have the runtime log the usual warning, `false`
    /// if you logged it yourself or want it quiet (GenStage's `format_discarded`). Defaults to
    /// `true`.
    fn format_discarded(&mut self, count: usize) -> bool {
        let _ = count;
        true
    }
}

/// A stage at the end: it consumes events (GenStage's `:consumer`).
///
/// # For implementors
///
/// `handle_events` receives batches cut by the subscription's `max_demand - min_demand`; the
/// stage asks for more after each batch returns, so a slow `handle_events` slows its producers
/// down instead of queueing events.
///
/// # Examples
///
/// ```
/// use stageflow::{ConsumerContext, Consumer, Events};
///
/// /// Adds up what it receives.
/// struct Sum(u64);
///
/// impl Consumer for Sum {
///     type In = u64;
///     type Message = ();
///
///     fn handle_events(&mut self, events: Events<'_, u64>, _ctx: &mut ConsumerContext<'_>) {
///         self.0 += events.sum::<u64>();
///     }
/// }
/// ```
pub trait Consumer: Send {
    /// The events it consumes.
    type In: Send;
    /// The stage's own messages (see [`Producer::Message`]).
    type Message: Send;

    /// Handles one batch of events.
    fn handle_events(
        &mut self,
        events: Events<'_, Self::In>,
        ctx: &mut ConsumerContext<'_, Self::Message>,
    );

    /// Handles one of the stage's own messages. The default logs it as unhandled and drops it.
    fn handle_message(&mut self, msg: Self::Message, ctx: &mut ConsumerContext<'_, Self::Message>) {
        unhandled(ctx.name(), msg);
    }

    /// A subscription to a producer began. Return [`DemandMode::Manual`] to ask yourself. The
    /// default returns [`DemandMode::Automatic`].
    fn handle_subscribe(
        &mut self,
        producer: &Subscription,
        ctx: &mut ConsumerContext<'_, Self::Message>,
    ) -> DemandMode {
        let _ = (producer, ctx);
        DemandMode::Automatic
    }

    /// A subscription ended with `reason` (after every event sent on it was handled). The
    /// consumer then ends or not by the subscription's cancel mode (with several producers, a
    /// normal end of a permanent subscription ends it once its last subscription has ended).
    /// A temporary subscription given at build time to a producer that had already ended is
    /// reported here too, with a `noproc` [`Reason::Error`]. The default does nothing.
    fn handle_cancel(
        &mut self,
        producer: &Subscription,
        reason: &Reason,
        ctx: &mut ConsumerContext<'_, Self::Message>,
    ) {
        let _ = (producer, reason, ctx);
    }

    /// The stage is ending with `reason`, after its peers were told and before its handles'
    /// [`join`](crate::Stage::join) returns: release what it holds, wait for work it started
    /// elsewhere (a [`Supervisor`](crate::Supervisor) waits for its running workers here).
    /// Called however the stage ends, even after a panic. GenStage's `terminate/2`. The
    /// default does nothing.
    fn terminate(&mut self, reason: &Reason) {
        let _ = reason;
    }
}

fn unhandled<M>(name: &str, msg: M) {
    warn!(
        "stage {name}: unhandled message of type {}; dropped",
        std::any::type_name::<M>()
    );
    drop(msg);
}
