//! A stage as a simulation steps it: the thread's body (`unwind::stage_main`) cut into turns
//! that never block.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Instant;

use log::error;

use crate::reason::Reason;
use crate::runner::{Callbacks, EndTurn, Ending, Runner, Turned};
use crate::shared::Shared;
use crate::unwind::{panicked, put_away};

/// What one step of a stage came to.
pub(crate) enum Step {
    /// It did something: every stage may have something to do now.
    Worked,
    /// Nothing to do until a message comes, or this (virtual) time.
    Idle(Option<Instant>),
    /// It has ended (its outcome is published).
    Ended,
}

/// Where a stage is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    Starting,
    Running,
    Ending,
    Ended,
}

impl Phase {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::Running => "running",
            Phase::Ending => "ending (waiting for its producers to confirm)",
            Phase::Ended => "ended",
        }
    }
}

/// A stage the scheduler can step, whatever its type.
pub(crate) trait Task {
    fn shared(&self) -> &Arc<Shared>;
    fn phase(&self) -> Phase;
    /// One turn.
    fn step(&mut self) -> Step;
    /// Makes the stage's `k`-th callback from now panic where it starts.
    fn panic_at_callback(&mut self, k: u64);
}

/// A stage's runner and where it is in its life.
pub(crate) struct StageTask<S: Callbacks + 'static> {
    shared: Arc<Shared>,
    runner: Option<Runner<'static, S>>,
    phase: Phase,
    ending: Option<(Ending, Reason)>,
}

impl<S: Callbacks + 'static> StageTask<S> {
    pub(crate) fn new(runner: Runner<'static, S>) -> StageTask<S> {
        StageTask {
            shared: runner.shared().clone(),
            runner: Some(runner),
            phase: Phase::Starting,
            ending: None,
        }
    }

    /// The loop is over: tell the peers (the end's first part), then wait in `Ending`.
    fn begin_end(&mut self, reason: Reason) {
        let Some(runner) = self.runner.as_mut() else {
            return;
        };
        crate::context::set_ending(true);
        match catch_unwind(AssertUnwindSafe(|| runner.end_begin(&reason))) {
            Ok(ending) => {
                self.ending = Some((ending, reason));
                self.phase = Phase::Ending;
            }
            Err(_) => {
                error!("stage {}: panicked while ending", self.shared.name);
                self.put_away(reason);
            }
        }
        crate::context::set_ending(false);
    }

    fn put_away(&mut self, reason: Reason) {
        self.phase = Phase::Ended;
        if let Some(runner) = self.runner.take() {
            crate::context::set_ending(true);
            put_away(runner, reason);
            crate::context::set_ending(false);
        }
    }

    fn step_ending(&mut self) -> Step {
        let (Some(runner), Some((ending, reason))) = (self.runner.as_mut(), self.ending.as_mut())
        else {
            return Step::Ended;
        };
        crate::context::set_ending(true);
        let turn = catch_unwind(AssertUnwindSafe(|| {
            runner.end_turn::<false>(ending, reason)
        }));
        crate::context::set_ending(false);
        match turn {
            Ok(EndTurn::More) => Step::Worked,
            Ok(EndTurn::Idle(until)) => Step::Idle(Some(until)),
            Ok(EndTurn::Done) => {
                let (ending, reason) = self.ending.take().expect("an ending stage has its end");
                crate::context::set_ending(true);
                let finished =
                    catch_unwind(AssertUnwindSafe(|| runner.end_finish(ending, &reason)));
                crate::context::set_ending(false);
                if finished.is_err() {
                    error!("stage {}: panicked while ending", self.shared.name);
                }
                self.put_away(reason);
                Step::Worked
            }
            Err(_) => {
                error!("stage {}: panicked while ending", self.shared.name);
                let (_, reason) = self.ending.take().expect("an ending stage has its end");
                self.put_away(reason);
                Step::Worked
            }
        }
    }
}

impl<S: Callbacks + 'static> Task for StageTask<S> {
    fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    fn phase(&self) -> Phase {
        self.phase
    }

    fn step(&mut self) -> Step {
        match self.phase {
            Phase::Ended => return Step::Ended,
            Phase::Ending => return self.step_ending(),
            Phase::Starting | Phase::Running => {}
        }
        let Some(runner) = self.runner.as_mut() else {
            return Step::Ended;
        };
        let starting = self.phase == Phase::Starting;
        let turned = catch_unwind(AssertUnwindSafe(|| {
            if starting {
                runner.start();
                Turned::Worked
            } else {
                runner.step()
            }
        }));
        self.phase = Phase::Running;
        match turned {
            Ok(Turned::Worked) => Step::Worked,
            Ok(Turned::Idle(until)) => Step::Idle(until),
            Ok(Turned::End(reason)) => {
                self.begin_end(reason);
                Step::Worked
            }
            Err(payload) => {
                let reason = panicked(&self.shared.name, payload.as_ref());
                self.begin_end(reason);
                Step::Worked
            }
        }
    }

    fn panic_at_callback(&mut self, k: u64) {
        // Where the loop starts a callback (`Runner::call`), through its timing.
        self.shared.timing.panic_at_callback(k);
    }
}
