//! Redis Streams consumer groups as an acknowledged pipeline source, and a sink (feature
//! `redis`, off by default; the blocking client of the `redis` crate, no async runtime).
//!
//! When one process is not enough, run the same [`pipeline`](crate::pipeline) on several
//! machines that share a stream through a **consumer group**: Redis gives each entry to one
//! consumer of the group, keeps it pending until it is acknowledged, and lets another
//! consumer claim it when its consumer dies. A [`StreamSource`] is such a consumer:
//!
//! - its [`producer`](StreamSource::producer)s read with `XREADGROUP`, asking for **at most
//!   their unmet demand** (`COUNT`), with a short `BLOCK` so that stops and calls are seen:
//!   at zero demand nothing is read, and the entries stay in the stream for the group's other
//!   consumers;
//! - each entry becomes a [`Message`](crate::pipeline::Message) (an [`Entry`], or your type
//!   decoded from a JSON field with [`json`](StreamBuilder::json)) carrying the source's
//!   acknowledger and the entry id (metadata [`ID_KEY`], see [`entry_id`]);
//! - once the whole pipeline has handled them, the acknowledger `XACK`s them **in groups**
//!   (one command per acknowledgement call of the pipeline); failed entries stay pending and
//!   are claimed again after [`claim_idle`](StreamBuilder::claim_idle), or, with a
//!   [`dead_letter`](StreamBuilder::dead_letter) stream, after N deliveries are moved there
//!   and acknowledged;
//! - **recovery**: on start and after a reconnect, a producer reads its consumer's own pending
//!   entries first (a restarted consumer resumes its work), then claims entries idle for
//!   longer than `claim_idle` (`XAUTOCLAIM`: a dead consumer's, or failed ones due for a
//!   retry), and does so again every [`claim_interval`](StreamBuilder::claim_interval);
//! - **faults**: a dropped connection is made again with backoff; acknowledgements are retried
//!   (`XACK` is idempotent: an entry is counted acknowledged once); entries still in flight
//!   in this process are never emitted twice; [`StreamCounters`] shows reads, acks, claims,
//!   dead letters and reconnects.
//!
//! [`sink`] is the other end: a consumer that appends events with `XADD` (optionally
//! `MAXLEN ~`), one pipelined round trip per batch its demand lets in.
//!
//! ```
//! use std::time::Duration;
//! use stageflow::pipeline::{self, Batch, BatcherOptions, Message, ProcessorOptions};
//! use stageflow::SubscribeOptions;
//!
//! #[derive(serde::Serialize, serde::Deserialize)]
//! struct Job {
//!     n: u64,
//! }
//! # // A throwaway server (the crate's tests and examples have a fuller one).
//! # let Some(bin) = ["redis-server"].into_iter().find(|b| {
//! #     std::process::Command::new(b).arg("--version").output().is_ok()
//! # }) else {
//! #     assert!(std::env::var("CI").is_err(), "CI needs redis-server");
//! #     return Ok(());
//! # };
//! # let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
//! # let mut server = std::process::Command::new(bin)
//! #     .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""])
//! #     .args(["--appendonly", "no", "--dir", &std::env::temp_dir().display().to_string()])
//! #     .stdout(std::process::Stdio::null())
//! #     .spawn()?;
//! # let url = format!("redis://127.0.0.1:{port}/");
//! # let deadline = std::time::Instant::now() + Duration::from_secs(10);
//! # while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
//! #     assert!(std::time::Instant::now() < deadline, "redis-server did not start");
//! #     std::thread::sleep(Duration::from_millis(10));
//! # }
//!
//! // Queue 1000 jobs with the sink.
//! let sink = stageflow::redis::sink(&url, "jobs").json::<Job>("json").build()?;
//! let jobs = stageflow::from_iter((0..1000).map(|n| Job { n })).spawn()?;
//! stageflow::consumer(sink)
//!     .subscribe_to(&jobs, SubscribeOptions::new().max_demand(100))?
//!     .spawn()?
//!     .join();
//!
//! // One worker of the group `workers`: producer → 2 processors → a batcher of 100.
//! let source = stageflow::redis::stream(&url, "jobs")
//!     .group("workers")
//!     .consumer("worker-1")
//!     .json::<Job>("json")
//!     .build()?;
//! let (done, finished) = crossbeam_channel::unbounded();
//! let src = source.clone();
//! let worker = pipeline::builder("worker-1")
//!     .producers(1, move |_| stageflow::producer(src.producer()))
//!     .processors(ProcessorOptions::new().concurrency(2), |m: &mut Message<Job>| {
//!         Ok::<u64, String>(m.data.n * 2)
//!     })
//!     .batcher("store", BatcherOptions::new().batch_size(100), move |b: &mut Batch<u64>| {
//!         done.send(b.messages.len()).unwrap(); // store the batch somewhere
//!         Ok::<(), String>(())
//!     })
//!     .start()?;
//! let mut handled = 0;
//! while handled < 1000 {
//!     handled += finished.recv_timeout(Duration::from_secs(10))?;
//! }
//! // Drain: what is in flight is handled and acknowledged; the rest stays in the stream.
//! assert!(worker.shutdown().is_complete());
//! let c = source.counters();
//! assert_eq!((c.read, c.acked, c.failed), (1000, 1000, 0));
//! # server.kill()?;
//! # server.wait()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Delivery
//!
//! At least once: an entry is acknowledged only after the pipeline handled it, so a consumer
//! that dies after handling an entry and before acknowledging it leaves it pending, and
//! another consumer handles it again once it is claimed. Make handlers idempotent, or make
//! `claim_idle` longer than an entry can take to go through the pipeline (a slow entry
//! claimed while it is still being handled is handled twice; `XACK` still counts it once).
//! Entries still in flight in this process are never emitted again by its own producers.
//!
//! # Options and defaults
//!
//! | option | default | why |
//! |---|---|---|
//! | [`group`](StreamBuilder::group) | `"stageflow"` | created with the stream if missing (`XGROUP CREATE ... MKSTREAM`) |
//! | [`consumer`](StreamBuilder::consumer) | `"consumer-<pid>"` | give each process a stable name to resume its own pending entries |
//! | [`start_id`](StreamBuilder::start_id) | `"0"` | a queue's entries added before the first worker are work too |
//! | [`block`](StreamBuilder::block) | 100 ms | stops and calls wait at most this long (1 ms right after a read that found entries, doubling while reads find none) |
//! | [`max_count`](StreamBuilder::max_count) | 1000 | `COUNT` is the unmet demand, at most this |
//! | [`claim_idle`](StreamBuilder::claim_idle) | 30 s | the retry delay of failed entries, and how long a dead consumer's entries wait |
//! | [`claim_interval`](StreamBuilder::claim_interval) | 5 s | how often idle entries are claimed |
//! | [`dead_letter`](StreamBuilder::dead_letter) | none | failed entries are retried forever |
//! | [`ack_timeout`](StreamBuilder::ack_timeout) | 30 s | an acknowledgement retried longer is given up (the entries stay pending) |
//!
//! # Where this differs from Broadway's producers
//!
//! Broadway's SQS, RabbitMQ and Kafka producers are separate packages, each with its
//! broker's vocabulary; Broadway has no Redis producer. Like them, this source fetches only
//! what its demand asks for and acknowledges through the message's acknowledger; unlike
//! them, retries and dead letters are the source's options here (the broker has no
//! visibility timeout or dead-letter queue of its own: the pending list and `XAUTOCLAIM`
//! are Redis's), and the producer does its own reads on its stage's thread (no receive
//! interval: an empty `XREADGROUP` blocks, from 1 ms up to `block`, then the loop turns).

mod ack;
mod conn;
mod counters;
mod entry;
mod error;
mod producer;
mod reply;
mod shared;
mod sink;
mod source;

pub use counters::StreamCounters;
pub use entry::{Entry, Fields};
pub use error::StreamError;
pub use producer::{ReadTurn, StreamProducer};
pub use shared::{StreamSource, ID_KEY};
pub use sink::{sink, SinkBuilder, SinkCounters, SinkStats, StreamSink};
pub use source::{entry_id, stream, StreamBuilder};
