//! Time spent per stage: a lock-free [`Histogram`] of fixed buckets, and the per-stage timing
//! the stage loop keeps (time in callbacks per callback and per event, and time waiting for
//! input or for demand), read as a [`StageTiming`].
//!
//! The loop reads the clock only where it is cheap against what it times. It waits for a
//! message only after polling has found none, and a wait costs a futex call or more, so every
//! wait is timed. Callbacks are **sampled**: a stage whose callbacks are fast (under
//! [`EVERY_CALLBACK_ABOVE`]) times one callback in [`SAMPLE_STRIDE`], and each timed callback
//! stands for the callbacks it skipped (its weight, in the histograms and the busy time);
//! once a timed callback takes longer than that, every callback is timed until one is fast
//! again (and that first slow one counts once, the fast ones it skipped at the last fast
//! duration). The figures are then estimates for a fast stage, unbiased unless its callbacks'
//! durations follow a cycle of exactly the stride, and exact for a slow one, where they
//! matter. Untimed callbacks cost a load, a store and a branch.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::StageKind;

/// A fast stage times one callback in this many.
pub(crate) const SAMPLE_STRIDE: u32 = 16;

/// A timed callback slower than this makes the stage time every callback (the clock's cost
/// is then under a thousandth of the callback's), until one is faster again.
pub(crate) const EVERY_CALLBACK_ABOVE: Duration = Duration::from_micros(20);

/// The buckets of a duration histogram, in nanoseconds: 1, 2 and 5 per decade, from 100 ns
/// to 10 s (the last bucket holds everything slower).
pub(crate) const DURATION_BOUNDS: &[u64] = &[
    100,
    200,
    500,
    1_000,
    2_000,
    5_000,
    10_000,
    20_000,
    50_000,
    100_000,
    200_000,
    500_000,
    1_000_000,
    2_000_000,
    5_000_000,
    10_000_000,
    20_000_000,
    50_000_000,
    100_000_000,
    200_000_000,
    500_000_000,
    1_000_000_000,
    2_000_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// The buckets of a size histogram (batch sizes, say): 1, 2 and 5 per decade, from 1 to
/// 100 000.
pub(crate) const SIZE_BOUNDS: &[u64] = &[
    1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000,
];

/// A histogram of fixed buckets, lock-free: recording is a few relaxed atomic adds, from any
/// number of threads; reading takes a [`HistogramSnapshot`] at any time. Values are `u64`s
/// (nanoseconds for durations, see [`Histogram::durations`]).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use stageflow::Histogram;
///
/// let h = Histogram::durations();
/// for micros in [3, 4, 40, 900] {
///     h.record_duration(Duration::from_micros(micros));
/// }
/// let s = h.snapshot();
/// assert_eq!((s.count, s.max), (4, 900_000));
/// assert!(s.quantile(0.5) <= 5_000); // half of them took 5 µs or less
/// assert_eq!(s.quantile(1.0), 900_000);
/// ```
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [u64],
    /// One per bound (values `<=` it and above the previous one), and one above them all.
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    sum: AtomicU64,
    max: AtomicU64,
}

impl Histogram {
    /// A histogram with buckets bounded (inclusive) by `bounds`, and one more above them.
    ///
    /// # Panics
    ///
    /// If `bounds` is empty or not strictly increasing.
    pub fn new(bounds: &'static [u64]) -> Histogram {
        assert!(
            !bounds.is_empty() && bounds.windows(2).all(|w| w[0] < w[1]),
            "histogram bounds must be strictly increasing and not empty"
        );
        Histogram {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum: AtomicU64::new(0),
            max: AtomicU64::new(0),
        }
    }

    /// A histogram of durations in nanoseconds: buckets of 1, 2 and 5 per decade from 100 ns
    /// to 10 s, and one above.
    pub fn durations() -> Histogram {
        Histogram::new(DURATION_BOUNDS)
    }

    /// A histogram of sizes (batch sizes, say): buckets of 1, 2 and 5 per decade from 1 to
    /// 100 000, and one above.
    pub fn sizes() -> Histogram {
        Histogram::new(SIZE_BOUNDS)
    }

    /// Records one value.
    #[inline]
    pub fn record(&self, value: u64) {
        self.record_n(value, 1);
    }

