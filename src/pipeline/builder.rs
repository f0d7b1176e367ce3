//! The pipeline builder, typed end to end: producers of `Message<I>`, processors from
//! `Message<I>` to `Message<O>`, batchers of `Message<O>`; the options of each layer with
//! Broadway's defaults, checked once in [`start`](WithProcessors::start).

use std::any::TypeId;
use std::fmt;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::batch::BatchSize;
use super::batcher::{BatchHandler, BatchProcessor, Batcher, Fused, KeyFn};
use super::counters::Cells;
use super::error::PipelineError;
use super::handle::{Pipeline, Push};
use super::message::{Acknowledger, Message, PipelineAck};
use super::processor::{
    in_place, mapped, same, Core, FailedHook, Gate, Handling, Pools, Processor, ProcessorMsg,
    Route, Sink,
};
use super::rate::{Limiter, RateLimit};
use super::Batch;
use crate::dispatcher::{DemandDispatcher, PartitionDispatcher};
use crate::recycle::Recycler;
use crate::supervise::{
    self, Backoff, ChildSource, ChildSpec, ChildUpstream, GroupBuilder, Intensity, RestartPolicy,
};
use crate::{
    ControlError, Counters, Partition, Producer, ProducerDemand, ProducerRole, Source,
    StageBuilder, SubscribeError, SubscribeOptions, Topology, Upstream,
};

/// Starts a pipeline named `name` (the prefix of its stages' names). See the
/// [module docs](super) for a whole example.
pub fn builder(name: impl Into<String>) -> Builder {
    Builder {
        name: name.into(),
        shutdown: Duration::from_secs(30),
        intensity: Intensity::default(),
        backoff: Backoff::default(),
        acknowledger: None,
    }
}

/// The first step: a name, a shutdown timeout, how producers are restarted and the
/// pipeline's acknowledger; next, the producers.
pub struct Builder {
    name: String,
    shutdown: Duration,
    intensity: Intensity,
    backoff: Backoff,
    acknowledger: Option<Arc<dyn Acknowledger>>,
}

impl fmt::Debug for Builder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("name", &self.name)
            .field("shutdown", &self.shutdown)
            .field("intensity", &self.intensity)
            .field("backoff", &self.backoff)
            .field("acknowledger", &self.acknowledger.is_some())
            .finish()
    }
}

impl Builder {
    /// The pipeline's own acknowledger: told of every message set with
    /// [`Message::pipeline_acknowledger`] (an id and nothing else), in groups, as any
    /// acknowledger is. The pipeline's processors and batch processors hold it, so its
    /// messages need no reference to it: the cheapest way to acknowledge, for a pipeline
    /// whose messages all go back to one place (a queue, a consumer group). Messages may
    /// still name acknowledgers of their own. Defaults to none.
    ///
    /// See [`Message::pipeline_acknowledger`] for an example.
    pub fn acknowledger(mut self, acknowledger: Arc<dyn Acknowledger>) -> Builder {
        self.acknowledger = Some(acknowledger);
        self
    }

    /// How long [`Pipeline::shutdown`] waits for everything in flight to be acknowledged
    /// before it stops what is left (and counts it). Defaults to `30 s` (Broadway's
    /// `:shutdown`).
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Builder {
        self.shutdown = timeout;
        self
    }

    /// How many producer restarts are too many (see [Restarts](super#restarts)): one more
    /// within the period ends the pipeline (its group of producers and processors stops,
    /// with an error naming the producer and its failure). The period must be above zero.
    /// Defaults to 3 restarts within 5 s (Broadway's `max_restarts` and `max_seconds`).
    pub fn restart_intensity(mut self, intensity: Intensity) -> Builder {
        self.intensity = intensity;
        self
    }

    /// How long a crashed producer waits before it is started again. Defaults to
    /// `Backoff::Fixed(Duration::ZERO)` (at once; Broadway's processors resubscribe after
    /// 100 ms, here they resubscribe as soon as the new producer runs).
    pub fn restart_backoff(mut self, backoff: Backoff) -> Builder {
        self.backoff = backoff;
        self
    }

    /// One producer, made by `factory(0)` (Broadway's default `concurrency: 1`); see
    /// [`producers`](Builder::producers). For a producer that cannot be made twice, see
    /// [`producer_once`](Builder::producer_once).
    pub fn producer<P, I, F>(self, factory: F) -> WithProducers<I>
    where
        P: Producer<Out = Message<I>> + 'static,
        I: Send + 'static,
        F: FnMut(usize) -> StageBuilder<P, ProducerRole> + Send + 'static,
    {
        self.producers(1, factory)
    }

