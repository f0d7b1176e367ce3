//! The processor stages: `handle_message` on each message, a panic or an error failing that
//! message only; failed messages through `handle_failed` and acknowledged in one group per
//! batch of events; the rest passed on to the batchers (or acknowledged, without batchers).
//! With a rate limit, a processor asks its producers itself, for what the shared window
//! grants.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Instant;

use super::counters::Cells;
use super::message::{ack_all, ack_all_emptying, panic_message, Message, PipelineAck};
use super::rate::Limiter;
use crate::recycle::Recycler;
use crate::{
    Consumer, ConsumerContext, Context, DemandMode, Direction, Events, ProducerConsumer, Reason,
    Subscription, SubscriptionId,
};

/// A processor's `handle_message` where it changes the data's type, run over a whole batch:
/// one call through the box a batch, the user's handler inlined in the loop (see [`mapped`]).
/// It takes every message out of the batch: a successful one goes on with its new data to
/// the `Vec` (to the batchers) or, without batchers, to the [`Sorted`]'s `done`; one that
/// failed to its `failed`.
pub(crate) type Mapped<I, O> =
    Box<dyn FnMut(&mut Vec<Message<I>>, &Route, &mut Vec<Message<O>>, &mut Sorted<I, O>) + Send>;

/// Where a [`Mapped`] handler puts what does not go on to the batchers.
pub(crate) struct Sorted<I, O> {
    /// How many went on to the batchers.
    passed: u64,
    /// Successful, without batchers: acknowledged by the processor.
    done: Vec<Message<O>>,
    failed: Vec<Failed<I, O>>,
}

/// A processor's `handle_message` where it keeps the data's type, run over a whole batch in
/// place: one call through the box a batch, the user's handler inlined in the loop (see
/// [`in_place`]). Returns whether every message came through (none failed, none named an
/// unknown batcher); the indexes of those that named an unknown batcher go to the `Vec`.
pub(crate) type InPlace<I> =
    Box<dyn FnMut(&mut [Message<I>], &Route, &mut Vec<usize>) -> bool + Send>;

/// How a processor runs `handle_message`: over a batch in place when the data keeps its type,
/// else over a batch into a new one.
pub(crate) enum Handling<I, O> {
    InPlace(InPlace<I>),
    Each(Mapped<I, O>),
}

/// `handle_message` over a batch in place, if it returns data of the type it is given (`O`
/// is `I`; else it is handed back): each message's data is replaced where it lies; a
/// handler's error or panic fails that message only.
pub(crate) fn in_place<I, O, E, H>(mut handle_message: H) -> Result<InPlace<I>, H>
where
    I: 'static,
    O: 'static,
    E: std::fmt::Display,
    H: FnMut(&mut Message<I>) -> Result<O, E> + Send + 'static,
{
    if TypeId::of::<O>() != TypeId::of::<I>() {
        return Err(handle_message);
    }
    Ok(Box::new(move |batch, route, unrouted| {
        let mut clean = true;
        for (i, m) in batch.iter_mut().enumerate() {
            let result = catch_unwind(AssertUnwindSafe(|| handle_message(m)));
            match result {
                Ok(Ok(data)) if !m.is_failed() => {
                    m.data = same::<O, I>(data).unwrap_or_else(|_| unreachable!("O is I"));
                    if let (Route::Batchers(names), Some(b)) = (route, m.batcher()) {
                        if !names.iter().any(|n| &**n == b) {
                            let reason = format!("unknown batcher {b:?}");
                            m.fail(reason);
                            unrouted.push(i);
                            clean = false;
                        }
                    }
                }
                Ok(Ok(_)) => clean = false,
                Ok(Err(reason)) => {
                    m.fail(reason.to_string());
                    clean = false;
                }
                Err(payload) => {
                    m.fail(panic_message(payload.as_ref()));
                    clean = false;
                }
            }
        }
        clean
    }))
}

