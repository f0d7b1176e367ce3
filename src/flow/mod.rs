//! Flow's shape on threads: a few lines that become a parallel, partitioned, windowed
//! computation over stages (Elixir's `Flow`), with back-pressure from end to end.
//!
//! GUIDE

mod clock;
mod departition;
mod error;
mod reduce;
mod run;
mod window;

use std::any::Any;
use std::fmt;
use std::sync::Arc;

pub use clock::{Clock, ManualClock, SystemClock};
pub use error::FlowError;
pub use reduce::{top_n, Partitioned, Partitions, Reduced};
pub use run::{FlowStream, RunningFlow};
pub use window::{Emitted, Fired, LateEvents, Trigger, Window, WindowId};

use run::{checked, settle, Build, Chain, Lane, Sources};

use crate::dispatcher::PartitionDispatcher;
use crate::{
    Consumer, ConsumerContext, Events, IterProducer, Producer, ProducerDemand, Source,
    SubscribeOptions,
};

/// A flow: sources, then mapper operations fused into one stage per parallel lane. Nothing
/// runs until a terminal method ([`collect`](Flow::collect), [`stream`](Flow::stream),
/// [`start`](Flow::start), [`into_consumer`](Flow::into_consumer), [`run`](Flow::run)) is
/// called; [`partition`](Flow::partition) continues into reducers.
///
/// `S` is the type the sources emit, `T` the type the mapper operations turn it into; you
/// rarely need to name them.
pub struct Flow<S, T = S> {
    sources: Sources<S>,
    chain: Chain<S, T>,
    /// Whether any mapper operation was added (without any, the sources are the output).
    fused: bool,
    stages: Option<usize>,
    max_demand: usize,
    min_demand: Option<usize>,
    name: String,
}

impl<S, T> fmt::Debug for Flow<S, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Flow")
            .field("name", &self.name)
            .field("fused", &self.fused)
            .field("stages", &self.stages)
            .field("max_demand", &self.max_demand)
            .finish()
    }
}

/// The default number of stages per phase: the machine's cores (Flow's
/// `System.schedulers_online()`).
pub(crate) fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

impl<S: Send + 'static> Flow<S, S> {
    fn from_sources(sources: Sources<S>) -> Flow<S, S> {
        Flow {
            sources,
            chain: Arc::new(|batch| batch),
            fused: false,
            stages: None,
            max_demand: 1000,
            min_demand: None,
            name: "flow".into(),
        }
    }

    /// A flow of the items of `iter`, pulled by a producer stage as the mapper stages ask
    /// (Flow's `from_enumerable`).
    // Named like `stageflow::from_iter`; `FromIterator` cannot be implemented, as the flow needs
    // the iterator itself to be `Send + 'static`.
    #[allow(clippy::should_implement_trait)]
    pub fn from_iter<I>(iter: I) -> Flow<S, S>
    where
        I: IntoIterator<Item = S>,
        I::IntoIter: Send + 'static,
    {
        Flow::from_iters([iter])
    }

    /// A flow of the items of several iterators, each pulled by its own producer stage, merged
    /// (Flow's `from_enumerables`).
    pub fn from_iters<I>(iters: impl IntoIterator<Item = I>) -> Flow<S, S>
    where
        I: IntoIterator<Item = S>,
        I::IntoIter: Send + 'static,
    {
        let iters: Vec<I::IntoIter> = iters.into_iter().map(IntoIterator::into_iter).collect();
        Flow::from_producers(
            iters
                .into_iter()
                .map(|i| IterProducer::new(i).stop_on_cancel()),
        )
    }

    /// A flow of what `producer` emits: any [`Producer`] (an HTTP stream from
    /// [`http`](crate::http), a [`Generate`](crate::fns::Generate), your own), started when
    /// the flow runs and stopped with it.
    pub fn from_producer<P: Producer<Out = S>>(producer: P) -> Flow<S, S> {
        Flow::from_producers([producer])
    }

    /// A flow of what several producers of one type emit, merged.
    pub fn from_producers<P: Producer<Out = S>>(
        producers: impl IntoIterator<Item = P>,
    ) -> Flow<S, S> {
        let producers: Vec<P> = producers.into_iter().collect();
        Flow::from_sources(Box::new(move |b: &mut Build| {
            let mut outs = Vec::new();
            for p in producers {
                // Demand accumulates until every stage has subscribed (Flow's
                // `demand: :accumulate`), so a short input cannot end before the flow is
                // whole.
                let stage = crate::producer(p)
                    .name(b.name("source"))
                    .demand(ProducerDemand::Accumulate)
                    .spawn()?;
                b.add(&stage);
                outs.push(crate::Upstream::source(&stage));
                let handle = stage.clone();
                b.on_release(move || {
                    let _ = handle.set_demand(ProducerDemand::Forward);
                });
            }
            Ok(outs)
        }))
    }

    /// A flow of what stages that are already running emit, merged (Flow's `from_stages`).
    /// Take each one's endpoint with [`Upstream::source`](crate::Upstream::source). The flow
    /// subscribes to them when it runs (permanently: it ends once they have all finished) and
    /// does not stop them when it ends.
    ///
    /// A finite producer that is already forwarding demand can finish before every mapper
    /// stage has subscribed, and the run then fails with a
    /// [`ProducerGone`](crate::SubscribeError::ProducerGone) error: start such producers with
    /// [`ProducerDemand::Accumulate`] and hand their handles to
    /// [`from_producer_stages`](Flow::from_producer_stages) instead.
    pub fn from_stages(stages: impl IntoIterator<Item = Source<S>>) -> Flow<S, S> {
        let stages: Vec<Source<S>> = stages.into_iter().collect();
        Flow::from_sources(Box::new(move |_: &mut Build| Ok(stages)))
    }

    /// A flow of what running producers emit, merged, switching them to
    /// [`ProducerDemand::Forward`] once every stage of the flow has subscribed (as Flow does
    /// with `GenStage.demand/2`): start them with [`ProducerDemand::Accumulate`] and none of
    /// their events can go before the flow is whole. The flow does not stop them when it ends.
    pub fn from_producer_stages<P: Producer<Out = S>>(
        stages: impl IntoIterator<Item = crate::ProducerHandle<P>>,
    ) -> Flow<S, S> {
        let stages: Vec<crate::ProducerHandle<P>> = stages.into_iter().collect();
        Flow::from_sources(Box::new(move |b: &mut Build| {
            let outs = stages.iter().map(crate::Upstream::source).collect();
            b.on_release(move || {
                for s in &stages {
                    let _ = s.set_demand(ProducerDemand::Forward);
                }
            });
            Ok(outs)
        }))
    }
}

