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
use std::time::Instant;

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

/// Sends to one peer, keeping what does not fit in a backlog (protocol rules 4 and 5).
struct Outlet<M> {
    port: Box<dyn Port<M>>,
    backlog: VecDeque<M>,
}

/// A send found the peer gone; the message comes back.
struct Gone<M>(M);

impl<M: Coalesce> Outlet<M> {
    fn new(port: Box<dyn Port<M>>) -> Outlet<M> {
        Outlet {
            port,
            backlog: VecDeque::new(),
        }
    }

    fn send(&mut self, msg: M) -> Result<(), Gone<M>> {
        if let Some(last) = self.backlog.back_mut() {
            if let Some(msg) = last.coalesce(msg) {
                self.backlog.push_back(msg);
            }
            return Ok(());
        }
        match self.port.try_send(msg) {
            Ok(()) => Ok(()),
            Err(PortError::Full(m)) => {
                self.backlog.push_back(m);
                Ok(())
            }
            Err(PortError::Gone(m) | PortError::Timeout(m)) => Err(Gone(m)),
        }
    }

    /// Sends what fits of the backlog. `Err` with the rest if the peer is gone.
    fn flush(&mut self) -> Result<(), VecDeque<M>> {
        while let Some(msg) = self.backlog.pop_front() {
            match self.port.try_send(msg) {
                Ok(()) => {}
                Err(PortError::Full(m)) => {
                    self.backlog.push_front(m);
                    return Ok(());
                }
                Err(PortError::Gone(m) | PortError::Timeout(m)) => {
                    self.backlog.push_front(m);
                    return Err(std::mem::take(&mut self.backlog));
                }
            }
        }
        Ok(())
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
    /// Demand a dispatcher created while dispatching, served on the next turn.
    pending_demand: usize,
    /// Consumer links marked closed and not yet removed (they wait for their backlog).
    closed_links: usize,
    /// A timer is due and waits behind this many queued messages.
    timer_gate: Option<usize>,
    /// Producer in accumulate mode: what it holds back, oldest first.
    accumulating: bool,
    held: VecDeque<Held<S::Out>>,
    exit: Option<Reason>,
}

impl<S: Callbacks> Runner<S> {
    pub(crate) fn new(
        stage: S,
        shared: Arc<Shared>,
        self_tx: Sender<Env<S>>,
        inbox: Receiver<Env<S>>,
        config: Config<S::Out>,
    ) -> Runner<S> {
        let mut dispatcher = config.dispatcher;
        dispatcher.attach(&shared.name);
        let mint_shared = shared.clone();
        let mint = Box::new(move || {
            Mailbox::new(Box::new(Counted::new(self_tx.clone(), mint_shared.clone())))
        });
        Runner {
            stage,
            shared,
            inbox,
            fx: Effects::new(mint),
            ups: Vec::new(),
            downs: Vec::new(),
            dispatcher,
            buffer: Buffer::new(config.buffer_size, config.buffer_keep),
            inbound: VecDeque::new(),
            inbound_events: 0,
            counter: 0,
            finishing: None,
            pending_demand: 0,
            accumulating: S::KIND == Kind::Producer && config.demand == ProducerDemand::Accumulate,
            held: VecDeque::new(),
            timer_gate: None,
            closed_links: 0,
            exit: None,
        }
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Runs until the stage ends; returns why.
    pub(crate) fn run(&mut self) -> Reason {
        loop {
            if let Some(reason) = self.exit.take() {
                return reason;
            }
            if self.shared.stop_requested.load(Ordering::Relaxed) {
                return Reason::Shutdown;
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
                let wait_until = if self.timer_gate.is_some() {
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
            while self.pending_demand > 0 && self.exit.is_none() {
                let demand = std::mem::take(&mut self.pending_demand);
                self.demand_arrived(demand);
            }
            self.check_finished();
            self.publish_buffered();
        }
    }

    /// Nothing can ever send this stage a message again (no handle, mailbox or peer holds a
    /// reference, and its inbox is empty) and it has no timer left: it can only idle forever,
    /// so it ends.
    fn unreachable(&self) -> bool {
        self.shared.refs.load(Ordering::Acquire) == 0
            && self.fx.timers.is_empty()
            && self.inbox.is_empty()
    }

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
        let n = (self.buffer.event_count() + self.inbound_events + held) as u64;
        self.shared.cells.buffered.store(n, Ordering::Relaxed);
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
                let &(_, down, k) = ops
                    .iter()
                    .find(|o| o.0 == index)
                    .expect("selected operation was registered");
                if down {
                    let (i, msg) = &mut downs[k];
                    let msg = msg.take().expect("message in hand");
                    if let Err(m) = self.downs[*i].out.port.send_selected(op, msg) {
                        downs[k].1 = Some(m);
                        gone_down = Some(downs[k].0);
                    }
                } else {
                    let (i, msg) = &mut ups[k];
                    let msg = msg.take().expect("message in hand");
                    if let Err(m) = self.ups[*i].out.port.send_selected(op, msg) {
                        ups[k].1 = Some(m);
                        gone_up = Some(ups[k].0);
                    }
                }
                Wait::Timeout
            }
        };
        let result = self.restore(downs, ups, result);
        if let Some(i) = gone_down {
            let rest = std::mem::take(&mut self.downs[i].out.backlog);
            self.consumer_unreachable(i, rest);
        }
        if let Some(i) = gone_up {
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
        let mut gone = Vec::new();
        for (i, l) in self.downs.iter_mut().enumerate() {
            if !l.out.backlog.is_empty() {
                if let Err(rest) = l.out.flush() {
                    gone.push((i, rest));
                }
            }
        }
        for (i, rest) in gone.into_iter().rev() {
            self.consumer_unreachable(i, rest);
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

    /// A consumer's inbox is gone: what waited for it is lost; the consumer leaves.
    fn consumer_unreachable(&mut self, i: usize, rest: VecDeque<Down<S::Out>>) {
        let lost: usize = rest
            .iter()
            .map(|m| match m {
                Down::Events { events, .. } => events.len(),
                _ => 0,
            })
            .sum();
        self.discard(lost, "its consumer ended");
        let link = &mut self.downs[i];
        link.out.backlog.clear();
        if !link.closed {
            let sub = link.info.id;
            self.remove_consumer(sub, Reason::Shutdown, false);
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
            let mut events = std::mem::take(&mut self.fx.emitted);
            if self.accumulating {
                self.held.push_back(Held::Dispatch(events));
            } else {
                self.dispatch(&mut events);
                if !events.is_empty() {
                    self.store(events);
                }
            }
        }
        if self.fx.has_side_effects() {
            self.apply_side_effects();
        }
    }

    fn apply_side_effects(&mut self) {
        for reply in std::mem::take(&mut self.fx.replies) {
            reply();
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
        while !self.accumulating && self.exit.is_none() {
            match self.held.pop_front() {
                None => break,
                Some(Held::Demand(n)) => {
                    if self.finishing.is_none() {
                        self.handle_demand(n);
                    }
                }
                Some(Held::Dispatch(mut events)) => {
                    self.dispatch(&mut events);
                    if !events.is_empty() {
                        self.store(events);
                    }
                }
            }
        }
    }

    /// Ends the stage once a finishing producer has delivered everything it held.
    fn check_finished(&mut self) {
        if self.exit.is_none()
            && self.finishing.is_some()
            && self.buffer.is_empty()
            && self.inbound.is_empty()
            && self.held.is_empty()
            && self.dispatcher.held() == 0
        {
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

    /// An info: to `handle_message` once the events buffered before it have left.
    fn queue_info(&mut self, msg: S::Msg) {
        if S::KIND == Kind::ProducerConsumer && !self.inbound.is_empty() {
            self.inbound.push_back(Inbound::Info(msg));
            return;
        }
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
        } = req;
        if let Err(e) = self.dispatcher.subscribe(sub, &options) {
            let _ = ack.send(Err(e));
            return;
        }
        // Acknowledge first: a subscriber that gave up waiting has dropped its end, and then
        // the request is dropped without the consumer ever hearing of it.
        if ack.try_send(Ok(())).is_err() {
            self.route(|d, out| d.cancel(sub, out));
            return;
        }
        let info = Subscription {
            id: sub,
            direction: Direction::Downstream,
            peer: consumer_name.clone(),
            options: options.clone(),
        };
        let mut out = Outlet::new(consumer);
        let subscribed = Down::Subscribed(Box::new(Subscribed {
            producer,
            info: Subscription {
                id: sub,
                direction: Direction::Upstream,
                peer: producer_name,
                options,
            },
        }));
        if out.send(subscribed).is_err() {
            // The consumer ended meanwhile; its subscription ends with it.
            self.route(|d, out| d.cancel(sub, out));
            return;
        }
        let cell = self
            .shared
            .add_sub(sub, Direction::Downstream, consumer_name);
        self.downs.push(DownLink {
            info: info.clone(),
            out,
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
                let taken = self.flush_buffer(demand);
                let rest = demand - taken;
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
    fn pump(&mut self) {
        loop {
            if self.exit.is_some() {
                return;
            }
            if !self.buffer.is_empty() {
                if self.counter == 0 {
                    return;
                }
                self.flush_buffer(self.counter);
                if !self.buffer.is_empty() {
                    return;
                }
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
                Some(Inbound::Info(msg)) => self.queue_info(msg),
                None => return,
            }
        }
    }

    /// Dispatches up to `limit` buffered events, stopping at info markers to deliver them.
    /// Returns how many events left the buffer.
    fn flush_buffer(&mut self, limit: usize) -> usize {
        let mut taken = 0;
        loop {
            while let Some(info) = self.buffer.pop_due_info() {
                self.invoke(|s, ctx| s.message(info, ctx));
            }
            if taken >= limit || self.buffer.event_count() == 0 {
                break;
            }
            let mut batch = self.buffer.take(limit - taken);
            if batch.is_empty() {
                continue;
            }
            taken += batch.len();
            self.dispatch(&mut batch);
            if !batch.is_empty() {
                taken -= batch.len();
                self.buffer.unget(batch);
                break;
            }
        }
        taken
    }

    /// Hands `events` to the dispatcher and sends each consumer its message; what no consumer
    /// has demand for stays in `events`.
    fn dispatch(&mut self, events: &mut Vec<S::Out>) {
        if self.downs.is_empty() {
            return;
        }
        let before = events.len();
        self.route(|d, out| d.dispatch(events, out));
        if S::KIND == Kind::ProducerConsumer {
            // Downstream demand is used up by the events the dispatcher took, whatever it did
            // with them (a broadcast sends each to every consumer).
            self.counter = self.counter.saturating_sub(before - events.len());
        }
    }

    /// Runs `f` on the dispatcher with an outbox that sends to the consumers, then accounts for
    /// what the dispatcher did: events out, discards, demand it created.
    fn route<R>(
        &mut self,
        f: impl FnOnce(&mut dyn Dispatcher<S::Out>, &mut Outbox<'_, S::Out>) -> R,
    ) -> R {
        let downs = &mut self.downs;
        let shared = &self.shared;
        let mut gone = Vec::new();
        let mut delivered = 0usize;
        let (r, discarded, demand) = {
            let mut send = |sub: SubscriptionId, batch: Vec<S::Out>| {
                let Some(i) = downs.iter().position(|l| l.info.id == sub && !l.closed) else {
                    error!(
                        "stage {}: dispatcher sent events to unknown subscription {sub}",
                        shared.name
                    );
                    return;
                };
                let link = &mut downs[i];
                let n = batch.len();
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
                match link.out.send(Down::Events { sub, events: batch }) {
                    Ok(()) => delivered += n,
                    Err(Gone(_)) => gone.push(i),
                }
            };
            let mut out = Outbox::new(&mut send);
            let r = f(&mut *self.dispatcher, &mut out);
            (r, out.discarded(), out.upstream_demand())
        };
        bump(&self.shared.cells.events_out, delivered as u64);
        gone.dedup();
        for i in gone.into_iter().rev() {
            self.consumer_unreachable(i, VecDeque::new());
        }
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
            // Confirm to the consumer; it may be gone already, which is fine.
            let _ = link.out.send(Down::Cancel {
                sub,
                reason: reason.clone(),
            });
        }
        let info = link.info.clone();
        self.shared.remove_sub(sub, Direction::Downstream);
        self.drop_closed_links();
        self.invoke(|s, ctx| s.cancelled(&info, &reason, ctx));
        let demand = self.route(|d, out| d.cancel(sub, out));
        if demand > 0 {
            self.demand_arrived(demand);
        }
    }

    // ----- Consumer side -------------------------------------------------------------------

    fn on_subscribed(&mut self, s: Subscribed<S::In>) {
        let Subscribed { producer, info } = s;
        let sub = info.id;
        let opts = &info.options;
        let demand = Demand::new(opts.get_max_demand(), opts.get_min_demand());
        let cell = self
            .shared
            .add_sub(sub, Direction::Upstream, info.peer.clone());
        let link_info = info.clone();
        self.ups.push(UpLink {
            info: link_info,
            out: Outlet::new(producer),
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
        if S::KIND == Kind::ProducerConsumer {
            self.pump();
        }
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
    fn producer_gone(&mut self, sub: SubscriptionId, reason: Reason) {
        let Some(i) = self.ups.iter().position(|l| l.info.id == sub) else {
            return;
        };
        let link = self.ups.remove(i);
        self.shared.remove_sub(sub, Direction::Upstream);
        let info = link.info;
        self.invoke(|s, ctx| s.cancelled(&info, &reason, ctx));
        if info.options.get_cancel().exits_on(&reason) && self.exit.is_none() {
            info!(
                "stage {}: stopping after subscription {sub} to {} ended: {reason}",
                self.shared.name, info.peer
            );
            if S::KIND == Kind::ProducerConsumer && reason.is_normal() {
                // Nothing is lost on a normal finish: drain, then end.
                self.finishing.get_or_insert(reason);
            } else {
                self.exit = Some(reason);
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

    /// Tells every peer the stage ended and waits until they have been told (receiving all the
    /// while, so that no peer can wait on this stage), then drops what is left.
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
        self.inbound.clear();
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
            let sub = link.info.id;
            let _ = link.out.send(Up::Cancel {
                sub,
                reason: reason.clone(),
            });
        }
        loop {
            self.flush_backlogs();
            for l in &mut self.ups {
                if l.out.flush().is_err() {
                    l.out.backlog.clear();
                }
            }
            if !self.any_backlog() {
                break;
            }
            if let Wait::Msg(env) = self.wait(None, true) {
                lost += self.drop_late(env, reason);
            }
        }
        while let Ok(env) = self.inbox.try_recv() {
            lost += self.drop_late(env, reason);
        }
        self.discard(lost, &format!("the stage ended ({reason})"));
        for link in &self.ups {
            self.shared.remove_sub(link.info.id, Direction::Upstream);
        }
        self.publish_buffered();
    }

    /// Something that reached an ending stage; returns the events it held.
    fn drop_late(&mut self, env: Env<S>, reason: &Reason) -> usize {
        match env {
            Envelope::Down(Down::Events { events, .. }) => events.len(),
            Envelope::Down(Down::Subscribed(s)) => {
                // A subscription confirmed too late: cancel it at once.
                let sub = s.info.id;
                let mut out = Outlet::new(s.producer);
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
                if let Some(l) = self.ups.iter_mut().find(|l| l.info.id == sub) {
                    l.out.backlog.clear();
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