    /// One producer, given as it is: for a producer that cannot be made again (it owns a
    /// socket, a file, a channel's receiver, a queue's client that is not `Clone`), where
    /// [`producer`](Builder::producer) would need a factory that can run again.
    ///
    /// **Not restarted after a crash** (a temporary child, OTP's `:temporary`): a producer
    /// given by value cannot be made again, so if it panics or stops with an error, it is
    /// gone: the failure is logged at warn level, the processors finish what they have, and
    /// the pipeline ends as it would after the producer's finishing (normally; the messages
    /// the producer held are counted as discarded and never acknowledged). Use
    /// [`producer`](Builder::producer) with a factory to have it restarted (see
    /// [Restarts](super#restarts)). A producer that finishes normally ends the pipeline either
    /// way.
    ///
    /// # Examples
    ///
    /// ```
    /// use stageflow::pipeline::{self, Message, ProcessorOptions};
    ///
    /// // A receiver is not `Clone`: hand the producer over as it is.
    /// let (tx, rx) = crossbeam_channel::unbounded();
    /// for word in ["one", "two", "three"] {
    ///     tx.send(Message::new(word.to_owned()))?;
    /// }
    /// drop(tx); // the source ends with the channel
    /// let p = pipeline::builder("words")
    ///     .producer_once(stageflow::from_iter(rx))
    ///     .processors(ProcessorOptions::new().concurrency(2), |m: &mut Message<String>| {
    ///         Ok::<_, String>(m.data.len())
    ///     })
    ///     .start()?;
    /// p.join();
    /// assert_eq!(p.counters().processors.successful, 3);
    /// assert_eq!(p.counters().producers.restarts, 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn producer_once<P, I>(self, producer: StageBuilder<P, ProducerRole>) -> WithProducers<I>
    where
        P: Producer<Out = Message<I>> + 'static,
        I: Send + 'static,
    {
        let mut once = Some(producer);
        self.supervised_producers(
            1,
            move |_| once.take().expect("a temporary child starts once"),
            RestartPolicy::Temporary,
        )
    }

    /// The producers: `concurrency` stages made by `factory(i)` for `i` in
    /// `0..concurrency` (Broadway's `producer: [module:, concurrency:]`, default 1). Each
    /// emits [`Message`]s; set its buffer options on the builder you return. The pipeline
    /// names the stages and sets their dispatcher (a [`DemandDispatcher`] that shuffles
    /// demands on first dispatch, or a [`PartitionDispatcher`] with the processors'
    /// `partition_by`).
    ///
    /// A producer that crashes is started again from `factory(i)`, and the processors
    /// subscribe to it (see [Restarts](super#restarts)); so the factory runs on the
    /// pipeline's supervisor thread too, and must be `Send`.
    pub fn producers<P, I, F>(self, concurrency: usize, factory: F) -> WithProducers<I>
    where
        P: Producer<Out = Message<I>> + 'static,
        I: Send + 'static,
        F: FnMut(usize) -> StageBuilder<P, ProducerRole> + Send + 'static,
    {
        // Broadway's producers are restarted after a crash; one that finishes is done.
        self.supervised_producers(concurrency, factory, RestartPolicy::Transient)
    }

    /// The producers, as children of the pipeline's group restarted by `policy`.
    fn supervised_producers<P, I, F>(
        self,
        concurrency: usize,
        factory: F,
        policy: RestartPolicy,
    ) -> WithProducers<I>
    where
        P: Producer<Out = Message<I>> + 'static,
        I: Send + 'static,
        F: FnMut(usize) -> StageBuilder<P, ProducerRole> + Send + 'static,
    {
        let factory = Arc::new(Mutex::new(factory));
        let add: AddProducer<I> = Box::new(move |group, i, name, partitions, pool| {
            let factory = factory.clone();
            let mut first = true;
            let spec = ChildSpec::new(name, move || {
                let b = (factory.lock())(i);
                let b = b.recycle_from(pool.clone());
                // The first incarnation holds demand back until every stage is wired (a
                // finite producer could otherwise finish before the last processor
                // subscribed); a restarted one finds its processors there.
                let b = if std::mem::take(&mut first) {
                    b.demand(ProducerDemand::Accumulate)
                } else {
                    b
                };
                match &partitions {
                    None => {
                        b.dispatcher(DemandDispatcher::new().shuffle_demands_on_first_dispatch())
                    }
                    Some((n, key)) => {
                        let (n, key) = (*n, key.clone());
                        let hash = move |m: &Message<I>| Some(key(m) % n as u64);
                        b.dispatcher(
                            PartitionDispatcher::new(n, hash)
                                .expect("validated: processors.concurrency is at least 1"),
                        )
                    }
                }
            })
            .restart(policy);
            let child = group.add(spec);
            let source = child.child_source();
            let c = child.clone();
            let counters: ReadCounters = Arc::new(move || c.counters());
            let release: Release = Box::new(move || match child.current() {
                Some(stage) => stage.set_demand(ProducerDemand::Forward),
                None => Ok(()),
            });
            ProducerChild {
                source,
                counters,
                release,
            }
        });
        WithProducers {
            base: self,
            concurrency,
            add,
            rate: None,
        }
    }
}

