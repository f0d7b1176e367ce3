//! The one place where panics are caught: a stage thread's body.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};

use log::error;

use crate::reason::Reason;
use crate::runner::{Callbacks, Runner};

/// The body of every stage thread: run the loop, turn a panic into [`Reason::Panicked`], tell
/// the peers, run the stage's `terminate`, drop the stage, and publish the outcome last.
pub(crate) fn stage_main<S: Callbacks>(mut runner: Runner<S>) {
    let shared = runner.shared().clone();
    let reason = match catch_unwind(AssertUnwindSafe(|| runner.run())) {
        Ok(reason) => reason,
        Err(payload) => {
            let msg = panic_message(payload.as_ref());
            error!("stage {}: a callback panicked: {msg}", shared.name);
            Reason::Panicked(msg)
        }
    };
    crate::context::mark_ending();
    if catch_unwind(AssertUnwindSafe(|| runner.terminate(&reason))).is_err() {
        error!("stage {}: panicked while ending", shared.name);
    }
    if catch_unwind(AssertUnwindSafe(|| runner.terminate_stage(&reason))).is_err() {
        error!("stage {}: its terminate callback panicked", shared.name);
    }
    if runner.keeps_state() {
        // For `Stage::join_state`: the stage's value outlives its thread.
        shared.set_state(runner.into_stage().into_state());
    // The user's Drop runs here; a panic in it must not keep the outcome from being published.
    } else if catch_unwind(AssertUnwindSafe(move || drop(runner))).is_err() {
        error!("stage {}: panicked while being dropped", shared.name);
    }
    shared.set_outcome(reason);
}

/// The message of a panic, from its payload.
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_owned()
    }
}
