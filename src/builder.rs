//! [`StageBuilder`]: options of a stage, its subscriptions, and `spawn`.

use std::any::type_name;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::Scope;
use std::time::Duration;

use crossbeam_channel::{bounded, unbounded, Receiver};

use crate::dispatcher::{Dispatch, Dispatcher};
use crate::envelope::{Counted, Down, Envelope, PortBox, Up};
use crate::error::{BuildError, SubscribeError};
use crate::handle::{
    ConsumerRole, Consumes, Emits, Kept, ProducerConsumerRole, ProducerRole, Role, ScopedStage,
    Stage, StageRef,
};
use crate::reason::Reason;
use crate::recycle::Recycler;
use crate::runner::{AsConsumer, AsProducer, AsProducerConsumer, Callbacks, Config, Mint, Runner};
use crate::shared::{Probe, Shared};
use crate::stage::{Consumer, Producer, ProducerConsumer};
use crate::subscription::{
    BufferKeep, CancelMode, Direction, ProducerDemand, SubscribeOptions, Subscription,
    SubscriptionId,
};
use crate::unwind::stage_main;
use crate::upstream::{ask_to_subscribe, Pending, Request, ScopedSource, Upstream, Waiting};

/// The default inbox capacity, in messages.
const DEFAULT_INBOX: usize = 1024;
/// See [`StageBuilder::confirm_timeout`].
const DEFAULT_CONFIRM_TIMEOUT: Duration = Duration::from_secs(2);
/// The largest inbox capacity: crossbeam allocates every slot when the channel is made.
const MAX_INBOX: usize = 1 << 20;
/// The default buffer of a producer, in events.
const DEFAULT_PRODUCER_BUFFER: usize = 10_000;

/// Starts building a producer stage from `stage`.
///
/// # Examples
///
/// ```
/// use stageflow::{Context, Producer};
///
/// struct Ones;
/// impl Producer for Ones {
///     type Out = u8;
///     type Message = ();
///     fn handle_demand(&mut self, n: usize, ctx: &mut Context<'_, u8>) {
///         ctx.emit_all(std::iter::repeat(1).take(n));
///     }
/// }
///
/// let ones = stageflow::producer(Ones).name("ones").buffer_size(100).spawn().unwrap();
/// assert_eq!(ones.name(), "ones");
/// ones.stop();
/// ones.join();
/// ```
pub fn producer<'env, S: Producer + 'env>(stage: S) -> ScopedBuilder<'env, S, ProducerRole> {
    ScopedBuilder::new(stage, Some(DEFAULT_PRODUCER_BUFFER))
}

/// Starts building a producer-consumer stage from `stage`.
pub fn producer_consumer<'env, S: ProducerConsumer + 'env>(
    stage: S,
) -> ScopedBuilder<'env, S, ProducerConsumerRole> {
    ScopedBuilder::new(stage, None)
}

/// Starts building a consumer stage from `stage`.
pub fn consumer<'env, S: Consumer + 'env>(stage: S) -> ScopedBuilder<'env, S, ConsumerRole> {
    ScopedBuilder::new(stage, None)
}

/// The options of a stage before it starts. Made by [`producer`], [`producer_consumer`] or
/// [`consumer`]; [`spawn`](StageBuilder::spawn) validates them and starts the stage's thread.
/// Its methods are [`ScopedBuilder`]'s.
pub type StageBuilder<S, R> = ScopedBuilder<'static, S, R>;

/// The options of a stage before it starts, whose events and messages live for `'env`: the
/// type [`producer`], [`producer_consumer`] and [`consumer`] return. With `'env` `'static`
/// (the [`StageBuilder`] alias), [`spawn`](ScopedBuilder::spawn) starts the stage on a thread
/// of its own; for any `'env`, [`spawn_scoped`](ScopedBuilder::spawn_scoped) starts it on a
/// thread of a [`std::thread::scope`], where its events and its value may borrow from the
/// caller's stack.
///
/// ```
/// use stageflow::fns::Fold;
/// use stageflow::SubscribeOptions;
///
/// let text = String::from("to be or not to be");
/// let count = std::thread::scope(|scope| {
///     let words = stageflow::from_iter(text.split(' ')).spawn_scoped(scope)?;
///     let count = stageflow::consumer(Fold::new(0usize, |n, w: &str| n + usize::from(w == "be")))
///         .keep_state()
///         .subscribe_to(&words, SubscribeOptions::new())?
///         .spawn_scoped(scope)?;
///     count.join_result().map_err(Box::<dyn std::error::Error>::from)
/// })?;
/// assert_eq!(count, 2);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct ScopedBuilder<'env, S: 'env, R: Role<S>> {
    stage: S,
    name: Option<String>,
    inbox_capacity: usize,
    buffer_size: Option<usize>,
    buffer_keep: BufferKeep,
    dispatcher: Option<Dispatch<'env, R::Out>>,
    demand: ProducerDemand,
    keep_state: bool,
    confirm_timeout: Duration,
    subscriptions: Vec<(ScopedSource<'env, R::In>, SubscribeOptions)>,
    recycler: Option<Recycler<R::Out>>,
}

