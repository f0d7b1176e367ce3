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
    /// The message's events; this batch is the next `n` of them. `None` once handed to
    /// [`Events::map`].
    iter: Option<&'a mut std::vec::IntoIter<T>>,
    n: usize,
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
            iter: Some(iter),
            n: len,
            from,
        }
    }

    /// The subscription these events came from.
    pub fn subscription(&self) -> SubscriptionId {
        self.from
    }

    /// The events not yet taken, as a slice.
    pub fn as_slice(&self) -> &[T] {
        match &self.iter {
            Some(it) => &it.as_slice()[..self.n],
            None => &[],
        }
    }

    /// Maps each event with `f`, like [`Iterator::map`], into an iterator the standard library
    /// knows the exact length of, so that collecting it or emitting it with
    /// [`Context::emit_all`](crate::Context::emit_all) writes the results in one tight loop.
    /// (Method syntax picks this over `Iterator::map`.)
    #[allow(clippy::should_implement_trait)] // a faster `map` is the point
    pub fn map<B, F: FnMut(T) -> B>(
        mut self,
        f: F,
    ) -> impl ExactSizeIterator<Item = B> + use<'a, T, B, F> {
        let n = std::mem::take(&mut self.n);
        let iter = self.iter.take().expect("a batch is mapped once");
        iter.take(n).map(f)
    }
}

impl<T> Events<'_, T> {
    /// Takes the batch's events as a `Vec`. When they are the whole message that brought
    /// them (the usual case: a message is cut into batches only where it holds more than the
    /// subscription's `max_demand`), the message's own allocation is handed over and no
    /// event is moved; otherwise they are moved into a new `Vec`.
    ///
    /// # Examples
    ///
    /// ```
    /// # use stageflow::Events;
    /// fn keep(events: Events<'_, u64>, kept: &mut Vec<Vec<u64>>) {
    ///     kept.push(events.into_vec());
    /// }
    /// ```
    pub fn into_vec(mut self) -> Vec<T> {
        let n = std::mem::take(&mut self.n);
        let Some(iter) = self.iter.take() else {
            return Vec::new();
        };
        if n == iter.len() {
            // `collect` hands a `vec::IntoIter`'s buffer back as a `Vec` when nothing was
            // taken from it yet (and moves the rest down at once when something was).
            std::mem::replace(iter, Vec::new().into_iter()).collect()
        } else {
            iter.take(n).collect()
        }
    }

    /// Moves up to `max` events onto the end of `into`, in one loop, and returns how many:
    /// for a consumer that gathers events into batches of its own (a `Vec` knows the length
    /// of what it extends with here, where `extend(events.by_ref().take(n))` checks each
    /// event and a peekable iterator moves each one twice). The rest stay in the batch.
    ///
    /// # Examples
    ///
    /// ```
    /// # use stageflow::Events;
    /// /// Tops `batch` up to `size` events from `events`; the rest stay for the next batch.
    /// fn top_up(events: &mut Events<'_, u64>, batch: &mut Vec<u64>, size: usize) {
    ///     let room = size.saturating_sub(batch.len());
    ///     events.move_into(batch, room);
    /// }
    /// ```
    pub fn move_into(&mut self, into: &mut Vec<T>, max: usize) -> usize {
        let k = self.n.min(max);
        if let Some(iter) = self.iter.as_deref_mut() {
            if k == iter.len() {
                // The rest of the message: a `Vec` extended from a whole `vec::IntoIter`
                // copies the run at once instead of writing each event in turn.
                into.extend(std::mem::replace(iter, Vec::new().into_iter()));
            } else {
                into.extend(iter.take(k));
            }
        }
        self.n -= k;
        k
    }

    /// [`move_into`](Events::move_into), handing back an emptied buffer when the events moved
    /// were all that was left of the message (for a [`Recycler`](crate::recycle)): the
    /// message's own allocation, unless some of it was taken before and less than half was
    /// left (then the standard library moves the rest to a buffer of its size).
    pub(crate) fn move_into_reclaiming(
        &mut self,
        into: &mut Vec<T>,
        max: usize,
    ) -> (usize, Option<Vec<T>>) {
        let k = self.n.min(max);
        let mut reclaimed = None;
        if let Some(iter) = self.iter.as_deref_mut() {
            if k == iter.len() {
                // `collect` hands the buffer back as a `Vec` (see above); `append` copies the
                // run at once.
                let mut rest: Vec<T> = std::mem::replace(iter, Vec::new().into_iter()).collect();
                into.append(&mut rest);
                reclaimed = Some(rest);
            } else {
                into.extend(iter.take(k));
            }
        }
        self.n -= k;
        (k, reclaimed)
    }
}

