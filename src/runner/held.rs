//! What a producer in accumulate mode holds back until it forwards: the events its buffer
//! covered for the demand that came in, the events it emitted, and the demand nothing covered.
//!
//! Order is the point of this type. Every event taken out of the buffer is older than every
//! event still in it, and every event emitted while accumulating is newer than both (nothing
//! enters the buffer while the producer accumulates). So the replay on a switch to forward is
//! three queues, each in its own order: the covered events first, then what is left in the
//! buffer (the runner flushes it before it dispatches anything newer), then the emitted
//! batches, and only then the demands (each `handle_demand` emits events newer still).
//! GenStage replays one mixed list, so a demand recorded before a cast could make
//! `handle_demand`'s events overtake the cast's; this does not.

use std::collections::VecDeque;

/// The three queues of an accumulating producer (see the module doc).
pub(super) struct Held<T> {
    /// Taken out of the buffer for demand recorded while accumulating, oldest first.
    covered: Vec<T>,
    /// Emitted by callbacks while accumulating, batch by batch.
    emitted: VecDeque<Vec<T>>,
    /// Demand the buffer did not cover, one entry per ask (never summed, as in GenStage).
    demands: VecDeque<usize>,
    /// Events in `emitted`.
    emitted_events: usize,
}

/// One step of the replay, in the order the module doc gives.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Replay<T> {
    /// The events the buffer covered: they go out ahead of what is still in the buffer.
    Covered(Vec<T>),
    /// A batch emitted while accumulating: it goes out behind the buffer.
    Emitted(Vec<T>),
    /// A demand to hand to `handle_demand`.
    Demand(usize),
}

impl<T> Held<T> {
    pub(super) fn new() -> Held<T> {
        Held {
            covered: Vec::new(),
            emitted: VecDeque::new(),
            demands: VecDeque::new(),
            emitted_events: 0,
        }
    }

    /// Records an ask: `covered` are the events the buffer covered (its oldest), `rest` the
    /// demand it did not.
    pub(super) fn demand(&mut self, covered: Vec<T>, rest: usize) {
        self.covered.extend(covered);
        if rest > 0 {
            self.demands.push_back(rest);
        }
    }

    /// Holds a batch a callback emitted.
    pub(super) fn emitted(&mut self, events: Vec<T>) {
        if !events.is_empty() {
            self.emitted_events += events.len();
            self.emitted.push_back(events);
        }
    }

    /// Nothing is held.
    pub(super) fn is_empty(&self) -> bool {
        self.covered.is_empty() && self.emitted.is_empty() && self.demands.is_empty()
    }

    /// The events held (demand is not counted).
    pub(super) fn event_count(&self) -> usize {
        self.covered.len() + self.emitted_events
    }

    /// How many replay steps are held now: a replay that takes this many steps takes only
    /// what was held before it started.
    pub(super) fn steps(&self) -> usize {
        usize::from(!self.covered.is_empty()) + self.emitted.len() + self.demands.len()
    }

    /// The next replay step, oldest first.
    pub(super) fn next(&mut self) -> Option<Replay<T>> {
        if !self.covered.is_empty() {
            return Some(Replay::Covered(std::mem::take(&mut self.covered)));
        }
        if let Some(events) = self.emitted.pop_front() {
            self.emitted_events -= events.len();
            return Some(Replay::Emitted(events));
        }
        self.demands.pop_front().map(Replay::Demand)
    }

    /// Drops everything; returns the events dropped.
    pub(super) fn clear(&mut self) -> usize {
        let n = self.event_count();
        self.covered.clear();
        self.emitted.clear();
        self.demands.clear();
        self.emitted_events = 0;
        n
    }
}

#[cfg(test)]
mod tests {
    use super::{Held, Replay};

    #[test]
    fn covered_events_go_before_emitted_ones_even_when_recorded_later() {
        let mut held = Held::new();
        held.emitted(vec![10, 11]);
        held.demand(vec![0, 1], 3);
        held.emitted(vec![12]);
        held.demand(vec![2], 0);
        assert_eq!(held.event_count(), 6);
        assert_eq!(held.steps(), 4);
        let mut steps = Vec::new();
        while let Some(step) = held.next() {
            steps.push(step);
        }
        assert_eq!(
            steps,
            vec![
                Replay::Covered(vec![0, 1, 2]),
                Replay::Emitted(vec![10, 11]),
                Replay::Emitted(vec![12]),
                Replay::Demand(3),
            ]
        );
        assert!(held.is_empty());
        assert_eq!(held.event_count(), 0);
    }

    #[test]
    fn demands_are_kept_one_by_one_and_after_every_event() {
        let mut held: Held<u8> = Held::new();
        held.demand(Vec::new(), 2);
        held.emitted(vec![7]);
        held.demand(Vec::new(), 2);
        held.emitted(Vec::new());
        assert_eq!(held.steps(), 3);
        assert_eq!(held.next(), Some(Replay::Emitted(vec![7])));
        assert_eq!(held.next(), Some(Replay::Demand(2)));
        assert_eq!(held.next(), Some(Replay::Demand(2)));
        assert_eq!(held.next(), None);
    }

    #[test]
    fn clear_counts_the_events() {
        let mut held = Held::new();
        held.demand(vec![1, 2], 4);
        held.emitted(vec![3]);
        assert_eq!(held.clear(), 3);
        assert!(held.is_empty());
    }
}
