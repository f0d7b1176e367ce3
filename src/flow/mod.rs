//! Flow's shape on threads: a few lines that become a parallel, partitioned, windowed
//! computation over stages (Elixir's `Flow`), with back-pressure from end to end.
//!
//! A [`Flow`] starts from sources (iterators, producers, running stages), applies mapper
//! operations (`map`, `flat_map`, `filter`, `inspect`, `map_batch`) fused into one stage per
//! parallel lane, and either runs as it is or is [partitioned](Flow::partition) by key into
//! reducer stages, where every event of a key meets the others. Each reducer folds its events
//! into an accumulator per [`Window`]; [`Trigger`]s emit a window's accumulator before it
//! closes; a [`departition`](Reduced::departition) merges each window's results from every
//! partition into one stage. The layer uses nothing but the crate's public API: every stage is
//! an ordinary [`ProducerConsumer`](crate::ProducerConsumer) on its own thread, subscribed with
//! ordinary demand.
//!
//! # Word count
//!
//! ```
//! use stageflow::flow::{Flow, Partitions};
//!
//! let lines = ["the cat", "the dog", "a cat and the bird"];
//! let counts = Flow::from_iter(lines)
//!     .stages(2) // two mapper stages
//!     .flat_map(|line: &'static str| line.split(' '))
//!     // Partition by the word and count by it: each mapper stage pre-counts its batch.
//!     .count_by_key(|word: &&str| *word, Partitions::by_event().stages(2))
//!     // One stage merges the partitions' counts and ranks them.
//!     .departition_top(3, |(_, n)| *n)
//!     .collect()?;
//! assert_eq!(counts.len(), 1); // one window: the global window, emitted at the end
//! assert_eq!(counts[0].value, [("the", 3), ("cat", 2), ("a", 1)]);
//! # Ok::<(), stageflow::flow::FlowError>(())
//! ```
//!
//! The words are borrowed from the lines (`&'static str` here) and `flat_map` takes the
//! iterator `split` returns: no `Vec` per line, no `String` per word. [`Flow::count_by_key`]
//! is [`partition`](Flow::partition) by a key followed by
//! [`count_by_key`](Partitioned::count_by_key) by the same key, with the key written once.
//! Both send the mappers' counts through the partition instead of every word (a
//! *combiner*); the one call reads each word's key once where the two steps read the
//! partition's key and the count's, so it is the faster where the two keys are one. The two
//! steps remain for other reductions, and for a count by a key other than the partition's.
//!
//! # Over borrowed data: flows in a scope
//!
//! A [`Flow`]'s items are `'static`. Lines the program owns (read from a file, say) are
//! counted without copying them or leaking them by a [`ScopedFlow`]: made by
//! [`ScopedFlow::from_borrowed`], run on threads of a [`std::thread::scope`] by
//! [`collect_in`](ScopedFlow::collect_in) or [`run_in`](ScopedFlow::run_in). Its items,
//! operations (closures that borrow), keys and results may borrow for as long as the scope's
//! caller holds the data; everything else is [`Flow`]'s.
//!
//! ```
//! use stageflow::flow::{Partitions, ScopedFlow};
//!
//! let text = String::from("the cat\nthe dog\na cat and the bird");
//! let lines: Vec<&str> = text.lines().collect();
//! let counts = std::thread::scope(|scope| {
//!     ScopedFlow::from_borrowed(lines.iter().copied())
//!         .stages(2)
//!         .flat_map(|line: &str| line.split(' '))
//!         .count_by_key(|word| *word, Partitions::by_event().stages(2))
//!         .departition_counts()
//!         .collect_in(scope)
//! })?;
//! assert_eq!(counts[0].value["the"], 3); // keyed by `&str` slices of `text`
//! # Ok::<(), stageflow::flow::FlowError>(())
//! ```
//!
//! # The shape
//!
//! | phase | stages (names) | how many | subscribed to |
//! |---|---|---|---|
//! | sources | `flow-source-i` | one per producer (none for iterators, see below) | |
//! | mappers | `flow-map-i` | [`Flow::stages`], default: the cores | every source |
//! | reducers | `flow-reduce-i` | [`Partitions::stages`], default: the cores | every mapper, partition `i` |
//! | departition | `flow-departition-0` | one | every reducer |
//!
//! Mapper stages share the sources' events by demand (the
//! [`DemandDispatcher`](crate::dispatcher::DemandDispatcher)); each one sends every event to the
//! reducer of its key's partition through a
//! [`PartitionDispatcher`] (`hash(event) % stages`).
//! Sources the flow starts wait with [`ProducerDemand::Accumulate`] until every stage has
//! subscribed, so a short input cannot end before the flow is whole.
//!
//! A flow from iterators ([`Flow::from_iter`], [`Flow::from_iters`]) with mapper operations
//! or a partition has no source stage: each mapper stage pulls the iterators itself, a batch
//! of [`max_demand`](Flow::max_demand) consecutive items at a time (the most it had asked a
//! source for; the iterators in turn, behind one lock taken once per batch), runs the
//! operations on it and sends the result on. Each event crosses one channel less and the flow
//! runs one thread less for the same number of lanes; each lane still sends its events in the
//! order it pulled them, waits for its consumers' demand, and ends when the iterators have.
//!
//! The flow ends when its sources finish: each stage finishes once all its producers have,
//! reducers emit every open window first ([`Fired::Done`]), and the last stage's consumer sees
//! the end.
//!
//! # Windows and triggers
//!
//! A reducer keeps one accumulator per open [`Window`]: the global window (the default), count
//! windows of `n` events, periodic windows of processing time, or fixed windows of event time
//! with an allowed lateness. A window's accumulator is emitted when the window closes
//! ([`Fired::Closed`]), when the input completes ([`Fired::Done`]), and whenever one of its
//! triggers fires ([`Trigger::Every`] `n` events, [`Trigger::Periodically`]); a trigger emits
//! the accumulator so far and keeps it. Each emission is an [`Emitted`]: the window
//! ([`WindowId`]), why it fired, the partition, the value.
//!
//! Event time advances by a *watermark* per partition: the least, over the reducer's lanes
//! (one per mapper stage), of the latest timestamp each lane has sent. A fixed window closes
//! when the watermark reaches its end plus the allowed lateness, and an event is late (dropped,
//! counted in [`Window::late_events`]) only if its window has closed when it arrives; so an
//! event at most the allowed lateness older than the latest event before it on its own lane is
//! never late, however the lanes interleave. The rule in full, with what idle lanes do, is in
//! [`Window`'s docs](Window#event-time-and-the-watermark).
//!
//! Processing time comes from a [`Clock`]: the system's by default, a [`ManualClock`] in tests,
//! which move time by hand and never sleep. A reducer whose window or triggers depend on
//! processing time reads its clock on each batch and on a timer
//! ([`Context::send_after`](crate::Context::send_after), every [`Window::tick`]). The windows
//! and triggers themselves are pure code, tested without threads.
//!
//! ```
//! use std::time::Duration;
//! use stageflow::flow::{Fired, Flow, ManualClock, Partitions, Window, WindowId};
//!
//! // The clock never moves: the events stay in the first 5-second window, which closes when
//! // the input completes.
//! let clock = ManualClock::new();
//! let window = Window::periodic(Duration::from_secs(5)).clock(clock.clone());
//! let emitted = Flow::from_iter(1..=10u64)
//!     .partition(Partitions::by_event().stages(2).window(window))
//!     .reduce(|| 0u64, |sum: &mut u64, x| *sum += x)
//!     .departition_sum()
//!     .collect()?;
//! let start = Duration::ZERO;
//! let end = Duration::from_secs(5);
//! assert_eq!(emitted.len(), 1);
//! assert_eq!(emitted[0].window, WindowId::Periodic { start, end });
//! assert_eq!((emitted[0].fired, emitted[0].value), (Fired::Done, 55));
//! # Ok::<(), stageflow::flow::FlowError>(())
//! ```
//!
//! # What a reduction emits
//!
//! [`Partitioned::reduce`] (and [`group_by`](Partitioned::group_by),
//! [`count_by_key`](Partitioned::count_by_key), [`take_top`](Partitioned::take_top)) gives a
//! [`Reduced`] flow; [`map_state`](Reduced::map_state) and [`take_top`](Reduced::take_top)
//! shape each emission; then choose what leaves the reducers:
//! [`emit_state`](Reduced::emit_state) (each emission, with its window),
//! [`emit_events`](Reduced::emit_events) (the items of each emission, Flow's default), or
//! [`departition`](Reduced::departition) (one merged result per window, with ready-made
//! merges for the common cases: [`departition_sum`](Reduced::departition_sum),
//! [`departition_counts`](Reduced::departition_counts),
//! [`departition_collect`](Reduced::departition_collect),
//! [`departition_top`](Reduced::departition_top)). Each gives a new
//! [`Flow`], to run or to continue with more operations and partitions (in stages of their
//! own: operations after a reduction are not fused into the reducers).
//!
//! # Running
//!
//! [`collect`](Flow::collect) and [`stream`](Flow::stream) consume the output on the calling
//! thread; [`into_consumer`](Flow::into_consumer) runs it into a consumer stage of yours;
//! [`start`](Flow::start) runs it on its own as a [`RunningFlow`] (a [`Topology`](crate::Topology))
//! until its input ends, you [drain](RunningFlow::drain) it (every event in flight reaches the
//! end and open windows are emitted) or you stop it; [`run`](Flow::run) runs it to its end. Bad options are
//! [`FlowError::InvalidOption`]s naming the option; a stage that fails (a closure that panics)
//! fails the run with [`FlowError::Failed`] naming the stage.
//!
//! # Back-pressure and memory
//!
//! Every hop is a demand-driven subscription, so a slow reducer slows the mappers, which slow
//! the sources: an iterator is pulled only as far as demand reaches. What is in flight is
//! bounded by the demands (`max_demand` of the mappers' subscriptions, [`Flow::max_demand`],
//! and of the reducers', [`Partitions::max_demand`]), never by the size of the input. What a
//! reducer holds is its open windows' accumulators; a departition holds each window until every
//! partition has closed it.
//!
//! # Sizing: stages and demand on few cores
//!
//! Every stage is a thread: a flow from iterators with `m` mapper stages ([`Flow::stages`])
//! and `p` partitions ([`Partitions::stages`]) runs `m + p` threads, one more for a
//! departition, and the thread that reads its output. What the sizes did to the word count
//! of `benches/flow_shape` (rows n and nc of `cargo bench --bench compare`: 500 000 words,
//! 5000 distinct, skewed; `STAGEFLOW_FLOW` sets the sizes), counted as instructions of the
//! flow's threads (every thread but the bench's own) under callgrind, which the machine's
//! load cannot change (`--quick --rounds 1`: a warm-up and one round; 2 cores, 2026-12-07,
//! both columns with their combiners, `BENCHMARKS.md` "stop 25"):
//!
//! | mappers, partitions | `Flow::max_demand` | `Partitions::max_demand` | `partition` + `count_by_key` (n) | `Flow::count_by_key` (nc) |
//! |---|---|---|---|---|
//! | 2, 4 | 1000 | 1000 | 571 M | 283 M |
//! | 2, 2 | 1000 | 1000 | 560 M | 282 M |
//! | 1, 2 | 1000 | 1000 | 575 M | 282 M |
//! | 2, 4 | 100 | 100 | 692 M | 412 M |
//! | 2, 4 | 10 000 | 1000 | 559 M | 272 M |
//! | 2, 4 | 1000 | 10 000 | 562 M | 280 M |
//! | 2, 2 | 10 000 | 10 000 | 549 M | 269 M |
//!
//! Row n builds a `Vec` per line (`flat_map(|line| line.split(' ').collect::<Vec<_>>())`)
//! and reads two keys per word (the partition's and the count's); nc builds none and reads
//! one. That is the difference between the columns.
//!
//! - **Stages past the cores add threads, not work, and not speed.** One or two mappers, two
//!   or four partitions: the same work within 3 %. On the wall clock (2 cores shared with
//!   other builds) the CPU time per word of n was 160 ns with 2 mappers and 2 partitions, 180
//!   ns with 2 and 4, and 200 ns with 1 and 1, which leaves a core idle (before the
//!   combiners). Start from the default (as many stages per phase as cores); add partitions
//!   when a reducer's work per event is much more than a mapper's.
//! - **Demand is the batch, and every batch has a fixed cost** (a message, a wake-up, a
//!   callback, a window lookup). With 100 instead of 1000, n did 21 % more work and nc 46 %
//!   more.
//! - **A combiner counts what a lane pulls in a turn.** Both forms send one pair per distinct
//!   key (and, after `partition`, per partition) of what they counted, not every word. In the
//!   global window without triggers a lane fed by iterators counts over its whole turn (up
//!   to 16 batches of [`Flow::max_demand`] items) before it sends its pairs, so a larger
//!   batch buys little: 10 000 instead of 1000 saved 2 % in n and 4 % in nc (it saved a third
//!   of nc's work when the combiner sent its pairs after every batch). In periodic windows
//!   it counts a batch at a time, and there a larger `max_demand` pays as it did. Rows nc and
//!   n on the wall clock: nc 1.5–1.7× the single-threaded loop, 1.2–1.5× rayon (25–30 CPU ns a
//!   word); n 0.50× and 0.40× (85 ns a word), 0.80× and 0.65× without its `Vec` per line.
//!   The reducers' demand matters less still: 10 000 instead of 1000 saved 1–2 %.
//! - **Memory in flight** is bounded by the same numbers: a lane holds at most a batch of
//!   `max_demand` items and what the operations make of them, and a combiner's table (at
//!   most 65 536 keys and 2 MB of entries, emptied at the end of each turn), a reducer at
//!   most [`Partitions::max_demand`] events per lane, and events for a partition whose
//!   reducer has not asked wait in the lanes' dispatchers (see
//!   [`PartitionDispatcher`'s memory](PartitionDispatcher#memory)).
//!
//! # Where this differs from Elixir's Flow
//!
//! - **Types.** A flow is `Flow<S, T>`: what its sources emit and what its mappers make of it;
//!   operations are `Fn + Send + Sync` closures, shared by the lanes.
//! - **Periodic windows are aligned on the clock** (multiples of the period since its epoch)
//!   rather than started with each partition, so window `k` is the same span in every
//!   partition and a departition can merge them.
//! - **Allowed lateness is event time.** As in Flow, a reducer waits for every lane (Flow: every
//!   producer) before event time passes a fixed window; here the watermark is the least of
//!   the lanes' latest timestamps (Flow keeps each producer's latest window), and the allowed
//!   lateness is measured on it, in event time, where Flow's is processing time (a timer
//!   started at the watermark). So an event within the allowed lateness of its own lane's
//!   order is never late, however fast the threads run: see
//!   [`Window`'s rule](Window#event-time-and-the-watermark).
//! - **Triggers keep the accumulator** and emit it whole (Flow's default `on_trigger`); to
//!   change what is emitted use [`map_state`](Reduced::map_state); there is no way to reset
//!   the accumulator at a trigger.
//! - **A departition emits each window once**, merged from every partition's final result;
//!   intermediate emissions stay in the partitions.
//! - **Ties in [`top_n`] go to the smaller item**, so a top list does not depend on how events
//!   were partitioned.
//! - **Running stages as sources** are subscribed as they are ([`Flow::from_stages`]) or,
//!   started accumulating, released by the flow ([`Flow::from_producer_stages`]); Flow calls
//!   `GenStage.demand/2` on every producer.
//! - Not here (yet): joins (`bounded_join`, `window_join`), `uniq`, `emit_and_reduce`,
//!   `shuffle`, `merge` of flows, custom trigger functions.

