//! Every message acknowledged exactly once, successful or failed, under random errors and
//! panics; a panic fails one message only; `handle_failed`; `ack_immediately`; grouped calls.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use stageflow::pipeline::{self, Batch, BatcherOptions, DummyProducer, Message, ProcessorOptions};

use super::{assert_ends_normally, source, Recorder, WAIT};

/// What happens to message `i` in a case: in the processor (0 ok, 1 error, 2 panic, 3 fail),
/// and which batches fail (a batch fails if its first message's id is a multiple of
/// `batch_fail_every`).
#[derive(Clone, Debug)]
struct Case {
    n: u64,
    fate: Vec<u8>,
    producers: usize,
    processors: usize,
    batchers: usize,
    batch_size: usize,
    batch_fail_every: u64,
    /// Batch processors per batcher: 1 runs them on the batcher's thread, more as stages.
    batch_concurrency: usize,
    /// Who acknowledges: 0 an `Arc` per message, 1 the pipeline's acknowledger, 2 the
    /// pipeline's for even ids and an `Arc` for odd ones.
    ack_by: u8,
}

fn cases() -> impl Strategy<Value = Case> {
    (
        1u64..300,
        1usize..3,
        1usize..5,
        0usize..3,
        1usize..20,
        2u64..7,
        1usize..3,
        0u8..3,
    )
        .prop_flat_map(
            |(
                n,
                producers,
                processors,
                batchers,
                batch_size,
                batch_fail_every,
                batch_concurrency,
                ack_by,
            )| {
                proptest::collection::vec(
                    prop_oneof![6 => Just(0u8), 1 => Just(1u8), 1 => Just(2u8), 1 => Just(3u8)],
                    n as usize,
                )
                .prop_map(move |fate| Case {
                    n,
                    fate,
                    producers,
                    processors,
                    batchers,
                    batch_size,
                    batch_fail_every,
                    batch_concurrency,
                    ack_by,
                })
            },
        )
}

