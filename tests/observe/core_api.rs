//! The core API observers read: a stage's kind, its inbox's depth and capacity, and per
//! subscription max/min demand and the events that went through it.

use crossbeam_channel::{bounded, Receiver, Sender};
use stageflow::{
    Consumer, ConsumerContext, Context, Direction, Events, Producer, ProducerConsumer, StageKind,
    SubscribeOptions,
};

use crate::common::{joined, next, LIMIT};

/// Emits the vectors it is sent, whatever the demand (the buffer holds the rest).
struct Pushed;

impl Producer for Pushed {
    type Out = u64;
    type Message = Vec<u64>;
    fn handle_demand(&mut self, _: usize, _: &mut Context<'_, u64, Vec<u64>>) {}
    fn handle_message(&mut self, events: Vec<u64>, ctx: &mut Context<'_, u64, Vec<u64>>) {
        ctx.emit_all(events);
    }
}

/// Passes events on.
struct Pass;

impl ProducerConsumer for Pass {
    type In = u64;
    type Out = u64;
    type Message = ();
    fn handle_events(&mut self, events: Events<'_, u64>, ctx: &mut Context<'_, u64>) {
        ctx.emit_all(events);
    }
}

/// Reports each batch's size; with a gate, then waits for a token before it returns.
struct Gated {
    seen: Sender<usize>,
    gate: Option<Receiver<()>>,
}

impl Consumer for Gated {
    type In = u64;
    type Message = ();
    fn handle_events(&mut self, events: Events<'_, u64>, _: &mut ConsumerContext<'_>) {
        let _ = self.seen.send(events.count());
        if let Some(gate) = &self.gate {
            gate.recv_timeout(LIMIT)
                .expect("the test never opened the gate");
        }
    }
}

#[test]
fn smoke_kinds_and_inbox_capacity() {
    let p = stageflow::producer(Pushed).name("core-p").spawn().unwrap();
    let pc = stageflow::producer_consumer(Pass)
        .name("core-pc")
        .inbox_capacity(7)
        .subscribe_to(&p, SubscribeOptions::new())
        .unwrap()
        .spawn()
        .unwrap();
    let (seen, _rx) = bounded(64);
    let c = stageflow::consumer(Gated { seen, gate: None })
        .subscribe_to(&pc, SubscribeOptions::new())
        .unwrap()
        .spawn()
        .unwrap();
    assert_eq!(p.kind(), StageKind::Producer);
    assert_eq!(pc.kind(), StageKind::ProducerConsumer);
    assert_eq!(c.kind(), StageKind::Consumer);
    assert_eq!(pc.stage_ref().kind(), StageKind::ProducerConsumer);
    assert_eq!(StageKind::ProducerConsumer.to_string(), "producer_consumer");
    assert_eq!(pc.inbox_capacity(), 7);
    assert_eq!(p.stage_ref().inbox_capacity(), 1024, "the default inbox");
    p.stop();
    joined(&c);
}

#[test]
fn inbox_len_counts_waiting_messages() {
    let p = stageflow::producer(Pushed).name("inbox-p").spawn().unwrap();
    let (seen, seen_rx) = bounded(64);
    let (open, gate) = bounded(64);
    let c = stageflow::consumer(Gated {
        seen,
        gate: Some(gate),
    })
    .name("inbox-c")
    .subscribe_to(&p, SubscribeOptions::new().max_demand(100))
    .unwrap()
    .spawn()
    .unwrap();
    assert_eq!(c.inbox_len(), 0);
    // One batch holds the consumer in its callback; three casts then wait in its inbox.
    p.cast(vec![1]).unwrap();
    assert_eq!(next(&seen_rx), 1);
    for _ in 0..3 {
        c.cast(()).unwrap();
    }
    assert_eq!(c.inbox_len(), 3);
    assert_eq!(c.stage_ref().inbox_len(), 3);
    open.send(()).unwrap();
    let deadline = std::time::Instant::now() + LIMIT;
    while c.inbox_len() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the casts were never handled"
        );
        std::thread::yield_now();
    }
    assert_eq!(c.inbox_len(), 0);
    p.stop();
    joined(&c);
}

#[test]
fn subscription_counters_carry_limits_and_events() {
    let p = stageflow::producer(Pushed).name("subs-p").spawn().unwrap();
    let (seen, seen_rx) = bounded(64);
    let c = stageflow::consumer(Gated { seen, gate: None })
        .name("subs-c")
        .subscribe_to(&p, SubscribeOptions::new().max_demand(10).min_demand(4))
        .unwrap()
        .spawn()
        .unwrap();
    p.cast((0..25).collect()).unwrap();
    let mut got = 0;
    while got < 25 {
        got += next(&seen_rx);
    }
    let up = c.counters().subscriptions;
    assert_eq!(up.len(), 1);
    assert_eq!(up[0].direction, Direction::Upstream);
    assert_eq!((up[0].max_demand, up[0].min_demand), (10, 4));
    assert_eq!(up[0].events, 25);
    // The producer's side: 25 dispatched to the consumer.
    let deadline = std::time::Instant::now() + LIMIT;
    let down = loop {
        let down = p.counters().subscriptions;
        if down[0].events == 25 {
            break down;
        }
        assert!(std::time::Instant::now() < deadline, "{down:?}");
        std::thread::yield_now();
    };
    assert_eq!(down[0].direction, Direction::Downstream);
    assert_eq!(down[0].peer, "subs-c");
    assert_eq!((down[0].max_demand, down[0].min_demand), (10, 4));
    assert_eq!(down[0].id, up[0].id);
    p.stop();
    joined(&c);
}