mod clock;
mod combine;
mod departition;
mod error;
mod lane;
mod reduce;
mod run;
mod watermark;
mod window;

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use clock::{Clock, ManualClock, SystemClock};
pub use error::FlowError;
pub use reduce::{
    top_n, KeyCounts, KeyHash, KeyHasher, Partitioned, Partitions, Reduced, ScopedPartitioned,
    ScopedPartitions, ScopedReduced,
};
pub use run::{FlowStream, Mode, RunningFlow, Scoped, ScopedFlowStream};
pub use window::{
    Emitted, Fired, LateEvents, ScopedWindow, Trigger, Window, WindowCounts, WindowId,
};

use combine::Combiner;
use lane::{FusedLane, Pool, PullBox};
use run::{checked, settle, stream_of, Build, Chain, Flush, Lane, Ops, Sources, END_WAIT};

use crate::dispatcher::PartitionDispatcher;
use crate::{
    Consumer, ConsumerContext, Events, Producer, ProducerDemand, ScopedSource, SubscribeOptions,
};
use crate::{InScope, Unscoped};

/// A flow: sources, then mapper operations fused into one stage per parallel lane. Nothing
/// runs until a terminal method ([`collect`](Flow::collect), [`stream`](Flow::stream),
/// [`start`](Flow::start), [`into_consumer`](Flow::into_consumer), [`run`](Flow::run)) is
/// called; [`partition`](Flow::partition) continues into reducers.
///
/// `S` is the type the sources emit, `T` the type the mapper operations turn it into; you
/// rarely need to name them. Its items and operations are `'static`; over items that borrow
/// (lines the program owns, keyed by `&str`), use a [`ScopedFlow`], whose methods are these.
///
/// # Examples
///
/// ```
/// use stageflow::flow::Flow;
///
/// let mut squares = Flow::from_iter(1..=5u64).stages(2).map(|x| x * x).collect()?;
/// squares.sort_unstable(); // two mapper stages: the order between them is not kept
/// assert_eq!(squares, [1, 4, 9, 16, 25]);
/// # Ok::<(), stageflow::flow::FlowError>(())
/// ```
pub type Flow<S, T = S> = ScopedFlow<'static, S, T, Unscoped>;

