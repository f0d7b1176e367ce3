//! The `PartitionDispatcher` end to end (reference §3.3): each event goes to the consumer of
//! its partition with per-key order kept, events hashed to no partition are dropped, counted
//! and replaced, a cancelled partition's queue is dropped and counted, and every subscribe
//! error comes back as a value while the producer keeps running.

mod common;

use std::marker::PhantomData;

use common::{collect_events, joined, next, Numbers, Recorder, Report, LIMIT};
use crossbeam_channel::{Receiver, Sender};
use stageflow::dispatcher::PartitionDispatcher;
use stageflow::{
    BuildError, CancelMode, ConsumerHandle, Context, DemandMode, Producer, ProducerHandle, Reason,
    Reply, SubscribeError, SubscribeOptions, SubscriptionId,
};

enum Cmd<T> {
    /// Emit these events in one callback, then reply.
    Emit(Vec<T>, Reply<()>),
    Sync(Reply<()>),
    Finish,
}

/// Emits only when told to; reports every `handle_demand`.
struct Commanded<T> {
    tx: Sender<usize>,
    events: PhantomData<fn() -> T>,
}

impl<T: Send + 'static> Producer for Commanded<T> {
    type Out = T;
    type Message = Cmd<T>;

    fn handle_demand(&mut self, demand: usize, _: &mut Context<'_, T, Cmd<T>>) {
        let _ = self.tx.send(demand);
    }

    fn handle_message(&mut self, msg: Cmd<T>, ctx: &mut Context<'_, T, Cmd<T>>) {
        match msg {
            Cmd::Emit(events, reply) => {
                ctx.emit_all(events);
                ctx.reply(reply, ());
            }
            Cmd::Sync(reply) => ctx.reply(reply, ()),
            Cmd::Finish => ctx.finish(),
        }
    }
}

/// A `Commanded` producer named "source" with `dispatcher`, and the demands it is asked for.
fn commanded<T: Send + 'static>(
    dispatcher: PartitionDispatcher<T>,
) -> (ProducerHandle<Commanded<T>>, Receiver<usize>) {
    let (tx, rx) = crossbeam_channel::unbounded();
    let p = stageflow::producer(Commanded {
        tx,
        events: PhantomData,
    })
    .name("source")
    .dispatcher(dispatcher)
    .spawn()
    .unwrap();
    (p, rx)
}

fn emit<T: Send + 'static>(p: &ProducerHandle<Commanded<T>>, events: Vec<T>) {
    p.call(|r| Cmd::Emit(events, r), LIMIT).unwrap();
}

fn sync<T: Send + 'static>(p: &ProducerHandle<Commanded<T>>) {
    p.call(Cmd::Sync, LIMIT).unwrap();
}

/// Even numbers to partition 0, odd ones to 1.
fn parity() -> PartitionDispatcher<u64> {
    PartitionDispatcher::new(2, |x: &u64| Some(x % 2)).unwrap()
}

fn on(partition: u64) -> SubscribeOptions {
    SubscribeOptions::new().partition(partition)
}

/// A running `Synced` with no subscription yet.
fn sink<T: Send + 'static>(
    mode: DemandMode,
) -> (ConsumerHandle<common::Synced<T>>, Receiver<Report<T>>) {
    let (tx, rx) = crossbeam_channel::unbounded();
    let c = stageflow::consumer(common::Synced { tx, mode })
        .spawn()
        .unwrap();
    (c, rx)
}

/// A `Synced` on manual demand subscribed to `partition` of `p`, with its subscription id.
fn manual(
    p: &ProducerHandle<Commanded<u64>>,
    partition: u64,
) -> (
    ConsumerHandle<common::Synced<u64>>,
    SubscriptionId,
    Receiver<Report<u64>>,
) {
    let (c, rx) = sink(DemandMode::Manual);
    let sub = c
        .subscribe_to(p, on(partition).cancel(CancelMode::Temporary))
        .unwrap();
    (c, sub, rx)
}

/// Asks `n` on a manual subscription and waits until the producer has handled the ask.
fn ask(
    c: &ConsumerHandle<common::Synced<u64>>,
    sub: SubscriptionId,
    n: usize,
    p: &ProducerHandle<Commanded<u64>>,
) {
    c.ask(sub, n).unwrap();
    c.call(|r| r, LIMIT).unwrap();
    sync(p);
}

/// Every event a consumer received until its subscription ended, in order.
fn received<T: std::fmt::Debug>(rx: &Receiver<Report<T>>) -> Vec<T> {
    let mut events = Vec::new();
    loop {
        match next(rx) {
            Report::Batch(b) => events.extend(b),
            Report::Cancelled(_) => return events,
            _ => {}
        }
    }
}

