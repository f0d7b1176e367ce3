//! Batches by size, by weight, by timeout, flushed at the end; never empty; routed to named
//! batchers.

use std::time::{Duration, Instant};

use crossbeam_channel::{unbounded, Receiver};
use stageflow::pipeline::{
    self, Batch, BatchSize, BatcherOptions, DummyProducer, Message, Pipeline, ProcessorOptions,
    Trigger,
};

use super::{source, Recorder, WAIT};

type Seen = (usize, Trigger, Instant);

#[test]
fn batches_by_size_then_the_remainder_at_the_end() {
    let rec = Recorder::default();
    let r = rec.clone();
    let (tx, rx) = unbounded::<Seen>();
    let p = pipeline::builder("by-size")
        .producers(1, move |_| source(&r, 45))
        .processors(
            ProcessorOptions::new().concurrency(3),
            |m: &mut Message<u64>| Ok::<_, String>(m.data),
        )
        .batcher(
            "b",
            BatcherOptions::new()
                .batch_size(10)
                .batch_timeout(Duration::from_secs(60)),
            move |b: &mut Batch<u64>| {
                tx.send((b.messages.len(), b.info.trigger, Instant::now()))
                    .map_err(|e| e.to_string())
            },
        )
        .start()
        .unwrap();
    p.topology().join_timeout(WAIT);
    let seen: Vec<(usize, Trigger)> = rx.try_iter().map(|(n, t, _)| (n, t)).collect();
    assert_eq!(
        seen,
        [
            (10, Trigger::Size),
            (10, Trigger::Size),
            (10, Trigger::Size),
            (10, Trigger::Size),
            (5, Trigger::Flush)
        ]
    );
    assert!(rec.assert_exactly_once(45).is_empty());
    // One acknowledgement call per batch.
    assert_eq!(rec.calls(), 5);
}

#[test]
fn batches_by_weight() {
    let (tx, rx) = unbounded::<Vec<u64>>();
    let p = pipeline::builder("by-weight")
        .producers(1, |_| stageflow::from_iter((1..=10u64).map(Message::new)))
        .processors(
            ProcessorOptions::new().concurrency(1),
            |m: &mut Message<u64>| Ok::<_, String>(m.data),
        )
        .batcher(
            "bytes",
            BatcherOptions::new()
                .batch_size(BatchSize::weight(10, |m: &Message<u64>| m.data as usize))
                .max_demand(10),
            move |b: &mut Batch<u64>| {
                tx.send(b.messages.iter().map(|m| m.data).collect())
                    .map_err(|e| e.to_string())
            },
        )
        .start()
        .unwrap();
    p.topology().join_timeout(WAIT);
    let batches: Vec<Vec<u64>> = rx.try_iter().collect();
    assert_eq!(
        batches,
        [vec![1, 2, 3, 4], vec![5, 6], vec![7, 8], vec![9, 10]]
    );
}

/// A pipeline fed by `test_messages` (2 processors) with one batcher of `size` and
/// `timeout`, whose handler reports each batch's length, trigger and time.
fn timed_batches(name: &str, size: usize, timeout: Duration) -> (Pipeline<u64>, Receiver<Seen>) {
    let (tx, rx) = unbounded::<Seen>();
    let p = pipeline::builder(name)
        .producers(1, |_| stageflow::producer(DummyProducer::<u64>::new()))
        .processors(
            ProcessorOptions::new().concurrency(2),
            |m: &mut Message<u64>| Ok::<_, String>(m.data),
        )
        .batcher(
            "b",
            BatcherOptions::new()
                .batch_size(size)
                .batch_timeout(timeout),
            move |b: &mut Batch<u64>| {
                tx.send((b.messages.len(), b.info.trigger, Instant::now()))
                    .map_err(|e| e.to_string())
            },
        )
        .start()
        .unwrap();
    (p, rx)
}

#[test]
fn a_partial_batch_goes_at_its_timeout_and_no_batch_is_ever_empty() {
    let timeout = Duration::from_millis(150);
    let (p, rx) = timed_batches("by-timeout", 100, timeout);
    let pushed = Instant::now();
    let acks = p.test_messages([1, 2, 3]).unwrap();
    let (n, trigger, at) = rx.recv_timeout(WAIT).expect("a batch at the timeout");
    assert_eq!((n, trigger), (3, Trigger::Timeout));
    assert!(at - pushed >= timeout, "emitted after {:?}", at - pushed);
    let report = acks.wait(WAIT).unwrap();
    assert_eq!(report.successful.len(), 3);
    // Several timeouts pass with nothing in the making: no empty batch.
    assert!(
        rx.recv_timeout(timeout * 3).is_err(),
        "an empty batch was emitted"
    );
    let report = p.shutdown_timeout(WAIT);
    assert!(report.is_complete(), "{report:?}");
    assert!(
        rx.try_recv().is_err(),
        "a batch was emitted at shutdown with nothing in it"
    );
}