/// A [`Flow`] whose items, operations and results may borrow from the caller's stack for
/// `'env` (`M` is [`Scoped`]): made by [`ScopedFlow::from_borrowed`]. Its methods are
/// [`Flow`]'s; it runs in a [`std::thread::scope`] given to
/// [`collect_in`](ScopedFlow::collect_in) or [`run_in`](ScopedFlow::run_in), on the scope's
/// threads. A flow over borrowed lines, counted by `&str` keys:
///
/// ```
/// use stageflow::flow::{Partitions, ScopedFlow};
///
/// let lines: Vec<String> = vec!["the cat".into(), "the dog".into(), "a cat and the bird".into()];
/// let counts = std::thread::scope(|scope| {
///     ScopedFlow::from_borrowed(lines.iter().map(String::as_str))
///         .stages(2)
///         .flat_map(|line: &str| line.split(' '))
///         .count_by_key(|word| *word, Partitions::by_event().stages(2))
///         .departition_counts()
///         .collect_in(scope)
/// })?;
/// assert_eq!(counts[0].value["the"], 3);
/// assert_eq!(counts[0].value["bird"], 1);
/// # Ok::<(), stageflow::flow::FlowError>(())
/// ```
pub struct ScopedFlow<'env, S, T, M: Mode<'env>> {
    sources: Origin<'env, S, M>,
    /// The mapper operations, or, for a flow without any (`S` is `T`), the identity.
    ops: FlowOps<'env, S, T>,
    stages: Option<usize>,
    max_demand: usize,
    min_demand: Option<usize>,
    name: String,
    end_wait: Duration,
}