    /// Records `n` values equal to `value` (a sample that stands for `n`; nothing if `n` is
    /// 0).
    pub fn record_n(&self, value: u64, n: u64) {
        if n == 0 {
            return;
        }
        let i = self.bounds.partition_point(|b| *b < value);
        self.buckets[i].fetch_add(n, Ordering::Relaxed);
        self.count.fetch_add(n, Ordering::Relaxed);
        self.sum
            .fetch_add(value.saturating_mul(n), Ordering::Relaxed);
        self.max.fetch_max(value, Ordering::Relaxed);
    }

    /// Records a duration, in nanoseconds.
    #[inline]
    pub fn record_duration(&self, d: Duration) {
        self.record(nanos(d));
    }

    /// The histogram now. Read while others record, the parts can disagree by the values
    /// recorded meanwhile.
    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            bounds: self.bounds.to_vec(),
            counts: self
                .buckets
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
            count: self.count.load(Ordering::Relaxed),
            sum: self.sum.load(Ordering::Relaxed),
            max: self.max.load(Ordering::Relaxed),
        }
    }
}

/// What a [`Histogram`] held when it was read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct HistogramSnapshot {
    /// The buckets' inclusive upper bounds.
    pub bounds: Vec<u64>,
    /// How many values fell in each bucket (not cumulative): one per bound, then one for the
    /// values above the last bound.
    pub counts: Vec<u64>,
    /// How many values were recorded.
    pub count: u64,
    /// Their sum.
    pub sum: u64,
    /// The largest value recorded (0 if none was).
    pub max: u64,
}

impl HistogramSnapshot {
    /// The value below which a share `q` (0 to 1) of the values fall, estimated by
    /// interpolating in the bucket it falls in, and never above [`max`](Self::max); 0 for
    /// an empty histogram.
    pub fn quantile(&self, q: f64) -> u64 {
        let total: u64 = self.counts.iter().sum();
        if total == 0 {
            return 0;
        }
        let rank = (q.clamp(0.0, 1.0) * total as f64).max(1.0);
        let mut below = 0u64;
        for (i, &n) in self.counts.iter().enumerate() {
            if n > 0 && (below + n) as f64 >= rank {
                let low = if i == 0 { 0 } else { self.bounds[i - 1] };
                let high = self
                    .bounds
                    .get(i)
                    .copied()
                    .unwrap_or(self.max)
                    .min(self.max);
                let high = high.max(low);
                let into = (rank - below as f64) / n as f64;
                return (low as f64 + (high - low) as f64 * into).round() as u64;
            }
            below += n;
        }
        self.max
    }

    /// The mean value, 0 for an empty histogram.
    pub fn mean(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum as f64 / self.count as f64
        }
    }

    /// Per bucket, its upper bound (`None` for the last, unbounded one) and how many values
    /// fell in it or below: the cumulative counts a Prometheus histogram exports.
    pub fn cumulative(&self) -> impl Iterator<Item = (Option<u64>, u64)> + '_ {
        let mut acc = 0;
        self.counts.iter().enumerate().map(move |(i, n)| {
            acc += n;
            (self.bounds.get(i).copied(), acc)
        })
    }
}

/// Nanoseconds in `d` (u64 arithmetic: cheaper than `as_nanos`' u128 on the wait path;
/// saturates after 584 years).
#[inline]
fn nanos(d: Duration) -> u64 {
    d.as_secs()
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::from(d.subsec_nanos()))
}

/// What a stage was doing, read with [`Stage::timing`](crate::Stage::timing): time in its
/// callbacks, per callback and per event, and time spent waiting, since it started.
///
/// Callback times are sampled: a stage whose callbacks take under 20 µs times one in 16, and
/// each timed one stands for the 16 (a slower stage times every callback), so the histograms'
/// counts and `busy` are estimates of the callbacks and events they stand for. An observer takes two readings and divides the
/// differences by the time between them to get the share of time the stage was busy, waiting
/// for input or waiting for demand; what is left is the loop's own work (dispatching,
/// demand accounting) and polling for messages.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StageTiming {
    /// Nanoseconds per callback (`handle_events` per batch, `handle_demand`,
    /// `handle_message`, …).
    pub callbacks: HistogramSnapshot,
    /// Nanoseconds per event handled by `handle_events` (a batch's time divided by its
    /// events, counted once per event).
    pub per_event: HistogramSnapshot,
    /// Time in callbacks (an estimate for a fast stage: the sampled callbacks' times, each
    /// times its weight).
    pub busy: Duration,
    /// Time blocked waiting for a message while the stage had nothing to do: a consumer's or
    /// producer-consumer's input, a producer's messages or timers while its consumers wanted
    /// events.
    pub waiting_for_input: Duration,
    /// Time blocked waiting while the stage had events its consumers had not asked for yet,
    /// or (a producer) no demand to serve.
    pub waiting_for_demand: Duration,
}

