//! Timers: messages a stage schedules to itself (GenStage's `Process.send_after` idiom).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::time::{Duration, Instant};

/// The instant `after` from now; a duration too long to represent means "practically never"
/// (about 30 years), never a panic.
pub(crate) fn deadline(after: Duration) -> Instant {
    let now = crate::clock::now();
    now.checked_add(after)
        .or_else(|| now.checked_add(Duration::from_secs(30 * 365 * 24 * 3600)))
        .unwrap_or(now)
}

/// Identifies a timer set with [`Context::send_after`](crate::Context::send_after), to cancel it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TimerId(u64);

/// Pending timers of one stage, earliest first. The stage's loop waits on its inbox with the
/// earliest deadline, so no thread ticks and nobody sleeps.
#[derive(Debug)]
pub(crate) struct Timers<M> {
    heap: BinaryHeap<Reverse<(Instant, u64)>>,
    messages: HashMap<u64, M, BuildHasherDefault<IdHasher>>,
    next: u64,
}

/// Hashes a timer's id with one multiplication instead of SipHash's rounds: the ids are a
/// counter the stage itself hands out, so no input can aim collisions at the map, and the
/// loop looks one up on every turn while a timer is set.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        // Fibonacci hashing: odd, so consecutive ids differ in their low bits (the bucket)
        // and their high ones (the map's tag).
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

impl<M> Timers<M> {
    pub(crate) fn new() -> Timers<M> {
        Timers {
            heap: BinaryHeap::new(),
            messages: HashMap::default(),
            next: 0,
        }
    }

    pub(crate) fn schedule(&mut self, at: Instant, msg: M) -> TimerId {
        let id = self.next;
        self.next += 1;
        self.heap.push(Reverse((at, id)));
        self.messages.insert(id, msg);
        TimerId(id)
    }

    pub(crate) fn cancel(&mut self, id: TimerId) -> bool {
        if self.messages.remove(&id.0).is_none() {
            return false;
        }
        // A cancelled timer's deadline stays in the heap until it comes up. A stage that
        // sets and cancels a timer per event (a debounce) would keep every deadline of the
        // last `timeout`: once most of the heap is cancelled, it is rebuilt from the live
        // ones (linear, and at most once per as many cancels as there are live timers).
        if self.heap.len() > 64 && self.heap.len() > 2 * self.messages.len() {
            let live = &self.messages;
            self.heap.retain(|Reverse((_, id))| live.contains_key(id));
        }
        true
    }

    /// The earliest deadline still pending, if any.
    pub(crate) fn next_deadline(&mut self) -> Option<Instant> {
        while let Some(&Reverse((at, id))) = self.heap.peek() {
            if self.messages.contains_key(&id) {
                return Some(at);
            }
            self.heap.pop();
        }
        None
    }

    /// Removes and returns the next timer due at `now`, if any.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<M> {
        while let Some(&Reverse((at, id))) = self.heap.peek() {
            if at > now {
                return None;
            }
            self.heap.pop();
            if let Some(msg) = self.messages.remove(&id) {
                return Some(msg);
            }
        }
        None
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_durations_do_not_overflow() {
        assert!(deadline(Duration::MAX) > Instant::now());
    }

    #[test]
    fn cancelled_timers_do_not_pile_up() {
        let now = Instant::now();
        let mut t = Timers::new();
        let kept = t.schedule(now + Duration::from_secs(60), "kept");
        // A debounce: a timer set and cancelled per event, each an hour away.
        for i in 0..10_000u64 {
            let id = t.schedule(now + Duration::from_secs(3600 + i), "debounce");
            assert!(t.cancel(id));
        }
        assert!(t.heap.len() <= 130, "{} deadlines held", t.heap.len());
        assert_eq!(t.next_deadline(), Some(now + Duration::from_secs(60)));
        assert!(t.cancel(kept));
        assert!(t.is_empty());
        assert_eq!(t.next_deadline(), None);
    }

    #[test]
    fn due_in_deadline_order_and_cancel() {
        let now = Instant::now();
        let mut t = Timers::new();
        t.schedule(now + Duration::from_millis(20), "b");
        let a = t.schedule(now + Duration::from_millis(10), "a");
        t.schedule(now + Duration::from_millis(30), "c");
        assert_eq!(t.next_deadline(), Some(now + Duration::from_millis(10)));
        assert_eq!(t.pop_due(now), None);
        assert!(t.cancel(a));
        assert!(!t.cancel(a));
        assert_eq!(t.next_deadline(), Some(now + Duration::from_millis(20)));
        let later = now + Duration::from_millis(25);
        assert_eq!(t.pop_due(later), Some("b"));
        assert_eq!(t.pop_due(later), None);
        assert!(!t.is_empty());
    }
}