/// A flow's mapper operations, or the proof that it has none (`S` is `T`: its items and its
/// sources go on as they are).
enum FlowOps<'env, S, T> {
    Same {
        items: fn(Vec<S>) -> Vec<T>,
        sources: fn(Vec<ScopedSource<'env, S>>) -> Vec<ScopedSource<'env, T>>,
    },
    /// The fused operations, and what the last one holds back between batches (only
    /// [`count_by_key`](ScopedFlow::count_by_key)'s combiner, right before its partition).
    Chain(Chain<'env, S, T>, Option<Flush<'env, T>>),
}

impl<'env, S, T> FlowOps<'env, S, T> {
    /// What a lane does with a batch.
    fn lane(&self) -> Ops<'env, S, T> {
        match self {
            FlowOps::Same { items, .. } => Ops::Same(*items),
            FlowOps::Chain(chain, flush) => Ops::Chain(chain.clone(), flush.clone()),
        }
    }

    fn fused(&self) -> bool {
        matches!(self, FlowOps::Chain(..))
    }
}

impl<'env, S, T, M: Mode<'env>> fmt::Debug for ScopedFlow<'env, S, T, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Flow")
            .field("name", &self.name)
            .field("fused", &self.ops.fused())
            .field("stages", &self.stages)
            .field("max_demand", &self.max_demand)
            .field("end_wait", &self.end_wait)
            .finish()
    }
}

