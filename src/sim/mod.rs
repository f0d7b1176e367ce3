//! Deterministic simulation: a whole pipeline on one thread, under a seeded scheduler, on
//! virtual time; a failure is replayed from its seed, step for step.
//!
//! On threads, the order in which stages take their turns is the operating system's, and a
//! bug that needs one particular order shows once in a thousand runs and not again. Inside a
//! [`Sim`], [`spawn`](crate::StageBuilder::spawn) starts no thread: the stage joins the
//! simulation, and a scheduler steps every stage's loop on the calling thread, picking the
//! next stage to take a turn with a generator seeded by the run's seed. The stages are the
//! ones you ship (your `Producer`, `Consumer` and `ProducerConsumer` impls, the crate's
//! dispatchers, buffers, demand and cancel modes): the same loop as on a thread, with every
//! wait replaced by "not ready, pick another". Channels keep their capacities, so
//! back-pressure behaves as on threads: a stage whose peer's inbox is full is not ready
//! until the peer has taken something.
//!
//! Time is virtual. Timers, [`send_after`](crate::Context::send_after), subscribe and end
//! deadlines read the simulation's clock, which moves by [`Sim::step_time`] per turn and
//! jumps to the next timer whenever every stage is idle: an hour of timers takes as long as
//! the turns in it. (A flow's windows read their own [`Clock`](crate::flow::Clock): give
//! them [`Sim::clock`].)
//!
//! # Testing your pipeline
//!
//! Build the pipeline inside [`Sim::build`], run it with [`Sim::run`], and look at what it
//! did. [`explore`] does that for many seeds and stops at the first that fails; the
//! [`Failure`] names the seed, and `Sim::new(seed)` (or `STAGEFLOW_SIM_SEED=seed` with
//! `explore`) replays it. Faults come from the seed too: draw them from [`Sim::rng`].
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use stageflow::fns::{ForEach, Map};
//! use stageflow::sim::{self, Sim};
//! use stageflow::SubscribeOptions;
//!
//! let explored = sim::explore(0..200, |sim: &mut Sim| {
//!     let seen = Arc::new(Mutex::new(Vec::new()));
//!     let into = seen.clone();
//!     // A fault drawn from the seed: the doubler is stopped at some step, or never.
//!     let stop_at = sim.rng().below(400);
//!     let doubler = sim.build(|| -> Result<_, Box<dyn std::error::Error>> {
//!         let numbers = stageflow::from_iter(0..100u64).spawn()?;
//!         let doubler = stageflow::producer_consumer(Map::new(|n: u64| n * 2))
//!             .subscribe_to(&numbers, SubscribeOptions::new().max_demand(4))?
//!             .spawn()?;
//!         stageflow::consumer(ForEach::new(move |n: u64| into.lock().unwrap().push(n)))
//!             .subscribe_to(&doubler, SubscribeOptions::new().max_demand(3))?
//!             .spawn()?;
//!         Ok(doubler)
//!     }).expect("the pipeline builds");
//!     let stopper = doubler.clone();
//!     sim.at(stop_at, move || stopper.stop());
//!     // Every stage ends, the counters balance, and nothing is left in a queue...
//!     let report = sim.run()?;
//!     // ...and what arrived is a prefix of what was sent, in order.
//!     let seen = seen.lock().unwrap();
//!     let expected: Vec<u64> = (0..seen.len() as u64).map(|n| n * 2).collect();
//!     sim::check(*seen == expected, || format!("out of order: {seen:?}"));
//!     sim::check(report.steps > 0, || "nothing ran".into());
//!     Ok(())
//! });
//! assert_eq!(explored.expect("no seed fails"), 200);
//! ```
//!
//! # What a run checks
//!
//! [`Sim::run`] returns a [`Failure`] when:
//!
//! - nothing can move (no stage has a message, a backlog with room, or a timer) and some
//!   stages have not ended: [`FailureKind::Stuck`], with every stage's state (phase, inbox,
//!   counters, each subscription's outstanding demand);
//! - the step limit is reached (a livelock, or a pipeline that never ends):
//!   [`FailureKind::StepLimit`];
//! - a [`check`] failed, made by a stage's callback or by the test;
//! - once every stage has ended, the counters do not balance by the equations of
//!   [`Counters`](crate::Counters): every event sent on a link was received
//!   (`Σ events_out = Σ events_in`), no producer emitted an event it did not send or
//!   discard (`emitted ≤ events_out + discarded`), and nothing is left buffered.
//!
//! Order within a subscription is the test's to check (the events are yours); [`check`]
//! records it as a failure of the run rather than a panic in a stage.
//!
//! # What the simulation cannot see
//!
//! - **Real scheduling.** A turn is atomic here: the interleavings explored are those of
//!   whole turns, not of the instructions inside them (crossbeam's channels and the
//!   counters' atomics are not interleaved). Races inside one turn need loom or shuttle.
//! - **The network, files and anything that blocks outside the crate's calls.** The HTTP
//!   and Redis sources, the pipeline layer's supervisor and every layer that starts a thread
//!   of its own run on real threads, outside the schedule. A callback that blocks (a sleep, a
//!   lock held elsewhere) blocks the whole simulation. The crate's own waits know better:
//!   called from the test's code (inside [`Sim::build`], an action, or [`explore`]'s
//!   closure), a `cast`, `call`, `join` or build-time subscription runs the schedule until
//!   what it waits for has happened. Called from inside a stage's turn, where the schedule
//!   cannot run, a call or subscribe fails as at its timeout and a blocking
//!   `Mailbox::cast` into a full inbox panics naming the stage (a hang otherwise): use
//!   `try_cast` in simulated stages.
//! - **Streams.** A [`Stream`](crate::Stream) consumes on the caller's thread; it has no
//!   place in a schedule.
//! - **Wall-clock time.** Only the crate's timers and [`Sim::clock`] follow virtual time;
//!   `Instant::now()` in your own code reads the real clock.
//!
//! A stage built inside a simulation can be handled as on threads (`stop`, `finish`,
//! `cancel`, `ask`, `cast`, `info`, counters, and, once the run is over, `join`,
//! `join_state` and `join_result`); subscribe a running stage with [`subscribe`], which
//! does not wait for the producer's answer.

