//! [`Context`]: what a callback can do besides changing its own state: emit events, end the
//! stage, set timers, reply to calls, ask and cancel.

use std::convert::Infallible;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crossbeam_channel::Sender;

use crate::envelope::{Msg, Port, PortError};
use crate::error::{CallError, CastError};
use crate::reason::Reason;
use crate::subscription::SubscriptionId;
use crate::timer::{TimerId, Timers};

/// The handle on a stage's own runtime that every callback receives.
///
/// Effects are applied when the callback returns, in this order: emitted events are dispatched
/// (to consumers with demand, the rest to the buffer), then deferred replies are sent, then
/// asks, cancels and infos take effect, then the stage ends if it was asked to.
///
/// `Out` is the type of the events the stage emits; consumers get a
/// [`ConsumerContext`], whose `Out` has no values, so they cannot emit. `M` is the stage's
/// message type.
pub struct Context<'a, Out, M = ()> {
    pub(crate) fx: &'a mut Effects<Out, M>,
    pub(crate) name: &'a str,
    pub(crate) stop_requested: &'a AtomicBool,
    pub(crate) finishing: bool,
}

/// The context of a consumer: like [`Context`], without events to emit.
pub type ConsumerContext<'a, M = ()> = Context<'a, Infallible, M>;

/// How a callback asked its stage to end.
#[derive(Debug)]
pub(crate) enum End {
    /// Deliver what is buffered, then end with [`Reason::Normal`].
    Finish,
    /// End now.
    Stop(Reason),
}

type DeferredReply = Box<dyn FnOnce() + Send>;

pub(crate) struct Effects<Out, M> {
    pub(crate) emitted: Vec<Out>,
    /// Room the output gets when the first event is emitted into it: the batch being handled
    /// (a producer-consumer's output is often as long), reserved only if something is
    /// emitted one event at a time.
    pub(crate) room: usize,
    pub(crate) end: Option<End>,
    pub(crate) replies: Vec<DeferredReply>,
    pub(crate) infos: Vec<M>,
    pub(crate) asks: Vec<(SubscriptionId, usize)>,
    pub(crate) cancels: Vec<(SubscriptionId, Reason)>,
    pub(crate) timers: Timers<M>,
    /// Makes a mailbox to this stage; `None` for a stage in a scope.
    pub(crate) mint: Option<crate::runner::Mint<M>>,
}

impl<Out, M> Effects<Out, M> {
    pub(crate) fn new(mint: Option<crate::runner::Mint<M>>) -> Effects<Out, M> {
        Effects {
            mint,
            emitted: Vec::new(),
            room: 0,
            end: None,
            replies: Vec::new(),
            infos: Vec::new(),
            asks: Vec::new(),
            cancels: Vec::new(),
            timers: Timers::new(),
        }
    }

    /// Whether anything other than emitted events waits to be applied.
    pub(crate) fn has_side_effects(&self) -> bool {
        self.end.is_some()
            || !self.replies.is_empty()
            || !self.infos.is_empty()
            || !self.asks.is_empty()
            || !self.cancels.is_empty()
    }
}

