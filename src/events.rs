//! [`Events`]: one batch of incoming events, handed to `handle_events` by value.

use std::fmt;

use crate::subscription::SubscriptionId;

/// One batch of events for `handle_events`: an iterator that moves each event out.
///
/// The batch is a window on the message that arrived; events are never cloned or copied into a
/// new collection to make it. Events you do not take are dropped when the batch is dropped.
///
/// # Examples
///
/// ```
/// # use stageflow::Events;
/// fn total(events: Events<'_, u64>) -> u64 {
///     events.sum()
/// }
/// ```
pub struct Events<'a, T> {
    iter: &'a mut std::vec::IntoIter<T>,
    remaining: usize,
    from: SubscriptionId,
}

impl<'a, T> Events<'a, T> {
    pub(crate) fn new(
        iter: &'a mut std::vec::IntoIter<T>,
        len: usize,
        from: SubscriptionId,
    ) -> Events<'a, T> {
        debug_assert!(iter.len() >= len);
        Events {
            iter,
            remaining: len,
            from,
        }
    }

    /// The subscription these events came from.
    pub fn subscription(&self) -> SubscriptionId {
        self.from
    }

    /// The events not yet taken, as a slice.
    pub fn as_slice(&self) -> &[T] {
        &self.iter.as_slice()[..self.remaining]
    }
}

impl<T> Iterator for Events<'_, T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        self.iter.next()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl<T> ExactSizeIterator for Events<'_, T> {}

impl<T> Drop for Events<'_, T> {
    fn drop(&mut self) {
        // Skip what the callback left, so the next batch starts at its own first event.
        for _ in self.by_ref() {}
    }
}

impl<T: fmt::Debug> fmt::Debug for Events<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Events")
            .field("from", &self.from)
            .field("events", &self.as_slice())
            .finish()
    }
}