impl<S, R: Role<S>> fmt::Debug for ScopedBuilder<'_, S, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StageBuilder")
            .field("name", &self.name)
            .field("inbox_capacity", &self.inbox_capacity)
            .field("buffer_size", &self.buffer_size)
            .field("buffer_keep", &self.buffer_keep)
            .field("subscriptions", &self.subscriptions.len())
            .finish()
    }
}

impl<'env, S, R: Role<S>> ScopedBuilder<'env, S, R> {
    fn new(stage: S, buffer_size: Option<usize>) -> ScopedBuilder<'env, S, R> {
        ScopedBuilder {
            stage,
            name: None,
            inbox_capacity: DEFAULT_INBOX,
            buffer_size,
            buffer_keep: BufferKeep::Last,
            dispatcher: None,
            demand: ProducerDemand::Forward,
            keep_state: false,
            confirm_timeout: DEFAULT_CONFIRM_TIMEOUT,
            subscriptions: Vec::new(),
            recycler: None,
        }
    }

    /// Takes the buffers it emits from `pool` when it has one (a producer's batches; see
    /// `recycle`).
    pub(crate) fn recycle_from(mut self, pool: Recycler<R::Out>) -> Self {
        self.recycler = Some(pool);
        self
    }

    /// Keeps the stage's value when it ends, for [`Stage::join_state`] to hand back: the way to
    /// get a result out of a stage (a sum, a collected `Vec`, a model it trained) without a
    /// channel or a shared lock. Without it, the value is dropped on the stage's thread as the
    /// stage ends, before `join` returns. With it, the value is dropped when the last handle
    /// on the stage is, unless `join_state` took it.
    ///
    /// ```
    /// use stageflow::fns::Fold;
    /// use stageflow::SubscribeOptions;
    ///
    /// let numbers = stageflow::from_iter(1..=100u64).spawn()?;
    /// let sum = stageflow::consumer(Fold::new(0u64, |sum, x: u64| sum + x))
    ///     .keep_state()
    ///     .subscribe_to(&numbers, SubscribeOptions::new())?
    ///     .spawn()?;
    /// let (reason, fold) = sum.join_state();
    /// assert!(reason.is_normal());
    /// assert_eq!(fold.and_then(Fold::into_inner), Some(5050));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn keep_state(mut self) -> Self {
        self.keep_state = true;
        self
    }

    /// How long the stage, as it ends, waits for its producers to confirm its cancels. Until
    /// they do, events they sent may still be on their way, and the stage counts each one that
    /// arrives (as received, then discarded), so that its counters balance; a producer stuck
    /// in a long callback could keep it waiting, so the wait is bounded, and after it the
    /// stage ends anyway (logging how many producers had not confirmed: what they send later
    /// is counted by them as sent to a consumer that ended). `Duration::ZERO` does not wait.
    /// A stage with no producers never waits. Defaults to 2 s.
    pub fn confirm_timeout(mut self, timeout: Duration) -> Self {
        self.confirm_timeout = timeout;
        self
    }

    /// The stage's name, used in logs, counters and as its thread's name (so it cannot contain
    /// a NUL character). Defaults to the stage type's name followed by a number unique in the
    /// process, e.g. `Counter-3`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// The capacity of the stage's inbox, in messages (a batch of events is one message). The
    /// inbox is allocated whole when the stage starts. A smaller inbox is still correct: a
    /// peer that finds it full keeps its messages in a backlog (see the
    /// [protocol](crate#the-credit-protocol)). Must be between 1 and 1 048 576 (the slots are
    /// allocated up front). Defaults to `1024`.
    pub fn inbox_capacity(mut self, capacity: usize) -> Self {
        self.inbox_capacity = capacity;
        self
    }

    fn validate(&self) -> Result<(), BuildError> {
        if self.inbox_capacity == 0 {
            return Err(BuildError::InvalidOption {
                option: "inbox_capacity",
                message: "expected inbox_capacity to be at least 1, got 0".into(),
            });
        }
        if self.inbox_capacity > MAX_INBOX {
            return Err(BuildError::InvalidOption {
                option: "inbox_capacity",
                message: format!(
                    "expected inbox_capacity to be at most {MAX_INBOX}, got {}",
                    self.inbox_capacity
                ),
            });
        }
        if let Some(name) = self.name.as_deref().filter(|n| n.contains('\0')) {
            return Err(BuildError::InvalidOption {
                option: "name",
                message: format!("expected name to have no NUL character, got {name:?}"),
            });
        }
        if self.buffer_size == Some(0) {
            return Err(BuildError::InvalidOption {
                option: "buffer_size",
                message: "expected buffer_size to be at least 1, got 0".into(),
            });
        }
        Ok(())
    }

    fn stage_name(&self) -> Arc<str> {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        match &self.name {
            Some(n) => n.as_str().into(),
            None => {
                let full = type_name::<S>();
                let short = full
                    .split('<')
                    .next()
                    .and_then(|p| p.rsplit("::").next())
                    .unwrap_or(full);
                format!("{short}-{}", NEXT.fetch_add(1, Ordering::Relaxed)).into()
            }
        }
    }
}

