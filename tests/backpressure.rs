//! Back-pressure and the no-blocking rule: a producer never sends more than was asked, and
//! stages whose inboxes are full never deadlock, because no stage blocks on a send.

mod common;

use std::time::Duration;

use common::{collect_events, joined, next, Numbers, Recorder, Report};
use stageflow::{Context, Producer, Reason, SubscribeOptions};

/// Emits one event per message: each ask is answered by `n` casts to itself (timers), so the
/// consumer's inbox gets many small messages.
struct Trickle {
    next: u64,
    limit: u64,
}

impl Producer for Trickle {
    type Out = u64;
    type Message = ();
    fn handle_demand(&mut self, demand: usize, ctx: &mut Context<'_, u64>) {
        for _ in 0..demand {
            ctx.send_after((), Duration::ZERO);
        }
    }
    fn handle_message(&mut self, _: (), ctx: &mut Context<'_, u64>) {
        if self.next < self.limit {
            ctx.emit(self.next);
            self.next += 1;
        }
        if self.next == self.limit {
            ctx.finish();
        }
    }
}

#[test]
fn smoke() {
    let (numbers, demands) = Numbers::new(None);
    let p = stageflow::producer(numbers).spawn().unwrap();
    let (mut rec, rx) = Recorder::new();
    rec.delay = Duration::from_millis(20);
    let c = stageflow::consumer(rec)
        .subscribe_to(&p, SubscribeOptions::new().max_demand(10).min_demand(5))
        .unwrap()
        .spawn()
        .unwrap();
    // A slow consumer holds the producer to its demand: 10, then 5 per handled chunk.
    assert_eq!(next(&demands), Report::Demand(10));
    collect_events(&rx, 10);
    let sent = p.counters().events_out;
    assert!(
        sent <= 20,
        "the producer sent {sent} events to a consumer that asked for at most 20"
    );
    p.stop();
    joined(&p);
    joined(&c);
}

#[test]
fn one_slot_inboxes_do_not_deadlock() {
    // Every stage's inbox holds one message. The producer answers each ask with many
    // one-event messages; the consumer (max 100, min 99) asks after every event. Both sides
    // find the other's inbox full all the time; with blocking sends they would deadlock.
    const N: u64 = 20_000;
    let p = stageflow::producer(Trickle { next: 0, limit: N })
        .inbox_capacity(1)
        .spawn()
        .unwrap();
    let pc = stageflow::producer_consumer(common::Pass)
        .inbox_capacity(1)
        .subscribe_to(&p, SubscribeOptions::new().max_demand(100).min_demand(99))
        .unwrap()
        .spawn()
        .unwrap();
    let (rec, rx) = Recorder::new();
    let c = stageflow::consumer(rec)
        .inbox_capacity(1)
        .subscribe_to(&pc, SubscribeOptions::new().max_demand(100).min_demand(99))
        .unwrap()
        .spawn()
        .unwrap();
    let all: Vec<u64> = collect_events(&rx, N as usize)
        .into_iter()
        .flatten()
        .collect();
    assert_eq!(all, (0..N).collect::<Vec<_>>());
    assert_eq!(joined(&c), Reason::Normal);
    assert_eq!(joined(&pc), Reason::Normal);
    assert_eq!(joined(&p), Reason::Normal);
}

#[test]
fn events_and_asks_coalesce_but_never_exceed_demand() {
    // With a one-slot inbox, batches waiting for room are merged; a merged batch still never
    // exceeds what the consumer asked for.
    const N: u64 = 5_000;
    let p = stageflow::producer(Trickle { next: 0, limit: N })
        .spawn()
        .unwrap();
    let (mut rec, rx) = Recorder::new();
    rec.delay = Duration::from_micros(200);
    let c = stageflow::consumer(rec)
        .inbox_capacity(1)
        .subscribe_to(&p, SubscribeOptions::new().max_demand(50).min_demand(10))
        .unwrap()
        .spawn()
        .unwrap();
    let batches = collect_events(&rx, N as usize);
    assert!(
        batches.iter().all(|b| b.len() <= 40),
        "batches are cut at max - min = 40"
    );
    let all: Vec<u64> = batches.into_iter().flatten().collect();
    assert_eq!(all, (0..N).collect::<Vec<_>>());
    assert_eq!(joined(&c), Reason::Normal);
    assert_eq!(joined(&p), Reason::Normal);
}