impl<S: Send + 'static, T: Send + 'static> Flow<S, T> {
    fn then<U: Send + 'static>(
        self,
        op: impl Fn(Vec<T>) -> Vec<U> + Send + Sync + 'static,
    ) -> Flow<S, U> {
        let prev = self.chain;
        Flow {
            sources: self.sources,
            chain: Arc::new(move |batch| op(prev(batch))),
            fused: true,
            stages: self.stages,
            max_demand: self.max_demand,
            min_demand: self.min_demand,
            name: self.name,
        }
    }

    /// Turns each event into `f(event)`.
    pub fn map<U: Send + 'static>(self, f: impl Fn(T) -> U + Send + Sync + 'static) -> Flow<S, U> {
        self.then(move |batch| batch.into_iter().map(&f).collect())
    }

    /// Turns each event into every item of `f(event)`.
    pub fn flat_map<I>(self, f: impl Fn(T) -> I + Send + Sync + 'static) -> Flow<S, I::Item>
    where
        I: IntoIterator,
        I::Item: Send + 'static,
    {
        self.then(move |batch| batch.into_iter().flat_map(&f).collect())
    }

    /// Keeps the events for which `f` is true.
    pub fn filter(self, f: impl Fn(&T) -> bool + Send + Sync + 'static) -> Flow<S, T> {
        self.then(move |mut batch: Vec<T>| {
            batch.retain(|e| f(e));
            batch
        })
    }

    /// Calls `f` on each event as it passes (Flow's `each`).
    pub fn inspect(self, f: impl Fn(&T) + Send + Sync + 'static) -> Flow<S, T> {
        self.then(move |batch: Vec<T>| {
            batch.iter().for_each(&f);
            batch
        })
    }

    /// Turns each batch a mapper stage handles into another (Flow's `map_batch`). A batch is
    /// at most `max_demand - min_demand` events.
    pub fn map_batch<U: Send + 'static>(
        self,
        f: impl Fn(Vec<T>) -> Vec<U> + Send + Sync + 'static,
    ) -> Flow<S, U> {
        self.then(f)
    }

    /// How many mapper stages run the operations in parallel, each subscribed to every
    /// source. Must be at least 1. Defaults to the number of cores.
    pub fn stages(mut self, n: usize) -> Flow<S, T> {
        self.stages = Some(n);
        self
    }

    /// The `max_demand` with which the mapper stages ask the sources (and a stream or consumer
    /// asks the last stages). Defaults to `1000`.
    pub fn max_demand(mut self, n: usize) -> Flow<S, T> {
        self.max_demand = n;
        self
    }

    /// The `min_demand` of the same subscriptions. Defaults to `max_demand / 2`.
    pub fn min_demand(mut self, n: usize) -> Flow<S, T> {
        self.min_demand = Some(n);
        self
    }

    /// The prefix of the stages' names (`flow-source-0`, `flow-map-0`, `flow-reduce-0`,
    /// ...). Defaults to `flow`.
    pub fn name(mut self, name: impl Into<String>) -> Flow<S, T> {
        self.name = name.into();
        self
    }

    fn subscribe_options(&self) -> Result<SubscribeOptions, FlowError> {
        let mut o = SubscribeOptions::new().max_demand(self.max_demand);
        if let Some(min) = self.min_demand {
            o = o.min_demand(min);
        }
        checked(o)
    }

    /// Spawns the sources and the mapper lanes (with `dispatcher`, one per lane, if given);
    /// returns the lanes' outputs.
    fn spawn_lanes(
        self,
        b: &mut Build,
        dispatcher: Option<&dyn Fn() -> Result<PartitionDispatcher<T>, FlowError>>,
    ) -> Result<Vec<Source<T>>, FlowError> {
        let options = self.subscribe_options()?;
        let stages = self.stages.unwrap_or_else(cores);
        if stages == 0 {
            return Err(FlowError::invalid(
                "stages",
                "expected stages to be at least 1, got 0",
            ));
        }
        let sources = (self.sources)(b)?;
        if !self.fused && dispatcher.is_none() {
            // No operation: the sources are the output (S is T).
            let any: Box<dyn Any> = Box::new(sources);
            return Ok(*any
                .downcast::<Vec<Source<T>>>()
                .expect("a flow without operations emits what its sources emit"));
        }
        let mut outs = Vec::with_capacity(stages);
        for _ in 0..stages {
            let mut builder = crate::producer_consumer(Lane {
                chain: self.chain.clone(),
            })
            .name(b.name("map"));
            if let Some(make) = dispatcher {
                builder = builder.dispatcher(make()?);
            }
            for s in &sources {
                builder = builder.subscribe_to(s, options.clone())?;
            }
            let stage = builder.spawn()?;
            b.add(&stage);
            outs.push(crate::Upstream::source(&stage));
        }
        Ok(outs)
    }

    /// Partitions the events by `partitions`' key into reducer stages: every event of one key
    /// meets the others in the same stage. Continue with a reduction
    /// ([`reduce`](Partitioned::reduce), [`count_by_key`](Partitioned::count_by_key), ...).
    pub fn partition(self, partitions: Partitions<T>) -> Partitioned<T> {
        Partitioned::new(self.into_lanes(), partitions)
    }

    /// The lanes, to be spawned with a dispatcher.
    fn into_lanes(self) -> reduce::Lanes<T> {
        Box::new(move |b, dispatcher| self.spawn_lanes(b, Some(dispatcher)))
    }

    fn build(self) -> Result<(Build, Vec<Source<T>>, SubscribeOptions), FlowError> {
        let options = self.subscribe_options()?;
        let mut b = Build::new(&self.name);
        let outs = self.spawn_lanes(&mut b, None)?;
        Ok((b, outs, options))
    }

    /// Runs the flow and returns its output as a blocking iterator on this thread (Flow's
    /// `Enum` functions on a flow). Dropping the iterator stops the flow.
    ///
    /// # Errors
    ///
    /// An invalid option ([`FlowError::InvalidOption`] naming it), or a stage that could not
    /// start or subscribe.
    pub fn stream(self) -> Result<FlowStream<T>, FlowError> {
        let (mut b, outs, options) = self.build()?;
        let mut stream: Option<crate::Stream<T>> = None;
        for o in &outs {
            match &mut stream {
                None => stream = Some(crate::stream(o, options.clone())?),
                Some(s) => {
                    s.subscribe_to(o, options.clone())?;
                }
            }
        }
        b.release();
        Ok(FlowStream {
            stream,
            topology: std::mem::take(&mut b.topology),
        })
    }

    /// Runs the flow to its end and collects its output.
    ///
    /// # Errors
    ///
    /// As [`stream`](Flow::stream), and [`FlowError::Failed`] if a stage ended abnormally.
    pub fn collect(self) -> Result<Vec<T>, FlowError> {
        let mut stream = self.stream()?;
        let out: Vec<T> = stream.by_ref().collect();
        stream.finish()?;
        Ok(out)
    }

    /// Runs the flow into `consumer`, a stage subscribed to every output stage (Flow's
    /// `into_stages`), and returns the running flow, consumer included.
    ///
    /// # Errors
    ///
    /// As [`stream`](Flow::stream).
    pub fn into_consumer<C: Consumer<In = T>>(self, consumer: C) -> Result<RunningFlow, FlowError> {
        let (mut b, outs, options) = self.build()?;
        let mut builder = crate::consumer(consumer).name(b.name("consumer"));
        for o in &outs {
            builder = builder.subscribe_to(o, options.clone())?;
        }
        let stage = builder.spawn()?;
        b.add(&stage);
        b.release();
        Ok(RunningFlow {
            topology: std::mem::take(&mut b.topology),
        })
    }

    /// Runs the flow on its own until its input ends or it is stopped, dropping its output
    /// (Flow's `start_link`).
    ///
    /// # Errors
    ///
    /// As [`stream`](Flow::stream).
    pub fn start(self) -> Result<RunningFlow, FlowError> {
        self.into_consumer(Discard(std::marker::PhantomData))
    }

    /// Runs the flow to its end, dropping its output (Flow's `run`).
    ///
    /// # Errors
    ///
    /// As [`collect`](Flow::collect).
    pub fn run(self) -> Result<(), FlowError> {
        let running = self.start()?;
        settle(&running.topology)
    }
}

/// A consumer that drops what it receives.
struct Discard<T>(std::marker::PhantomData<fn(T)>);

impl<T: Send + 'static> Consumer for Discard<T> {
    type In = T;
    type Message = ();

    fn handle_events(&mut self, events: Events<'_, T>, _: &mut ConsumerContext<'_>) {
        drop(events);
    }
}