/// `handle_message` over a batch, each message moved into the output with the data the
/// handler returns; a handler's error or panic fails that message only.
pub(crate) fn mapped<I, O, E, H>(mut handle_message: H) -> Mapped<I, O>
where
    I: 'static,
    O: 'static,
    E: std::fmt::Display,
    H: FnMut(&mut Message<I>) -> Result<O, E> + Send + 'static,
{
    Box::new(move |batch, route, out, sorted| {
        for mut m in batch.drain(..) {
            let result = catch_unwind(AssertUnwindSafe(|| handle_message(&mut m)));
            match result {
                Ok(Ok(data)) if !m.is_failed() => {
                    let m = m.with_data(data);
                    match route {
                        Route::Ack => sorted.done.push(m),
                        Route::Batchers(names) => match m.batcher() {
                            Some(b) if !names.iter().any(|n| &**n == b) => {
                                let reason = format!("unknown batcher {b:?}");
                                sorted.failed.push(Failed::Out(m.with_failure(reason)));
                            }
                            _ => {
                                sorted.passed += 1;
                                out.push(m);
                            }
                        },
                    }
                }
                Ok(Ok(_)) => sorted.failed.push(Failed::In(m)),
                Ok(Err(reason)) => {
                    m.fail(reason.to_string());
                    sorted.failed.push(Failed::In(m));
                }
                Err(payload) => {
                    m.fail(panic_message(payload.as_ref()));
                    sorted.failed.push(Failed::In(m));
                }
            }
        }
    })
}

/// A `handle_failed` hook.
pub(crate) type FailedHook<I> = Arc<dyn Fn(&mut [Message<I>]) + Send + Sync>;

/// A processor's own messages.
#[derive(Debug)]
pub(crate) enum ProcessorMsg<I> {
    /// Messages pushed from outside (tests), handled as if a producer had sent them.
    Push(Vec<Message<I>>),
    /// The rate limit's window has reset: ask again.
    Refill,
}

/// Where successful messages go.
pub(crate) enum Route {
    /// Nowhere: acknowledged by the processor (no batchers).
    Ack,
    /// To the batchers with these names (the first is the default).
    Batchers(Arc<[Arc<str>]>),
}

/// What both kinds of processor share.
pub(crate) struct Core<I, O> {
    pub(crate) handler: Handling<I, O>,
    pub(crate) on_failed: Option<FailedHook<I>>,
    pub(crate) route: Route,
    pub(crate) cells: Arc<Cells>,
    pub(crate) totals: Arc<Cells>,
    pub(crate) gate: Option<Gate>,
    /// The pipeline's own acknowledger.
    pub(crate) ack: PipelineAck,
    /// Where it gives back the batches it empties and takes those it fills (see `recycle`).
    pub(crate) pools: Pools<I, O>,
}

/// The buffer pools of a processor: its producers' and its batchers'.
pub(crate) struct Pools<I, O> {
    /// Where the batches it empties go (the producers'): given where it does not hand them
    /// on (its handler changes the data's type, or it has no batchers).
    pub(crate) inputs: Option<Recycler<Message<I>>>,
    /// Where the batches it fills come from (the batchers'): given where its handler
    /// changes the data's type.
    pub(crate) outputs: Option<Recycler<Message<O>>>,
}

impl<I, O> Core<I, O> {
    /// Runs `handle_message` on each message of `batch`, which it empties; what goes on to
    /// the batchers goes to `out` (a callback's output: no batch of its own to allocate and
    /// copy).
    fn process(&mut self, batch: &mut Vec<Message<I>>, out: &mut Vec<Message<O>>) {
        let n = batch.len() as u64;
        // Made known to this thread before any handler runs (`ack_immediately`).
        self.ack.enter();
        let Handling::Each(map) = &mut self.handler else {
            unreachable!("a handler that keeps the data's type runs in place")
        };
        let mut sorted = Sorted {
            passed: 0,
            done: Vec::new(),
            failed: Vec::new(),
        };
        out.reserve(batch.len());
        map(batch, &self.route, out, &mut sorted);
        let mut failed_in: Vec<Message<I>> = Vec::new();
        let mut failed_out: Vec<Message<O>> = Vec::new();
        for f in sorted.failed {
            match f {
                Failed::In(m) => failed_in.push(m),
                Failed::Out(m) => failed_out.push(m),
            }
        }
        self.settle(n, sorted.passed, sorted.done, failed_in, failed_out);
    }

