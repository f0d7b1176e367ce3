//! A producer's demand mode: accumulate (record asks, hold events back), then forward
//! (replay each recorded demand on its own, never summed, and dispatch what was held).

mod common;

use std::time::Duration;

use common::{collect_events, joined, next, quiet, Numbers, Recorder, Report};
use stageflow::{Context, Producer, ProducerDemand, SubscribeOptions};

#[test]
fn smoke() {
    let (numbers, demands) = Numbers::new(None);
    let p = stageflow::producer(numbers)
        .demand(ProducerDemand::Accumulate)
        .spawn()
        .unwrap();
    let (rec, rx) = Recorder::new();
    let c = stageflow::consumer(rec)
        .subscribe_to(&p, SubscribeOptions::new().max_demand(4).min_demand(0))
        .unwrap()
        .spawn()
        .unwrap();
    assert_eq!(next(&rx), Report::Subscribed);
    assert_eq!(
        p.demand(Duration::from_secs(5)),
        Ok(ProducerDemand::Accumulate)
    );
    quiet(&demands);
    quiet(&rx);
    p.set_demand(ProducerDemand::Forward).unwrap();
    assert_eq!(next(&demands), Report::Demand(4));
    assert_eq!(next(&rx), Report::Batch(vec![0, 1, 2, 3]));
    assert_eq!(
        p.demand(Duration::from_secs(5)),
        Ok(ProducerDemand::Forward)
    );
    p.stop();
    joined(&p);
    joined(&c);
}

#[test]
fn accumulated_demands_are_replayed_one_by_one() {
    let (numbers, demands) = Numbers::new(None);
    let p = stageflow::producer(numbers)
        .demand(ProducerDemand::Accumulate)
        .spawn()
        .unwrap();
    let mut consumers = Vec::new();
    for _ in 0..2 {
        let (rec, rx) = Recorder::new();
        let c = stageflow::consumer(rec)
            .subscribe_to(&p, SubscribeOptions::new().max_demand(2).min_demand(0))
            .unwrap()
            .spawn()
            .unwrap();
        assert_eq!(next(&rx), Report::Subscribed);
        consumers.push((c, rx));
    }
    // Both asks reached the producer (its counters show the demand) before forwarding.
    let deadline = std::time::Instant::now() + common::LIMIT;
    while p
        .counters()
        .subscriptions
        .iter()
        .map(|s| s.demand)
        .sum::<u64>()
        < 4
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the asks never arrived"
        );
        std::thread::yield_now();
    }
    p.set_demand(ProducerDemand::Forward).unwrap();
    assert_eq!(next(&demands), Report::Demand(2));
    assert_eq!(next(&demands), Report::Demand(2));
    for (_, rx) in &consumers {
        assert_eq!(collect_events(rx, 2).concat().len(), 2);
    }
    p.stop();
    joined(&p);
}

#[test]
fn events_emitted_while_accumulating_are_held_back_in_order() {
    struct Caster;
    impl Producer for Caster {
        type Out = u32;
        type Message = u32;
        fn handle_demand(&mut self, _: usize, _: &mut Context<'_, u32, u32>) {}
        fn handle_message(&mut self, x: u32, ctx: &mut Context<'_, u32, u32>) {
            ctx.emit(x);
        }
    }
    let p = stageflow::producer(Caster)
        .demand(ProducerDemand::Accumulate)
        .spawn()
        .unwrap();
    let (rec, rx) = Recorder::new();
    let c = stageflow::consumer(rec)
        .subscribe_to(&p, SubscribeOptions::new().max_demand(10))
        .unwrap()
        .spawn()
        .unwrap();
    assert_eq!(next(&rx), Report::Subscribed);
    for x in 1..=4 {
        p.cast(x).unwrap();
    }
    // A call returns after the casts before it were handled.
    assert_eq!(
        p.demand(Duration::from_secs(5)),
        Ok(ProducerDemand::Accumulate)
    );
    quiet(&rx);
    assert_eq!(p.counters().buffered, 4);
    p.set_demand(ProducerDemand::Forward).unwrap();
    let got: Vec<u32> = collect_events(&rx, 4).concat();
    assert_eq!(got, vec![1, 2, 3, 4]);
    p.stop();
    joined(&p);
    joined(&c);
}

#[test]
fn events_held_back_are_not_limited_by_buffer_size() {
    // While accumulating, emitted events bypass the buffer (GenStage's probe p5): a buffer of
    // 2 does not drop any of the 5 held back.
    struct Caster;
    impl Producer for Caster {
        type Out = u32;
        type Message = u32;
        fn handle_demand(&mut self, _: usize, _: &mut Context<'_, u32, u32>) {}
        fn handle_message(&mut self, x: u32, ctx: &mut Context<'_, u32, u32>) {
            ctx.emit(x);
        }
    }
    let p = stageflow::producer(Caster)
        .buffer_size(2)
        .demand(ProducerDemand::Accumulate)
        .spawn()
        .unwrap();
    let (rec, rx) = Recorder::new();
    let c = stageflow::consumer(rec)
        .subscribe_to(&p, SubscribeOptions::new().max_demand(10))
        .unwrap()
        .spawn()
        .unwrap();
    assert_eq!(next(&rx), Report::Subscribed);
    for x in 1..=5 {
        p.cast(x).unwrap();
    }
    p.set_demand(ProducerDemand::Forward).unwrap();
    assert_eq!(collect_events(&rx, 5).concat(), vec![1, 2, 3, 4, 5]);
    assert_eq!(p.counters().discarded, 0);
    p.stop();
    joined(&p);
    joined(&c);
}