/// What a stage waits for when it blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Waiting {
    /// Input: events, messages, timers.
    Input,
    /// Demand from its consumers.
    Demand,
}

impl Waiting {
    /// What a stage of `kind` waits for, blocked with `ready()` demand from its consumers
    /// that it may still serve, and (`backlog`) messages for a consumer whose inbox is full.
    /// A consumer always waits for input (`ready` is not asked); a producer or
    /// producer-consumer waits for demand when its consumers have asked for nothing more, or
    /// cannot take what it has, and for input otherwise.
    #[inline]
    pub(crate) fn of(kind: StageKind, backlog: bool, ready: impl FnOnce() -> usize) -> Waiting {
        if kind != StageKind::Consumer && (backlog || ready() == 0) {
            Waiting::Demand
        } else {
            Waiting::Input
        }
    }
}

/// The timing one stage keeps (its thread writes, anyone reads). Hung off the stage's
/// shared state; the loop calls [`start`](Timing::start)/[`stop`](Timing::stop) around each
/// callback, [`events`](Timing::events) before `handle_events`, and
/// [`wait_from`](Timing::wait_from)/[`waited`](Timing::waited) around a receive that may
/// block.
#[derive(Debug)]
pub(crate) struct Timing {
    callbacks: Histogram,
    per_event: Histogram,
    busy: AtomicU64,
    input: AtomicU64,
    demand: AtomicU64,
    /// Callbacks still to skip before the next timed one.
    skip: AtomicU32,
    /// How many callbacks the next timed one stands for.
    weight: AtomicU32,
    /// The events of the callback about to be timed (0: not `handle_events`).
    events: AtomicUsize,
    /// The last timed fast callback, in nanoseconds: what a skipped one is taken to have cost
    /// when the timed one after it turns out slow.
    last_fast: AtomicU64,
    /// A simulation's fault (`Sim::panic_at`): the callback this many callbacks from now
    /// panics (0: none). Checked only where a callback is not skipped, which is every one
    /// while it is armed: the loop's fast path pays nothing for it.
    panic_in: AtomicU64,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            callbacks: Histogram::durations(),
            per_event: Histogram::durations(),
            busy: AtomicU64::new(0),
            input: AtomicU64::new(0),
            demand: AtomicU64::new(0),
            skip: AtomicU32::new(0),
            weight: AtomicU32::new(1),
            events: AtomicUsize::new(0),
            last_fast: AtomicU64::new(0),
            panic_in: AtomicU64::new(0),
        }
    }
}

/// Adds to a cell only the calling thread writes.
#[inline]
fn add(cell: &AtomicU64, n: u64) {
    cell.store(
        cell.load(Ordering::Relaxed).saturating_add(n),
        Ordering::Relaxed,
    );
}

impl Timing {
    /// The next callback hands `n` events to `handle_events` (noted only if it will be
    /// timed).
    #[inline]
    pub(crate) fn events(&self, n: usize) {
        if self.skip.load(Ordering::Relaxed) == 0 {
            self.events.store(n, Ordering::Relaxed);
        }
    }

    /// A callback begins: the time now if this one is timed.
    #[inline]
    pub(crate) fn start(&self) -> Option<Instant> {
        let skip = self.skip.load(Ordering::Relaxed);
        if skip > 0 {
            self.skip.store(skip - 1, Ordering::Relaxed);
            return None;
        }
        self.start_timed()
    }

    /// A callback that is not skipped: timed, or counted towards a simulation's fault.
    #[inline(never)]
    fn start_timed(&self) -> Option<Instant> {
        if self.panic_in.load(Ordering::Relaxed) != 0 {
            return self.count_down_to_panic();
        }
        Some(Instant::now())
    }

    /// Arms a simulation's fault: the `k`-th callback from now (1: the next) panics where it
    /// starts. Until then no callback is skipped or timed.
    pub(crate) fn panic_at_callback(&self, k: u64) {
        self.panic_in.store(k.max(1), Ordering::Relaxed);
        self.skip.store(0, Ordering::Relaxed);
    }

    #[cold]
    #[inline(never)]
    fn count_down_to_panic(&self) -> Option<Instant> {
        let left = self.panic_in.load(Ordering::Relaxed) - 1;
        self.panic_in.store(left, Ordering::Relaxed);
        if left == 0 {
            panic!("{}", crate::sim::INJECTED_PANIC);
        }
        None
    }