    /// After a batch: counts it, runs `handle_failed` on the messages that failed in it, and
    /// acknowledges those and `done` (what no batcher takes).
    fn settle(
        &mut self,
        n: u64,
        passed: u64,
        mut done: Vec<Message<O>>,
        mut failed_in: Vec<Message<I>>,
        mut failed_out: Vec<Message<O>>,
    ) {
        Cells::add(&self.cells.messages_in, n);
        Cells::add(&self.cells.batches, 1);
        Cells::add(&self.cells.successful, passed + done.len() as u64);
        if !failed_in.is_empty() {
            if let Some(hook) = &self.on_failed {
                if catch_unwind(AssertUnwindSafe(|| hook(&mut failed_in))).is_err() {
                    log::error!("pipeline: handle_failed panicked; the messages stay failed");
                }
                // A hook cannot make a failed message successful.
                for m in &mut failed_in {
                    if !m.is_failed() {
                        m.fail("failed in a processor");
                    }
                }
            }
        }
        Cells::add(
            &self.cells.failed,
            (failed_in.len() + failed_out.len()) as u64,
        );
        // Most batches have nothing to acknowledge here (every message went on to a batcher).
        if !failed_in.is_empty() {
            let (ok, failed) = ack_all(failed_in, self.ack.get());
            Cells::add(&self.totals.successful, ok);
            Cells::add(&self.totals.failed, failed);
        }
        if !done.is_empty() || !failed_out.is_empty() {
            done.append(&mut failed_out);
            let (ok, failed) = ack_all(done, self.ack.get());
            Cells::add(&self.totals.successful, ok);
            Cells::add(&self.totals.failed, failed);
        }
    }
}

impl<I: 'static, O: 'static> Core<I, O> {
    /// [`process`](Core::process) where `handle_message` keeps the data's type (`O` is `I`,
    /// as in most pipelines): each message's data is replaced where it lies, and the batch
    /// goes on to the batchers in the `Vec` it came in, no message moved, unless one failed.
    /// Returns what goes on to the batchers (nothing without batchers: acknowledged here),
    /// or the batch untouched if `O` is not `I`.
    fn process_in_place(
        &mut self,
        mut batch: Vec<Message<I>>,
    ) -> Result<Vec<Message<O>>, Vec<Message<I>>> {
        let Handling::InPlace(handle) = &mut self.handler else {
            return Err(batch);
        };
        // Made known to this thread before any handler runs (`ack_immediately`).
        self.ack.enter();
        // Where a message failed for naming a batcher there is none of: it is acknowledged
        // as failed without `handle_failed` (its data is already the output).
        let mut unrouted = Vec::new();
        let clean = handle(&mut batch, &self.route, &mut unrouted);
        let n = batch.len() as u64;
        let batch: Vec<Message<O>> = same(batch).unwrap_or_else(|_| unreachable!("O is I"));
        let to_batchers = matches!(self.route, Route::Batchers(_));
        if clean {
            // Every message successful: counted; with batchers, handed on.
            self.settle(n, n, Vec::new(), Vec::new(), Vec::new());
            if to_batchers {
                return Ok(batch);
            }
            // Acknowledged here, the allocation kept for the producers (see `recycle`).
            let mut batch = batch;
            let (ok, failed) = ack_all_emptying(&mut batch, self.ack.get());
            Cells::add(&self.totals.successful, ok);
            Cells::add(&self.totals.failed, failed);
            if let Some(pool) = &self.pools.inputs {
                pool.give(same(batch).unwrap_or_else(|_| unreachable!("O is I")));
            }
            return Ok(Vec::new());
        }
        // Some failed (rare): sorted out as `process` does.
        let (mut out, mut done, mut failed_in, mut failed_out) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut unrouted = unrouted.into_iter().peekable();
        for (i, m) in batch.into_iter().enumerate() {
            if unrouted.next_if_eq(&i).is_some() {
                failed_out.push(m);
            } else if m.is_failed() {
                failed_in.push(same(m).unwrap_or_else(|_| unreachable!("O is I")));
            } else if to_batchers {
                out.push(m);
            } else {
                done.push(m);
            }
        }
        self.settle(n, out.len() as u64, done, failed_in, failed_out);
        Ok(out)
    }
}