/// Where a flow's events come from.
enum Origin<'env, S, M: Mode<'env>> {
    /// Iterators: pulled by the mapper lanes themselves (fused), or, in a flow without
    /// lanes, by a source stage each.
    Iters(Vec<PullBox<'env, S>>),
    /// Stages, spawned or subscribed to when the flow runs.
    Stages(Sources<'env, S, M>),
}

/// The default number of stages per phase: the machine's cores (Flow's
/// `System.schedulers_online()`).
pub(crate) fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

impl<'env, S: Send + 'env, M: Mode<'env>> ScopedFlow<'env, S, S, M> {
    pub(crate) fn from_sources(sources: Sources<'env, S, M>) -> ScopedFlow<'env, S, S, M> {
        ScopedFlow::from_origin(Origin::Stages(sources))
    }

    /// A flow of the items of `iters`, pulled by its lanes (`from_iters`, `from_borrowed_iters`).
    fn from_iterators<I>(iters: impl IntoIterator<Item = I>) -> ScopedFlow<'env, S, S, M>
    where
        I: IntoIterator<Item = S>,
        I::IntoIter: Send + 'env,
    {
        let iters = iters
            .into_iter()
            .map(|i| Box::new(i.into_iter()) as PullBox<'env, S>)
            .collect();
        ScopedFlow::from_origin(Origin::Iters(iters))
    }

    fn from_origin(sources: Origin<'env, S, M>) -> ScopedFlow<'env, S, S, M> {
        ScopedFlow {
            sources,
            ops: FlowOps::Same {
                items: |items| items,
                sources: |sources| sources,
            },
            stages: None,
            max_demand: 1000,
            min_demand: None,
            name: "flow".into(),
            end_wait: END_WAIT,
        }
    }

    /// A flow of what `producer` emits: any [`Producer`] (an HTTP stream of the `http` module,
    /// a [`Generate`](crate::fns::Generate), your own), started when the flow runs and stopped
    /// with it.
    pub fn from_producer<P: Producer<Out = S> + 'env>(producer: P) -> ScopedFlow<'env, S, S, M> {
        ScopedFlow::from_producers([producer])
    }

    /// A flow of what several producers of one type emit, merged.
    pub fn from_producers<P: Producer<Out = S> + 'env>(
        producers: impl IntoIterator<Item = P>,
    ) -> ScopedFlow<'env, S, S, M> {
        let producers: Vec<P> = producers.into_iter().collect();
        ScopedFlow::from_sources(Box::new(move |b: &mut Build<'_, 'env, M>| {
            let mut outs = Vec::new();
            for p in producers {
                // Demand accumulates until every stage has subscribed (Flow's
                // `demand: :accumulate`), so a short input cannot end before the flow is
                // whole.
                let stage = crate::producer(p)
                    .name(b.name("source"))
                    .demand(ProducerDemand::Accumulate)
                    .spawn_in(b.place())?;
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
    /// stage has subscribed (and an empty one before the reducers have), and the run then
    /// fails with a [`ProducerGone`](crate::SubscribeError::ProducerGone) error: start such
    /// producers with [`ProducerDemand::Accumulate`] and hand their handles to
    /// [`from_producer_stages`](Flow::from_producer_stages) instead.
    pub fn from_stages(
        stages: impl IntoIterator<Item = ScopedSource<'env, S>>,
    ) -> ScopedFlow<'env, S, S, M> {
        let stages: Vec<ScopedSource<'env, S>> = stages.into_iter().collect();
        ScopedFlow::from_sources(Box::new(move |_: &mut Build<'_, 'env, M>| Ok(stages)))
    }

    /// A flow of what running producers emit, merged, switching them to
    /// [`ProducerDemand::Forward`] once every stage of the flow has subscribed (as Flow does
    /// with `GenStage.demand/2`): start them with [`ProducerDemand::Accumulate`] and none of
    /// their events can go before the flow is whole. The flow does not stop them when it ends.
    pub fn from_producer_stages<P: Producer<Out = S> + 'env>(
        stages: impl IntoIterator<Item = crate::ScopedStage<'env, P, crate::ProducerRole>>,
    ) -> ScopedFlow<'env, S, S, M> {
        let stages: Vec<crate::ScopedStage<'env, P, crate::ProducerRole>> =
            stages.into_iter().collect();
        ScopedFlow::from_sources(Box::new(move |b: &mut Build<'_, 'env, M>| {
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

impl<'env, S: Send + 'env> ScopedFlow<'env, S, S, Scoped<'env>> {
    /// A flow of the items of `iter`, which may borrow from the caller's stack
    /// ([`Flow::from_iter`] for borrowed items): it runs in a scope given to
    /// [`collect_in`](ScopedFlow::collect_in) or [`run_in`](ScopedFlow::run_in).
    pub fn from_borrowed<I>(iter: I) -> ScopedFlow<'env, S, S, Scoped<'env>>
    where
        I: IntoIterator<Item = S>,
        I::IntoIter: Send + 'env,
    {
        ScopedFlow::from_borrowed_iters([iter])
    }

    /// A flow of the items of several iterators that may borrow, merged
    /// ([`Flow::from_iters`] for borrowed items).
    pub fn from_borrowed_iters<I>(
        iters: impl IntoIterator<Item = I>,
    ) -> ScopedFlow<'env, S, S, Scoped<'env>>
    where
        I: IntoIterator<Item = S>,
        I::IntoIter: Send + 'env,
    {
        ScopedFlow::from_iterators(iters)
    }
}

impl<S: Send + 'static> Flow<S, S> {
    /// A flow of the items of `iter`, pulled as the flow's consumers ask (Flow's
    /// `from_enumerable`): by the mapper stages themselves, a batch at a time, when the flow
    /// has mapper operations or a partition, or else by a producer stage.
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

    /// A flow of the items of several iterators, merged (Flow's `from_enumerables`). The
    /// mapper stages pull them in turn, a batch of consecutive items of one iterator at a
    /// time; a flow without mapper operations or a partition has a producer stage per
    /// iterator instead.
    pub fn from_iters<I>(iters: impl IntoIterator<Item = I>) -> Flow<S, S>
    where
        I: IntoIterator<Item = S>,
        I::IntoIter: Send + 'static,
    {
        Flow::from_iterators(iters)
    }
}

impl<'env, S: Send + 'env, T: Send + 'env, M: Mode<'env>> ScopedFlow<'env, S, T, M> {
    /// Adds an operation: `op(item, out)` hands what it makes of each item to `out`.
    fn then<U: Send + 'env>(
        self,
        op: impl Fn(T, &mut dyn FnMut(U)) + Send + Sync + 'env,
    ) -> ScopedFlow<'env, S, U, M> {
        self.rebuild(|ops| -> Chain<'env, S, U> {
            match ops {
                FlowOps::Same { items, .. } => Arc::new(move |batch, out| {
                    for t in items(batch) {
                        op(t, out);
                    }
                }),
                FlowOps::Chain(prev, _) => {
                    Arc::new(move |batch, out| prev(batch, &mut |t| op(t, out)))
                }
            }
        })
    }

    /// Adds an operation over a whole batch: `op(batch, out)`, where `batch` runs what the
    /// operations before make of it (for a combiner, which counts a batch then hands on its
    /// table; and `map_batch`).
    fn then_batch<U: Send + 'env>(
        self,
        op: impl Fn(&mut dyn FnMut(&mut dyn FnMut(T)), &mut dyn FnMut(U)) + Send + Sync + 'env,
    ) -> ScopedFlow<'env, S, U, M> {
        self.rebuild(|ops| -> Chain<'env, S, U> {
            match ops {
                FlowOps::Same { items, .. } => Arc::new(move |batch, out| {
                    let mut batch = Some(items(batch));
                    op(
                        &mut |each| {
                            for t in batch.take().into_iter().flatten() {
                                each(t);
                            }
                        },
                        out,
                    );
                }),
                FlowOps::Chain(prev, _) => Arc::new(move |batch, out| {
                    let mut batch = Some(batch);
                    op(
                        &mut |each| {
                            if let Some(batch) = batch.take() {
                                prev(batch, each);
                            }
                        },
                        out,
                    );
                }),
            }
        })
    }

    /// The same flow with the operations `make` makes of its own.
    fn rebuild<U>(
        self,
        make: impl FnOnce(FlowOps<'env, S, T>) -> Chain<'env, S, U>,
    ) -> ScopedFlow<'env, S, U, M> {
        let ScopedFlow {
            sources,
            ops,
            stages,
            max_demand,
            min_demand,
            name,
            end_wait,
        } = self;
        ScopedFlow {
            sources,
            ops: {
                // Only a combiner right before its partition holds events back: an operation
                // after it would never see them.
                debug_assert!(!matches!(ops, FlowOps::Chain(_, Some(_))));
                FlowOps::Chain(make(ops), None)
            },
            stages,
            max_demand,
            min_demand,
            name,
            end_wait,
        }
    }

    /// Turns each event into `f(event)`.
    pub fn map<U: Send + 'env>(
        self,
        f: impl Fn(T) -> U + Send + Sync + 'env,
    ) -> ScopedFlow<'env, S, U, M> {
        self.then(move |t, out| out(f(t)))
    }

    /// Turns each event into every item of `f(event)`.
    pub fn flat_map<I>(
        self,
        f: impl Fn(T) -> I + Send + Sync + 'env,
    ) -> ScopedFlow<'env, S, I::Item, M>
    where
        I: IntoIterator,
        I::Item: Send + 'env,
    {
        self.then(move |t, out| f(t).into_iter().for_each(&mut *out))
    }

    /// Keeps the events for which `f` is true.
    pub fn filter(self, f: impl Fn(&T) -> bool + Send + Sync + 'env) -> ScopedFlow<'env, S, T, M> {
        self.then(move |t, out| {
            if f(&t) {
                out(t)
            }
        })
    }

    /// Calls `f` on each event as it passes (Flow's `each`).
    pub fn inspect(self, f: impl Fn(&T) + Send + Sync + 'env) -> ScopedFlow<'env, S, T, M> {
        self.then(move |t, out| {
            f(&t);
            out(t)
        })
    }

    /// Turns each batch a mapper stage handles into another (Flow's `map_batch`). A batch is
    /// at most [`max_demand`](Flow::max_demand) events.
    pub fn map_batch<U: Send + 'env>(
        self,
        f: impl Fn(Vec<T>) -> Vec<U> + Send + Sync + 'env,
    ) -> ScopedFlow<'env, S, U, M> {
        self.then_batch(move |batch, out| {
            let mut items = Vec::new();
            batch(&mut |t| items.push(t));
            for u in f(items) {
                out(u);
            }
        })
    }

