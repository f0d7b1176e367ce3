//! Demand-driven, back-pressured pipelines on OS threads: Elixir's GenStage for synchronous
//! Rust.
//!
//! A pipeline is made of *stages*: producers, producer-consumers and consumers, each running on
//! its own thread. Consumers ask their producers for events (*demand*); a producer never sends
//! more than it was asked for, so no queue grows without bound and a fast source cannot drown
//! a slow sink. Events move in batches over bounded `crossbeam-channel` channels; demand flows
//! back the same way.
//!
//! # Hello, pipeline
//!
//! ```
//! use stageflow::{Consumer, ConsumerContext, Context, Events, Producer, SubscribeOptions};
//!
//! /// Emits 0, 1, 2, ... up to `limit`, then finishes.
//! struct Counter {
//!     next: u64,
//!     limit: u64,
//! }
//!
//! impl Producer for Counter {
//!     type Out = u64;
//!     type Message = ();
//!
//!     fn handle_demand(&mut self, demand: usize, ctx: &mut Context<'_, u64>) {
//!         let end = (self.next + demand as u64).min(self.limit);
//!         ctx.emit_all(self.next..end);
//!         self.next = end;
//!         if self.next == self.limit {
//!             ctx.finish(); // deliver what is buffered, then end
//!         }
//!     }
//! }
//!
//! /// Adds up what it receives.
//! struct Sum(u64);
//!
//! impl Consumer for Sum {
//!     type In = u64;
//!     type Message = ();
//!
//!     fn handle_events(&mut self, events: Events<'_, u64>, _: &mut ConsumerContext<'_>) {
//!         self.0 += events.sum::<u64>();
//!     }
//! }
//!
//! let producer = stageflow::producer(Counter { next: 0, limit: 10_000 }).spawn()?;
//! let consumer = stageflow::consumer(Sum(0))
//!     .subscribe_to(&producer, SubscribeOptions::new().max_demand(1000))?
//!     .spawn()?;
//! // The producer finishes; the consumer's (permanent) subscription ends, and so does it.
//! assert_eq!(consumer.join(), stageflow::Reason::Normal);
//! assert_eq!(consumer.counters().events_in, 10_000);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Stages
//!
//! Implement one trait per stage: [`Producer`] (`handle_demand`), [`ProducerConsumer`] or
//! [`Consumer`] (`handle_events`). Every callback gets a [`Context`] to emit events, end the
//! stage, set timers, reply to calls, and ask or cancel. Build the stage with [`producer`],
//! [`producer_consumer`] or [`consumer`], set options on the [`StageBuilder`], and
//! [`spawn`](StageBuilder::spawn) it: you get a [`Stage`] handle, typed by your stage, to
//! subscribe, send it messages, read its [`Counters`], stop it and join it.
//!
//! The compiler checks what it can: a consumer of `u64` can only subscribe to a producer of
//! `u64`, only producers and producer-consumers can be subscribed to, and a stage's messages
//! have its `Message` type. What depends on values is checked when a stage is built or
//! subscribes, and fails with an error naming the option: demand bounds, buffer and inbox
//! sizes, a partition that does not exist, a broadcast [`Selector`] made for another event
//! type (options carry selectors of any type, so that one `SubscribeOptions` type serves
//! every producer). Events are moved from stage to stage, never cloned (a broadcast clones
//! one per extra consumer). For the simple cases, the [`fns`] module makes stages from
//! closures (`Map`, `FlatMap`, `Filter`, `ForEach`, `Batches`, `Generate`, and `Fold` and
//! `Collect`, whose result comes back from [`Stage::join_result`]).
//!
//! # The credit protocol
//!
//! Each subscription has a `max_demand` (default 1000) and a `min_demand` (default
//! `max_demand / 2`). The consumer asks `max_demand` at first; it cuts each incoming message
//! into batches of `max_demand - min_demand` events, and after handling a batch, if the demand
//! still outstanding is `min_demand` or less, it asks for the difference up to `max_demand`.
//! This is GenStage's rule, number for number; the [`protocol`] page writes the rules out as
//! MUST sentences and says exactly which queues are bounded and how.
//!
//! A producer emits in `handle_demand`; events beyond the demand go to its buffer
//! ([`StageBuilder::buffer_size`], default 10 000 for producers; [`BufferKeep`] says which
//! events a full buffer drops, and every drop is counted and logged at warn level). Its
//! [`Dispatcher`](dispatcher::Dispatcher) decides which consumer gets which events; the default
//! [`DemandDispatcher`](dispatcher::DemandDispatcher) gives each event to the consumer with the
//! most outstanding demand.
//!
//! A producer-consumer asks upstream at once, but handles inbound events only while its own
//! consumers have demand; what a batch produces beyond that demand waits in its buffer.
//!
//! # Iterators in, iterators out
//!
//! [`from_iter`] makes a producer of any iterator (it pulls exactly what is asked and finishes
//! with the iterator); [`stream`] consumes one or more producers on the calling thread as a
//! blocking iterator (dropping it cancels its subscriptions). Together they put a pipeline in
//! the middle of an ordinary iterator chain:
//!
//! ```
//! use stageflow::SubscribeOptions;
//!
//! let words = stageflow::from_iter(["back", "pressure", "works"]).spawn()?;
//! let lengths: Vec<usize> = stageflow::stream(&words, SubscribeOptions::new().max_demand(2))?
//!     .map(str::len)
//!     .collect();
//! assert_eq!(lengths, vec![4, 8, 5]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Stages that borrow: pipelines in a scope
//!
//! Stages are threads, and threads of a [`std::thread::scope`] may borrow from the caller's
//! stack. [`ScopedBuilder::spawn_scoped`] starts a stage on one, and
//! [`ScopedBuilder::chain_in`] a whole [`Chain`]: their events, messages and values may then
//! hold references (`&str` words of lines the caller owns, say), with nothing copied,
//! leaked or made `'static`. The scope returns once every stage in it has ended; results come
//! back through [`join_result`](ScopedStage::join_result), or are read on the scope's own
//! thread as an iterator ([`stream_scoped`]). A word count over borrowed lines,
//! each of two lanes folding a map keyed by `&str`:
//!
//! ```
//! use std::collections::HashMap;
//! use stageflow::fns::Fold;
//!
//! let lines: Vec<String> = vec!["to be or not".into(), "to be".into()];
//! let lanes = std::thread::scope(|scope| -> Result<Vec<_>, Box<dyn std::error::Error>> {
//!     let sinks = stageflow::from_iter(lines.iter().map(String::as_str))
//!         .chain_in(scope)
//!         .parallel(2)
//!         .to(|_lane| {
//!             stageflow::consumer(Fold::new(HashMap::new(), |mut counts, line: &str| {
//!                 for word in line.split(' ') {
//!                     *counts.entry(word).or_insert(0u64) += 1;
//!                 }
//!                 counts
//!             }))
//!             .keep_state()
//!         })
//!         .run_sinks()?;
//!     let mut lanes = Vec::new();
//!     for sink in sinks {
//!         lanes.push(sink.join_result()?);
//!     }
//!     Ok(lanes)
//! })?;
//! let mut counts: HashMap<&str, u64> = HashMap::new();
//! for lane in lanes {
//!     for (word, n) in lane {
//!         *counts.entry(word).or_insert(0) += n;
//!     }
//! }
//! assert_eq!((counts["to"], counts["be"], counts["not"]), (2, 2, 1));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! What could outlive the scope does not exist for a stage in one: it has no untyped
//! [`StageRef`] (so no [`Topology`] and no observer), and a mailbox it mints
//! ([`Context::mailbox`]) refuses every message; its handle's `cast` and `call` work. Flows
//! run in a scope too: [`flow::ScopedFlow`].
//!
//! # Topologies
//!
//! A producer can feed many consumers through its [`Dispatcher`](dispatcher::Dispatcher):
//! each event to one consumer (the default), to every consumer, or to the consumer of its
//! partition (see the [`dispatcher`] module). A consumer can subscribe to many producers, at
//! build time or while it runs ([`Stage::subscribe_to`], [`Stage::cancel`]). A consumer can take
//! its demand into its own hands ([`DemandMode::Manual`], [`Context::ask`], [`Stage::ask`]); a
//! producer can hold demand back until every consumer is there ([`ProducerDemand`]).
//! [`Supervisor`] runs one worker thread per event with bounded concurrency (GenStage's
//! ConsumerSupervisor); [`supervise::Group`] restarts the stages of a pipeline when they
//! crash (OTP's supervisors: see [Ending, failures and panics](#ending-failures-and-panics)).
//!
//! # Blocking sources
//!
//! A producer whose source blocks (a socket, a file, an HTTP body) reads it only while it has
//! demand: read at most what `handle_demand` asks for, keep the unmet demand, and let the
//! stage's loop run between chunks of reads with a zero-delay timer, so asks, calls and stops
//! are seen, and stop when [`Context::is_finishing`] says a drain has begun. Read a chunk per
//! turn, not one item: a turn costs about as much as handing a
//! batch downstream, and one line per turn runs three times slower than `from_iter` over the
//! same lines.
//! When demand runs out nothing is read, and the source's own flow control (TCP's window, say)
//! pushes back. [`Context::is_stop_requested`] tells a long read to give up early.
//!
//! ```
//! use std::io::BufRead;
//! use std::time::Duration;
//! use stageflow::{Context, Producer, SubscribeOptions};
//!
//! /// Emits the lines of a reader: per turn of the stage's loop, as many as are asked for
//! /// (up to a chunk, so the loop comes back often enough to see asks, calls and stops).
//! struct Lines<R> {
//!     reader: R,
//!     demand: usize,
//! }
//!
//! enum Msg {
//!     Read,
//! }
//!
//! const CHUNK: usize = 256;
//!
//! impl<R: BufRead + Send + 'static> Producer for Lines<R> {
//!     type Out = String;
//!     type Message = Msg;
//!
//!     fn handle_demand(&mut self, demand: usize, ctx: &mut Context<'_, String, Msg>) {
//!         if self.demand == 0 {
//!             ctx.send_after(Msg::Read, Duration::ZERO);
//!         }
//!         self.demand += demand;
//!     }
//!
//!     fn handle_message(&mut self, Msg::Read: Msg, ctx: &mut Context<'_, String, Msg>) {
//!         if ctx.is_finishing() {
//!             return; // asked to finish (a drain): stop reading, so the stage can end
//!         }
//!         for _ in 0..self.demand.min(CHUNK) {
//!             let mut line = String::new();
//!             match self.reader.read_line(&mut line) {
//!                 // The end (a real source would report errors).
//!                 Ok(0) | Err(_) => return ctx.finish(),
//!                 Ok(_) => ctx.emit(line.trim_end().to_owned()),
//!             }
//!             self.demand -= 1;
//!             if ctx.is_stop_requested() {
//!                 return;
//!             }
//!         }
//!         if self.demand > 0 {
//!             ctx.send_after(Msg::Read, Duration::ZERO);
//!         }
//!     }
//! }
//!
//! let text = std::io::Cursor::new("one\ntwo\nthree\n");
//! let lines = stageflow::producer(Lines { reader: text, demand: 0 }).spawn()?;
//! let got: Vec<String> = stageflow::stream(&lines, SubscribeOptions::new().max_demand(2))?.collect();
//! assert_eq!(got, ["one", "two", "three"]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Reading HTTP streams
//!
//! The `http` module (feature `http`, on by default) applies the same rule to HTTP: a
//! streaming response body is read on a thread the producer owns, **only while its consumers
//! have demand**, so a slow pipeline holds the server back through TCP instead of queueing.
//! It cuts the body into frames (NDJSON, length-prefixed, Server-Sent Events, lines), decodes
//! them into `serde_json::Value`s or your own types, reconnects by the providers' backoff
//! rules, and counts what it sees. `http::poll` fetches pages from a cursor instead.
//!
//! ```
//! # #[cfg(not(feature = "http"))] fn main() {}
//! # #[cfg(feature = "http")] fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::io::{Read, Write};
//! use stageflow::SubscribeOptions;
//!
//! // A local server that streams three JSON lines and a heartbeat, then ends.
//! let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
//! let url = format!("http://{}/stream", listener.local_addr()?);
//! let server = std::thread::spawn(move || {
//!     let (mut socket, _) = listener.accept().unwrap();
//!     let _ = socket.read(&mut [0; 1024]); // the request
//!     let body = "{\"n\":1}\r\n\r\n{\"n\":2}\r\n{\"n\":3}\r\n";
//!     let head = "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n";
//!     socket.write_all(format!("{head}{body}").as_bytes()).unwrap();
//! });
//!
//! #[derive(serde::Deserialize)]
//! struct Event {
//!     n: u32,
//! }
//!
//! let events = stageflow::http::stream(url)
//!     .json::<Event>()
//!     .finish_at_end(true) // a finite body: finish at its end instead of reconnecting
//!     .build()?;
//! let stats = events.stats();
//! let producer = stageflow::producer(events).spawn()?;
//! let got: Vec<u32> = stageflow::stream(&producer, SubscribeOptions::new().max_demand(2))?
//!     .map(|e| e.n)
//!     .collect();
//! assert_eq!(got, [1, 2, 3]);
//! assert_eq!(stats.snapshot().heartbeats, 1);
//! server.join().unwrap();
//! # Ok(())
//! # }
//! ```
//!
//! # Files, readers, channels and signals
//!
//! The `io` module (feature `io`, off by default) holds sources for the process's edges, each
//! reading only while its consumers have demand, a batch per turn: `io::reader` cuts any
//! `BufRead` into lines, delimited records or fixed-size chunks; `io::tail` follows a file as
//! `tail -F` does (polled after its end on a timer, reopened when rotated, read again from its
//! start when truncated) and reports the offset a restart resumes from; `io::from_channel`
//! takes what a `crossbeam_channel::Receiver` yields. Invalid UTF-8 and over-long records are
//! counted and skipped, repaired or fatal, by option. `io::shutdown_on_signals` (unix) drains
//! a [`Topology`] on the first SIGINT or SIGTERM, stops it on the second, and returns the
//! report.
//!
//! ```
//! # #[cfg(not(feature = "io"))] fn main() {}
//! # #[cfg(feature = "io")] fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use stageflow::fns::ForEach;
//! use stageflow::{SubscribeOptions, Topology};
//!
//! let path = std::env::temp_dir().join(format!("stageflow-guide-{}.log", std::process::id()));
//! std::fs::write(&path, "GET /\nGET /about\nPOST /lo")?; // the last line is being written
//! let tail = stageflow::io::tail(&path).build()?;
//! let stats = tail.stats();
//! let source = stageflow::producer(tail).spawn()?;
//! let (tx, rx) = crossbeam_channel::unbounded();
//! let sink = stageflow::consumer(ForEach::new(move |line: String| tx.send(line).unwrap()))
//!     .subscribe_to(&source, SubscribeOptions::new())?
//!     .spawn()?;
//! assert_eq!(rx.recv_timeout(Duration::from_secs(10))?, "GET /");
//! assert_eq!(rx.recv_timeout(Duration::from_secs(10))?, "GET /about");
//! // A followed file never ends: drain it (by hand here; on SIGINT with shutdown_on_signals).
//! let report = Topology::new().with(&source).with(&sink).drain(Duration::from_secs(5));
//! assert!(report.is_complete(), "{report:?}");
//! assert_eq!(stats.offset(), 17); // `.start_at(17)` resumes at the unfinished line, whole
//! std::fs::remove_file(&path)?;
//! # Ok(())
//! # }
//! ```
//!
//! # Flows: partitioned, windowed reductions
//!
//! The [`flow`] module is Elixir's Flow on these stages: a few lines from sources, through
//! mapper operations fused into parallel stages, partitioned by key into reducer stages that
//! fold each window's events (global, count, periodic or event-time windows, with triggers and
//! a controllable clock), to a departition that merges every partition's result per window.
//! Demand reaches from the last stage back to the sources, so memory is bounded by demand,
//! never by the input.
//!
//! # Seeing a running pipeline
//!
//! The [`observe`] module takes [`observe::Snapshot`]s of a topology (every stage's counters,
//! inbox and state, every subscription's demand, rates, the time each stage spends in its
//! callbacks and waiting, and the bottleneck; every layer's counters; the process's CPU and
//! memory) without ever waiting on a stage, and renders them as a table, Graphviz DOT,
//! Prometheus metrics or JSON (feature `observe-json`); an [`observe::Reporter`] logs them
//! periodically, and with feature `dashboard` an HTTP endpoint serves `/metrics` and a live
//! page of the pipeline with ten minutes of history. [`Stage::timing`] reads one stage's
//! time per callback ([`Histogram`]s) and time waiting for input or for demand.
//! `examples/top.rs` redraws the table in place, like `top`.
//!
//! # Broadway's shape: pipelines of messages
//!
//! The [`pipeline`] module wires a whole consumer of a queue or stream for you, as Elixir's
//! Broadway does: producers of [`pipeline::Message`]s → processors (`handle_message`) →
//! named batchers (by size or timeout) → batch handlers. Every message is acknowledged
//! exactly once, successful or failed, in groups (one call per acknowledger per batch); a
//! handler's error or panic fails that message only. It adds `partition_by` (per-key order end
//! to end), a rate limit shared by all producers, counters per layer, test helpers, and a
//! graceful shutdown that drains everything in flight within a timeout and counts what it
//! could not.
//!
//! # Beyond one machine: Redis Streams
//!
//! The `redis` module (feature `redis`, off by default) connects pipelines on several
//! machines through a Redis Streams consumer group: its producer reads entries with
//! `XREADGROUP` only as far as its demand goes, the pipeline's acknowledgements become `XACK`s
//! in groups, failed entries are retried or dead-lettered, a dead consumer's entries are
//! claimed by the others (`XAUTOCLAIM`), and dropped connections are made again; its sink
//! appends with `XADD`. Producers that read in turns like it stop reading once
//! [`Context::is_finishing`] says a drain began.
//!
//! # Messages and timers
//!
//! Each stage has a `Message` type. [`Stage::cast`] sends one to its `handle_message`,
//! [`Stage::call`] sends one carrying a [`Reply`] and waits for the answer, [`Stage::info`]
//! delivers one after the events buffered before it, and [`Context::send_after`] schedules
//! one to the stage itself. [`Context::mailbox`] hands other threads a way to message the
//! stage. A cast or call to a stage that has ended is an error value.
//!
//! # Ending, failures and panics
//!
//! A producer ends normally with [`Context::finish`]: it delivers its buffer, then each
//! consumer sees the subscription end with [`Reason::Normal`] and reacts by its
//! [`CancelMode`]: a permanent subscription (the default) ends the consumer, a transient one
//! only for abnormal reasons, a temporary one never. A consumer with several producers (fan-in)
//! ends normally only once *all* its subscriptions have ended, so one producer finishing never
//! cuts off the others' events; an abnormal end still ends it at once. A producer-consumer
//! whose producer finishes normally handles what it received and delivers its buffer before it
//! ends: nothing is lost on a normal finish.
//!
//! Whatever ends a stage, every event it received, buffered or had in flight to it is either
//! delivered or counted as discarded: for a stage that passes events on one for one,
//! `events_in = events_out + discarded + buffered` whenever it is idle, and summed
//! over a pipeline the counters balance (the equations, for every kind of stage, are in
//! [`Counters`]). (An ending stage waits for its producers to confirm its end, two seconds at
//! most by default: [`StageBuilder::confirm_timeout`], and counts what they still sent.)
//!
//! A callback that panics ends its stage with [`Reason::Panicked`]; the panic is caught on
//! that stage's thread, its consumers react by their cancel mode, and [`Stage::join`] reports
//! it (with the panic's text, read by [`panic_message`], which a layer of your own that
//! catches panics can use too). [`Stage::stop`] stops a stage from outside
//! ([`Reason::Shutdown`]). [`Topology`] joins or stops many stages at once.
//!
//! Nothing comes back by itself: a stage that ended stays ended. To have stages started again,
//! run them in a [`supervise::Group`]: each child is a factory of fresh stages with a restart
//! policy (permanent, transient, temporary, as in OTP); when one ends, the group restarts it
//! (and, by its strategy, the children after it or all of them) after a backoff, its
//! consumers subscribe to the new incarnation, and too many restarts within a period end the
//! group with a reason naming the child and its last failure. What the crashed stage held is
//! counted as discarded, as for any stage that ends; handles on a child resolve its current
//! incarnation, and [`Topology::drain`] drains a group with the rest of a pipeline. The
//! [`pipeline`] layer runs its producers and processors in one: a crashed producer is
//! restarted and the processors resubscribe, as in Broadway.
//!
//! ```
//! use std::time::Duration;
//! use stageflow::fns::ForEach;
//! use stageflow::supervise::{self, ChildSpec};
//! use stageflow::SubscribeOptions;
//!
//! let mut group = supervise::group("ticks");
//! let source = group.add(ChildSpec::new("source", || stageflow::from_iter(0u64..)));
//! group.add(
//!     ChildSpec::new("sink", || stageflow::consumer(ForEach::new(|_: u64| {})))
//!         .subscribe_to(&source, SubscribeOptions::new())?,
//! );
//! let group = group.start()?;
//! source.current().expect("running").stop(); // ends it from outside: it comes back
//! assert!(source.wait_restarts(1, Duration::from_secs(30)).is_some());
//! assert!(group.drain(Duration::from_secs(30)).is_complete());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Fan-in: a consumer with several producers
//!
//! A consumer (or producer-consumer) may subscribe to many producers; their events interleave
//! in its inbox, each subscription's in order. What ends it depends on each subscription's
//! [`CancelMode`] and on how its producer ended:
//!
//! | the producer ends | permanent (default) | transient | temporary |
//! |---|---|---|---|
//! | normally (finished) | ends the consumer once its **last** subscription has ended | nothing | nothing |
//! | abnormally (panic, error, stop) | ends the consumer at once, with that reason | ends it at once | nothing |
//!
//! So a consumer of two finite producers ends normally after both have finished and every
//! event of both was handled; a consumer with only temporary subscriptions never ends because
//! its producers did: stop it, or [finish](Stage::finish) it, which ends it once all its
//! producers have ended, whatever the modes. [`Context::cancel`] and [`Stage::cancel`] end one
//! subscription, with the same rules.
//!
//! # Ending gracefully, and getting results out
//!
//! [`Stage::finish`] asks a stage to finish as if its input had run out; [`Topology::drain`]
//! does it for a whole pipeline at once: the sources stop producing, every event already in
//! flight reaches the end, every stage ends normally, and what could not drain within the
//! timeout is stopped and counted in the [`DrainReport`]. A [`Supervisor`] waits for its
//! running workers first. A stage built with [`StageBuilder::keep_state`] hands its final
//! value back from [`Stage::join_state`], and its result ([`StageResult`]: a fold's
//! accumulator, a collection) from [`Stage::join_result`], an error if it panicked or did
//! not finish normally:
//!
//! ```
//! use std::time::Duration;
//! use stageflow::fns::Fold;
//! use stageflow::{SubscribeOptions, Topology};
//!
//! let source = stageflow::from_iter(0u64..).spawn()?; // endless
//! let count = stageflow::consumer(Fold::new(0u64, |n, _: u64| n + 1))
//!     .keep_state()
//!     .subscribe_to(&source, SubscribeOptions::new())?
//!     .spawn()?;
//! let report = Topology::new().with(&source).with(&count).drain(Duration::from_secs(5));
//! assert!(report.is_complete());
//! let counted = count.join_result()?;
//! assert_eq!(counted, source.counters().events_out); // nothing in flight was lost
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Control never waits behind events
//!
//! What handles send to control a stage — [`Stage::stop`], [`Stage::cancel`], [`Stage::ask`],
//! [`Stage::subscribe_to`], [`Stage::set_demand`] — takes a path of its own that events cannot
//! crowd out: it never blocks, and the stage handles it at the start of its next turn, ahead of
//! events already queued. Every turn of a stage's loop handles at most one message and comes
//! back, so a stage answers calls and stops promptly whatever its traffic. Casts, calls and
//! infos share the inbox with events and keep their order with them; [`Stage::cast`] waits
//! while that inbox is full ([`Stage::try_cast`] and [`Stage::cast_timeout`] do not).
//!
//! # Testing your pipeline
//!
//! A pipeline's bugs hide in orderings: a cancel that arrives while events are queued, a
//! consumer that leaves mid-batch, a timer due as a subscription starts. On threads, the
//! order is the scheduler's, and a failure seen once may not come back. [`sim`] runs the same
//! stages on one thread, under a scheduler that draws every turn from a seed, on virtual time:
//! [`sim::explore`] tries thousands of orderings in a second and stops at the first that
//! fails, naming the seed that replays it step for step. Faults come from the seed too (a
//! stage stopped or panicking at a drawn step, a consumer cancelling, a handle dropped), and
//! every run checks that all stages end, nothing is lost or left in a queue, and the
//! counters balance.
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use stageflow::fns::ForEach;
//! use stageflow::sim::{self, Sim};
//! use stageflow::{Events, ProducerConsumer, Context, SubscribeOptions};
//!
//! /// The stage under test: a running total of what it receives.
//! struct RunningTotal(u64);
//!
//! impl ProducerConsumer for RunningTotal {
//!     type In = u64;
//!     type Out = u64;
//!     type Message = ();
//!     fn handle_events(&mut self, events: Events<'_, u64>, ctx: &mut Context<'_, u64>) {
//!         for n in events {
//!             self.0 += n;
//!             ctx.emit(self.0);
//!         }
//!     }
//! }
//!
//! let seeds = sim::explore(0..500, |sim: &mut Sim| {
//!     let totals = Arc::new(Mutex::new(Vec::new()));
//!     let into = totals.clone();
//!     let demand = 1 + sim.rng().below(8) as usize; // drawn from the seed too
//!     sim.build(|| -> Result<(), Box<dyn std::error::Error>> {
//!         let numbers = stageflow::from_iter(1..=40u64).spawn()?;
//!         let total = stageflow::producer_consumer(RunningTotal(0))
//!             .subscribe_to(&numbers, SubscribeOptions::new().max_demand(demand))?
//!             .spawn()?;
//!         stageflow::consumer(ForEach::new(move |t: u64| into.lock().unwrap().push(t)))
//!             .subscribe_to(&total, SubscribeOptions::new().max_demand(demand))?
//!             .spawn()?;
//!         Ok(())
//!     }).expect("builds");
//!     sim.run()?; // every stage ended, counters balanced, queues empty
//!     let totals = totals.lock().unwrap();
//!     sim::check(totals.last() == Some(&820), || format!("ended at {:?}", totals.last()));
//!     Ok(())
//! });
//! assert_eq!(seeds.map_err(|failure| failure.to_string())?, 500);
//! # Ok::<(), String>(())
//! ```
//!
//! The [`sim`] module says what a run checks, and what a simulation cannot see (real OS
//! scheduling inside a turn, the network, code that blocks outside the crate's calls).
//!
//! # Where stageflow differs from GenStage
//!
//! GenStage's demand rules are followed number for number. Where stageflow does something
//! else, it is on purpose:
//!
//! - **Bad options fail at once**, naming the option, when a stage is built or subscribes
//!   (GenStage logs and skips a bad `subscribe_to`); `buffer_size` 0 is an error.
//! - **Nothing is lost on a normal finish.** A finishing producer delivers its buffer first; a
//!   producer-consumer whose producer finishes drains what it received (GenStage drops a
//!   producer-consumer's buffered output when its producer exits).
//! - **Fan-in finishes with its last producer.** A permanent subscription that ends normally
//!   ends the consumer only once every subscription it holds has ended (GenStage ends the
//!   consumer at the first producer's exit and loses the others' events in flight). An abnormal
//!   end still ends it at once.
//! - **Every event is accounted for.** Events sent to a stage that ends are counted as
//!   discarded where they are lost, never dropped silently; a finishing stage whose consumers
//!   have all left ends and counts what it held as discarded (a GenStage producer never ends
//!   because its consumers left, but it never "finishes" either).
//! - **Buffered events go first, always.** While a producer's buffer holds events, newly
//!   emitted ones queue behind them, and the buffer is offered to the dispatcher as soon as the
//!   dispatcher has demand, however it arose (GenStage flushes only on a new ask, which can
//!   strand buffered events: its broadcast quirk, probe p13). A producer's leftovers after a
//!   dispatch go back to the *front* of its buffer (GenStage appends them). An info queued behind
//!   buffered events is delivered as soon as they leave, by dispatch or discard.
//! - **Control overtakes data.** Stop, cancel, ask, subscribe and demand-mode changes from
//!   handles are handled ahead of queued events (GenStage's mailbox is one FIFO); they would
//!   otherwise wait behind a full inbox for as long as traffic lasts. Two of them from one
//!   caller to one stage still take effect in the order they were made: a cancel then a
//!   subscribe to the same broadcasting producer stay in that order. A stop takes effect
//!   between two batches of one message, not only between messages.
//! - **`subscribe_to` returns once both sides hold the subscription** (GenStage's
//!   `sync_subscribe` returns once the consumer has sent the request), so its id works at once:
//!   a cancel or an ask on it that reaches the stage before the producer's confirmation waits
//!   for it. A subscribe that fails (refused, timed out) leaves no subscription behind.
//! - **Order per subscription always holds.** Whatever the churn (cancels, resubscriptions,
//!   stops, demand-mode flips), the events one subscription delivers are in the order its
//!   producer emitted them. Switching an accumulating producer to forward sends the events it
//!   held first, then replays the demands (GenStage replays them as one list, so events that
//!   `handle_demand` emits for an early demand overtake events emitted while accumulating).
//! - **The counters balance as equations**, in every run, faults included (see [`Counters`]):
//!   `emitted = events_out + discarded + buffered` for a producer, `events_in = handled +
//!   discarded + buffered` for a consumer. GenStage has no counters.
//! - **Refusals are values.** A second subscription of one consumer to a broadcasting producer
//!   is refused with [`SubscribeError::Rejected`] (GenStage cancels it with
//!   `:already_subscribed`); a partition dispatcher's subscribe errors are returned (GenStage
//!   crashes the producer); a stage subscribing to itself gets
//!   [`SubscribeError::SelfSubscription`]. Cycles of several stages are accepted, but a cycle
//!   never finishes by itself (each stage waits for the other): stop it.
//! - **A partition hash that maps an event nowhere** (or to an unknown partition) drops it,
//!   counts it as discarded and asks the producer for a replacement, one round per turn of its
//!   loop (GenStage drops `:none` without a replacement, and crashes on an unknown partition).
//! - **A temporary subscription is optional at build time:** a stage built with one to a
//!   producer that has already ended starts, and sees that subscription fail in
//!   `handle_cancel` with a `noproc` error; permanent and transient ones fail the build (GenStage
//!   fails `init` with `:noproc`).
//! - **Manual demand belongs to a subscription:** [`Stage::ask`] sends events to that
//!   subscription's consumer, never to the caller.
//! - **Errors are values, panics are contained:** a panicking callback ends its stage with
//!   [`Reason::Panicked`], reported by [`Stage::join`] (a [`supervise::Group`] starts it
//!   again, where OTP's supervisor would restart the process); an unhandled call gets
//!   [`CallError::NoReply`]; only producers have a demand mode (a type error elsewhere, where
//!   GenStage crashes a producer-consumer asked for it).
//! - **Completion is explicit** ([`Context::finish`]), and a dropped [`Stream`] cancels with
//!   [`Reason::Normal`] and waits (a few seconds at most) for its producers to confirm, as
//!   GenStage's stream does.
//!
//! # Logging
//!
//! Through the `log` crate only, every message naming its stage: discards at warn level,
//! events received beyond demand at error level, stages ending because of a subscription at
//! info level.