impl<'env, S, R: Emits<S>> ScopedBuilder<'env, S, R> {
    /// How many events the producer buffer holds when no consumer has demand for them; past
    /// that, events are discarded by [`buffer_keep`](StageBuilder::buffer_keep), counted and
    /// logged. Must be at least 1. Defaults to `10_000` for a producer and unbounded for a
    /// producer-consumer (whose buffer holds what one inbound message produced beyond
    /// downstream demand).
    pub fn buffer_size(mut self, size: usize) -> Self {
        self.buffer_size = Some(size);
        self
    }

    /// Makes the producer buffer unbounded (GenStage's `:infinity`). Nothing is ever discarded,
    /// and nothing limits its memory.
    pub fn buffer_unbounded(mut self) -> Self {
        self.buffer_size = None;
        self
    }

    /// Which events a full buffer keeps. Defaults to [`BufferKeep::Last`].
    pub fn buffer_keep(mut self, keep: BufferKeep) -> Self {
        self.buffer_keep = keep;
        self
    }

    /// How events are shared among consumers. Defaults to
    /// [`DemandDispatcher`](crate::dispatcher::DemandDispatcher).
    pub fn dispatcher(mut self, dispatcher: impl Dispatcher<R::Out> + 'env) -> Self {
        self.dispatcher = Some(Dispatch::new(dispatcher));
        self
    }
}

impl<'env, S, R: Consumes<S>> ScopedBuilder<'env, S, R> {
    /// Subscribes the stage, when it starts, to `producer` (GenStage's `subscribe_to`). The
    /// options are checked now; the producer is asked when [`spawn`](StageBuilder::spawn) runs.
    ///
    /// # Errors
    ///
    /// [`SubscribeError::InvalidOption`] naming the option and the value.
    pub fn subscribe_to(
        mut self,
        producer: &(impl Upstream<'env, R::In> + ?Sized),
        options: SubscribeOptions,
    ) -> Result<Self, SubscribeError> {
        options.validate()?;
        self.subscriptions.push((producer.source(), options));
        Ok(self)
    }
}

impl<S: Producer> ScopedBuilder<'_, S, ProducerRole> {
    /// Whether the producer starts forwarding demand to `handle_demand` or accumulating it
    /// (see [`ProducerDemand`]); switch later with
    /// [`Stage::set_demand`](crate::Stage::set_demand). Defaults to
    /// [`ProducerDemand::Forward`].
    pub fn demand(mut self, mode: ProducerDemand) -> Self {
        self.demand = mode;
        self
    }
}

