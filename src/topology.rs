//! [`Topology`]: the stages of a pipeline, joined or stopped together; and [`Member`], what a
//! topology holds besides single stages (a supervised group, whose stages change as it
//! restarts them).

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::handle::StageRef;
use crate::reason::Reason;

/// A group of stages joined and stopped together, usually a whole pipeline.
///
/// Dropping a topology asks every stage in it to stop (without waiting), so a pipeline held by
/// a topology never outlives it.
///
/// # Examples
///
/// ```
/// use stageflow::{Consumer, ConsumerContext, Context, Events, Producer, Reason, SubscribeOptions, Topology};
///
/// struct Three;
/// impl Producer for Three {
///     type Out = u32;
///     type Message = ();
///     fn handle_demand(&mut self, _: usize, ctx: &mut Context<'_, u32>) {
///         ctx.emit_all([1, 2, 3]);
///         ctx.finish();
///     }
/// }
/// struct Sink;
/// impl Consumer for Sink {
///     type In = u32;
///     type Message = ();
///     fn handle_events(&mut self, _: Events<'_, u32>, _: &mut ConsumerContext<'_>) {}
/// }
///
/// let p = stageflow::producer(Three).name("three").spawn()?;
/// let c = stageflow::consumer(Sink).name("drop").subscribe_to(&p, SubscribeOptions::new())?.spawn()?;
/// let outcomes = Topology::new().with(&p).with(&c).join();
/// assert_eq!(outcomes, vec![("three".to_string(), Reason::Normal), ("drop".to_string(), Reason::Normal)]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Topology {
    /// The single stages, for [`Topology::stages`].
    stages: Vec<StageRef>,
    /// Everything it drains, stops and joins, in the order added: the single stages and the
    /// other members.
    members: Vec<Arc<dyn Member>>,
    stop_wait: Duration,
}

impl Default for Topology {
    fn default() -> Topology {
        Topology {
            stages: Vec::new(),
            members: Vec::new(),
            stop_wait: Duration::from_secs(5),
        }
    }
}

/// A part of a [`Topology`] that it finishes, stops and joins as one, and whose stages may
/// change while it runs: a [`supervise::Group`](crate::supervise::Group) is one (it restarts
/// its stages, so no fixed list of [`StageRef`]s stays true). A [`StageRef`] is one too.
///
/// # For implementors
///
/// `finish` and `stop` do not wait; `join_timeout` waits until every stage of the member has
/// ended for good (a member that restarts stages must not restart them once asked to finish
/// or stop).
pub trait Member: fmt::Debug + Send + Sync {
    /// The name its outcome is reported under.
    fn name(&self) -> &str;
    /// Its stages now (for observers: a snapshot of a topology reads them).
    fn stages(&self) -> Vec<StageRef>;
    /// Asks it to finish gracefully, as [`StageRef::finish`] does a stage. Does not wait.
    fn finish(&self);
    /// Asks it to stop, as [`StageRef::stop`] does a stage. Does not wait.
    fn stop(&self);
    /// Waits up to `timeout` (forever with `None`) for it to end; `None` if it still runs.
    fn join_timeout(&self, timeout: Option<Duration>) -> Option<Reason>;
    /// Events its stages discarded so far, every stage it ever ran counted.
    fn discarded(&self) -> u64;
}

impl Member for StageRef {
    fn name(&self) -> &str {
        StageRef::name(self)
    }

    fn stages(&self) -> Vec<StageRef> {
        vec![self.clone()]
    }

    fn finish(&self) {
        StageRef::finish(self);
    }

    fn stop(&self) {
        StageRef::stop(self);
    }

    fn join_timeout(&self, timeout: Option<Duration>) -> Option<Reason> {
        match timeout {
            Some(t) => StageRef::join_timeout(self, t),
            None => Some(StageRef::join(self)),
        }
    }

    fn discarded(&self) -> u64 {
        self.counters().discarded
    }
}

/// Anything that can be added to a [`Topology`].
pub trait AsStageRef {
    /// An untyped handle on the stage.
    fn stage_ref(&self) -> StageRef;
}

impl<S, R: crate::handle::Role<S>> AsStageRef for crate::Stage<S, R> {
    fn stage_ref(&self) -> StageRef {
        crate::Stage::stage_ref(self)
    }
}

impl<T> AsStageRef for crate::Source<T> {
    fn stage_ref(&self) -> StageRef {
        crate::Source::stage_ref(self)
    }
}

impl AsStageRef for StageRef {
    fn stage_ref(&self) -> StageRef {
        self.clone()
    }
}

impl Topology {
    /// An empty topology.
    pub fn new() -> Topology {
        Topology::default()
    }

    /// Adds a stage.
    pub fn add(&mut self, stage: &(impl AsStageRef + ?Sized)) -> &mut Topology {
        let stage = stage.stage_ref();
        self.members.push(Arc::new(stage.clone()));
        self.stages.push(stage);
        self
    }

    /// Adds a stage, builder style.
    pub fn with(mut self, stage: &(impl AsStageRef + ?Sized)) -> Topology {
        self.add(stage);
        self
    }

    /// Adds a member that is not one fixed stage, such as a supervised
    /// [`Group`](crate::supervise::Group): the topology finishes, stops and joins it with its
    /// stages, and reports its outcome under its name.
    pub fn add_member(&mut self, member: impl Member + 'static) -> &mut Topology {
        self.members.push(Arc::new(member));
        self
    }

    /// Adds a member, builder style; see [`add_member`](Topology::add_member).
    pub fn with_member(mut self, member: impl Member + 'static) -> Topology {
        self.add_member(member);
        self
    }

