//! [`Chain`]: a linear pipeline in one expression, wired from the stages users would wire by
//! hand.

use std::fmt;
use std::hash::{Hash, Hasher as _};
use std::sync::Arc;
use std::thread::Scope;

use crate::builder::{
    consumer, producer_consumer, InScope, Place, ScopedBuilder, StageBuilder, Unscoped,
};
use crate::dispatcher::PartitionDispatcher;
use crate::error::BuildError;
use crate::fns::Collect;
use crate::handle::{
    ConsumerHandle, ConsumerRole, ProducerConsumerRole, ProducerRole, Role, ScopedStage,
};
use crate::stage::{Consumer, Producer, ProducerConsumer};
use crate::started::Started;
use crate::subscription::{ProducerDemand, SubscribeOptions};
use crate::topology::Topology;
use crate::upstream::{ScopedSource, Upstream};

/// A stage, or a [`StageBuilder`] with its options set: what a [`Chain`]'s links take, so
/// that every stage option stays reachable. `'env` is the chain's (`'static` for a [`Chain`]).
pub trait IntoBuilder<'env, S, R: Role<S>> {
    /// The builder for this link.
    fn into_builder(self) -> ScopedBuilder<'env, S, R>;
}

impl<'env, S: ProducerConsumer + 'env> IntoBuilder<'env, S, ProducerConsumerRole> for S {
    fn into_builder(self) -> ScopedBuilder<'env, S, ProducerConsumerRole> {
        producer_consumer(self)
    }
}

impl<'env, S: Consumer + 'env> IntoBuilder<'env, S, ConsumerRole> for S {
    fn into_builder(self) -> ScopedBuilder<'env, S, ConsumerRole> {
        consumer(self)
    }
}

impl<'env, S, R: Role<S>> IntoBuilder<'env, S, R> for ScopedBuilder<'env, S, R> {
    fn into_builder(self) -> ScopedBuilder<'env, S, R> {
        self
    }
}

/// A stage of the chain not yet started: whether it partitions depends on the next link.
/// It starts in the place given (which may live shorter than the events: a scope).
type Pending<'env, T, P> = Box<
    dyn FnOnce(
            Option<PartitionDispatcher<T>>,
            &mut Started<'env>,
            &mut Option<Release<'env>>,
            P,
        ) -> Result<ScopedSource<'env, T>, BuildError>
        + 'env,
>;

/// Lets the source produce, once every stage of the chain is running.
type Release<'env> = Box<dyn FnOnce() + 'env>;

/// The source starts accumulating demand: nothing flows (and no finite source finishes) while
/// the chain is still starting its later stages.
fn pending_producer<'env, S: Producer + 'env, P: Place<'env>>(
    builder: ScopedBuilder<'env, S, ProducerRole>,
) -> Pending<'env, S::Out, P> {
    Box::new(move |dispatcher, started, release, place| {
        let builder = match dispatcher {
            Some(d) => builder.dispatcher(d),
            None => builder,
        };
        let stage = builder.demand(ProducerDemand::Accumulate).spawn_in(place)?;
        started.add(&stage, place);
        let handle = stage.clone();
        *release = Some(Box::new(move || {
            // A source that has ended meanwhile has nothing to release.
            let _ = handle.set_demand(ProducerDemand::Forward);
        }));
        Ok(stage.source())
    })
}

fn pending_stage<'env, S: ProducerConsumer + 'env, P: Place<'env>>(
    builder: ScopedBuilder<'env, S, ProducerConsumerRole>,
) -> Pending<'env, S::Out, P> {
    Box::new(move |dispatcher, started, _, place| {
        let builder = match dispatcher {
            Some(d) => builder.dispatcher(d),
            None => builder,
        };
        let stage = builder.spawn_in(place)?;
        started.add(&stage, place);
        Ok(stage.source())
    })
}

/// Makes the dispatcher of each stage before a partitioned link.
type Partitioner<'env, T> =
    Arc<dyn Fn() -> Result<PartitionDispatcher<T>, BuildError> + Send + Sync + 'env>;

/// How the next link subscribes to the stages before it.
enum Fan<'env, T> {
    /// The next link's one stage subscribes to every stage before it.
    Merge,
    /// `n` copies of the next link, each subscribed to every stage before it; events go to
    /// whichever has demand.
    Parallel(usize),
    /// `n` copies of the next link; copy `i` takes partition `i` of every stage before it.
    Partition(usize, Partitioner<'env, T>),
}