impl<S: Producer + 'static> StageBuilder<S, ProducerRole> {
    /// Validates the options and starts the stage on its own thread.
    ///
    /// # Errors
    ///
    /// [`BuildError::InvalidOption`] for a bad option; [`BuildError::Spawn`] if the thread
    /// could not start.
    pub fn spawn(self) -> Result<Stage<S, ProducerRole>, BuildError> {
        self.spawn_in(Unscoped)
    }
}

impl<'env, S: Producer + 'env> ScopedBuilder<'env, S, ProducerRole> {
    /// Validates the options and starts the stage on a thread of `scope`, where its events
    /// and its value may borrow what outlives the scope. See [`ScopedBuilder::spawn_scoped`]
    /// for consumers, which says what a stage in a scope cannot do.
    ///
    /// # Errors
    ///
    /// As [`spawn`](ScopedBuilder::spawn); and [`BuildError::InvalidOption`] (option
    /// `spawn_scoped`) inside a simulation, which runs stages on its own thread.
    pub fn spawn_scoped<'scope>(
        self,
        scope: &'scope Scope<'scope, 'env>,
    ) -> Result<ScopedStage<'env, S, ProducerRole>, BuildError> {
        self.spawn_in(InScope(scope))
    }

    /// Validates the options and starts the stage in `place`: [`spawn`](ScopedBuilder::spawn)
    /// with [`Unscoped`], [`spawn_scoped`](ScopedBuilder::spawn_scoped) with [`InScope`]. For
    /// code that starts stages wherever its caller says, as the crate's chains and flows do.
    ///
    /// # Errors
    ///
    /// As `spawn` or `spawn_scoped`.
    pub fn spawn_in(
        self,
        place: impl Place<'env>,
    ) -> Result<ScopedStage<'env, S, ProducerRole>, BuildError> {
        let (parts, stage) = self.into_parts()?;
        launch(AsProducer(stage), parts, place)
    }
}

impl<S: ProducerConsumer + 'static> StageBuilder<S, ProducerConsumerRole> {
    /// Validates the options, subscribes to the producers given with
    /// [`subscribe_to`](StageBuilder::subscribe_to), and starts the stage on its own thread.
    ///
    /// # Errors
    ///
    /// [`BuildError::InvalidOption`] for a bad option, [`BuildError::Subscribe`] if a producer
    /// has ended or refused (then no subscription is kept; a *temporary* subscription to a
    /// producer that has ended does not fail the build: the stage starts and sees it fail in
    /// `handle_cancel`), [`BuildError::Spawn`] if the thread could not start.
    ///
    /// It returns once the stage holds its subscriptions, so their ids work at once.
    pub fn spawn(self) -> Result<Stage<S, ProducerConsumerRole>, BuildError> {
        self.spawn_in(Unscoped)
    }
}

impl<'env, S: ProducerConsumer + 'env> ScopedBuilder<'env, S, ProducerConsumerRole> {
    /// Like [`spawn`](ScopedBuilder::spawn), on a thread of `scope`: see
    /// [`ScopedBuilder::spawn_scoped`] for consumers.
    ///
    /// # Errors
    ///
    /// As [`spawn`](ScopedBuilder::spawn); and [`BuildError::InvalidOption`] (option
    /// `spawn_scoped`) inside a simulation.
    pub fn spawn_scoped<'scope>(
        self,
        scope: &'scope Scope<'scope, 'env>,
    ) -> Result<ScopedStage<'env, S, ProducerConsumerRole>, BuildError> {
        self.spawn_in(InScope(scope))
    }

    /// Validates the options and starts the stage in `place`: [`spawn`](ScopedBuilder::spawn)
    /// with [`Unscoped`], [`spawn_scoped`](ScopedBuilder::spawn_scoped) with [`InScope`]. For
    /// code that starts stages wherever its caller says, as the crate's chains and flows do.
    ///
    /// # Errors
    ///
    /// As `spawn` or `spawn_scoped`.
    pub fn spawn_in(
        self,
        place: impl Place<'env>,
    ) -> Result<ScopedStage<'env, S, ProducerConsumerRole>, BuildError> {
        let (parts, stage) = self.into_parts()?;
        launch(AsProducerConsumer(stage), parts, place)
    }
}

