//! Producer-consumers: asking upstream at once, handling input only while downstream has
//! demand, fan-out buffered, and draining everything on a normal finish.

mod common;

use std::time::Duration;

use common::{collect_events, joined, next, quiet, Numbers, Recorder, Report};
use stageflow::{CancelMode, Context, Events, ProducerConsumer, Reason, SubscribeOptions};

/// Emits each input `factor` times, as "x :: i".
struct FanOut {
    factor: u64,
}

impl ProducerConsumer for FanOut {
    type In = u64;
    type Out = String;
    type Message = ();

    fn handle_events(&mut self, events: Events<'_, u64>, ctx: &mut Context<'_, String>) {
        for x in events {
            for i in 1..=self.factor {
                ctx.emit(format!("{x} :: {i}"));
            }
        }
    }
}

/// Doubles numbers.
struct Doubler;

impl ProducerConsumer for Doubler {
    type In = u64;
    type Out = u64;
    type Message = ();

    fn handle_events(&mut self, events: Events<'_, u64>, ctx: &mut Context<'_, u64>) {
        ctx.emit_all(events.map(|x| x * 2));
    }
}

#[test]
fn smoke() {
    let (numbers, _) = Numbers::new(Some(100));
    let p = stageflow::producer(numbers).spawn().unwrap();
    let pc = stageflow::producer_consumer(Doubler)
        .subscribe_to(&p, SubscribeOptions::new().max_demand(10))
        .unwrap()
        .spawn()
        .unwrap();
    let (rec, rx) = Recorder::new();
    let c = stageflow::consumer(rec)
        .subscribe_to(&pc, SubscribeOptions::new().max_demand(7))
        .unwrap()
        .spawn()
        .unwrap();
    let got: Vec<u64> = collect_events(&rx, 100).into_iter().flatten().collect();
    assert_eq!(got, (0..100).map(|x| x * 2).collect::<Vec<_>>());
    assert_eq!(joined(&c), Reason::Normal);
    assert_eq!(joined(&pc), Reason::Normal);
    assert_eq!(joined(&p), Reason::Normal);
}

#[test]
fn asks_upstream_at_once_but_handles_nothing_without_downstream_demand() {
    // Probe p9: a producer-consumer with no consumer asks max_demand upstream at once and
    // handles nothing.
    let (numbers, demands) = Numbers::new(None);
    let p = stageflow::producer(numbers).spawn().unwrap();
    let pc = stageflow::producer_consumer(FanOut { factor: 2 })
        .subscribe_to(&p, SubscribeOptions::new().max_demand(10).min_demand(5))
        .unwrap()
        .spawn()
        .unwrap();
    assert_eq!(next(&demands), Report::Demand(10));
    // The ten events arrive but wait: nothing is handled, nothing more is asked for.
    let deadline = std::time::Instant::now() + common::LIMIT;
    while pc.counters().events_in < 10 {
        assert!(
            std::time::Instant::now() < deadline,
            "events never reached the stage"
        );
        std::thread::yield_now();
    }
    quiet(&demands);
    let counters = pc.counters();
    assert_eq!((counters.events_out, counters.buffered), (0, 10));

    // A consumer with max 4 arrives: the whole inbound message is handled once started (two
    // chunks of 5 inputs, 20 outputs), 4 are delivered and 16 buffered; the next inbound
    // message waits until the buffer has drained.
    let (rec, rx) = Recorder::new();
    let c = stageflow::consumer(rec)
        .subscribe_to(&pc, SubscribeOptions::new().max_demand(4).min_demand(2))
        .unwrap()
        .spawn()
        .unwrap();
    let batches = collect_events(&rx, 20);
    let all: Vec<String> = batches.iter().flatten().cloned().collect();
    let expected: Vec<String> = (0..10)
        .flat_map(|x| (1..=2).map(move |i| format!("{x} :: {i}")))
        .collect();
    assert_eq!(all, expected);
    assert!(batches.iter().all(|b| b.len() <= 4), "{batches:?}");
    pc.stop();
    assert_eq!(joined(&pc), Reason::Shutdown);
    assert_eq!(joined(&c), Reason::Shutdown);
    p.stop();
    joined(&p);
}

