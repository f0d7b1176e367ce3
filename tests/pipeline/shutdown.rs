//! Graceful shutdown: the remainder flushed, everything acknowledged, every stage joined
//! within the timeout; past the timeout, what is left is counted.

use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, unbounded};
use stageflow::pipeline::{self, Batch, BatcherOptions, Message, ProcessorOptions, Trigger};

use super::{Recorder, WAIT};

#[test]
fn shutdown_drains_flushes_and_joins_within_its_timeout() {
    let rec = Recorder::default();
    let r = rec.clone();
    let (tx, rx) = unbounded::<(usize, Trigger)>();
    let (started_tx, started) = bounded::<()>(1);
    let p = pipeline::builder("drain")
        .shutdown_timeout(WAIT)
        // An endless source: only the shutdown ends it.
        .producers(2, move |_| {
            let ack = r.acknowledger();
            stageflow::from_iter(
                (0u64..).map(move |i| Message::new(i).acknowledger(ack.clone(), i)),
            )
            .buffer_size(500)
        })
        .processors(
            ProcessorOptions::new().concurrency(3),
            move |m: &mut Message<u64>| {
                let _ = started_tx.try_send(());
                Ok::<_, String>(m.data)
            },
        )
        .batcher(
            "b",
            BatcherOptions::new()
                .batch_size(64)
                .batch_timeout(Duration::from_secs(60)),
            move |b: &mut Batch<u64>| {
                tx.send((b.messages.len(), b.info.trigger))
                    .map_err(|e| e.to_string())
            },
        )
        .start()
        .unwrap();
    started.recv_timeout(WAIT).expect("messages flowing");
    let t = Instant::now();
    let report = p.shutdown();
    assert!(t.elapsed() < WAIT);
    assert!(report.is_complete(), "{report:?}");
    assert!(
        report
            .drain
            .outcomes
            .iter()
            .all(|(_, r)| r == &Some(stageflow::Reason::Normal)),
        "{report:?}"
    );
    let c = &report.counters;
    assert!(c.producers.emitted > 0);
    assert_eq!(c.producers.buffered + c.producers.discarded, 0, "{c:?}");
    assert_eq!(c.successful, c.producers.emitted, "{c:?}");
    assert_eq!(rec.acked() as u64, c.producers.emitted);
    let batches: Vec<(usize, Trigger)> = rx.try_iter().collect();
    assert!(batches.iter().all(|&(n, _)| n > 0));
    assert_eq!(
        batches.iter().map(|&(n, _)| n as u64).sum::<u64>(),
        c.producers.emitted
    );
    assert_eq!(
        batches
            .iter()
            .filter(|&&(_, t)| t == Trigger::Flush)
            .count(),
        1,
        "{batches:?}"
    );
}

#[test]
fn past_its_timeout_shutdown_stops_and_counts_what_is_left() {
    let rec = Recorder::default();
    let (entered_tx, entered) = bounded::<()>(1);
    let p = pipeline::builder("stuck")
        .producers(1, |_| {
            stageflow::producer(pipeline::DummyProducer::<u64>::new())
        })
        .processors(
            ProcessorOptions::new().concurrency(1),
            |m: &mut Message<u64>| Ok::<_, String>(m.data),
        )
        .batcher(
            "stuck",
            BatcherOptions::new().batch_size(5),
            move |_: &mut Batch<u64>| {
                let _ = entered_tx.try_send(());
                // Slower than the shutdown's timeout: the drain has to stop it.
                std::thread::sleep(Duration::from_millis(800));
                Ok::<_, String>(())
            },
        )
        .start()
        .unwrap();
    p.push_messages(rec.messages(12)).unwrap();
    entered
        .recv_timeout(WAIT)
        .expect("the first batch reached the handler");
    // Counters per layer: the processor has handled all 12; the batcher, which never asks for
    // more than a batch (5), holds 5, and the other 7 wait in the processor's buffer.
    let c = p.counters();
    assert_eq!(
        (c.processors.messages_in, c.processors.successful),
        (12, 12),
        "{c:?}"
    );
    let b = &c.batchers[0].1;
    assert_eq!((b.messages_in, b.in_flight, b.batches), (5, 5, 0), "{c:?}");
    let t = Instant::now();
    let report = p.shutdown_timeout(Duration::from_millis(300));
    assert!(t.elapsed() < WAIT, "{:?}", t.elapsed());
    assert!(!report.is_complete());
    assert!(!report.drain.stopped.is_empty(), "{report:?}");
    // 12 pushed: whatever was not acknowledged is counted, nothing vanishes.
    assert_eq!(report.counters.pushed, 12);
    assert_eq!(report.unacknowledged + rec.acked() as u64, 12, "{report:?}");
    assert!(report.unacknowledged >= 7, "{report:?}");
}
