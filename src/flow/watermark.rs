//! The watermark: how far event time has surely progressed in a reducer, the least over its
//! lanes of the latest timestamp each has sent. Pure code: the reducer tells it which lane
//! subscribed, sent a timestamp or ended; fixed windows close by what it returns.
//!
//! A reducer's events come from several lanes (its upstream subscriptions, one per mapper
//! stage), each in its own order, interleaved however the threads run. The latest timestamp
//! over all lanes says how far the *fastest* lane has got; a slower lane's events are still
//! to come, and judging them by the fastest would make them late for no fault of theirs. The
//! least over the lanes of each lane's latest timestamp is a time every lane has reached:
//! Flink's and timely dataflow's watermark, taken at the reducer.
//!
//! The rules, as the tests below check them:
//!
//! - A lane that has subscribed but sent nothing holds the watermark back (there is none yet):
//!   it may still send anything.
//! - A lane that has ended (or was cancelled) no longer counts: it sends nothing more.
//! - The watermark never goes back: a lane that subscribes after it has moved holds it where
//!   it is until it catches up.
//! - With no lane counting (none yet, or all ended), the watermark stays where it was.

/// Per lane, the latest timestamp it has sent (`None`: nothing yet); the watermark so far.
#[derive(Debug, Clone)]
pub(crate) struct Watermark<L> {
    /// The lanes that count, in the order they subscribed; a handful (one per mapper stage).
    lanes: Vec<(L, Option<u64>)>,
    /// The watermark so far: `None` until every lane counting has sent something.
    at: Option<u64>,
}

impl<L> Default for Watermark<L> {
    fn default() -> Self {
        Watermark {
            lanes: Vec::new(),
            at: None,
        }
    }
}

impl<L: PartialEq> Watermark<L> {
    /// The watermark: `None` while some lane that counts has sent nothing and none has moved
    /// it before.
    pub(crate) fn get(&self) -> Option<u64> {
        self.at
    }

    /// A lane subscribed: it holds the watermark until it sends or ends. Subscribing a lane
    /// twice changes nothing.
    pub(crate) fn subscribe(&mut self, lane: L) {
        if !self.lanes.iter().any(|(l, _)| *l == lane) {
            self.lanes.push((lane, None));
        }
    }

    /// `lane` sent an event with timestamp `at` (a lane not subscribed counts from now).
    /// Returns whether the watermark moved.
    pub(crate) fn observe(&mut self, lane: L, at: u64) -> bool {
        let i = match self.lanes.iter().position(|(l, _)| *l == lane) {
            Some(i) => i,
            None => {
                self.lanes.push((lane, None));
                self.lanes.len() - 1
            }
        };
        let latest = &mut self.lanes[i].1;
        match *latest {
            Some(l) if l >= at => false,
            previous => {
                *latest = Some(at);
                // Only the lane that held the watermark (or had sent nothing) can move it.
                let held = previous.is_none_or(|p| Some(p) <= self.at);
                held && self.recompute()
            }
        }
    }

    /// `lane` ended: it no longer counts. Returns whether the watermark moved.
    pub(crate) fn end(&mut self, lane: &L) -> bool {
        let before = self.lanes.len();
        self.lanes.retain(|(l, _)| l != lane);
        self.lanes.len() != before && self.recompute()
    }

    /// The least latest timestamp over the lanes, if every one has sent something and it is
    /// ahead of the watermark so far. Returns whether the watermark moved.
    fn recompute(&mut self) -> bool {
        let mut least: Option<u64> = None;
        for (_, latest) in &self.lanes {
            match latest {
                None => return false,
                Some(t) => least = Some(least.map_or(*t, |l| l.min(*t))),
            }
        }
        match least {
            Some(t) if self.at < Some(t) => {
                self.at = Some(t);
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watermark_is_the_least_latest_timestamp_over_the_lanes() {
        let mut w = Watermark::default();
        w.subscribe('a');
        w.subscribe('b');
        assert!(!w.observe('a', 50));
        assert_eq!(w.get(), None, "b has sent nothing: no watermark yet");
        assert!(w.observe('b', 20));
        assert_eq!(w.get(), Some(20));
        // The fast lane running further ahead moves nothing; an older event neither.
        assert!(!w.observe('a', 90));
        assert!(!w.observe('b', 10));
        assert_eq!(w.get(), Some(20));
        // The slow lane catching up does, to the new least.
        assert!(w.observe('b', 70));
        assert_eq!(w.get(), Some(70));
        assert!(w.observe('b', 200));
        assert_eq!(w.get(), Some(90));
    }

    #[test]
    fn a_lane_that_ends_no_longer_holds_the_watermark() {
        let mut w = Watermark::default();
        for lane in ['a', 'b', 'c'] {
            w.subscribe(lane);
        }
        w.observe('a', 100);
        w.observe('b', 30);
        assert_eq!(w.get(), None, "c has sent nothing");
        // c ends without sending: it stops holding the watermark.
        assert!(w.end(&'c'));
        assert_eq!(w.get(), Some(30));
        assert!(w.end(&'b'));
        assert_eq!(w.get(), Some(100));
        assert!(!w.end(&'b'), "ending twice changes nothing");
        // The last lane ends: the watermark stays.
        assert!(!w.end(&'a'));
        assert_eq!(w.get(), Some(100));
    }

    #[test]
    fn the_watermark_never_goes_back() {
        let mut w = Watermark::default();
        w.subscribe('a');
        w.observe('a', 100);
        assert_eq!(w.get(), Some(100));
        // A lane joining late holds it where it is until it catches up.
        w.subscribe('b');
        assert!(!w.observe('b', 40));
        assert_eq!(w.get(), Some(100));
        w.observe('a', 300);
        assert!(w.observe('b', 150));
        assert_eq!(w.get(), Some(150));
    }

    #[test]
    fn a_lane_that_was_not_subscribed_counts_from_its_first_event() {
        let mut w = Watermark::default();
        assert_eq!(w.get(), None);
        assert!(w.observe(1u8, 5));
        assert_eq!(w.get(), Some(5));
        w.subscribe(2);
        w.subscribe(2);
        assert!(!w.observe(1, 9));
        assert!(w.observe(2, 7));
        assert_eq!(w.get(), Some(7));
    }

    #[test]
    fn without_lanes_there_is_no_watermark() {
        let mut w: Watermark<u8> = Watermark::default();
        w.subscribe(1);
        assert!(!w.end(&1));
        assert_eq!(w.get(), None);
    }
}
