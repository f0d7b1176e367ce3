//! End-to-end demand sequences (reference §1.3, §1.4): the exact `handle_demand` values a producer
//! is asked for and the exact batches `handle_events` receives, for every max/min pair of the
//! reference table, the moduledoc's worked example (max 1000 / min 750, 100 events per message),
//! and partial deliveries; and that a subscription is never sent more events than it asked for.

mod common;

use std::time::Duration;

use common::{joined, next, Numbers, Recorder, Report};
use crossbeam_channel::Sender;
use stageflow::{Context, DemandMode, Events, Producer, Reason, Reply, SubscribeOptions};

/// What one run of `Numbers -> Recorder` showed.
#[derive(Debug)]
struct Trace {
    /// Every `handle_demand(n)`, in order.
    demands: Vec<usize>,
    /// Every `handle_events` batch, in order.
    batches: Vec<Vec<u64>>,
}

impl Trace {
    fn sizes(&self) -> Vec<usize> {
        self.batches.iter().map(Vec::len).collect()
    }
}

/// Runs a `Numbers` producer that emits exactly what it is asked for and finishes after `limit`
/// events, and one `Recorder` consumer subscribed with `options`. Both report on the *same*
/// channel, so the producer's `Demand(n)` (sent before it emits) always precedes the batches made
/// of those events; that order lets us check the credit bound report by report.
fn run(options: SubscribeOptions, limit: u64) -> Trace {
    let max = options.get_max_demand();
    let (tx, rx) = crossbeam_channel::unbounded();
    let producer = stageflow::producer(Numbers {
        next: 0,
        limit: Some(limit),
        tx: tx.clone(),
    })
    .name("numbers")
    .spawn()
    .expect("spawn producer");
    let consumer = stageflow::consumer(Recorder {
        tx,
        delay: Duration::ZERO,
        mode: DemandMode::Automatic,
    })
    .name("recorder")
    .subscribe_to(&producer, options)
    .expect("valid options")
    .spawn()
    .expect("spawn consumer");

    assert_eq!(
        next(&rx),
        Report::Subscribed,
        "handle_subscribe comes first"
    );
    let mut trace = Trace {
        demands: Vec::new(),
        batches: Vec::new(),
    };
    let (mut asked, mut received) = (0usize, 0usize);
    loop {
        match next(&rx) {
            Report::Demand(n) => {
                assert!(n > 0, "handle_demand(0) must never be called");
                asked += n;
                assert!(
                    asked - received <= max,
                    "more than max_demand {max} asked and not received: asked {asked}, \
                     received {received} (demands {:?})",
                    trace.demands
                );
                trace.demands.push(n);
            }
            Report::Batch(b) => {
                received += b.len();
                assert!(
                    received <= asked,
                    "the subscription was sent more than it asked for: received {received}, \
                     asked {asked} (demands {:?})",
                    trace.demands
                );
                trace.batches.push(b);
            }
            Report::Subscribed => panic!("subscribed twice"),
            Report::Cancelled(reason) => {
                assert_eq!(reason, Reason::Normal, "the producer finished normally");
                break;
            }
        }
    }
    assert_eq!(joined(&consumer), Reason::Normal);
    assert_eq!(joined(&producer), Reason::Normal);
    let all: Vec<u64> = trace.batches.iter().flatten().copied().collect();
    assert_eq!(
        all,
        (0..limit).collect::<Vec<_>>(),
        "every event once, in order"
    );
    assert!(rx.try_recv().is_err(), "nothing after the cancel");
    trace
}

#[test]
fn smoke() {
    let t = run(SubscribeOptions::new().max_demand(4), 4);
    assert_eq!(t.demands, vec![4]);
    assert_eq!(t.sizes(), vec![2, 2]);
}

#[test]
fn max_1000_min_500_by_default() {
    // Demand 1000 -> batches of 500, asking 500 after each; every later message is one batch
    // of 500 followed by an ask of 500.
    let t = run(SubscribeOptions::new(), 3000);
    assert_eq!(t.demands, vec![1000, 500, 500, 500, 500]);
    assert_eq!(t.sizes(), vec![500; 6]);
}

#[test]
fn max_10_min_5_explicit_and_default() {
    for options in [
        SubscribeOptions::new().max_demand(10).min_demand(5),
        SubscribeOptions::new().max_demand(10),
    ] {
        let t = run(options, 30);
        assert_eq!(t.demands, vec![10, 5, 5, 5, 5]);
        assert_eq!(t.sizes(), vec![5; 6]);
    }
}

#[test]
fn max_100_min_80_cuts_chunks_of_20() {
    // One message of 100 -> 5 batches of 20, ask 20 after each.
    let t = run(SubscribeOptions::new().max_demand(100).min_demand(80), 200);
    assert_eq!(t.demands, vec![100, 20, 20, 20, 20, 20]);
    assert_eq!(t.sizes(), vec![20; 10]);
}