/// A linear pipeline built in one expression: a source, then producer-consumers, then a sink,
/// with an optional fan-out into parallel lanes between any two links. It wires the stages a
/// user would wire by hand (the same builders, subscriptions and dispatchers) and returns a
/// [`Topology`]; nothing runs differently. The source is started in
/// [`ProducerDemand::Accumulate`] mode and switched to forward once the last stage runs, so
/// that no event flows (and no finite source finishes) before every lane has subscribed.
///
/// Start one from a producer's builder ([`StageBuilder::via`], [`StageBuilder::parallel`],
/// [`StageBuilder::partition`], [`StageBuilder::to`]). Each link takes a stage or a
/// [`StageBuilder`] with its options set; [`Chain::options`] sets the next subscription's
/// options (`max_demand` and the rest). Errors (an invalid option, a thread that would not
/// start) are kept and returned by [`ChainEnd::run`]; stages already started then are stopped.
///
/// ```
/// use stageflow::fns::{Filter, Fold, Map};
/// use stageflow::SubscribeOptions;
///
/// // 1..=1000 → squares → 4 lanes by key → keep the even → one sum.
/// let sum = stageflow::from_iter(1..=1000u64)
///     .via(Map::new(|x: u64| x * x))
///     .partition(4, |x: &u64| x % 7)
///     .via(|_lane| Filter::new(|x: &u64| x.is_multiple_of(2)))
///     .options(SubscribeOptions::new().max_demand(100))
///     .to(stageflow::consumer(Fold::new(0u64, |s, x: u64| s + x)).keep_state())
///     .run_sinks()?;
/// let (pipeline, sinks) = sum;
/// pipeline.join();
/// let total = sinks[0].join_result()?;
/// assert_eq!(total, (1..=1000u64).map(|x| x * x).filter(|x| x.is_multiple_of(2)).sum::<u64>());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// A [`Chain`] starts its stages on threads of their own. In a [`std::thread::scope`],
/// [`ScopedBuilder::chain_in`] starts one whose stages run on the scope's threads and may
/// borrow from the caller's stack: a [`ScopedChain`], whose methods are the same.
pub type Chain<T> = ScopedChain<'static, T, Unscoped>;

/// A [`Chain`] whose stages start in `P` ([`Unscoped`] or [`InScope`]) and whose events live
/// for `'env`. Made by [`ScopedBuilder::chain_in`] (or, unscoped, the shortcuts on a
/// producer's [`StageBuilder`]).
///
/// ```
/// use std::collections::HashMap;
/// use stageflow::fns::{FlatMap, Fold};
///
/// let lines = vec![String::from("to be or"), String::from("not to be")];
/// let counts = std::thread::scope(|scope| {
///     stageflow::from_iter(lines.iter().map(String::as_str))
///         .chain_in(scope)
///         .parallel(2)
///         .via(|_lane| FlatMap::new(|line: &str| line.split(' ')))
///         .to(stageflow::consumer(Fold::new(HashMap::new(), |mut counts, word: &str| {
///             *counts.entry(word).or_insert(0u64) += 1;
///             counts
///         }))
///         .keep_state())
///         .run_sinks()
/// })?;
/// let counts = counts[0].join_result()?; // the scope has joined every stage
/// assert_eq!(counts[&"be"], 2);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct ScopedChain<'env, T, P: Place<'env>> {
    place: P,
    started: Started<'env>,
    release: Option<Release<'env>>,
    tails: Vec<Pending<'env, T, P>>,
    fan: Fan<'env, T>,
    options: SubscribeOptions,
    error: Option<BuildError>,
}

impl<'env, T, P: Place<'env>> fmt::Debug for ScopedChain<'env, T, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Chain")
            .field("stages", &self.started.len())
            .field("tails", &self.tails.len())
            .field("error", &self.error)
            .finish()
    }
}

/// A [`Chain`] fanned out into lanes ([`Chain::parallel`], [`Chain::partition`]): its next
/// link is made once per lane, by a function of the lane's number.
pub type Lanes<T> = ScopedLanes<'static, T, Unscoped>;

/// [`Lanes`] of a [`ScopedChain`].
pub struct ScopedLanes<'env, T, P: Place<'env>> {
    chain: ScopedChain<'env, T, P>,
}

impl<'env, T, P: Place<'env>> fmt::Debug for ScopedLanes<'env, T, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lanes").field("chain", &self.chain).finish()
    }
}

/// The end of a [`Chain`]: its consumers are running; [`ChainEnd::run`] hands over the
/// [`Topology`].
pub type ChainEnd<C> = ScopedChainEnd<'static, C, Unscoped>;

/// The end of a [`ScopedChain`]: its consumers are running.
pub struct ScopedChainEnd<'env, C: Consumer, P: Place<'env>> {
    started: Started<'env>,
    sinks: Vec<ScopedStage<'env, C, ConsumerRole>>,
    error: Option<BuildError>,
    _place: P,
}

