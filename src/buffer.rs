//! The producer buffer: events that no consumer has demand for yet, and the infos queued
//! behind them.

use std::collections::VecDeque;

use crate::subscription::BufferKeep;

/// Events waiting for demand, FIFO, with GenStage's size limit and keep policy.
///
/// Infos (messages a stage queued with [`Context::info`](crate::Context::info) or
/// [`Stage::info`](crate::Stage::info)) are markers between events: a marker becomes *due* once
/// every event stored before it has left the buffer, by dispatch or by a discard.
#[derive(Debug)]
pub(crate) struct Buffer<T, I> {
    events: VecDeque<T>,
    capacity: Option<usize>,
    keep: BufferKeep,
    /// Events that ever left the front (dispatched or discarded).
    popped: u64,
    /// Markers: (the value of `popped` at which the info is due, the info).
    infos: VecDeque<(u64, I)>,
}

impl<T, I> Buffer<T, I> {
    /// `capacity` `None` is unbounded.
    pub(crate) fn new(capacity: Option<usize>, keep: BufferKeep) -> Buffer<T, I> {
        Buffer {
            events: VecDeque::new(),
            capacity,
            keep,
            popped: 0,
            infos: VecDeque::new(),
        }
    }

    pub(crate) fn event_count(&self) -> usize {
        self.events.len()
    }

    /// Whether neither events nor infos are waiting.
    pub(crate) fn is_empty(&self) -> bool {
        self.events.is_empty() && self.infos.is_empty()
    }

    /// Stores events at the back; returns how many events were discarded to respect the
    /// capacity (incoming ones under [`BufferKeep::First`], the oldest under
    /// [`BufferKeep::Last`]).
    pub(crate) fn store(&mut self, events: impl IntoIterator<Item = T>) -> usize {
        let Some(cap) = self.capacity else {
            self.events.extend(events);
            return 0;
        };
        let mut discarded = 0;
        match self.keep {
            BufferKeep::First => {
                for e in events {
                    if self.events.len() < cap {
                        self.events.push_back(e);
                    } else {
                        discarded += 1;
                    }
                }
            }
            BufferKeep::Last => {
                for e in events {
                    if self.events.len() == cap {
                        self.events.pop_front();
                        self.popped += 1;
                        discarded += 1;
                    }
                    self.events.push_back(e);
                }
            }
        }
        discarded
    }

    /// Puts events back at the front, in order (what a dispatcher could not deliver after a
    /// [`Buffer::take`]). They do not count as discarded and the capacity is not applied: they
    /// were already held.
    pub(crate) fn unget(&mut self, events: Vec<T>) {
        self.popped -= events.len() as u64;
        for e in events.into_iter().rev() {
            self.events.push_front(e);
        }
    }

    /// Takes up to `n` events from the front, stopping early at the next info marker.
    pub(crate) fn take(&mut self, n: usize) -> Vec<T> {
        let until_marker = match self.infos.front() {
            Some(&(due, _)) => (due.saturating_sub(self.popped)) as usize,
            None => usize::MAX,
        };
        let k = n.min(until_marker).min(self.events.len());
        self.popped += k as u64;
        self.events.drain(..k).collect()
    }

    /// Queues an info behind the buffered events, or hands it back if nothing is buffered
    /// (then it is due at once).
    pub(crate) fn push_info(&mut self, info: I) -> Result<(), I> {
        if self.events.is_empty() && self.infos.is_empty() {
            return Err(info);
        }
        let due = self.popped + self.events.len() as u64;
        self.infos.push_back((due, info));
        Ok(())
    }

    /// Removes the next info whose events have all left the buffer.
    pub(crate) fn pop_due_info(&mut self) -> Option<I> {
        match self.infos.front() {
            Some(&(due, _)) if due <= self.popped => self.infos.pop_front().map(|(_, i)| i),
            _ => None,
        }
    }

    /// Empties the buffer; returns the number of events dropped and the infos left.
    pub(crate) fn clear(&mut self) -> (usize, Vec<I>) {
        let n = self.events.len();
        self.events.clear();
        (n, self.infos.drain(..).map(|(_, i)| i).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contents(b: &Buffer<char, ()>) -> String {
        b.events.iter().collect()
    }

    #[test]
    fn keep_first_drops_incoming() {
        let mut b = Buffer::<char, ()>::new(Some(5), BufferKeep::First);
        assert_eq!(b.store("abcde".chars()), 0);
        assert_eq!(b.store("fgh".chars()), 3);
        assert_eq!(contents(&b), "abcde");
    }

    #[test]
    fn keep_last_drops_oldest() {
        let mut b = Buffer::<char, ()>::new(Some(5), BufferKeep::Last);
        assert_eq!(b.store("abcde".chars()), 0);
        assert_eq!(b.store("fgh".chars()), 3);
        assert_eq!(contents(&b), "defgh");
    }

    #[test]
    fn unbounded_never_discards() {
        let mut b = Buffer::<u32, ()>::new(None, BufferKeep::Last);
        assert_eq!(b.store(0..100_000), 0);
        assert_eq!(b.event_count(), 100_000);
    }

    #[test]
    fn take_is_fifo_and_unget_restores_order() {
        let mut b = Buffer::<u32, ()>::new(Some(10), BufferKeep::Last);
        b.store(0..6);
        assert_eq!(b.take(2), vec![0, 1]);
        let got = b.take(3);
        assert_eq!(got, vec![2, 3, 4]);
        b.unget(vec![3, 4]);
        assert_eq!(b.take(10), vec![3, 4, 5]);
        assert!(b.is_empty());
    }

    #[test]
    fn infos_wait_for_the_events_before_them() {
        // Buffer [a, b, c] + info 1; take 2 -> [a, b], info not due; take -> [c], info due.
        let mut b = Buffer::<char, u32>::new(Some(10), BufferKeep::Last);
        assert_eq!(
            b.push_info(0),
            Err(0),
            "an empty buffer hands the info back"
        );
        b.store("abc".chars());
        b.push_info(1).unwrap();
        b.store("de".chars());
        b.push_info(2).unwrap();
        assert_eq!(b.take(2), vec!['a', 'b']);
        assert_eq!(b.pop_due_info(), None);
        // A take stops at the marker even with more demand.
        assert_eq!(b.take(5), vec!['c']);
        assert_eq!(b.pop_due_info(), Some(1));
        assert_eq!(b.take(5), vec!['d', 'e']);
        assert_eq!(b.pop_due_info(), Some(2));
        assert!(b.is_empty());
    }

    #[test]
    fn discarding_the_oldest_makes_infos_due() {
        let mut b = Buffer::<char, u32>::new(Some(2), BufferKeep::Last);
        b.store("ab".chars());
        b.push_info(7).unwrap();
        assert_eq!(b.store("cd".chars()), 2);
        assert_eq!(b.pop_due_info(), Some(7));
    }
}