impl<T> Iterator for Events<'_, T> {
    type Item = T;

    #[inline]
    fn next(&mut self) -> Option<T> {
        if self.n == 0 {
            return None;
        }
        self.n -= 1;
        self.iter.as_mut()?.next()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.n, Some(self.n))
    }

    // Folds over the message directly: `for_each`, `sum` and friends run one tight loop
    // instead of a check per `next`.
    fn fold<B, F: FnMut(B, T) -> B>(mut self, init: B, f: F) -> B {
        let n = std::mem::take(&mut self.n);
        let Some(iter) = self.iter.take() else {
            return init;
        };
        if n == iter.len() {
            // The batch is the rest of the message: fold the iterator itself.
            std::mem::replace(iter, Vec::new().into_iter()).fold(init, f)
        } else {
            iter.take(n).fold(init, f)
        }
    }
}

impl<T> ExactSizeIterator for Events<'_, T> {}

impl<T> Drop for Events<'_, T> {
    fn drop(&mut self) {
        // Skip what the callback left, so the next batch starts at its own first event.
        if let Some(iter) = self.iter.take() {
            for _ in iter.take(self.n) {}
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn into_vec_hands_over_a_whole_message_and_moves_a_part() {
        let message: Vec<u32> = (0..6).collect();
        let at = message.as_ptr();
        let mut iter = message.into_iter();
        let whole = Events::new(&mut iter, 6, SubscriptionId::unique()).into_vec();
        assert_eq!(whole, [0, 1, 2, 3, 4, 5]);
        assert_eq!(whole.as_ptr(), at, "the message's own allocation");
        assert_eq!(iter.len(), 0);
        // A message cut into two batches: the first is moved out, the second is the rest.
        let mut iter = (0..6u32).collect::<Vec<_>>().into_iter();
        let first = Events::new(&mut iter, 4, SubscriptionId::unique()).into_vec();
        assert_eq!(first, [0, 1, 2, 3]);
        assert_eq!(iter.as_slice(), [4, 5]);
        let second = Events::new(&mut iter, 2, SubscriptionId::unique()).into_vec();
        assert_eq!(second, [4, 5]);
        assert_eq!(iter.len(), 0);
    }

    #[test]
    fn move_into_reclaiming_hands_back_the_emptied_message_only_once_all_is_moved() {
        let message: Vec<u32> = (0..6).collect();
        let at = message.as_ptr();
        let mut iter = message.into_iter();
        let mut into = Vec::new();
        let mut events = Events::new(&mut iter, 6, SubscriptionId::unique());
        let (k, back) = events.move_into_reclaiming(&mut into, 6);
        let back = back.expect("the emptied message");
        assert_eq!(k, 6);
        assert!(back.is_empty());
        assert_eq!(back.as_ptr(), at, "the message's own allocation");
        assert_eq!(into, [0, 1, 2, 3, 4, 5]);
        // Taken in two parts: nothing comes back until the last event of it is moved.
        let mut iter = (0..6u32).collect::<Vec<_>>().into_iter();
        let mut into = vec![100];
        let mut events = Events::new(&mut iter, 6, SubscriptionId::unique());
        let (k, back) = events.move_into_reclaiming(&mut into, 4);
        assert_eq!((k, back), (4, None), "two events are left in the message");
        let (k, back) = events.move_into_reclaiming(&mut into, 10);
        assert_eq!(k, 2);
        assert!(back.expect("an emptied buffer").is_empty());
        assert_eq!(into, [100, 0, 1, 2, 3, 4, 5]);
        assert_eq!(events.count(), 0);
    }

    #[test]
    fn move_into_moves_at_most_the_batch_and_leaves_the_rest_of_the_message() {
        let mut iter = (0..10u32).collect::<Vec<_>>().into_iter();
        let mut into = vec![100];
        {
            // A batch of the first 5 events of a message of 10.
            let mut events = Events::new(&mut iter, 5, SubscriptionId::unique());
            assert_eq!(events.move_into(&mut into, 3), 3);
            assert_eq!(events.len(), 2);
            assert_eq!(events.as_slice(), [3, 4]);
            // Asking for more than the batch holds moves only the batch.
            assert_eq!(events.move_into(&mut into, 10), 2);
            assert_eq!(events.len(), 0);
            assert_eq!(events.move_into(&mut into, 10), 0);
        }
        assert_eq!(into, [100, 0, 1, 2, 3, 4]);
        // The next batch starts at the message's sixth event.
        assert_eq!(iter.as_slice(), [5, 6, 7, 8, 9]);
        {
            // The last batch of the message, moved in two steps: its last step takes the
            // whole rest of the message at once.
            let mut events = Events::new(&mut iter, 5, SubscriptionId::unique());
            assert_eq!(events.move_into(&mut into, 1), 1);
            assert_eq!(events.move_into(&mut into, 9), 4);
            assert_eq!(events.len(), 0);
            assert_eq!(events.next(), None);
        }
        assert_eq!(into, [100, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
        assert_eq!(iter.len(), 0);
    }
}