fn flat<T>(batches: Vec<Vec<T>>) -> Vec<T> {
    batches.into_iter().flatten().collect()
}

/// A running `Recorder` of `u64`, and its reports.
type Recording = (ConsumerHandle<Recorder<u64>>, Receiver<Report<u64>>);

/// A `Recorder` of `u64` subscribed to `p` with `options` when it starts.
fn recorder(
    p: &impl stageflow::Upstream<'static, u64>,
    options: SubscribeOptions,
) -> Result<Recording, BuildError> {
    let (rec, rx) = Recorder::new();
    let c = stageflow::consumer(rec).subscribe_to(p, options)?.spawn()?;
    Ok((c, rx))
}

#[test]
fn smoke() {
    let (numbers, _demands) = Numbers::new(None);
    let p = stageflow::producer(numbers)
        .dispatcher(parity())
        .spawn()
        .unwrap();
    let (even, even_rx) = recorder(&p, on(0).max_demand(10)).unwrap();
    let (odd, odd_rx) = recorder(&p, on(1).max_demand(10)).unwrap();
    // Odd numbers emitted before `odd` subscribed waited in the dispatcher for it.
    let evens = flat(collect_events(&even_rx, 100));
    let odds = flat(collect_events(&odd_rx, 100));
    assert_eq!(evens[..100], (0..200).step_by(2).collect::<Vec<u64>>());
    assert_eq!(odds[..100], (1..200).step_by(2).collect::<Vec<u64>>());
    p.stop();
    joined(&p);
    joined(&even);
    joined(&odd);
}

#[test]
fn per_key_order_is_kept() {
    // (key, sequence number within the key), keys skewed: key 0 is half the traffic.
    let events: Vec<(u8, u64)> = {
        let mut seqs = [0u64; 8];
        (0..600u64)
            .map(|i| {
                let key = if i % 2 == 0 { 0 } else { (i * 7 % 8) as u8 };
                let seq = seqs[key as usize];
                seqs[key as usize] += 1;
                (key, seq)
            })
            .collect()
    };
    let dispatcher = PartitionDispatcher::new(3, |e: &(u8, u64)| Some(u64::from(e.0 % 3)));
    let (p, _demands) = commanded(dispatcher.unwrap());
    // Different paces, so that partitions fall behind one another and queue.
    let consumers: Vec<_> = [(0, 50), (1, 2), (2, 7)]
        .into_iter()
        .map(|(partition, max)| {
            let (c, rx) = sink::<(u8, u64)>(DemandMode::Automatic);
            c.subscribe_to(&p, on(partition).max_demand(max)).unwrap();
            (partition, c, rx)
        })
        .collect();
    for chunk in events.chunks(100) {
        emit(&p, chunk.to_vec());
    }
    for (partition, _, rx) in &consumers {
        let expected: Vec<(u8, u64)> = events
            .iter()
            .filter(|e| u64::from(e.0 % 3) == *partition)
            .copied()
            .collect();
        let got = flat(collect_events(rx, expected.len()));
        // Exactly its partition's events, in emission order: each key's order is kept.
        assert_eq!(got, expected, "partition {partition}");
    }
    // Everything was delivered, so the producer can finish without dropping anything.
    p.cast(Cmd::Finish).unwrap();
    assert_eq!(joined(&p), Reason::Normal);
    for (_, c, _) in &consumers {
        assert_eq!(joined(c), Reason::Normal);
    }
    let counters = p.counters();
    assert_eq!((counters.events_out, counters.discarded), (600, 0));
}

#[test]
fn events_hashed_to_none_are_dropped_counted_and_replaced() {
    // A producer that emits exactly its demand: the events the hash drops used none of the
    // demand, so the dispatcher must ask for replacements, or everyone would wait forever.
    let (numbers, _demands) = Numbers::new(None);
    let dispatcher = PartitionDispatcher::new(2, |x: &u64| (!x.is_multiple_of(5)).then_some(x % 2));
    let p = stageflow::producer(numbers)
        .dispatcher(dispatcher.unwrap())
        .spawn()
        .unwrap();
    let (even, even_rx) = recorder(&p, on(0).max_demand(4)).unwrap();
    let (odd, odd_rx) = recorder(&p, on(1).max_demand(4)).unwrap();
    let keep = |x: &u64| !x.is_multiple_of(5);
    let evens = flat(collect_events(&even_rx, 40));
    let odds = flat(collect_events(&odd_rx, 40));
    let expected = |from: u64| {
        (from..)
            .step_by(2)
            .filter(keep)
            .take(40)
            .collect::<Vec<_>>()
    };
    assert_eq!(evens[..40], expected(0));
    assert_eq!(odds[..40], expected(1));
    let discarded = p.counters().discarded;
    assert!(
        discarded >= 15,
        "multiples of 5 below 80 are dropped and counted: {discarded}"
    );
    p.stop();
    joined(&p);
    joined(&even);
    joined(&odd);
}