/// Adds producer `i`, named, to the pipeline's group (with the processors' partitions, and
/// the pool its batches' buffers come back to).
type AddProducer<I> = Box<
    dyn FnMut(
        &mut GroupBuilder,
        usize,
        String,
        Option<(usize, KeyFn<I>)>,
        Recycler<Message<I>>,
    ) -> ProducerChild<I>,
>;

/// A producer, added to the pipeline's group.
struct ProducerChild<I: 'static> {
    source: ChildSource<Message<I>>,
    counters: ReadCounters,
    release: Release,
}

/// Reads the counters of a producer, every incarnation summed.
pub(crate) type ReadCounters = Arc<dyn Fn() -> Counters + Send + Sync>;

/// Lets a producer's demand through, once the pipeline is wired.
type Release = Box<dyn FnOnce() -> Result<(), ControlError>>;

/// The second step: producers of `Message<I>`; next, the processors.
pub struct WithProducers<I: 'static> {
    base: Builder,
    concurrency: usize,
    add: AddProducer<I>,
    rate: Option<RateLimit>,
}

impl<I> fmt::Debug for WithProducers<I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WithProducers")
            .field("name", &self.base.name)
            .field("concurrency", &self.concurrency)
            .field("rate_limiting", &self.rate)
            .finish_non_exhaustive()
    }
}

impl<I: Send + 'static> WithProducers<I> {
    /// At most `limit.allowed_messages` messages per `limit.interval` leave the producers, all
    /// of them together; change it while the pipeline runs with
    /// [`Pipeline::update_rate_limiting`]. Defaults to no limit.
    ///
    /// Broadway holds the demand in its producers; here the processors draw their demand from
    /// the shared window (they ask their producers themselves, for what it grants), so any
    /// stageflow producer can be rate limited unchanged. What is counted is the same: messages
    /// leaving the producers.
    pub fn rate_limiting(mut self, limit: RateLimit) -> WithProducers<I> {
        self.rate = Some(limit);
        self
    }

    /// The processors: `handle_message` runs on each message, on `options.concurrency`
    /// threads. It gets the message by reference (to read its data and metadata, route it
    /// with [`Message::put_batcher`], fail it, or
    /// [acknowledge it now](Message::ack_immediately)) and returns the new data, or an error:
    /// the message then fails (as it does if the handler panics or calls
    /// [`Message::fail`]), goes through `options`' `handle_failed` and is acknowledged as
    /// failed. Each thread gets a clone of `handle_message`.
    ///
    /// A handler that returns data of the type it was given (`O` the same as `I`) is the
    /// cheapest: each message's data is then replaced where it lies and a batch of messages
    /// goes on to the batchers in the allocation it came in (see the module's "The shape").
    /// One that changes the type moves each message into a new batch: on 2 cores, with a
    /// handler of a few nanoseconds and demand 100 / 50, 27–29 M messages/s against 36–39 M
    /// (`BENCHMARKS.md`, stop 29, rows m100t and m100).
    pub fn processors<O, E, H>(
        self,
        options: ProcessorOptions<I>,
        handle_message: H,
    ) -> WithProcessors<I, O>
    where
        O: Send + 'static,
        E: fmt::Display,
        H: FnMut(&mut Message<I>) -> Result<O, E> + Clone + Send + 'static,
    {
        let make: MakeHandler<I, O> = Box::new(move || match in_place(handle_message.clone()) {
            Ok(handle) => Handling::InPlace(handle),
            Err(h) => Handling::Each(mapped(h)),
        });
        WithProcessors {
            producers: self,
            options,
            make,
            batchers: Vec::new(),
        }
    }
}

type MakeHandler<I, O> = Box<dyn Fn() -> Handling<I, O>>;

/// How far the processors' demand may grow (see `ProcessorOptions::adaptive_demand`).
#[derive(Clone, Copy, Debug)]
enum Growth {
    /// Ten times `max_demand`.
    Default,
    UpTo(usize),
    Fixed,
}

/// The processors' options (Broadway's `processors: [default: [...]]`).
pub struct ProcessorOptions<I> {
    concurrency: usize,
    max_demand: usize,
    min_demand: Option<usize>,
    growth: Growth,
    partition_by: Option<KeyFn<I>>,
    on_failed: Option<FailedHook<I>>,
}

impl<I> fmt::Debug for ProcessorOptions<I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessorOptions")
            .field("concurrency", &self.concurrency)
            .field("max_demand", &self.max_demand)
            .field("min_demand", &self.min_demand)
            .field("growth", &self.growth)
            .field("partition_by", &self.partition_by.is_some())
            .finish_non_exhaustive()
    }
}