mod current;
mod report;
mod rng;
mod scheduler;
mod task;

pub use report::{Failure, FailureKind, Report, StageState};
pub use rng::Rng;

/// The message of a panic [`Sim::panic_at`] injects (a panic hook can tell it from others).
pub const INJECTED_PANIC: &str = "panic injected by the simulation (Sim::panic_at)";

pub(crate) use current::{active, can_wait, enlist, keep, send_when_room, wait_until, Sent};
pub(crate) use task::StageTask;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use current::{Current, Entered};
use scheduler::Round;
use task::{Phase, Task};

use crate::error::SubscribeError;
use crate::handle::{Consumes, Role, Stage};
use crate::shared::{Shared, StageKind};
use crate::subscription::{SubscribeOptions, SubscriptionId};
use crate::upstream::Upstream;

/// The default limit on turns in one simulation (see [`Sim::max_steps`]).
const MAX_STEPS: u64 = 2_000_000;

/// A simulation: stages built inside it run on the calling thread, one turn at a time, in an
/// order drawn from its seed. See the [module docs](self).
pub struct Sim {
    seed: u64,
    rng: Rng,
    current: Rc<Current>,
    /// Actions by the step they run at, in the order they were given.
    actions: Vec<(u64, Box<dyn FnOnce()>)>,
    balance: bool,
}

impl Sim {
    /// A simulation whose every choice follows from `seed`.
    pub fn new(seed: u64) -> Sim {
        Sim {
            seed,
            rng: Rng::new(seed ^ 0x5EED_0F7E_5700_0000),
            current: Rc::new(Current::new(seed, MAX_STEPS)),
            actions: Vec::new(),
            balance: true,
        }
    }

