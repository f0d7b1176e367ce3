//! Seeing a running pipeline: snapshots of every stage and subscription, renderings of them
//! (a table, Graphviz DOT, JSON, Prometheus), a periodic reporter, and (feature `dashboard`)
//! an HTTP endpoint with a live page.
//!
//! When a pipeline is slow, the first question is *where*. A [`Snapshot`] answers it: for
//! every stage its kind, whether it runs or how it ended, its counters (in, out, discarded,
//! buffered), how many messages wait in its inbox, the demand its consumers wait for; for
//! every subscription the outstanding demand, `max_demand`/`min_demand` and the events that
//! went through it; and, taken through an [`Observer`], the rates since the previous
//! snapshot. The stage holding the others back is marked as the
//! [`bottleneck`](Snapshot::bottleneck): over an interval, the one that spent the most of it
//! (at least half) in its callbacks; otherwise the one whose inbox is full, or which has work
//! in hand while its consumers wait on it.
//!
//! Beside the counters, a snapshot holds each stage's [`timing`](StageSnapshot::timing)
//! (histograms of the time per callback and per event, time busy and waiting) with the
//! shares of the interval it was busy, waiting for input or waiting for demand; the values
//! of every registered [`MetricsSource`] (each layer exports what it counts: a
//! [`Pipeline`](crate::pipeline::Pipeline) registers itself, an HTTP producer's `HttpStats`,
//! a Redis `StreamSource` and a flow window's `WindowCounts` are registered with
//! [`Observed::source`]); and the process's CPU time, memory and threads
//! ([`ProcessSnapshot`], Linux only). A [`History`] keeps the last minutes of throughput and
//! busy share per stage.
//!
//! Snapshots cost the stages nothing they would notice. Each stage already publishes its
//! counters with plain relaxed stores from its own thread; a snapshot reads them, and the
//! inbox's length, from the observer's thread. It never sends a stage a message, never waits
//! for one, and takes no lock a stage takes while events flow (a stage's subscription list is
//! locked only when subscriptions change). A snapshot of 1 000 stages takes about half a
//! millisecond (`BENCHMARKS.md`, row o). `docs/observe.md` is the long form of this guide,
//! with a picture of the dashboard page.
//!
//! ```
//! use stageflow::fns::Map;
//! use stageflow::observe::Observe;
//! use stageflow::{Reason, SubscribeOptions, Topology};
//!
//! let numbers = stageflow::from_iter(0..1_000u64).name("numbers").spawn()?;
//! let double = stageflow::producer_consumer(Map::new(|x: u64| x * 2))
//!     .name("double")
//!     .subscribe_to(&numbers, SubscribeOptions::new().max_demand(100))?
//!     .spawn()?;
//! let topology = Topology::new().with(&numbers).with(&double);
//! let mut events = stageflow::stream(&double, SubscribeOptions::new().max_demand(10))?;
//! let first: Vec<u64> = events.by_ref().take(5).collect();
//!
//! // While the stream pauses, a snapshot shows where everything is.
//! let snapshot = topology.snapshot();
//! println!("{snapshot}"); // the table
//! let edge = snapshot.edges_between("numbers", "double").next().unwrap();
//! assert_eq!((edge.max_demand, edge.min_demand), (100, 50));
//! assert!(snapshot.edges.iter().any(|e| e.producer == "double" && e.max_demand == 10));
//! assert!(snapshot.to_dot().contains("\"numbers\" -> \"double\""));
//!
//! assert_eq!(first.len() + events.count(), 1_000);
//! topology.join();
//! // Ended: the counters are final and balance; the subscriptions are gone.
//! let snapshot = topology.snapshot();
//! let double = snapshot.stage("double").unwrap();
//! assert_eq!((double.events_in, double.events_out), (1_000, 1_000));
//! assert_eq!(double.outcome, Some(Reason::Normal));
//! assert!(snapshot.edges.is_empty());
//! let metrics = snapshot.to_prometheus();
//! assert!(metrics.contains("stageflow_events_in_total{stage=\"double\",kind=\"producer_consumer\"} 1000"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Renderings
//!
//! - `Display`: a table, one line per stage (the bottleneck marked `*`) and one per
//!   subscription; `examples/top.rs` redraws it in place once a second, like `top`.
//! - [`Snapshot::to_dot`]: Graphviz, stages as nodes with their rates, subscriptions as edges
//!   labelled with their demand; the bottleneck red.
//! - [`Snapshot::to_prometheus`]: the Prometheus text format, `stageflow_events_in_total`
//!   and friends labelled by stage, gauges for buffers, inboxes and demand.
//! - JSON (feature `observe-json`): `Snapshot` implements `serde::Serialize`;
//!   `Snapshot::to_json` writes it.
//!
//! # Reporting
//!
//! A [`Reporter`] takes a snapshot every interval on a thread of its own and logs one line per
//! stage at info level, or hands the snapshot to your callback; it ends after reporting the
//! pipeline's end, or when its handle is stopped or dropped.
//!
//! # The dashboard
//!
//! With feature `dashboard`, `Dashboard::serve` answers `GET /metrics` (Prometheus),
//! `GET /snapshot.json` and `GET /`, a single self-contained page that draws the stages as a
//! graph with live rates, demand and buffer fill, busy and waiting shares and sparklines of
//! the last ten minutes, the callback times per stage, every metrics source and the process,
//! refreshed every second. It runs on its own
//! threads, refuses anything but those three GETs (404/405), limits request heads, refuses
//! bodies, and drops clients that stall: none of it can hold a stage back.
//!
//! # Compared with GenStage and Broadway
//!
//! GenStage has no counters of its own: one reads a stage's state through `:sys` or Observer,
//! which *calls* the stage process (it waits behind the stage's mailbox, and stalls a busy
//! stage for the time of the call). Broadway's LiveDashboard page samples its processes the
//! same way. Here the stages publish their counters as they go, so observing never waits
//! for a stage and a stuck stage is seen as stuck rather than making the observer hang.

mod error;
mod history;
#[cfg(feature = "observe-json")]
mod json;
mod metrics;
mod observed;
mod process;
mod render;
mod reporter;
mod snapshot;

#[cfg(feature = "dashboard")]
mod dashboard;

#[cfg(feature = "dashboard")]
pub use dashboard::{Dashboard, DashboardHandle};
pub use error::ObserveError;
pub use history::{History, StageHistory};
pub use metrics::{Metric, MetricSet, MetricValue, Metrics, MetricsSource, SourceSnapshot};
pub use observed::Observed;
pub use process::ProcessSnapshot;
pub use reporter::{Reporter, ReporterHandle};
pub use snapshot::{EdgeSnapshot, Observe, Observer, Snapshot, StageSnapshot};