fn run(case: &Case) -> Result<(), String> {
    let rec = Recorder::default();
    let r = rec.clone();
    let fate = Arc::new(case.fate.clone());
    let (n, producers, ack_by) = (case.n, case.producers, case.ack_by);
    let mut b = pipeline::builder("prop");
    if ack_by > 0 {
        b = b.acknowledger(rec.acknowledger());
    }
    let b = b
        .producers(producers, move |i| {
            // Producer i emits the ids i, i + producers, ...
            let ack = r.acknowledger();
            let ids: Vec<Message<u64>> = (0..n)
                .filter(|id| *id as usize % producers == i)
                .map(|id| match (ack_by, id % 2) {
                    (1, _) | (2, 0) => Message::new(id).pipeline_acknowledger(id),
                    _ => Message::new(id).acknowledger(ack.clone(), id),
                })
                .collect();
            stageflow::from_iter(ids)
        })
        .processors(
            ProcessorOptions::new().concurrency(case.processors),
            move |m: &mut Message<u64>| match fate[m.data as usize] {
                1 => Err(format!("error {}", m.data)),
                2 => panic!("panic {}", m.data),
                3 => {
                    m.fail("failed by hand");
                    Ok(m.data)
                }
                _ => Ok(m.data),
            },
        );
    let every = case.batch_fail_every;
    let mut b = b;
    for k in 0..case.batchers {
        let name = format!("b{k}");
        b = b.batcher(
            &name,
            BatcherOptions::new()
                .concurrency(case.batch_concurrency)
                .batch_size(case.batch_size)
                .batch_timeout(Duration::from_millis(20)),
            move |batch: &mut Batch<u64>| {
                let first = batch.messages[0].data;
                if first.is_multiple_of(every) {
                    if first.is_multiple_of(2) {
                        return Err("batch error".to_string());
                    }
                    panic!("batch panic");
                }
                if let Some(m) = batch.messages.get_mut(1) {
                    if m.data % 5 == 0 {
                        m.fail("one message of the batch");
                    }
                }
                Ok(())
            },
        );
    }
    let p = b.start().map_err(|e| e.to_string())?;
    let outcomes = p.topology().join_timeout(WAIT);
    if let Some(o) = outcomes
        .iter()
        .find(|(_, r)| !r.as_ref().is_some_and(|r| r.is_normal()))
    {
        return Err(format!("stage {o:?} did not end normally"));
    }
    let failed = rec.assert_exactly_once(n);
    // Every message that failed in a processor is among the failed.
    for id in 0..n {
        if case.fate[id as usize] != 0 && !failed.contains(&id) {
            return Err(format!("message {id} should have failed"));
        }
        if case.batchers == 0 && case.fate[id as usize] == 0 && failed.contains(&id) {
            return Err(format!("message {id} should have succeeded"));
        }
    }
    let c = p.counters();
    if c.successful + c.failed != n || c.failed != failed.len() as u64 || c.unacknowledged() != 0 {
        return Err(format!(
            "counters {c:?} against {n} messages, {} failed",
            failed.len()
        ));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn every_message_is_acknowledged_exactly_once(case in cases()) {
        let result = run(&case);
        prop_assert!(result.is_ok(), "{:?}: {:?}", case, result);
    }
}

#[test]
fn a_panicking_processor_fails_that_message_only() {
    let rec = Recorder::default();
    let r = rec.clone();
    let failed_seen = Arc::new(AtomicUsize::new(0));
    let f = failed_seen.clone();
    let p = pipeline::builder("panics")
        .producers(1, move |_| source(&r, 50))
        .processors(
            ProcessorOptions::new()
                .concurrency(1) // one thread: it survives its panics
                .handle_failed(move |ms: &mut [Message<u64>]| {
                    f.fetch_add(ms.len(), Ordering::Relaxed);
                    for m in ms.iter_mut() {
                        m.metadata.insert("seen".into(), "yes".into());
                    }
                }),
            |m: &mut Message<u64>| {
                if m.data == 7 {
                    panic!("seven");
                }
                Ok::<_, String>(m.data)
            },
        )
        .start()
        .unwrap();
    assert_ends_normally(&p);
    assert_eq!(rec.assert_exactly_once(50), [7]);
    let r = rec.inner.lock();
    assert_eq!(
        r.acks[&7],
        [pipeline::Status::Failed("panicked: seven".into())]
    );
    drop(r);
    assert_eq!(failed_seen.load(Ordering::Relaxed), 1);
    let c = p.counters();
    assert_eq!((c.processors.successful, c.processors.failed), (49, 1));
}

#[test]
fn test_messages_report_successful_and_failed_lists() {
    // Messages that reached a batch handler failed.
    let failed_batched = Arc::new(AtomicUsize::new(0));
    let seen = failed_batched.clone();
    let p = pipeline::builder("test-messages")
        .producers(1, |_| stageflow::producer(DummyProducer::<String>::new()))
        .processors(
            ProcessorOptions::new().concurrency(2),
            |m: &mut Message<String>| match m.data.as_str() {
                "" => Err("empty"),
                "boom" => panic!("boom"),
                "fail" => {
                    m.fail("failed by hand");
                    Ok(0)
                }
                data => Ok(data.len()),
            },
        )
        .batcher(
            "lengths",
            BatcherOptions::new().batch_size(2),
            move |b: &mut Batch<usize>| {
                let failed = b.messages.iter().filter(|m| m.is_failed()).count();
                seen.fetch_add(failed, Ordering::Relaxed);
                if b.messages.iter().any(|m| m.data > 10) {
                    return Err("too long");
                }
                Ok(())
            },
        )
        .start()
        .unwrap();
    let acks = p
        .test_messages(["a", "", "bb", "a very long word", "ccc", "boom", "fail"].map(String::from))
        .unwrap();
    let report = p.shutdown_timeout(WAIT);
    assert!(report.is_complete(), "{report:?}");
    let acked = acks.wait(WAIT).unwrap();
    let ok: BTreeSet<u64> = acked.successful.iter().copied().collect();
    let failed: BTreeSet<u64> = acked.failed.iter().map(|(i, _)| *i).collect();
    for i in [1, 3, 5, 6] {
        assert!(failed.contains(&i), "{i}: {acked:?}");
    }
    assert_eq!(ok.len() + failed.len(), 7);
    assert!(ok.is_disjoint(&failed));
    // A handler that changes the data's type fails a message by its error, its panic, or
    // by hand, and only that message; a failed message goes to no batcher.
    assert_eq!(failed_batched.load(Ordering::Relaxed), 0);
    for (id, reason) in [(1, "empty"), (5, "boom"), (6, "failed by hand")] {
        assert!(
            acked
                .failed
                .iter()
                .any(|(i, r)| *i == id && r.contains(reason)),
            "{id}: {acked:?}"
        );
    }
}

#[test]
fn ack_immediately_acknowledges_once_and_at_once() {
    ack_immediately_case(false);
}

#[test]
fn ack_immediately_acknowledges_a_message_of_the_pipelines_acknowledger_at_once() {
    ack_immediately_case(true);
}

/// Messages acknowledged by `ack_immediately` in the processor, by their own acknowledger or
/// (`pipeline`) by the pipeline's.
fn ack_immediately_case(pipeline: bool) {
    let (acked_tx, acked) = crossbeam_channel::unbounded::<(usize, usize)>();
    let ack: Arc<dyn pipeline::Acknowledger> = Arc::new(
        move |ok: Vec<pipeline::Acked>, failed: Vec<pipeline::Acked>| {
            let _ = acked_tx.send((ok.len(), failed.len()));
        },
    );
    let (tx, rx) = crossbeam_channel::unbounded();
    let mut b = pipeline::builder("immediately");
    if pipeline {
        b = b.acknowledger(ack.clone());
    }
    let p = b
        .producers(1, |_| stageflow::producer(DummyProducer::<u64>::new()))
        .processors(
            ProcessorOptions::new().concurrency(1),
            |m: &mut Message<u64>| {
                m.ack_immediately();
                Ok::<_, String>(m.data)
            },
        )
        .batcher(
            "slow",
            BatcherOptions::new()
                .batch_size(100)
                .batch_timeout(Duration::from_secs(60)),
            move |b: &mut Batch<u64>| tx.send(b.messages.len()).map_err(|e| e.to_string()),
        )
        .start()
        .unwrap();
    let messages = (0..5u64)
        .map(|i| match pipeline {
            true => Message::new(i).pipeline_acknowledger(i),
            false => Message::new(i).acknowledger(ack.clone(), i),
        })
        .collect();
    p.push_messages(messages).unwrap();
    // Acknowledged one by one while the batch is still in the making (its timeout is a
    // minute away).
    for _ in 0..5 {
        assert_eq!(acked.recv_timeout(WAIT), Ok((1, 0)));
    }
    assert!(rx.try_recv().is_err());
    let report = p.shutdown_timeout(WAIT);
    assert!(report.is_complete(), "{report:?}");
    assert_eq!(rx.try_recv(), Ok(5), "the batch was flushed at shutdown");
    assert!(acked.try_recv().is_err(), "acknowledged again at the end");
    assert_eq!(report.counters.successful, 5);
}

#[test]
fn messages_of_a_pipeline_without_acknowledger_count_as_acknowledged() {
    let p = pipeline::builder("nobody")
        .producers(1, |_| {
            stageflow::from_iter((0..50u64).map(|i| Message::new(i).pipeline_acknowledger(i)))
        })
        .processors(
            ProcessorOptions::new().concurrency(2),
            |m: &mut Message<u64>| Ok::<_, String>(m.data),
        )
        .batcher(
            "b",
            BatcherOptions::new().batch_size(10),
            |_: &mut Batch<u64>| Ok::<_, String>(()),
        )
        .start()
        .unwrap();
    assert_ends_normally(&p);
    let c = p.counters();
    assert_eq!((c.successful, c.failed, c.unacknowledged()), (50, 0, 0));
}

#[test]
fn the_pipelines_acknowledger_is_told_in_groups_beside_the_messages_own() {
    // Even ids go to the pipeline's acknowledger, odd ids to their own: two calls per batch,
    // each with its own half.
    let (own, piped) = (Recorder::default(), Recorder::default());
    let o = own.clone();
    let p = pipeline::builder("both")
        .acknowledger(piped.acknowledger())
        .producers(1, move |_| {
            let ack = o.acknowledger();
            stageflow::from_iter((0..100u64).map(move |i| match i % 2 {
                0 => Message::new(i).pipeline_acknowledger(i),
                _ => Message::new(i).acknowledger(ack.clone(), i),
            }))
        })
        .processors(
            ProcessorOptions::new().concurrency(1),
            |m: &mut Message<u64>| Ok::<_, String>(m.data),
        )
        .batcher(
            "b",
            BatcherOptions::new()
                .batch_size(10)
                .batch_timeout(Duration::from_secs(60)),
            |_: &mut Batch<u64>| Ok::<_, String>(()),
        )
        .start()
        .unwrap();
    assert_ends_normally(&p);
    let ids = |r: &Recorder| {
        r.inner
            .lock()
            .acks
            .keys()
            .copied()
            .collect::<BTreeSet<u64>>()
    };
    assert_eq!(ids(&piped), (0..100).step_by(2).collect());
    assert_eq!(ids(&own), (1..100).step_by(2).collect());
    assert!(own.assert_exactly_once_of(1..100, 2));
    assert!(piped.assert_exactly_once_of(0..100, 2));
    // One call per acknowledger per batch of 10: 10 calls each, not 50.
    assert_eq!((own.calls(), piped.calls()), (10, 10));
}

#[test]
fn without_batchers_processors_acknowledge_in_groups() {
    let rec = Recorder::default();
    let r = rec.clone();
    let p = pipeline::builder("groups")
        .producers(1, move |_| source(&r, 100))
        .processors(
            ProcessorOptions::new().concurrency(1),
            |m: &mut Message<u64>| Ok::<_, String>(m.data),
        )
        .start()
        .unwrap();
    p.topology().join_timeout(WAIT);
    assert!(rec.assert_exactly_once(100).is_empty());
    // Batches of max_demand - min_demand = 5 events: 20 calls, not 100.
    assert!(rec.calls() <= 20, "{} calls", rec.calls());
}

#[test]
fn bad_options_are_errors_naming_the_option() {
    let start = |o: ProcessorOptions<u64>, b: Option<BatcherOptions<u64>>| {
        let mut w = pipeline::builder("bad")
            .producers(1, |_| stageflow::producer(DummyProducer::<u64>::new()))
            .processors(o, |m: &mut Message<u64>| Ok::<_, String>(m.data));
        if let Some(b) = b {
            w = w.batcher("b", b, |_: &mut Batch<u64>| Ok::<_, String>(()));
        }
        match w.start() {
            Err(pipeline::PipelineError::InvalidOption { option, .. }) => option,
            other => panic!("expected an invalid option, got {other:?}"),
        }
    };
    assert_eq!(
        start(ProcessorOptions::new().concurrency(0), None),
        "processors.concurrency"
    );
    assert_eq!(
        start(ProcessorOptions::new().min_demand(10), None),
        "processors.min_demand"
    );
    assert_eq!(
        start(ProcessorOptions::new().adaptive_demand(5), None),
        "processors.adaptive_demand"
    );
    assert_eq!(
        start(
            ProcessorOptions::new(),
            Some(BatcherOptions::new().batch_size(0))
        ),
        "batchers.batch_size"
    );
    assert_eq!(
        start(
            ProcessorOptions::new(),
            Some(
                BatcherOptions::new()
                    .batch_size(pipeline::BatchSize::weight(10, |_: &Message<u64>| 1))
            )
        ),
        "batchers.max_demand"
    );
    assert_eq!(
        start(
            ProcessorOptions::new(),
            Some(BatcherOptions::new().batch_timeout(Duration::ZERO))
        ),
        "batchers.batch_timeout"
    );
    let rate = pipeline::builder("bad-rate")
        .producers(1, |_| stageflow::producer(DummyProducer::<u64>::new()))
        .rate_limiting(pipeline::RateLimit::new(0, Duration::from_secs(1)))
        .processors(ProcessorOptions::new(), |m: &mut Message<u64>| {
            Ok::<_, String>(m.data)
        })
        .start();
    assert!(matches!(
        rate,
        Err(pipeline::PipelineError::InvalidOption {
            option: "rate_limiting.allowed_messages",
            ..
        })
    ));
    let error = pipeline::builder("bad-producers")
        .producers(0, |_| stageflow::producer(DummyProducer::<u64>::new()))
        .processors(ProcessorOptions::new(), |m: &mut Message<u64>| {
            Ok::<_, String>(m.data)
        })
        .start()
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "pipeline: invalid option producer.concurrency: expected concurrency to be at least 1, got 0"
    );
}
