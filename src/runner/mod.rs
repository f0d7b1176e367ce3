//! The stage loop: one thread, one inbox, the credit protocol of [`crate::demand`] applied to
//! every message.
//!
//! The loop waits on the inbox (with the earliest timer as deadline), handles one envelope,
//! applies the effects its callback asked for, and checks whether the stage is done. Only this
//! thread touches the stage's state; handles see it through [`Shared`].
//!
//! The loop and effects are here; `producer` and `consumer` hold each side of the protocol,
//! `backlog` the waiting, `end` the termination, `links` the per-subscription state.

mod backlog;
mod consumer;
mod discards;
mod end;
mod held;
mod links;
mod polling;
mod producer;

use held::{Held, Replay};
use links::{DownLink, Inbound, PendingSub, UpLink};

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use log::{info, warn};

use crate::buffer::Buffer;
use crate::context::{Context, Effects, End, Mailbox};
use crate::dispatcher::{Dispatch, Dispatcher};
use crate::envelope::{Control, Counted, Down, Envelope, Up};
use crate::events::Events;
use crate::reason::Reason;
use crate::shared::{bump, Shared, StageKind};
use crate::stage::{Consumer, Producer, ProducerConsumer};
use crate::subscription::{BufferKeep, DemandMode, ProducerDemand, Subscription, SubscriptionId};
use crate::timing::Waiting;