#[test]
fn max_100_min_20_alternates_80_and_100() {
    // 100 -> [80] ask 80, [20] no ask; the message of 80 -> [80] ask 100; 100 -> [80] ask 80,
    // [20] no ask; 80 -> [80] (the producer has finished by then).
    let t = run(SubscribeOptions::new().max_demand(100).min_demand(20), 360);
    assert_eq!(t.demands, vec![100, 80, 100, 80]);
    assert_eq!(t.sizes(), vec![80, 20, 80, 80, 20, 80]);
}

#[test]
fn max_3_default_min_1() {
    // Ask 3 -> [0,1] ask 2, [2] no ask; [3,4] ask 3; [5,6] ask 2, [7]; [8,9].
    let t = run(SubscribeOptions::new().max_demand(3), 10);
    assert_eq!(t.demands, vec![3, 2, 3, 2]);
    assert_eq!(
        t.batches,
        vec![
            vec![0, 1],
            vec![2],
            vec![3, 4],
            vec![5, 6],
            vec![7],
            vec![8, 9]
        ]
    );
}

#[test]
fn max_1_min_0_is_lock_step() {
    for options in [
        SubscribeOptions::new().max_demand(1).min_demand(0),
        SubscribeOptions::new().max_demand(1),
    ] {
        let t = run(options, 5);
        assert_eq!(t.demands, vec![1; 5]);
        assert_eq!(t.sizes(), vec![1; 5]);
    }
}

#[test]
fn max_10_min_9_batches_of_one_never_summed() {
    // A message of 10 -> ten batches of 1, each followed by its own ask of 1; the producer
    // handles each ask separately (handle_demand is never summed).
    let t = run(SubscribeOptions::new().max_demand(10).min_demand(9), 15);
    assert_eq!(t.demands, vec![10, 1, 1, 1, 1, 1]);
    assert_eq!(t.sizes(), vec![1; 15]);
}

#[test]
fn max_10_min_0_one_batch_of_ten() {
    let t = run(SubscribeOptions::new().max_demand(10).min_demand(0), 30);
    assert_eq!(t.demands, vec![10, 10, 10]);
    assert_eq!(t.sizes(), vec![10, 10, 10]);
}

// ----- A producer whose messages the test sizes itself -------------------------------------

enum Cmd {
    /// Emit the next `n` numbers, in one message.
    Emit(usize),
    /// Reply once everything before it was handled.
    Sync(Reply<()>),
    Finish,
}

/// Emits only when told to, `n` events per message; reports every `handle_demand`.
struct Caster {
    next: u64,
    tx: Sender<Report<u64>>,
}

impl Producer for Caster {
    type Out = u64;
    type Message = Cmd;

    fn handle_demand(&mut self, demand: usize, _: &mut Context<'_, u64, Cmd>) {
        let _ = self.tx.send(Report::Demand(demand));
    }

    fn handle_message(&mut self, msg: Cmd, ctx: &mut Context<'_, u64, Cmd>) {
        match msg {
            Cmd::Emit(n) => {
                let end = self.next + n as u64;
                ctx.emit_all(self.next..end);
                self.next = end;
            }
            Cmd::Sync(reply) => ctx.reply(reply, ()),
            Cmd::Finish => ctx.finish(),
        }
    }
}

/// Spawns `Caster -> Recorder(options)`, both reporting on one channel, and waits for the
/// initial ask.
fn caster(
    options: SubscribeOptions,
) -> (
    stageflow::ProducerHandle<Caster>,
    stageflow::ConsumerHandle<Recorder<u64>>,
    crossbeam_channel::Receiver<Report<u64>>,
) {
    let max = options.get_max_demand();
    let (tx, rx) = crossbeam_channel::unbounded();
    let producer = stageflow::producer(Caster {
        next: 0,
        tx: tx.clone(),
    })
    .name("caster")
    .spawn()
    .unwrap();
    let consumer = stageflow::consumer(Recorder {
        tx,
        delay: Duration::ZERO,
        mode: DemandMode::Automatic,
    })
    .name("recorder")
    .subscribe_to(&producer, options)
    .unwrap()
    .spawn()
    .unwrap();
    assert_eq!(next(&rx), Report::Subscribed);
    assert_eq!(
        next(&rx),
        Report::Demand(max),
        "the first ask is max_demand"
    );
    (producer, consumer, rx)
}

fn finish(
    producer: stageflow::ProducerHandle<Caster>,
    consumer: stageflow::ConsumerHandle<Recorder<u64>>,
    rx: crossbeam_channel::Receiver<Report<u64>>,
) {
    producer.cast(Cmd::Finish).unwrap();
    assert_eq!(next(&rx), Report::Cancelled(Reason::Normal));
    assert_eq!(joined(&consumer), Reason::Normal);
    assert_eq!(joined(&producer), Reason::Normal);
}

