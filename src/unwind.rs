//! The one place where panics are caught: a stage thread's body.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};

use log::error;

use crate::reason::Reason;
use crate::runner::{Callbacks, Runner};

/// The body of every stage thread: run the loop, turn a panic into [`Reason::Panicked`], tell
/// the peers, run the stage's `terminate`, drop the stage, and publish the outcome last.
pub(crate) fn stage_main<S: Callbacks>(mut runner: Runner<'_, S>) {
    let shared = runner.shared().clone();
    let reason = match catch_unwind(AssertUnwindSafe(|| runner.run())) {
        Ok(reason) => reason,
        Err(payload) => panicked(&shared.name, payload.as_ref()),
    };
    crate::context::mark_ending();
    if catch_unwind(AssertUnwindSafe(|| runner.terminate(&reason))).is_err() {
        error!("stage {}: panicked while ending", shared.name);
    }
    put_away(runner, reason);
}

/// What a callback's panic is turned into (and logged as).
pub(crate) fn panicked(name: &str, payload: &(dyn Any + Send)) -> Reason {
    let msg = describe(payload);
    error!("stage {name}: a callback panicked: {msg}");
    Reason::Panicked(msg)
}

/// The last of a stage whose end is done: its `terminate`, its value kept or dropped, and
/// its outcome published, last.
pub(crate) fn put_away<S: Callbacks>(mut runner: Runner<'_, S>, reason: Reason) {
    let shared = runner.shared().clone();
    if catch_unwind(AssertUnwindSafe(|| runner.terminate_stage(&reason))).is_err() {
        error!("stage {}: its terminate callback panicked", shared.name);
    }
    if let Some(kept) = runner.kept() {
        // For `Stage::join_state`: the stage's value outlives its thread.
        *kept.lock() = Some(runner.into_stage().into_state());
    // The user's Drop runs here; a panic in it must not keep the outcome from being published.
    } else if catch_unwind(AssertUnwindSafe(move || drop(runner))).is_err() {
        error!("stage {}: panicked while being dropped", shared.name);
    }
    shared.set_outcome(reason);
}

/// The message a panic was raised with, from the payload that [`catch_unwind`] or
/// [`JoinHandle::join`](std::thread::JoinHandle::join) hands back: the text of a `panic!`
/// (a `&str` or a `String`), or `None` for another payload (one given to
/// [`panic_any`](std::panic::panic_any)). Like std's
/// [`PanicHookInfo::payload_as_str`](std::panic::PanicHookInfo::payload_as_str), for a panic
/// already caught.
///
/// The message of a stage that panicked ([`Reason::Panicked`]), of a supervised job
/// ([`JobFailure::Panicked`](crate::JobFailure::Panicked)) and of a pipeline message whose
/// handler panicked ([`Status::Failed`](crate::pipeline::Status::Failed)) are made with
/// it: a stage or layer of your own that catches panics can report them the same way.
///
/// # Examples
///
/// ```
/// use std::panic::{catch_unwind, panic_any};
///
/// let payload = catch_unwind(|| panic!("bad input: {}", 7)).unwrap_err();
/// assert_eq!(stageflow::panic_message(payload.as_ref()), Some("bad input: 7"));
///
/// let payload = catch_unwind(|| panic_any(7)).unwrap_err();
/// assert_eq!(stageflow::panic_message(payload.as_ref()), None);
/// ```
pub fn panic_message(payload: &(dyn Any + Send)) -> Option<&str> {
    if let Some(s) = payload.downcast_ref::<&str>() {
        Some(s)
    } else if let Some(s) = payload.downcast_ref::<String>() {
        Some(s)
    } else {
        None
    }
}

/// What a caught panic is reported as, in a [`Reason::Panicked`] or a
/// [`JobFailure::Panicked`](crate::JobFailure::Panicked).
pub(crate) fn describe(payload: &(dyn Any + Send)) -> String {
    panic_message(payload)
        .unwrap_or("panic with a non-string payload")
        .to_owned()
}
