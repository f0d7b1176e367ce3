//! Mapper lanes fused with their iterator sources: a flow made from iterators needs no source
//! stage of its own. Each lane is a producer that pulls a batch of items from the iterators
//! (shared by the lanes behind one lock, taken once per batch), runs the flow's fused
//! operations on it and emits the result: one thread and one channel crossing less per event
//! than a source stage feeding mapper stages, for the same number of parallel lanes.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::run::Ops;
use crate::{Context, Producer, Reason, Subscription};

/// An iterator a lane pulls from, `n` items at a time.
pub(crate) trait Pull<S>: Send {
    /// Appends up to `n` items to `out`; returns how many.
    fn pull(&mut self, n: usize, out: &mut Vec<S>) -> usize;
}

impl<I: Iterator + Send> Pull<I::Item> for I {
    fn pull(&mut self, n: usize, out: &mut Vec<I::Item>) -> usize {
        let before = out.len();
        out.extend(self.by_ref().take(n));
        out.len() - before
    }
}

/// The iterators of a flow, shared by its lanes: pulled in turn, a batch at a time, each
/// dropped once it ends.
pub(crate) struct Pool<'env, S> {
    iters: Vec<PullBox<'env, S>>,
    /// The iterator the next pull starts from.
    next: usize,
}

/// An iterator of a flow, as its pool holds it.
pub(crate) type PullBox<'env, S> = Box<dyn Pull<S> + 'env>;

impl<'env, S> Pool<'env, S> {
    pub(crate) fn new(iters: Vec<PullBox<'env, S>>) -> Pool<'env, S> {
        Pool { iters, next: 0 }
    }

    /// Appends up to `n` consecutive items of one iterator to `out` (the next in turn that
    /// has any); returns whether every iterator has ended.
    fn pull(&mut self, n: usize, out: &mut Vec<S>) -> bool {
        while !self.iters.is_empty() {
            let i = self.next % self.iters.len();
            let got = self.iters[i].pull(n, out);
            if got < n {
                // Ended: the next one takes its place in the turn.
                drop(self.iters.remove(i));
                self.next = i;
            } else {
                self.next = i + 1;
            }
            if got > 0 {
                break;
            }
        }
        self.iters.is_empty()
    }
}

/// Batches a lane pulls in one callback before it lets the stage handle its messages (a
/// filter that drops everything must not keep a lane from seeing a stop).
const PULLS_PER_TURN: usize = 16;

/// A mapper lane that is its own source: asked for events, it pulls batches of `batch` items
/// until it has emitted at least what was asked (what a batch makes beyond that waits in the
/// stage's buffer for the next ask), and finishes once the iterators have ended. Without a
/// batch size it pulls exactly what is asked: a plain source.
pub(crate) struct FusedLane<'env, S, T> {
    pool: Arc<Mutex<Pool<'env, S>>>,
    ops: Ops<'env, S, T>,
    /// Events the last batch made.
    last: usize,
    /// Items pulled at a time; `None`: as many as asked.
    batch: Option<usize>,
    consumers: usize,
    /// Demand asked and not yet met.
    owed: usize,
    /// Whether a [`Resume`] is on its way.
    resuming: bool,
}

/// A lane's message to itself: go on pulling for the demand still owed.
#[derive(Debug)]
pub(crate) struct Resume;

impl<'env, S, T> FusedLane<'env, S, T> {
    pub(crate) fn new(
        pool: Arc<Mutex<Pool<'env, S>>>,
        ops: Ops<'env, S, T>,
        batch: Option<usize>,
    ) -> FusedLane<'env, S, T> {
        FusedLane {
            pool,
            ops,
            last: 0,
            batch: batch.map(|b| b.max(1)),
            consumers: 0,
            owed: 0,
            resuming: false,
        }
    }

    /// Pulls and emits for the demand owed, at most [`PULLS_PER_TURN`] batches; what is
    /// still owed then is pulled after the stage has handled its messages. What the
    /// operations held back during the turn is emitted at its end.
    fn pull(&mut self, ctx: &mut Context<'_, T, Resume>) {
        let ended = self.turn(ctx);
        let held = self.ops.flush(ctx);
        self.owed = self.owed.saturating_sub(held);
        if ended {
            ctx.finish();
        } else if self.owed > 0 && !self.resuming {
            self.resuming = true;
            ctx.send_after(Resume, Duration::ZERO);
        }
    }

    /// Pulls and emits batches while demand is owed, at most [`PULLS_PER_TURN`]; returns
    /// whether the iterators have ended.
    fn turn(&mut self, ctx: &mut Context<'_, T, Resume>) -> bool {
        for _ in 0..PULLS_PER_TURN {
            if self.owed == 0 {
                return false;
            }
            let n = self.batch.unwrap_or(self.owed);
            let mut items = Vec::with_capacity(n);
            // A lane that panicked while pulling left the iterators as they were: the flow
            // fails with that lane, and the others go on with what is left.
            let ended = self
                .pool
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .pull(n, &mut items);
            if !items.is_empty() {
                let made = self.ops.emit(items, &mut self.last, ctx);
                self.owed = self.owed.saturating_sub(made);
            }
            if ended {
                return true;
            }
        }
        false
    }
}

impl<S, T> fmt::Debug for FusedLane<'_, S, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FusedLane")
            .field("batch", &self.batch)
            .finish()
    }
}

impl<S: Send, T: Send> Producer for FusedLane<'_, S, T> {
    type Out = T;
    type Message = Resume;

    fn handle_demand(&mut self, demand: usize, ctx: &mut Context<'_, T, Resume>) {
        self.owed = self.owed.saturating_add(demand);
        self.pull(ctx);
    }

    fn handle_message(&mut self, _: Resume, ctx: &mut Context<'_, T, Resume>) {
        self.resuming = false;
        self.pull(ctx);
    }

    fn handle_subscribe(&mut self, _: &Subscription, _: &mut Context<'_, T, Resume>) {
        self.consumers += 1;
    }

    fn handle_cancel(&mut self, _: &Subscription, _: &Reason, ctx: &mut Context<'_, T, Resume>) {
        self.consumers = self.consumers.saturating_sub(1);
        if self.consumers == 0 {
            ctx.stop(Reason::Normal);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pool_pulls_its_iterators_in_turn_and_drops_the_ended_ones() {
        let mut pool: Pool<'static, u32> = Pool::new(vec![
            Box::new(0..5u32),
            Box::new(10..12u32),
            Box::new(20..20u32),
        ]);
        let mut out = Vec::new();
        assert!(!pool.pull(2, &mut out));
        assert_eq!(out, [0, 1]);
        out.clear();
        // 10..12 gives its 2 and has not yet shown its end.
        assert!(!pool.pull(2, &mut out));
        assert_eq!(out, [10, 11]);
        out.clear();
        // 20..20 is empty: dropped, and the turn goes on to 0..5.
        assert!(!pool.pull(2, &mut out));
        assert_eq!(out, [2, 3]);
        out.clear();
        // 10..12 shows its end (dropped, nothing pulled), then 0..5 gives its last and ends.
        assert!(pool.pull(2, &mut out));
        assert_eq!(out, [4]);
        out.clear();
        assert!(pool.pull(2, &mut out));
        assert!(out.is_empty());
    }
}
