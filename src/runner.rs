//! The stage loop: one thread, one inbox, the credit protocol of [`crate::demand`] applied to
//! every message.
//!
//! The loop waits on the inbox (with the earliest timer as deadline), handles one envelope,
//! applies the effects its callback asked for, and checks whether the stage is done. Only this
//! thread touches the stage's state; handles see it through [`Shared`].

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Select, Sender};
use log::{error, info, warn};

use crate::buffer::Buffer;
use crate::context::{Context, Effects, End, Mailbox};
use crate::demand::Demand;
use crate::dispatcher::{Dispatcher, Outbox};
use crate::envelope::{
    Coalesce, Control, Counted, Down, Envelope, Port, PortError, SubscribeRequest, Subscribed, Up,
};
use crate::error::SubscribeError;
use crate::events::Events;
use crate::reason::Reason;
use crate::shared::{bump, Shared};
use crate::stage::{Consumer, Producer, ProducerConsumer};
use crate::subscription::{
    BufferKeep, DemandMode, Direction, ProducerDemand, Subscription, SubscriptionId,
};

/// What kind of stage a runner drives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Producer,
    ProducerConsumer,
    Consumer,
}

/// The three user traits seen through one interface.
pub(crate) trait Callbacks: Send + 'static {
    type In: Send + 'static;
    type Out: Send + 'static;
    type Msg: Send + 'static;
    const KIND: Kind;

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
}

pub(crate) struct AsProducer<S>(pub(crate) S);
pub(crate) struct AsProducerConsumer<S>(pub(crate) S);
pub(crate) struct AsConsumer<S>(pub(crate) S);

impl<S: Producer> Callbacks for AsProducer<S> {
    type In = Infallible;
    type Out = S::Out;
    type Msg = S::Message;
    const KIND: Kind = Kind::Producer;