    /// How many mapper stages run the operations in parallel, each subscribed to every
    /// source. Must be at least 1. Defaults to the number of cores.
    pub fn stages(mut self, n: usize) -> ScopedFlow<'env, S, T, M> {
        self.stages = Some(n);
        self
    }

    /// The `max_demand` with which the mapper stages ask the sources (and a stream or consumer
    /// asks the last stages). Mapper stages that pull iterators themselves pull `max_demand`
    /// items at a time. Defaults to `1000`.
    pub fn max_demand(mut self, n: usize) -> ScopedFlow<'env, S, T, M> {
        self.max_demand = n;
        self
    }

    /// The `min_demand` of the same subscriptions (mapper stages that pull iterators themselves
    /// have none to the sources). Defaults to `max_demand / 2`.
    pub fn min_demand(mut self, n: usize) -> ScopedFlow<'env, S, T, M> {
        self.min_demand = Some(n);
        self
    }

    /// The prefix of the stages' names (`flow-source-0`, `flow-map-0`, `flow-reduce-0`,
    /// ...). Defaults to `flow`.
    pub fn name(mut self, name: impl Into<String>) -> ScopedFlow<'env, S, T, M> {
        self.name = name.into();
        self
    }

    /// How long a run waits, once its output has ended, for every stage to end by itself:
    /// [`collect`](Flow::collect), [`run`](Flow::run) and [`FlowStream::finish`] wait at most
    /// this long, then stop the stages still running and fail with [`FlowError::Failed`]
    /// naming the first (its reason [`Shutdown`](crate::Reason::Shutdown)). A flow's stages
    /// end by themselves once their input has, so this only bounds the wait for one that does
    /// not (a thread slow to exit, say). It is an option of the flow you run:
    /// after a reduction, set it on the flow the reduction gives. Defaults to `10 s`.
    pub fn end_wait(mut self, wait: Duration) -> ScopedFlow<'env, S, T, M> {
        self.end_wait = wait;
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
        b: &mut Build<'_, 'env, M>,
        dispatcher: Option<&dyn Fn() -> Result<PartitionDispatcher<T>, FlowError>>,
    ) -> Result<Vec<ScopedSource<'env, T>>, FlowError> {
        let options = self.subscribe_options()?;
        let stages = self.stages.unwrap_or_else(cores);
        if stages == 0 {
            return Err(FlowError::invalid(
                "stages",
                "expected stages to be at least 1, got 0",
            ));
        }
        let no_sources = || FlowError::invalid("sources", "expected at least one source, got none");
        let sources = match self.sources {
            Origin::Iters(iters) if iters.is_empty() => return Err(no_sources()),
            Origin::Iters(iters) if self.ops.fused() || dispatcher.is_some() => {
                // The lanes pull the iterators themselves: no source stage, one channel
                // crossing less, a batch of the most a mapper stage had asked a source for.
                let pool = Arc::new(Mutex::new(Pool::new(iters)));
                let batch = options.get_max_demand();
                let mut outs = Vec::with_capacity(stages);
                for _ in 0..stages {
                    let lane = FusedLane::new(pool.clone(), self.ops.lane(), Some(batch));
                    outs.push(spawn_lane(b, lane, "map", dispatcher)?);
                }
                return Ok(outs);
            }
            Origin::Iters(iters) => {
                // No lanes: a source stage per iterator, pulling exactly what is asked.
                let mut outs = Vec::with_capacity(iters.len());
                for iter in iters {
                    let pool = Arc::new(Mutex::new(Pool::new(vec![iter])));
                    let lane = FusedLane::new(pool, Ops::Same(|items| items), None);
                    outs.push(spawn_lane(b, lane, "source", None)?);
                }
                outs
            }
            Origin::Stages(spawn) => spawn(b)?,
        };
        if sources.is_empty() {
            return Err(no_sources());
        }
        if let (FlowOps::Same { sources: same, .. }, None) = (&self.ops, dispatcher) {
            // No operation: the sources are the output (S is T).
            return Ok(same(sources));
        }
        let mut outs = Vec::with_capacity(stages);
        for _ in 0..stages {
            let mut builder = crate::producer_consumer(Lane {
                ops: self.ops.lane(),
                last: 0,
            })
            .name(b.name("map"));
            if let Some(make) = dispatcher {
                builder = builder.dispatcher(make()?);
            }
            for s in &sources {
                builder = builder.subscribe_to(s, options.clone())?;
            }
            let stage = builder.spawn_in(b.place())?;
            b.add(&stage);
            outs.push(crate::Upstream::source(&stage));
        }
        Ok(outs)
    }

    /// Partitions the events by `partitions`' key into reducer stages: every event of one key
    /// meets the others in the same stage. Continue with a reduction
    /// ([`reduce`](Partitioned::reduce), [`count_by_key`](Partitioned::count_by_key), ...).
    pub fn partition(self, partitions: ScopedPartitions<'env, T>) -> ScopedPartitioned<'env, T, M> {
        let mappers: reduce::Mappers<'env, T, M> = Box::new(move |combiner| match combiner {
            None => reduce::Mapped::Events(self.into_lanes()),
            Some(c) => reduce::Mapped::Pairs(self.combined(c).into_lanes()),
        });
        ScopedPartitioned::new(mappers, partitions)
    }

    /// The flow with `combiner` as its last operation (it may hold events back until the
    /// lane's turn ends).
    fn combined<U: Send + 'env>(self, combiner: Combiner<'env, T, U>) -> ScopedFlow<'env, S, U, M> {
        let op = combiner.op;
        let mut combined = self.then_batch(move |batch, out| op(batch, out));
        if let FlowOps::Chain(_, held) = &mut combined.ops {
            *held = combiner.flush;
        }
        combined
    }

    /// Partitions the events by `key` and counts each window's events by key: the word
    /// count's shape with its key written once (what [`partition`](Flow::partition) by a key
    /// and then [`count_by_key`](Partitioned::count_by_key) by the same key compute, in one
    /// call). `partitions` says how the keys are spread ([`Partitions::by_event`]: each key to
    /// the partition of its hash), over how many reducer stages, in which window.
    ///
    /// Where the window allows, each mapper stage first counts its batch by key (a
    /// *combiner*, as Spark and Flink call it) and sends one `(key, count)` pair per distinct
    /// key of the batch instead of every event: fewer events to hash into partitions, send
    /// and fold. In the global window without triggers, where only the final counts are
    /// seen, a lane that pulls its own iterators keeps counting over the batches of one turn
    /// (up to 16 before it looks at its messages) and sends its counts at the turn's end, or
    /// earlier once its table holds 65 536 keys (fewer where a key takes more than 24 bytes:
    /// 2 MB of entries): the fewer pairs the larger the span counted,
    /// with one batch of items in memory at a time. A drain or a stop comes between turns,
    /// so a lane never holds counts while it waits. (The mappers' and the reducers' tables
    /// hash each key with [`KeyHasher`], a fast hash from a random seed, not SipHash; each
    /// window is emitted as a standard `HashMap`.) The window allows it when what it emits
    /// does not depend on how many events arrive: global and periodic windows without
    /// [`Every`](Trigger::Every) triggers. With
    /// count windows, fixed windows (whose timestamps are read from the key) or `Every`
    /// triggers, each event is sent on as `(key, 1)`, and windows and triggers count events
    /// as they do after `partition`. Either way each window's counts are those of
    /// `partition` followed by `count_by_key`.
    ///
    /// # Examples
    ///
    /// ```
    /// use stageflow::flow::{Flow, Partitions};
    ///
    /// let lines = ["the cat", "the dog", "a cat and the bird"];
    /// let counts = Flow::from_iter(lines)
    ///     .stages(2)
    ///     .flat_map(|line: &'static str| line.split(' ')) // no Vec per line, no String per word
    ///     .count_by_key(|word: &&str| *word, Partitions::by_event().stages(2))
    ///     .departition_counts() // one map, the partitions' counts added
    ///     .collect()?;
    /// assert_eq!(counts[0].value["the"], 3);
    /// assert_eq!(counts[0].value["bird"], 1);
    /// # Ok::<(), stageflow::flow::FlowError>(())
    /// ```
    pub fn count_by_key<K>(
        self,
        key: impl Fn(&T) -> K + Send + Sync + 'env,
        partitions: ScopedPartitions<'env, K>,
    ) -> ScopedReduced<'env, (K, u64), KeyCounts<K>, HashMap<K, u64>, M>
    where
        K: Hash + Eq + Clone + Send + 'env,
    {
        // Counted by key in the lanes' tables where the window allows it, held over a turn
        // where only the final counts are seen.
        let combiner = match partitions.combiner_hold(std::mem::size_of::<(K, u64)>()) {
            Some(hold) => Combiner::table(hold, key, |e, _| *e.or_insert(0) += 1, |k, n| (k, n)),
            None => Combiner::each(move |e| (key(&e), 1)),
        };
        // The reducers count in tables hashed as the combiner's are, emitted as standard maps.
        self.combined(combiner)
            .partition(partitions.of_pairs())
            .reduce(KeyCounts::default, |counts: &mut KeyCounts<K>, (k, n)| {
                *counts.entry(k).or_insert(0) += n;
            })
            .map_state(|counts| counts.into_iter().collect())
    }

    /// The lanes, to be spawned with a dispatcher.
    fn into_lanes(self) -> reduce::Lanes<'env, T, M> {
        Box::new(
            move |b: &mut Build<'_, 'env, M>,
                  dispatcher: &dyn Fn() -> Result<PartitionDispatcher<T>, FlowError>| {
                self.spawn_lanes(b, Some(dispatcher))
            },
        )
    }

    /// Spawns the sources and lanes in `place`; returns them, their outputs, and the options
    /// to subscribe to those.
    #[allow(clippy::type_complexity)]
    fn build<'s>(
        self,
        place: M::Place<'s>,
    ) -> Result<
        (
            Build<'s, 'env, M>,
            Vec<ScopedSource<'env, T>>,
            SubscribeOptions,
        ),
        FlowError,
    >
    where
        'env: 's,
    {
        let options = self.subscribe_options()?;
        let mut b = Build::new(&self.name, place);
        let outs = self.spawn_lanes(&mut b, None)?;
        Ok((b, outs, options))
    }

    /// Runs the flow, in `place`, into `consumers`, each subscribed to every output stage
    /// (and keeping its value at the end, if `keep`).
    #[allow(clippy::type_complexity)]
    fn into_stages<'s, C: Consumer<In = T> + 'env>(
        self,
        place: M::Place<'s>,
        consumers: Vec<C>,
        keep: bool,
    ) -> Result<
        (
            Build<'s, 'env, M>,
            Vec<crate::ScopedStage<'env, C, crate::ConsumerRole>>,
        ),
        FlowError,
    >
    where
        'env: 's,
    {
        if consumers.is_empty() {
            return Err(FlowError::invalid(
                "consumers",
                "expected at least one consumer, got none",
            ));
        }
        let (mut b, outs, options) = self.build(place)?;
        let mut stages = Vec::with_capacity(consumers.len());
        for consumer in consumers {
            let mut builder = crate::consumer(consumer).name(b.name("consumer"));
            if keep {
                builder = builder.keep_state();
            }
            for o in &outs {
                builder = builder.subscribe_to(o, options.clone())?;
            }
            let stage = builder.spawn_in(b.place())?;
            b.add(&stage);
            stages.push(stage);
        }
        b.release();
        Ok((b, stages))
    }
}