impl<I> Default for ProcessorOptions<I> {
    fn default() -> Self {
        ProcessorOptions::new()
    }
}

impl<I> ProcessorOptions<I> {
    /// The defaults: see each setter.
    pub fn new() -> ProcessorOptions<I> {
        ProcessorOptions {
            concurrency: std::thread::available_parallelism().map_or(1, |n| n.get()),
            max_demand: 10,
            min_demand: None,
            growth: Growth::Default,
            partition_by: None,
            on_failed: None,
        }
    }

    /// How many processor threads. Defaults to the number of CPUs
    /// (`std::thread::available_parallelism`).
    ///
    /// Broadway defaults to twice the schedulers, because BEAM processes are cheap and many
    /// handlers wait on I/O. A processor here is an OS thread: CPU-bound handlers gain nothing
    /// past one per core, and every extra thread costs a stack and context switches. Handlers
    /// that mostly wait (HTTP calls, say) should ask for more.
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n;
        self
    }

    /// Each processor's `max_demand` on each producer, where its demand starts (it grows from
    /// there unless [`fixed_demand`](ProcessorOptions::fixed_demand)): the most important
    /// knob for throughput (see [Sizing
    /// demand](crate::pipeline#sizing-demand-what-throughput-costs)). Defaults to `10`.
    pub fn max_demand(mut self, n: usize) -> Self {
        self.max_demand = n;
        self
    }

    /// Each processor's `min_demand`. Defaults to `max_demand / 2` (`5`).
    pub fn min_demand(mut self, n: usize) -> Self {
        self.min_demand = Some(n);
        self
    }

    /// Lets each processor's demand grow from `max_demand` up to `limit` while it finds its
    /// inbox empty when it asks, and shrink back when it finds it full (see
    /// [`SubscribeOptions::adaptive_demand`](crate::SubscribeOptions::adaptive_demand)).
    /// Defaults to ten times `max_demand` (100 at the default 10 / 5): see [Sizing
    /// demand](crate::pipeline#sizing-demand-what-throughput-costs). Processors behind a rate
    /// limit ask by hand, and do not grow.
    pub fn adaptive_demand(mut self, limit: usize) -> Self {
        self.growth = Growth::UpTo(limit);
        self
    }

    /// Keeps each processor's demand at `max_demand` / `min_demand`, as Broadway does (no
    /// [`adaptive_demand`](ProcessorOptions::adaptive_demand)): for handlers whose messages
    /// should spread evenly over the processors, or a bound on messages in flight of exactly
    /// `max_demand` per processor.
    pub fn fixed_demand(mut self) -> Self {
        self.growth = Growth::Fixed;
        self
    }

    /// The adaptive demand's limit, if the demand adapts.
    fn growth_limit(&self) -> Option<usize> {
        match self.growth {
            Growth::Default => Some(self.max_demand.saturating_mul(10)),
            Growth::UpTo(limit) => Some(limit),
            Growth::Fixed => None,
        }
    }

    /// Sends every message with the same `key(message) % concurrency` to the same processor,
    /// so that messages of one key are processed in order (and, with a batcher's
    /// `partition_by` on the same key, batched and acknowledged in order). Defaults to none:
    /// a message goes to whichever processor has demand.
    pub fn partition_by(
        mut self,
        key: impl Fn(&Message<I>) -> u64 + Send + Sync + 'static,
    ) -> Self {
        self.partition_by = Some(Arc::new(key));
        self
    }

    /// Called with the messages that failed in a processor (one call per batch of events),
    /// before they are acknowledged as failed (Broadway's `handle_failed`). It may change
    /// their metadata; it cannot make them successful. Defaults to none.
    pub fn handle_failed(mut self, f: impl Fn(&mut [Message<I>]) + Send + Sync + 'static) -> Self {
        self.on_failed = Some(Arc::new(f));
        self
    }
}

/// A batcher's options (Broadway's `batchers: [name: [...]]`).
pub struct BatcherOptions<T> {
    concurrency: usize,
    batch_size: BatchSize<T>,
    max_demand: Option<usize>,
    batch_timeout: Duration,
    partition_by: Option<KeyFn<T>>,
    on_failed: Option<FailedHook<T>>,
}

impl<T> fmt::Debug for BatcherOptions<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BatcherOptions")
            .field("concurrency", &self.concurrency)
            .field("batch_size", &self.batch_size)
            .field("max_demand", &self.max_demand)
            .field("batch_timeout", &self.batch_timeout)
            .field("partition_by", &self.partition_by.is_some())
            .finish_non_exhaustive()
    }
}

impl<T> Default for BatcherOptions<T> {
    fn default() -> Self {
        BatcherOptions::new()
    }
}

impl<T> BatcherOptions<T> {
    /// The defaults: see each setter.
    pub fn new() -> BatcherOptions<T> {
        BatcherOptions {
            concurrency: 1,
            batch_size: BatchSize::Count(100),
            max_demand: None,
            batch_timeout: Duration::from_secs(1),
            partition_by: None,
            on_failed: None,
        }
    }