#[test]
fn moduledoc_example_max_1000_min_750_asks_300_after_three_messages() {
    // Each 100-event message is one batch (100 < max - min = 250): no ask after the first two
    // (D goes 900, 800); after the third, D = 700 <= 750 and the consumer asks 300.
    let (producer, consumer, rx) = caster(SubscribeOptions::new().max_demand(1000).min_demand(750));
    for _ in 0..3 {
        producer.cast(Cmd::Emit(100)).unwrap();
    }
    // Any ask sent after the first or second message would show up here as a Demand before the
    // third batch or instead of the 300: the producer handles asks in the order they are sent.
    let seen: Vec<Report<u64>> = (0..4).map(|_| next(&rx)).collect();
    assert_eq!(
        seen,
        vec![
            Report::Batch((0..100).collect()),
            Report::Batch((100..200).collect()),
            Report::Batch((200..300).collect()),
            Report::Demand(300),
        ]
    );
    // The ask of 300 was applied before handle_demand(300) ran: 1000 - 300 + 300 outstanding.
    let c = producer.counters();
    assert_eq!(c.subscriptions.len(), 1);
    assert_eq!(c.subscriptions[0].demand, 1000);
    assert_eq!(c.events_out, 300);
    producer.call(Cmd::Sync, common::LIMIT).unwrap();
    assert!(rx.try_recv().is_err(), "no other ask");
    finish(producer, consumer, rx);
}

#[test]
fn partial_deliveries_ask_once_min_demand_is_reached() {
    // Reference §1.4: M=10, m=5, D=10: 3 events leave D = 7 (no ask); 2 more take D to 5, so
    // the consumer asks 5.
    let (producer, consumer, rx) = caster(SubscribeOptions::new().max_demand(10).min_demand(5));
    producer.cast(Cmd::Emit(3)).unwrap();
    producer.cast(Cmd::Emit(2)).unwrap();
    let seen: Vec<Report<u64>> = (0..3).map(|_| next(&rx)).collect();
    assert_eq!(
        seen,
        vec![
            Report::Batch(vec![0, 1, 2]),
            Report::Batch(vec![3, 4]),
            Report::Demand(5),
        ]
    );
    // A message larger than the chunk is cut at max - min whatever D is: 10 outstanding,
    // 7 arrive -> [5] (D 5 -> ask 5), [2] (D 8, no ask).
    // The ask follows the first batch, so it may be reported before or after the second one.
    producer.cast(Cmd::Emit(7)).unwrap();
    let seen: Vec<Report<u64>> = (0..3).map(|_| next(&rx)).collect();
    let (demands, batches): (Vec<_>, Vec<_>) = seen
        .into_iter()
        .partition(|r| matches!(r, Report::Demand(_)));
    assert_eq!(
        batches,
        vec![
            Report::Batch(vec![5, 6, 7, 8, 9]),
            Report::Batch(vec![10, 11])
        ]
    );
    assert_eq!(demands, vec![Report::Demand(5)]);
    producer.call(Cmd::Sync, common::LIMIT).unwrap();
    assert!(rx.try_recv().is_err(), "no ask after the second batch");
    assert_eq!(consumer.counters().events_in, 12);
    finish(producer, consumer, rx);
}

/// On threads: a consumer with adaptive demand gets every event once, in order, in batches
/// no larger than its limit. (Whether it grows depends on whether it finds its inbox empty
/// when it asks, a race on threads: `tests/sim_protocol.rs` shows the growth, seed by seed,
/// and the inlet's unit tests the rule.)
#[test]
fn adaptive_demand_on_threads_grows_and_keeps_order() {
    use std::sync::{Arc, Mutex};
    const N: u64 = 200_000;
    let seen: Arc<Mutex<(Vec<u64>, usize)>> = Arc::default();
    let into = seen.clone();
    let producer = stageflow::from_iter(0..N).spawn().unwrap();
    let sink = stageflow::consumer(stageflow::fns::Batches::new(
        move |batch: Events<'_, u64>| {
            let batch: Vec<u64> = batch.collect();
            let mut s = into.lock().unwrap();
            s.1 = s.1.max(batch.len());
            s.0.extend(batch);
        },
    ))
    .subscribe_to(
        &producer,
        SubscribeOptions::new()
            .max_demand(10)
            .min_demand(5)
            .adaptive_demand(400),
    )
    .unwrap()
    .spawn()
    .unwrap();
    assert_eq!(joined(&sink), Reason::Normal);
    let seen = seen.lock().unwrap();
    assert!(
        seen.0.iter().copied().eq(0..N),
        "every event once, in order"
    );
    assert!(seen.1 <= 400, "a batch larger than the limit: {}", seen.1);
    joined(&producer);
}
