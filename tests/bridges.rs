//! Iterator bridges: `from_iter` pulls exactly what is asked and finishes with its iterator;
//! `stream` consumes on the calling thread and cancels cleanly when dropped, waiting for a
//! busy producer's confirmation no longer than its cancel timeout.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{block, joined, Blocking, LIMIT};
use stageflow::{CancelMode, Reason, SubscribeOptions};

/// An iterator over `0..n` that counts how often it was pulled.
struct Counted {
    next: u64,
    n: u64,
    pulls: Arc<AtomicUsize>,
}

impl Iterator for Counted {
    type Item = u64;
    fn next(&mut self) -> Option<u64> {
        self.pulls.fetch_add(1, Ordering::SeqCst);
        (self.next < self.n).then(|| {
            self.next += 1;
            self.next - 1
        })
    }
}

fn counted(n: u64) -> (Counted, Arc<AtomicUsize>) {
    let pulls = Arc::new(AtomicUsize::new(0));
    (
        Counted {
            next: 0,
            n,
            pulls: pulls.clone(),
        },
        pulls,
    )
}

#[test]
fn smoke() {
    let p = stageflow::from_iter(0..100u64).spawn().unwrap();
    let got: Vec<u64> = stageflow::stream(&p, SubscribeOptions::new().max_demand(7))
        .unwrap()
        .collect();
    assert_eq!(got, (0..100).collect::<Vec<_>>());
    assert_eq!(joined(&p), Reason::Normal);
}

#[test]
fn pulls_exactly_what_is_asked() {
    let (iter, pulls) = counted(1000);
    let p = stageflow::from_iter(iter).spawn().unwrap();
    let mut s =
        stageflow::stream(&p, SubscribeOptions::new().max_demand(10).min_demand(5)).unwrap();
    // The stream asked 10; three items taken re-ask nothing yet (demand 7 > 5).
    assert_eq!(s.by_ref().take(3).collect::<Vec<_>>(), vec![0, 1, 2]);
    assert_eq!(pulls.load(Ordering::SeqCst), 10);
    drop(s);
    p.stop();
    joined(&p);
}

#[test]
fn finishes_when_the_iterator_ends_even_on_an_exact_multiple() {
    // 8 items, asks of 4: the end is seen on the third ask's pull (GenStage probe p8).
    let (iter, pulls) = counted(8);
    let p = stageflow::from_iter(iter).spawn().unwrap();
    let mut s = stageflow::stream(&p, SubscribeOptions::new().max_demand(4).min_demand(0)).unwrap();
    let got: Vec<u64> = s.by_ref().collect();
    assert_eq!(got, (0..8).collect::<Vec<_>>());
    assert_eq!(s.reason(), Some(&Reason::Normal));
    assert_eq!(
        pulls.load(Ordering::SeqCst),
        9,
        "8 items and the pull that found the end"
    );
    assert_eq!(joined(&p), Reason::Normal);
}

#[test]
fn taking_ten_of_a_thousand_cancels_cleanly() {
    let p = stageflow::from_iter(0..1000u64).spawn().unwrap();
    let first: Vec<u64> = stageflow::stream(&p, SubscribeOptions::new().max_demand(10))
        .unwrap()
        .take(10)
        .collect();
    assert_eq!(first, (0..10).collect::<Vec<_>>());
    // The producer learns the subscription is gone and keeps running.
    let deadline = Instant::now() + LIMIT;
    while !p.counters().subscriptions.is_empty() {
        assert!(
            Instant::now() < deadline,
            "the producer kept the stream's subscription"
        );
        std::thread::yield_now();
    }
    assert!(!p.is_finished());
    // A new stream picks up where the last one left off (nothing was lost in the producer
    // buffer beyond what was sent to the first stream).
    let next: Vec<u64> = stageflow::stream(&p, SubscribeOptions::new().max_demand(10))
        .unwrap()
        .take(5)
        .collect();
    assert_eq!(next.len(), 5);
    assert!(next[0] >= 10);
    p.stop();
    assert_eq!(joined(&p), Reason::Shutdown);
}

