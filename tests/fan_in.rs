//! Fan-in: a consumer with several producers ends with its last producer when they finish
//! normally, so nothing in flight is cut off; an abnormal end still ends it at once; and the
//! counters of every stage balance (`events_in = events_out + discarded + buffered`).

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use common::{joined, next, Numbers, Recorder, Report, LIMIT};
use stageflow::fns::{ForEach, Map};
use stageflow::{CancelMode, Counters, Reason, SubscribeOptions, Topology};

/// A small seeded generator (xorshift64*), so a failing run can be named and replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A value in `lo..=hi`.
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next() % (hi - lo + 1) as u64) as usize
    }

    /// Random valid demands: max in `1..=hi`, min below it.
    fn demand(&mut self, hi: usize) -> SubscribeOptions {
        let max = self.range(1, hi);
        let min = self.range(0, max - 1);
        SubscribeOptions::new().max_demand(max).min_demand(min)
    }
}

fn balanced(name: &str, c: &Counters) {
    assert_eq!(
        c.events_in,
        c.events_out + c.discarded + c.buffered,
        "{name}: in {} out {} discarded {} buffered {}",
        c.events_in,
        c.events_out,
        c.discarded,
        c.buffered
    );
}

/// The shape from the issue: `from_iter(0..n)` → two `Map`s → one `ForEach` subscribed to
/// both; returns (events seen, their sum, outcomes, the maps' counters).
fn fan_in_once(n: u64, seed: u64, defaults: bool) {
    let mut rng = Rng(seed | 1);
    let mut opts = || {
        if defaults {
            SubscribeOptions::new()
        } else {
            rng.demand(1200)
        }
    };
    let source = stageflow::from_iter(0..n).name("source").spawn().unwrap();
    let a = stageflow::producer_consumer(Map::new(|x: u64| x))
        .name("map-a")
        .subscribe_to(&source, opts())
        .unwrap()
        .spawn()
        .unwrap();
    let b = stageflow::producer_consumer(Map::new(|x: u64| x))
        .name("map-b")
        .subscribe_to(&source, opts())
        .unwrap()
        .spawn()
        .unwrap();
    let count = Arc::new(AtomicU64::new(0));
    let sum = Arc::new(AtomicU64::new(0));
    let (c2, s2) = (count.clone(), sum.clone());
    let sink = stageflow::consumer(ForEach::new(move |x: u64| {
        c2.fetch_add(1, Ordering::Relaxed);
        s2.fetch_add(x, Ordering::Relaxed);
    }))
    .name("sink")
    .subscribe_to(&a, opts())
    .unwrap()
    .subscribe_to(&b, opts())
    .unwrap()
    .spawn()
    .unwrap();
    let topology = Topology::new().with(&source).with(&a).with(&b).with(&sink);
    for (name, outcome) in topology.join_timeout(LIMIT) {
        assert_eq!(
            outcome,
            Some(Reason::Normal),
            "seed {seed}: stage {name} did not end normally"
        );
    }
    assert_eq!(count.load(Ordering::Relaxed), n, "seed {seed}: events lost");
    assert_eq!(
        sum.load(Ordering::Relaxed),
        n * (n - 1) / 2,
        "seed {seed}: wrong events"
    );
    for stage in topology.stages() {
        let c = stage.counters();
        if stage.name().starts_with("map") {
            balanced(stage.name(), &c);
            assert_eq!((c.discarded, c.buffered), (0, 0), "seed {seed}");
        }
    }
    assert_eq!(
        a.counters().events_out + b.counters().events_out,
        sink.counters().events_in,
        "seed {seed}: the pipeline does not balance"
    );
    assert_eq!(source.counters().events_out, n, "seed {seed}");
}

#[test]
fn smoke() {
    fan_in_once(10_000, 1, true);
}

