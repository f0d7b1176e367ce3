//! [`Chain`]: a linear pipeline in one expression, wired from the stages users would wire by
//! hand.

use std::fmt;
use std::hash::{Hash, Hasher as _};
use std::sync::Arc;

use crate::builder::{consumer, producer_consumer, StageBuilder};
use crate::dispatcher::PartitionDispatcher;
use crate::error::BuildError;
use crate::fns::Collect;
use crate::handle::{ConsumerHandle, ConsumerRole, ProducerConsumerRole, ProducerRole};
use crate::stage::{Consumer, Producer, ProducerConsumer};
use crate::subscription::{ProducerDemand, SubscribeOptions};
use crate::topology::Topology;
use crate::upstream::{Source, Upstream};

/// A stage, or a [`StageBuilder`] with its options set: what a [`Chain`]'s links take, so
/// that every stage option stays reachable.
pub trait IntoBuilder<S, R: crate::handle::Role<S>> {
    /// The builder for this link.
    fn into_builder(self) -> StageBuilder<S, R>;
}

impl<S: ProducerConsumer> IntoBuilder<S, ProducerConsumerRole> for S {
    fn into_builder(self) -> StageBuilder<S, ProducerConsumerRole> {
        producer_consumer(self)
    }
}

impl<S: Consumer> IntoBuilder<S, ConsumerRole> for S {
    fn into_builder(self) -> StageBuilder<S, ConsumerRole> {
        consumer(self)
    }
}

impl<S, R: crate::handle::Role<S>> IntoBuilder<S, R> for StageBuilder<S, R> {
    fn into_builder(self) -> StageBuilder<S, R> {
        self
    }
}

/// A stage of the chain not yet started: whether it partitions depends on the next link.
type Pending<T> = Box<
    dyn FnOnce(
        Option<PartitionDispatcher<T>>,
        &mut Topology,
        &mut Option<Release>,
    ) -> Result<Source<T>, BuildError>,
>;

/// Lets the source produce, once every stage of the chain is running.
type Release = Box<dyn FnOnce()>;

/// The source starts accumulating demand: nothing flows (and no finite source finishes) while
/// the chain is still starting its later stages.
fn pending_producer<S: Producer + 'static>(
    builder: StageBuilder<S, ProducerRole>,
) -> Pending<S::Out> {
    Box::new(move |dispatcher, topology, release| {
        let builder = match dispatcher {
            Some(d) => builder.dispatcher(d),
            None => builder,
        };
        let stage = builder.demand(ProducerDemand::Accumulate).spawn()?;
        topology.add(&stage);
        let handle = stage.clone();
        *release = Some(Box::new(move || {
            // A source that has ended meanwhile has nothing to release.
            let _ = handle.set_demand(ProducerDemand::Forward);
        }));
        Ok(stage.source())
    })
}

fn pending_stage<S: ProducerConsumer + 'static>(
    builder: StageBuilder<S, ProducerConsumerRole>,
) -> Pending<S::Out> {
    Box::new(move |dispatcher, topology, _| {
        let builder = match dispatcher {
            Some(d) => builder.dispatcher(d),
            None => builder,
        };
        let stage = builder.spawn()?;
        topology.add(&stage);
        Ok(stage.source())
    })
}

/// A partition key, hashed to a lane.
type Hasher<T> = Arc<dyn Fn(&T) -> Option<u64> + Send + Sync>;

/// How the next link subscribes to the stages before it.
enum Fan<T> {
    /// The next link's one stage subscribes to every stage before it.
    Merge,
    /// `n` copies of the next link, each subscribed to every stage before it; events go to
    /// whichever has demand.
    Parallel(usize),
    /// `n` copies of the next link; copy `i` takes partition `i` of every stage before it.
    Partition(usize, Hasher<T>),
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
pub struct Chain<T: 'static> {
    topology: Topology,
    release: Option<Release>,
    tails: Vec<Pending<T>>,
    fan: Fan<T>,
    options: SubscribeOptions,
    error: Option<BuildError>,
}

impl<T> fmt::Debug for Chain<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Chain")
            .field("stages", &self.topology.stages().len())
            .field("tails", &self.tails.len())
            .field("error", &self.error)
            .finish()
    }
}

/// A [`Chain`] fanned out into lanes ([`Chain::parallel`], [`Chain::partition`]): its next
/// link is made once per lane, by a function of the lane's number.
pub struct Lanes<T: 'static> {
    chain: Chain<T>,
}

impl<T> fmt::Debug for Lanes<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lanes").field("chain", &self.chain).finish()
    }
}

/// The end of a [`Chain`]: its consumers are running; [`ChainEnd::run`] hands over the
/// [`Topology`].
pub struct ChainEnd<C: Consumer + 'static> {
    topology: Topology,
    sinks: Vec<ConsumerHandle<C>>,
    error: Option<BuildError>,
}

impl<C: Consumer + 'static> fmt::Debug for ChainEnd<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChainEnd")
            .field("stages", &self.topology.stages().len())
            .field("error", &self.error)
            .finish()
    }
}