    /// How long [`drain`](Topology::drain) waits, after its timeout, for the stages it had to
    /// stop: all of them together, once. A stopped stage ends as soon as the callback it is in
    /// returns, so this bounds a callback that blocks; one still running after it is reported
    /// as `None` in [`DrainReport::outcomes`] (and left to end by itself). A drain therefore
    /// returns within its timeout plus this wait. Defaults to `5 s`.
    pub fn stop_wait(mut self, wait: Duration) -> Topology {
        self.stop_wait = wait;
        self
    }

    /// The stages added one by one, in the order they were added (not those of its
    /// [members](Topology::add_member): see [`current_stages`](Topology::current_stages)).
    pub fn stages(&self) -> &[StageRef] {
        &self.stages
    }

    /// Everything it finishes, stops and joins, in the order added: its stages (as
    /// [`StageRef`]s) and its other [members](Topology::add_member).
    pub fn members(&self) -> &[Arc<dyn Member>] {
        &self.members
    }

    /// Every stage running in it now, in the order added: its stages, and the current stages
    /// of its members (a supervised group's stages change as it restarts them).
    pub fn current_stages(&self) -> Vec<StageRef> {
        self.members.iter().flat_map(|m| m.stages()).collect()
    }

    /// Asks every stage (and member) to stop.
    pub fn stop(&self) {
        for m in &self.members {
            m.stop();
        }
    }

    /// Waits for every stage (and member) to end; returns each one's name and outcome, in the
    /// order they were added.
    pub fn join(&self) -> Vec<(String, Reason)> {
        self.members
            .iter()
            .map(|m| {
                let reason = m.join_timeout(None).expect("waiting without a deadline");
                (m.name().to_owned(), reason)
            })
            .collect()
    }

    /// Drains the pipeline: asks every stage to [finish](crate::Stage::finish), so that the
    /// sources stop producing (as if their input had run out) and every event already in
    /// flight reaches the end; then joins every stage.
    ///
    /// Stages still running when `timeout` has passed (a consumer that stopped asking, a
    /// callback that blocks) are stopped: what they held is discarded and counted, and the
    /// report says which stages they were and how many events they discarded. Nothing is
    /// dropped silently. The drain then waits for them at most
    /// [`stop_wait`](Topology::stop_wait) (5 s by default) in all.
    ///
    /// ```
    /// use std::time::Duration;
    /// use stageflow::fns::ForEach;
    /// use stageflow::{SubscribeOptions, Topology};
    ///
    /// // An endless source: only a drain (or a stop) ends it.
    /// let source = stageflow::from_iter(0u64..).spawn()?;
    /// let sink = stageflow::consumer(ForEach::new(|_: u64| {}))
    ///     .subscribe_to(&source, SubscribeOptions::new())?
    ///     .spawn()?;
    /// let pipeline = Topology::new().with(&source).with(&sink);
    /// let report = pipeline.drain(Duration::from_secs(5));
    /// assert!(report.is_complete(), "{report:?}");
    /// // Every event the source emitted reached the sink.
    /// assert_eq!(source.counters().events_out, sink.counters().events_in);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn drain(&self, timeout: Duration) -> DrainReport {
        let deadline = crate::timer::deadline(timeout);
        for m in &self.members {
            m.finish();
        }
        let mut outcomes: Vec<(String, Option<Reason>)> = self
            .members
            .iter()
            .map(|m| {
                let left = deadline.saturating_duration_since(Instant::now());
                (m.name().to_owned(), m.join_timeout(Some(left)))
            })
            .collect();
        let late: Vec<usize> = (0..outcomes.len())
            .filter(|&i| outcomes[i].1.is_none())
            .collect();
        let before: Vec<u64> = late.iter().map(|&i| self.members[i].discarded()).collect();
        for &i in &late {
            log::warn!(
                "stage {}: still running when the drain timed out after {timeout:?}; stopping it",
                self.members[i].name()
            );
            self.members[i].stop();
        }
        let mut discarded = 0;
        // A stopped stage ends after the callback it runs returns: wait a little for them,
        // never forever (a callback may block).
        let stopped_by = crate::timer::deadline(self.stop_wait);
        for (k, &i) in late.iter().enumerate() {
            let left = stopped_by.saturating_duration_since(Instant::now());
            outcomes[i].1 = self.members[i].join_timeout(Some(left));
            discarded += self.members[i].discarded().saturating_sub(before[k]);
        }
        DrainReport {
            outcomes,
            stopped: late
                .iter()
                .map(|&i| self.members[i].name().to_owned())
                .collect(),
            discarded,
        }
    }

    /// Like [`Topology::join`], but gives up at `timeout`: stages still running then have
    /// `None`.
    pub fn join_timeout(&self, timeout: Duration) -> Vec<(String, Option<Reason>)> {
        let deadline = crate::timer::deadline(timeout);
        self.members
            .iter()
            .map(|m| {
                let left = deadline.saturating_duration_since(Instant::now());
                (m.name().to_owned(), m.join_timeout(Some(left)))
            })
            .collect()
    }
}

/// What [`Topology::drain`] saw.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DrainReport {
    /// Every stage's name and outcome, in the order they were added. `None`: the stage was
    /// still running even after it was stopped (a callback that does not return).
    pub outcomes: Vec<(String, Option<Reason>)>,
    /// The stages still running at the timeout, which were stopped.
    pub stopped: Vec<String>,
    /// Events the stopped stages discarded as they ended (also counted in their
    /// [`Counters::discarded`](crate::Counters::discarded)).
    pub discarded: u64,
}

impl DrainReport {
    /// Whether every stage finished by itself within the timeout: nothing was stopped, and
    /// every event in flight reached the end.
    pub fn is_complete(&self) -> bool {
        self.stopped.is_empty()
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        self.stop();
    }
}