    /// The seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The test's own generator, seeded from the run's seed (apart from the scheduler's, so
    /// drawing from it does not change the schedule): draw faults and inputs from it.
    pub fn rng(&mut self) -> &mut Rng {
        &mut self.rng
    }

    /// How far virtual time moves with each turn (1 µs by default; zero stops it moving
    /// between timers).
    pub fn step_time(&mut self, per_turn: Duration) -> &mut Sim {
        self.current.scheduler.borrow_mut().step_time = per_turn;
        self
    }

    /// At most this many turns in the simulation's life before a run fails with
    /// [`FailureKind::StepLimit`] (2 000 000 by default).
    pub fn max_steps(&mut self, steps: u64) -> &mut Sim {
        self.current.max_steps.set(steps);
        self
    }

    /// Whether a run that ends checks the counters' balance (on by default; turn it off for
    /// a pipeline that exchanges events with stages outside the simulation).
    pub fn balance_checks(&mut self, on: bool) -> &mut Sim {
        self.balance = on;
        self
    }

    /// Runs `build` inside the simulation: the stages it spawns join the simulation instead
    /// of starting threads. Returns what `build` returns, typically the handles.
    ///
    /// What blocks on threads runs the schedule here instead, until what it waits for has
    /// happened: `spawn` returns once the stage holds its subscriptions, as on threads (the
    /// stages built before take turns meanwhile).
    pub fn build<R>(&mut self, build: impl FnOnce() -> R) -> R {
        let now = self.current.scheduler.borrow().now;
        let entered = Entered::new(&self.current, now);
        let r = build();
        drop(entered);
        self.current
            .take_newcomers(&mut self.current.scheduler.borrow_mut());
        r
    }

    /// Runs `action` inside the simulation just before turn `step` (counted from the start
    /// of the simulation; at once if that turn has passed): stop or finish a stage, cancel a
    /// subscription, drop a handle (move it in), [`subscribe`]. If nothing can move before
    /// that turn, the action runs then.
    pub fn at(&mut self, step: u64, action: impl FnOnce() + 'static) -> &mut Sim {
        let at = self.actions.partition_point(|(s, _)| *s <= step);
        self.actions.insert(at, (step, Box::new(action)));
        self
    }

    /// Makes `stage`'s `k`-th callback from now (1: the next) panic where it starts, as if
    /// your code had panicked there: mid-turn, between two batches of a message, inside a
    /// replay. The stage ends with [`Reason::Panicked`](crate::Reason::Panicked) and its
    /// subscribers follow their cancel modes. Returns `false` if the stage is not part of this
    /// simulation (or has ended).
    pub fn panic_at(&mut self, stage: &impl crate::AsStageRef, k: u64) -> bool {
        let target = stage.stage_ref();
        let mut scheduler = self.current.scheduler.borrow_mut();
        match scheduler
            .stages
            .iter_mut()
            .find(|e| Arc::ptr_eq(e.task.shared(), target.shared()))
        {
            Some(entry) if entry.task.phase() != Phase::Ended => {
                entry.task.panic_at_callback(k);
                true
            }
            _ => false,
        }
    }

    /// A flow [`Clock`](crate::flow::Clock) on this simulation's virtual time (time since
    /// the simulation was made): windows given it close as the simulation's time passes.
    pub fn clock(&self) -> SimClock {
        SimClock {
            nanos: self.current.scheduler.borrow().nanos.clone(),
        }
    }

    /// Virtual time since the simulation was made.
    pub fn elapsed(&self) -> Duration {
        let s = self.current.scheduler.borrow();
        s.now - s.start
    }

    /// Turns taken so far.
    pub fn steps(&self) -> u64 {
        self.current.scheduler.borrow().steps
    }

