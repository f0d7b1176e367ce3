//! The simulation running on this thread, as the rest of the crate sees it: where a stage
//! being built goes instead of a thread, what must be kept alive while it runs, and the
//! failed checks stages report.

use std::any::Any;
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Instant;

use super::task::Task;

/// What code running inside a simulation hands to it.
#[derive(Default)]
pub(crate) struct Current {
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

fn with<R>(f: impl FnOnce(&Current) -> R) -> Option<R> {
    CURRENT.with(|c| c.borrow().as_ref().map(|c| f(c)))
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