/// `value` as a `U` if `T` is `U` (moved, not copied), else `value` back.
pub(crate) fn same<T: 'static, U: 'static>(value: T) -> Result<U, T> {
    let mut value = Some(value);
    match (&mut value as &mut dyn Any).downcast_mut::<Option<U>>() {
        Some(u) => Ok(u.take().expect("just set")),
        None => Err(value.expect("not taken")),
    }
}

enum Failed<I, O> {
    In(Message<I>),
    Out(Message<O>),
}

impl<T> Message<T> {
    fn with_failure(mut self, reason: String) -> Message<T> {
        self.fail(reason);
        self
    }
}

/// Manual demand from a shared rate limit: GenStage's rule (ask up to `max_demand` once the
/// outstanding demand is `min_demand` or less), for what the window grants.
pub(crate) struct Gate {
    pub(crate) limiter: Arc<Limiter>,
    pub(crate) max_demand: usize,
    pub(crate) min_demand: usize,
    outstanding: HashMap<SubscriptionId, usize>,
    refill_set: bool,
}

impl Gate {
    pub(crate) fn new(limiter: Arc<Limiter>, max_demand: usize, min_demand: usize) -> Gate {
        Gate {
            limiter,
            max_demand,
            min_demand,
            outstanding: HashMap::new(),
            refill_set: false,
        }
    }

    fn refill<Out, I>(&mut self, ctx: &mut Context<'_, Out, ProcessorMsg<I>>) {
        let now = Instant::now();
        let mut short = None;
        for (&sub, outstanding) in self.outstanding.iter_mut() {
            if *outstanding > self.min_demand {
                continue;
            }
            let want = self.max_demand - *outstanding;
            let (granted, reset) = self.limiter.take(want, now);
            if granted > 0 {
                *outstanding += granted;
                ctx.ask(sub, granted);
            }
            if granted < want {
                short = Some(reset);
            }
        }
        if let (Some(reset), false) = (short, self.refill_set) {
            self.refill_set = true;
            let delay = reset.saturating_duration_since(Instant::now());
            ctx.send_after(ProcessorMsg::Refill, delay);
        }
    }

    fn arrived(&mut self, sub: SubscriptionId, n: usize) {
        if let Some(o) = self.outstanding.get_mut(&sub) {
            *o = o.saturating_sub(n);
        }
        self.limiter.delivered(n);
    }
}

impl<I: 'static, O: 'static> Core<I, O> {
    /// `handle_message` for both kinds; what goes on to the batchers goes to `out`.
    fn message<Out>(
        &mut self,
        msg: ProcessorMsg<I>,
        ctx: &mut Context<'_, Out, ProcessorMsg<I>>,
        out: impl FnMut(Message<O>),
    ) {
        match msg {
            ProcessorMsg::Push(messages) => match self.process_in_place(messages) {
                Ok(passed) => passed.into_iter().for_each(out),
                Err(mut messages) => {
                    let mut passed = Vec::new();
                    self.process(&mut messages, &mut passed);
                    passed.into_iter().for_each(out);
                }
            },
            ProcessorMsg::Refill => {
                if let Some(g) = &mut self.gate {
                    g.refill_set = false;
                    g.refill(ctx);
                }
            }
        }
    }

    /// After a batch of events from `sub`: with a rate limit, ask for more.
    fn arrived<Out>(
        &mut self,
        sub: SubscriptionId,
        n: usize,
        ctx: &mut Context<'_, Out, ProcessorMsg<I>>,
    ) {
        if let Some(g) = &mut self.gate {
            g.arrived(sub, n);
            g.refill(ctx);
        }
    }

    fn subscribe<Out>(
        &mut self,
        subscription: &Subscription,
        ctx: &mut Context<'_, Out, ProcessorMsg<I>>,
    ) -> DemandMode {
        match &mut self.gate {
            Some(g) if subscription.direction() == Direction::Upstream => {
                g.outstanding.insert(subscription.id(), 0);
                g.refill(ctx);
                DemandMode::Manual
            }
            _ => DemandMode::Automatic,
        }
    }