    /// The callback begun at `started` ended.
    #[inline]
    pub(crate) fn stop(&self, started: Option<Instant>) {
        if let Some(t) = started {
            self.timed(t.elapsed());
        }
    }

    #[inline(never)]
    fn timed(&self, took: Duration) {
        let weight = u64::from(self.weight.load(Ordering::Relaxed));
        let ns = nanos(took);
        let slow = took >= EVERY_CALLBACK_ABOVE;
        // A timed callback stands for the fast ones skipped before it, if it is fast too. A
        // slow one (the stage's callbacks just got slow) counts once: the skipped ones are
        // taken to have cost what the last fast one did, or a slow callback after fifteen
        // quick ones would count sixteen times.
        let own = if slow { 1 } else { weight };
        let skipped = weight - own;
        self.callbacks.record_n(ns, own);
        let mut busy = ns.saturating_mul(own);
        if skipped > 0 {
            let each = self.last_fast.load(Ordering::Relaxed);
            self.callbacks.record_n(each, skipped);
            busy = busy.saturating_add(each.saturating_mul(skipped));
        }
        add(&self.busy, busy);
        let events = self.events.swap(0, Ordering::Relaxed) as u64;
        if let Some(each) = ns.checked_div(events) {
            self.per_event.record_n(each, events * own);
        }
        if !slow {
            self.last_fast.store(ns, Ordering::Relaxed);
        }
        let stride = if slow { 1 } else { SAMPLE_STRIDE };
        self.skip.store(stride - 1, Ordering::Relaxed);
        self.weight.store(stride, Ordering::Relaxed);
    }

    /// The stage is about to wait until `deadline` (`None`: for as long as it takes): the
    /// time now, unless the deadline has passed already (a look at the inbox that cannot
    /// block is not timed).
    #[inline]
    pub(crate) fn wait_from(&self, deadline: Option<Instant>) -> Option<Instant> {
        let now = Instant::now();
        match deadline {
            Some(d) if d <= now => None,
            _ => Some(now),
        }
    }

    /// The wait begun at `started` ended; `what` says what it was for (asked only if the
    /// wait was timed).
    #[inline]
    pub(crate) fn waited(&self, started: Option<Instant>, what: impl FnOnce() -> Waiting) {
        if let Some(t) = started {
            let ns = nanos(Instant::now().saturating_duration_since(t));
            match what() {
                Waiting::Input => add(&self.input, ns),
                Waiting::Demand => add(&self.demand, ns),
            }
        }
    }

