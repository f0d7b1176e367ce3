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
#[derive(Debug, Default)]
pub struct Topology {
    stages: Vec<StageRef>,
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
    pub fn add(&mut self, stage: &impl AsStageRef) -> &mut Topology {
        self.stages.push(stage.stage_ref());
        self
    }

    /// Adds a stage, builder style.
    pub fn with(mut self, stage: &impl AsStageRef) -> Topology {
        self.stages.push(stage.stage_ref());
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

impl Drop for Topology {
    fn drop(&mut self) {
        self.stop();
    }
}