impl<'env, C: Consumer, P: Place<'env>> fmt::Debug for ScopedChainEnd<'env, C, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChainEnd")
            .field("stages", &self.started.len())
            .field("error", &self.error)
            .finish()
    }
}

impl<'env, T: Send + 'env, P: Place<'env>> ScopedChain<'env, T, P> {
    pub(crate) fn start<S: Producer<Out = T> + 'env>(
        source: ScopedBuilder<'env, S, ProducerRole>,
        place: P,
    ) -> ScopedChain<'env, T, P> {
        ScopedChain {
            place,
            started: Started::new(),
            release: None,
            tails: vec![pending_producer(source)],
            fan: Fan::Merge,
            options: SubscribeOptions::new(),
            error: None,
        }
    }

    /// The subscription options of the next link (default: `SubscribeOptions::new()`). A
    /// partition's number is added to them.
    pub fn options(mut self, options: SubscribeOptions) -> ScopedChain<'env, T, P> {
        self.options = options;
        self
    }

    /// The next link: one producer-consumer, subscribed to every stage before it.
    pub fn via<Q, B>(self, stage: B) -> ScopedChain<'env, Q::Out, P>
    where
        Q: ProducerConsumer<In = T> + 'env,
        B: IntoBuilder<'env, Q, ProducerConsumerRole>,
    {
        let mut stage = Some(stage);
        self.link(move |_| {
            stage
                .take()
                .expect("a merge makes one stage")
                .into_builder()
        })
    }

    /// The next link is made `n` times; each copy takes events from every stage before it,
    /// whichever has demand (the demand dispatcher): Broadway's processors, Flow's `stages`.
    pub fn parallel(mut self, n: usize) -> ScopedLanes<'env, T, P> {
        self.fan = Fan::Parallel(n);
        self.check_lanes(n, "parallel");
        ScopedLanes { chain: self }
    }

    /// The next link is made `n` times; copy `i` takes the events whose `key` hashes to `i`,
    /// from every stage before it (a [`PartitionDispatcher`] on each), so that all events of a
    /// key meet in one stage, in the order each stage before sent them.
    pub fn partition<K: Hash>(
        mut self,
        n: usize,
        key: impl Fn(&T) -> K + Send + Sync + 'static,
    ) -> ScopedLanes<'env, T, P> {
        self.check_lanes(n, "partition");
        let lanes = n.max(1) as u64;
        // The key function is shared by the dispatchers; each hashing closure holds only it,
        // so it is `'static` whatever the events borrow.
        let key = Arc::new(key);
        self.fan = Fan::Partition(
            n,
            Arc::new(move || {
                let key = key.clone();
                PartitionDispatcher::new(n, move |event: &T| {
                    let mut h = std::hash::DefaultHasher::new();
                    key(event).hash(&mut h);
                    Some(h.finish() % lanes)
                })
            }),
        );
        ScopedLanes { chain: self }
    }

    /// The last link: one consumer, subscribed to every stage before it.
    pub fn to<C, B>(self, stage: B) -> ScopedChainEnd<'env, C, P>
    where
        C: Consumer<In = T> + 'env,
        B: IntoBuilder<'env, C, ConsumerRole>,
    {
        let mut stage = Some(stage);
        self.end(move |_| {
            stage
                .take()
                .expect("a merge makes one stage")
                .into_builder()
        })
    }

    /// Runs the chain into a [`Collect`] and waits for it to end: every event, in the order
    /// the sink received them (with several stages before it, their events interleave).
    /// For a finite source.
    ///
    /// # Errors
    ///
    /// What building the chain returned; the stages started are stopped.
    pub fn collect(self) -> Result<Vec<T>, BuildError> {
        let (started, sinks) = self.to(consumer(Collect::new()).keep_state()).finish()?;
        started.join();
        Ok(sinks
            .first()
            .and_then(|s| s.join_state().1)
            .map(Collect::into_vec)
            .unwrap_or_default())
    }

    fn check_lanes(&mut self, n: usize, option: &'static str) {
        if n == 0 && self.error.is_none() {
            self.error = Some(BuildError::InvalidOption {
                option,
                message: format!("expected {option} to be at least 1 lane, got 0"),
            });
        }
    }

    /// Starts the stages before the next link, with the dispatcher the fan asks for.
    fn start_tails(&mut self) -> Vec<ScopedSource<'env, T>> {
        let tails = std::mem::take(&mut self.tails);
        let mut sources = Vec::with_capacity(tails.len());
        for tail in tails {
            if self.error.is_some() {
                break;
            }
            let dispatcher = match &self.fan {
                Fan::Partition(_, make) => match make() {
                    Ok(d) => Some(d),
                    Err(e) => {
                        self.error = Some(e);
                        break;
                    }
                },
                _ => None,
            };
            match tail(dispatcher, &mut self.started, &mut self.release, self.place) {
                Ok(source) => sources.push(source),
                Err(e) => self.error = Some(e),
            }
        }
        sources
    }

    fn copies(&self) -> usize {
        match self.fan {
            Fan::Merge => 1,
            Fan::Parallel(n) | Fan::Partition(n, _) => n,
        }
    }

    fn link<Q: ProducerConsumer<In = T> + 'env>(
        mut self,
        mut make: impl FnMut(usize) -> ScopedBuilder<'env, Q, ProducerConsumerRole>,
    ) -> ScopedChain<'env, Q::Out, P> {
        let copies = self.copies();
        let sources = self.start_tails();
        let mut tails = Vec::with_capacity(copies);
        for lane in 0..copies {
            if self.error.is_some() {
                break;
            }
            match self.subscribed(make(lane), lane, &sources) {
                Ok(builder) => tails.push(pending_stage(builder)),
                Err(e) => self.error = Some(e),
            }
        }
        ScopedChain {
            place: self.place,
            started: self.started,
            release: self.release,
            tails,
            fan: Fan::Merge,
            options: SubscribeOptions::new(),
            error: self.error,
        }
    }

    /// `builder`, subscribed (when it starts) to every source, as copy `lane`.
    fn subscribed<S, R: crate::handle::Consumes<S, In = T>>(
        &self,
        mut builder: ScopedBuilder<'env, S, R>,
        lane: usize,
        sources: &[ScopedSource<'env, T>],
    ) -> Result<ScopedBuilder<'env, S, R>, BuildError> {
        let options = match self.fan {
            Fan::Partition(..) => self.options.clone().partition(lane),
            _ => self.options.clone(),
        };
        for source in sources {
            builder = builder
                .subscribe_to(source, options.clone())
                .map_err(BuildError::Subscribe)?;
        }
        Ok(builder)
    }

    fn end<C: Consumer<In = T> + 'env>(
        mut self,
        mut make: impl FnMut(usize) -> ScopedBuilder<'env, C, ConsumerRole>,
    ) -> ScopedChainEnd<'env, C, P> {
        let copies = self.copies();
        let sources = self.start_tails();
        let mut sinks = Vec::new();
        for lane in 0..copies {
            if self.error.is_some() {
                break;
            }
            match self
                .subscribed(make(lane), lane, &sources)
                .and_then(|b| b.spawn_in(self.place))
            {
                Ok(sink) => {
                    self.started.add(&sink, self.place);
                    sinks.push(sink);
                }
                Err(e) => self.error = Some(e),
            }
        }
        if self.error.is_none() {
            if let Some(release) = self.release.take() {
                release();
            }
        }
        ScopedChainEnd {
            started: self.started,
            sinks,
            error: self.error,
            _place: self.place,
        }
    }
}

