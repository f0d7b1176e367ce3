//! `Events`: a batch is a window on the message; what a callback leaves is dropped and the next
//! batch starts at its own first event, whichever way the batch was consumed.

mod common;

use std::sync::mpsc;

use common::{joined, Numbers};
use stageflow::fns::Batches;
use stageflow::{Events, Reason, SubscribeOptions};

/// Runs 0..20 through a consumer with batches of 5 that applies `take` to each batch.
fn firsts(take: fn(Events<'_, u64>) -> Vec<u64>) -> Vec<Vec<u64>> {
    let (numbers, _) = Numbers::new(Some(20));
    let p = stageflow::producer(numbers).spawn().unwrap();
    let (tx, rx) = mpsc::channel();
    let c = stageflow::consumer(Batches::new(move |events: Events<'_, u64>| {
        tx.send(take(events)).unwrap()
    }))
    .subscribe_to(&p, SubscribeOptions::new().max_demand(10).min_demand(5))
    .unwrap()
    .spawn()
    .unwrap();
    assert_eq!(joined(&c), Reason::Normal);
    rx.try_iter().collect()
}

#[test]
fn smoke() {
    let all = firsts(|e| e.collect());
    assert_eq!(all.concat(), (0..20).collect::<Vec<_>>());
}

#[test]
fn a_partly_taken_batch_does_not_shift_the_next() {
    let got = firsts(|mut e| e.next().into_iter().collect());
    assert_eq!(got, vec![vec![0], vec![5], vec![10], vec![15]]);
}

#[test]
fn a_partly_taken_map_does_not_shift_the_next() {
    let got = firsts(|e| e.map(|x| x * 10).take(2).collect());
    assert_eq!(
        got,
        vec![vec![0, 10], vec![50, 60], vec![100, 110], vec![150, 160]]
    );
}

#[test]
fn slices_sizes_and_folds_agree() {
    let got = firsts(|e| {
        let slice = e.as_slice().to_vec();
        assert_eq!(e.len(), slice.len());
        let sum: u64 = e.sum();
        assert_eq!(sum, slice.iter().sum::<u64>());
        slice
    });
    assert_eq!(got.concat(), (0..20).collect::<Vec<_>>());
}

#[test]
fn a_batch_knows_its_subscription() {
    // A consumer of two producers tells their batches apart by subscription.
    let evens = stageflow::from_iter((0..10u64).map(|x| x * 2))
        .spawn()
        .unwrap();
    let odds = stageflow::from_iter((0..10u64).map(|x| x * 2 + 1))
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let c = stageflow::consumer(Batches::new(move |events: Events<'_, u64>| {
        let from = events.subscription();
        for x in events {
            tx.send((from, x)).unwrap();
        }
    }))
    .spawn()
    .unwrap();
    let opts = SubscribeOptions::new().cancel(stageflow::CancelMode::Transient);
    let e = c.subscribe_to(&evens, opts.clone()).unwrap();
    let o = c.subscribe_to(&odds, opts).unwrap();
    let got: Vec<_> = (0..20)
        .map(|_| rx.recv_timeout(common::LIMIT).expect("20 events"))
        .collect();
    joined(&evens);
    joined(&odds);
    c.stop();
    joined(&c);
    for (from, x) in got {
        assert_eq!(from, if x % 2 == 0 { e } else { o }, "event {x}");
    }
}