    fn format_discarded(&mut self, count: usize) -> bool {
        self.0.format_discarded(count)
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
    const KIND: Kind = Kind::ProducerConsumer;

    fn format_discarded(&mut self, count: usize) -> bool {
        self.0.format_discarded(count)
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
    const KIND: Kind = Kind::Consumer;

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
    pub(crate) dispatcher: Box<dyn Dispatcher<Out>>,
    pub(crate) demand: ProducerDemand,
    pub(crate) buffer_size: Option<usize>,
    pub(crate) buffer_keep: BufferKeep,
}

/// How long an ending stage waits for its producers to confirm its cancels (so that nothing
/// they sent is left uncounted in its inbox) before it gives up on a producer that is stuck in
/// a callback.
const CONFIRM_WAIT: Duration = Duration::from_secs(2);

/// At most this many control messages are handled per turn, so that a flood of them cannot
/// starve the inbox either.
const CONTROL_PER_TURN: usize = 64;

/// Sends to one peer, keeping what does not fit in a backlog (protocol rules 4 and 5).
struct Outlet<M> {
    port: Box<dyn Port<M>>,
    backlog: VecDeque<M>,
    /// Where events count as sent (`events_out`) once they are in the peer's inbox: a
    /// producer's consumer links only.
    counts: Option<Arc<Shared>>,
}

impl<M: Coalesce> Outlet<M> {
    fn new(port: Box<dyn Port<M>>, counts: Option<Arc<Shared>>) -> Outlet<M> {
        Outlet {
            port,
            backlog: VecDeque::new(),
            counts,
        }
    }

    fn sent(&self, events: usize) {
        if events > 0 {
            if let Some(shared) = &self.counts {
                bump(&shared.cells.events_out, events as u64);
            }
        }
    }

    /// Sends `msg`, or keeps it in the backlog if the peer's inbox is full. `Err` if the peer
    /// is gone: the message is then at the back of the backlog, for the caller to account for.
    fn send(&mut self, msg: M) -> Result<(), ()> {
        if let Some(last) = self.backlog.back_mut() {
            if let Some(msg) = last.coalesce(msg) {
                self.backlog.push_back(msg);
            }
            return Ok(());
        }
        let events = msg.event_count();
        match self.port.try_send(msg) {
            Ok(()) => {
                self.sent(events);
                Ok(())
            }
            Err(PortError::Full(m)) => {
                self.backlog.push_back(m);
                Ok(())
            }
            Err(PortError::Gone(m)) => {
                self.backlog.push_back(m);
                Err(())
            }
        }
    }

    /// Sends what fits of the backlog. `Err` if the peer is gone (the rest stays in the
    /// backlog).
    fn flush(&mut self) -> Result<(), ()> {
        while let Some(msg) = self.backlog.pop_front() {
            let events = msg.event_count();
            match self.port.try_send(msg) {
                Ok(()) => self.sent(events),
                Err(PortError::Full(m)) => {
                    self.backlog.push_front(m);
                    return Ok(());
                }
                Err(PortError::Gone(m)) => {
                    self.backlog.push_front(m);
                    return Err(());
                }
            }
        }
        Ok(())
    }

    /// Events waiting in the backlog.
    fn backlog_events(&self) -> usize {
        self.backlog.iter().map(Coalesce::event_count).sum()
    }
}

/// This stage as a consumer of one producer.
struct UpLink<T> {
    info: Subscription,
    out: Outlet<Up<T>>,
    demand: Demand,
    mode: DemandMode,
    /// Manual mode: asked and not yet received.
    manual_outstanding: usize,
    /// This stage sent a cancel and waits for the producer's confirmation.
    cancelling: bool,
    cell: Arc<AtomicU64>,
}

/// This stage as the producer of one consumer.
struct DownLink<T> {
    info: Subscription,
    out: Outlet<Down<T>>,
    /// Identifies the consuming stage.
    consumer_id: usize,
    /// Asked for and not yet sent.
    owed: usize,
    /// Cancelled: kept only until its backlog (ending with the cancel) is delivered.
    closed: bool,
    cell: Arc<AtomicU64>,
}

/// What an accumulating producer holds back until it forwards.
enum Held<T> {
    Demand(usize),
    Dispatch(Vec<T>),
}

/// What a producer-consumer received and could not handle yet (no downstream demand).
enum Inbound<T, M> {
    Events(SubscriptionId, Vec<T>),
    Cancel(SubscriptionId, Reason),
    Info(M),
}

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
    dispatcher: Box<dyn Dispatcher<S::Out>>,
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
    /// Producer in accumulate mode: what it holds back, oldest first.
    accumulating: bool,
    held: VecDeque<Held<S::Out>>,
    /// Build-time temporary subscriptions whose producer had already ended.
    failed: Vec<Subscription>,
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
            pending_demand: 0,
            gone: Vec::new(),
            accumulating: S::KIND == Kind::Producer && config.demand == ProducerDemand::Accumulate,
            held: VecDeque::new(),
            timer_gate: None,
            closed_links: 0,
            had_consumers: false,
            failed,
            exit: None,
        }
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Runs until the stage ends; returns why.
    ///
    /// Every turn handles at most one envelope from the inbox (plus what handles sent on the
    /// control path), then settles what that left to do, and comes back: no loop inside a
    /// turn is unbounded, so calls and stops are always served.
    pub(crate) fn run(&mut self) -> Reason {
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
            self.handle_control();
            if self.exit.is_some() {
                continue;
            }
            if self.unreachable() {
                return self.finishing.take().unwrap_or(Reason::Normal);
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
            } else {
                let wait_until = if self.pending_demand > 0 || !self.gone.is_empty() {
                    // Work is waiting: look at the inbox without blocking.
                    Some(Instant::now())
                } else if self.timer_gate.is_some() {
                    None
                } else {
                    deadline
                };
                match self.wait(wait_until, backlog) {
                    Wait::Msg(env) => {
                        if let Some(gate) = &mut self.timer_gate {
                            *gate = gate.saturating_sub(1);
                        }
                        self.handle(env);
                    }
                    Wait::Timeout => {}
                    Wait::Disconnected => return self.finishing.take().unwrap_or(Reason::Normal),
                }
            }
            self.settle();
        }
    }

    /// Handles what handles sent on the control path (at most [`CONTROL_PER_TURN`]).
    fn handle_control(&mut self) {
        for _ in 0..CONTROL_PER_TURN {
            match self.control.try_recv() {
                Ok(env) => self.handle(env),
                Err(_) => return,
            }
            if self.exit.is_some() {
                return;
            }
        }
    }

    /// The end of a turn: remove consumers found gone, serve demand a dispatcher created (once:
    /// more of it waits for the next turn), deliver what the buffer holds to the demand the
    /// dispatcher has, and see whether a finishing stage is done.
    fn settle(&mut self) {
        if self.exit.is_some() {
            return;
        }
        self.reap_gone();
        if self.pending_demand > 0 && self.exit.is_none() {
            let demand = std::mem::take(&mut self.pending_demand);
            self.demand_arrived(demand);
        }
        if self.exit.is_none() && !self.accumulating {
            if S::KIND == Kind::ProducerConsumer {
                self.pump();
            } else {
                self.flush_buffer();
            }
        }
        self.check_finished();
        self.publish_buffered();
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
    fn publish_buffered(&self) {
        let held: usize = if self.held.is_empty() {
            0
        } else {
            self.held
                .iter()
                .map(|h| match h {
                    Held::Dispatch(events) => events.len(),
                    Held::Demand(_) => 0,
                })
                .sum()
        };
        let backlogs: usize = self
            .downs
            .iter()
            .filter(|l| !l.out.backlog.is_empty())
            .map(|l| l.out.backlog_events())
            .sum();
        let n = self.buffer.event_count()
            + self.inbound_events
            + held
            + backlogs
            + self.dispatcher.held();
        self.shared
            .cells
            .buffered
            .store(n as u64, Ordering::Relaxed);
    }

    fn any_backlog(&self) -> bool {
        self.ups.iter().any(|l| !l.out.backlog.is_empty())
            || self.downs.iter().any(|l| !l.out.backlog.is_empty())
    }

    /// Waits for an envelope, or, when `backlog` says some peer's backlog is not empty, for
    /// room at that peer.
    fn wait(&mut self, deadline: Option<Instant>, backlog: bool) -> Wait<Env<S>> {
        if !backlog {
            return match deadline {
                None => match self.inbox.recv() {
                    Ok(env) => Wait::Msg(env),
                    Err(_) => Wait::Disconnected,
                },
                Some(d) => match self.inbox.recv_deadline(d) {
                    Ok(env) => Wait::Msg(env),
                    Err(RecvTimeoutError::Timeout) => Wait::Timeout,
                    Err(RecvTimeoutError::Disconnected) => Wait::Disconnected,
                },
            };
        }
        // Take each backlog's first message in hand, so the select can send it.
        let mut downs: Vec<(usize, Option<Down<S::Out>>)> = Vec::new();
        let mut ups: Vec<(usize, Option<Up<S::In>>)> = Vec::new();
        for (i, l) in self.downs.iter_mut().enumerate() {
            if let Some(m) = l.out.backlog.pop_front() {
                downs.push((i, Some(m)));
            }
        }
        for (i, l) in self.ups.iter_mut().enumerate() {
            if let Some(m) = l.out.backlog.pop_front() {
                ups.push((i, Some(m)));
            }
        }
        let mut gone_down = None;
        let mut gone_up = None;
        let result = 'select: {
            let mut sel = Select::new();
            let inbox = sel.recv(&self.inbox);
            let mut ops = Vec::with_capacity(downs.len() + ups.len());
            for (k, (i, _)) in downs.iter().enumerate() {
                ops.push((self.downs[*i].out.port.register(&mut sel), true, k));
            }
            for (k, (i, _)) in ups.iter().enumerate() {
                ops.push((self.ups[*i].out.port.register(&mut sel), false, k));
            }
            let op = match deadline {
                Some(d) => match sel.select_deadline(d) {
                    Ok(op) => op,
                    Err(_) => break 'select Wait::Timeout,
                },
                None => sel.select(),
            };
            let index = op.index();
            if index == inbox {
                match op.recv(&self.inbox) {
                    Ok(env) => Wait::Msg(env),
                    Err(_) => Wait::Disconnected,
                }
            } else {
                let Some(&(_, down, k)) = ops.iter().find(|o| o.0 == index) else {
                    // Not one of ours (cannot happen): nothing was taken.
                    break 'select Wait::Timeout;
                };
                if down {
                    let (i, msg) = &mut downs[k];
                    if let Some(msg) = msg.take() {
                        let events = msg.event_count();
                        match self.downs[*i].out.port.send_selected(op, msg) {
                            Ok(()) => self.downs[*i].out.sent(events),
                            Err(m) => {
                                downs[k].1 = Some(m);
                                gone_down = Some(downs[k].0);
                            }
                        }
                    }
                } else {
                    let (i, msg) = &mut ups[k];
                    if let Some(msg) = msg.take() {
                        if let Err(m) = self.ups[*i].out.port.send_selected(op, msg) {
                            ups[k].1 = Some(m);
                            gone_up = Some(ups[k].0);
                        }
                    }
                }
                Wait::Timeout
            }
        };
        let result = self.restore(downs, ups, result);
        if let Some(i) = gone_down {
            self.gone.push(self.downs[i].info.id);
        }
        if let Some(i) = gone_up {
            // The producer ended; its cancel is already in the inbox.
            self.ups[i].out.backlog.clear();
        }
        result
    }

    fn restore(
        &mut self,
        downs: Vec<(usize, Option<Down<S::Out>>)>,
        ups: Vec<(usize, Option<Up<S::In>>)>,
        result: Wait<Env<S>>,
    ) -> Wait<Env<S>> {
        for (i, m) in downs {
            if let Some(m) = m {
                self.downs[i].out.backlog.push_front(m);
            }
        }
        for (i, m) in ups {
            if let Some(m) = m {
                self.ups[i].out.backlog.push_front(m);
            }
        }
        result
    }

    /// Sends what fits of every backlog; drops closed links whose backlog is delivered.
    fn flush_backlogs(&mut self) {
        for l in &mut self.downs {
            if !l.out.backlog.is_empty() && l.out.flush().is_err() {
                self.gone.push(l.info.id);
            }
        }
        for l in &mut self.ups {
            if !l.out.backlog.is_empty() && l.out.flush().is_err() {
                // The producer ended; its cancel is already in the inbox.
                l.out.backlog.clear();
            }
        }
        self.drop_closed_links();
    }

    /// Removes closed consumer links whose backlog (ending with the cancel) is delivered.
    fn drop_closed_links(&mut self) {
        if self.closed_links > 0 {
            self.downs
                .retain(|l| !(l.closed && l.out.backlog.is_empty()));
            self.closed_links = self.downs.iter().filter(|l| l.closed).count();
        }
    }

    /// Consumers whose inbox is gone: what waited for them is lost (counted); they leave.
    fn reap_gone(&mut self) {
        while let Some(sub) = self.gone.pop() {
            let Some(link) = self.downs.iter_mut().find(|l| l.info.id == sub) else {
                continue;
            };
            let lost = link.out.backlog_events();
            link.out.backlog.clear();
            let closed = link.closed;
            self.discard(lost, "its consumer ended");
            if closed {
                self.drop_closed_links();
            } else {
                self.remove_consumer(sub, Reason::Shutdown, false);
            }
        }
    }

    fn discard(&mut self, n: usize, why: &str) {
        if n > 0 {
            warn!("stage {}: discarded {n} events: {why}", self.shared.name);
            bump(&self.shared.cells.discarded, n as u64);
        }
    }

    fn handle(&mut self, env: Env<S>) {
        match env {
            Envelope::Down(Down::Events { sub, events }) => self.on_events(sub, events),
            Envelope::Up(Up::Ask { sub, n }) => self.on_ask(sub, n),
            Envelope::Down(Down::Subscribed(s)) => self.on_subscribed(*s),
            Envelope::Down(Down::Cancel { sub, reason }) => {
                if S::KIND == Kind::ProducerConsumer && !self.inbound.is_empty() {
                    self.inbound.push_back(Inbound::Cancel(sub, reason));
                } else {
                    self.producer_gone(sub, reason);
                }
            }
            Envelope::Up(Up::Subscribe(req)) => self.on_subscribe(*req),
            Envelope::Up(Up::Cancel { sub, reason }) => self.remove_consumer(sub, reason, true),
            Envelope::Message(msg) => self.invoke(|s, ctx| s.message(msg, ctx)),
            Envelope::Info(msg) => self.queue_info(msg),
            Envelope::Control(Control::Stop) => {
                self.exit.get_or_insert(Reason::Shutdown);
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
        }
    }

    /// Runs one callback, then applies what it asked for.
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
        };
        f(&mut self.stage, &mut ctx)
    }

    /// Dispatches what the last callback emitted, then applies its other effects.
    fn apply_effects(&mut self) {
        if !self.fx.emitted.is_empty() {
            let events = std::mem::take(&mut self.fx.emitted);
            if self.accumulating {
                self.held.push_back(Held::Dispatch(events));
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
    fn emit_out(&mut self, mut events: Vec<S::Out>) {
        if self.buffer.event_count() == 0 {
            self.dispatch(&mut events);
        }
        if !events.is_empty() {
            self.store(events);
        }
    }

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
                if S::KIND == Kind::Consumer {
                    self.exit.get_or_insert(Reason::Normal);
                } else {
                    self.finishing.get_or_insert(Reason::Normal);
                }
            }
        }
    }

    /// Switches a producer between accumulating and forwarding demand. Forwarding replays what
    /// accumulated, oldest first, each demand on its own.
    fn set_demand(&mut self, mode: ProducerDemand) {
        if S::KIND != Kind::Producer {
            return;
        }
        self.accumulating = mode == ProducerDemand::Accumulate;
        // Bounded: each step takes one entry that was held before the switch.
        let mut left = self.held.len();
        while !self.accumulating && self.exit.is_none() && left > 0 {
            left -= 1;
            match self.held.pop_front() {
                None => break,
                Some(Held::Demand(n)) => {
                    if self.finishing.is_none() {
                        self.handle_demand(n);
                    }
                }
                Some(Held::Dispatch(events)) => self.emit_out(events),
            }
        }
    }

    /// Ends the stage once a finishing producer has delivered everything it held, or when
    /// nobody is left to deliver it to.
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
            && S::KIND != Kind::Consumer
            && !self.downs.iter().any(|l| !l.closed);
        if done || deserted {
            self.exit = self.finishing.take();
        }
    }

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
    fn queue_info(&mut self, msg: S::Msg) {
        if S::KIND == Kind::ProducerConsumer && !self.inbound.is_empty() {
            self.inbound.push_back(Inbound::Info(msg));
            return;
        }
        self.info_after_buffer(msg);
    }

    /// An info behind the events buffered now (at once, if there are none).
    fn info_after_buffer(&mut self, msg: S::Msg) {
        let msg = match S::KIND {
            Kind::Consumer => msg,
            _ => match self.buffer.push_info(msg) {
                Ok(()) => return,
                Err(msg) => msg,
            },
        };
        // Nothing buffered: deliver it on the next turn, like a message sent to itself.
        self.fx.timers.schedule(Instant::now(), msg);
    }

    // ----- Producer side -------------------------------------------------------------------

    fn on_subscribe(&mut self, req: SubscribeRequest<S::Out>) {
        let SubscribeRequest {
            sub,
            consumer,
            consumer_name,
            producer,
            producer_name,
            options,
            ack,
            registered,
            consumer_id,
        } = req;
        if self.dispatcher.one_subscription_per_consumer()
            && self
                .downs
                .iter()
                .any(|l| !l.closed && l.consumer_id == consumer_id)
        {
            error!(
                "stage {}: {consumer_name} is already subscribed; the new subscription is refused",
                self.shared.name
            );
            let _ = ack.send(Err(SubscribeError::Rejected {
                producer: self.shared.name.to_string(),
                message: format!("{consumer_name} is already subscribed"),
            }));
            return;
        }
        if let Err(e) = self.dispatcher.subscribe(sub, &options) {
            let _ = ack.send(Err(e));
            return;
        }
        // Acknowledge first: a subscriber that gave up waiting has dropped its end, and then
        // the request is dropped without the consumer ever hearing of it.
        if ack.try_send(Ok(())).is_err() {
            let demand = self.route(|d, out| d.cancel(sub, out));
            self.pending_demand = self.pending_demand.saturating_add(demand);
            return;
        }
        let info = Subscription {
            id: sub,
            direction: Direction::Downstream,
            peer: consumer_name.clone(),
            options: options.clone(),
        };
        let mut out = Outlet::new(consumer, Some(self.shared.clone()));
        let subscribed = Down::Subscribed(Box::new(Subscribed {
            producer,
            info: Subscription {
                id: sub,
                direction: Direction::Upstream,
                peer: producer_name,
                options,
            },
            registered,
        }));
        if out.send(subscribed).is_err() {
            // The consumer ended meanwhile; its subscription ends with it.
            let demand = self.route(|d, out| d.cancel(sub, out));
            self.pending_demand = self.pending_demand.saturating_add(demand);
            return;
        }
        let cell = self
            .shared
            .add_sub(sub, Direction::Downstream, consumer_name);
        self.had_consumers = true;
        self.downs.push(DownLink {
            info: info.clone(),
            out,
            consumer_id,
            owed: 0,
            closed: false,
            cell,
        });
        self.invoke(|s, ctx| {
            s.subscribed(&info, ctx);
        });
    }

    fn on_ask(&mut self, sub: SubscriptionId, n: usize) {
        let Some(link) = self
            .downs
            .iter_mut()
            .find(|l| l.info.id == sub && !l.closed)
        else {
            // Asks racing with a cancel: the subscription is already gone.
            return;
        };
        link.owed = link.owed.saturating_add(n);
        link.cell.store(link.owed as u64, Ordering::Relaxed);
        let demand = self.route(|d, out| d.ask(sub, n, out));
        self.demand_arrived(demand);
    }

    /// New demand reached the producer side: serve it from the buffer, then from the stage.
    fn demand_arrived(&mut self, demand: usize) {
        match S::KIND {
            Kind::Producer if self.accumulating => {
                // Record the demand; what the buffer covers is taken out and held back.
                let covered = self.buffer.take(demand);
                let rest = demand - covered.len();
                if !covered.is_empty() {
                    self.held.push_back(Held::Dispatch(covered));
                }
                if rest > 0 {
                    self.held.push_back(Held::Demand(rest));
                }
            }
            Kind::Producer => {
                let taken = self.flush_buffer();
                let rest = demand.saturating_sub(taken);
                if rest > 0 && self.finishing.is_none() && self.exit.is_none() {
                    self.handle_demand(rest);
                }
            }
            Kind::ProducerConsumer => {
                self.counter = self.counter.saturating_add(demand);
                self.pump();
            }
            Kind::Consumer => {}
        }
    }

    /// Calls `handle_demand(n)`, with room for `n` events reserved (up to a cap: a huge demand
    /// must not allocate a huge batch up front).
    fn handle_demand(&mut self, n: usize) {
        const RESERVE_CAP: usize = 65_536;
        self.fx.emitted.reserve(n.min(RESERVE_CAP));
        self.invoke(|s, ctx| s.demand(n, ctx));
    }

    /// Producer-consumer: deliver the buffer, then handle queued input while there is demand.
    /// Bounded: every step takes one entry off the inbound queue.
    fn pump(&mut self) {
        loop {
            if self.exit.is_some() {
                return;
            }
            self.flush_buffer();
            if self.buffer.event_count() > 0 {
                return;
            }
            match self.inbound.front() {
                None => return,
                Some(Inbound::Events(..)) if self.counter == 0 => return,
                Some(_) => {}
            }
            match self.inbound.pop_front() {
                Some(Inbound::Events(sub, events)) => {
                    self.inbound_events -= events.len();
                    self.handle_events(sub, events);
                }
                Some(Inbound::Cancel(sub, reason)) => self.producer_gone(sub, reason),
                // Its place in the queue is reached: behind what is buffered, or handled now
                // (as GenStage does), never back in the queue.
                Some(Inbound::Info(msg)) => match self.buffer.push_info(msg) {
                    Ok(()) => {}
                    Err(msg) => self.invoke(|s, ctx| s.message(msg, ctx)),
                },
                None => return,
            }
        }
    }

    /// Delivers buffered events to the demand the dispatcher has, in order, delivering each
    /// info when the events before it have left. Returns how many events left the buffer.
    fn flush_buffer(&mut self) -> usize {
        let mut taken = 0;
        loop {
            while let Some(info) = self.buffer.pop_due_info() {
                self.invoke(|s, ctx| s.message(info, ctx));
            }
            if self.exit.is_some() || self.accumulating || self.buffer.event_count() == 0 {
                break;
            }
            let ready = self.dispatcher.ready();
            if ready == 0 {
                break;
            }
            let mut batch = self.buffer.take(ready);
            if batch.is_empty() {
                // An info marker is next: it is due now.
                continue;
            }
            let n = batch.len();
            self.dispatch(&mut batch);
            taken += n - batch.len();
            if !batch.is_empty() {
                self.buffer.unget(batch);
                break;
            }
        }
        taken
    }

    /// Hands `events` to the dispatcher and sends each consumer its message; what no consumer
    /// has demand for stays in `events`. The dispatcher sees every event, with consumers or
    /// without, so that its accounting of what is pending agrees with the buffer.
    fn dispatch(&mut self, events: &mut Vec<S::Out>) {
        let before = events.len();
        self.route(|d, out| d.dispatch(events, out));
        if S::KIND == Kind::ProducerConsumer {
            // Downstream demand is used up by the events the dispatcher took, whatever it did
            // with them (a broadcast sends each to every consumer).
            self.counter = self.counter.saturating_sub(before - events.len());
        }
    }

    /// Runs `f` on the dispatcher with an outbox that sends to the consumers, then accounts for
    /// what the dispatcher did: discards, and demand it created (served at the end of the
    /// turn). Consumers found gone are removed at the end of the turn too.
    fn route<R>(
        &mut self,
        f: impl FnOnce(&mut dyn Dispatcher<S::Out>, &mut Outbox<'_, S::Out>) -> R,
    ) -> R {
        let downs = &mut self.downs;
        let shared = &self.shared;
        let gone = &mut self.gone;
        let mut lost = 0usize;
        let (r, discarded, demand) = {
            let mut send = |sub: SubscriptionId, batch: Vec<S::Out>| {
                let n = batch.len();
                let Some(link) = downs.iter_mut().find(|l| l.info.id == sub && !l.closed) else {
                    error!(
                        "stage {}: dispatcher sent {n} events to unknown subscription {sub}; \
                         discarded",
                        shared.name
                    );
                    lost += n;
                    return;
                };
                if n == 0 {
                    return;
                }
                if n > link.owed {
                    error!(
                        "stage {}: dispatcher sent {} events to {} which asked for {}",
                        shared.name, n, link.info.peer, link.owed
                    );
                }
                link.owed = link.owed.saturating_sub(n);
                link.cell.store(link.owed as u64, Ordering::Relaxed);
                if link.out.send(Down::Events { sub, events: batch }).is_err() {
                    // Its events stay in the backlog, counted when the link is reaped.
                    gone.push(sub);
                }
            };
            let mut out = Outbox::new(&mut send);
            let r = f(&mut *self.dispatcher, &mut out);
            (r, out.discarded(), out.upstream_demand())
        };
        self.discard(lost, "no such subscription");
        self.discard(discarded, "dropped by the dispatcher");
        self.pending_demand = self.pending_demand.saturating_add(demand);
        r
    }

    /// Buffers events no consumer had demand for, counting and logging discards.
    fn store(&mut self, events: Vec<S::Out>) {
        let discarded = self.buffer.store(events);
        if discarded > 0 {
            bump(&self.shared.cells.discarded, discarded as u64);
            // The stage may log it its own way, or not at all (GenStage's format_discarded).
            if self.stage.format_discarded(discarded) {
                warn!(
                    "stage {}: discarded {discarded} events from buffer",
                    self.shared.name
                );
            }
        }
    }

    /// A consumer leaves (it cancelled, or ended, or `notify` is false and it is unreachable).
    fn remove_consumer(&mut self, sub: SubscriptionId, reason: Reason, notify: bool) {
        let Some(link) = self
            .downs
            .iter_mut()
            .find(|l| l.info.id == sub && !l.closed)
        else {
            return;
        };
        link.closed = true;
        self.closed_links += 1;
        if notify {
            // Confirm to the consumer; it may be gone already, which the backlog shows.
            if link
                .out
                .send(Down::Cancel {
                    sub,
                    reason: reason.clone(),
                })
                .is_err()
            {
                self.gone.push(sub);
            }
        }
        let info = link.info.clone();
        self.shared.remove_sub(sub, Direction::Downstream);
        self.drop_closed_links();
        self.invoke(|s, ctx| s.cancelled(&info, &reason, ctx));
        let demand = self.route(|d, out| d.cancel(sub, out));
        self.pending_demand = self.pending_demand.saturating_add(demand);
    }

    // ----- Consumer side -------------------------------------------------------------------

    fn on_subscribed(&mut self, s: Subscribed<S::In>) {
        let Subscribed {
            producer,
            info,
            registered,
        } = s;
        let sub = info.id;
        let opts = &info.options;
        let demand = Demand::new(opts.get_max_demand(), opts.get_min_demand());
        let cell = self
            .shared
            .add_sub(sub, Direction::Upstream, info.peer.clone());
        let link_info = info.clone();
        self.ups.push(UpLink {
            info: link_info,
            out: Outlet::new(producer, None),
            demand,
            mode: DemandMode::Automatic,
            manual_outstanding: 0,
            cancelling: false,
            cell,
        });
        // The mode is set before the callback's effects apply, so that a manual consumer
        // can ask from `handle_subscribe`.
        let mode = self.call(|s, ctx| s.subscribed(&info, ctx));
        if let Some(link) = self.ups.iter_mut().find(|l| l.info.id == sub) {
            link.mode = mode;
            if mode == DemandMode::Automatic && !link.cancelling {
                let n = link.demand.max();
                link.cell.store(n as u64, Ordering::Relaxed);
                let _ = link.out.send(Up::Ask { sub, n });
            }
        }
        self.apply_effects();
        if let Some(registered) = registered {
            let _ = registered.try_send(());
        }
    }

    fn on_events(&mut self, sub: SubscriptionId, events: Vec<S::In>) {
        bump(&self.shared.cells.events_in, events.len() as u64);
        if S::KIND == Kind::ProducerConsumer && (self.counter == 0 || !self.inbound.is_empty()) {
            // Gate: handle input only while downstream has demand (it produces no asks
            // until then, so upstream stops too).
            self.inbound_events += events.len();
            self.inbound.push_back(Inbound::Events(sub, events));
            return;
        }
        self.handle_events(sub, events);
    }

    /// Cuts a message into batches by the subscription's demand and hands each to
    /// `handle_events`, asking after each batch as the protocol says.
    fn handle_events(&mut self, sub: SubscriptionId, events: Vec<S::In>) {
        let len = events.len();
        let Some(link) = self.ups.iter_mut().find(|l| l.info.id == sub) else {
            self.discard(len, "they came from an unknown subscription");
            return;
        };
        if link.mode == DemandMode::Manual {
            link.manual_outstanding = link.manual_outstanding.saturating_sub(len);
            link.cell
                .store(link.manual_outstanding as u64, Ordering::Relaxed);
            let mut iter = events.into_iter();
            self.invoke(|s, ctx| s.events(Events::new(&mut iter, len, sub), ctx));
            return;
        }
        let batches = link.demand.receive(len);
        link.cell
            .store(link.demand.outstanding() as u64, Ordering::Relaxed);
        let mut iter = events.into_iter();
        for batch in batches {
            if batch.excess > 0 {
                error!(
                    "stage {}: received {} events in excess from subscription {sub}",
                    self.shared.name, batch.excess
                );
            }
            if S::KIND == Kind::ProducerConsumer {
                self.fx.emitted.reserve(batch.len);
            }
            let rest = iter.len() - batch.len;
            self.invoke(|s, ctx| s.events(Events::new(&mut iter, batch.len, sub), ctx));
            // A batch mapped and left half-consumed leaves events behind: drop them.
            while iter.len() > rest {
                iter.next();
            }
            if self.exit.is_some() {
                // The stage stopped: the rest is not handled and not asked for.
                let rest = iter.len();
                self.discard(rest, "the stage stopped while handling them");
                return;
            }
            if batch.ask > 0 && self.finishing.is_none() {
                if let Some(link) = self.ups.iter_mut().find(|l| l.info.id == sub) {
                    if !link.cancelling {
                        let _ = link.out.send(Up::Ask { sub, n: batch.ask });
                    }
                }
            }
        }
    }

    /// A subscription to a producer ended: tell the stage, then end or not by cancel mode.
    ///
    /// Fan-in: a permanent subscription that ends normally ends the stage only once every
    /// subscription it holds has ended (the other producers' events are not cut off); an
    /// abnormal end ends it at once.
    fn producer_gone(&mut self, sub: SubscriptionId, reason: Reason) {
        let Some(i) = self.ups.iter().position(|l| l.info.id == sub) else {
            return;
        };
        let link = self.ups.remove(i);
        self.shared.remove_sub(sub, Direction::Upstream);
        let info = link.info;
        self.invoke(|s, ctx| s.cancelled(&info, &reason, ctx));
        if self.exit.is_some() {
            return;
        }
        let name = &self.shared.name;
        if info.options.get_cancel().exits_on(&reason) {
            if !reason.is_normal() {
                info!(
                    "stage {name}: stopping after subscription {sub} to {} ended: {reason}",
                    info.peer
                );
                self.exit = Some(reason);
                return;
            }
            if !self.ups.is_empty() {
                info!(
                    "stage {name}: subscription {sub} to {} ended: {reason}; stopping once \
                     its {} other subscriptions have ended",
                    info.peer,
                    self.ups.len()
                );
            }
            self.finish_with_last_producer.get_or_insert(reason);
        }
        if self.ups.is_empty() {
            if let Some(reason) = self.finish_with_last_producer.take() {
                info!(
                    "stage {name}: stopping after subscription {sub} to {} ended: {reason}",
                    info.peer
                );
                if S::KIND == Kind::ProducerConsumer {
                    // Nothing is lost on a normal finish: drain, then end.
                    self.finishing.get_or_insert(reason);
                } else {
                    self.exit = Some(reason);
                }
            }
        }
    }

    /// Cancels a subscription of this stage, either side.
    fn cancel(&mut self, sub: SubscriptionId, reason: Reason) {
        if let Some(link) = self.ups.iter_mut().find(|l| l.info.id == sub) {
            if !link.cancelling {
                link.cancelling = true;
                let _ = link.out.send(Up::Cancel { sub, reason });
            }
        } else {
            self.remove_consumer(sub, reason, true);
        }
    }

    fn manual_ask(&mut self, sub: SubscriptionId, n: usize) {
        let name = &self.shared.name;
        let Some(link) = self.ups.iter_mut().find(|l| l.info.id == sub) else {
            warn!("stage {name}: ask on unknown subscription {sub} ignored");
            return;
        };
        if link.mode != DemandMode::Manual {
            warn!("stage {name}: ask on automatic subscription {sub} ignored");
            return;
        }
        if n == 0 || link.cancelling {
            return;
        }
        link.manual_outstanding = link.manual_outstanding.saturating_add(n);
        link.cell
            .store(link.manual_outstanding as u64, Ordering::Relaxed);
        let _ = link.out.send(Up::Ask { sub, n });
    }

    // ----- The end -------------------------------------------------------------------------

    /// Tells every peer the stage ended; waits until its consumers have been told and its
    /// producers have confirmed (receiving all the while, so that no peer can wait on this
    /// stage, and counting every event that still arrives), then drops what is left.
    pub(crate) fn terminate(&mut self, reason: &Reason) {
        let mut lost = self.fx.emitted.len();
        self.fx.emitted.clear();
        let (buffered, _) = self.buffer.clear();
        lost += buffered + self.inbound_events + self.dispatcher.held();
        for held in self.held.drain(..) {
            if let Held::Dispatch(events) = held {
                lost += events.len();
            }
        }
        // Producers whose end is queued behind inbound events have confirmed already.
        for entry in self.inbound.drain(..) {
            if let Inbound::Cancel(sub, _) = entry {
                self.ups.retain(|l| l.info.id != sub);
                self.shared.remove_sub(sub, Direction::Upstream);
            }
        }
        self.inbound_events = 0;
        for link in &mut self.downs {
            if !link.closed {
                link.closed = true;
                self.closed_links += 1;
                let sub = link.info.id;
                self.shared.remove_sub(sub, Direction::Downstream);
                let _ = link.out.send(Down::Cancel {
                    sub,
                    reason: reason.clone(),
                });
            }
        }
        for link in &mut self.ups {
            if !link.cancelling {
                link.cancelling = true;
                let sub = link.info.id;
                let _ = link.out.send(Up::Cancel {
                    sub,
                    reason: reason.clone(),
                });
            }
        }
        let deadline = crate::timer::deadline(CONFIRM_WAIT);
        loop {
            self.flush_backlogs();
            for sub in std::mem::take(&mut self.gone) {
                if let Some(l) = self.downs.iter_mut().find(|l| l.info.id == sub) {
                    lost += l.out.backlog_events();
                    l.out.backlog.clear();
                }
            }
            self.drop_closed_links();
            let backlog = self.any_backlog();
            if !backlog && self.ups.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                if !self.ups.is_empty() {
                    warn!(
                        "stage {}: {} producers did not confirm the end within {CONFIRM_WAIT:?}; \
                         events they send now are counted by them",
                        self.shared.name,
                        self.ups.len()
                    );
                }
                for l in &self.downs {
                    lost += l.out.backlog_events();
                }
                break;
            }
            while let Ok(env) = self.control.try_recv() {
                lost += self.drop_late(env, reason);
            }
            match self.wait(Some(deadline), backlog) {
                Wait::Msg(env) => lost += self.drop_late(env, reason),
                Wait::Timeout => {}
                Wait::Disconnected => break,
            }
        }
        while let Ok(env) = self.inbox.try_recv() {
            lost += self.drop_late(env, reason);
        }
        while let Ok(env) = self.control.try_recv() {
            lost += self.drop_late(env, reason);
        }
        self.discard(lost, &format!("the stage ended ({reason})"));
        for link in &self.ups {
            self.shared.remove_sub(link.info.id, Direction::Upstream);
        }
        self.downs.clear();
        self.publish_buffered();
    }

    /// Something that reached an ending stage; returns the events it held (counted as
    /// received, and then as discarded).
    fn drop_late(&mut self, env: Env<S>, reason: &Reason) -> usize {
        match env {
            Envelope::Down(Down::Events { events, .. }) => {
                bump(&self.shared.cells.events_in, events.len() as u64);
                events.len()
            }
            Envelope::Down(Down::Subscribed(s)) => {
                // A subscription confirmed too late: cancel it at once, and wait for the
                // producer's confirmation like the others.
                let sub = s.info.id;
                let mut out = Outlet::new(s.producer, None);
                let _ = out.send(Up::Cancel {
                    sub,
                    reason: reason.clone(),
                });
                self.ups.push(UpLink {
                    info: s.info,
                    out,
                    demand: Demand::new(1, 0),
                    mode: DemandMode::Manual,
                    manual_outstanding: 0,
                    cancelling: true,
                    cell: Arc::new(AtomicU64::new(0)),
                });
                0
            }
            Envelope::Down(Down::Cancel { sub, .. }) => {
                if let Some(i) = self.ups.iter().position(|l| l.info.id == sub) {
                    let link = self.ups.remove(i);
                    self.shared.remove_sub(link.info.id, Direction::Upstream);
                }
                0
            }
            Envelope::Up(Up::Subscribe(req)) => {
                let _ = req.ack.send(Err(SubscribeError::ProducerGone {
                    producer: self.shared.name.to_string(),
                }));
                0
            }
            _ => 0,
        }
    }
}