impl<Out, M> Context<'_, Out, M> {
    /// Emits one event. It is dispatched when the callback returns, with the others it emitted,
    /// in one message per consumer.
    #[inline]
    pub fn emit(&mut self, event: Out) {
        if self.fx.emitted.capacity() == 0 {
            self.fx.emitted.reserve(self.fx.room);
        }
        self.fx.emitted.push(event);
    }

    /// This callback's output so far, to add to directly.
    pub(crate) fn emitted(&mut self) -> &mut Vec<Out> {
        &mut self.fx.emitted
    }

    /// Makes `buffer` (emptied) this callback's output if nothing was emitted yet and no room
    /// was made for it: an allocation handed back (see `recycle`).
    pub(crate) fn emit_into(&mut self, buffer: Vec<Out>) {
        if self.fx.emitted.capacity() == 0 && buffer.is_empty() {
            self.fx.emitted = buffer;
        }
    }

    /// Emits every event of `events`, in order.
    #[inline]
    pub fn emit_all(&mut self, events: impl IntoIterator<Item = Out>) {
        if self.fx.emitted.capacity() == 0 {
            self.fx.emitted.reserve(self.fx.room);
        }
        self.fx.emitted.extend(events);
    }

    /// Emits the events of a `Vec`, in order: where nothing was emitted yet in this callback,
    /// the `Vec` itself becomes the output (nothing moved).
    pub(crate) fn emit_vec(&mut self, events: Vec<Out>) {
        if self.fx.emitted.is_empty() {
            self.fx.emitted = events;
        } else {
            self.fx.emitted.extend(events);
        }
    }

    /// Reserves room for `additional` more events in this callback's output, to avoid
    /// reallocations when the count is known.
    pub fn reserve(&mut self, additional: usize) {
        self.fx.emitted.reserve(additional);
    }

    /// Ends the stage normally once everything emitted so far has been delivered: a producer
    /// stops calling `handle_demand`, delivers its buffer to consumers as they ask, then its
    /// consumers see the end of the subscription ([`Reason::Normal`]). On a consumer, the stage
    /// ends when the callback returns.
    pub fn finish(&mut self) {
        if self.fx.end.is_none() {
            self.fx.end = Some(End::Finish);
        }
    }

    /// Ends the stage when the callback returns, with `reason`. Events still buffered are
    /// discarded (counted and logged). Consumers react to `reason` by their cancel mode.
    pub fn stop(&mut self, reason: Reason) {
        self.fx.end = Some(End::Stop(reason));
    }

    /// Whether someone called [`Stage::stop`](crate::Stage::stop). A callback that blocks (on a
    /// socket, say) should check this between blocking steps, so that the stage stops promptly.
    pub fn is_stop_requested(&self) -> bool {
        self.stop_requested.load(Ordering::Relaxed)
    }

    /// Whether the stage has been asked to finish: by [`Stage::finish`](crate::Stage::finish)
    /// (a [`Topology::drain`](crate::Topology::drain)), or by [`Context::finish`] in an earlier
    /// callback. A producer that reads its source in turns (a zero-delay
    /// [`send_after`](Context::send_after) per read) must stop scheduling reads once it is
    /// finishing: a timer that is always due keeps the stage from ending.
    ///
    /// ```
    /// use std::time::Duration;
    /// use stageflow::fns::ForEach;
    /// use stageflow::{Context, Producer, SubscribeOptions, Topology};
    ///
    /// /// Reads an endless source one turn at a time, while it has demand.
    /// struct Turns {
    ///     demand: usize,
    ///     next: u64,
    /// }
    ///
    /// impl Producer for Turns {
    ///     type Out = u64;
    ///     type Message = ();
    ///
    ///     fn handle_demand(&mut self, demand: usize, ctx: &mut Context<'_, u64>) {
    ///         if self.demand == 0 {
    ///             ctx.send_after((), Duration::ZERO);
    ///         }
    ///         self.demand += demand;
    ///     }
    ///
    ///     fn handle_message(&mut self, (): (), ctx: &mut Context<'_, u64>) {
    ///         if ctx.is_finishing() {
    ///             return; // no more turns: the stage delivers what it emitted, then ends
    ///         }
    ///         ctx.emit(self.next);
    ///         self.next += 1;
    ///         self.demand -= 1;
    ///         if self.demand > 0 {
    ///             ctx.send_after((), Duration::ZERO);
    ///         }
    ///     }
    /// }
    ///
    /// let source = stageflow::producer(Turns { demand: 0, next: 0 }).spawn()?;
    /// let sink = stageflow::consumer(ForEach::new(|_: u64| {}))
    ///     .subscribe_to(&source, SubscribeOptions::new())?
    ///     .spawn()?;
    /// let report = Topology::new().with(&source).with(&sink).drain(Duration::from_secs(5));
    /// assert!(report.is_complete(), "{report:?}");
    /// assert_eq!(source.counters().events_out, sink.counters().events_in);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_finishing(&self) -> bool {
        self.finishing
    }

    /// The stage's name.
    pub fn name(&self) -> &str {
        self.name
    }

    /// Delivers `msg` to this stage's `handle_message` after `delay`. A delay of zero delivers
    /// it on the stage's next turn, after messages already in its inbox.
    pub fn send_after(&mut self, msg: M, delay: Duration) -> TimerId {
        self.fx.timers.schedule(crate::timer::deadline(delay), msg)
    }

    /// Cancels a timer. Returns `false` if it already fired or was cancelled.
    pub fn cancel_timer(&mut self, timer: TimerId) -> bool {
        self.fx.timers.cancel(timer)
    }

    /// Replies to a call after the events emitted in this callback have been dispatched
    /// (GenStage's `{:reply, reply, events, state}`): consumers are sent the events before the
    /// caller gets the reply. To reply at once instead, use [`Reply::send`].
    pub fn reply<R: Send + 'static>(&mut self, reply: Reply<R>, value: R) {
        self.fx.replies.push(Box::new(move || {
            reply.send(value);
        }));
    }

    /// Delivers `msg` to this stage's `handle_message` once every event buffered so far has
    /// been dispatched (GenStage's `async_info`). With nothing buffered it comes on the next
    /// turn. The idiom "emit the last events, then `info(Done)`, and `finish` on `Done`" ends a
    /// stage after its last events have left.
    pub fn info(&mut self, msg: M) {
        self.fx.infos.push(msg);
    }

    /// Asks the producer of a manual subscription for `n` more events. An ask of 0 does
    /// nothing.
    pub fn ask(&mut self, subscription: SubscriptionId, n: usize) {
        if n > 0 {
            self.fx.asks.push((subscription, n));
        }
    }

    /// A mailbox to this stage, to hand to other threads (a worker this stage started, say) so
    /// they can send it messages. Like a handle, a mailbox keeps the stage reachable: a stage
    /// that stores a mailbox to itself only ends by finishing, failing or being stopped.
    ///
    /// A stage started in a scope ([`spawn_scoped`](crate::ScopedBuilder::spawn_scoped)) has
    /// no mailbox, since a mailbox could outlive the scope: the one it gets refuses every
    /// message with [`CastError::Stopped`] (and this logs a warning). Its handle's
    /// [`cast`](crate::ScopedStage::cast) works within the scope.
    pub fn mailbox(&self) -> Mailbox<M> {
        match &self.fx.mint {
            Some(mint) => mint(),
            None => {
                log::warn!(
                    "stage {}: runs in a scope, so its mailbox refuses every message",
                    self.name
                );
                Mailbox::new(Box::new(Closed))
            }
        }
    }

    /// Cancels a subscription of this stage, upstream or downstream, with `reason`. The
    /// consumer's `handle_cancel` runs, and it reacts by its cancel mode, once the producer has
    /// confirmed; events sent before that are still handled.
    pub fn cancel(&mut self, subscription: SubscriptionId, reason: Reason) {
        self.fx.cancels.push((subscription, reason));
    }
}

