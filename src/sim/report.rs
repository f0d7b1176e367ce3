//! What a simulated run reports: [`Report`] when it went as it should, [`Failure`] when not.

use std::fmt;
use std::time::Duration;

use crate::reason::Reason;
use crate::shared::{Counters, StageKind};

/// One stage as a run left it.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct StageState {
    /// The stage's name.
    pub name: String,
    /// Producer, producer-consumer or consumer.
    pub kind: StageKind,
    /// Where it is: `"running"`, `"ending (…)"`, `"ended"`.
    pub phase: &'static str,
    /// Why it ended, once it has.
    pub outcome: Option<Reason>,
    /// Messages waiting in its inbox.
    pub inbox: usize,
    /// Its counters, with the demand outstanding on each subscription.
    pub counters: Counters,
}

impl fmt::Display for StageState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.counters;
        write!(f, "{} ({}): {}", self.name, self.kind, self.phase)?;
        if let Some(outcome) = &self.outcome {
            write!(f, " ({outcome})")?;
        }
        write!(
            f,
            "; inbox {}, in {}, out {}, emitted {}, discarded {}, buffered {}",
            self.inbox, c.events_in, c.events_out, c.emitted, c.discarded, c.buffered
        )?;
        for s in &c.subscriptions {
            let arrow = match s.direction {
                crate::Direction::Upstream => "from",
                crate::Direction::Downstream => "to",
            };
            write!(
                f,
                "; {} {arrow} {}: demand {} of {}, {} events",
                s.id, s.peer, s.demand, s.max_demand, s.events
            )?;
        }
        Ok(())
    }
}

/// A run that went as it should: every stage ended (or, for
/// [`run_until_idle`](super::Sim::run_until_idle), nothing could move), and every check held.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Report {
    /// The seed the run was made with.
    pub seed: u64,
    /// Turns taken, by all stages together (idle looks not counted).
    pub steps: u64,
    /// Virtual time that passed.
    pub elapsed: Duration,
    /// A hash of the schedule: which stage took each turn. The same seed and the same
    /// pipeline give the same hash; compare two runs' to see that a replay took the same path.
    pub schedule_hash: u64,
    /// Every stage, in the order they were built.
    pub stages: Vec<StageState>,
}

impl Report {
    /// The stage named `name`.
    pub fn stage(&self, name: &str) -> Option<&StageState> {
        self.stages.iter().find(|s| s.name == name)
    }
}

/// What went wrong in a run.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailureKind {
    /// Nothing could move (no stage had a message or a timer) and some stages had not ended:
    /// a deadlock, or a pipeline that waits for something the test never does.
    Stuck,
    /// The step limit ([`Sim::max_steps`](super::Sim::max_steps)) was reached: a livelock, or
    /// a pipeline that never ends (a timer that keeps firing, say).
    StepLimit(u64),
    /// A check failed: one of the run's own (counters that do not balance), or one a stage or
    /// the test made with [`check`](super::check).
    Check(String),
    /// The test panicked (an assertion in [`explore`](super::explore)'s closure).
    Panicked(String),
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailureKind::Stuck => f.write_str("stuck: nothing can move and stages have not ended"),
            FailureKind::StepLimit(n) => write!(f, "step limit of {n} reached"),
            FailureKind::Check(m) => write!(f, "check failed: {m}"),
            FailureKind::Panicked(m) => write!(f, "the test panicked: {m}"),
        }
    }
}

/// A run that failed, with the seed that replays it and every stage's state at that point.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Failure {
    /// The seed: `Sim::new(seed)` with the same test replays the run, step for step.
    pub seed: u64,
    /// What went wrong.
    pub kind: FailureKind,
    /// Turns taken when it was seen.
    pub steps: u64,
    /// Virtual time that had passed.
    pub elapsed: Duration,
    /// Every stage, in the order they were built.
    pub stages: Vec<StageState>,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "simulation seed {} failed after {} steps ({:?} of virtual time): {}",
            self.seed, self.steps, self.elapsed, self.kind
        )?;
        for s in &self.stages {
            writeln!(f, "  {s}")?;
        }
        write!(
            f,
            "replay: Sim::new({}) (or STAGEFLOW_SIM_SEED={} with sim::explore)",
            self.seed, self.seed
        )
    }
}

impl std::error::Error for Failure {}
