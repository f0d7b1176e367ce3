//! Stages from closures, for the simple cases that need no struct: [`Map`], [`FlatMap`] and
//! [`Filter`] are producer-consumers, [`ForEach`] and [`Batches`] are consumers, [`Generate`]
//! is a producer. [`Process`] and [`Sink`] take a closure that also gets the stage's context
//! (to emit, ask, set timers, end the stage) and an `on_terminate` hook: a stage in a few lines
//! without a struct or `type Message = ()`. [`Fold`] and [`Collect`] are consumers whose result comes back from their
//! handle: build them with [`keep_state`](crate::StageBuilder::keep_state) and take it with
//! [`Stage::join_state`](crate::Stage::join_state).
//!
//! ```
//! use stageflow::fns::{Filter, ForEach, Map};
//! use stageflow::SubscribeOptions;
//!
//! let numbers = stageflow::from_iter(1..=10u64).spawn()?;
//! let squares = stageflow::producer_consumer(Map::new(|x: u64| x * x))
//!     .subscribe_to(&numbers, SubscribeOptions::new())?
//!     .spawn()?;
//! let even = stageflow::producer_consumer(Filter::new(|x: &u64| x % 2 == 0))
//!     .subscribe_to(&squares, SubscribeOptions::new())?
//!     .spawn()?;
//! let (tx, rx) = std::sync::mpsc::channel();
//! let print = stageflow::consumer(ForEach::new(move |x: u64| tx.send(x).unwrap()))
//!     .subscribe_to(&even, SubscribeOptions::new())?
//!     .spawn()?;
//! print.join();
//! assert_eq!(rx.iter().collect::<Vec<_>>(), vec![4, 16, 36, 64, 100]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::marker::PhantomData;

use crate::context::{ConsumerContext, Context};
use crate::events::Events;
use crate::reason::Reason;
use crate::stage::{Consumer, Producer, ProducerConsumer};

macro_rules! closure_debug {
    ($name:ident<$($p:ident),*>) => {
        impl<$($p),*> fmt::Debug for $name<$($p),*> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(concat!(stringify!($name), " { .. }"))
            }
        }
    };
}

/// A producer-consumer that turns each event into one: `f(event)`.
pub struct Map<F, In, Out> {
    f: F,
    _types: PhantomData<fn(In) -> Out>,
}

impl<F, In, Out> Map<F, In, Out>
where
    F: FnMut(In) -> Out + Send,
{
    /// Maps each event with `f`.
    pub fn new(f: F) -> Map<F, In, Out> {
        Map {
            f,
            _types: PhantomData,
        }
    }
}

impl<F, In, Out> ProducerConsumer for Map<F, In, Out>
where
    F: FnMut(In) -> Out + Send,
    In: Send,
    Out: Send,
{
    type In = In;
    type Out = Out;
    type Message = ();

    fn handle_events(&mut self, events: Events<'_, In>, ctx: &mut Context<'_, Out>) {
        ctx.emit_all(events.map(&mut self.f));
    }
}

closure_debug!(Map<F, In, Out>);

/// A producer-consumer that turns each event into any number: every item of `f(event)`.
pub struct FlatMap<F, In, Out> {
    f: F,
    _types: PhantomData<fn(In) -> Out>,
}

impl<F, In, I> FlatMap<F, In, I>
where
    F: FnMut(In) -> I + Send,
    I: IntoIterator,
{
    /// Emits every item of `f(event)` for each event, in order.
    pub fn new(f: F) -> FlatMap<F, In, I> {
        FlatMap {
            f,
            _types: PhantomData,
        }
    }
}

impl<F, In, I> ProducerConsumer for FlatMap<F, In, I>
where
    F: FnMut(In) -> I + Send,
    In: Send,
    I: IntoIterator,
    I::Item: Send,
{
    type In = In;
    type Out = I::Item;
    type Message = ();

    fn handle_events(&mut self, events: Events<'_, In>, ctx: &mut Context<'_, I::Item>) {
        for event in events {
            ctx.emit_all((self.f)(event));
        }
    }
}