#[test]
fn fan_in_with_default_options_loses_nothing_200_times() {
    let base: u64 = std::env::var("FAN_IN_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed);
    for run in 0..200 {
        fan_in_once(20_000, base + run, run % 2 == 0);
    }
}

#[test]
fn a_normal_end_waits_for_the_other_producers() {
    // p1 finishes at once; p2 keeps going: the consumer (permanent on both) keeps consuming
    // p2 and ends only when p2 ends too.
    let (p1, _r1) = Numbers::new(Some(3));
    let p1 = stageflow::producer(p1).name("short").spawn().unwrap();
    let (p2, _r2) = Numbers::new(None);
    let p2 = stageflow::producer(p2).name("long").spawn().unwrap();
    let (rec, rx) = Recorder::<u64>::new();
    let c = stageflow::consumer(rec)
        .subscribe_to(&p1, SubscribeOptions::new().max_demand(10))
        .unwrap()
        .subscribe_to(&p2, SubscribeOptions::new().max_demand(10))
        .unwrap()
        .spawn()
        .unwrap();
    assert_eq!(joined(&p1), Reason::Normal);
    // The first end is reported to the stage, which keeps running.
    loop {
        match next(&rx) {
            Report::Cancelled(r) => {
                assert_eq!(r, Reason::Normal);
                break;
            }
            _ => continue,
        }
    }
    assert_eq!(c.outcome(), None);
    // It still receives p2's events.
    let before = c.counters().events_in;
    while c.counters().events_in < before + 50 {
        let _ = next(&rx);
    }
    assert_eq!(c.outcome(), None);
    p2.stop();
    assert_eq!(joined(&c), Reason::Normal, "ends with its last producer");
    assert_eq!(joined(&p2), Reason::Shutdown);
}

#[test]
fn an_abnormal_end_ends_it_at_once() {
    let (p1, _r1) = Numbers::new(None);
    let p1 = stageflow::producer(p1).name("failing").spawn().unwrap();
    let (p2, _r2) = Numbers::new(None);
    let p2 = stageflow::producer(p2).name("healthy").spawn().unwrap();
    let (rec, _rx) = Recorder::<u64>::new();
    let c = stageflow::consumer(rec)
        .subscribe_to(&p1, SubscribeOptions::new().max_demand(10))
        .unwrap()
        .subscribe_to(&p2, SubscribeOptions::new().max_demand(10))
        .unwrap()
        .spawn()
        .unwrap();
    // An error that reaches the consumer through a permanent subscription ends it at once.
    let sub = c
        .counters()
        .subscriptions
        .iter()
        .find(|s| s.peer == "failing")
        .expect("subscribed")
        .id;
    c.cancel(sub, Reason::error("boom")).unwrap();
    assert_eq!(joined(&c), Reason::error("boom"));
    // The healthy producer keeps running (a producer never ends because a consumer did).
    assert_eq!(p2.outcome(), None);
    p1.stop();
    p2.stop();
    joined(&p1);
    joined(&p2);
    // Everything sent reached the consumer before it ended (it waits for its producers to
    // confirm): counted as received, and what came after the end as discarded.
    let sent = p1.counters().events_out + p2.counters().events_out;
    assert_eq!(sent, c.counters().events_in);
}

#[test]
fn a_transient_subscription_ending_normally_leaves_the_rest_to_decide() {
    // Transient survives a normal end; the permanent one then ends the consumer.
    let (p1, _r1) = Numbers::new(Some(5));
    let p1 = stageflow::producer(p1).spawn().unwrap();
    let (p2, _r2) = Numbers::new(Some(7));
    let p2 = stageflow::producer(p2).spawn().unwrap();
    let (rec, rx) = Recorder::<u64>::new();
    let c = stageflow::consumer(rec)
        .subscribe_to(
            &p1,
            SubscribeOptions::new()
                .max_demand(10)
                .cancel(CancelMode::Transient),
        )
        .unwrap()
        .subscribe_to(&p2, SubscribeOptions::new().max_demand(10))
        .unwrap()
        .spawn()
        .unwrap();
    assert_eq!(joined(&c), Reason::Normal);
    let got: usize = rx
        .try_iter()
        .map(|r| match r {
            Report::Batch(b) => b.len(),
            _ => 0,
        })
        .sum();
    assert_eq!(got, 12, "every event of both producers");
}
