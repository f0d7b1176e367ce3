//! No stage may spin: every turn of a stage's loop comes back to its inbox, so a stage whose
//! events all go nowhere, or that holds infos behind inbound events, still answers calls and
//! stops within a second; and infos keep their place among events.

mod common;

use std::time::{Duration, Instant};

use common::{joined, next, Numbers, Recorder, LIMIT};
use crossbeam_channel::{Receiver, Sender};
use stageflow::dispatcher::PartitionDispatcher;
use stageflow::{Context, Events, ProducerConsumer, Reason, Reply, SubscribeOptions};

const PROMPT: Duration = Duration::from_secs(1);

/// A producer that emits exactly what it is asked for, forever, and answers pings.
struct Eager {
    next: u64,
}

impl stageflow::Producer for Eager {
    type Out = u64;
    type Message = Reply<()>;

    fn handle_demand(&mut self, demand: usize, ctx: &mut Context<'_, u64, Reply<()>>) {
        ctx.emit_all(self.next..self.next + demand as u64);
        self.next += demand as u64;
    }

    fn handle_message(&mut self, reply: Reply<()>, ctx: &mut Context<'_, u64, Reply<()>>) {
        ctx.reply(reply, ());
    }
}

/// Asserts that `stage` answers a call and then stops, each within [`PROMPT`].
fn answers_and_stops<S, R>(stage: &stageflow::Stage<S, R>, ping: impl Fn(Reply<()>) -> R::Message)
where
    R: stageflow::Role<S>,
{
    let start = Instant::now();
    stage
        .call(ping, PROMPT)
        .unwrap_or_else(|e| panic!("{}: no answer within {PROMPT:?}: {e}", stage.name()));
    assert!(start.elapsed() < PROMPT);
    let start = Instant::now();
    stage.stop();
    assert_eq!(
        stage.join_timeout(PROMPT),
        Some(Reason::Shutdown),
        "{} did not stop within {PROMPT:?}",
        stage.name()
    );
    assert!(start.elapsed() < PROMPT);
}

fn a_producer_whose_events_go_nowhere(dispatcher: PartitionDispatcher<u64>) {
    let p = stageflow::producer(Eager { next: 0 })
        .dispatcher(dispatcher)
        .spawn()
        .unwrap();
    let (rec, _rx) = Recorder::<u64>::new();
    let c = stageflow::consumer(rec)
        .subscribe_to(&p, SubscribeOptions::new().partition(0u64))
        .unwrap()
        .spawn()
        .unwrap();
    // Let it run a moment: every event it emits is dropped and asked for again.
    std::thread::sleep(Duration::from_millis(50));
    answers_and_stops(&p, |r| r);
    assert_eq!(c.counters().events_in, 0);
    assert!(p.counters().discarded > 0, "the drops are counted");
    joined(&c);
}

#[test]
fn smoke() {
    let p = stageflow::producer(Eager { next: 0 }).spawn().unwrap();
    answers_and_stops(&p, |r| r);
}

#[test]
fn a_hash_that_maps_everything_nowhere_does_not_spin() {
    a_producer_whose_events_go_nowhere(PartitionDispatcher::new(2, |_: &u64| None).unwrap());
}

#[test]
fn an_unknown_partition_for_everything_does_not_spin() {
    a_producer_whose_events_go_nowhere(PartitionDispatcher::new(2, |_: &u64| Some(7)).unwrap());
}

/// What [`Tracer`] saw, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    Events(Vec<u64>),
    Info(u32),
}

enum TraceMsg {
    Info(u32),
    Ping(Reply<()>),
}

/// A producer-consumer that passes events on and reports events and infos in order.
struct Tracer {
    tx: Sender<Seen>,
}

impl ProducerConsumer for Tracer {
    type In = u64;
    type Out = u64;
    type Message = TraceMsg;

    fn handle_events(&mut self, events: Events<'_, u64>, ctx: &mut Context<'_, u64, TraceMsg>) {
        let batch: Vec<u64> = events.collect();
        let _ = self.tx.send(Seen::Events(batch.clone()));
        ctx.emit_all(batch);
    }

