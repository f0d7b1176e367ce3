//! [`Batch`] and the pure accumulator behind a batcher: a batch is emitted when it reaches its
//! size (a count, or a weight such as bytes), or when its timeout has passed since its first
//! message; it is never empty.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::recycle::Recycler;

use super::message::Message;

/// Why a batch was emitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Trigger {
    /// It reached its size.
    Size,
    /// Its timeout passed since its first message.
    Timeout,
    /// The batcher's producers all ended (a drain or the end of input): the remainder.
    Flush,
}

/// What a batch handler knows about its batch (Broadway's `%BatchInfo{}`).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct BatchInfo {
    /// The batcher's name.
    pub batcher: Arc<str>,
    /// The batch processor partition it goes to (0 without `partition_by`).
    pub partition: usize,
    /// Why it was emitted.
    pub trigger: Trigger,
}

/// A batch of messages for a batch handler. The handler may fail single messages with
/// [`Message::fail`]; returning an error or panicking fails all of them.
pub struct Batch<T> {
    /// The messages, in the order the batcher received them.
    pub messages: Vec<Message<T>>,
    /// About the batch.
    pub info: BatchInfo,
}

impl<T: fmt::Debug> fmt::Debug for Batch<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Batch")
            .field("messages", &self.messages)
            .field("info", &self.info)
            .finish()
    }
}

/// A message's weight, for [`BatchSize::Weight`].
pub type WeightFn<T> = Arc<dyn Fn(&Message<T>) -> usize + Send + Sync>;

/// How big a batch gets before it is emitted (Broadway's `batch_size`).
pub enum BatchSize<T> {
    /// This many messages.
    Count(usize),
    /// Until the summed weight of its messages reaches `limit` (the message that reaches it
    /// is included): size by bytes, say.
    Weight {
        /// The weight at which a batch is emitted.
        limit: usize,
        /// A message's weight.
        weight: WeightFn<T>,
    },
}

impl<T> BatchSize<T> {
    /// Batches by weight: emitted once the weights of its messages add up to `limit`.
    pub fn weight(
        limit: usize,
        weight: impl Fn(&Message<T>) -> usize + Send + Sync + 'static,
    ) -> BatchSize<T> {
        BatchSize::Weight {
            limit,
            weight: Arc::new(weight),
        }
    }
}

impl<T> Clone for BatchSize<T> {
    fn clone(&self) -> Self {
        match self {
            BatchSize::Count(n) => BatchSize::Count(*n),
            BatchSize::Weight { limit, weight } => BatchSize::Weight {
                limit: *limit,
                weight: weight.clone(),
            },
        }
    }
}

impl<T> fmt::Debug for BatchSize<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BatchSize::Count(n) => write!(f, "Count({n})"),
            BatchSize::Weight { limit, .. } => write!(f, "Weight {{ limit: {limit} }}"),
        }
    }
}

impl<T> From<usize> for BatchSize<T> {
    fn from(n: usize) -> BatchSize<T> {
        BatchSize::Count(n)
    }
}

/// One partition's batch in the making, and its timer.
///
/// A partition has at most one timer set at a time, whatever the rate of batches: a batch
/// that fills by size leaves the timer set, and a timer that fires before the batch then in
/// the making is due is set again for the rest of that batch's timeout
/// ([`on_timer`](Accumulator::on_timer)). A timer per batch, each left to fire, would keep
/// `rate × timeout` timers pending (200 000 at 20 M messages/s in batches of 100 with a
/// 1 s timeout) and cost a heap push and a map insert per batch.
pub(crate) struct Accumulator<T> {
    pending: Vec<Message<T>>,
    weight: usize,
    /// When the batch in the making got its first message (set only while it has one).
    started: Option<Instant>,
    /// Whether this partition's timer is set.
    timer_set: bool,
}

/// What a partition's timer finds when it fires.
#[derive(Debug)]
pub(crate) enum OnTimer<T> {
    /// The batch in the making is due: here it is.
    Due(Vec<Message<T>>),
    /// A batch is in the making but not yet due: set the timer again for this long.
    Again(Duration),
    /// Nothing is in the making: the timer stays unset until a batch starts.
    Idle,
}

impl<T> Accumulator<T> {
    pub(crate) fn new() -> Accumulator<T> {
        Accumulator {
            pending: Vec::new(),
            weight: 0,
            started: None,
            timer_set: false,
        }
    }

    /// Adds a message. Returns the full batch if it is now full, and whether the caller
    /// must set this partition's timer (for the batch's timeout from now): a batch is in
    /// the making and no timer is set.
    pub(crate) fn push(
        &mut self,
        m: Message<T>,
        size: &BatchSize<T>,
    ) -> (Option<Vec<Message<T>>>, bool) {
        let was_empty = self.pending.is_empty();
        let full = match size {
            BatchSize::Count(n) => {
                if was_empty {
                    // One allocation per batch, not one per doubling.
                    self.pending.reserve(*n);
                }
                self.pending.push(m);
                self.pending.len() >= *n
            }
            BatchSize::Weight { limit, weight } => {
                self.weight = self.weight.saturating_add(weight(&m));
                self.pending.push(m);
                self.weight >= *limit
            }
        };
        let batch = if full { self.take() } else { None };
        (batch, self.after_adding(was_empty))
    }

