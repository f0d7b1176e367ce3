//! The stage loop: one thread, one inbox, the credit protocol of [`crate::demand`] applied to
//! every message.
//!
//! The loop waits on the inbox (with the earliest timer as deadline), handles one envelope,
//! applies the effects its callback asked for, and settles what that left to do. Only this
//! thread touches the stage's state; handles see it through [`Shared`].
//!
//! The state is in parts that call no callback and return what the loop must do next:
//!
//! * [`Inlet`] (`inlet.rs`), the input side: links to producers, pending subscriptions, a
//!   producer-consumer's queue, and how each message is cut into batches;
//! * [`Emitter`] (`emitter.rs`), the output side: links to consumers, the dispatcher, the
//!   buffer, held-back events, demand;
//! * [`Lifecycle`] (`lifecycle.rs`): running, draining, finishing, exiting.
//!
//! This file sequences them: envelope → inlet → callback → emitter, and the lifecycle after.
//! `wait.rs` holds the waits with a deadline or a backlog, `end.rs` the end, `callbacks.rs` the three user traits.

mod callbacks;
mod discards;
mod emitter;
mod end;
mod held;
mod inlet;
mod lifecycle;
mod links;
mod polling;
mod step;
mod wait;

pub(crate) use callbacks::{AsConsumer, AsProducer, AsProducerConsumer, Callbacks};

pub(crate) use end::{EndTurn, Ending};

use discards::Discards;
use emitter::{Emitter, Flushed, Replayed};
use inlet::{Confirmed, Inlet, Receipt};
use lifecycle::{Lifecycle, UpstreamEnd};
use links::Inbound;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvError, TryRecvError};
use log::{error, info, warn};

use crate::context::{Context, Effects, End, Mailbox};
use crate::demand::{Batch, Fill};
use crate::dispatcher::Dispatch;
use crate::envelope::{Control, Down, Envelope, SubscribeRequest, Subscribed, Up};
use crate::events::Events;
use crate::handle::Kept;
use crate::reason::Reason;
use crate::recycle::Recycler;
use crate::shared::{bump, Shared};
use crate::subscription::{BufferKeep, ProducerDemand, Subscription, SubscriptionId};
use crate::timing::Waiting;

/// How full an inbox is, for adaptive demand (see `Inlet::ask_after_batch`).
fn inbox_fill<E>(inbox: &Receiver<E>) -> Fill {
    let len = inbox.len();
    if len == 0 {
        Fill::Empty
    } else if inbox.capacity().is_some_and(|c| len >= c) {
        Fill::Full
    } else {
        Fill::Some
    }
}

/// What a turn that is not the common one came to.
pub(crate) enum Turned {
    /// It handled something, or changed what the next turn does.
    Worked,
    /// It found nothing to do (only without blocking): nothing will change before a message
    /// comes or the time given (a timer's) is reached.
    Idle(Option<Instant>),
    /// The stage ends, for this reason.
    End(Reason),
}

/// The producer-side settings of a stage.
pub(crate) struct Config<'e, Out> {
    pub(crate) dispatcher: Dispatch<'e, Out>,
    pub(crate) demand: ProducerDemand,
    pub(crate) buffer_size: Option<usize>,
    pub(crate) buffer_keep: BufferKeep,
    /// Keep the stage's value for `Stage::join_state` when it ends.
    pub(crate) keep_state: bool,
    /// How long an ending stage waits for its producers to confirm its cancels.
    pub(crate) confirm_timeout: Duration,
    /// Where a producer takes the buffers it emits from (see `recycle`).
    pub(crate) recycler: Option<Recycler<Out>>,
}

/// At most this many control messages are handled per turn, so that a flood of them cannot
/// starve the inbox either.
const CONTROL_PER_TURN: usize = 64;

/// A stage that never waits publishes its `buffered` counter every this many turns; it
/// publishes it too before it waits, before it replies to a call, and when it ends.
const PUBLISH_EVERY: u32 = 32;

type Env<'e, S> = Envelope<'e, <S as Callbacks>::In, <S as Callbacks>::Out, <S as Callbacks>::Msg>;

/// Makes a mailbox to a stage (a stage in a scope has none: see `Context::mailbox`).
pub(crate) type Mint<M> = Box<dyn Fn() -> Mailbox<M> + Send>;