    /// Every stage's state now.
    pub fn stages(&self) -> Vec<StageState> {
        let s = self.current.scheduler.borrow();
        s.stages.iter().map(|e| state_of(e.task.as_ref())).collect()
    }

    /// Runs until every stage has ended, then checks the counters (see the [module
    /// docs](self#what-a-run-checks)).
    ///
    /// # Errors
    ///
    /// A [`Failure`] with the seed and every stage's state: stuck, step limit, a failed check.
    pub fn run(&mut self) -> Result<Report, Failure> {
        match self.drive(None) {
            Err(kind) => Err(self.failure(kind)),
            Ok(false) => Err(self.failure(FailureKind::Stuck)),
            Ok(true) => {
                if let Some(kind) = self.balance_failure() {
                    return Err(self.failure(kind));
                }
                Ok(self.report())
            }
        }
    }

    /// Runs until nothing can move (every stage ended, or idle with no timer pending) and
    /// returns without calling that a failure: for a test that then acts (finishes a
    /// producer, say) and runs again. The counters are checked only if every stage ended.
    ///
    /// # Errors
    ///
    /// As [`Sim::run`], except [`FailureKind::Stuck`].
    pub fn run_until_idle(&mut self) -> Result<Report, Failure> {
        match self.drive(None) {
            Err(kind) => Err(self.failure(kind)),
            Ok(ended) => {
                if ended {
                    if let Some(kind) = self.balance_failure() {
                        return Err(self.failure(kind));
                    }
                }
                Ok(self.report())
            }
        }
    }

    /// Runs for `duration` of virtual time (or until nothing can move), then returns.
    ///
    /// # Errors
    ///
    /// As [`Sim::run_until_idle`].
    pub fn run_for(&mut self, duration: Duration) -> Result<Report, Failure> {
        let until = self.current.scheduler.borrow().now + duration;
        match self.drive(Some(until)) {
            Err(kind) => Err(self.failure(kind)),
            Ok(_) => Ok(self.report()),
        }
    }

    // -- Driving the scheduler ---------------------------------------------------------------

    /// Takes rounds until every stage has ended (`Ok(true)`), nothing can move
    /// (`Ok(false)`), or `until` is reached (`Ok(false)`). Actions run between rounds, with
    /// the scheduler free for what they do.
    fn drive(&mut self, until: Option<Instant>) -> Result<bool, FailureKind> {
        let now = self.current.scheduler.borrow().now;
        let _entered = Entered::new(&self.current, now);
        loop {
            self.run_due_actions(false);
            if let Some(message) = self.current.failures.borrow().first() {
                return Err(FailureKind::Check(message.clone()));
            }
            let mut scheduler = self.current.scheduler.borrow_mut();
            self.current.take_newcomers(&mut scheduler);
            if scheduler.steps >= self.current.max_steps.get() {
                return Err(FailureKind::StepLimit(self.current.max_steps.get()));
            }
            let round = scheduler.round();
            match round {
                Round::Worked => {
                    if let Some(u) = until.filter(|u| scheduler.now >= *u) {
                        scheduler.set_now(u);
                        return Ok(false);
                    }
                    continue;
                }
                Round::AllEnded if self.actions.is_empty() => return Ok(true),
                Round::AllEnded | Round::Idle(_) => {}
            }
            drop(scheduler);
            // Nothing could move: an action may change that, then a timer.
            if self.run_due_actions(true) {
                continue;
            }
            let mut scheduler = self.current.scheduler.borrow_mut();
            match round {
                Round::Idle(Some(at)) if until.is_none_or(|u| at < u) => scheduler.set_now(at),
                _ => {
                    if let Some(u) = until {
                        scheduler.set_now(u);
                    }
                    return Ok(scheduler.all_ended());
                }
            }
        }
    }