impl<S: Consumer + 'static> StageBuilder<S, ConsumerRole> {
    /// Validates the options, subscribes to the producers given with
    /// [`subscribe_to`](StageBuilder::subscribe_to), and starts the stage on its own thread.
    ///
    /// # Errors
    ///
    /// [`BuildError::InvalidOption`] for a bad option (an `inbox_capacity` of 0, say),
    /// [`BuildError::Subscribe`] if a producer has ended or refused (then no subscription is
    /// kept; a *temporary* subscription to a producer that has ended does not fail the build:
    /// the stage starts and sees it fail in `handle_cancel`), [`BuildError::Spawn`] if the
    /// thread could not start.
    ///
    /// It returns once the stage holds its subscriptions, so their ids work at once.
    pub fn spawn(self) -> Result<Stage<S, ConsumerRole>, BuildError> {
        self.spawn_in(Unscoped)
    }
}

impl<'env, S: Consumer + 'env> ScopedBuilder<'env, S, ConsumerRole> {
    /// Like [`spawn`](ScopedBuilder::spawn), on a thread of `scope` (a
    /// [`std::thread::scope`]): the stage's events, messages and value may borrow from the
    /// caller's stack, for as long as the scope lasts. The scope waits for the stage's thread
    /// before it returns, as for any thread it spawned, so every stage of a scoped pipeline
    /// must end within it: by running out of input, or by [`finish`](ScopedStage::finish)
    /// or [`stop`](ScopedStage::stop).
    ///
    /// Everything a handle does works, [`join_result`](ScopedStage::join_result) included.
    /// What could outlive the scope does not exist for a stage in one: an untyped
    /// [`StageRef`](crate::StageRef) (so no [`Topology`](crate::Topology), snapshot or
    /// metrics), and a working [`Context::mailbox`](crate::Context::mailbox) (the one it gets
    /// refuses every message). A stage in a scope subscribes only to stages of the same
    /// scope's `'env`.
    ///
    /// The borrow checker holds the handles to the scope's `'env`: a handle on a stage whose
    /// events borrow cannot outlive what they borrow.
    ///
    /// ```compile_fail
    /// use stageflow::fns::ForEach;
    /// use stageflow::SubscribeOptions;
    ///
    /// let sink = {
    ///     let text = String::from("to be or not to be");
    ///     std::thread::scope(|scope| {
    ///         let words = stageflow::from_iter(text.split(' ')).spawn_scoped(scope).unwrap();
    ///         stageflow::consumer(ForEach::new(|_: &str| {}))
    ///             .subscribe_to(&words, SubscribeOptions::new())
    ///             .unwrap()
    ///             .spawn_scoped(scope)
    ///             .unwrap()
    ///     })
    /// }; // `text` is dropped here, and `sink` borrows it: this does not compile
    /// sink.join();
    /// ```
    ///
    /// # Errors
    ///
    /// As [`spawn`](ScopedBuilder::spawn); and [`BuildError::InvalidOption`] (option
    /// `spawn_scoped`) inside a simulation, which runs stages on its own thread.
    pub fn spawn_scoped<'scope>(
        self,
        scope: &'scope Scope<'scope, 'env>,
    ) -> Result<ScopedStage<'env, S, ConsumerRole>, BuildError> {
        self.spawn_in(InScope(scope))
    }

    /// Validates the options and starts the stage in `place`: [`spawn`](ScopedBuilder::spawn)
    /// with [`Unscoped`], [`spawn_scoped`](ScopedBuilder::spawn_scoped) with [`InScope`]. For
    /// code that starts stages wherever its caller says, as the crate's chains and flows do.
    ///
    /// # Errors
    ///
    /// As `spawn` or `spawn_scoped`.
    pub fn spawn_in(
        self,
        place: impl Place<'env>,
    ) -> Result<ScopedStage<'env, S, ConsumerRole>, BuildError> {
        let (parts, stage) = self.into_parts()?;
        launch(AsConsumer(stage), parts, place)
    }
}

struct Parts<'e, In, Out> {
    name: Arc<str>,
    inbox_capacity: usize,
    config: Config<'e, Out>,
    subscriptions: Vec<(ScopedSource<'e, In>, SubscribeOptions)>,
}

/// A builder taken apart: what `launch` needs, and the user's stage.
type Split<'e, S, R> = (Parts<'e, <R as Role<S>>::In, <R as Role<S>>::Out>, S);