#[test]
fn streams_several_producers() {
    let evens = stageflow::from_iter((0..50u64).map(|x| x * 2))
        .spawn()
        .unwrap();
    let odds = stageflow::from_iter((0..50u64).map(|x| x * 2 + 1))
        .spawn()
        .unwrap();
    let opts = SubscribeOptions::new()
        .max_demand(4)
        .cancel(CancelMode::Transient);
    let mut s = stageflow::stream(&evens, opts.clone()).unwrap();
    s.subscribe_to(&odds, opts).unwrap();
    let got: Vec<u64> = s.collect();
    let (e, o): (Vec<u64>, Vec<u64>) = got.iter().partition(|x| *x % 2 == 0);
    assert_eq!(e, (0..50).map(|x| x * 2).collect::<Vec<_>>());
    assert_eq!(o, (0..50).map(|x| x * 2 + 1).collect::<Vec<_>>());
    joined(&evens);
    joined(&odds);
}

#[test]
fn stream_of_a_pipeline() {
    // A producer-consumer between an iterator and the stream: an iterator chain on threads.
    struct Square;
    impl stageflow::ProducerConsumer for Square {
        type In = u64;
        type Out = u64;
        type Message = ();
        fn handle_events(
            &mut self,
            events: stageflow::Events<'_, u64>,
            ctx: &mut stageflow::Context<'_, u64>,
        ) {
            ctx.emit_all(events.map(|x| x * x));
        }
    }
    let p = stageflow::from_iter(1..=10u64).spawn().unwrap();
    let sq = stageflow::producer_consumer(Square)
        .subscribe_to(&p, SubscribeOptions::new().max_demand(3))
        .unwrap()
        .spawn()
        .unwrap();
    let total: u64 = stageflow::stream(&sq, SubscribeOptions::new().max_demand(2))
        .unwrap()
        .sum();
    assert_eq!(total, 385);
    assert_eq!(joined(&sq), Reason::Normal);
}

#[test]
fn stop_on_cancel_ends_the_producer_with_its_last_consumer() {
    let p = stageflow::producer(stageflow::IterProducer::new(0..1000u64).stop_on_cancel())
        .spawn()
        .unwrap();
    let first: Vec<u64> = stageflow::stream(&p, SubscribeOptions::new().max_demand(10))
        .unwrap()
        .take(3)
        .collect();
    assert_eq!(first, vec![0, 1, 2]);
    assert_eq!(joined(&p), Reason::Normal);
}

#[test]
fn a_dropped_stream_waits_for_a_busy_producer_no_longer_than_its_cancel_timeout() {
    const WAIT: Duration = Duration::from_millis(200);
    let p = stageflow::producer(Blocking { next: 0 }).spawn().unwrap();
    let mut s = stageflow::stream(&p, SubscribeOptions::new().max_demand(10))
        .unwrap()
        .cancel_timeout(WAIT);
    assert_eq!(s.next(), Some(0));
    let gate = block(&p);
    // The producer cannot confirm the cancel while it is in its callback.
    let t = Instant::now();
    drop(s);
    let took = t.elapsed();
    assert!(
        took >= WAIT,
        "the drop did not wait for the confirmation: {took:?}"
    );
    // It waited 5 s before, whatever the caller wanted.
    assert!(took < Duration::from_millis(2500), "took {took:?}");
    // Freed, the producer sees the cancel and drops the subscription.
    gate.send(()).unwrap();
    let deadline = Instant::now() + LIMIT;
    while !p.counters().subscriptions.is_empty() {
        assert!(
            Instant::now() < deadline,
            "the producer kept the stream's subscription"
        );
        std::thread::yield_now();
    }
    p.stop();
    assert_eq!(joined(&p), Reason::Shutdown);
}