#[test]
fn an_unknown_partition_is_dropped_and_the_producer_keeps_running() {
    let dispatcher = PartitionDispatcher::new(2, |x: &u64| Some(x % 3));
    let (p, _demands) = commanded(dispatcher.unwrap());
    let (c0, s0, rx0) = manual(&p, 0);
    let (c1, s1, rx1) = manual(&p, 1);
    ask(&c0, s0, 10, &p);
    ask(&c1, s1, 10, &p);
    emit(&p, (0..9).collect());
    sync(&p);
    assert_eq!(p.counters().discarded, 3, "2, 5 and 8 hash to partition 2");
    assert_eq!(flat(collect_events(&rx0, 3)), vec![0, 3, 6]);
    assert_eq!(flat(collect_events(&rx1, 3)), vec![1, 4, 7]);
    assert!(!p.is_finished());
    for c in [&c0, &c1] {
        c.stop();
        joined(c);
    }
    p.stop();
    joined(&p);
}

#[test]
fn subscribe_errors_are_returned_at_build_time() {
    let (p, _demands) = commanded(parity());
    let build_error = |options| match recorder(&p, options) {
        Err(BuildError::Subscribe(e)) => e,
        Err(e) => panic!("expected a subscribe error, got {e}"),
        Ok(_) => panic!("expected a subscribe error"),
    };
    assert_eq!(
        build_error(SubscribeOptions::new()),
        SubscribeError::InvalidOption {
            option: "partition",
            message: "the partition option is required when subscribing to a producer with a \
                      partition dispatcher"
                .into(),
        }
    );
    assert_eq!(
        build_error(on(2)),
        SubscribeError::InvalidOption {
            option: "partition",
            message: "expected partition to be one of [0, 1], got 2".into(),
        }
    );
    // Partitions by the types users hold: a literal, a `usize` (as `PartitionDispatcher::new`
    // counts them), a `u32`. A negative literal names no partition.
    let two: usize = 2;
    assert_eq!(
        build_error(SubscribeOptions::new().partition(two)),
        build_error(on(2))
    );
    assert_eq!(
        build_error(SubscribeOptions::new().partition(2u32)),
        build_error(on(2))
    );
    assert_eq!(
        build_error(SubscribeOptions::new().partition(2)),
        build_error(on(2))
    );
    assert_eq!(
        build_error(SubscribeOptions::new().partition(-1)),
        SubscribeError::InvalidOption {
            option: "partition",
            message: "expected partition to be one of [0, 1], got \"-1\"".into(),
        }
    );
    let (first, first_rx) = recorder(&p, on(0)).unwrap();
    match build_error(on(0)) {
        SubscribeError::Rejected { producer, message } => {
            assert_eq!(producer, "source");
            assert!(
                message.starts_with("partition 0 is already taken"),
                "{message}"
            );
        }
        e => panic!("expected a rejection, got {e}"),
    }

    // The producer is still running and serves the partitions it has.
    assert!(!p.is_finished());
    let (second, second_rx) = recorder(&p, on(1)).unwrap();
    emit(&p, (0..6).collect());
    assert_eq!(flat(collect_events(&first_rx, 3)), vec![0, 2, 4]);
    assert_eq!(flat(collect_events(&second_rx, 3)), vec![1, 3, 5]);
    p.cast(Cmd::Finish).unwrap();
    assert_eq!(joined(&p), Reason::Normal);
    joined(&first);
    joined(&second);
}

#[test]
fn subscribe_errors_are_returned_at_run_time() {
    let (p, _demands) = commanded(parity());
    let (c, rx) = sink::<u64>(DemandMode::Automatic);
    let e = c.subscribe_to(&p, SubscribeOptions::new()).unwrap_err();
    assert!(
        matches!(
            e,
            SubscribeError::InvalidOption {
                option: "partition",
                ..
            }
        ),
        "{e}"
    );
    let e = c.subscribe_to(&p, on(7)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid subscribe option: expected partition to be one of [0, 1], got 7"
    );
    let (holder, _holder_rx) = sink::<u64>(DemandMode::Automatic);
    let held = holder.subscribe_to(&p, on(1)).unwrap();
    let e = c.subscribe_to(&p, on(1)).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "subscription rejected by producer source: partition 1 is already taken by \
             subscription {held}"
        )
    );

    // The consumer and the producer are both still fine: a good subscription works.
    assert!(!p.is_finished() && !c.is_finished());
    c.subscribe_to(&p, on(0)).unwrap();
    emit(&p, vec![0, 1, 2]);
    assert_eq!(flat(collect_events(&rx, 2)), vec![0, 2]);
    for stage in [&c, &holder] {
        stage.stop();
        joined(stage);
    }
    p.stop();
    joined(&p);
}