#[test]
fn fan_out_one_to_ten_in_order() {
    // 1:n:n: a publisher counting 1..=5 one at a time, a producer-consumer turning each into
    // ten, a consumer taking one at a time.
    let (numbers, _) = Numbers::new(Some(5));
    let p = stageflow::producer(numbers).spawn().unwrap();
    let pc = stageflow::producer_consumer(FanOut { factor: 10 })
        .subscribe_to(&p, SubscribeOptions::new().max_demand(1).min_demand(0))
        .unwrap()
        .spawn()
        .unwrap();
    let (rec, rx) = Recorder::new();
    let c = stageflow::consumer(rec)
        .subscribe_to(&pc, SubscribeOptions::new().max_demand(1).min_demand(0))
        .unwrap()
        .spawn()
        .unwrap();
    let batches = collect_events(&rx, 50);
    assert!(batches.iter().all(|b| b.len() == 1));
    let all: Vec<String> = batches.into_iter().flatten().collect();
    let expected: Vec<String> = (0..5)
        .flat_map(|x| (1..=10).map(move |i| format!("{x} :: {i}")))
        .collect();
    assert_eq!(all, expected);
    // Nothing was lost on the normal finish, and every stage ended normally.
    assert_eq!(next(&rx), Report::Cancelled(Reason::Normal));
    assert_eq!(joined(&c), Reason::Normal);
    assert_eq!(joined(&pc), Reason::Normal);
    assert_eq!(joined(&p), Reason::Normal);
    assert_eq!(pc.counters().events_out, 50);
    assert_eq!(pc.counters().discarded, 0);
}

#[test]
fn drains_buffered_output_when_upstream_finishes() {
    // GenStage loses the buffered output here (probe p10); stageflow delivers it. The
    // consumer asks only 2 at a time and is slow, so when the producer finishes most of the
    // doubled output is still buffered or queued in the producer-consumer.
    let (numbers, _) = Numbers::new(Some(20));
    let p = stageflow::producer(numbers).spawn().unwrap();
    let pc = stageflow::producer_consumer(FanOut { factor: 3 })
        .subscribe_to(&p, SubscribeOptions::new().max_demand(20).min_demand(0))
        .unwrap()
        .spawn()
        .unwrap();
    let (mut rec, rx) = Recorder::new();
    rec.delay = Duration::from_millis(2);
    let c = stageflow::consumer(rec)
        .subscribe_to(&pc, SubscribeOptions::new().max_demand(2).min_demand(0))
        .unwrap()
        .spawn()
        .unwrap();
    assert_eq!(joined(&p), Reason::Normal);
    let all: Vec<String> = collect_events(&rx, 60).into_iter().flatten().collect();
    assert_eq!(all.len(), 60);
    assert_eq!(all[59], "19 :: 3");
    assert_eq!(next(&rx), Report::Cancelled(Reason::Normal));
    assert_eq!(joined(&pc), Reason::Normal);
    assert_eq!(joined(&c), Reason::Normal);
}

#[test]
fn filtering_keeps_pulling() {
    // A producer-consumer that emits nothing keeps consuming (its downstream demand stays
    // positive).
    struct Evens;
    impl ProducerConsumer for Evens {
        type In = u64;
        type Out = u64;
        type Message = ();
        fn handle_events(&mut self, events: Events<'_, u64>, ctx: &mut Context<'_, u64>) {
            ctx.emit_all(events.filter(|x| x % 1000 == 0));
        }
    }
    let (numbers, _) = Numbers::new(Some(10_000));
    let p = stageflow::producer(numbers).spawn().unwrap();
    let pc = stageflow::producer_consumer(Evens)
        .subscribe_to(&p, SubscribeOptions::new().max_demand(100))
        .unwrap()
        .spawn()
        .unwrap();
    let (rec, rx) = Recorder::new();
    let c = stageflow::consumer(rec)
        .subscribe_to(
            &pc,
            SubscribeOptions::new()
                .max_demand(2)
                .cancel(CancelMode::Transient),
        )
        .unwrap()
        .spawn()
        .unwrap();
    let all: Vec<u64> = collect_events(&rx, 10).into_iter().flatten().collect();
    assert_eq!(all, (0..10).map(|x| x * 1000).collect::<Vec<_>>());
    assert_eq!(joined(&pc), Reason::Normal);
    // Transient: the consumer survives the normal end; stop it.
    assert_eq!(next(&rx), Report::Cancelled(Reason::Normal));
    assert_eq!(c.join_timeout(Duration::from_millis(50)), None);
    c.stop();
    assert_eq!(joined(&c), Reason::Shutdown);
}