impl<T: Send + 'static> Chain<T> {
    pub(crate) fn start<S: Producer<Out = T> + 'static>(
        source: StageBuilder<S, ProducerRole>,
    ) -> Chain<T> {
        Chain {
            topology: Topology::new(),
            release: None,
            tails: vec![pending_producer(source)],
            fan: Fan::Merge,
            options: SubscribeOptions::new(),
            error: None,
        }
    }

    /// The subscription options of the next link (default: `SubscribeOptions::new()`). A
    /// partition's number is added to them.
    pub fn options(mut self, options: SubscribeOptions) -> Chain<T> {
        self.options = options;
        self
    }

    /// The next link: one producer-consumer, subscribed to every stage before it.
    pub fn via<P, B>(self, stage: B) -> Chain<P::Out>
    where
        P: ProducerConsumer<In = T> + 'static,
        B: IntoBuilder<P, ProducerConsumerRole>,
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
    pub fn parallel(mut self, n: usize) -> Lanes<T> {
        self.fan = Fan::Parallel(n);
        self.check_lanes(n, "parallel");
        Lanes { chain: self }
    }

    /// The next link is made `n` times; copy `i` takes the events whose `key` hashes to `i`,
    /// from every stage before it (a [`PartitionDispatcher`] on each), so that all events of a
    /// key meet in one stage, in the order each stage before sent them.
    pub fn partition<K: Hash>(
        mut self,
        n: usize,
        key: impl Fn(&T) -> K + Send + Sync + 'static,
    ) -> Lanes<T> {
        self.check_lanes(n, "partition");
        let lanes = n.max(1) as u64;
        self.fan = Fan::Partition(
            n,
            Arc::new(move |event: &T| {
                let mut h = std::hash::DefaultHasher::new();
                key(event).hash(&mut h);
                Some(h.finish() % lanes)
            }),
        );
        Lanes { chain: self }
    }

    /// The last link: one consumer, subscribed to every stage before it.
    pub fn to<C, B>(self, stage: B) -> ChainEnd<C>
    where
        C: Consumer<In = T> + 'static,
        B: IntoBuilder<C, ConsumerRole>,
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
        let (topology, sinks) = self.to(consumer(Collect::new()).keep_state()).run_sinks()?;
        topology.join();
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
    fn start_tails(&mut self) -> Vec<Source<T>> {
        let tails = std::mem::take(&mut self.tails);
        let mut sources = Vec::with_capacity(tails.len());
        for tail in tails {
            if self.error.is_some() {
                break;
            }
            let dispatcher = match &self.fan {
                Fan::Partition(n, hash) => {
                    let hash = hash.clone();
                    match PartitionDispatcher::new(*n, move |e: &T| hash(e)) {
                        Ok(d) => Some(d),
                        Err(e) => {
                            self.error = Some(e);
                            break;
                        }
                    }
                }
                _ => None,
            };
            match tail(dispatcher, &mut self.topology, &mut self.release) {
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

    fn link<P: ProducerConsumer<In = T> + 'static>(
        mut self,
        mut make: impl FnMut(usize) -> StageBuilder<P, ProducerConsumerRole>,
    ) -> Chain<P::Out> {
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
        Chain {
            topology: self.topology,
            release: self.release,
            tails,
            fan: Fan::Merge,
            options: SubscribeOptions::new(),
            error: self.error,
        }
    }

    /// `builder`, subscribed (when it starts) to every source, as copy `lane`.
    fn subscribed<S: 'static, R: crate::handle::Consumes<S, In = T>>(
        &self,
        mut builder: StageBuilder<S, R>,
        lane: usize,
        sources: &[Source<T>],
    ) -> Result<StageBuilder<S, R>, BuildError> {
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

    fn end<C: Consumer<In = T> + 'static>(
        mut self,
        mut make: impl FnMut(usize) -> StageBuilder<C, ConsumerRole>,
    ) -> ChainEnd<C> {
        let copies = self.copies();
        let sources = self.start_tails();
        let mut sinks = Vec::new();
        for lane in 0..copies {
            if self.error.is_some() {
                break;
            }
            match self
                .subscribed(make(lane), lane, &sources)
                .and_then(|b| b.spawn())
            {
                Ok(sink) => {
                    self.topology.add(&sink);
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
        ChainEnd {
            topology: self.topology,
            sinks,
            error: self.error,
        }
    }
}

impl<T: Send + 'static> Lanes<T> {
    /// The subscription options of the next link's copies; see [`Chain::options`].
    pub fn options(mut self, options: SubscribeOptions) -> Lanes<T> {
        self.chain.options = options;
        self
    }

    /// The next link: `make(lane)` for each lane, a producer-consumer (or its builder).
    pub fn via<P, B>(self, mut make: impl FnMut(usize) -> B) -> Chain<P::Out>
    where
        P: ProducerConsumer<In = T> + 'static,
        B: IntoBuilder<P, ProducerConsumerRole>,
    {
        self.chain.link(move |lane| make(lane).into_builder())
    }

    /// The last link: `make(lane)` for each lane, a consumer (or its builder).
    pub fn to<C, B>(self, mut make: impl FnMut(usize) -> B) -> ChainEnd<C>
    where
        C: Consumer<In = T> + 'static,
        B: IntoBuilder<C, ConsumerRole>,
    {
        self.chain.end(move |lane| make(lane).into_builder())
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
        match self.error {
            // Dropping the topology stops what was started.
            Some(e) => Err(e),
            None => Ok((self.topology, self.sinks)),
        }
    }
}

/// A linear pipeline from this producer, in one expression: see [`Chain`](crate::Chain).
impl<S: Producer + 'static> StageBuilder<S, ProducerRole> {
    /// Starts a [`Chain`](crate::Chain) from this producer (the shortcuts below start one too).
    pub fn chain(self) -> Chain<S::Out> {
        Chain::start(self)
    }

    /// A chain whose next link is one producer-consumer; see [`Chain::via`](crate::Chain::via).
    pub fn via<P, B>(self, stage: B) -> Chain<P::Out>
    where
        P: ProducerConsumer<In = S::Out> + 'static,
        B: IntoBuilder<P, ProducerConsumerRole>,
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
        B: IntoBuilder<C, ConsumerRole>,
    {
        self.chain().to(stage)
    }
}