impl<Out, M> fmt::Debug for Context<'_, Out, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("name", &self.name)
            .field("emitted", &self.fx.emitted.len())
            .finish()
    }
}

/// Where the reply to a [`call`](crate::Stage::call) goes.
///
/// A call puts a `Reply` inside the message it sends; the stage answers with
/// [`Context::reply`] (after its events are dispatched) or [`Reply::send`] (at once, even from
/// another callback later). Dropping it unanswered makes the call fail with
/// [`CallError::NoReply`](crate::CallError::NoReply), or with
/// [`CallError::Stopped`](crate::CallError::Stopped) if it is dropped because the stage is
/// ending (it stopped, or a callback panicked).
pub struct Reply<R> {
    tx: Option<Sender<Result<R, CallError>>>,
}

thread_local! {
    /// Set on a stage's thread once its loop has ended: replies dropped from then on were
    /// dropped because the stage stopped.
    static ENDING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Marks the current thread's stage as ending (see [`Reply`]).
pub(crate) fn mark_ending() {
    set_ending(true);
}

/// Marks the stage running on this thread as ending or not: a simulation steps many stages
/// on one thread, and says so before each.
pub(crate) fn set_ending(ending: bool) {
    ENDING.with(|e| e.set(ending));
}

impl<R> Reply<R> {
    pub(crate) fn new(tx: Sender<Result<R, CallError>>) -> Reply<R> {
        Reply { tx: Some(tx) }
    }

    /// Sends the reply now. Returns `false` if the caller has stopped waiting.
    ///
    /// "Now" is before the events emitted in the same callback are dispatched and before the
    /// stage publishes its counters: a caller that reads
    /// [`Stage::counters`](crate::Stage::counters) as soon as the call returns may not see
    /// this turn's work yet. [`Context::reply`] replies after both.
    pub fn send(mut self, value: R) -> bool {
        match self.tx.take() {
            Some(tx) => tx.try_send(Ok(value)).is_ok(),
            None => false,
        }
    }
}

impl<R> Drop for Reply<R> {
    fn drop(&mut self) {
        if let Some(tx) = self.tx.take() {
            if std::thread::panicking() || ENDING.with(|e| e.get()) {
                let _ = tx.try_send(Err(CallError::Stopped));
            }
            // Otherwise the caller sees the channel close: NoReply.
        }
    }
}

impl<R> fmt::Debug for Reply<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Reply { .. }")
    }
}