    /// Runs the actions due at this step (or, with `next`, the next one whatever its step);
    /// returns whether any ran.
    fn run_due_actions(&mut self, next: bool) -> bool {
        let steps = self.steps();
        let mut ran = false;
        while let Some((step, _)) = self.actions.first() {
            // Not due yet: it runs only as the first of a `next` call.
            let first_of_next = next && !ran;
            if *step > steps && !first_of_next {
                break;
            }
            let (_, action) = self.actions.remove(0);
            action();
            ran = true;
        }
        ran
    }

    fn balance_failure(&self) -> Option<FailureKind> {
        if let Some(message) = self.current.failures.borrow().first() {
            return Some(FailureKind::Check(message.clone()));
        }
        if !self.balance {
            return None;
        }
        let scheduler = self.current.scheduler.borrow();
        let (mut out, mut inn) = (0u64, 0u64);
        for e in &scheduler.stages {
            let shared = e.task.shared();
            let c = shared.counters();
            out += c.events_out;
            inn += c.events_in;
            let inbox = shared.inbox().0;
            if inbox != 0 {
                return Some(FailureKind::Check(format!(
                    "stage {} ended with {inbox} messages left in its inbox",
                    shared.name
                )));
            }
            if c.buffered != 0 {
                return Some(FailureKind::Check(format!(
                    "stage {} ended with {} events still counted as buffered",
                    shared.name, c.buffered
                )));
            }
            if shared.kind() != StageKind::Consumer && c.emitted > c.events_out + c.discarded {
                return Some(FailureKind::Check(format!(
                    "stage {} emitted {} events but sent {} and discarded {}: {} unaccounted for",
                    shared.name,
                    c.emitted,
                    c.events_out,
                    c.discarded,
                    c.emitted - c.events_out - c.discarded
                )));
            }
        }
        if out != inn {
            return Some(FailureKind::Check(format!(
                "{out} events were sent on links and {inn} received: Σ events_out ≠ Σ events_in"
            )));
        }
        None
    }

    fn report(&self) -> Report {
        let hash = self.current.scheduler.borrow().hash;
        Report {
            seed: self.seed,
            steps: self.steps(),
            elapsed: self.elapsed(),
            schedule_hash: hash,
            stages: self.stages(),
        }
    }

    fn failure(&self, kind: FailureKind) -> Failure {
        Failure {
            seed: self.seed,
            kind,
            steps: self.steps(),
            elapsed: self.elapsed(),
            stages: self.stages(),
        }
    }
}

impl Drop for Sim {
    /// Stages still running are stopped and stepped to their end, so that their handles'
    /// `join` returns.
    fn drop(&mut self) {
        if let Ok(scheduler) = self.current.scheduler.try_borrow() {
            for e in &scheduler.stages {
                if e.task.phase() != Phase::Ended {
                    e.task
                        .shared()
                        .stop_requested
                        .store(true, Ordering::Relaxed);
                }
            }
        }
        self.actions.clear();
        self.current
            .max_steps
            .set(self.steps().saturating_add(100_000));
        let _ = catch_unwind(AssertUnwindSafe(|| self.drive(None)));
        self.current.kept.borrow_mut().clear();
    }
}

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim")
            .field("seed", &self.seed)
            .field("steps", &self.steps())
            .field("elapsed", &self.elapsed())
            .finish()
    }
}

fn state_of(task: &dyn Task) -> StageState {
    let shared: &Shared = task.shared();
    StageState {
        name: shared.name.to_string(),
        kind: shared.kind(),
        phase: task.phase().as_str(),
        outcome: shared.outcome(),
        inbox: shared.inbox().0,
        counters: shared.counters(),
    }
}

/// A flow [`Clock`](crate::flow::Clock) that reads a simulation's virtual time (see
/// [`Sim::clock`]).
#[derive(Clone, Debug, Default)]
pub struct SimClock {
    nanos: Arc<AtomicU64>,
}

impl crate::flow::Clock for SimClock {
    fn now(&self) -> Duration {
        Duration::from_nanos(self.nanos.load(Ordering::Relaxed))
    }
}