    fn cancelled(&mut self, subscription: &Subscription) {
        if let Some(g) = &mut self.gate {
            if let Some(left) = g.outstanding.remove(&subscription.id()) {
                g.limiter.forget(left);
            }
        }
    }
}

/// A processor followed by batchers: a producer-consumer of messages.
pub(crate) struct Processor<I, O>(pub(crate) Core<I, O>);

impl<I: Send + 'static, O: Send + 'static> ProducerConsumer for Processor<I, O> {
    type In = Message<I>;
    type Out = Message<O>;
    type Message = ProcessorMsg<I>;

    fn handle_events(
        &mut self,
        events: Events<'_, Message<I>>,
        ctx: &mut Context<'_, Message<O>, ProcessorMsg<I>>,
    ) {
        let (sub, n) = (events.subscription(), events.len());
        match self.0.process_in_place(events.into_vec()) {
            Ok(out) => ctx.emit_vec(out),
            Err(mut batch) => {
                let buffer = self
                    .0
                    .pools
                    .outputs
                    .as_ref()
                    .and_then(|p| p.take(batch.len()));
                if let Some(buffer) = buffer {
                    ctx.emit_into(buffer);
                }
                self.0.process(&mut batch, ctx.emitted());
                if let Some(pool) = &self.0.pools.inputs {
                    pool.give(batch);
                }
            }
        }
        self.0.arrived(sub, n, ctx);
    }

    fn handle_message(
        &mut self,
        msg: ProcessorMsg<I>,
        ctx: &mut Context<'_, Message<O>, ProcessorMsg<I>>,
    ) {
        let mut out = Vec::new();
        self.0.message(msg, ctx, |m| out.push(m));
        ctx.emit_all(out);
    }

    fn handle_subscribe(
        &mut self,
        subscription: &Subscription,
        ctx: &mut Context<'_, Message<O>, ProcessorMsg<I>>,
    ) -> DemandMode {
        self.0.subscribe(subscription, ctx)
    }

    fn handle_cancel(
        &mut self,
        subscription: &Subscription,
        _reason: &Reason,
        _ctx: &mut Context<'_, Message<O>, ProcessorMsg<I>>,
    ) {
        self.0.cancelled(subscription);
    }
}

/// A processor with no batchers after it: a consumer that acknowledges what it handled.
pub(crate) struct Sink<I, O>(pub(crate) Core<I, O>);

impl<I: Send + 'static, O: Send + 'static> Consumer for Sink<I, O> {
    type In = Message<I>;
    type Message = ProcessorMsg<I>;

    fn handle_events(
        &mut self,
        events: Events<'_, Message<I>>,
        ctx: &mut ConsumerContext<'_, ProcessorMsg<I>>,
    ) {
        let (sub, n) = (events.subscription(), events.len());
        // Without batchers every message is acknowledged here: nothing goes on.
        match self.0.process_in_place(events.into_vec()) {
            Ok(out) => debug_assert!(out.is_empty(), "a sink passed a message on"),
            Err(mut batch) => {
                let mut passed = Vec::new();
                self.0.process(&mut batch, &mut passed);
                debug_assert!(passed.is_empty(), "a sink passed a message on");
                if let Some(pool) = &self.0.pools.inputs {
                    pool.give(batch);
                }
            }
        }
        self.0.arrived(sub, n, ctx);
    }

    fn handle_message(
        &mut self,
        msg: ProcessorMsg<I>,
        ctx: &mut ConsumerContext<'_, ProcessorMsg<I>>,
    ) {
        self.0.message(msg, ctx, |_| {
            debug_assert!(false, "a sink passed a message on")
        });
    }

    fn handle_subscribe(
        &mut self,
        subscription: &Subscription,
        ctx: &mut ConsumerContext<'_, ProcessorMsg<I>>,
    ) -> DemandMode {
        self.0.subscribe(subscription, ctx)
    }

    fn handle_cancel(
        &mut self,
        subscription: &Subscription,
        _reason: &Reason,
        _ctx: &mut ConsumerContext<'_, ProcessorMsg<I>>,
    ) {
        self.0.cancelled(subscription);
    }
}
