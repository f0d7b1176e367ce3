//! A producer's demand mode: accumulate (record asks, hold events back), then forward
//! (replay each recorded demand on its own, never summed, and dispatch what was held).

mod common;

use std::time::Duration;

use common::{collect_events, joined, next, quiet, Numbers, Recorder, Report};
use stageflow::{Context, Producer, ProducerDemand, Reply, SubscribeOptions};

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

/// A producer that emits what it is cast, and counts up from `next` on demand.
struct CastOrCount {
    next: u32,
}

enum Cast {
    Emit(Vec<u32>),
    /// Answered once the messages sent before it were handled.
    Sync(Reply<()>),
}

impl Producer for CastOrCount {
    type Out = u32;
    type Message = Cast;
    fn handle_demand(&mut self, n: usize, ctx: &mut Context<'_, u32, Cast>) {
        let end = self.next + n as u32;
        ctx.emit_all(self.next..end);
        self.next = end;
    }
    fn handle_message(&mut self, msg: Cast, ctx: &mut Context<'_, u32, Cast>) {
        match msg {
            Cast::Emit(xs) => ctx.emit_all(xs),
            Cast::Sync(reply) => ctx.reply(reply, ()),
        }
    }
}

/// Casts `xs` and waits until the producer has handled them.
fn emit(p: &stageflow::ProducerHandle<CastOrCount>, xs: Vec<u32>) {
    p.cast(Cast::Emit(xs)).unwrap();
    p.call(Cast::Sync, common::LIMIT).unwrap();
}

/// Waits until the producer's consumers have asked for `n` in all.
fn asked(p: &stageflow::ProducerHandle<CastOrCount>, n: u64) {
    let deadline = std::time::Instant::now() + common::LIMIT;
    while p
        .counters()
        .subscriptions
        .iter()
        .map(|s| s.demand)
        .sum::<u64>()
        < n
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the asks never arrived"
        );
        std::thread::yield_now();
    }
}

#[test]
fn events_the_buffer_covered_go_out_before_the_rest_of_the_buffer() {
    // 0..9 buffered, then accumulate; an ask of 5 takes 0..4 out of the buffer and holds
    // them. Forwarding sends them first: the consumer sees 0..9 in order.
    let p = stageflow::producer(CastOrCount { next: 100 })
        .spawn()
        .unwrap();
    emit(&p, (0..10).collect());
    p.set_demand(ProducerDemand::Accumulate).unwrap();
    assert_eq!(
        p.demand(Duration::from_secs(5)),
        Ok(ProducerDemand::Accumulate)
    );
    assert_eq!(p.counters().buffered, 10);
    let (rec, rx) = Recorder::new();
    let c = stageflow::consumer(rec)
        .subscribe_to(&p, SubscribeOptions::new().max_demand(5).min_demand(0))
        .unwrap()
        .spawn()
        .unwrap();
    assert_eq!(next(&rx), Report::Subscribed);
    asked(&p, 5);
    p.set_demand(ProducerDemand::Forward).unwrap();
    let got: Vec<u32> = collect_events(&rx, 10).concat();
    assert_eq!(got[..10], (0..10).collect::<Vec<u32>>()[..]);
    p.stop();
    joined(&p);
    joined(&c);
}

#[test]
fn a_demand_held_back_is_replayed_after_the_events_emitted_before_the_switch() {
    // The ask (5) is recorded first, then 1..3 are emitted while accumulating. Forwarding
    // sends 1..3 before `handle_demand(5)` runs: its events (100..) are newer.
    let p = stageflow::producer(CastOrCount { next: 100 })
        .demand(ProducerDemand::Accumulate)
        .spawn()
        .unwrap();
    let (rec, rx) = Recorder::new();
    let c = stageflow::consumer(rec)
        .subscribe_to(&p, SubscribeOptions::new().max_demand(5).min_demand(0))
        .unwrap()
        .spawn()
        .unwrap();
    assert_eq!(next(&rx), Report::Subscribed);
    asked(&p, 5);
    emit(&p, vec![1, 2, 3]);
    p.set_demand(ProducerDemand::Forward).unwrap();
    let got: Vec<u32> = collect_events(&rx, 8).concat();
    assert_eq!(got[..8], [1, 2, 3, 100, 101, 102, 103, 104]);
    p.stop();
    joined(&p);
    joined(&c);
}
