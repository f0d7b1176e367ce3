//! How a waiting stage polls its inbox before it blocks (see `Runner::next_envelope`): a
//! budget that adapts to whether polling pays, the yields that take polling's place when
//! stages outnumber cores, and the process-wide count of running stages that says which.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

/// How many times a waiting stage polls its inbox before it blocks.
const POLLS: u32 = 64;
/// The least it polls when polling has not paid.
const MIN_POLLS: u32 = 2;
/// How many times a waiting stage yields its core (looking at its inbox after each) before
/// it blocks, while more stages run than there are cores. Measured on 2 cores (BENCHMARKS.md,
/// "stop 22"): 8, 16 and 32 did about as well as each other and far better than none.
const YIELDS: u32 = 16;
/// The fewest yields a wait makes (while stages outnumber cores) when yielding has not paid:
/// enough to see that it pays again.
const MIN_YIELDS: u32 = 2;

/// The polling budget of one stage.
#[derive(Debug)]
pub(super) struct Polls {
    budget: u32,
    /// How many times the next wait yields when stages outnumber cores: like `budget`, it
    /// halves when yielding found nothing (the stage blocked anyway: its feeder waits on
    /// something else, a socket, a timer, a slow handler) and is whole again when a yield
    /// found a message.
    yield_budget: u32,
    cores: usize,
}

impl Polls {
    pub(super) fn new() -> Polls {
        Polls {
            budget: POLLS,
            yield_budget: YIELDS,
            cores: cores(),
        }
    }

    /// How many polls the next wait makes: none while more stages run than there are cores
    /// (polling would take time from a stage that could run).
    #[inline]
    pub(super) fn budget(&self) -> u32 {
        if fits(self.cores) {
            self.budget
        } else {
            0
        }
    }

    /// How many times the next wait yields before it blocks: up to [`YIELDS`] while more
    /// stages run than there are cores (when it does not poll), else none.
    #[inline]
    pub(super) fn yields(&self) -> u32 {
        if fits(self.cores) {
            0
        } else {
            self.yield_budget
        }
    }

    /// A wait's yields ended: `found` if one of them found a message (all [`YIELDS`] again),
    /// else the stage blocked after them (half as many next time, down to [`MIN_YIELDS`]).
    #[inline]
    pub(super) fn yielded(&mut self, found: bool) {
        self.yield_budget = if found {
            YIELDS
        } else {
            (self.yield_budget / 2).max(MIN_YIELDS)
        };
    }

    /// A poll found a message: the full budget again.
    #[inline]
    pub(super) fn found(&mut self) {
        self.budget = POLLS;
    }

    /// `polls` polls found nothing: half the budget, down to [`MIN_POLLS`].
    #[inline]
    pub(super) fn missed(&mut self, polls: u32) {
        if polls > 0 {
            self.budget = (self.budget / 2).max(MIN_POLLS);
        }
    }
}

static LIVE: AtomicUsize = AtomicUsize::new(0);

/// Counts one running stage for as long as it lives.
pub(super) struct Live;

impl Live {
    pub(super) fn enter() -> Live {
        LIVE.fetch_add(1, Ordering::Relaxed);
        Live
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        LIVE.fetch_sub(1, Ordering::Relaxed);
    }
}

fn cores() -> usize {
    static CORES: OnceLock<usize> = OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Whether every running stage can have one of `cores` cores.
#[inline]
fn fits(cores: usize) -> bool {
    LIVE.load(Ordering::Relaxed) <= cores
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_halves_on_a_miss_down_to_the_least_and_a_find_restores_it() {
        // `cores` is set past any count of stages this test binary runs at once.
        let mut p = Polls {
            budget: POLLS,
            yield_budget: YIELDS,
            cores: usize::MAX,
        };
        assert_eq!(p.budget(), 64);
        p.missed(64);
        assert_eq!(p.budget(), 32);
        for _ in 0..10 {
            p.missed(p.budget());
        }
        assert_eq!(p.budget(), MIN_POLLS);
        p.found();
        assert_eq!(p.budget(), 64);
        // A wait that did not poll (too many stages) leaves the budget alone.
        p.missed(0);
        assert_eq!(p.budget(), 64);
    }

    #[test]
    fn no_polling_but_yields_while_more_stages_run_than_there_are_cores() {
        let _live = Live::enter();
        let p = Polls {
            budget: POLLS,
            yield_budget: YIELDS,
            cores: 0,
        };
        assert_eq!(p.budget(), 0);
        assert_eq!(p.yields(), YIELDS);
        // With a core for every stage it polls and does not yield.
        let p = Polls {
            budget: POLLS,
            yield_budget: YIELDS,
            cores: usize::MAX,
        };
        assert_eq!(p.budget(), POLLS);
        assert_eq!(p.yields(), 0);
    }

    #[test]
    fn yields_halve_when_they_find_nothing_and_are_whole_again_when_one_finds_a_message() {
        let _live = Live::enter();
        let mut p = Polls {
            budget: POLLS,
            yield_budget: YIELDS,
            cores: 0,
        };
        p.yielded(false);
        assert_eq!(p.yields(), YIELDS / 2);
        for _ in 0..10 {
            p.yielded(false);
        }
        assert_eq!(p.yields(), MIN_YIELDS);
        p.yielded(true);
        assert_eq!(p.yields(), YIELDS);
    }
}