impl<'env, S: Send + 'env, T: Send + 'env> ScopedFlow<'env, S, T, Scoped<'env>> {
    /// Runs the flow to its end on threads of `scope` and collects its output (into a
    /// consumer stage: [`Flow::collect`] reads it on the calling thread instead).
    ///
    /// # Errors
    ///
    /// As [`Flow::collect`].
    pub fn collect_in<'s>(
        self,
        scope: &'s std::thread::Scope<'s, 'env>,
    ) -> Result<Vec<T>, FlowError> {
        let end_wait = self.end_wait;
        let (b, sinks) =
            self.into_stages(InScope::new(scope), vec![crate::fns::Collect::new()], true)?;
        settle(&b.started, end_wait)?;
        Ok(sinks
            .first()
            .and_then(|sink| sink.join_state().1)
            .map(crate::fns::Collect::into_vec)
            .unwrap_or_default())
    }

    /// Runs the flow on threads of `scope` and returns its output as a blocking iterator on
    /// the scope's own thread ([`Flow::stream`] in a scope; [`collect_in`](ScopedFlow::collect_in)
    /// collects it into a consumer stage instead). The iterator stays in the scope; dropping
    /// it stops the flow.
    ///
    /// # Errors
    ///
    /// As [`Flow::stream`].
    ///
    /// # Examples
    ///
    /// ```
    /// use stageflow::flow::ScopedFlow;
    ///
    /// let lines = vec![String::from("to be or not"), String::from("to be")];
    /// let first: Vec<&str> = std::thread::scope(|scope| {
    ///     let words = ScopedFlow::from_borrowed(lines.iter().map(String::as_str))
    ///         .flat_map(|line: &str| line.split(' '))
    ///         .stream_in(scope)?;
    ///     Ok::<_, stageflow::flow::FlowError>(words.take(3).collect())
    /// })?;
    /// assert_eq!(first.len(), 3);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// It cannot be returned out of the scope (its stages would wait for it, and the scope for
    /// them):
    ///
    /// ```compile_fail
    /// use stageflow::flow::ScopedFlow;
    ///
    /// let lines = vec![String::from("to be or not")];
    /// let words = std::thread::scope(|scope| {
    ///     ScopedFlow::from_borrowed(lines.iter().map(String::as_str))
    ///         .flat_map(|line: &str| line.split(' '))
    ///         .stream_in(scope)
    ///         .unwrap()
    /// });
    /// let _words: Vec<&str> = words.collect();
    /// ```
    pub fn stream_in<'s>(
        self,
        scope: &'s std::thread::Scope<'s, 'env>,
    ) -> Result<ScopedFlowStream<'s, 'env, T>, FlowError> {
        let end_wait = self.end_wait;
        let (mut b, outs, options) = self.build(InScope::new(scope))?;
        let stream = stream_of(&outs, &options, |o| {
            crate::stream_scoped(scope, o, options.clone())
        })?;
        b.release();
        Ok(ScopedFlowStream {
            stream,
            started: b.started,
            end_wait,
        })
    }

    /// Runs the flow to its end on threads of `scope`, dropping its output.
    ///
    /// # Errors
    ///
    /// As [`Flow::run`].
    pub fn run_in<'s>(self, scope: &'s std::thread::Scope<'s, 'env>) -> Result<(), FlowError> {
        let end_wait = self.end_wait;
        let (b, _) = self.into_stages(
            InScope::new(scope),
            vec![Discard(std::marker::PhantomData)],
            false,
        )?;
        settle(&b.started, end_wait)
    }
}

