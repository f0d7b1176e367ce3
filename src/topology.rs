//! [`Topology`]: the stages of a pipeline, joined or stopped together.

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
    stages: Vec<StageRef>,
    stop_wait: Duration,
}

impl Default for Topology {
    fn default() -> Topology {
        Topology {
            stages: Vec::new(),
            stop_wait: Duration::from_secs(5),
        }
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
        self.stages.push(stage.stage_ref());
        self
    }

    /// Adds a stage, builder style.
    pub fn with(mut self, stage: &(impl AsStageRef + ?Sized)) -> Topology {
        self.stages.push(stage.stage_ref());
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

    /// The stages, in the order they were added.
    pub fn stages(&self) -> &[StageRef] {
        &self.stages
    }

    /// Asks every stage to stop.
    pub fn stop(&self) {
        for s in &self.stages {
            s.stop();
        }
    }

    /// Waits for every stage to end; returns each stage's name and outcome, in the order they
    /// were added.
    pub fn join(&self) -> Vec<(String, Reason)> {
        self.stages
            .iter()
            .map(|s| (s.name().to_owned(), s.join()))
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
        for s in &self.stages {
            s.finish();
        }
        let mut outcomes: Vec<(String, Option<Reason>)> = self
            .stages
            .iter()
            .map(|s| {
                let left = deadline.saturating_duration_since(Instant::now());
                (s.name().to_owned(), s.join_timeout(left))
            })
            .collect();
        let late: Vec<usize> = (0..outcomes.len())
            .filter(|&i| outcomes[i].1.is_none())
            .collect();
        let before: Vec<u64> = late
            .iter()
            .map(|&i| self.stages[i].counters().discarded)
            .collect();
        for &i in &late {
            log::warn!(
                "stage {}: still running when the drain timed out after {timeout:?}; stopping it",
                self.stages[i].name()
            );
            self.stages[i].stop();
        }
        let mut discarded = 0;
        // A stopped stage ends after the callback it runs returns: wait a little for them,
        // never forever (a callback may block).
        let stopped_by = crate::timer::deadline(self.stop_wait);
        for (k, &i) in late.iter().enumerate() {
            let left = stopped_by.saturating_duration_since(Instant::now());
            outcomes[i].1 = self.stages[i].join_timeout(left);
            discarded += self.stages[i].counters().discarded - before[k];
        }
        DrainReport {
            outcomes,
            stopped: late
                .iter()
                .map(|&i| self.stages[i].name().to_owned())
                .collect(),
            discarded,
        }
    }

    /// Like [`Topology::join`], but gives up at `timeout`: stages still running then have
    /// `None`.
    pub fn join_timeout(&self, timeout: Duration) -> Vec<(String, Option<Reason>)> {
        let deadline = crate::timer::deadline(timeout);
        self.stages
            .iter()
            .map(|s| {
                let left = deadline.saturating_duration_since(Instant::now());
                (s.name().to_owned(), s.join_timeout(left))
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