#[test]
fn cancel_drops_and_counts_the_partition_queue() {
    let (p, demands) = commanded(parity());
    let (c0, s0, rx0) = manual(&p, 0);
    let (c1, s1, rx1) = manual(&p, 1);
    ask(&c0, s0, 10, &p);
    assert_eq!(next(&demands), 10);
    // Partition 1 has not asked: its five events queue in the dispatcher.
    emit(&p, (0..10).collect());
    assert_eq!(flat(collect_events(&rx0, 5)), vec![0, 2, 4, 6, 8]);
    sync(&p);
    assert_eq!(p.counters().discarded, 0);

    c1.cancel(s1, Reason::Normal).unwrap();
    loop {
        if let Report::Cancelled(_) = next(&rx1) {
            break;
        }
    }
    sync(&p);
    assert_eq!(
        p.counters().discarded,
        5,
        "the queue went with its consumer"
    );
    assert_eq!(next(&demands), 5, "and as many new events are asked for");

    // The partition is free again; its new consumer sees only newer events.
    let (c2, s2, rx2) = manual(&p, 1);
    ask(&c2, s2, 3, &p);
    assert_eq!(next(&demands), 3);
    emit(&p, (10..16).collect());
    assert_eq!(flat(collect_events(&rx2, 3)), vec![11, 13, 15]);
    assert_eq!(flat(collect_events(&rx0, 3)), vec![10, 12, 14]);
    for c in [&c0, &c1, &c2] {
        c.stop();
        joined(c);
    }
    p.stop();
    joined(&p);
}

#[test]
fn max_queue_keeps_the_newest() {
    let (p, _demands) = commanded(parity().max_queue(3));
    let (c0, s0, _rx0) = manual(&p, 0);
    let (c1, s1, rx1) = manual(&p, 1);
    ask(&c0, s0, 10, &p);
    emit(&p, (0..10).collect());
    sync(&p);
    assert_eq!(p.counters().discarded, 2, "1 and 3 made room");
    ask(&c1, s1, 5, &p);
    assert_eq!(collect_events(&rx1, 3), vec![vec![5, 7, 9]]);
    for c in [&c0, &c1] {
        c.stop();
        joined(c);
    }
    p.stop();
    joined(&p);
}

#[test]
fn a_finishing_producer_delivers_its_partition_queues() {
    let (p, _demands) = commanded(parity());
    let (c0, s0, rx0) = manual(&p, 0);
    // Permanent, so that it ends with the producer.
    let (c1, rx1) = sink::<u64>(DemandMode::Manual);
    let s1 = c1.subscribe_to(&p, on(1)).unwrap();
    ask(&c0, s0, 10, &p);
    emit(&p, (0..10).collect());
    assert_eq!(flat(collect_events(&rx0, 5)), vec![0, 2, 4, 6, 8]);
    // Partition 1 holds [1, 3, 5, 7, 9] when the producer is told to finish; like a buffered
    // event, a queued one must reach its consumer once it asks.
    p.cast(Cmd::Finish).unwrap();
    let _ = c1.ask(s1, 5);
    assert_eq!(received(&rx1), vec![1, 3, 5, 7, 9]);
    assert_eq!(joined(&p), Reason::Normal);
    joined(&c1);
    c0.stop();
    joined(&c0);
}

#[allow(dead_code)]
#[path = "../examples/partition.rs"]
mod example;

#[test]
fn the_example_runs() {
    let summary = example::run(300, 3).unwrap();
    let all = example::updates(300);
    let heartbeats = all.iter().filter(|u| u.account.is_none()).count();
    assert_eq!(summary.produced, 300);
    assert_eq!(summary.dropped, heartbeats as u64);
    assert_eq!(summary.workers.len(), 3);
    let mut owner = std::collections::HashMap::new();
    let mut delivered = 0;
    for worker in &summary.workers {
        // Each worker got exactly the updates of its accounts, in emission order.
        for u in &worker.updates {
            let account = u.account.clone().expect("no heartbeat reaches a worker");
            let previous = owner.insert(account.clone(), worker.partition);
            assert!(
                previous.is_none_or(|p| p == worker.partition),
                "{account} went to two workers"
            );
        }
        let expected: Vec<example::Update> = all
            .iter()
            .filter(|u| {
                u.account
                    .as_ref()
                    .is_some_and(|a| owner.get(a) == Some(&worker.partition))
            })
            .cloned()
            .collect();
        assert_eq!(worker.updates, expected, "worker {}", worker.partition);
        delivered += worker.updates.len();
    }
    assert_eq!(delivered, 300 - heartbeats);
}