impl<'env, S, R: Role<S>> ScopedBuilder<'env, S, R> {
    fn into_parts(self) -> Result<Split<'env, S, R>, BuildError> {
        self.validate()?;
        let name = self.stage_name();
        let parts = Parts {
            name,
            inbox_capacity: self.inbox_capacity,
            config: Config {
                dispatcher: self.dispatcher.unwrap_or_else(Dispatch::demand),
                buffer_size: self.buffer_size,
                buffer_keep: self.buffer_keep,
                demand: self.demand,
                keep_state: self.keep_state,
                confirm_timeout: self.confirm_timeout,
                recycler: self.recycler,
            },
            subscriptions: self.subscriptions,
        };
        Ok((parts, self.stage))
    }
}

/// Where stages start: [`Unscoped`], on threads of their own (with
/// [`spawn`](ScopedBuilder::spawn)), or [`InScope`], on threads of a
/// [`std::thread::scope`] (with [`spawn_scoped`](ScopedBuilder::spawn_scoped)). A
/// [`ScopedChain`](crate::ScopedChain) is built in one place. Implemented by those two only.
pub trait Place<'env>: place::Start<'env> + Send + Sync {
    /// An untyped handle on `stage`, started here, where it may have one: always
    /// [`Unscoped`], never [`InScope`] (an untyped handle could outlive the scope).
    fn stage_ref<S: 'env, R: Role<S>>(self, stage: &ScopedStage<'env, S, R>) -> Option<StageRef>;
}

impl Place<'static> for Unscoped {
    fn stage_ref<S: 'static, R: Role<S>>(
        self,
        stage: &ScopedStage<'static, S, R>,
    ) -> Option<StageRef> {
        Some(stage.stage_ref())
    }
}

impl<'env> Place<'env> for InScope<'_, 'env> {
    fn stage_ref<S: 'env, R: Role<S>>(self, _: &ScopedStage<'env, S, R>) -> Option<StageRef> {
        None
    }
}

/// Stages on threads of their own, whose events and messages are `'static`: see [`Place`].
#[derive(Debug, Clone, Copy)]
pub struct Unscoped;

