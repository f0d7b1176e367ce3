//! The simulation running on this thread, as the rest of the crate sees it: where a stage
//! being built goes instead of a thread, what must be kept alive while it runs, and the
//! failed checks stages report.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Instant;

use super::scheduler::{Round, Scheduler};
use super::task::Task;

/// A simulation's state, shared by its [`Sim`](super::Sim) and the code running inside it.
pub(crate) struct Current {
    /// The stages and the schedule; borrowed for one round at a time, so that code between
    /// rounds (an action, a build) may step it too.
    pub(crate) scheduler: RefCell<Scheduler>,
    /// The step limit of a run.
    pub(crate) max_steps: Cell<u64>,
    /// Stages built since the scheduler last looked.
    pub(crate) newcomers: RefCell<Vec<Box<dyn Task>>>,
    /// What a non-blocking subscribe leaves behind and must outlive the run (the producer
    /// takes a dropped answer channel for a withdrawn request).
    pub(crate) kept: RefCell<Vec<Box<dyn Any>>>,
    /// Checks that failed, in the order they failed.
    pub(crate) failures: RefCell<Vec<String>>,
}

thread_local! {
    static CURRENT: RefCell<Option<Rc<Current>>> = const { RefCell::new(None) };
}

/// Makes `current` this thread's simulation, at virtual time `now`, until dropped (which
/// restores what was there before: simulations do not nest, but a guard is cheap).
pub(crate) struct Entered {
    before: Option<Rc<Current>>,
    clock_before: Option<Instant>,
}

impl Entered {
    pub(crate) fn new(current: &Rc<Current>, now: Instant) -> Entered {
        let before = CURRENT.with(|c| c.replace(Some(current.clone())));
        let clock_before = crate::clock::set_virtual(Some(now));
        Entered {
            before,
            clock_before,
        }
    }
}

impl Drop for Entered {
    fn drop(&mut self) {
        CURRENT.with(|c| *c.borrow_mut() = self.before.take());
        crate::clock::set_virtual(self.clock_before.take());
    }
}

impl Current {
    pub(crate) fn new(seed: u64, max_steps: u64) -> Current {
        Current {
            scheduler: RefCell::new(Scheduler::new(seed)),
            max_steps: Cell::new(max_steps),
            newcomers: RefCell::default(),
            kept: RefCell::default(),
            failures: RefCell::default(),
        }
    }

    /// Stages built since the last look join the schedule.
    pub(crate) fn take_newcomers(&self, scheduler: &mut Scheduler) {
        let newcomers = std::mem::take(&mut *self.newcomers.borrow_mut());
        if !newcomers.is_empty() {
            scheduler.enlist(newcomers);
        }
    }
}

/// Steps the simulation running on this thread until `ready` says so, or nothing can move,
/// or the step limit is reached; returns whether `ready` said so. `None` when no simulation
/// runs here or it is being stepped already (code inside a stage's turn): the caller cannot
/// wait then.
///
/// This is how the crate's blocking calls work inside a simulation (a build-time
/// subscription's answer, a call's reply, a join): instead of blocking the thread, they run
/// the schedule until what they wait for has happened.
///
/// `ready` is asked at least once, whatever happens.
pub(crate) fn wait_until(mut ready: impl FnMut() -> bool) -> Option<bool> {
    let Some(current) = CURRENT.with(|c| c.borrow().clone()) else {
        ready();
        return None;
    };
    loop {
        if ready() {
            return Some(true);
        }
        let Ok(mut scheduler) = current.scheduler.try_borrow_mut() else {
            return None;
        };
        current.take_newcomers(&mut scheduler);
        if scheduler.steps >= current.max_steps.get() {
            return Some(false);
        }
        match scheduler.round() {
            Round::Worked => {}
            Round::Idle(Some(at)) => scheduler.set_now(at),
            Round::Idle(None) | Round::AllEnded => {
                drop(scheduler);
                return Some(ready());
            }
        }
    }
}

fn with<R>(f: impl FnOnce(&Current) -> R) -> Option<R> {
    CURRENT.with(|c| c.borrow().as_ref().map(|c| f(c)))
}

/// Whether a simulation runs on this thread and may be stepped now (this is not a stage's
/// turn): a wait can then run the schedule.
pub(crate) fn can_wait() -> bool {
    CURRENT.with(|c| {
        c.borrow()
            .as_ref()
            .is_some_and(|c| c.scheduler.try_borrow_mut().is_ok())
    })
}

/// Whether a simulation runs on this thread.
pub(crate) fn active() -> bool {
    CURRENT.with(|c| c.borrow().is_some())
}

/// Hands a stage being built to the simulation on this thread; gives it back if there is none.
pub(crate) fn enlist(task: Box<dyn Task>) -> Result<(), Box<dyn Task>> {
    let mut task = Some(task);
    with(|c| {
        c.newcomers
            .borrow_mut()
            .push(task.take().expect("taken once"))
    });
    match task {
        None => Ok(()),
        Some(task) => Err(task),
    }
}

/// Keeps `value` alive until the simulation on this thread is dropped (dropped at once if
/// there is none).
pub(crate) fn keep(value: Box<dyn Any>) {
    with(move |c| c.kept.borrow_mut().push(value));
}

/// Records a failed check; `false` if no simulation runs on this thread.
pub(crate) fn fail(message: String) -> bool {
    with(move |c| c.failures.borrow_mut().push(message)).is_some()
}

/// What [`send_when_room`] came to.
pub(crate) enum Sent<E> {
    Done,
    /// The receiving stage has ended.
    Gone(E),
    /// Still full: nothing could move, or (`not_run`) the schedule could not run here (no
    /// simulation on this thread, or this is a stage's own turn).
    NoRoom {
        env: E,
        not_run: bool,
    },
}

/// Sends `env` into `tx` (a simulated stage's inbox) once it has room, running the schedule
/// meanwhile: how the crate's blocking sends wait inside a simulation.
pub(crate) fn send_when_room<E>(tx: &crossbeam_channel::Sender<E>, env: E) -> Sent<E> {
    let mut env = Some(env);
    let mut gone = false;
    let waited = wait_until(|| {
        let Some(e) = env.take() else { return true };
        match tx.try_send(e) {
            Ok(()) => true,
            Err(crossbeam_channel::TrySendError::Full(e)) => {
                env = Some(e);
                false
            }
            Err(crossbeam_channel::TrySendError::Disconnected(e)) => {
                env = Some(e);
                gone = true;
                true
            }
        }
    });
    match env {
        None => Sent::Done,
        Some(e) if gone => Sent::Gone(e),
        Some(e) => Sent::NoRoom {
            env: e,
            not_run: waited.is_none(),
        },
    }
}
