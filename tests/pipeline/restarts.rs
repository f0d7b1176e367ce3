//! Restarts: a crashed producer is started again and the processors resubscribe; too many
//! restarts end the pipeline with a reason naming the producer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use stageflow::pipeline::{self, Acknowledger, Message, ProcessorOptions, RateLimit};
use stageflow::supervise::Intensity;
use stageflow::{Context, Producer, Reason};

use super::{Recorder, WAIT};

/// Takes ids from a cursor shared by its incarnations (a queue, as far as it goes), one per
/// unit of demand, and finishes at `n`. With `crash_at`, it panics when asked for more once
/// the cursor has reached it.
struct Flaky {
    cursor: Arc<AtomicU64>,
    n: u64,
    crash_at: Option<u64>,
    ack: Arc<dyn Acknowledger>,
}

impl Producer for Flaky {
    type Out = Message<u64>;
    type Message = ();

    fn handle_demand(&mut self, demand: usize, ctx: &mut Context<'_, Message<u64>>) {
        if let Some(at) = self.crash_at {
            if self.cursor.load(Ordering::Relaxed) >= at {
                panic!("flaky producer crashed at {at}");
            }
        }
        for _ in 0..demand {
            let id = self.cursor.fetch_add(1, Ordering::Relaxed);
            if id >= self.n {
                return ctx.finish();
            }
            ctx.emit(Message::new(id).acknowledger(self.ack.clone(), id));
        }
    }
}

/// How the processors take their demand in a restart test.
#[derive(Clone, Copy, Debug)]
enum Shape {
    /// The defaults: automatic demand, any processor.
    Plain,
    /// Manual demand from a shared rate limit (asked per subscription).
    RateLimited,
    /// A partition per processor (the producer's dispatcher partitions).
    Partitioned,
}

/// A producer that crashes a quarter of the way, once; the pipeline must go on with its new
/// incarnation, and end normally once it finishes.
fn crash_once(shape: Shape) {
    const N: u64 = 2000;
    let rec = Recorder::default();
    let ack = rec.acknowledger();
    let cursor = Arc::new(AtomicU64::new(0));
    let incarnations = Arc::new(AtomicU64::new(0));
    let inc = incarnations.clone();
    let mut b = pipeline::builder("restarts").producer(move |_| {
        let first = inc.fetch_add(1, Ordering::Relaxed) == 0;
        stageflow::producer(Flaky {
            cursor: cursor.clone(),
            n: N,
            crash_at: first.then_some(N / 4),
            ack: ack.clone(),
        })
    });
    let mut options = ProcessorOptions::new().concurrency(3);
    match shape {
        Shape::Plain => {}
        Shape::RateLimited => {
            b = b.rate_limiting(RateLimit::new(500, Duration::from_millis(10)));
        }
        Shape::Partitioned => options = options.partition_by(|m: &Message<u64>| m.data % 7),
    }
    let p = b
        .processors(options, |m: &mut Message<u64>| Ok::<_, String>(m.data))
        .start()
        .unwrap();
    let outcomes = p.topology().join_timeout(WAIT * 3);
    assert_eq!(
        outcomes,
        [("restarts".to_string(), Some(Reason::Normal))],
        "{shape:?}: the group (producer, processors) ends normally once the new producer \
         finished"
    );
    assert_eq!(incarnations.load(Ordering::Relaxed), 2, "{shape:?}");
    let c = p.counters();
    assert_eq!(c.producers.restarts, 1, "{shape:?}");
    assert_eq!(
        p.group().restart_counts()[0],
        ("restarts.producer.0".into(), 1)
    );
    // Every id was emitted once (the cursor is shared), acknowledged at most once; those not
    // acknowledged are the ones the crash discarded, and the counters say so.
    let acked = rec.acked() as u64;
    assert_eq!(acked + c.producers.discarded, N, "{shape:?}: {c:?}");
    assert!(
        acked > N / 2,
        "{shape:?}: the new producer's messages went through"
    );
    assert_eq!(c.unacknowledged(), c.producers.discarded, "{shape:?}");
    for (id, statuses) in rec.inner.lock().acks.iter() {
        assert_eq!(statuses.len(), 1, "message {id} acknowledged {statuses:?}");
    }
}

#[test]
fn a_crashed_producer_is_restarted_and_the_processors_resubscribe() {
    crash_once(Shape::Plain);
}

#[test]
fn rate_limited_processors_resubscribe_with_manual_demand() {
    crash_once(Shape::RateLimited);
}

#[test]
fn partitioned_processors_resubscribe_to_their_partitions() {
    crash_once(Shape::Partitioned);
}