closure_debug!(FlatMap<F, In, Out>);

/// A producer-consumer that passes on the events `f` accepts and drops the others (they were
/// consumed: they are not counted as discarded).
pub struct Filter<F, T> {
    f: F,
    _types: PhantomData<fn(T) -> T>,
}

impl<F, T> Filter<F, T>
where
    F: FnMut(&T) -> bool + Send,
{
    /// Keeps the events for which `f` returns `true`.
    pub fn new(f: F) -> Filter<F, T> {
        Filter {
            f,
            _types: PhantomData,
        }
    }
}

impl<F, T> ProducerConsumer for Filter<F, T>
where
    F: FnMut(&T) -> bool + Send,
    T: Send,
{
    type In = T;
    type Out = T;
    type Message = ();

    fn handle_events(&mut self, events: Events<'_, T>, ctx: &mut Context<'_, T>) {
        let f = &mut self.f;
        ctx.emit_all(events.filter(|e| f(e)));
    }
}

closure_debug!(Filter<F, T>);

/// A consumer that calls `f` with each event.
pub struct ForEach<F, T> {
    f: F,
    _types: PhantomData<fn(T)>,
}

impl<F, T> ForEach<F, T>
where
    F: FnMut(T) + Send,
{
    /// Calls `f` with each event, in order.
    pub fn new(f: F) -> ForEach<F, T> {
        ForEach {
            f,
            _types: PhantomData,
        }
    }
}

impl<F, T> Consumer for ForEach<F, T>
where
    F: FnMut(T) + Send,
    T: Send,
{
    type In = T;
    type Message = ();

    fn handle_events(&mut self, events: Events<'_, T>, _: &mut ConsumerContext<'_>) {
        events.for_each(&mut self.f);
    }
}

closure_debug!(ForEach<F, T>);

/// What runs when a closure stage ends ([`Process::on_terminate`], [`Sink::on_terminate`]).
type OnTerminate = Option<Box<dyn FnMut(&Reason) + Send>>;

/// A producer-consumer from a closure that sees each batch and the stage's [`Context`]: it may
/// emit any number of events, set timers, finish or stop the stage. `on_terminate` runs when
/// it ends. For a stage that needs more than [`Map`] or [`FlatMap`] and no struct of its own.
///
/// ```
/// use stageflow::fns::{Collect, Process};
/// use stageflow::SubscribeOptions;
///
/// // Emits running totals, and finishes once past 100 (what it already received is still
/// // handled: nothing is lost on a finish).
/// let mut total = 0u64;
/// let totals = Process::new(move |events: stageflow::Events<'_, u64>, ctx: &mut stageflow::Context<'_, u64>| {
///     for x in events {
///         total += x;
///         ctx.emit(total);
///     }
///     if total > 100 {
///         ctx.finish();
///     }
/// });
/// let numbers = stageflow::from_iter(1..=1000u64).spawn()?;
/// let running = stageflow::producer_consumer(totals)
///     .subscribe_to(&numbers, SubscribeOptions::new().max_demand(5))?
///     .spawn()?;
/// let sink = stageflow::consumer(Collect::new())
///     .keep_state()
///     .subscribe_to(&running, SubscribeOptions::new())?
///     .spawn()?;
/// let got = sink.join_result()?;
/// assert_eq!(got[..4], [1, 3, 6, 10]);
/// assert!(got.last() > Some(&100) && got.len() < 1000);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Process<F, In, Out> {
    f: F,
    on_terminate: OnTerminate,
    _types: PhantomData<fn(In) -> Out>,
}

impl<F, In, Out> Process<F, In, Out>
where
    F: for<'a, 'c> FnMut(Events<'a, In>, &mut Context<'c, Out>) + Send,
{
    /// Calls `f` with each batch and the stage's context.
    pub fn new(f: F) -> Process<F, In, Out> {
        Process {
            f,
            on_terminate: None,
            _types: PhantomData,
        }
    }

    /// Runs `g` with the stage's reason when it ends, however it ends.
    pub fn on_terminate(mut self, g: impl FnMut(&Reason) + Send + 'static) -> Self {
        self.on_terminate = Some(Box::new(g));
        self
    }
}