/// Stages on threads of a [`std::thread::scope`], whose events and messages may borrow for
/// `'env`: see [`Place`] and [`ScopedBuilder::chain_in`].
#[derive(Debug, Clone, Copy)]
pub struct InScope<'s, 'env>(&'s Scope<'s, 'env>);

impl<'s, 'env> InScope<'s, 'env> {
    /// The threads of `scope`.
    pub fn new(scope: &'s Scope<'s, 'env>) -> InScope<'s, 'env> {
        InScope(scope)
    }
}

/// The sealed half of [`Place`]: reachable (as `Place`'s supertrait) but unnameable outside the
/// crate, so its methods may speak of the runtime's own types.
#[allow(private_interfaces, private_bounds)]
pub(crate) mod place {
    use std::sync::Arc;

    use crossbeam_channel::Sender;

    use super::{stage_main, BuildError, InScope, Unscoped};
    use crate::context::Mailbox;
    use crate::envelope::{Control, Counted, Msg, Wrap};
    use crate::runner::{Callbacks, Mint, Runner};
    use crate::shared::{InboxGauge, Shared};

    /// How a stage's thread starts, and what it may hand out. The difference is `'e`: only a
    /// stage whose types are `'static` can be reached by what may outlive any scope
    /// (mailboxes, observers' gauges, untyped handles, a simulation).
    pub trait Start<'e>: Copy {
        /// Makes mailboxes to the stage whose inbox is `tx`.
        fn mint<E, M>(self, tx: &Sender<E>, shared: &Arc<Shared>) -> Option<Mint<M>>
        where
            E: Wrap<Msg<M>> + Wrap<Control> + Send + 'e;

        /// Reads the length of the inbox `tx`, for observers.
        fn gauge<E: Send + 'e>(self, tx: &Sender<E>) -> Option<Box<dyn InboxGauge>>;

        /// Whether the stage runs in the simulation active on this thread.
        fn simulated(self) -> Result<bool, BuildError>;

        /// Hands the stage to the simulation.
        fn enlist<C: Callbacks + 'e>(self, runner: Runner<'e, C>);

        /// Starts the stage's thread.
        fn thread<C: Callbacks + 'e>(
            self,
            builder: std::thread::Builder,
            runner: Runner<'e, C>,
        ) -> std::io::Result<()>
        where
            Runner<'e, C>: Send;
    }

    impl Start<'static> for Unscoped {
        fn mint<E, M>(self, tx: &Sender<E>, shared: &Arc<Shared>) -> Option<Mint<M>>
        where
            E: Wrap<Msg<M>> + Wrap<Control> + Send + 'static,
        {
            let (tx, shared) = (tx.clone(), shared.clone());
            Some(Box::new(move || {
                Mailbox::new(Box::new(Counted::new(tx.clone(), None, shared.clone())))
            }))
        }

        fn gauge<E: Send + 'static>(self, tx: &Sender<E>) -> Option<Box<dyn InboxGauge>> {
            Some(Box::new(tx.clone()))
        }

        fn simulated(self) -> Result<bool, BuildError> {
            Ok(crate::sim::active())
        }

        fn enlist<C: Callbacks + 'static>(self, runner: Runner<'static, C>) {
            if crate::sim::enlist(Box::new(crate::sim::StageTask::new(runner))).is_err() {
                unreachable!("a simulation is active on this thread");
            }
        }

        fn thread<C: Callbacks + 'static>(
            self,
            builder: std::thread::Builder,
            runner: Runner<'static, C>,
        ) -> std::io::Result<()>
        where
            Runner<'static, C>: Send,
        {
            let shared = runner.shared().clone();
            let handle = builder.spawn(move || stage_main(runner))?;
            shared.set_thread(handle);
            Ok(())
        }
    }

    impl<'env> Start<'env> for InScope<'_, 'env> {
        fn mint<E, M>(self, _: &Sender<E>, _: &Arc<Shared>) -> Option<Mint<M>>
        where
            E: Wrap<Msg<M>> + Wrap<Control> + Send + 'env,
        {
            None
        }

        fn gauge<E: Send + 'env>(self, _: &Sender<E>) -> Option<Box<dyn InboxGauge>> {
            None
        }

        fn simulated(self) -> Result<bool, BuildError> {
            if crate::sim::active() {
                return Err(BuildError::InvalidOption {
                    option: "spawn_scoped",
                    message: "a simulation runs its stages on its own thread, and a stage in a \
                              scope needs a thread of the scope: use spawn inside a simulation"
                        .into(),
                });
            }
            Ok(false)
        }

        fn enlist<C: Callbacks + 'env>(self, _: Runner<'env, C>) {
            unreachable!("a stage in a scope never runs in a simulation (see `simulated`)");
        }

        fn thread<C: Callbacks + 'env>(
            self,
            builder: std::thread::Builder,
            runner: Runner<'env, C>,
        ) -> std::io::Result<()>
        where
            Runner<'env, C>: Send,
        {
            builder.spawn_scoped(self.0, move || stage_main(runner))?;
            Ok(())
        }
    }
}