#[test]
fn too_many_restarts_end_the_pipeline_naming_the_producer() {
    let rec = Recorder::default();
    let ack = rec.acknowledger();
    let p = pipeline::builder("storm")
        .restart_intensity(Intensity::new(2, Duration::from_secs(3600)))
        .producer(move |_| {
            stageflow::producer(Flaky {
                cursor: Arc::new(AtomicU64::new(0)),
                n: u64::MAX,
                crash_at: Some(0),
                ack: ack.clone(),
            })
        })
        .processors(
            ProcessorOptions::new().concurrency(2),
            |m: &mut Message<u64>| Ok::<_, String>(m.data),
        )
        .start()
        .unwrap();
    let outcomes = p.topology().join_timeout(WAIT * 3);
    let [(name, Some(Reason::Error(why)))] = outcomes.as_slice() else {
        panic!("expected the group to fail, got {outcomes:?}");
    };
    assert_eq!(name, "storm");
    assert!(why.contains("restart intensity reached"), "{why}");
    assert!(why.contains("storm.producer.0"), "{why}");
    assert!(why.contains("flaky producer crashed at 0"), "{why}");
    assert_eq!(p.counters().producers.restarts, 2);
    assert_eq!(rec.acked(), 0);
}

#[test]
fn bad_restart_options_are_errors_naming_the_option() {
    let start = |b: pipeline::Builder| {
        let w = b
            .producer(|_| stageflow::producer(pipeline::DummyProducer::<u64>::new()))
            .processors(
                ProcessorOptions::new().concurrency(1),
                |m: &mut Message<u64>| Ok::<_, String>(m.data),
            );
        match w.start() {
            Err(pipeline::PipelineError::InvalidOption { option, .. }) => option,
            other => panic!("expected an invalid option, got {other:?}"),
        }
    };
    let b = pipeline::builder("bad").restart_intensity(Intensity::new(3, Duration::ZERO));
    assert_eq!(start(b), "restart_intensity");
    let b = pipeline::builder("bad").restart_backoff(stageflow::supervise::Backoff::Exponential {
        first: Duration::from_secs(2),
        max: Duration::from_secs(1),
    });
    assert_eq!(start(b), "restart_backoff");
}

/// A producer that is not `Clone` (it owns a receiver), handed over once.
struct FromReceiver(crossbeam_channel::Receiver<Message<u64>>);

impl Producer for FromReceiver {
    type Out = Message<u64>;
    type Message = ();

    fn handle_demand(&mut self, demand: usize, ctx: &mut Context<'_, Message<u64>>) {
        for _ in 0..demand {
            match self.0.try_recv() {
                Ok(m) => ctx.emit(m),
                Err(crossbeam_channel::TryRecvError::Empty) => return,
                Err(crossbeam_channel::TryRecvError::Disconnected) => return ctx.finish(),
            }
        }
    }
}

#[test]
fn a_producer_given_once_runs_without_a_factory() {
    const N: u64 = 500;
    let rec = Recorder::default();
    let (tx, rx) = crossbeam_channel::unbounded();
    for m in rec.messages(N) {
        tx.send(m).unwrap();
    }
    drop(tx);
    let p = pipeline::builder("once")
        .producer_once(stageflow::producer(FromReceiver(rx)))
        .processors(
            ProcessorOptions::new().concurrency(3),
            |m: &mut Message<u64>| Ok::<_, String>(m.data),
        )
        .start()
        .unwrap();
    let outcomes = p.topology().join_timeout(WAIT * 3);
    assert_eq!(outcomes, [("once".to_string(), Some(Reason::Normal))]);
    assert!(rec.assert_exactly_once(N).is_empty());
    assert_eq!(p.counters().producers.restarts, 0);
}

#[test]
fn a_producer_given_once_is_not_restarted_and_its_crash_ends_the_pipeline() {
    let rec = Recorder::default();
    let cursor = Arc::new(AtomicU64::new(0));
    let p = pipeline::builder("once-crash")
        .producer_once(stageflow::producer(Flaky {
            cursor: cursor.clone(),
            n: u64::MAX,
            crash_at: Some(300),
            ack: rec.acknowledger(),
        }))
        .processors(
            ProcessorOptions::new().concurrency(2),
            |m: &mut Message<u64>| Ok::<_, String>(m.data),
        )
        .start()
        .unwrap();
    // The group ends as after the producer's finishing (its producer gone for good, the
    // processors finished), where a factory's producer would have been started again.
    let outcomes = p.topology().join_timeout(WAIT * 3);
    assert_eq!(outcomes, [("once-crash".to_string(), Some(Reason::Normal))]);
    let c = p.counters();
    assert_eq!(c.producers.restarts, 0, "{c:?}");
    assert_eq!(p.group().restart_counts()[0].1, 0);
    // What was emitted went through, acknowledged once; what the crash held is counted.
    let emitted = cursor.load(Ordering::Relaxed);
    assert!(
        emitted >= 300,
        "the producer ran until its crash: {emitted}"
    );
    assert_eq!(rec.acked() as u64 + c.producers.discarded, emitted, "{c:?}");
    for (id, statuses) in rec.inner.lock().acks.iter() {
        assert_eq!(statuses.len(), 1, "message {id} acknowledged {statuses:?}");
    }
}
