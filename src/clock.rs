//! Where the stage loop reads the time: the real clock, or a simulation's virtual one.
//!
//! A [simulation](crate::sim) runs every stage on one thread and moves time itself: while it
//! steps a stage (or runs the code that builds and drives its stages) it sets this thread's
//! virtual time, and timers, `send_after`, subscribe and end deadlines read it. Everywhere
//! else `now` is [`Instant::now`], at the cost of one thread-local read; the common turn of
//! the loop (wait on the inbox, handle what comes) never reads the time at all.

use std::cell::Cell;
use std::time::Instant;

thread_local! {
    static VIRTUAL: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// The current time: this thread's virtual time while a simulation runs on it, else the
/// real clock's.
#[inline]
pub(crate) fn now() -> Instant {
    VIRTUAL.with(Cell::get).unwrap_or_else(Instant::now)
}

/// Sets (or, with `None`, clears) this thread's virtual time; returns what was set before.
pub(crate) fn set_virtual(at: Option<Instant>) -> Option<Instant> {
    VIRTUAL.with(|v| v.replace(at))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn virtual_time_is_what_was_set_until_cleared() {
        let at = Instant::now() + Duration::from_secs(3600);
        assert_eq!(set_virtual(Some(at)), None);
        assert_eq!(now(), at);
        assert_eq!(set_virtual(None), Some(at));
        assert!(now() < at);
    }
}
