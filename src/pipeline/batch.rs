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