impl<'env, T: Send + 'env, P: Place<'env>> ScopedLanes<'env, T, P> {
    /// The subscription options of the next link's copies; see [`Chain::options`].
    pub fn options(mut self, options: SubscribeOptions) -> ScopedLanes<'env, T, P> {
        self.chain.options = options;
        self
    }

    /// The next link: `make(lane)` for each lane, a producer-consumer (or its builder).
    pub fn via<Q, B>(self, mut make: impl FnMut(usize) -> B) -> ScopedChain<'env, Q::Out, P>
    where
        Q: ProducerConsumer<In = T> + 'env,
        B: IntoBuilder<'env, Q, ProducerConsumerRole>,
    {
        self.chain.link(move |lane| make(lane).into_builder())
    }

    /// The last link: `make(lane)` for each lane, a consumer (or its builder).
    pub fn to<C, B>(self, mut make: impl FnMut(usize) -> B) -> ScopedChainEnd<'env, C, P>
    where
        C: Consumer<In = T> + 'env,
        B: IntoBuilder<'env, C, ConsumerRole>,
    {
        self.chain.end(move |lane| make(lane).into_builder())
    }
}

impl<'env, C: Consumer, P: Place<'env>> ScopedChainEnd<'env, C, P> {
    /// What was started and the sinks, or the first error met (then everything started is
    /// stopped, as `started` drops).
    fn finish(
        self,
    ) -> Result<(Started<'env>, Vec<ScopedStage<'env, C, ConsumerRole>>), BuildError> {
        match self.error {
            Some(e) => Err(e),
            None => Ok((self.started, self.sinks)),
        }
    }
}