    /// Adds messages from `messages` until the batch has `n` (a batch by count): the same as
    /// [`push`](Accumulator::push) of each in turn until the batch is full, in one move of
    /// the run. Returns the full batch if it is now full, and whether the caller must set
    /// the timer. Takes nothing from an empty `messages`.
    #[cfg(test)]
    pub(crate) fn fill(
        &mut self,
        messages: &mut impl Iterator<Item = Message<T>>,
        n: usize,
    ) -> (Option<Vec<Message<T>>>, bool) {
        self.fill_with(n, |pending, room| {
            pending.extend(messages.by_ref().take(room))
        })
    }

    /// [`fill`](Accumulator::fill) from a batch of events, moved in one loop; the message's
    /// buffer, once emptied, goes back to `pool`.
    pub(crate) fn fill_from(
        &mut self,
        events: &mut crate::Events<'_, Message<T>>,
        n: usize,
        pool: &Recycler<Message<T>>,
    ) -> (Option<Vec<Message<T>>>, bool) {
        self.fill_with(n, |pending, room| {
            if let (_, Some(emptied)) = events.move_into_reclaiming(pending, room) {
                pool.give(emptied);
            }
        })
    }

    /// [`fill`](Accumulator::fill), `take(pending, room)` moving up to `room` messages in.
    fn fill_with(
        &mut self,
        n: usize,
        take: impl FnOnce(&mut Vec<Message<T>>, usize),
    ) -> (Option<Vec<Message<T>>>, bool) {
        let was_empty = self.pending.is_empty();
        if was_empty {
            // One allocation per batch, not one per doubling.
            self.pending.reserve(n);
        }
        let room = n.saturating_sub(self.pending.len()).max(1);
        take(&mut self.pending, room);
        let batch = if self.pending.len() >= n {
            self.take()
        } else {
            None
        };
        (batch, self.after_adding(was_empty))
    }

    /// After messages were added (and a full batch taken): notes when a batch that stays
    /// in the making started (a batch that started and filled in one call never needs its
    /// time), and says whether the timer must be set.
    fn after_adding(&mut self, was_empty: bool) -> bool {
        if self.pending.is_empty() {
            return false;
        }
        if was_empty {
            self.started = Some(crate::clock::now());
        }
        !std::mem::replace(&mut self.timer_set, true)
    }

    /// The batch in the making, if it is not empty.
    pub(crate) fn take(&mut self) -> Option<Vec<Message<T>>> {
        if self.pending.is_empty() {
            return None;
        }
        self.weight = 0;
        self.started = None;
        Some(std::mem::take(&mut self.pending))
    }

