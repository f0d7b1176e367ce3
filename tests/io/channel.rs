//! `io::from_channel`: what a channel yields, taken only with demand, ending when it is
//! disconnected.

use std::time::Duration;

use stageflow::io;
use stageflow::{Reason, SubscribeOptions, Topology};

use crate::common::{joined, next, LIMIT};
use crate::Stalled;

#[test]
fn smoke() {
    let (tx, rx) = crossbeam_channel::unbounded();
    for i in 0..1000u32 {
        tx.send(i).unwrap();
    }
    drop(tx);
    let source = io::from_channel(rx).batch(64).build().unwrap();
    let stats = source.stats();
    let stage = stageflow::producer(source).spawn().unwrap();
    let got: Vec<u32> = stageflow::stream(&stage, SubscribeOptions::new().max_demand(100))
        .unwrap()
        .collect();
    assert_eq!(got, (0..1000).collect::<Vec<_>>());
    assert_eq!(joined(&stage), Reason::Normal);
    assert_eq!(stats.snapshot().records, 1000);
}

#[test]
fn items_that_come_later_are_emitted_and_disconnection_ends_it() {
    let (tx, rx) = crossbeam_channel::bounded(1);
    let stage = stageflow::producer(io::from_channel(rx).build().unwrap())
        .spawn()
        .unwrap();
    let mut got = stageflow::stream(&stage, SubscribeOptions::new().max_demand(1)).unwrap();
    let writer = std::thread::spawn(move || {
        for word in ["late", "later"] {
            tx.send(word).unwrap();
        }
    });
    assert_eq!(got.next(), Some("late"));
    assert_eq!(got.next(), Some("later"));
    writer.join().unwrap();
    assert_eq!(got.next(), None);
    assert_eq!(joined(&stage), Reason::Normal);
}

#[test]
fn a_stalled_consumer_holds_the_senders_back() {
    const CAPACITY: usize = 4;
    let (tx, rx) = crossbeam_channel::bounded(CAPACITY);
    let (sent_tx, sent) = crossbeam_channel::unbounded();
    let writer = std::thread::spawn(move || {
        for i in 0u64.. {
            if tx.send(i).is_err() {
                return;
            }
            let _ = sent_tx.send(i + 1);
        }
    });
    let source = io::from_channel(rx).build().unwrap();
    let stats = source.stats();
    let source = stageflow::producer(source).spawn().unwrap();
    let (sink, batches, key) = Stalled::<u64>::new();
    let sink = stageflow::consumer(sink)
        .subscribe_to(&source, SubscribeOptions::new().max_demand(10))
        .unwrap()
        .spawn()
        .unwrap();
    let first = next(&batches);
    assert_eq!(first, (0..first.len() as u64).collect::<Vec<_>>());
    // The source takes at most the 10 asked for (in one turn or several); the channel holds
    // 4 more; the writer waits. Whatever arrives, however late, stays within that bound.
    let mut count = next(&sent);
    while let Ok(n) = sent.recv_timeout(Duration::from_millis(200)) {
        count = n;
    }
    assert!(
        count <= 10 + CAPACITY as u64,
        "{count} items sent to a stalled pipeline"
    );
    assert!(stats.snapshot().records <= 10);

    drop(key);
    let report = Topology::new().with(&source).with(&sink).drain(LIMIT);
    assert!(report.is_complete(), "{report:?}");
    assert_eq!(stats.snapshot().records, sink.counters().events_in);
    // The drain left what was still in the channel there; the writer ends with the channel.
    writer.join().unwrap();
}

#[test]
fn a_drain_ends_a_source_whose_channel_stays_open() {
    let (tx, rx) = crossbeam_channel::unbounded::<u8>();
    let source = stageflow::producer(
        io::from_channel(rx)
            .wait(Duration::from_millis(5))
            .build()
            .unwrap(),
    )
    .spawn()
    .unwrap();
    let sink = stageflow::consumer(stageflow::fns::ForEach::new(|_: u8| {}))
        .subscribe_to(&source, SubscribeOptions::new())
        .unwrap()
        .spawn()
        .unwrap();
    tx.send(1).unwrap();
    let report = Topology::new().with(&source).with(&sink).drain(LIMIT);
    assert!(report.is_complete(), "{report:?}");
    drop(tx);
    let e = io::from_channel(crossbeam_channel::never::<u8>())
        .wait(Duration::ZERO)
        .build()
        .unwrap_err();
    assert!(e.to_string().starts_with("invalid io option wait"), "{e}");
}