/// Creates the inbox, makes the build-time subscriptions, starts the thread, and returns once
/// the stage holds its subscriptions (so their ids work at once).
fn launch<'e, C: Callbacks<State = S> + 'e, S: 'e, R>(
    callbacks: C,
    parts: Parts<'e, C::In, C::Out>,
    start: impl Place<'e>,
) -> Result<ScopedStage<'e, S, R>, BuildError>
where
    R: Role<S, In = C::In, Out = C::Out, Message = C::Msg>,
    Runner<'e, C>: Send,
{
    let simulated = start.simulated()?;
    let Parts {
        name,
        inbox_capacity,
        config,
        subscriptions,
    } = parts;
    let (tx, rx) = bounded::<Env<'e, C>>(inbox_capacity);
    let (ctl_tx, ctl_rx) = unbounded::<Env<'e, C>>();
    let shared = Arc::new(Shared::new(name.clone()));
    let _ = shared.probe.set(Probe {
        kind: C::KIND,
        inbox: start.gauge(&tx),
    });
    let mint = start.mint(&tx, &shared);
    let kept: Kept<C::State> = Kept::default();
    let handle = Counted::new(tx, Some(ctl_tx), shared.clone());
    if simulated {
        shared.simulated.store(true, Ordering::Relaxed);
        if !crate::sim::can_wait() {
            // Built inside a stage's turn: nothing can be waited for.
            let runner = enlist(
                callbacks,
                &shared,
                &handle,
                (rx, ctl_rx),
                (mint, config, kept.clone()),
                subscriptions,
            )?;
            start.enlist(runner);
            return Ok(ScopedStage::new(shared, handle, kept));
        }
    }
    // Every request goes out before any answer is waited for: the producers answer side by
    // side (a batcher subscribing to 50 processors waited for 50 answers one after the other).
    let asked: Vec<_> = subscriptions
        .into_iter()
        .map(|(source, options)| {
            let port: PortBox<'e, Down<'e, C::In>> = Box::new(handle.clone());
            let sent = ask_to_subscribe(&source, port, &shared, options.clone());
            (source, options, sent)
        })
        .collect();
    let mut made: Vec<(ScopedSource<'e, C::In>, Pending)> = Vec::new();
    let mut failed: Vec<Subscription> = Vec::new();
    let mut refused = None;
    for (source, options, sent) in asked {
        let temporary = options.get_cancel() == CancelMode::Temporary;
        // Answers are taken even after a refusal, so that every accepted one is withdrawn.
        match sent.and_then(Waiting::answer) {
            Ok(pending) => made.push((source, pending)),
            // A temporary subscription is optional: the stage starts and sees it fail.
            Err(SubscribeError::ProducerGone { .. }) if temporary => failed.push(Subscription {
                id: SubscriptionId::next(),
                direction: Direction::Upstream,
                peer: source.name().into(),
                options,
            }),
            Err(e) => {
                refused.get_or_insert(e);
            }
        }
    }
    if let Some(e) = refused {
        withdraw(&made);
        return Err(BuildError::Subscribe(e));
    }
    let runner = Runner::new(
        callbacks,
        shared.clone(),
        (rx, ctl_rx),
        mint,
        config,
        kept.clone(),
        failed,
    );
    if simulated {
        // No thread: the simulation steps it (and runs meanwhile in the waits below).
        start.enlist(runner);
        for (_, pending) in made {
            let _ = pending.registered();
        }
        return Ok(ScopedStage::new(shared, handle, kept));
    }
    let builder = std::thread::Builder::new().name(name.to_string());
    if let Err(e) = start.thread(builder, runner) {
        withdraw(&made);
        return Err(BuildError::Spawn(e));
    }
    for (_, pending) in made {
        // A stage that ended meanwhile is reported by its outcome, not here.
        let _ = pending.registered();
    }
    Ok(ScopedStage::new(shared, handle, kept))
}

type Env<'e, C> = Envelope<'e, <C as Callbacks>::In, <C as Callbacks>::Out, <C as Callbacks>::Msg>;

/// What the runner is made of besides the stage and its channels.
type Makings<'e, C> = (
    Option<Mint<<C as Callbacks>::Msg>>,
    Config<'e, <C as Callbacks>::Out>,
    Kept<<C as Callbacks>::State>,
);

/// `launch` inside a simulation's turn (a stage's callback builds a stage), where nothing
/// can be waited for: no thread, and no wait for any producer. Each subscription goes through
/// the stage as a running stage's would (`Stage::subscribe_to`): the stage holds it as
/// pending from its first turn, and a refusal or an ended producer reaches it as a cancel.
fn enlist<'e, C: Callbacks + 'e>(
    callbacks: C,
    shared: &Arc<Shared>,
    handle: &Counted<Env<'e, C>>,
    channels: (Receiver<Env<'e, C>>, Receiver<Env<'e, C>>),
    (mint, config, kept): Makings<'e, C>,
    subscriptions: Vec<(ScopedSource<'e, C::In>, SubscribeOptions)>,
) -> Result<Runner<'e, C>, BuildError> {
    let mut requests = Vec::with_capacity(subscriptions.len());
    for (source, options) in subscriptions {
        let port: PortBox<'e, Down<'e, C::In>> = Box::new(handle.clone());
        let request =
            Request::new(&source, port, shared, options, true).map_err(BuildError::Subscribe)?;
        requests.push(request.split());
    }
    for (req, waiting) in requests {
        let _ = handle.urgent(Envelope::Down(Down::Subscribe(req)));
        crate::sim::keep(Box::new(waiting));
    }
    Ok(Runner::new(
        callbacks,
        shared.clone(),
        channels,
        mint,
        config,
        kept,
        Vec::new(),
    ))
}

/// Cancels subscriptions made for a stage that will not start.
fn withdraw<T: Send>(made: &[(ScopedSource<'_, T>, Pending)]) {
    for (source, pending) in made {
        source.send_up(Up::Cancel {
            sub: pending.sub,
            reason: Reason::Shutdown,
        });
    }
}