pub(crate) struct Runner<'e, S: Callbacks + 'e> {
    stage: S,
    shared: Arc<Shared>,
    inbox: Receiver<Env<'e, S>>,
    /// What handles send: stop, cancel, ask, subscribe, demand mode (see `Counted`).
    control: Receiver<Env<'e, S>>,
    /// What the last callback asked for, and the timers.
    fx: Effects<S::Out, S::Msg>,
    inlet: Inlet<'e, S::In, S::Msg>,
    emitter: Emitter<'e, S::Out, S::Msg>,
    life: Lifecycle,
    discards: Discards,
    /// Where the stage's value goes when it ends, for `Stage::join_state` (`keep_state`).
    kept: Option<Kept<S::State>>,
    /// See `StageBuilder::confirm_timeout`.
    confirm_timeout: Duration,
    /// A timer is due and waits behind this many queued messages.
    timer_gate: Option<usize>,
    /// Build-time temporary subscriptions whose producer had already ended.
    failed: Vec<Subscription>,
    /// The last turn handled control: this one looks at the inbox first.
    control_turn: bool,
    /// The `buffered` counter as last published.
    published: usize,
    /// Turns settled since the `buffered` counter was last published.
    unpublished: u32,
    /// How many times the next wait polls the inbox before it blocks.
    polls: polling::Polls,
    /// Where `handle_demand` takes an emptied buffer from before it allocates one.
    recycler: Option<Recycler<S::Out>>,
}

impl<'e, S: Callbacks> Runner<'e, S> {
    /// A producer: an emitter and no inlet.
    const PRODUCER: bool = S::EMITS && !S::RECEIVES;
    /// A producer-consumer: it handles input only while downstream has demand.
    const GATED: bool = S::EMITS && S::RECEIVES;

    pub(crate) fn new(
        stage: S,
        shared: Arc<Shared>,
        channels: (Receiver<Env<'e, S>>, Receiver<Env<'e, S>>),
        mint: Option<Mint<S::Msg>>,
        config: Config<'e, S::Out>,
        kept: Kept<S::State>,
        failed: Vec<Subscription>,
    ) -> Runner<'e, S> {
        let (inbox, control) = channels;
        let accumulate = Self::PRODUCER && config.demand == ProducerDemand::Accumulate;
        Runner {
            stage,
            inbox,
            control,
            fx: Effects::new(mint),
            inlet: Inlet::new(shared.clone()),
            emitter: Emitter::new(
                shared.clone(),
                config.dispatcher,
                config.buffer_size,
                config.buffer_keep,
                accumulate,
            ),
            life: Lifecycle::new(),
            discards: Discards::new(shared.clone()),
            shared,
            kept: config.keep_state.then_some(kept),
            confirm_timeout: config.confirm_timeout,
            timer_gate: None,
            failed,
            control_turn: false,
            published: 0,
            unpublished: 0,
            polls: polling::Polls::new(),
            recycler: config.recycler,
        }
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Where the stage's value is kept for `Stage::join_state`, if it is.
    pub(crate) fn kept(&self) -> Option<Kept<S::State>> {
        self.kept.clone()
    }

    /// The stage's value; the rest of the runner is dropped.
    pub(crate) fn into_stage(self) -> S {
        self.stage
    }

    /// The stage's own `terminate` callback.
    pub(crate) fn terminate_stage(&mut self, reason: &Reason) {
        self.stage.terminate(reason);
    }

    // -- The loop ----------------------------------------------------------------------------

    /// Runs until the stage ends; returns why.
    ///
    /// Every turn handles at most one envelope from the inbox (plus what handles sent on the
    /// control path), then settles what that left to do, and comes back: no loop inside a
    /// turn is unbounded, so calls and stops are always served.
    pub(crate) fn run(&mut self) -> Reason {
        let _live = polling::Live::enter();
        self.report_failed();
        loop {
            if let Some(reason) = self.life.take_exit() {
                return reason;
            }
            if self.stop_requested() {
                return Reason::Shutdown;
            }
            // Control and the inbox take turns when both have work, so neither starves.
            if !std::mem::take(&mut self.control_turn) && self.handle_control() {
                // Control was this turn's work: settle it (a switch to forward demand can
                // finish the stage, say) before waiting on the inbox.
                self.control_turn = true;
                self.settle();
                continue;
            }
            if self.only_the_inbox() {
                // The common turn: block on the inbox, handle what comes.
                match self.next_envelope() {
                    Ok(env) => self.handle(env),
                    Err(_) => return self.life.unreachable_reason(),
                }
            } else if let Turned::End(reason) = self.turn::<true>() {
                return reason;
            }
            self.settle();
        }
    }

    /// Build-time temporary subscriptions whose producer had already ended: the stage's
    /// `handle_cancel` hears of each before anything else.
    fn report_failed(&mut self) {
        for info in std::mem::take(&mut self.failed) {
            let reason = Reason::error(format!("noproc: producer {} has ended", info.peer));
            warn!(
                "stage {}: subscription to {} failed: {reason}",
                self.shared.name, info.peer
            );
            self.invoke(|s, ctx| s.cancelled(&info, &reason, ctx));
        }
    }

