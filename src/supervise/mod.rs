//! Let it crash, on threads: groups of stages that are restarted when they end, by OTP's
//! rules.
//!
//! A [`Group`] runs *children*: stages described by a [`ChildSpec`], a factory that builds a
//! fresh stage (its state and [`StageBuilder`](crate::StageBuilder) options) each time, a
//! [`RestartPolicy`] and the child's subscriptions. When a child ends by itself, the group
//! decides by its policy whether to start it again ([`RestartPolicy::Permanent`]: always;
//! [`Transient`](RestartPolicy::Transient): after an abnormal end; [`Temporary`](
//! RestartPolicy::Temporary): never), which other children restart with it (the
//! [`Strategy`]: one-for-one, rest-for-one, one-for-all), waits its [`Backoff`], and counts the
//! restart against its [`Intensity`]: one restart too many within the period ends the group,
//! with a [`Reason::Error`](crate::Reason::Error) that names the child and its last failure,
//! instead of a restart storm.
//!
//! ```
//! use std::sync::atomic::{AtomicU64, Ordering};
//! use std::sync::Arc;
//! use std::time::Duration;
//! use stageflow::fns::Map;
//! use stageflow::fns::ForEach;
//! use stageflow::supervise::{self, ChildSpec, RestartPolicy};
//! use stageflow::SubscribeOptions;
//!
//! let seen = Arc::new(AtomicU64::new(0));
//! let mut group = supervise::group("flaky");
//! let source = group.add(ChildSpec::new("numbers", || stageflow::from_iter(0u64..)));
//! // The first incarnation of the doubler panics on 100; the next ones do not.
//! let crashes = Arc::new(AtomicU64::new(0));
//! let double = group.add(
//!     ChildSpec::new("double", move || {
//!         let crashes = crashes.clone();
//!         stageflow::producer_consumer(Map::new(move |x: u64| {
//!             if x == 100 && crashes.fetch_add(1, Ordering::Relaxed) == 0 {
//!                 panic!("flaky on {x}");
//!             }
//!             x * 2
//!         }))
//!     })
//!     .subscribe_to(&source, SubscribeOptions::new().max_demand(10))?,
//! );
//! let s = seen.clone();
//! group.add(
//!     ChildSpec::new("sink", move || {
//!         let s = s.clone();
//!         stageflow::consumer(ForEach::new(move |_: u64| {
//!             s.fetch_add(1, Ordering::Relaxed);
//!         }))
//!     })
//!     .restart(RestartPolicy::Transient)
//!     .subscribe_to(&double, SubscribeOptions::new())?,
//! );
//! let group = group.start()?;
//! // The doubler comes back; the source and the sink never stopped.
//! assert!(double.wait_restarts(1, Duration::from_secs(30)).is_some());
//! assert_eq!(group.restart_counts()[1], ("double".to_string(), 1));
//! let report = group.drain(Duration::from_secs(30));
//! assert!(report.is_complete(), "{report:?}");
//! assert!(seen.load(Ordering::Relaxed) > 0);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Subscriptions across restarts
//!
//! A child subscribes to children added before it with [`ChildSpec::subscribe_to`] (and to
//! stages outside the group with [`ChildSpec::subscribe_to_stage`]). Every incarnation makes
//! them again, to the producers' incarnations running then; when a producer restarts, the
//! running incarnations of its consumers subscribe to the new one (GenStage's `resubscribe`,
//! as Broadway's processors do after their producer crashed). So inside a group, those
//! subscriptions are *temporary*: a producer's crash does not end its consumers. The cancel
//! mode you give still decides what ends them for good: once every producer a child
//! subscribes to with a permanent or transient mode has ended and will not be restarted (a
//! transient source that finished, say), the group [finishes](crate::Stage::finish) the
//! child, so a finite pipeline ends from its sources to its sinks and the group with it.
//!
//! Order per subscription holds across restarts: each subscription delivers in the order its
//! producer emitted; a new incarnation is a new subscription.
//!
//! # Handles across restarts
//!
//! [`GroupBuilder::add`] returns a [`Child`], which resolves the incarnation running now
//! ([`Child::current`]), counts its restarts and sums the counters of all its incarnations
//! ([`Child::counters`]). The [`Group`] handle reads every child's restarts, lists the current
//! stages, and finishes, stops, drains and joins the whole; it is a [`Member`](crate::Member)
//! of a [`Topology`](crate::Topology), so [`Topology::drain`](crate::Topology::drain) and
//! [`Topology::stop`](crate::Topology::stop) reach the incarnations running at that moment,
//! and nothing is restarted once they have begun. Restarts are logged at warn level (the child,
//! its reason, the wait, and the count against the intensity); the intensity being reached at
//! error level.
//!
//! # What a crash loses
//!
//! Events inside a stage when it crashed are accounted for by its counters, as for any stage
//! that ends: events received and not yet handled are counted as `discarded`, and so are the
//! events a producer held in its buffer; the batch a callback panicked in counts as handled
//! (the engine cannot know how far the callback got). Where messages carry an acknowledger
//! (the [`pipeline`](crate::pipeline) layer, Redis Streams), those messages are not
//! acknowledged, and so come back by the source's own rules (a Redis consumer group's pending
//! entries are claimed again).
//!
//! # Not the [`Supervisor`](crate::Supervisor)
//!
//! [`Supervisor`](crate::Supervisor) is GenStage's ConsumerSupervisor: one consumer stage that
//! starts a short-lived worker per event. A `Group` supervises long-lived stages of a pipeline
//! and starts them again; the two do not depend on each other (a `Supervisor` can be a child).
//!
//! # Threads
//!
//! A group has one supervisor thread. It learns of a child's end from
//! [`StageRef::on_end`](crate::StageRef::on_end), which the child's own thread calls as its
//! last act: no thread per child waiting in `join` (a pipeline of 50 processors was 100
//! threads before, and started and ended in 15 ms instead of 7). Nothing here uses more than
//! the crate's public API, and [`Member`](crate::Member) for topologies.

mod child;
mod error;
mod group;
mod policy;
mod run;
mod source;
mod spec;

pub use child::Child;
pub use error::GroupError;
pub use group::{group, Group, GroupBuilder};
pub use policy::{Backoff, Intensity, RestartPolicy, Strategy};
pub use source::{ChildSource, ChildUpstream};
pub use spec::{ChildSpec, Spawn};

/// `after` from now, saturating far in the future.
fn deadline(after: std::time::Duration) -> std::time::Instant {
    let now = std::time::Instant::now();
    now.checked_add(after)
        .unwrap_or_else(|| now + std::time::Duration::from_secs(365 * 24 * 3600))
}