/// Sends messages to one stage's `handle_message` from any thread; made by
/// [`Context::mailbox`]. Cloning is cheap.
pub struct Mailbox<M> {
    port: Box<dyn Port<Msg<M>>>,
}

impl<M> Mailbox<M> {
    pub(crate) fn new(port: Box<dyn Port<Msg<M>>>) -> Mailbox<M> {
        Mailbox { port }
    }

    /// Sends `msg`, waiting while the stage's inbox is full.
    ///
    /// # Errors
    ///
    /// [`CastError::Stopped`] with the message if the stage has ended.
    pub fn cast(&self, msg: M) -> Result<(), CastError<M>> {
        self.port
            .send(Msg(msg))
            .map_err(|m| CastError::Stopped(m.0))
    }

    /// Sends `msg` if the inbox has room.
    ///
    /// # Errors
    ///
    /// [`CastError::Full`] or [`CastError::Stopped`], with the message.
    pub fn try_cast(&self, msg: M) -> Result<(), CastError<M>> {
        self.port.try_send(Msg(msg)).map_err(|e| match e {
            PortError::Full(m) => CastError::Full(m.0),
            PortError::Gone(m) => CastError::Stopped(m.0),
        })
    }
}

/// The port of a mailbox to a stage in a scope: every send fails as to a stage that ended.
struct Closed;

impl<M> Port<M> for Closed {
    fn try_send(&self, msg: M) -> Result<(), PortError<M>> {
        Err(PortError::Gone(msg))
    }
    fn send(&self, msg: M) -> Result<(), M> {
        Err(msg)
    }
    fn send_urgent(&self, msg: M) -> Result<(), M> {
        Err(msg)
    }
    fn register<'a>(&'a self, _: &mut crossbeam_channel::Select<'a>) -> usize {
        unreachable!("a mailbox never waits in a select")
    }
    fn send_selected(&self, _: crossbeam_channel::SelectedOperation<'_>, msg: M) -> Result<(), M> {
        Err(msg)
    }
    fn clone_box<'s>(&self) -> crate::envelope::PortBox<'s, M>
    where
        Self: 's,
    {
        Box::new(Closed)
    }
}

impl<M: 'static> Clone for Mailbox<M> {
    fn clone(&self) -> Self {
        Mailbox {
            port: self.port.clone_box(),
        }
    }
}

impl<M> fmt::Debug for Mailbox<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Mailbox { .. }")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_handed_in_becomes_the_output_only_before_anything_is_emitted() {
        let mut fx: Effects<u32, ()> = Effects::new(None);
        let stop = AtomicBool::new(false);
        let mut ctx = Context {
            fx: &mut fx,
            name: "t",
            stop_requested: &stop,
            finishing: false,
        };
        let buffer: Vec<u32> = Vec::with_capacity(64);
        let at = buffer.as_ptr();
        ctx.emit_into(buffer);
        ctx.emit(1);
        ctx.emit_into(Vec::with_capacity(8));
        ctx.emit(2);
        assert_eq!(fx.emitted, [1, 2]);
        assert_eq!(fx.emitted.as_ptr(), at, "the buffer handed in");
    }
}