/// The three user traits seen through one interface.
pub(crate) trait Callbacks: Send + 'static {
    type In: Send + 'static;
    type Out: Send + 'static;
    type Msg: Send + 'static;
    const KIND: StageKind;

    fn demand(&mut self, n: usize, ctx: &mut Context<'_, Self::Out, Self::Msg>);
    fn events(&mut self, events: Events<'_, Self::In>, ctx: &mut Context<'_, Self::Out, Self::Msg>);
    fn message(&mut self, msg: Self::Msg, ctx: &mut Context<'_, Self::Out, Self::Msg>);
    fn subscribed(
        &mut self,
        sub: &Subscription,
        ctx: &mut Context<'_, Self::Out, Self::Msg>,
    ) -> DemandMode;
    fn cancelled(
        &mut self,
        sub: &Subscription,
        reason: &Reason,
        ctx: &mut Context<'_, Self::Out, Self::Msg>,
    );
    fn format_discarded(&mut self, count: usize) -> bool {
        let _ = count;
        true
    }
    fn terminate(&mut self, reason: &Reason);
    /// The user's stage value, for `Stage::join_state`.
    fn into_state(self) -> Box<dyn std::any::Any + Send>;
}

pub(crate) struct AsProducer<S>(pub(crate) S);
pub(crate) struct AsProducerConsumer<S>(pub(crate) S);
pub(crate) struct AsConsumer<S>(pub(crate) S);

impl<S: Producer> Callbacks for AsProducer<S> {
    type In = Infallible;
    type Out = S::Out;
    type Msg = S::Message;
    const KIND: StageKind = StageKind::Producer;

    fn format_discarded(&mut self, count: usize) -> bool {
        self.0.format_discarded(count)
    }

    fn terminate(&mut self, reason: &Reason) {
        self.0.terminate(reason)
    }

    fn into_state(self) -> Box<dyn std::any::Any + Send> {
        Box::new(self.0)
    }

    fn demand(&mut self, n: usize, ctx: &mut Context<'_, S::Out, S::Message>) {
        self.0.handle_demand(n, ctx)
    }
    fn events(&mut self, _: Events<'_, Infallible>, _: &mut Context<'_, S::Out, S::Message>) {}
    fn message(&mut self, msg: S::Message, ctx: &mut Context<'_, S::Out, S::Message>) {
        self.0.handle_message(msg, ctx)
    }
    fn subscribed(
        &mut self,
        sub: &Subscription,
        ctx: &mut Context<'_, S::Out, S::Message>,
    ) -> DemandMode {
        self.0.handle_subscribe(sub, ctx);
        DemandMode::Automatic
    }
    fn cancelled(
        &mut self,
        sub: &Subscription,
        reason: &Reason,
        ctx: &mut Context<'_, S::Out, S::Message>,
    ) {
        self.0.handle_cancel(sub, reason, ctx)
    }
}

impl<S: ProducerConsumer> Callbacks for AsProducerConsumer<S> {
    type In = S::In;
    type Out = S::Out;
    type Msg = S::Message;
    const KIND: StageKind = StageKind::ProducerConsumer;

    fn format_discarded(&mut self, count: usize) -> bool {
        self.0.format_discarded(count)
    }

    fn terminate(&mut self, reason: &Reason) {
        self.0.terminate(reason)
    }

    fn into_state(self) -> Box<dyn std::any::Any + Send> {
        Box::new(self.0)
    }

    fn demand(&mut self, _: usize, _: &mut Context<'_, S::Out, S::Message>) {}
    fn events(&mut self, events: Events<'_, S::In>, ctx: &mut Context<'_, S::Out, S::Message>) {
        self.0.handle_events(events, ctx)
    }
    fn message(&mut self, msg: S::Message, ctx: &mut Context<'_, S::Out, S::Message>) {
        self.0.handle_message(msg, ctx)
    }
    fn subscribed(
        &mut self,
        sub: &Subscription,
        ctx: &mut Context<'_, S::Out, S::Message>,
    ) -> DemandMode {
        self.0.handle_subscribe(sub, ctx)
    }
    fn cancelled(
        &mut self,
        sub: &Subscription,
        reason: &Reason,
        ctx: &mut Context<'_, S::Out, S::Message>,
    ) {
        self.0.handle_cancel(sub, reason, ctx)
    }
}

impl<S: Consumer> Callbacks for AsConsumer<S> {
    type In = S::In;
    type Out = Infallible;
    type Msg = S::Message;
    const KIND: StageKind = StageKind::Consumer;

    fn terminate(&mut self, reason: &Reason) {
        self.0.terminate(reason)
    }

    fn into_state(self) -> Box<dyn std::any::Any + Send> {
        Box::new(self.0)
    }

    fn demand(&mut self, _: usize, _: &mut Context<'_, Infallible, S::Message>) {}
    fn events(&mut self, events: Events<'_, S::In>, ctx: &mut Context<'_, Infallible, S::Message>) {
        self.0.handle_events(events, ctx)
    }
    fn message(&mut self, msg: S::Message, ctx: &mut Context<'_, Infallible, S::Message>) {
        self.0.handle_message(msg, ctx)
    }
    fn subscribed(
        &mut self,
        sub: &Subscription,
        ctx: &mut Context<'_, Infallible, S::Message>,
    ) -> DemandMode {
        self.0.handle_subscribe(sub, ctx)
    }
    fn cancelled(
        &mut self,
        sub: &Subscription,
        reason: &Reason,
        ctx: &mut Context<'_, Infallible, S::Message>,
    ) {
        self.0.handle_cancel(sub, reason, ctx)
    }
}

/// The producer-side settings of a stage.
pub(crate) struct Config<Out> {
    pub(crate) dispatcher: Dispatch<Out>,
    pub(crate) demand: ProducerDemand,
    pub(crate) buffer_size: Option<usize>,
    pub(crate) buffer_keep: BufferKeep,
    /// Keep the stage's value for `Stage::join_state` when it ends.
    pub(crate) keep_state: bool,
    /// How long an ending stage waits for its producers to confirm its cancels.
    pub(crate) confirm_timeout: Duration,
}

/// At most this many control messages are handled per turn, so that a flood of them cannot
/// starve the inbox either.
const CONTROL_PER_TURN: usize = 64;

/// A stage that never waits publishes its `buffered` counter every this many turns; it
/// publishes it too before it waits, before it replies to a call, and when it ends.
const PUBLISH_EVERY: u32 = 32;

enum Wait<E> {
    Msg(E),
    Timeout,
    Disconnected,
}

type Env<S> = Envelope<<S as Callbacks>::In, <S as Callbacks>::Out, <S as Callbacks>::Msg>;

pub(crate) struct Runner<S: Callbacks> {
    stage: S,
    shared: Arc<Shared>,
    inbox: Receiver<Env<S>>,
    /// What handles send: stop, cancel, ask, subscribe, demand mode (see `Counted`).
    control: Receiver<Env<S>>,
    fx: Effects<S::Out, S::Msg>,
    ups: Vec<UpLink<S::In>>,
    downs: Vec<DownLink<S::Out>>,
    dispatcher: Dispatch<S::Out>,
    buffer: Buffer<S::Out, S::Msg>,
    inbound: VecDeque<Inbound<S::In, S::Msg>>,
    inbound_events: usize,
    /// Producer-consumer: downstream demand not yet met.
    counter: usize,
    /// Deliver what is buffered, then end with this reason.
    finishing: Option<Reason>,
    /// A permanent subscription ended normally while others remained: end (normally) once the
    /// last one has ended too (fan-in finishes with its last producer).
    finish_with_last_producer: Option<Reason>,
    /// Asked to finish (`Stage::finish`): end normally once every producer has ended.
    draining: bool,
    /// Discard warnings, at most one line per reason per second.
    discard_log: discards::DiscardLog,
    keep_state: bool,
    /// See `StageBuilder::confirm_timeout`.
    confirm_timeout: Duration,
    /// Demand that a dispatcher created, served on the next turn (never in a loop inside one).
    pending_demand: usize,
    /// Consumers whose inbox was found gone, to be removed at the end of the turn (removing
    /// them in the middle of a dispatch would hand out demand before its leftovers are stored).
    gone: Vec<SubscriptionId>,
    /// Consumer links marked closed and not yet removed (they wait for their backlog).
    closed_links: usize,
    /// Whether a consumer ever subscribed (a finishing stage whose consumers have all left has
    /// nobody to deliver to).
    had_consumers: bool,
    /// A timer is due and waits behind this many queued messages.
    timer_gate: Option<usize>,
    /// Producer in accumulate mode: what it holds back (see `held`).
    accumulating: bool,
    held: Held<S::Out>,
    /// Build-time temporary subscriptions whose producer had already ended.
    failed: Vec<Subscription>,
    /// Subscriptions a handle asked for, passed on and not yet confirmed.
    pending_subs: Vec<PendingSub>,
    /// The last turn handled control: this one looks at the inbox first.
    control_turn: bool,
    /// Events of the message being handled that were not yet handed to `handle_events` (if
    /// a callback panics, the end counts them as discarded).
    in_hand: usize,
    /// The `buffered` counter as last published.
    published: usize,
    /// Turns settled since the `buffered` counter was last published.
    unpublished: u32,
    /// How many times the next wait polls the inbox before it blocks.
    polls: polling::Polls,
    exit: Option<Reason>,
}

impl<S: Callbacks> Runner<S> {
    pub(crate) fn new(
        stage: S,
        shared: Arc<Shared>,
        self_tx: Sender<Env<S>>,
        inbox: Receiver<Env<S>>,
        control: Receiver<Env<S>>,
        config: Config<S::Out>,
        failed: Vec<Subscription>,
    ) -> Runner<S> {
        let mut dispatcher = config.dispatcher;
        dispatcher.attach(&shared.name);
        let mint_shared = shared.clone();
        let mint = Box::new(move || {
            Mailbox::new(Box::new(Counted::new(
                self_tx.clone(),
                None,
                mint_shared.clone(),
            )))
        });
        Runner {
            stage,
            shared,
            inbox,
            control,
            fx: Effects::new(mint),
            ups: Vec::new(),
            downs: Vec::new(),
            dispatcher,
            buffer: Buffer::new(config.buffer_size, config.buffer_keep),
            inbound: VecDeque::new(),
            inbound_events: 0,
            counter: 0,
            finishing: None,
            finish_with_last_producer: None,
            draining: false,
            discard_log: discards::DiscardLog::default(),
            keep_state: config.keep_state,
            confirm_timeout: config.confirm_timeout,
            pending_demand: 0,
            gone: Vec::new(),
            accumulating: S::KIND == StageKind::Producer
                && config.demand == ProducerDemand::Accumulate,
            held: Held::new(),
            timer_gate: None,
            closed_links: 0,
            had_consumers: false,
            failed,
            pending_subs: Vec::new(),
            in_hand: 0,
            published: 0,
            unpublished: 0,
            polls: polling::Polls::new(),
            control_turn: false,
            exit: None,
        }
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Whether the stage's value is kept for `Stage::join_state`.
    pub(crate) fn keeps_state(&self) -> bool {
        self.keep_state
    }

    /// The stage's value; the rest of the runner is dropped.
    pub(crate) fn into_stage(self) -> S {
        self.stage
    }

    /// The stage's own `terminate` callback.
    pub(crate) fn terminate_stage(&mut self, reason: &Reason) {
        self.stage.terminate(reason);
    }

    /// Runs until the stage ends; returns why.
    ///
    /// Every turn handles at most one envelope from the inbox (plus what handles sent on the
    /// control path), then settles what that left to do, and comes back: no loop inside a
    /// turn is unbounded, so calls and stops are always served.
    pub(crate) fn run(&mut self) -> Reason {
        let _live = polling::Live::enter();
        for info in std::mem::take(&mut self.failed) {
            let reason = Reason::error(format!("noproc: producer {} has ended", info.peer));
            warn!(
                "stage {}: subscription to {} failed: {reason}",
                self.shared.name, info.peer
            );
            self.invoke(|s, ctx| s.cancelled(&info, &reason, ctx));
        }
        loop {
            if let Some(reason) = self.exit.take() {
                return reason;
            }
            if self.shared.stop_requested.load(Ordering::Relaxed) {
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
                    Err(_) => return self.finishing.take().unwrap_or(Reason::Normal),
                }
            } else if let Some(reason) = self.turn() {
                return reason;
            }
            self.settle();
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
    ///
    /// Before it blocks, the stage publishes its `buffered` counter: an idle stage's is exact.
    #[inline]
    fn next_envelope(&mut self) -> Result<Env<S>, crossbeam_channel::RecvError> {
        let polls = self.polls.budget();
        for _ in 0..polls {
            match self.inbox.try_recv() {
                Ok(env) => {
                    self.polls.found();
                    return Ok(env);
                }
                Err(crossbeam_channel::TryRecvError::Empty) => std::hint::spin_loop(),
                Err(crossbeam_channel::TryRecvError::Disconnected) => {
                    return Err(crossbeam_channel::RecvError)
                }
            }
        }
        self.polls.missed(polls);
        self.publish_buffered();
        let waiting = self.shared.timing.wait_from(None);
        let got = self.inbox.recv();
        let ready = || Waiting::of(S::KIND, false, || self.dispatcher.ready());
        self.shared.timing.waited(waiting, ready);
        got
    }

    /// Nothing but the inbox can give this turn work: no timer, no backlog, no demand or
    /// departed consumer waiting, and the stage is still referenced.
    #[inline]
    fn only_the_inbox(&self) -> bool {
        self.fx.timers.is_empty()
            && self.timer_gate.is_none()
            && self.pending_demand == 0
            && self.gone.is_empty()
            && self.closed_links == 0
            && self.shared.refs.load(Ordering::Acquire) != 0
            && !self.any_backlog()
    }

    /// A turn with more to attend to than the inbox: the stage may be unreachable, backlogs
    /// may have room, timers may be due. Returns why the stage ends, if it does.
    #[inline(never)]
    fn turn(&mut self) -> Option<Reason> {
        if self.unreachable() {
            return Some(self.finishing.take().unwrap_or(Reason::Normal));
        }
        let mut backlog = self.any_backlog();
        if backlog || self.closed_links > 0 {
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
        if let Some(d) = deadline {
            if self.timer_gate.is_none() && Instant::now() >= d {
                self.timer_gate = Some(self.inbox.len());
            }
        }
        if self.timer_gate == Some(0) {
            self.timer_gate = None;
            self.fire_timers();
            return None;
        }
        let wait_until = if self.pending_demand > 0 || !self.gone.is_empty() {
            // Work is waiting: look at the inbox without blocking.
            Some(Instant::now())
        } else if self.timer_gate.is_some() {
            None
        } else {
            deadline
        };
        let waiting = self.shared.timing.wait_from(wait_until);
        let got = self.wait(wait_until, backlog);
        let ready = || Waiting::of(S::KIND, backlog, || self.dispatcher.ready());
        self.shared.timing.waited(waiting, ready);
        match got {
            Wait::Msg(env) => {
                if let Some(gate) = &mut self.timer_gate {
                    *gate = gate.saturating_sub(1);
                }
                self.handle(env);
                None
            }
            Wait::Timeout => None,
            Wait::Disconnected => Some(self.finishing.take().unwrap_or(Reason::Normal)),
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
            if self.exit.is_some() {
                break;
            }
        }
        // More may wait: look again next time.
        self.shared.control_pending.store(true, Ordering::Relaxed);
        any
    }

    /// The end of a turn: remove consumers found gone, serve demand a dispatcher created (once:
    /// more of it waits for the next turn), deliver what the buffer holds to the demand the
    /// dispatcher has, and see whether a finishing stage is done.
    ///
    /// The common turn (nothing gone, pending, buffered or finishing) costs a few checks; the
    /// rest is out of line.
    #[inline]
    fn settle(&mut self) {
        if self.exit.is_some() {
            return;
        }
        if !self.gone.is_empty() {
            self.reap_gone();
        }
        if self.pending_demand > 0 && self.exit.is_none() {
            self.serve_pending_demand();
        }
        if self.exit.is_none() && !self.accumulating {
            if S::KIND == StageKind::ProducerConsumer {
                if !self.inbound.is_empty() || !self.buffer.is_empty() {
                    self.pump();
                }
            } else if !self.buffer.is_empty() {
                self.flush_buffer();
            }
        }
        if self.draining {
            self.drained();
        }
        if self.discard_log.is_pending() {
            self.discard_log.tick(&self.shared.name);
        }
        if self.finishing.is_some() {
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

    #[inline(never)]
    fn serve_pending_demand(&mut self) {
        let demand = std::mem::take(&mut self.pending_demand);
        self.demand_arrived(demand);
    }

    /// A stage asked to finish whose producers have all ended (and whose inbox holds no
    /// subscription it has yet to hear of) finishes: a consumer ends, a producer-consumer
    /// delivers what it holds first.
    #[inline(never)]
    fn drained(&mut self) {
        if S::KIND == StageKind::Producer
            || self.finishing.is_some()
            || self.exit.is_some()
            || !self.ups.is_empty()
            || !self.inbox.is_empty()
        {
            return;
        }
        info!(
            "stage {}: asked to finish and no producer left: finishing",
            self.shared.name
        );
        if S::KIND == StageKind::Consumer {
            self.exit = Some(Reason::Normal);
        } else {
            self.finishing = Some(Reason::Normal);
        }
    }

    /// Producer-consumer: the downstream demand it may still serve (GenStage's counter, and
    /// never more than its dispatcher can take now: a broadcast's demand falls to the slowest
    /// consumer's when one subscribes).
    fn downstream_ready(&self) -> usize {
        self.counter.min(self.dispatcher.ready())
    }

    /// Nothing can ever send this stage a message again (no handle, mailbox or peer holds a
    /// reference, and its inbox is empty) and it has no timer left: it can only idle forever,
    /// so it ends.
    fn unreachable(&self) -> bool {
        self.shared.refs.load(Ordering::Acquire) == 0
            && self.fx.timers.is_empty()
            && self.inbox.is_empty()
            && self.control.is_empty()
            && self.pending_demand == 0
    }

    /// Publishes the `buffered` counter: events in the buffer, received and not yet handled,
    /// held back, or waiting in a backlog for room in a consumer's inbox.
    fn publish_buffered(&mut self) {
        self.unpublished = 0;
        let mut n = self.buffer.event_count() + self.inbound_events;
        n += self.held.event_count();
        if S::KIND != StageKind::Consumer {
            for l in &self.downs {
                if !l.out.backlog.is_empty() {
                    n += l.out.backlog_events();
                }
            }
            n += self.dispatcher.held();
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

    /// Counts `n` discarded events, and logs them (at most one line per reason per second).
    fn discard(&mut self, n: usize, why: &str) {
        if n > 0 {
            bump(&self.shared.cells.discarded, n as u64);
            self.discard_log.note(&self.shared.name, n, ": ", why);
        }
    }

    #[inline]
    fn handle(&mut self, env: Env<S>) {
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
    fn handle_other(&mut self, env: Env<S>) {
        match env {
            Envelope::Down(Down::Events { sub, events }) => self.on_events(sub, events),
            Envelope::Up(Up::Ask { sub, n }) => self.on_ask(sub, n),
            Envelope::Down(Down::Subscribed(s)) => self.on_subscribed(*s),
            Envelope::Down(Down::Cancel { sub, reason }) => {
                if S::KIND == StageKind::ProducerConsumer && !self.inbound.is_empty() {
                    self.inbound.push_back(Inbound::Cancel(sub, reason));
                } else {
                    self.producer_gone(sub, reason);
                }
            }
            Envelope::Down(Down::Subscribe(req)) => self.forward_subscribe(req),
            Envelope::Up(Up::Subscribe(req)) => self.on_subscribe(*req),
            Envelope::Up(Up::Cancel { sub, reason }) => self.remove_consumer(sub, reason, true),
            Envelope::Message(msg) => self.invoke(|s, ctx| s.message(msg, ctx)),
            Envelope::Info(msg) => self.queue_info(msg),
            Envelope::Control(Control::Stop) => {
                self.exit.get_or_insert(Reason::Shutdown);
            }
            Envelope::Control(Control::Finish) => {
                self.draining = true;
                if S::KIND == StageKind::Producer {
                    // As `Context::finish`: no more `handle_demand`, deliver, end.
                    self.finishing.get_or_insert(Reason::Normal);
                }
            }
            Envelope::Control(Control::Wake) => {}
            Envelope::Control(Control::SetDemand(mode)) => self.set_demand(mode),
            Envelope::Control(Control::GetDemand(reply)) => {
                let _ = reply.send(if self.accumulating {
                    ProducerDemand::Accumulate
                } else {
                    ProducerDemand::Forward
                });
            }
            Envelope::Control(Control::Cancel { sub, reason }) => self.cancel(sub, reason),
            Envelope::Control(Control::Ask { sub, n }) => self.manual_ask(sub, n),
            Envelope::Control(Control::Withdraw(sub)) => self.withdraw(sub),
        }
    }

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
            finishing: self.draining || self.finishing.is_some(),
        };
        let timed = self.shared.timing.start();
        let r = f(&mut self.stage, &mut ctx);
        self.shared.timing.stop(timed);
        r
    }

    /// Dispatches what the last callback emitted, then applies its other effects.
    #[inline]
    fn apply_effects(&mut self) {
        if !self.fx.emitted.is_empty() {
            let events = std::mem::take(&mut self.fx.emitted);
            bump(&self.shared.cells.emitted, events.len() as u64);
            if self.accumulating {
                self.held.emitted(events);
            } else {
                self.emit_out(events);
            }
        }
        if self.fx.has_side_effects() {
            self.apply_side_effects();
        }
    }

    /// Sends newly emitted events on their way. Buffered events go first: while the buffer
    /// holds any, new ones queue behind them (the end of the turn delivers them in order).
    #[inline]
    fn emit_out(&mut self, events: Vec<S::Out>) {
        let mut events = if self.buffer.event_count() == 0 {
            match self.dispatch_whole(events) {
                Ok(()) => return,
                Err(events) => events,
            }
        } else {
            events
        };
        if self.buffer.event_count() > 0 {
            // The buffer first, to whatever demand there is.
            self.flush_buffer();
        }
        // With events still buffered, a dispatcher that knows its demand has none: it takes
        // these as leftovers only, and its accounting (what is pending, what was requested)
        // sees them. One that does not know could send them ahead of the buffer: it does not
        // see them until they leave the buffer.
        if self.buffer.event_count() == 0 || self.dispatcher.ready() == 0 {
            self.dispatch(&mut events);
        }
        if !events.is_empty() {
            self.store(events);
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
            self.manual_ask(sub, n);
        }
        for (sub, reason) in std::mem::take(&mut self.fx.cancels) {
            self.cancel(sub, reason);
        }
        for msg in std::mem::take(&mut self.fx.infos) {
            self.queue_info(msg);
        }
        match self.fx.end.take() {
            None => {}
            Some(End::Stop(reason)) => self.exit = Some(reason),
            Some(End::Finish) => {
                if S::KIND == StageKind::Consumer {
                    self.exit.get_or_insert(Reason::Normal);
                } else {
                    self.finishing.get_or_insert(Reason::Normal);
                }
            }
        }
    }

    /// Switches a producer between accumulating and forwarding demand. Forwarding replays what
    /// accumulated in the order the events were emitted (see `held`): the events the buffer
    /// covered, then the rest of the buffer, then what callbacks emitted, and only then each
    /// recorded demand on its own.
    #[inline(never)]
    fn set_demand(&mut self, mode: ProducerDemand) {
        if S::KIND != StageKind::Producer {
            return;
        }
        self.accumulating = mode == ProducerDemand::Accumulate;
        // Bounded: each step takes one entry that was held before the switch.
        let mut left = self.held.steps();
        while !self.accumulating && self.exit.is_none() && !self.stop_requested() && left > 0 {
            left -= 1;
            match self.held.next() {
                None => break,
                Some(Replay::Covered(mut events)) => {
                    // Older than anything in the buffer: straight to the dispatcher, and
                    // what it cannot take goes back to the buffer's front.
                    self.dispatch(&mut events);
                    if !events.is_empty() {
                        self.buffer.unget(events);
                    }
                }
                Some(Replay::Emitted(events)) => self.emit_out(events),
                Some(Replay::Demand(n)) => {
                    if self.finishing.is_none() {
                        self.handle_demand(n);
                    }
                }
            }
        }
    }

    /// Ends the stage once a finishing producer has delivered everything it held, or when
    /// nobody is left to deliver it to.
    #[inline(never)]
    fn check_finished(&mut self) {
        if self.exit.is_some() || self.finishing.is_none() {
            return;
        }
        // Infos and timers that are due (an info sent to itself when nothing was buffered,
        // say) are handled before it ends.
        let due = self
            .fx
            .timers
            .next_deadline()
            .is_some_and(|d| d <= Instant::now());
        let done = self.buffer.is_empty()
            && self.inbound.is_empty()
            && self.held.is_empty()
            && self.dispatcher.held() == 0
            && !due;
        // Every consumer it had has left: what it holds can reach nobody (the end counts it
        // as discarded).
        let deserted = self.had_consumers
            && S::KIND != StageKind::Consumer
            && !self.downs.iter().any(|l| !l.closed);
        if done || deserted {
            self.exit = self.finishing.take();
        }
    }

    #[inline(never)]
    fn fire_timers(&mut self) {
        let now = Instant::now();
        while let Some(msg) = self.fx.timers.pop_due(now) {
            self.invoke(|s, ctx| s.message(msg, ctx));
            if self.exit.is_some() {
                return;
            }
        }
    }

    /// An info: to `handle_message` once the events buffered (or, in a producer-consumer,
    /// received) before it have left.
    #[inline(never)]
    fn queue_info(&mut self, msg: S::Msg) {
        if S::KIND == StageKind::ProducerConsumer && !self.inbound.is_empty() {
            self.inbound.push_back(Inbound::Info(msg));
            return;
        }
        self.info_after_buffer(msg);
    }

    /// An info behind the events buffered now (at once, if there are none).
    fn info_after_buffer(&mut self, msg: S::Msg) {
        let msg = match S::KIND {
            StageKind::Consumer => msg,
            _ => match self.buffer.push_info(msg) {
                Ok(()) => return,
                Err(msg) => msg,
            },
        };
        // Nothing buffered: deliver it on the next turn, like a message sent to itself.
        self.fx.timers.schedule(Instant::now(), msg);
    }
}