/// The batcher keeps one timer per partition: one set for a batch that then filled by size
/// stays set, and when it fires the batch then in the making waits out its own timeout.
#[test]
fn a_batch_started_after_a_full_one_waits_its_own_timeout() {
    let timeout = Duration::from_millis(400);
    let (p, rx) = timed_batches("own-timeout", 2, timeout);
    // Two messages: a batch by size, and the timer set when the first arrived alone or
    // with the second.
    let first = Instant::now();
    p.test_messages([1]).unwrap();
    p.test_messages([2]).unwrap();
    let (n, trigger, _) = rx.recv_timeout(WAIT).expect("a batch by size");
    assert_eq!((n, trigger), (2, Trigger::Size));
    // Time passes (the scenario, not a wait for anything), then a batch starts: the timer
    // fires before it is due.
    std::thread::sleep(timeout / 2);
    let started = Instant::now();
    let acks = p.test_messages([3]).unwrap();
    let (n, trigger, at) = rx.recv_timeout(WAIT).expect("a batch at its timeout");
    assert_eq!((n, trigger), (1, Trigger::Timeout));
    assert!(
        at - started >= timeout,
        "emitted {:?} after its first message ({:?} after the first batch's)",
        at - started,
        at - first
    );
    assert_eq!(acks.wait(WAIT).unwrap().successful.len(), 1);
    let report = p.shutdown_timeout(WAIT);
    assert!(report.is_complete(), "{report:?}");
}

#[test]
fn messages_go_to_the_batcher_they_name() {
    let (tx, rx) = unbounded::<(String, Vec<u64>)>();
    let tx2 = tx.clone();
    let p = pipeline::builder("routing")
        .producers(1, |_| stageflow::producer(DummyProducer::<u64>::new()))
        .processors(
            ProcessorOptions::new().concurrency(2),
            |m: &mut Message<u64>| {
                match m.data % 3 {
                    0 => m.put_batcher("odd-one-out"), // no such batcher: fails
                    1 => m.put_batcher("ones"),
                    _ => {} // the first batcher, "twos"
                }
                Ok::<_, String>(m.data)
            },
        )
        .batcher(
            "twos",
            BatcherOptions::new()
                .batch_size(100)
                .batch_timeout(Duration::from_secs(60)),
            move |b: &mut Batch<u64>| {
                tx.send((
                    b.info.batcher.to_string(),
                    b.messages.iter().map(|m| m.data).collect(),
                ))
                .map_err(|e| e.to_string())
            },
        )
        .batcher(
            "ones",
            BatcherOptions::new()
                .batch_size(100)
                .batch_timeout(Duration::from_secs(60)),
            move |b: &mut Batch<u64>| {
                tx2.send((
                    b.info.batcher.to_string(),
                    b.messages.iter().map(|m| m.data).collect(),
                ))
                .map_err(|e| e.to_string())
            },
        )
        .start()
        .unwrap();
    let acks = p.test_messages(0..9u64).unwrap();
    let report = p.shutdown_timeout(WAIT);
    assert!(report.is_complete(), "{report:?}");
    let mut got: Vec<(String, Vec<u64>)> = rx.try_iter().collect();
    for (_, v) in &mut got {
        v.sort_unstable();
    }
    got.sort();
    assert_eq!(
        got,
        [
            ("ones".to_string(), vec![1, 4, 7]),
            ("twos".to_string(), vec![2, 5, 8])
        ]
    );
    let acked = acks.wait(WAIT).unwrap();
    let mut failed: Vec<u64> = acked.failed.iter().map(|(id, _)| *id).collect();
    failed.sort_unstable();
    assert_eq!(failed, [0, 3, 6]);
    assert!(
        acked.failed[0].1.contains("unknown batcher"),
        "{:?}",
        acked.failed
    );
    let c = &report.counters;
    assert_eq!(
        c.batchers
            .iter()
            .map(|(n, l)| (n.as_str(), l.successful))
            .collect::<Vec<_>>(),
        [("twos", 3), ("ones", 3)]
    );
    assert_eq!(c.processors.failed, 3);
}