#![forbid(unsafe_code)]
// On docs.rs, items behind a feature say which.
#![cfg_attr(docsrs, feature(doc_cfg))]

// The README's examples are doc tests too.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

mod bridge;
mod buffer;
mod builder;
mod chain;
mod clock;
mod context;
mod demand;
pub mod dispatcher;
mod envelope;
mod error;
mod events;
pub mod flow;
pub mod fns;
mod handle;
#[cfg(feature = "http")]
pub mod http;
#[cfg(feature = "io")]
pub mod io;
pub mod observe;
pub mod pipeline;
pub mod protocol;
mod reason;
mod recycle;
#[cfg(feature = "redis")]
pub mod redis;
mod runner;
mod shared;
pub mod sim;
mod stage;
mod stage_result;
mod started;
mod subscription;
pub mod supervise;
mod supervisor;
mod timer;
mod timing;
mod topology;
mod unwind;
mod upstream;

pub use bridge::{from_iter, stream, stream_scoped, IterProducer, ScopedStream, Stream};
pub use builder::{
    consumer, producer, producer_consumer, InScope, Place, ScopedBuilder, StageBuilder, Unscoped,
};
pub use chain::{Chain, ChainEnd, IntoBuilder, Lanes, ScopedChain, ScopedChainEnd, ScopedLanes};
pub use context::{ConsumerContext, Context, Mailbox, Reply};
pub use error::{BuildError, CallError, CastError, ControlError, JoinError, SubscribeError};
pub use events::Events;
pub use handle::{
    ConsumerHandle, ProducerConsumerHandle, ProducerHandle, ScopedStage, Stage, StageRef,
};
pub use upstream::{ScopedSource, Source, Upstream};
// The plumbing behind `Stage<S, R>`, documented in `role`; also at the root, where code
// written before `role` existed finds it.
#[doc(hidden)]
pub use handle::{ConsumerRole, Consumes, Emits, ProducerConsumerRole, ProducerRole, Role};

/// The roles a [`Stage`] handle is typed by: which events it emits and consumes, and which
/// messages it takes. Sealed: the three roles are the only ones. Name [`Role`] in
/// code generic over handles, e.g. `fn wait<S, R: Role<S>>(stage: &Stage<S, R>)`.
pub mod role {
    pub use crate::handle::{
        ConsumerRole, Consumes, Emits, ProducerConsumerRole, ProducerRole, Role,
    };
}
pub use reason::Reason;
pub use shared::{Counters, StageKind, SubscriptionCounters};
pub use stage::{Consumer, Producer, ProducerConsumer};
pub use stage_result::StageResult;
pub use started::Started;
pub use subscription::{
    BufferKeep, CancelMode, DemandMode, Direction, Partition, ProducerDemand, Selector,
    SubscribeOptions, Subscription, SubscriptionId,
};
pub use supervisor::{JobFailure, JobResult, Restart, Supervisor, SupervisorMsg, SupervisorStats};
pub use timer::TimerId;
pub use timing::{Histogram, HistogramSnapshot, StageTiming};
pub use topology::{AsStageRef, DrainReport, Member, Topology};
pub use unwind::panic_message;