impl<C: Consumer + 'static> ChainEnd<C> {
    /// The running pipeline, or the first error met while building it (then every stage
    /// already started is stopped).
    ///
    /// # Errors
    ///
    /// The [`BuildError`] of the first link that failed.
    pub fn run(self) -> Result<Topology, BuildError> {
        self.run_sinks().map(|(topology, _)| topology)
    }

    /// Like [`ChainEnd::run`], with the handles of the chain's consumers (one per lane), for
    /// their counters or [`join_state`](crate::Stage::join_state).
    ///
    /// # Errors
    ///
    /// The [`BuildError`] of the first link that failed.
    pub fn run_sinks(self) -> Result<(Topology, Vec<ConsumerHandle<C>>), BuildError> {
        let (started, sinks) = self.finish()?;
        Ok((started.hand_over(), sinks))
    }
}

impl<'env, C: Consumer + 'env> ScopedChainEnd<'env, C, InScope<'_, 'env>> {
    /// Lets the chain run, or returns the first error met while building it (then every
    /// stage already started is stopped). The stages run on the scope's threads until their
    /// input ends; the scope waits for them.
    ///
    /// # Errors
    ///
    /// The [`BuildError`] of the first link that failed.
    pub fn run(self) -> Result<(), BuildError> {
        self.run_sinks().map(drop)
    }

    /// Like [`run`](ScopedChainEnd::run), with the handles of the chain's consumers (one per
    /// lane), for their results ([`join_result`](ScopedStage::join_result)).
    ///
    /// # Errors
    ///
    /// The [`BuildError`] of the first link that failed.
    pub fn run_sinks(self) -> Result<Vec<ScopedStage<'env, C, ConsumerRole>>, BuildError> {
        let (started, sinks) = self.finish()?;
        started.hand_over();
        Ok(sinks)
    }
}

/// A linear pipeline from this producer, in one expression: see [`Chain`](crate::Chain).
impl<S: Producer + 'static> StageBuilder<S, ProducerRole> {
    /// Starts a [`Chain`](crate::Chain) from this producer (the shortcuts below start one too).
    pub fn chain(self) -> Chain<S::Out> {
        Chain::start(self, Unscoped)
    }

    /// A chain whose next link is one producer-consumer; see [`Chain::via`](crate::Chain::via).
    pub fn via<P, B>(self, stage: B) -> Chain<P::Out>
    where
        P: ProducerConsumer<In = S::Out> + 'static,
        B: IntoBuilder<'static, P, ProducerConsumerRole>,
    {
        self.chain().via(stage)
    }

    /// A chain fanned out into `n` lanes; see [`Chain::parallel`](crate::Chain::parallel).
    pub fn parallel(self, n: usize) -> Lanes<S::Out> {
        self.chain().parallel(n)
    }

    /// A chain partitioned into `n` lanes by `key`; see
    /// [`Chain::partition`](crate::Chain::partition).
    pub fn partition<K: Hash>(
        self,
        n: usize,
        key: impl Fn(&S::Out) -> K + Send + Sync + 'static,
    ) -> Lanes<S::Out> {
        self.chain().partition(n, key)
    }

    /// A chain whose next link's subscriptions take `options`; see
    /// [`Chain::options`](crate::Chain::options).
    pub fn options(self, options: SubscribeOptions) -> Chain<S::Out> {
        self.chain().options(options)
    }

    /// A chain ending at one consumer; see [`Chain::to`](crate::Chain::to).
    pub fn to<C, B>(self, stage: B) -> ChainEnd<C>
    where
        C: Consumer<In = S::Out> + 'static,
        B: IntoBuilder<'static, C, ConsumerRole>,
    {
        self.chain().to(stage)
    }
}

impl<'env, S: Producer + 'env> ScopedBuilder<'env, S, ProducerRole> {
    /// Starts a [`ScopedChain`] from this producer whose stages run on threads of `scope`
    /// (see [`spawn_scoped`](ScopedBuilder::spawn_scoped)): its events may borrow from the
    /// caller's stack. Its methods are [`Chain`]'s; it ends with
    /// [`run`](ScopedChainEnd::run) or [`run_sinks`](ScopedChainEnd::run_sinks), whose stages
    /// the scope waits for, or [`collect`](ScopedChain::collect).
    pub fn chain_in<'s>(
        self,
        scope: &'s Scope<'s, 'env>,
    ) -> ScopedChain<'env, S::Out, InScope<'s, 'env>> {
        ScopedChain::start(self, InScope::new(scope))
    }
}