impl<S: Send + 'static, T: Send + 'static> Flow<S, T> {
    /// Runs the flow and returns its output as a blocking iterator on this thread (Flow's
    /// `Enum` functions on a flow). Dropping the iterator stops the flow.
    ///
    /// # Errors
    ///
    /// An invalid option ([`FlowError::InvalidOption`] naming it), or a stage that could not
    /// start or subscribe.
    pub fn stream(self) -> Result<FlowStream<T>, FlowError> {
        let end_wait = self.end_wait;
        let (mut b, outs, options) = self.build(Unscoped)?;
        let stream = stream_of(&outs, &options, |o| crate::stream(o, options.clone()))?;
        b.release();
        Ok(FlowStream {
            stream,
            started: b.started,
            end_wait,
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
    pub fn into_consumer<C: Consumer<In = T> + 'static>(
        self,
        consumer: C,
    ) -> Result<RunningFlow, FlowError> {
        self.into_consumers([consumer])
    }

    /// Runs the flow into several consumer stages, each subscribed to every output stage;
    /// the output stages share their events among them by demand.
    ///
    /// # Errors
    ///
    /// As [`stream`](Flow::stream), and [`FlowError::InvalidOption`] naming `consumers` if
    /// there is none.
    pub fn into_consumers<C: Consumer<In = T> + 'static>(
        self,
        consumers: impl IntoIterator<Item = C>,
    ) -> Result<RunningFlow, FlowError> {
        let (b, _) = self.into_stages(Unscoped, consumers.into_iter().collect(), false)?;
        Ok(RunningFlow { started: b.started })
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
        let end_wait = self.end_wait;
        let running = self.start()?;
        settle(&running.started, end_wait)
    }
}

/// Spawns a lane that pulls its own iterators, named for `role`, accumulating demand until
/// the flow is whole.
fn spawn_lane<'env, S: Send + 'env, T: Send + 'env, M: Mode<'env>>(
    b: &mut Build<'_, 'env, M>,
    lane: FusedLane<'env, S, T>,
    role: &'static str,
    dispatcher: Option<&dyn Fn() -> Result<PartitionDispatcher<T>, FlowError>>,
) -> Result<ScopedSource<'env, T>, FlowError> {
    // A batch may make more events than were asked for: they wait in the buffer, at most a
    // batch's worth, for the next ask.
    let mut builder = crate::producer(lane)
        .name(b.name(role))
        .demand(ProducerDemand::Accumulate)
        .buffer_unbounded();
    if let Some(make) = dispatcher {
        builder = builder.dispatcher(make()?);
    }
    let stage = builder.spawn_in(b.place())?;
    b.add(&stage);
    let handle = stage.clone();
    b.on_release(move || {
        let _ = handle.set_demand(ProducerDemand::Forward);
    });
    Ok(crate::Upstream::source(&stage))
}

/// A consumer that drops what it receives.
struct Discard<T>(std::marker::PhantomData<fn(T)>);

impl<T: Send> Consumer for Discard<T> {
    type In = T;
    type Message = ();

    fn handle_events(&mut self, events: Events<'_, T>, _: &mut ConsumerContext<'_>) {
        drop(events);
    }
}