impl<F, In, Out> ProducerConsumer for Process<F, In, Out>
where
    F: for<'a, 'c> FnMut(Events<'a, In>, &mut Context<'c, Out>) + Send,
    In: Send,
    Out: Send,
{
    type In = In;
    type Out = Out;
    type Message = ();

    fn handle_events(&mut self, events: Events<'_, In>, ctx: &mut Context<'_, Out>) {
        (self.f)(events, ctx);
    }

    fn terminate(&mut self, reason: &Reason) {
        if let Some(g) = &mut self.on_terminate {
            g(reason);
        }
    }
}

closure_debug!(Process<F, In, Out>);

/// A consumer from a closure that sees each batch and the stage's [`ConsumerContext`] (to ask,
/// cancel, set timers or end the stage); `on_terminate` runs when it ends.
pub struct Sink<F, T> {
    f: F,
    on_terminate: OnTerminate,
    _types: PhantomData<fn(T)>,
}

impl<F, T> Sink<F, T>
where
    F: for<'a, 'c> FnMut(Events<'a, T>, &mut ConsumerContext<'c>) + Send,
{
    /// Calls `f` with each batch and the stage's context.
    pub fn new(f: F) -> Sink<F, T> {
        Sink {
            f,
            on_terminate: None,
            _types: PhantomData,
        }
    }

    /// Runs `g` with the stage's reason when it ends, however it ends.
    pub fn on_terminate(mut self, g: impl FnMut(&Reason) + Send + 'static) -> Self {
        self.on_terminate = Some(Box::new(g));
        self
    }
}

impl<F, T> Consumer for Sink<F, T>
where
    F: for<'a, 'c> FnMut(Events<'a, T>, &mut ConsumerContext<'c>) + Send,
    T: Send,
{
    type In = T;
    type Message = ();

    fn handle_events(&mut self, events: Events<'_, T>, ctx: &mut ConsumerContext<'_>) {
        (self.f)(events, ctx);
    }

    fn terminate(&mut self, reason: &Reason) {
        if let Some(g) = &mut self.on_terminate {
            g(reason);
        }
    }
}

closure_debug!(Sink<F, T>);

/// A consumer that folds every event into an accumulator: `acc = f(acc, event)`. Its result
/// comes back with [`Stage::join_result`](crate::Stage::join_result) (build it with
/// [`keep_state`](crate::StageBuilder::keep_state)), an error if `f` panicked; or with
/// [`Stage::join_state`](crate::Stage::join_state), then [`Fold::into_inner`], which is
/// `None` if `f` panicked.
pub struct Fold<F, T, A> {
    f: F,
    acc: Option<A>,
    _types: PhantomData<fn(T)>,
}

impl<F, T, A> Fold<F, T, A>
where
    F: FnMut(A, T) -> A + Send,
{
    /// Starts from `init` and folds each event in with `f`, in order.
    pub fn new(init: A, f: F) -> Fold<F, T, A> {
        Fold {
            f,
            acc: Some(init),
            _types: PhantomData,
        }
    }

    /// The accumulator, or `None` if `f` panicked: a panic in `f` ends the stage in the middle
    /// of a fold, and the accumulator that `f` had taken by value went with the unwinding.
    /// [`keep_state`](crate::StageBuilder::keep_state) still hands the `Fold` back however the
    /// stage ended, so a caller can tell "the stage panicked" from "the sum is 0".
    pub fn into_inner(self) -> Option<A> {
        self.acc
    }

    /// The accumulator so far, or `None` if `f` panicked (see [`Fold::into_inner`]).
    pub fn get(&self) -> Option<&A> {
        self.acc.as_ref()
    }
}

impl<F, T, A> Consumer for Fold<F, T, A>
where
    F: FnMut(A, T) -> A + Send,
    T: Send,
    A: Send,
{
    type In = T;
    type Message = ();

    fn handle_events(&mut self, events: Events<'_, T>, _: &mut ConsumerContext<'_>) {
        if let Some(acc) = self.acc.take() {
            // A panicking `f` ends the stage; the accumulator is gone with it, and
            // `into_inner` says so with `None`.
            self.acc = Some(events.fold(acc, &mut self.f));
        }
    }
}