    /// The next envelope from the inbox, blocking until one comes.
    ///
    /// A peer in lock step (a consumer asking one event at a time) answers within a
    /// microsecond, and crossbeam's own wait backs off exponentially: after a few hundred
    /// nanoseconds it looks at the channel only every 0.4, then 0.7, then 1.5 µs, so an answer
    /// that comes a little later is seen much later. The stage first polls the inbox at a
    /// fine grain (64 times, a pause apart: about 1.5 µs here) and hands over to crossbeam's
    /// wait only then. The budget adapts: a poll that found nothing halves it (down to 2: a
    /// stage whose peers are slow, or that shares a core with them, does not burn time it
    /// could give them), one that found a message restores it (`polling::Polls`).
    ///
    /// Polling pays only while every stage thread can have a core of its own; with more
    /// stages than cores it would take time from a stage that could run, so it does not poll.
    /// It yields instead (`polling::YIELDS` times, looking at the inbox after each): the
    /// core goes to a stage that can run, most likely the one that will feed this one, and
    /// this one mostly finds its message on coming back instead of parking. A park and the
    /// wake-up after it (two futex calls and a context switch) were what a chain of three
    /// stages on two cores spent most of its time on.
    ///
    /// Before it blocks, the stage publishes its `buffered` counter: an idle stage's is exact.
    #[inline]
    fn next_envelope(&mut self) -> Result<Env<'e, S>, RecvError> {
        let polls = self.polls.budget();
        for _ in 0..polls {
            match self.inbox.try_recv() {
                Ok(env) => {
                    self.polls.found();
                    return Ok(env);
                }
                Err(TryRecvError::Empty) => std::hint::spin_loop(),
                Err(TryRecvError::Disconnected) => return Err(RecvError),
            }
        }
        self.polls.missed(polls);
        let yields = self.polls.yields();
        if yields > 0 {
            // Not polled: one look before the wait is timed (a message already there is no wait).
            match self.inbox.try_recv() {
                Ok(env) => return Ok(env),
                Err(TryRecvError::Empty) => {}
                Err(TryRecvError::Disconnected) => return Err(RecvError),
            }
        }
        self.publish_buffered();
        // The yields are part of the wait: the time another stage ran on this core counts as
        // waiting for input, as the time blocked does.
        let waiting = self.shared.timing.wait_from(None);
        let got = match yields {
            0 => self.inbox.recv(),
            yields => self.yield_then_recv(yields),
        };
        let ready = || Waiting::of(S::KIND, false, || self.emitter.ready());
        self.shared.timing.waited(waiting, ready);
        got
    }

    /// Yields the core up to `yields` times, looking at the inbox after each, then blocks on
    /// it (see [`next_envelope`](Runner::next_envelope)).
    #[inline(never)]
    fn yield_then_recv(&mut self, yields: u32) -> Result<Env<'e, S>, RecvError> {
        for _ in 0..yields {
            std::thread::yield_now();
            match self.inbox.try_recv() {
                Ok(env) => {
                    self.polls.yielded(true);
                    return Ok(env);
                }
                Err(TryRecvError::Empty) => {}
                Err(TryRecvError::Disconnected) => return Err(RecvError),
            }
        }
        self.polls.yielded(false);
        self.inbox.recv()
    }

    /// Nothing but the inbox can give this turn work: no timer, no backlog, no demand or
    /// departed consumer waiting, and the stage is still referenced.
    #[inline]
    fn only_the_inbox(&self) -> bool {
        self.fx.timers.is_empty()
            && self.timer_gate.is_none()
            && !self.emitter.has_pending_demand()
            && !self.emitter.any_gone()
            && !self.emitter.any_closed()
            && self.shared.refs.load(Ordering::Acquire) != 0
            && !self.any_backlog()
    }

    /// A turn with more to attend to than the inbox: the stage may be unreachable, backlogs
    /// may have room, timers may be due. Returns why the stage ends, if it does.
    ///
    /// `BLOCK`: wait for a message as long as there is nothing else to do (a stage thread);
    /// without it the turn only looks (a simulation's step, `step.rs`), and says whether it
    /// found anything to do.
    #[inline(never)]
    fn turn<const BLOCK: bool>(&mut self) -> Turned {
        if self.unreachable() {
            return Turned::End(self.life.unreachable_reason());
        }
        let before = if BLOCK { 0 } else { self.backlog_len() };
        let mut backlog = self.any_backlog();
        if backlog || self.emitter.any_closed() {
            self.flush_backlogs();
            backlog = self.any_backlog();
        }
        // A timer that is due takes its place behind the messages already queued, as a
        // message sent to itself would: they are handled first, then it fires.
        let deadline = if self.fx.timers.is_empty() {
            None
        } else {
            self.fx.timers.next_deadline()
        };
        let mut gated = false;
        if let Some(d) = deadline {
            if self.timer_gate.is_none() && crate::clock::now() >= d {
                self.timer_gate = Some(self.inbox.len());
                gated = true;
            }
        }
        if self.timer_gate == Some(0) {
            self.timer_gate = None;
            self.fire_timers();
            return Turned::Worked;
        }
        let work_waits = self.emitter.has_pending_demand() || self.emitter.any_gone();
        let wait_until = if work_waits {
            // Work is waiting: look at the inbox without blocking.
            Some(crate::clock::now())
        } else if self.timer_gate.is_some() {
            None
        } else {
            deadline
        };
        // An idle stage's `buffered` counter is exact.
        self.publish_buffered();
        let got = if BLOCK {
            let waiting = self.shared.timing.wait_from(wait_until);
            let got = self.wait(wait_until, backlog);
            let ready = || Waiting::of(S::KIND, backlog, || self.emitter.ready());
            self.shared.timing.waited(waiting, ready);
            got
        } else {
            self.poll(backlog)
        };
        match got {
            wait::Wait::Msg(env) => {
                if let Some(gate) = &mut self.timer_gate {
                    *gate = gate.saturating_sub(1);
                }
                self.handle(env);
                Turned::Worked
            }
            wait::Wait::Timeout if BLOCK || work_waits || gated || self.backlog_len() != before => {
                Turned::Worked
            }
            wait::Wait::Timeout => Turned::Idle(wait_until),
            wait::Wait::Disconnected => Turned::End(self.life.unreachable_reason()),
        }
    }

    /// Handles what handles sent on the control path (at most [`CONTROL_PER_TURN`]).
    /// Returns whether it handled any.
    #[inline]
    fn handle_control(&mut self) -> bool {
        if !self.shared.control_pending.load(Ordering::Relaxed) {
            return false;
        }
        self.handle_control_slow()
    }

    #[inline(never)]
    fn handle_control_slow(&mut self) -> bool {
        if !self.shared.control_pending.swap(false, Ordering::Acquire) {
            return false;
        }
        let mut any = false;
        for _ in 0..CONTROL_PER_TURN {
            match self.control.try_recv() {
                Ok(env) => self.handle(env),
                Err(_) => return any,
            }
            any = true;
            if self.life.is_exiting() {
                break;
            }
        }
        // More may wait: look again next time.
        self.shared.control_pending.store(true, Ordering::Relaxed);
        any
    }

    /// The end of a turn: remove consumers found gone, serve demand a dispatcher created (once:
    /// more of it waits for the next turn), deliver what the buffer holds to the demand the
    /// dispatcher has, and see whether a draining or finishing stage is done.
    ///
    /// The common turn (nothing gone, pending, buffered or finishing) costs a few checks; the
    /// rest is out of line. Always inlined: with `step` as a second caller the compiler took
    /// it out of the loop (f +1.1 % in instructions).
    #[inline(always)]
    fn settle(&mut self) {
        if self.life.is_exiting() {
            return;
        }
        if self.emitter.any_gone() {
            self.reap_gone();
        }
        if self.emitter.has_pending_demand() && !self.life.is_exiting() {
            self.serve_pending_demand();
        }
        if !self.life.is_exiting() && !self.emitter.is_accumulating() {
            if Self::GATED {
                if !self.inlet.queue_is_empty() || !self.emitter.buffer_is_empty() {
                    self.pump();
                }
            } else if !self.emitter.buffer_is_empty() {
                self.flush_buffer();
            }
        }
        if self.life.is_draining() {
            self.drained();
        }
        self.discards.tick();
        if self.life.is_finishing() {
            self.check_finished();
        }
        // A busy stage publishes every few turns; one about to wait publishes first.
        self.unpublished += 1;
        if self.unpublished >= PUBLISH_EVERY {
            self.publish_buffered();
        }
    }

    /// A handle asked the stage to stop: loops that take several steps in one turn (the
    /// batches of one message, a producer-consumer's queued input, a demand-mode replay) stop
    /// at the next step, and the turn's end ends the stage.
    #[inline]
    fn stop_requested(&self) -> bool {
        self.shared.stop_requested.load(Ordering::Relaxed)
    }

    /// Nothing can ever send this stage a message again (no handle, mailbox or peer holds a
    /// reference, and its inbox is empty) and it has no timer left: it can only idle forever,
    /// so it ends.
    fn unreachable(&self) -> bool {
        self.shared.refs.load(Ordering::Acquire) == 0
            && self.fx.timers.is_empty()
            && self.inbox.is_empty()
            && self.control.is_empty()
            && !self.emitter.has_pending_demand()
    }

    fn any_backlog(&self) -> bool {
        self.inlet.any_backlog() || self.emitter.any_backlog()
    }

    /// Messages waiting in backlogs, and closed links not yet dropped: a step that changed
    /// this did something (see [`Runner::turn`]).
    fn backlog_len(&self) -> usize {
        self.inlet.backlog_len() + self.emitter.backlog_len()
    }

    /// Sends what fits of every backlog; drops closed links whose backlog is delivered.
    fn flush_backlogs(&mut self) {
        self.emitter.flush_backlogs();
        self.inlet.flush_backlogs();
    }

    /// Publishes the `buffered` counter: events received and not yet handled, in the buffer,
    /// held back, or waiting in a backlog for room in a consumer's inbox.
    fn publish_buffered(&mut self) {
        self.unpublished = 0;
        let mut n = self.inlet.event_count();
        if S::EMITS {
            n += self.emitter.event_count();
        }
        // Only this thread writes the counter: store only what changed.
        if n != self.published {
            self.published = n;
            self.shared
                .cells
                .buffered
                .store(n as u64, Ordering::Relaxed);
        }
    }

    // -- One envelope ------------------------------------------------------------------------

    // Always inlined: an envelope is large, and passing it to a call costs a copy per message.
    #[inline(always)]
    fn handle(&mut self, env: Env<'e, S>) {
        if let Envelope::Up(Up::Ask { sub, n }) = env {
            // An ask owns nothing: forgetting it skips the envelope's generic drop glue, which
            // the compiler calls here otherwise.
            std::mem::forget(env);
            return self.on_ask(sub, n);
        }
        match env {
            Envelope::Down(Down::Events { sub, events }) => self.on_events(sub, events),
            env => self.handle_other(env),
        }
    }

    /// Any envelope, out of line: `handle` takes events and asks itself and sends the rest
    /// here (this match stays total so that it is right whatever it is given).
    #[inline(never)]
    fn handle_other(&mut self, env: Env<'e, S>) {
        match env {
            Envelope::Down(Down::Events { sub, events }) => self.on_events(sub, events),
            Envelope::Up(Up::Ask { sub, n }) => self.on_ask(sub, n),
            Envelope::Down(Down::Subscribed(s)) => self.on_subscribed(*s),
            Envelope::Down(Down::Cancel { sub, reason }) => {
                if Self::GATED && !self.inlet.queue_is_empty() {
                    self.inlet.queue(Inbound::Cancel(sub, reason));
                } else {
                    self.producer_gone(sub, reason);
                }
            }
            Envelope::Down(Down::Subscribe(req)) => self.inlet.forward_subscribe(req),
            Envelope::Up(Up::Subscribe(req)) => self.on_subscribe(*req),
            Envelope::Up(Up::Cancel { sub, reason }) => self.remove_consumer(sub, reason, true),
            Envelope::Message(msg) => self.invoke(|s, ctx| s.message(msg, ctx)),
            Envelope::Info(msg) => self.queue_info(msg),
            Envelope::Control(Control::Stop) => self.life.exit(Reason::Shutdown),
            Envelope::Control(Control::Finish) => {
                self.life.drain();
                if Self::PRODUCER {
                    // As `Context::finish`: no more `handle_demand`, deliver, end.
                    self.life.finish(Reason::Normal);
                }
            }
            Envelope::Control(Control::Wake) => {}
            Envelope::Control(Control::SetDemand(mode)) => self.set_demand(mode),
            Envelope::Control(Control::GetDemand(reply)) => {
                let _ = reply.send(self.emitter.demand_mode());
            }
            Envelope::Control(Control::Cancel { sub, reason }) => self.cancel(sub, reason),
            Envelope::Control(Control::Ask { sub, n }) => self.inlet.manual_ask(sub, n),
            Envelope::Control(Control::Withdraw(sub)) => self.inlet.withdraw(sub),
        }
    }

    // -- Callbacks and their effects ---------------------------------------------------------

    /// Runs one callback, then applies what it asked for.
    #[inline]
    fn invoke<R>(&mut self, f: impl FnOnce(&mut S, &mut Context<'_, S::Out, S::Msg>) -> R) -> R {
        let r = self.call(f);
        self.apply_effects();
        r
    }

    /// Runs one callback; its effects wait in `fx` until [`Runner::apply_effects`].
    fn call<R>(&mut self, f: impl FnOnce(&mut S, &mut Context<'_, S::Out, S::Msg>) -> R) -> R {
        let mut ctx = Context {
            fx: &mut self.fx,
            name: &self.shared.name,
            stop_requested: &self.shared.stop_requested,
            finishing: self.life.winds_down(),
        };
        let timed = self.shared.timing.start();
        let r = f(&mut self.stage, &mut ctx);
        self.shared.timing.stop(timed);
        r
    }

    /// Sends what the last callback emitted on its way, then applies its other effects.
    #[inline]
    fn apply_effects(&mut self) {
        if !self.fx.emitted.is_empty() {
            let events = std::mem::take(&mut self.fx.emitted);
            bump(&self.shared.cells.emitted, events.len() as u64);
            if self.emitter.is_accumulating() {
                self.emitter.hold_emitted(events);
            } else {
                self.emit_out(events);
            }
        }
        if self.fx.has_side_effects() {
            self.apply_side_effects();
        }
    }

    #[inline(never)]
    fn apply_side_effects(&mut self) {
        if !self.fx.replies.is_empty() {
            // Counters read right after a call returns show everything done before the reply.
            self.publish_buffered();
            for reply in std::mem::take(&mut self.fx.replies) {
                reply();
            }
        }
        for (sub, n) in std::mem::take(&mut self.fx.asks) {
            self.inlet.manual_ask(sub, n);
        }
        for (sub, reason) in std::mem::take(&mut self.fx.cancels) {
            self.cancel(sub, reason);
        }
        for msg in std::mem::take(&mut self.fx.infos) {
            self.queue_info(msg);
        }
        match self.fx.end.take() {
            None => {}
            Some(End::Stop(reason)) => self.life.stop(reason),
            // Nothing to deliver: a consumer ends at once.
            Some(End::Finish) if !S::EMITS => self.life.exit(Reason::Normal),
            Some(End::Finish) => self.life.finish(Reason::Normal),
        }
    }

    // -- The output side ---------------------------------------------------------------------

    /// Sends newly emitted events on their way. Buffered events go first: while the buffer
    /// holds any, new ones queue behind them.
    #[inline]
    fn emit_out(&mut self, events: Vec<S::Out>) {
        let events = match self.emitter.send_whole(events, &mut self.discards) {
            Ok(()) => return,
            Err(events) => events,
        };
        if self.emitter.has_buffered_events() {
            // The buffer first, to whatever demand there is.
            self.flush_buffer();
        }
        let discarded = self.emitter.place(events, &mut self.discards);
        if discarded > 0 {
            // The stage may log it its own way, or not at all (GenStage's format_discarded).
            let log = self.stage.format_discarded(discarded);
            self.discards.count_from_buffer(discarded, log);
        }
    }

    /// Delivers buffered events to the demand the dispatcher has, in order, delivering each
    /// info when the events before it have left. Returns how many events left the buffer.
    fn flush_buffer(&mut self) -> usize {
        let mut taken = 0;
        loop {
            while let Some(info) = self.emitter.pop_due_info() {
                self.invoke(|s, ctx| s.message(info, ctx));
            }
            if self.life.is_exiting() {
                break;
            }
            match self.emitter.flush_step(&mut self.discards) {
                Flushed::More(n) => taken += n,
                Flushed::Done(n) => {
                    taken += n;
                    break;
                }
            }
        }
        taken
    }

    /// A consumer subscribes.
    fn on_subscribe(&mut self, req: SubscribeRequest<'e, S::Out>) {
        if let Some(info) = self.emitter.subscribe(req, &mut self.discards) {
            self.invoke(|s, ctx| {
                s.subscribed(&info, ctx);
            });
        }
    }

    /// A consumer asks for more.
    #[inline]
    fn on_ask(&mut self, sub: SubscriptionId, n: usize) {
        if let Some(demand) = self.emitter.ask(sub, n, &mut self.discards) {
            self.demand_arrived(demand);
        }
    }

    /// New demand reached the output side: an accumulating producer holds it; a producer
    /// serves it from the buffer, then calls `handle_demand` for the rest; a producer-consumer
    /// adds it to its counter and handles what input it queued.
    fn demand_arrived(&mut self, demand: usize) {
        if Self::PRODUCER {
            if self.emitter.is_accumulating() {
                self.emitter.hold_demand(demand);
                return;
            }
            let taken = if self.emitter.buffer_is_empty() {
                0
            } else {
                self.flush_buffer()
            };
            let rest = demand.saturating_sub(taken);
            if rest > 0 && self.life.goes_on() {
                self.handle_demand(rest);
            }
        } else if Self::GATED {
            self.emitter.add_downstream_demand(demand);
            self.pump();
        }
    }

    #[inline(never)]
    fn serve_pending_demand(&mut self) {
        let demand = self.emitter.take_pending_demand();
        self.demand_arrived(demand);
    }

    /// Calls `handle_demand(n)`, with room for `n` events reserved (up to a cap: a huge demand
    /// must not allocate a huge batch up front).
    fn handle_demand(&mut self, n: usize) {
        const RESERVE_CAP: usize = 65_536;
        let room = n.min(RESERVE_CAP);
        if self.fx.emitted.capacity() == 0 {
            // The last batch left with its message: one given back, or a fresh one allocated
            // once.
            self.fx.emitted = match self.recycler.as_ref().and_then(|r| r.take(room)) {
                Some(v) => v,
                None => Vec::with_capacity(room),
            };
        } else {
            self.fx.emitted.reserve(room);
        }
        self.invoke(|s, ctx| s.demand(n, ctx));
    }

    /// Producer-consumer: deliver the buffer, then handle queued input while there is demand.
    /// Bounded: every step takes one entry off the inlet's queue.
    fn pump(&mut self) {
        loop {
            if self.life.is_exiting() || self.stop_requested() {
                return;
            }
            self.flush_buffer();
            if self.emitter.has_buffered_events() {
                return;
            }
            match self.inlet.next_queued(self.emitter.downstream_ready()) {
                None => return,
                Some(Inbound::Events(sub, events)) => self.handle_events(sub, events),
                Some(Inbound::Cancel(sub, reason)) => self.producer_gone(sub, reason),
                // Its place in the queue is reached: behind what is buffered, or handled now
                // (as GenStage does), never back in the queue.
                Some(Inbound::Info(msg)) => match self.emitter.push_info(msg) {
                    Ok(()) => {}
                    Err(msg) => self.invoke(|s, ctx| s.message(msg, ctx)),
                },
            }
        }
    }

    /// A consumer leaves (it cancelled, or ended, or `notify` is false and it is unreachable).
    fn remove_consumer(&mut self, sub: SubscriptionId, reason: Reason, notify: bool) {
        let Some(info) = self.emitter.close(sub, &reason, notify) else {
            return;
        };
        self.invoke(|s, ctx| s.cancelled(&info, &reason, ctx));
        self.emitter.forget_in_dispatcher(sub, &mut self.discards);
    }

    /// Consumers whose inbox is gone: what waited for them is lost (counted); they leave.
    #[inline(never)]
    fn reap_gone(&mut self) {
        while let Some(sub) = self.emitter.next_gone(&mut self.discards) {
            self.remove_consumer(sub, Reason::Shutdown, false);
        }
    }

    /// Switches a producer between accumulating and forwarding demand. Forwarding replays what
    /// accumulated in the order the events were emitted (see `held`): the events the buffer
    /// covered, then the rest of the buffer, then what callbacks emitted, and only then each
    /// recorded demand on its own.
    #[inline(never)]
    fn set_demand(&mut self, mode: ProducerDemand) {
        if !Self::PRODUCER {
            return;
        }
        // Bounded: each step takes one entry that was held before the switch.
        let mut left = self
            .emitter
            .set_accumulating(mode == ProducerDemand::Accumulate);
        while !self.emitter.is_accumulating()
            && !self.life.is_exiting()
            && !self.stop_requested()
            && left > 0
        {
            left -= 1;
            match self.emitter.replay(&mut self.discards) {
                None => break,
                Some(Replayed::Covered) => {}
                Some(Replayed::Emitted(events)) => self.emit_out(events),
                Some(Replayed::Demand(n)) => {
                    if self.life.goes_on() {
                        self.handle_demand(n);
                    }
                }
            }
        }
    }

    // -- The input side ----------------------------------------------------------------------

    /// A producer confirmed a subscription: `handle_subscribe` chooses its mode; what was
    /// asked of it while pending applies; an automatic one asks its `max_demand`.
    fn on_subscribed(&mut self, s: Subscribed<'e, S::In>) {
        let Subscribed {
            producer,
            info,
            registered,
        } = s;
        let sub = info.id;
        let pending = match self.inlet.confirmed(producer, info.clone()) {
            Confirmed::Withdrawn => return,
            Confirmed::Linked(pending) => pending,
        };
        // The mode is set before the callback's effects apply, so that a manual consumer
        // can ask from `handle_subscribe`.
        let mode = self.call(|s, ctx| s.subscribed(&info, ctx));
        self.inlet.set_mode(sub, mode);
        // What was asked of it while it was pending: a cancel first (then it asks nothing).
        if let Some(p) = pending {
            if let Some(reason) = p.cancel {
                self.cancel(sub, reason);
            } else if p.asks > 0 {
                self.inlet.manual_ask(sub, p.asks);
            }
        }
        self.inlet.start(sub);
        self.apply_effects();
        if let Some(registered) = registered {
            let _ = registered.try_send(());
        }
    }

    #[inline]
    fn on_events(&mut self, sub: SubscriptionId, events: Vec<S::In>) {
        bump(&self.shared.cells.events_in, events.len() as u64);
        if Self::GATED
            && (self.emitter.downstream_ready() == 0
                || !self.inlet.queue_is_empty()
                || self.emitter.has_buffered_events())
        {
            // Gate: handle input only while downstream has demand (it produces no asks
            // until then, so upstream stops too).
            self.inlet.queue(Inbound::Events(sub, events));
            return;
        }
        self.handle_events(sub, events);
    }

    /// Hands a message to `handle_events` in the batches the inlet cuts it into, asking after
    /// each batch as the protocol says.
    #[inline]
    fn handle_events(&mut self, sub: SubscriptionId, events: Vec<S::In>) {
        let len = events.len();
        let Some(receipt) = self.inlet.receive(sub, len, &mut self.discards) else {
            return;
        };
        let mut iter = events.into_iter();
        match receipt {
            Receipt::One(at, batch) => {
                self.handle_batch(at, sub, &mut iter, batch);
            }
            Receipt::Many(at, batches) => {
                for batch in batches {
                    if !self.handle_batch(at, sub, &mut iter, batch) {
                        return;
                    }
                }
            }
            Receipt::Manual => {
                self.shared.timing.events(len);
                self.invoke(|s, ctx| s.events(Events::new(&mut iter, len, sub), ctx));
            }
        }
    }

    /// Hands one batch to `handle_events`, then asks for what it used up. Returns whether
    /// the stage goes on (it stopped: the rest is counted as discarded).
    #[inline(always)]
    fn handle_batch(
        &mut self,
        at: usize,
        sub: SubscriptionId,
        iter: &mut std::vec::IntoIter<S::In>,
        batch: Batch,
    ) -> bool {
        if batch.excess > 0 {
            error!(
                "stage {}: received {} events in excess from subscription {sub}",
                self.shared.name, batch.excess
            );
        }
        if Self::GATED {
            self.fx.room = batch.len;
        }
        let rest = iter.len() - batch.len;
        self.inlet.set_in_hand(rest);
        self.shared.timing.events(batch.len);
        self.invoke(|s, ctx| s.events(Events::new(iter, batch.len, sub), ctx));
        // A batch mapped and left half-consumed leaves events behind: drop them.
        while iter.len() > rest {
            iter.next();
        }
        if self.life.is_exiting() || self.stop_requested() {
            // The stage stopped (or was told to: a stop takes effect between two batches of
            // one message, so a message cut into many small batches cannot hold it): the rest
            // is not handled and not asked for.
            let rest = iter.len();
            self.inlet.set_in_hand(0);
            self.discards
                .count(rest, "the stage stopped while handling them");
            return false;
        }
        if batch.ask > 0 && self.life.goes_on() {
            let inbox = &self.inbox;
            self.inlet
                .ask_after_batch(at, sub, batch.ask, || inbox_fill(inbox));
        }
        true
    }

    /// A subscription to a producer ended: tell the stage, then end or not by cancel mode.
    ///
    /// Fan-in: a permanent subscription that ends normally ends the stage only once every
    /// subscription it holds has ended (the other producers' events are not cut off); an
    /// abnormal end ends it at once.
    fn producer_gone(&mut self, sub: SubscriptionId, reason: Reason) {
        let Some(link) = self.inlet.remove(sub) else {
            return;
        };
        let info = link.info;
        self.invoke(|s, ctx| s.cancelled(&info, &reason, ctx));
        if self.life.is_exiting() {
            return;
        }
        let exits = !link.quiet && info.options.get_cancel().exits_on(&reason);
        let left = self.inlet.producers();
        let name = &self.shared.name;
        match self.life.producer_ended(&reason, exits, left, S::EMITS) {
            UpstreamEnd::Continue => {}
            UpstreamEnd::Exit => info!(
                "stage {name}: stopping after subscription {sub} to {} ended: {reason}",
                info.peer
            ),
            UpstreamEnd::AfterOthers => info!(
                "stage {name}: subscription {sub} to {} ended: {reason}; stopping once its \
                 {left} other subscriptions have ended",
                info.peer
            ),
            UpstreamEnd::Last(reason) => info!(
                "stage {name}: stopping after subscription {sub} to {} ended: {reason}",
                info.peer
            ),
        }
    }

    /// Cancels a subscription of this stage, either side.
    fn cancel(&mut self, sub: SubscriptionId, reason: Reason) {
        if let Err(reason) = self.inlet.cancel(sub, reason) {
            self.remove_consumer(sub, reason, true);
        }
    }

    // -- The lifecycle -----------------------------------------------------------------------

    /// A stage asked to finish whose producers have all ended (and whose inbox holds no
    /// subscription it has yet to hear of) finishes: a consumer ends, a producer-consumer
    /// delivers what it holds first.
    #[inline(never)]
    fn drained(&mut self) {
        if self.inlet.producers() > 0 || !self.inbox.is_empty() {
            return;
        }
        info!(
            "stage {}: asked to finish and no producer left: finishing",
            self.shared.name
        );
        if S::EMITS {
            self.life.finish(Reason::Normal);
        } else {
            self.life.exit(Reason::Normal);
        }
    }

    /// Ends the stage once a finishing producer has delivered everything it held, or when
    /// nobody is left to deliver it to.
    #[inline(never)]
    fn check_finished(&mut self) {
        // Infos and timers that are due (an info sent to itself when nothing was buffered,
        // say) are handled before it ends.
        let due = self
            .fx
            .timers
            .next_deadline()
            .is_some_and(|d| d <= crate::clock::now());
        let done = self.emitter.is_delivered() && self.inlet.queue_is_empty() && !due;
        // Every consumer it had has left: what it holds can reach nobody (the end counts it
        // as discarded).
        let deserted = S::EMITS && self.emitter.deserted();
        if done || deserted {
            self.life.finished();
        }
    }

    // -- Timers and infos --------------------------------------------------------------------

    #[inline(never)]
    fn fire_timers(&mut self) {
        let now = crate::clock::now();
        while let Some(msg) = self.fx.timers.pop_due(now) {
            self.invoke(|s, ctx| s.message(msg, ctx));
            if self.life.is_exiting() {
                return;
            }
        }
    }

    /// An info: to `handle_message` once the events buffered (or, in a producer-consumer,
    /// received) before it have left.
    #[inline(never)]
    fn queue_info(&mut self, msg: S::Msg) {
        if Self::GATED && !self.inlet.queue_is_empty() {
            self.inlet.queue(Inbound::Info(msg));
            return;
        }
        // Behind the events buffered now...
        let msg = if S::EMITS {
            match self.emitter.push_info(msg) {
                Ok(()) => return,
                Err(msg) => msg,
            }
        } else {
            msg
        };
        // ...or, with none, on the next turn, like a message sent to itself.
        self.fx.timers.schedule(crate::clock::now(), msg);
    }
}