    fn handle_message(&mut self, msg: TraceMsg, ctx: &mut Context<'_, u64, TraceMsg>) {
        match msg {
            TraceMsg::Info(n) => {
                let _ = self.tx.send(Seen::Info(n));
            }
            TraceMsg::Ping(reply) => ctx.reply(reply, ()),
        }
    }
}

/// Waits (boundedly) until the tracer has received `n` events; no channel can say when they
/// are in its inbound queue, so this polls its counters.
fn received(pc: &stageflow::ProducerConsumerHandle<Tracer>, n: u64) {
    let deadline = Instant::now() + LIMIT;
    while pc.counters().events_in < n {
        assert!(Instant::now() < deadline, "the events never arrived");
        std::thread::yield_now();
    }
}

/// A tracer subscribed to an endless producer with max demand 10, with no consumer: it holds
/// the first 10 events inbound (no downstream demand) and asks no more.
fn holding_tracer() -> (
    stageflow::ProducerConsumerHandle<Tracer>,
    stageflow::ProducerHandle<Numbers>,
    Receiver<Seen>,
) {
    let (numbers, _) = Numbers::new(None);
    let p = stageflow::producer(numbers).spawn().unwrap();
    let (tx, rx) = crossbeam_channel::unbounded();
    let pc = stageflow::producer_consumer(Tracer { tx })
        .subscribe_to(&p, SubscribeOptions::new().max_demand(10).min_demand(5))
        .unwrap()
        .spawn()
        .unwrap();
    // The events arrive and wait inbound.
    received(&pc, 10);
    (pc, p, rx)
}

#[test]
fn two_infos_behind_inbound_events_do_not_livelock() {
    let (pc, p, rx) = holding_tracer();
    pc.info(TraceMsg::Info(1)).unwrap();
    pc.info(TraceMsg::Info(2)).unwrap();
    // Downstream demand lets the inbound events through; the infos follow them.
    let (rec, crx) = Recorder::<u64>::new();
    let c = stageflow::consumer(rec)
        .subscribe_to(&pc, SubscribeOptions::new().max_demand(100))
        .unwrap()
        .spawn()
        .unwrap();
    let mut seen = Vec::new();
    while seen.len() < 4 {
        seen.push(next(&rx));
    }
    assert_eq!(
        seen,
        vec![
            Seen::Events((0..5).collect()),
            Seen::Events((5..10).collect()),
            Seen::Info(1),
            Seen::Info(2),
        ]
    );
    let _ = crx;
    answers_and_stops(&pc, TraceMsg::Ping);
    p.stop();
    joined(&p);
    joined(&c);
}

#[test]
fn an_info_keeps_its_place_between_inbound_events() {
    let (pc, p, rx) = holding_tracer();
    pc.info(TraceMsg::Info(1)).unwrap();
    // More events arrive behind the info, from a second producer.
    let (more, _) = Numbers::new(Some(103));
    let more = stageflow::producer(Numbers { next: 100, ..more })
        .spawn()
        .unwrap();
    pc.subscribe_to(&more, SubscribeOptions::new().max_demand(10))
        .unwrap();
    received(&pc, 13);
    let (rec, _crx) = Recorder::<u64>::new();
    let c = stageflow::consumer(rec)
        .subscribe_to(&pc, SubscribeOptions::new().max_demand(100))
        .unwrap()
        .spawn()
        .unwrap();
    let mut seen = Vec::new();
    while seen.len() < 4 {
        seen.push(next(&rx));
    }
    assert_eq!(
        seen,
        vec![
            Seen::Events((0..5).collect()),
            Seen::Events((5..10).collect()),
            Seen::Info(1),
            Seen::Events(vec![100, 101, 102]),
        ]
    );
    answers_and_stops(&pc, TraceMsg::Ping);
    p.stop();
    joined(&p);
    joined(&more);
    joined(&c);
}