/// The accumulator; none if `f` panicked (see [`Fold::into_inner`]).
impl<F, T, A> crate::StageResult for Fold<F, T, A> {
    type Output = A;

    fn into_output(self) -> Option<A> {
        self.acc
    }
}

impl<F, T, A: fmt::Debug> fmt::Debug for Fold<F, T, A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fold").field("acc", &self.acc).finish()
    }
}

/// A consumer that collects every event into a `Vec`, in the order received. Its result comes
/// back with [`Stage::join_result`](crate::Stage::join_result) (build it with
/// [`keep_state`](crate::StageBuilder::keep_state)).
///
/// It holds everything it receives: for a bounded input, or a test.
///
/// ```
/// use stageflow::fns::Collect;
/// use stageflow::SubscribeOptions;
///
/// let words = stageflow::from_iter(["demand", "flows", "up"]).spawn()?;
/// let sink = stageflow::consumer(Collect::new())
///     .keep_state()
///     .subscribe_to(&words, SubscribeOptions::new())?
///     .spawn()?;
/// assert_eq!(sink.join_result()?, ["demand", "flows", "up"]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Collect<T> {
    events: Vec<T>,
}

impl<T> Collect<T> {
    /// An empty collection.
    pub fn new() -> Collect<T> {
        Collect { events: Vec::new() }
    }

    /// What it collected.
    pub fn into_vec(self) -> Vec<T> {
        self.events
    }

    /// What it collected so far.
    pub fn as_slice(&self) -> &[T] {
        &self.events
    }
}

/// What it collected.
impl<T> crate::StageResult for Collect<T> {
    type Output = Vec<T>;

    fn into_output(self) -> Option<Vec<T>> {
        Some(self.events)
    }
}

impl<T> Default for Collect<T> {
    fn default() -> Self {
        Collect::new()
    }
}

impl<T: Send> Consumer for Collect<T> {
    type In = T;
    type Message = ();

    fn handle_events(&mut self, events: Events<'_, T>, _: &mut ConsumerContext<'_>) {
        self.events.extend(events);
    }
}

/// A consumer that calls `f` with each batch, as the credit protocol cuts them.
pub struct Batches<F, T> {
    f: F,
    _types: PhantomData<fn(T)>,
}

impl<F, T> Batches<F, T>
where
    F: FnMut(Events<'_, T>) + Send,
{
    /// Calls `f` with each batch.
    pub fn new(f: F) -> Batches<F, T> {
        Batches {
            f,
            _types: PhantomData,
        }
    }
}

impl<F, T> Consumer for Batches<F, T>
where
    F: FnMut(Events<'_, T>) + Send,
    T: Send,
{
    type In = T;
    type Message = ();

    fn handle_events(&mut self, events: Events<'_, T>, _: &mut ConsumerContext<'_>) {
        (self.f)(events);
    }
}

closure_debug!(Batches<F, T>);

/// A producer that calls `f(demand, ctx)` for each demand: `f` emits with
/// [`Context::emit`] and can [`finish`](Context::finish).
pub struct Generate<F, Out> {
    f: F,
    _types: PhantomData<fn() -> Out>,
}

impl<F, Out> Generate<F, Out>
where
    F: FnMut(usize, &mut Context<'_, Out>) + Send,
{
    /// Produces with `f`.
    pub fn new(f: F) -> Generate<F, Out> {
        Generate {
            f,
            _types: PhantomData,
        }
    }
}

impl<F, Out> Producer for Generate<F, Out>
where
    F: FnMut(usize, &mut Context<'_, Out>) + Send,
    Out: Send,
{
    type Out = Out;
    type Message = ();

    fn handle_demand(&mut self, demand: usize, ctx: &mut Context<'_, Out>) {
        (self.f)(demand, ctx)
    }
}

closure_debug!(Generate<F, Out>);