    /// How many batch processors (threads running `handle_batch`) behind the batcher. There
    /// is always one batcher thread per name; with one batch processor and no `partition_by`,
    /// `handle_batch` runs on the batcher's thread (see the [module docs](super)). Defaults to
    /// `1`.
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n;
        self
    }

    /// How many messages make a batch, or a [`BatchSize::weight`] function. Defaults to
    /// `100`.
    pub fn batch_size(mut self, size: impl Into<BatchSize<T>>) -> Self {
        self.batch_size = size.into();
        self
    }

    /// The batcher's `max_demand` on each processor (it never asks for more than this from
    /// one processor; `min_demand` is half of it). Defaults to the batch size; required with a
    /// weight function.
    pub fn max_demand(mut self, n: usize) -> Self {
        self.max_demand = Some(n);
        self
    }

    /// A batch that has not reached its size is emitted this long after its first message.
    /// Defaults to `1 s`.
    pub fn batch_timeout(mut self, timeout: Duration) -> Self {
        self.batch_timeout = timeout;
        self
    }

    /// Batches are made per partition `key(message) % concurrency`, and each partition's
    /// batches go to its own batch processor, in order. Defaults to none (one batch in the
    /// making; batches go to whichever batch processor is free).
    pub fn partition_by(
        mut self,
        key: impl Fn(&Message<T>) -> u64 + Send + Sync + 'static,
    ) -> Self {
        self.partition_by = Some(Arc::new(key));
        self
    }

    /// Called with the messages of a batch that failed (by `handle_batch`'s error or panic,
    /// or [`Message::fail`]), before they are acknowledged as failed. Defaults to none.
    pub fn handle_failed(mut self, f: impl Fn(&mut [Message<T>]) + Send + Sync + 'static) -> Self {
        self.on_failed = Some(Arc::new(f));
        self
    }
}

struct BatcherSpec<T> {
    name: Arc<str>,
    options: BatcherOptions<T>,
    make: Box<dyn Fn() -> BatchHandler<T>>,
}

/// The last step: producers and processors, and zero or more batchers; then
/// [`start`](WithProcessors::start).
pub struct WithProcessors<I: 'static, O> {
    producers: WithProducers<I>,
    options: ProcessorOptions<I>,
    make: MakeHandler<I, O>,
    batchers: Vec<BatcherSpec<O>>,
}