    /// This partition's timer fired at `now`: the batch in the making if `timeout` has
    /// passed since its first message, else how long it still has.
    pub(crate) fn on_timer(&mut self, now: Instant, timeout: Duration) -> OnTimer<T> {
        self.timer_set = false;
        let Some(started) = self.started.filter(|_| !self.pending.is_empty()) else {
            return OnTimer::Idle;
        };
        match started.checked_add(timeout) {
            Some(due) if due <= now => match self.take() {
                Some(batch) => OnTimer::Due(batch),
                None => OnTimer::Idle,
            },
            // Not yet (or so far off it cannot be represented: the timer's own deadline
            // saturates the same way).
            due => {
                self.timer_set = true;
                OnTimer::Again(due.map_or(timeout, |due| due - now))
            }
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(b: Option<Vec<Message<u32>>>) -> Option<Vec<u32>> {
        b.map(|v| v.into_iter().map(|m| m.data).collect())
    }

    #[test]
    fn by_count() {
        let size = BatchSize::Count(3);
        let mut a = Accumulator::new();
        let (b, set_timer) = a.push(Message::new(1), &size);
        assert!(b.is_none() && set_timer);
        assert!(!a.push(Message::new(2), &size).1);
        assert_eq!(data(a.push(Message::new(3), &size).0), Some(vec![1, 2, 3]));
        assert!(a.take().is_none(), "never an empty batch");
    }

    #[test]
    fn by_weight_includes_the_message_that_reaches_the_limit() {
        let size = BatchSize::weight(10, |m: &Message<u32>| m.data as usize);
        let mut a = Accumulator::new();
        assert!(a.push(Message::new(4), &size).0.is_none());
        assert_eq!(data(a.push(Message::new(7), &size).0), Some(vec![4, 7]));
        assert_eq!(data(a.push(Message::new(12), &size).0), Some(vec![12]));
    }

    #[test]
    fn filling_by_count_is_pushing_one_by_one() {
        for n in [1, 3, 4] {
            for runs in [vec![0, 2, 5, 1, 7], vec![3, 3, 3], vec![10]] {
                let size = BatchSize::Count(n);
                let (mut filled, mut pushed) = (Accumulator::new(), Accumulator::new());
                // How many times each said to set the timer (it never fires here).
                let (mut filled_timers, mut pushed_timers) = (0, 0);
                let mut next = 0u32;
                for len in runs {
                    let run: Vec<u32> = (next..next + len).collect();
                    next += len;
                    let mut by_push = Vec::new();
                    for &x in &run {
                        let (full, set_timer) = pushed.push(Message::new(x), &size);
                        by_push.extend(data(full));
                        pushed_timers += set_timer as usize;
                    }
                    let mut by_fill = Vec::new();
                    let mut messages = run.iter().map(|&x| Message::new(x)).peekable();
                    while messages.peek().is_some() {
                        let (full, set_timer) = filled.fill(&mut messages, n);
                        by_fill.extend(data(full));
                        filled_timers += set_timer as usize;
                    }
                    // The same batches; a timer set (once) whenever a batch is in the making.
                    assert_eq!(by_fill, by_push, "n {n}");
                    assert_eq!(filled.len(), pushed.len());
                    for (a, timers) in [(&filled, filled_timers), (&pushed, pushed_timers)] {
                        assert!(timers <= 1, "n {n}: {timers} timers");
                        assert!(
                            a.len() == 0 || timers == 1,
                            "n {n}: a batch without a timer"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn filling_from_a_message_gives_its_emptied_buffer_back_once_all_is_taken() {
        let pool = Recycler::new();
        let mut a = Accumulator::new();
        let message: Vec<Message<u32>> = (0..3).map(Message::new).collect();
        let at = message.as_ptr();
        let mut iter = message.into_iter();
        let mut events = crate::Events::new(&mut iter, 3, crate::SubscriptionId::unique());
        let (full, _) = a.fill_from(&mut events, 3, &pool);
        assert_eq!(data(full), Some(vec![0, 1, 2]));
        let back = pool.take(0).expect("the emptied message's buffer");
        assert!(back.is_empty());
        assert_eq!(back.as_ptr(), at, "its own allocation");
        // A message that fills one batch and starts the next.
        let mut iter = (3..8).map(Message::new).collect::<Vec<_>>().into_iter();
        let mut events = crate::Events::new(&mut iter, 5, crate::SubscriptionId::unique());
        let (full, _) = a.fill_from(&mut events, 3, &pool);
        assert_eq!(data(full), Some(vec![3, 4, 5]));
        assert!(pool.take(0).is_none(), "two messages are left in it");
        let (full, set_timer) = a.fill_from(&mut events, 3, &pool);
        assert!(full.is_none() && set_timer);
        assert_eq!(a.len(), 2);
        assert!(pool.take(0).expect("an emptied buffer").is_empty());
    }

    #[test]
    fn a_partition_has_one_timer_however_many_batches_fill() {
        let size = BatchSize::Count(2);
        let mut a = Accumulator::new();
        let mut set = 0;
        for x in 0..101 {
            let (_, set_timer) = a.push(Message::new(x), &size);
            set += set_timer as usize;
        }
        assert_eq!(
            set, 1,
            "one timer for 50 full batches and one in the making"
        );
        assert_eq!(a.len(), 1);
        // Once it has fired on nothing, the next batch sets it again.
        let mut b = Accumulator::new();
        assert!(b.push(Message::new(1), &size).1);
        b.push(Message::new(2), &size);
        assert!(matches!(
            b.on_timer(Instant::now(), Duration::ZERO),
            OnTimer::Idle
        ));
        assert!(b.push(Message::new(3), &size).1);
    }

    #[test]
    fn a_timer_takes_the_batch_only_once_its_own_timeout_has_passed() {
        let t0 = Instant::now();
        let timeout = Duration::from_secs(10);
        let size = BatchSize::Count(2);
        let mut a = Accumulator::new();
        let at = |t: Instant| {
            crate::clock::set_virtual(Some(t));
        };
        // A batch fills at t0 (the timer is set for t0 + 10 s); the next starts at t0 + 4 s.
        at(t0);
        assert!(a.push(Message::new(1), &size).1);
        assert!(a.push(Message::new(2), &size).0.is_some());
        at(t0 + Duration::from_secs(4));
        assert!(!a.push(Message::new(3), &size).1, "the timer is still set");
        crate::clock::set_virtual(None);
        // At t0 + 10 s it is not due: 4 s more.
        match a.on_timer(t0 + timeout, timeout) {
            OnTimer::Again(left) => assert_eq!(left, Duration::from_secs(4)),
            other => panic!("{other:?}"),
        }
        assert_eq!(a.len(), 1, "the batch stays in the making");
        let mut b = Accumulator::new();
        at(t0);
        b.push(Message::new(5), &size);
        crate::clock::set_virtual(None);
        match b.on_timer(t0 + timeout, timeout) {
            OnTimer::Due(batch) => assert_eq!(data(Some(batch)), Some(vec![5])),
            other => panic!("{other:?}"),
        }
        assert_eq!(b.len(), 0);
        assert!(matches!(b.on_timer(t0 + timeout, timeout), OnTimer::Idle));
    }
}