/// Records a failed check when `ok` is false: inside a simulation (a stage's callback, a
/// test's code between runs), the run fails with [`FailureKind::Check`] and the message;
/// outside one, it panics with the message (so a stage that checks works on threads too).
/// Returns `ok`.
pub fn check(ok: bool, message: impl FnOnce() -> String) -> bool {
    if !ok {
        let message = message();
        if !current::fail(message.clone()) {
            panic!("check failed: {message}");
        }
    }
    ok
}

/// Subscribes the running stage `consumer` to `producer` without waiting for the answer (a
/// simulation cannot wait inside a stage's turn: the answer comes when the producer takes its
/// turn). The stage holds the subscription as pending at once, so a cancel or an ask with the
/// returned id takes effect whatever comes first; if the producer refuses or has ended, the
/// stage forgets it. Outside a simulation it is [`Stage::subscribe_to`], which waits.
///
/// # Errors
///
/// [`SubscribeError::InvalidOption`] for bad options, [`SubscribeError::ConsumerGone`] if the
/// stage has ended; outside a simulation, those of [`Stage::subscribe_to`].
pub fn subscribe<S, R: Consumes<S>>(
    consumer: &Stage<S, R>,
    producer: &(impl Upstream<'static, <R as Role<S>>::In> + ?Sized),
    options: SubscribeOptions,
) -> Result<SubscriptionId, SubscribeError> {
    if !active() {
        return consumer.subscribe_to(producer, options);
    }
    let (sub, waiting) = consumer.subscribe_nowait(producer, options)?;
    keep(Box::new(waiting));
    Ok(sub)
}

/// Runs `test` once for each seed in `seeds`, each with a fresh [`Sim`], and stops at the
/// first that fails (an `Err`, or a panic in `test`). Returns how many seeds ran.
///
/// With the environment variable `STAGEFLOW_SIM_SEED` set to a seed, only that seed runs
/// (in `seeds` or not): the way to replay a failure without editing the test.
///
/// # Errors
///
/// The first [`Failure`], with its seed.
///
/// # Panics
///
/// If `STAGEFLOW_SIM_SEED` is set to something other than a decimal `u64`: a typo while
/// replaying would otherwise run every seed as if nothing were set.
pub fn explore(
    seeds: std::ops::Range<u64>,
    mut test: impl FnMut(&mut Sim) -> Result<(), Failure>,
) -> Result<u64, Failure> {
    let seeds = match std::env::var("STAGEFLOW_SIM_SEED") {
        Ok(s) => {
            let seed = s.trim().parse::<u64>().unwrap_or_else(|_| {
                panic!("STAGEFLOW_SIM_SEED={s:?} is not a seed: give a decimal u64, as a failure prints it")
            });
            // `seed..seed + 1` would overflow for the largest seed.
            Box::new(std::iter::once(seed)) as Box<dyn Iterator<Item = u64>>
        }
        Err(std::env::VarError::NotUnicode(s)) => {
            panic!("STAGEFLOW_SIM_SEED={s:?} is not a seed: give a decimal u64, as a failure prints it")
        }
        Err(std::env::VarError::NotPresent) => Box::new(seeds),
    };
    let mut ran = 0;
    for seed in seeds {
        let mut sim = Sim::new(seed);
        let now = sim.current.scheduler.borrow().now;
        let entered = Entered::new(&sim.current.clone(), now);
        let outcome = catch_unwind(AssertUnwindSafe(|| test(&mut sim)));
        drop(entered);
        ran += 1;
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(mut failure)) => {
                failure.seed = seed;
                return Err(failure);
            }
            Err(payload) => {
                let message = crate::unwind::describe(payload.as_ref());
                return Err(sim.failure(FailureKind::Panicked(message)));
            }
        }
        let failed = sim.current.failures.borrow().first().cloned();
        if let Some(message) = failed {
            return Err(sim.failure(FailureKind::Check(message)));
        }
    }
    Ok(ran)
}