    /// The timing so far.
    pub(crate) fn snapshot(&self) -> StageTiming {
        let get = |c: &AtomicU64| Duration::from_nanos(c.load(Ordering::Relaxed));
        StageTiming {
            callbacks: self.callbacks.snapshot(),
            per_event: self.per_event.snapshot(),
            busy: get(&self.busy),
            waiting_for_input: get(&self.input),
            waiting_for_demand: get(&self.demand),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_inclusive_above() {
        let h = Histogram::new(&[10, 20]);
        for v in [0, 10, 11, 20, 21, 1_000] {
            h.record(v);
        }
        let s = h.snapshot();
        assert_eq!(s.counts, vec![2, 2, 2]);
        assert_eq!((s.count, s.sum, s.max), (6, 1_062, 1_000));
        let cum: Vec<_> = s.cumulative().collect();
        assert_eq!(cum, vec![(Some(10), 2), (Some(20), 4), (None, 6)]);
    }

    #[test]
    fn quantiles_interpolate_and_never_pass_the_max() {
        let h = Histogram::new(&[100, 200, 400]);
        for _ in 0..50 {
            h.record(50);
        }
        for _ in 0..49 {
            h.record(150);
        }
        h.record(390);
        let s = h.snapshot();
        assert!(s.quantile(0.5) <= 100, "{}", s.quantile(0.5));
        let p99 = s.quantile(0.99);
        assert!((100..=200).contains(&p99), "{p99}");
        assert_eq!(s.quantile(1.0), 390, "the top bucket is cut at the max");
        assert_eq!(Histogram::durations().snapshot().quantile(0.5), 0);
        let above = Histogram::new(&[10]);
        above.record(7_000);
        assert_eq!(above.snapshot().quantile(0.5), 7_000);
    }

    #[test]
    fn weighted_records_count_as_many() {
        let h = Histogram::sizes();
        h.record_n(3, 16);
        h.record_n(3, 0);
        let s = h.snapshot();
        assert_eq!((s.count, s.sum, s.mean()), (16, 48, 3.0));
    }

    #[test]
    #[should_panic(expected = "strictly increasing")]
    fn bounds_must_increase() {
        let _ = Histogram::new(&[5, 5]);
    }

    #[test]
    fn fast_callbacks_are_sampled_and_weighted() {
        let t = Timing::default();
        // The first callback is timed, with weight 1.
        t.events(10);
        let started = t.start();
        assert!(started.is_some());
        t.timed(Duration::from_nanos(1_000));
        t.stop(None);
        // Fast: the next SAMPLE_STRIDE - 1 callbacks are not timed, and their events are
        // not noted.
        for _ in 1..SAMPLE_STRIDE {
            t.events(5);
            assert!(t.start().is_none());
        }
        assert_eq!(t.events.load(Ordering::Relaxed), 0);
        // The next one is, and stands for SAMPLE_STRIDE callbacks.
        t.events(4);
        assert!(t.start().is_some());
        t.timed(Duration::from_nanos(2_000));
        let s = t.snapshot();
        assert_eq!(s.callbacks.count, 1 + u64::from(SAMPLE_STRIDE));
        assert_eq!(s.busy, Duration::from_nanos(1_000 + 2_000 * 16));
        assert_eq!(s.per_event.count, 10 + 4 * 16);
        assert_eq!(s.per_event.max, 500);
    }

    #[test]
    fn a_slow_callback_after_skipped_fast_ones_counts_once() {
        let t = Timing::default();
        assert!(t.start().is_some());
        t.timed(Duration::from_nanos(1_000));
        for _ in 1..SAMPLE_STRIDE {
            assert!(t.start().is_none());
        }
        // The stage's callbacks get slow: 10 ms, once, and the 15 skipped taken at 1 µs each.
        t.events(5);
        assert!(t.start().is_some());
        t.timed(Duration::from_millis(10));
        let s = t.snapshot();
        assert_eq!(
            s.busy,
            Duration::from_nanos(1_000 + 15 * 1_000 + 10_000_000),
            "not sixteen times 10 ms"
        );
        assert_eq!(s.callbacks.count, 1 + u64::from(SAMPLE_STRIDE));
        assert_eq!(s.per_event.count, 5);
        assert_eq!(s.callbacks.max, 10_000_000);
    }

    #[test]
    fn slow_callbacks_are_all_timed() {
        let t = Timing::default();
        assert!(t.start().is_some());
        t.timed(EVERY_CALLBACK_ABOVE);
        assert!(
            t.start().is_some(),
            "after a slow one, the next is timed too"
        );
        t.timed(Duration::from_nanos(10));
        assert!(t.start().is_none(), "after a fast one, sampling resumes");
    }

    #[test]
    fn waits_are_counted_by_what_they_wait_for() {
        let t = Timing::default();
        let started = t.wait_from(None);
        std::thread::sleep(Duration::from_millis(2)); // the wait being measured
        t.waited(started, || Waiting::Input);
        t.waited(t.wait_from(None), || Waiting::Demand);
        let s = t.snapshot();
        assert!(s.waiting_for_input >= Duration::from_millis(2));
        assert!(s.waiting_for_demand < s.waiting_for_input);
        // A deadline already passed: not timed, and what it waited for is not asked.
        let past = t.wait_from(Some(Instant::now()));
        assert_eq!(past, None);
        t.waited(past, || unreachable!("not asked"));
    }

    #[test]
    fn what_a_blocked_stage_waits_for() {
        use StageKind::{Consumer as C, Producer as P, ProducerConsumer as PC};
        let never = || -> usize { unreachable!("a consumer's demand is not asked") };
        assert_eq!(Waiting::of(C, false, never), Waiting::Input);
        assert_eq!(Waiting::of(C, true, never), Waiting::Input);
        assert_eq!(Waiting::of(P, false, || 0), Waiting::Demand, "nobody asks");
        assert_eq!(
            Waiting::of(P, false, || 5),
            Waiting::Input,
            "asked, nothing to send"
        );
        assert_eq!(
            Waiting::of(PC, true, || 5),
            Waiting::Demand,
            "a consumer's inbox is full"
        );
        assert_eq!(Waiting::of(PC, false, || 5), Waiting::Input);
    }
}
