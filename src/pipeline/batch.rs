//! [`Batch`] and the pure accumulator behind a batcher: a batch is emitted when it reaches its
//! size (a count, or a weight such as bytes), or when its timeout has passed since its first
//! message; it is never empty.

use std::fmt;
use std::sync::Arc;

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

/// One partition's batch in the making.
pub(crate) struct Accumulator<T> {
    pending: Vec<Message<T>>,
    weight: usize,
    /// Bumped each time a batch is taken: a timer set for an older batch finds nothing.
    generation: u64,
}

impl<T> Accumulator<T> {
    pub(crate) fn new() -> Accumulator<T> {
        Accumulator {
            pending: Vec::new(),
            weight: 0,
            generation: 0,
        }
    }

    /// Adds a message. Returns the full batch if it is now full, and whether this message
    /// started a batch (the caller then sets its timer for [`generation`](Self::generation)).
    pub(crate) fn push(
        &mut self,
        m: Message<T>,
        size: &BatchSize<T>,
    ) -> (Option<Vec<Message<T>>>, bool) {
        let started = self.pending.is_empty();
        let full = match size {
            BatchSize::Count(n) => {
                if started {
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
        (if full { self.take() } else { None }, started)
    }

    /// Adds messages from `messages` until the batch has `n` (a batch by count): the same as
    /// [`push`](Accumulator::push) of each in turn until the batch is full, in one move of
    /// the run. Returns the full batch if it is now full, and whether these messages started
    /// a batch. Takes nothing from an empty `messages`.
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

    /// [`fill`](Accumulator::fill) from a batch of events, moved in one loop.
    pub(crate) fn fill_from(
        &mut self,
        events: &mut crate::Events<'_, Message<T>>,
        n: usize,
    ) -> (Option<Vec<Message<T>>>, bool) {
        self.fill_with(n, |pending, room| {
            events.move_into(pending, room);
        })
    }

    /// [`fill`](Accumulator::fill), `take(pending, room)` moving up to `room` messages in.
    fn fill_with(
        &mut self,
        n: usize,
        take: impl FnOnce(&mut Vec<Message<T>>, usize),
    ) -> (Option<Vec<Message<T>>>, bool) {
        let started = self.pending.is_empty();
        if started {
            // One allocation per batch, not one per doubling.
            self.pending.reserve(n);
        }
        let room = n.saturating_sub(self.pending.len()).max(1);
        take(&mut self.pending, room);
        let full = self.pending.len() >= n;
        (if full { self.take() } else { None }, started)
    }

    /// The batch in the making, if it is not empty.
    pub(crate) fn take(&mut self) -> Option<Vec<Message<T>>> {
        if self.pending.is_empty() {
            return None;
        }
        self.generation += 1;
        self.weight = 0;
        Some(std::mem::take(&mut self.pending))
    }

    /// The batch, if `generation` is still the one in the making (its timer is current).
    pub(crate) fn take_if(&mut self, generation: u64) -> Option<Vec<Message<T>>> {
        if generation == self.generation {
            self.take()
        } else {
            None
        }
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation
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
        let (b, started) = a.push(Message::new(1), &size);
        assert!(b.is_none() && started);
        assert!(!a.push(Message::new(2), &size).1);
        assert_eq!(data(a.push(Message::new(3), &size).0), Some(vec![1, 2, 3]));
        assert_eq!(a.generation(), 1);
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
                let mut next = 0u32;
                for len in runs {
                    let run: Vec<u32> = (next..next + len).collect();
                    next += len;
                    let mut by_push = Vec::new();
                    for &x in &run {
                        let (full, started) = pushed.push(Message::new(x), &size);
                        by_push.push((data(full), started));
                    }
                    let mut by_fill = Vec::new();
                    let mut messages = run.iter().map(|&x| Message::new(x)).peekable();
                    while messages.peek().is_some() {
                        let (full, started) = filled.fill(&mut messages, n);
                        by_fill.push((data(full), started));
                    }
                    // Every batch the pushes made, at the fill that completed it; a batch
                    // started by the same messages.
                    let batches = |v: &[(Option<Vec<u32>>, bool)]| -> Vec<Vec<u32>> {
                        v.iter().filter_map(|(b, _)| b.clone()).collect()
                    };
                    assert_eq!(batches(&by_fill), batches(&by_push), "n {n}");
                    assert_eq!(
                        by_fill.iter().any(|(_, s)| *s),
                        by_push.iter().any(|(_, s)| *s),
                        "n {n}"
                    );
                    assert_eq!(filled.generation(), pushed.generation());
                    assert_eq!(filled.len(), pushed.len());
                }
            }
        }
    }

    #[test]
    fn a_stale_timer_takes_nothing() {
        let size = BatchSize::Count(2);
        let mut a = Accumulator::new();
        a.push(Message::new(1), &size);
        let first = a.generation();
        a.push(Message::new(2), &size); // full: taken
        a.push(Message::new(3), &size);
        assert!(a.take_if(first).is_none());
        assert_eq!(data(a.take_if(a.generation())), Some(vec![3]));
    }
}
