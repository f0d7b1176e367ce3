//! Broadway's shape on threads: producers → processors → batchers → batch processors, with
//! acknowledgements, failed messages, partitioning, rate limits and a graceful shutdown.
//!
//! A pipeline is a [`Topology`](crate::Topology) of ordinary stages the [`builder`] wires for
//! you. Its producers emit [`Message`]s (data, metadata, a [`Status`] and an
//! [`Acknowledger`]); `concurrency` processors run `handle_message` on each, and zero or more
//! named batchers group the results into [`Batch`]es for `handle_batch`. Every message that
//! goes through is **acknowledged exactly once**, successful or failed, **in groups**: one
//! `ack` call per acknowledger per batch (or per batch of events a processor handled, without
//! batchers). A handler that returns an error or panics fails that message only (or that
//! batch): it goes through `handle_failed` and is acknowledged as failed; the pipeline runs
//! on. This module uses nothing but the crate's public API.
//!
//! ```
//! use std::sync::atomic::{AtomicU64, Ordering};
//! use std::sync::Arc;
//! use std::time::Duration;
//! use stageflow::pipeline::{self, Acked, BatcherOptions, Message, ProcessorOptions};
//!
//! // The acknowledger a queue's client would be: here, it counts.
//! let acked = Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
//! let a = acked.clone();
//! let ack = Arc::new(move |ok: Vec<Acked>, failed: Vec<Acked>| {
//!     a.0.fetch_add(ok.len() as u64, Ordering::Relaxed);
//!     a.1.fetch_add(failed.len() as u64, Ordering::Relaxed);
//! });
//!
//! let p = pipeline::builder("words")
//!     .acknowledger(ack) // told of every message set with `pipeline_acknowledger(id)`
//!     .producers(1, |_| {
//!         let words = ["apple", "", "banana", "cherry"].into_iter().enumerate();
//!         stageflow::from_iter(words.map(|(i, w)| {
//!             Message::new(w.to_owned()).pipeline_acknowledger(i as u64)
//!         }))
//!     })
//!     .processors(ProcessorOptions::new().concurrency(2), |m: &mut Message<String>| {
//!         if m.data.is_empty() {
//!             return Err("empty word"); // this message fails, the others go on
//!         }
//!         Ok(m.data.to_uppercase())
//!     })
//!     .batcher(
//!         "print",
//!         BatcherOptions::new().batch_size(2).batch_timeout(Duration::from_millis(50)),
//!         |batch: &mut pipeline::Batch<String>| {
//!             let words: Vec<&str> = batch.messages.iter().map(|m| m.data.as_str()).collect();
//!             println!("Got batch of {}: {words:?}", words.len());
//!             Ok::<(), String>(())
//!         },
//!     )
//!     .start()?;
//! p.join(); // the producer finishes, and the pipeline after it
//! assert_eq!(acked.0.load(Ordering::Relaxed), 3);
//! assert_eq!(acked.1.load(Ordering::Relaxed), 1);
//! assert_eq!(p.counters().unacknowledged(), 0);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # The shape
//!
//! | layer | threads | what runs there | Broadway's default, and ours |
//! |---|---|---|---|
//! | producers | `concurrency` (1) | your [`Producer`](crate::Producer) of `Message<I>` | the same |
//! | processors | [`ProcessorOptions::concurrency`] | `handle_message`, `max_demand` 10 / `min_demand` 5 on each producer | Broadway: schedulers × 2; here one per CPU (a processor is an OS thread, not a BEAM process: see the option) |
//! | batchers | one per name | grouping by [`BatchSize`] (100) or `batch_timeout` (1 s); `max_demand` the batch size on each processor | the same |
//! | batch processors | [`BatcherOptions::concurrency`] (1) per batcher | `handle_batch`, `max_demand` 1 / `min_demand` 0 | the same; with one batch processor and no `partition_by`, `handle_batch` runs on the batcher's own thread (see below) |
//!
//! Types are checked end to end: producers emit `Message<I>`, `handle_message` turns a
//! `Message<I>` into a `Message<O>` (keeping metadata, acknowledger and batcher), and every
//! batcher's handler takes `Batch<O>`.
//!
//! Where `O` is `I` (the handler returns data of the type it was given, as most do), a
//! processor replaces each message's data where it lies and hands its batch on in the
//! allocation it came in; a handler that changes the type costs a move of each message into
//! a new batch (in place, bench row m100's processors did 44 % fewer instructions:
//! `BENCHMARKS.md`, stop 26).
//!
//! # Failures and acknowledgements
//!
//! A message fails when `handle_message` returns `Err`, panics, or calls [`Message::fail`];
//! a batch's messages fail when `handle_batch` returns `Err` or panics (or one by one with
//! [`Message::fail`]). Failed messages go to the layer's `handle_failed` hook, then to their
//! acknowledger's failed list. Successful ones are acknowledged after `handle_batch` (or after
//! `handle_message`, without batchers). [`Message::ack_immediately`] acknowledges one at once
//! and never again. There are no retries: as in Broadway, redelivery is the source's job.
//!
//! A message finds its acknowledger one of three ways, and is acknowledged in groups the same
//! either way:
//!
//! - [`Message::pipeline_acknowledger`]`(id)`: the pipeline's own, set with
//!   [`Builder::acknowledger`]. The message carries its id and nothing else; the pipeline's
//!   processors and batch processors hold the acknowledger. The cheapest, and what a
//!   pipeline whose messages all go back to one place (a queue, a consumer group) needs.
//! - [`Message::acknowledger`]`(arc, id)`: a clone of an `Arc`, whose shared count the
//!   producer increments and the acknowledging stage decrements for every message, on a
//!   cache line the two cores then pass back and forth. For messages of several
//!   acknowledgers made at run time.
//! - [`Message::static_acknowledger`]`(ack, id)`: one that lives as long as the program (a
//!   `static`, or one leaked once), with no count to update.
//!
//! Measured on 2 cores (`BENCHMARKS.md`, "stop 24": rows m100 and ma, the pipeline of the
//! table below, two alternating runs of 5 rounds), CPU per message: 113–119 ns (m100) and
//! 99–125 ns (ma) with the pipeline's acknowledger, 143–152 ns and 145–147 ns with an `Arc`
//! per message; messages/s 15.0–16.5 M and 15.3–19.4 M against 12.2–13.4 M and 12.5–12.7 M.
//!
//! # Batching
//!
//! A batch is emitted when it reaches its size, or when `batch_timeout` has passed since its
//! first message; it is never empty. A message goes to the batcher it names with
//! [`Message::put_batcher`], or to the first batcher. When its processors have all ended
//! (the producers finished, or a shutdown), a batcher flushes what it holds.
//!
//! # Ordering
//!
//! [`ProcessorOptions::partition_by`] sends messages of one key to one processor, in order;
//! [`BatcherOptions::partition_by`] makes batches per partition, each handled by its own batch
//! processor, in order. With both on the same key, per-key order holds end to end.
//!
//! # Sizing demand: what throughput costs
//!
//! Demand is the knob. Each processor asks its producers for `max_demand` messages and asks
//! again when half are handled ([`ProcessorOptions::max_demand`], 10 by default, as in
//! Broadway). On threads, every ask and every delivery to an idle processor is a wake-up (a
//! futex call and a context switch: microseconds, where a BEAM message costs a fraction of
//! one), so a processor that takes 5 messages per wake-up spends most of its time being woken.
//!
//! So by default a processor's demand adapts ([`ProcessorOptions::adaptive_demand`], a
//! stageflow extension): each time it asks with its inbox empty (it would wait for what it
//! asks), its `max_demand` and `min_demand` double, up to ten times where they started (100 /
//! 50 at the defaults); each time it asks with its inbox full, they halve, down to where they
//! started. Measured on 2 cores (`BENCHMARKS.md`, rows m, ma, m100: producer → 8 processors →
//! batcher of 100 → acknowledger, 1 M messages, medians of 5 or 7 rounds, several runs):
//!
//! | processors' demand | messages/s | CPU per message | against a hand-written 10 / 5 |
//! |---|---|---|---|
//! | 10 / 5, fixed (Broadway's; [`ProcessorOptions::fixed_demand`]) | 3.6–4.4 M | 432–550 ns | 0.52–0.61× |
//! | 10 / 5, adaptive up to 100 (the default) | 10.9–13.3 M | 148–159 ns | 1.49–2.02× |
//! | 100 / 50, fixed | 11.2–14.1 M | 137–165 ns | |
//!
//! (These rows give each message an `Arc` clone of the acknowledger. With the pipeline's own,
//! as above, a handler that keeps the data's type and the cheaper processors and batcher of
//! stop 26, the default ran 25.0–25.6 M messages/s at 75–79 ns, 4.0–4.2× the hand-written
//! version, and 100 / 50 fixed 24.1–25.9 M at 76–79 ns; since stop 29, whose batchers give
//! the producers' buffers back, the default runs 29.6–38.7 M at 50–66 ns and 100 / 50
//! fixed 36.6–39.2 M at 50–53 ns, 0.75–0.78× the hand-written 100 / 50.) Once grown, an
//! adaptive processor asks in whole chunks ([`SubscribeOptions::adaptive_demand`](crate::SubscribeOptions::adaptive_demand)):
//! 50 at a time at 100 / 50, and it and the batcher handle batches of 50, as with a fixed
//! 100 / 50; before, growth left it asking 55 to 95 and handling 37 messages a batch.
//!
//! A user's orders pipeline (4 processors, batches of 100) took 13.6–24.7× the time of a
//! hand-written version at fixed 10 / 5 and 3.0–3.8× with `max_demand(100)`. How to size it:
//!
//! - **Cheap handlers** (microseconds a message): the default grows to 100; raise
//!   `max_demand` (the limit follows, ten times it) until a processor's batch takes well over a
//!   wake-up, 100–1000; memory in flight is at most the limit per processor per producer. On
//!   2 cores, 8 processors with a handler of a few nanoseconds ran 36–39 M messages/s at a
//!   fixed 100 (`BENCHMARKS.md`, stop 29); in stop 28, when they ran 26 M at 100, 400 and
//!   1000 gave 27–31 M: past a few hundred, the one batcher's work a message is the limit,
//!   not the wake-ups.
//! - **Handlers that wait** (an HTTP call, a database write): demand matters less than
//!   [`ProcessorOptions::concurrency`]; keep demand small and fixed
//!   ([`ProcessorOptions::fixed_demand`]) so that slow messages do not queue behind each other
//!   in one processor while others idle.
//! - **Ordering or fairness** across processors (`partition_by`, skewed keys): smaller, fixed
//!   demand spreads work more evenly.
//! - **Processors past the core count** pay for handlers that never wait: processors with
//!   nothing to do wait for the producer and the batcher, and 50 of them waiting on 2 cores
//!   pass the cores among themselves (most of the pipeline's context switches are theirs).
//!   On 2 cores, 100 / 50 fixed ran 36–39 M messages/s with 8 processors and 27–31 M with
//!   50, where 50 hand-written workers sharing one queue kept their speed (`BENCHMARKS.md`,
//!   stops 27–29, row m100x50; one queue shared by the processors, tried in stop 28, did
//!   not close the gap). Give a pipeline as many processors as its handlers have waits to
//!   overlap, not more.
//!
//! The batcher's demand on each processor is the batch size by default
//! ([`BatcherOptions::max_demand`]).
//!
//! **On two cores, expect two speeds.** Every message crosses two single threads, the
//! producer and the batcher. Where the scheduler puts both on one core they take turns and
//! the processors wait for them: the default pipeline above ran 20–22 M messages/s with the
//! two on separate cores and 12–17 M with both pinned to one, and unpinned runs land on
//! either (`BENCHMARKS.md`, stop 25, before stop 26 made each message cheaper). Pinning threads is the application's call (measured on
//! 2 cores only).
//!
//! # Rate limiting
//!
//! [`WithProducers::rate_limiting`]: at most N messages per interval leave the producers, all
//! of them together, changeable while the pipeline runs ([`Pipeline::update_rate_limiting`]).
//! Broadway holds demand in its producers; here processors draw their demand from a shared
//! window (demand asked and not yet delivered counts against the next interval), so any
//! stageflow producer is rate limited unchanged.
//!
//! # Shutting down
//!
//! [`Pipeline::shutdown`] drains the pipeline ([`Topology::drain`](crate::Topology::drain)):
//! the producers stop producing and deliver what they hold, every message in flight is
//! processed, batched and acknowledged, then every stage ends, within the shutdown timeout
//! (30 s, Broadway's `:shutdown`). What is still in flight at the timeout is stopped and
//! reported ([`ShutdownReport::unacknowledged`]), never dropped silently. Once a shutdown has
//! begun, a producer that crashes is not restarted. A finite producer that finishes ends the
//! pipeline the same way: [`Pipeline::join`].
//!
//! # Restarts
//!
//! The producers and processors run in a supervised [`Group`](crate::supervise::Group)
//! ([`Pipeline::group`]), as Broadway's run under its supervisors. A producer that crashes
//! (a panic, or [`Context::stop`](crate::Context::stop) with an error) is started again from
//! its factory, and the processors, which stay up, subscribe to the new one (Broadway's
//! processors resubscribe); the other producers never stop. What the crashed producer held
//! in its buffer is counted as discarded, and its messages are never acknowledged, so they
//! come back by the source's own rules (a queue redelivers what was not acknowledged).
//! Messages already with the processors go on as usual. A producer handed over by value
//! ([`Builder::producer_once`], for one that cannot be made again) cannot be restarted: its
//! crash is logged at warn level and ends the pipeline as its finishing would.
//!
//! A producer that finishes normally is not restarted (it is a transient child): once all
//! have finished, the group finishes the processors, and the pipeline ends (fan-in). More
//! than 3 restarts within 5 s ([`Builder::restart_intensity`], Broadway's `max_restarts`
//! and `max_seconds`) end the pipeline: the group stops, with an error naming the producer
//! and its failure, and the batchers finish what they hold. [`Builder::restart_backoff`]
//! sets a wait before each restart. Restarts are logged at warn level and counted in
//! [`ProducerCounters::restarts`]. Processors, batchers and batch processors are not
//! restarted: their handlers' errors and panics fail one message or batch, never the stage.
//!
//! # Where this differs from Broadway
//!
//! - **Only producers restart** (see above): a processor or batcher thread that ended is not
//!   started again (Broadway restarts them too; here their handlers cannot crash them).
//! - **Acknowledgers see ids, not data**: [`Acked`] carries the id the producer gave, the
//!   metadata and the status (the data's type changes along the pipeline).
//! - **Processor concurrency** defaults to one thread per CPU, not schedulers × 2.
//! - **One batch processor runs on its batcher's thread.** A stageflow producer-consumer takes
//!   events only while its consumers have demand, so a batcher in front of a single batch
//!   processor (demand 1 / 0) waits while each batch is handled anyway; running `handle_batch` on
//!   the batcher's thread saves a thread and a hand-off per batch and changes nothing else
//!   (batches, order, acknowledgements, counters, shutdown are the same). With `concurrency` above
//!   1 or `partition_by`, batch processors are their own stages, as in Broadway.
//! - **Rate limiting** is applied to the processors' demand (see above).
//! - **Testing**: [`Pipeline::test_messages`] pushes messages into the processors directly
//!   (Broadway pushes them through its producer); use a [`DummyProducer`] to have a pipeline
//!   that runs until it is shut down.

mod batch;
mod batcher;
mod builder;
mod counters;
mod error;
mod handle;
mod message;
mod metadata;
mod metrics;
mod processor;
mod rate;
mod testing;

pub use batch::{Batch, BatchInfo, BatchSize, Trigger, WeightFn};
pub use builder::{
    builder, BatcherOptions, Builder, ProcessorOptions, WithProcessors, WithProducers,
};
pub use counters::{LayerCounters, PipelineCounters, ProducerCounters};
pub use error::PipelineError;
pub use handle::{AckReport, Pipeline, ShutdownReport, TestAcks};
pub use message::{Acked, Acknowledger, Message, Status};
pub use metadata::Metadata;
pub use metrics::PipelineMetrics;
pub use rate::RateLimit;
pub use testing::DummyProducer;
