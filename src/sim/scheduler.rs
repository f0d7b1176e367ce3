//! The scheduler: the simulated stages, the seeded choice of which takes the next turn, and
//! virtual time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::rng::Rng;
use super::task::{Phase, Step, Task};

/// What one round of the scheduler came to.
pub(crate) enum Round {
    /// A stage took a turn.
    Worked,
    /// No stage could move; the earliest time one can (a timer, a deadline), if any.
    Idle(Option<Instant>),
    /// Every stage has ended.
    AllEnded,
}

pub(crate) struct Entry {
    pub(crate) task: Box<dyn Task>,
    /// How likely it is to be picked against the others (see `Scheduler::weighted`).
    weight: u64,
}

/// The stages and the schedule.
pub(crate) struct Scheduler {
    pub(crate) stages: Vec<Entry>,
    schedule: Rng,
    pub(crate) start: Instant,
    pub(crate) now: Instant,
    pub(crate) step_time: Duration,
    pub(crate) steps: u64,
    pub(crate) hash: u64,
    /// The virtual time since `start`, for [`SimClock`](super::SimClock)s.
    pub(crate) nanos: Arc<AtomicU64>,
    /// The stages not ended, reused by every round.
    candidates: Vec<usize>,
    /// Half the seeds give each stage a weight drawn from 1 to 64, so that some stages run
    /// far more often than others (a starved consumer, a producer that races ahead): orders
    /// a uniform pick almost never makes. The other half pick uniformly.
    weighted: bool,
}

impl Scheduler {
    pub(crate) fn new(seed: u64) -> Scheduler {
        let start = Instant::now();
        let mut schedule = Rng::new(seed);
        let weighted = schedule.below(2) == 1;
        Scheduler {
            weighted,
            stages: Vec::new(),
            schedule,
            start,
            now: start,
            step_time: Duration::from_micros(1),
            steps: 0,
            hash: 0xcbf2_9ce4_8422_2325,
            nanos: Arc::default(),
            candidates: Vec::new(),
        }
    }

    pub(crate) fn enlist(&mut self, tasks: Vec<Box<dyn Task>>) {
        for task in tasks {
            let weight = if self.weighted {
                1 << self.schedule.below(7)
            } else {
                1
            };
            self.stages.push(Entry { task, weight });
        }
    }

    /// Takes one of `candidates` out, drawn by weight.
    fn pick(&mut self, candidates: &mut Vec<usize>) -> usize {
        let k = if self.weighted {
            let total: u64 = candidates.iter().map(|&i| self.stages[i].weight).sum();
            let mut r = self.schedule.below(total);
            candidates
                .iter()
                .position(|&i| {
                    let w = self.stages[i].weight;
                    if r < w {
                        true
                    } else {
                        r -= w;
                        false
                    }
                })
                .unwrap_or(0)
        } else {
            self.schedule.below(candidates.len() as u64) as usize
        };
        candidates.swap_remove(k)
    }

    pub(crate) fn all_ended(&self) -> bool {
        self.stages.iter().all(|e| e.task.phase() == Phase::Ended)
    }

    /// Moves virtual time to `now` (never back).
    pub(crate) fn set_now(&mut self, now: Instant) {
        self.now = now.max(self.now);
        crate::clock::set_virtual(Some(self.now));
        self.nanos
            .store((self.now - self.start).as_nanos() as u64, Ordering::Relaxed);
    }

    /// One round: stages not ended are tried in an order drawn from the seed (by weight)
    /// until one takes a turn; virtual time then moves by the step time.
    pub(crate) fn round(&mut self) -> Round {
        let mut candidates = std::mem::take(&mut self.candidates);
        candidates.clear();
        candidates.extend(
            (0..self.stages.len()).filter(|&i| self.stages[i].task.phase() != Phase::Ended),
        );
        if candidates.is_empty() {
            self.candidates = candidates;
            return Round::AllEnded;
        }
        let mut earliest: Option<Instant> = None;
        let mut worked = false;
        while !candidates.is_empty() {
            let i = self.pick(&mut candidates);
            let entry = &mut self.stages[i];
            match entry.task.step() {
                Step::Worked => {
                    self.steps += 1;
                    self.hash = (self.hash ^ i as u64).wrapping_mul(0x0100_0000_01b3);
                    worked = true;
                    break;
                }
                Step::Idle(at) => {
                    if let Some(at) = at {
                        earliest = Some(earliest.map_or(at, |e: Instant| e.min(at)));
                    }
                }
                Step::Ended => {}
            }
        }
        self.candidates = candidates;
        if worked {
            let next = self.now + self.step_time;
            self.set_now(next);
            Round::Worked
        } else {
            Round::Idle(earliest)
        }
    }
}