impl<I, O> fmt::Debug for WithProcessors<I, O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WithProcessors")
            .field("producers", &self.producers)
            .field("processors", &self.options)
            .field(
                "batchers",
                &self.batchers.iter().map(|b| &b.name).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl<I: Send + 'static, O: Send + 'static> WithProcessors<I, O> {
    /// Adds a batcher named `name`: messages routed to it (with [`Message::put_batcher`], or
    /// all of them if it is the first batcher and they name none) are grouped into batches,
    /// and `handle_batch` runs on each batch on one of `options.concurrency` threads. An error
    /// or a panic fails every message of the batch; [`Message::fail`] fails one. Then the
    /// batch is acknowledged: one call per acknowledger. Each thread gets a clone of
    /// `handle_batch`.
    pub fn batcher<E, H>(mut self, name: &str, options: BatcherOptions<O>, handle_batch: H) -> Self
    where
        E: fmt::Display,
        H: FnMut(&mut Batch<O>) -> Result<(), E> + Clone + Send + 'static,
    {
        let make = Box::new(move || -> BatchHandler<O> {
            let mut h = handle_batch.clone();
            Box::new(move |b: &mut Batch<O>| h(b).map_err(|e| e.to_string()))
        });
        self.batchers.push(BatcherSpec {
            name: name.into(),
            options,
            make,
        });
        self
    }

    fn validate(&self) -> Result<(), PipelineError> {
        let p = &self.producers;
        if p.base.intensity.period.is_zero() {
            return Err(PipelineError::invalid(
                "restart_intensity",
                "expected a period above zero, got 0",
            ));
        }
        if let Backoff::Exponential { first, max } = p.base.backoff {
            if first > max {
                return Err(PipelineError::invalid(
                    "restart_backoff",
                    format!("expected first ({first:?}) to be at most max ({max:?})"),
                ));
            }
        }
        if p.concurrency == 0 {
            return Err(PipelineError::invalid(
                "producer.concurrency",
                "expected concurrency to be at least 1, got 0",
            ));
        }
        if let Some(rate) = &p.rate {
            rate.validate()?;
        }
        let o = &self.options;
        if o.concurrency == 0 {
            return Err(PipelineError::invalid(
                "processors.concurrency",
                "expected concurrency to be at least 1, got 0",
            ));
        }
        check_demand("processors", o.max_demand, o.min_demand)?;
        if let Growth::UpTo(limit) = o.growth {
            // The core's rule for the limit, through its public validation.
            let core = SubscribeOptions::new()
                .max_demand(o.max_demand)
                .min_demand(0)
                .adaptive_demand(limit)
                .validate();
            if let Err(SubscribeError::InvalidOption { message, .. }) = core {
                return Err(PipelineError::invalid(
                    "processors.adaptive_demand",
                    message,
                ));
            }
        }
        for (i, b) in self.batchers.iter().enumerate() {
            if b.name.is_empty() {
                return Err(PipelineError::invalid(
                    "batchers.name",
                    "expected a batcher name, got an empty string",
                ));
            }
            if self.batchers[..i].iter().any(|x| x.name == b.name) {
                return Err(PipelineError::invalid(
                    "batchers.name",
                    format!(
                        "expected batcher names to be unique, got {:?} twice",
                        b.name
                    ),
                ));
            }
            let bo = &b.options;
            if bo.concurrency == 0 {
                return Err(PipelineError::invalid(
                    "batchers.concurrency",
                    format!(
                        "batcher {:?}: expected concurrency to be at least 1, got 0",
                        b.name
                    ),
                ));
            }
            match (&bo.batch_size, bo.max_demand) {
                (BatchSize::Count(0), _) | (BatchSize::Weight { limit: 0, .. }, _) => {
                    return Err(PipelineError::invalid(
                        "batchers.batch_size",
                        format!(
                            "batcher {:?}: expected batch_size to be at least 1, got 0",
                            b.name
                        ),
                    ));
                }
                (BatchSize::Weight { .. }, None) => {
                    return Err(PipelineError::invalid(
                        "batchers.max_demand",
                        format!(
                            "batcher {:?}: expected a max_demand with a batch_size function, got none",
                            b.name
                        ),
                    ));
                }
                (_, Some(0)) => {
                    return Err(PipelineError::invalid(
                        "batchers.max_demand",
                        format!(
                            "batcher {:?}: expected max_demand to be at least 1, got 0",
                            b.name
                        ),
                    ));
                }
                _ => {}
            }
            if bo.batch_timeout.is_zero() {
                return Err(PipelineError::invalid(
                    "batchers.batch_timeout",
                    format!("batcher {:?}: expected a batch_timeout above zero", b.name),
                ));
            }
        }
        Ok(())
    }

    /// Checks every option and starts the pipeline's stages: producers, processors, batchers,
    /// batch processors.
    ///
    /// # Errors
    ///
    /// [`PipelineError::InvalidOption`] naming the option (a concurrency of 0, `min_demand`
    /// not below `max_demand`, a batch size of 0, a weight function without `max_demand`, a
    /// batcher name given twice, a rate limit of 0, a restart intensity over zero seconds);
    /// [`PipelineError::Start`] if a producer
    /// or processor could not start, [`PipelineError::Build`] or
    /// [`PipelineError::Subscribe`] if a batcher could not (what had started is stopped).
    pub fn start(self) -> Result<Pipeline<I>, PipelineError> {
        self.validate()?;
        let WithProcessors {
            producers,
            options,
            make,
            batchers,
        } = self;
        let WithProducers {
            base,
            concurrency,
            mut add,
            rate,
        } = producers;
        let name = base.name;
        // Producers and processors are one supervised group (see "Restarts" in the module
        // docs): a crashed producer is started again and the processors resubscribe.
        let mut group = supervise::group(name.clone())
            .intensity(base.intensity)
            .backoff(base.backoff);
        let mut sources = Vec::new();
        let mut producer_counters = Vec::new();
        let mut releases = Vec::new();
        let n = options.concurrency;
        // Buffers go back to where they are filled (see `recycle`): the batchers give theirs
        // to the processors, which give theirs to the producers; where the data keeps its
        // type, the processors hand the producers' buffers on, and one pool serves both.
        // Without batchers, the processors give the producers' buffers back.
        let producer_pool = Recycler::<Message<I>>::new();
        let recycler = same::<_, Recycler<Message<O>>>(producer_pool.clone())
            .unwrap_or_else(|_| Recycler::new());
        let changes_type = TypeId::of::<I>() != TypeId::of::<O>();
        let pools = || Pools {
            inputs: (changes_type || batchers.is_empty()).then(|| producer_pool.clone()),
            outputs: (changes_type && !batchers.is_empty()).then(|| recycler.clone()),
        };
        for i in 0..concurrency {
            let partitions = options.partition_by.clone().map(|k| (n, k));
            let producer = add(
                &mut group,
                i,
                format!("{name}.producer.{i}"),
                partitions,
                producer_pool.clone(),
            );
            releases.push(producer.release);
            producer_counters.push(producer.counters);
            sources.push(producer.source);
        }
        let limiter = rate.map(|r| Arc::new(Limiter::new(r, Instant::now())));
        let min_demand = options.min_demand.unwrap_or(options.max_demand / 2);
        let processor_cells = Arc::new(Cells::default());
        let totals = Arc::new(Cells::default());
        let names: Arc<[Arc<str>]> = batchers.iter().map(|b| b.name.clone()).collect();
        let sub_opts = |i: usize| {
            let mut o = SubscribeOptions::new()
                .max_demand(options.max_demand)
                .min_demand(min_demand);
            if let Some(limit) = options.growth_limit().filter(|_| rate.is_none()) {
                o = o.adaptive_demand(limit);
            }
            if options.partition_by.is_some() {
                o.partition(i as u64)
            } else {
                o
            }
        };
        let mut sinks = Vec::new();
        let mut processors = Vec::new();
        for i in 0..n {
            let core = Core {
                handler: make(),
                on_failed: options.on_failed.clone(),
                route: if names.is_empty() {
                    Route::Ack
                } else {
                    Route::Batchers(names.clone())
                },
                cells: processor_cells.clone(),
                totals: totals.clone(),
                gate: limiter
                    .as_ref()
                    .map(|l| Gate::new(l.clone(), options.max_demand, min_demand)),
                ack: PipelineAck::new(base.acknowledger.clone()),
                pools: pools(),
            };
            let stage_name = format!("{name}.processor.{i}");
            // A processor is a temporary child: never restarted (a handler's panic fails one
            // message, not the processor), so its builder is made once, here.
            if names.is_empty() {
                let mut once = Some(crate::consumer(Sink(core)));
                let mut spec = ChildSpec::new(stage_name, move || {
                    once.take().expect("a temporary child starts once")
                })
                .restart(RestartPolicy::Temporary);
                for s in &sources {
                    spec = spec.subscribe_to(s, sub_opts(i))?;
                }
                sinks.push(group.add(spec));
            } else {
                let b = crate::producer_consumer(Processor(core));
                let b = if names.len() == 1 {
                    b.dispatcher(DemandDispatcher::new().shuffle_demands_on_first_dispatch())
                } else {
                    let parts: Vec<Partition> =
                        names.iter().map(|n| Partition::Name(n.clone())).collect();
                    let default = parts[0].clone();
                    let hash = move |m: &Message<O>| {
                        Some(match m.batcher_arc() {
                            Some(b) => Partition::Name(b.clone()),
                            None => default.clone(),
                        })
                    };
                    b.dispatcher(PartitionDispatcher::named(parts, hash)?)
                };
                let mut once = Some(b);
                let mut spec = ChildSpec::new(stage_name, move || {
                    once.take().expect("a temporary child starts once")
                })
                .restart(RestartPolicy::Temporary);
                for s in &sources {
                    spec = spec.subscribe_to(s, sub_opts(i))?;
                }
                processors.push(group.add(spec));
            }
        }
        let group = group.start()?;
        // Stopped as a whole if a later stage fails to start.
        let mut topology = Topology::new().with_member(group.clone());
        let mut push: Vec<Push<I>> = Vec::new();
        let mut processor_sources: Vec<Source<Message<O>>> = Vec::new();
        for child in sinks {
            let stage = child.current().ok_or(PipelineError::Ended)?;
            push.push(Box::new(move |m: ProcessorMsg<I>| {
                stage.cast(m).map_err(|_| PipelineError::Ended)
            }));
        }
        for child in processors {
            let stage = child.current().ok_or(PipelineError::Ended)?;
            processor_sources.push(stage.source());
            push.push(Box::new(move |m: ProcessorMsg<I>| {
                stage.cast(m).map_err(|_| PipelineError::Ended)
            }));
        }
        let mut batcher_cells = Vec::new();
        for spec in batchers {
            let bo = spec.options;
            let cells = Arc::new(Cells::default());
            batcher_cells.push((spec.name.to_string(), cells.clone()));
            let max = bo.max_demand.unwrap_or(match bo.batch_size {
                BatchSize::Count(n) => n,
                BatchSize::Weight { limit, .. } => limit,
            });
            let parts = if bo.partition_by.is_some() {
                bo.concurrency
            } else {
                1
            };
            let batcher = Batcher::new(
                spec.name.clone(),
                bo.batch_size.clone(),
                bo.batch_timeout,
                bo.partition_by.clone(),
                parts,
                cells.clone(),
                recycler.clone(),
            );
            let mut opts = SubscribeOptions::new().max_demand(max).min_demand(max / 2);
            if names.len() > 1 {
                opts = opts.partition(Partition::Name(spec.name.clone()));
            }
            let batch_processor = || BatchProcessor {
                handler: (spec.make)(),
                on_failed: bo.on_failed.clone(),
                cells: cells.clone(),
                totals: totals.clone(),
                ack: PipelineAck::new(base.acknowledger.clone()),
            };
            if bo.concurrency == 1 && bo.partition_by.is_none() {
                // One thread does both (see `Fused`).
                let fused = Fused {
                    batcher,
                    processor: batch_processor(),
                };
                let mut b = crate::consumer(fused).name(format!("{name}.batcher.{}", spec.name));
                for s in &processor_sources {
                    b = b.subscribe_to(s, opts.clone())?;
                }
                topology.add(&b.spawn()?);
                continue;
            }
            let mut b =
                crate::producer_consumer(batcher).name(format!("{name}.batcher.{}", spec.name));
            for s in &processor_sources {
                b = b.subscribe_to(s, opts.clone())?;
            }
            let batcher = if bo.partition_by.is_some() {
                let n = bo.concurrency;
                b.dispatcher(PartitionDispatcher::new(n, |b: &Batch<O>| {
                    Some(b.info.partition as u64)
                })?)
                .spawn()?
            } else {
                b.dispatcher(DemandDispatcher::new().shuffle_demands_on_first_dispatch())
                    .spawn()?
            };
            topology.add(&batcher);
            for i in 0..bo.concurrency {
                let mut opts = SubscribeOptions::new().max_demand(1).min_demand(0);
                if bo.partition_by.is_some() {
                    opts = opts.partition(i as u64);
                }
                let stage = crate::consumer(batch_processor())
                    .name(format!("{name}.batch_processor.{}.{i}", spec.name))
                    .subscribe_to(&batcher, opts)?
                    .spawn()?;
                topology.add(&stage);
            }
        }
        for release in releases {
            release().map_err(|_| PipelineError::Ended)?;
        }
        Ok(Pipeline {
            name,
            topology,
            group,
            producers: producer_counters,
            push,
            partition_by: options.partition_by,
            processor_cells,
            batcher_cells,
            totals,
            pushed: Arc::new(AtomicU64::new(0)),
            next: AtomicU64::new(0),
            limiter,
            shutdown: base.shutdown,
            #[cfg(test)]
            recycled: Box::new(move || (producer_pool.taken(), recycler.taken())),
        })
    }
}

fn check_demand(layer: &'static str, max: usize, min: Option<usize>) -> Result<(), PipelineError> {
    let option = if layer == "processors" {
        ("processors.max_demand", "processors.min_demand")
    } else {
        ("batchers.max_demand", "batchers.min_demand")
    };
    if max == 0 {
        return Err(PipelineError::invalid(
            option.0,
            "expected max_demand to be at least 1, got 0",
        ));
    }
    if let Some(min) = min {
        if min >= max {
            return Err(PipelineError::invalid(
                option.1,
                format!("expected min_demand to be below max_demand ({max}), got {min}"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pipeline of `n` numbers through 2 processors whose handler makes `O` of them, into a
    /// batcher of 10 if `batched`; how many buffers its producer and its processors took back.
    fn recycled<O: Send + 'static>(n: u64, batched: bool, handler: fn(u64) -> O) -> (u64, u64) {
        let p = crate::pipeline::builder("recycled")
            .producers(1, move |_| crate::from_iter((0..n).map(Message::new)))
            .processors(
                ProcessorOptions::new().concurrency(2).max_demand(10),
                move |m: &mut Message<u64>| Ok::<_, String>(handler(m.data)),
            );
        let p = if batched {
            p.batcher(
                "b",
                BatcherOptions::new().batch_size(10),
                |_: &mut Batch<O>| Ok::<(), String>(()),
            )
        } else {
            p
        };
        let p = p.start().expect("the pipeline starts");
        for (stage, reason) in p.join() {
            assert!(reason.is_normal(), "{stage}: {reason:?}");
        }
        (p.recycled)()
    }

    // 10 000 messages in batches of at most 50 (the processors' demand grows to 100 / 50):
    // at least 200 buffers, all but the first few in flight taken back.

    #[test]
    fn producers_take_back_the_buffers_their_batchers_emptied() {
        let (producer, processors) = recycled(10_000, true, |x| x * 2);
        // The data keeps its type: one pool, the processors hand the producer's buffers on.
        assert!(producer >= 100, "{producer} buffers taken back");
        assert_eq!(producer, processors, "one pool");
    }

    #[test]
    fn processors_that_change_the_type_take_their_buffers_back_from_the_batchers() {
        let (producer, processors) = recycled(10_000, true, |x| x.to_string());
        assert!(producer >= 100, "the producer took {producer} back");
        assert!(processors >= 100, "the processors took {processors} back");
    }

    #[test]
    fn processors_without_batchers_give_the_producers_buffers_back() {
        for (producer, _) in [
            recycled(10_000, false, |x| x * 2),
            recycled(10_000, false, |x| x.to_string()),
        ] {
            assert!(producer >= 100, "the producer took {producer} back");
        }
    }
}
