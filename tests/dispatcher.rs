//! The default `DemandDispatcher` end to end (reference §3.1): the consumer with the most
//! outstanding demand gets the next events in one message, ties go to the consumer that reached
//! that demand first, leftovers are buffered, a cancelled consumer's unmet demand becomes
//! pending instead of being asked twice, and with automatic consumers every event goes to
//! exactly one of them.
//!
//! Consumers here use manual demand, so the test decides when each ask is made, and waits for
//! the producer's `handle_demand` report before the next step: the dispatch is then
//! deterministic.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{joined, next, Recorder, Report, LIMIT};
use crossbeam_channel::{Receiver, Sender};
use stageflow::{
    CancelMode, ConsumerHandle, Context, DemandMode, Direction, Producer, ProducerHandle, Reason,
    Reply, SubscribeOptions, SubscriptionId,
};

enum Cmd {
    /// Emit these events in one callback, then reply.
    Emit(Vec<u32>, Reply<()>),
    Sync(Reply<()>),
    Finish,
}

/// Emits only when told to; reports every `handle_demand`.
struct Emitter {
    tx: Sender<Report<u32>>,
}

impl Producer for Emitter {
    type Out = u32;
    type Message = Cmd;

    fn handle_demand(&mut self, demand: usize, _: &mut Context<'_, u32, Cmd>) {
        let _ = self.tx.send(Report::Demand(demand));
    }

    fn handle_message(&mut self, msg: Cmd, ctx: &mut Context<'_, u32, Cmd>) {
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

fn emitter() -> (ProducerHandle<Emitter>, Receiver<Report<u32>>) {
    let (tx, rx) = crossbeam_channel::unbounded();
    let p = stageflow::producer(Emitter { tx })
        .name("emitter")
        .spawn()
        .unwrap();
    (p, rx)
}

fn emit(p: &ProducerHandle<Emitter>, events: impl IntoIterator<Item = u32>) {
    let events = events.into_iter().collect();
    p.call(|r| Cmd::Emit(events, r), LIMIT).unwrap();
}

fn sync(p: &ProducerHandle<Emitter>) {
    p.call(Cmd::Sync, LIMIT).unwrap();
}

/// A consumer on manual demand, subscribed at run time so that we hold its subscription id.
struct Manual {
    name: &'static str,
    stage: ConsumerHandle<Recorder<u32>>,
    sub: SubscriptionId,
    rx: Receiver<Report<u32>>,
}

impl Manual {
    fn new(name: &'static str, p: &ProducerHandle<Emitter>, cancel: CancelMode) -> Manual {
        let (mut rec, rx) = Recorder::new();
        rec.mode = DemandMode::Manual;
        let stage = stageflow::consumer(rec).name(name).spawn().unwrap();
        let sub = stage
            .subscribe_to(p, SubscribeOptions::new().cancel(cancel))
            .unwrap();
        assert_eq!(next(&rx), Report::Subscribed);
        Manual {
            name,
            stage,
            sub,
            rx,
        }
    }

    /// Asks `n` and waits until the producer has handled the ask, which shows as
    /// `handle_demand(expect)`.
    fn ask(&self, n: usize, prx: &Receiver<Report<u32>>, expect: usize) {
        self.stage.ask(self.sub, n).unwrap();
        assert_eq!(next(prx), Report::Demand(expect), "{} asked {n}", self.name);
    }

    fn batch(&self) -> Vec<u32> {
        match next(&self.rx) {
            Report::Batch(b) => b,
            other => panic!("{}: expected a batch, got {other:?}", self.name),
        }
    }
}

/// The producer-side outstanding demand of one consumer.
fn owed(p: &ProducerHandle<Emitter>, sub: SubscriptionId) -> u64 {
    p.counters()
        .subscriptions
        .iter()
        .find(|s| s.id == sub && s.direction == Direction::Downstream)
        .unwrap_or_else(|| panic!("no subscription {sub} at the producer"))
        .demand
}

/// Finishes the producer and checks that each consumer's last report is the normal cancel.
fn finish(p: ProducerHandle<Emitter>, consumers: &[&Manual]) {
    p.cast(Cmd::Finish).unwrap();
    assert_eq!(joined(&p), Reason::Normal);
    for c in consumers {
        assert_eq!(next(&c.rx), Report::Cancelled(Reason::Normal), "{}", c.name);
        assert_eq!(joined(&c.stage), Reason::Normal, "{}", c.name);
        assert!(
            c.rx.try_recv().is_err(),
            "{}: nothing after the cancel",
            c.name
        );
    }
}

#[test]
fn smoke() {
    let (p, prx) = emitter();
    let a = Manual::new("a", &p, CancelMode::Permanent);
    a.ask(3, &prx, 3);
    emit(&p, 0..3);
    assert_eq!(a.batch(), vec![0, 1, 2]);
    finish(p, &[&a]);
}

#[test]
fn highest_demand_first_one_message_each_leftovers_buffered() {
    let (p, prx) = emitter();
    let a = Manual::new("a", &p, CancelMode::Permanent);
    let b = Manual::new("b", &p, CancelMode::Permanent);
    let c = Manual::new("c", &p, CancelMode::Permanent);
    a.ask(4, &prx, 4);
    b.ask(2, &prx, 2);
    c.ask(3, &prx, 3);
    assert_eq!(
        (owed(&p, a.sub), owed(&p, b.sub), owed(&p, c.sub)),
        (4, 2, 3)
    );

    // Order by demand: a:4, c:3, b:2. Each gets one message as large as its demand allows.
    emit(&p, 0..12);
    assert_eq!(a.batch(), vec![0, 1, 2, 3]);
    assert_eq!(c.batch(), vec![4, 5, 6]);
    assert_eq!(b.batch(), vec![7, 8]);
    sync(&p);
    let counters = p.counters();
    assert_eq!(counters.buffered, 3, "9, 10, 11 wait in the buffer");
    assert_eq!(counters.events_out, 9);
    assert!(counters.subscriptions.iter().all(|s| s.demand == 0));

    // The next ask is served from the buffer first; handle_demand gets only the rest.
    b.ask(5, &prx, 2);
    assert_eq!(b.batch(), vec![9, 10, 11]);
    sync(&p);
    assert_eq!(p.counters().buffered, 0);
    assert_eq!(owed(&p, b.sub), 2);

    // Fewer events than the top demand: all of them go to the top consumer, in one message.
    a.ask(4, &prx, 4);
    emit(&p, 20..23);
    assert_eq!(a.batch(), vec![20, 21, 22]);
    sync(&p);
    assert_eq!((owed(&p, a.sub), owed(&p, b.sub)), (1, 2));
    finish(p, &[&a, &b, &c]);
}

#[test]
fn ties_go_to_the_consumer_that_reached_the_demand_first() {
    // a subscribed and asked first: a is ahead of b.
    let (p, prx) = emitter();
    let a = Manual::new("a", &p, CancelMode::Permanent);
    let b = Manual::new("b", &p, CancelMode::Permanent);
    a.ask(3, &prx, 3);
    b.ask(3, &prx, 3);
    emit(&p, 0..4);
    assert_eq!(a.batch(), vec![0, 1, 2]);
    assert_eq!(b.batch(), vec![3]);
    sync(&p);
    assert_eq!((owed(&p, a.sub), owed(&p, b.sub)), (0, 2));
    finish(p, &[&a, &b]);

    // The later subscriber reaches demand 3 first: it stays ahead of the earlier one.
    let (p, prx) = emitter();
    let a = Manual::new("a", &p, CancelMode::Permanent);
    let b = Manual::new("b", &p, CancelMode::Permanent);
    b.ask(3, &prx, 3);
    a.ask(3, &prx, 3);
    emit(&p, 0..4);
    assert_eq!(b.batch(), vec![0, 1, 2]);
    assert_eq!(a.batch(), vec![3]);
    finish(p, &[&a, &b]);
}

#[test]
fn cancelled_demand_becomes_pending_and_is_not_asked_twice() {
    let (p, prx) = emitter();
    let a = Manual::new("a", &p, CancelMode::Temporary);
    a.ask(10, &prx, 10);
    a.stage.cancel(a.sub, Reason::Normal).unwrap();
    assert_eq!(next(&a.rx), Report::Cancelled(Reason::Normal));
    assert_eq!(
        a.stage.outcome(),
        None,
        "a temporary subscription: a lives on"
    );

    // The 10 were already requested from handle_demand: b's ask of 5 is covered by them
    // (no handle_demand), and of b's next ask of 8 only 8 - 5 = 3 is new demand. Had the
    // pending demand been ignored, the next report would be Demand(5).
    let b = Manual::new("b", &p, CancelMode::Permanent);
    b.stage.ask(b.sub, 5).unwrap();
    b.ask(8, &prx, 3);
    assert_eq!(owed(&p, b.sub), 13);
    sync(&p);
    assert!(prx.try_recv().is_err(), "no other handle_demand");

    emit(&p, 0..13);
    assert_eq!(b.batch(), (0..13).collect::<Vec<_>>());
    sync(&p);
    assert_eq!(p.counters().buffered, 0);

    a.stage.stop();
    assert_eq!(joined(&a.stage), Reason::Shutdown);
    assert!(a.rx.try_recv().is_err(), "a got nothing after its cancel");
    finish(p, &[&b]);
}

/// Counts up to `limit`, but only once told to start: demand that arrives before is
/// remembered ("buffering demand"), so every consumer is subscribed before anything flows.
struct LateNumbers {
    next: u64,
    limit: u64,
    started: bool,
    owed: usize,
    tx: Sender<Report<u32>>,
}

struct Go;

impl LateNumbers {
    fn emit(&mut self, n: usize, ctx: &mut Context<'_, u64, Go>) {
        let end = (self.next + n as u64).min(self.limit);
        ctx.emit_all(self.next..end);
        self.next = end;
        if self.next == self.limit {
            ctx.finish();
        }
    }
}

impl Producer for LateNumbers {
    type Out = u64;
    type Message = Go;

    fn handle_demand(&mut self, demand: usize, ctx: &mut Context<'_, u64, Go>) {
        let _ = self.tx.send(Report::Demand(demand));
        if self.started {
            self.emit(demand, ctx);
        } else {
            self.owed += demand;
        }
    }

    fn handle_message(&mut self, _: Go, ctx: &mut Context<'_, u64, Go>) {
        self.started = true;
        let owed = std::mem::take(&mut self.owed);
        self.emit(owed, ctx);
    }
}

#[test]
fn automatic_consumers_share_every_event_exactly_once() {
    const TOTAL: u64 = 3_000;
    let (tx, prx) = crossbeam_channel::unbounded();
    let p = stageflow::producer(LateNumbers {
        next: 0,
        limit: TOTAL,
        started: false,
        owed: 0,
        tx,
    })
    .name("numbers")
    .spawn()
    .unwrap();
    let mut consumers = Vec::new();
    for (i, delay_us) in [0u64, 50, 200].into_iter().enumerate() {
        let (mut rec, rx) = Recorder::new();
        rec.delay = Duration::from_micros(delay_us);
        let c = stageflow::consumer(rec)
            .name(format!("auto-{i}"))
            .subscribe_to(&p, SubscribeOptions::new().max_demand(50).min_demand(25))
            .unwrap()
            .spawn()
            .unwrap();
        consumers.push((c, rx));
    }
    // Before Go nothing flows, so the only asks are the three initial ones.
    for _ in 0..3 {
        assert_eq!(next(&prx), Report::Demand(50));
    }
    p.cast(Go).unwrap();
    let mut seen = HashSet::new();
    for (c, rx) in &consumers {
        let mut mine = Vec::new();
        loop {
            match next(rx) {
                Report::Subscribed => {}
                Report::Batch(b) => {
                    assert!(b.len() <= 25, "{}: chunks of max - min", c.name());
                    mine.extend(b);
                }
                Report::Cancelled(r) => {
                    assert_eq!(r, Reason::Normal);
                    break;
                }
                Report::Demand(_) => unreachable!(),
            }
        }
        assert!(
            mine.len() >= 50,
            "{}: Go served its first ask of 50",
            c.name()
        );
        assert!(
            mine.windows(2).all(|w| w[0] < w[1]),
            "{}: events arrive in order",
            c.name()
        );
        for e in mine {
            assert!(seen.insert(e), "event {e} delivered twice");
        }
        assert_eq!(joined(c), Reason::Normal);
    }
    assert_eq!(seen.len() as u64, TOTAL, "no event lost");
    assert_eq!(joined(&p), Reason::Normal);
    let demands: Vec<usize> = prx
        .try_iter()
        .map(|r| match r {
            Report::Demand(n) => n,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert!(demands.iter().all(|&d| d <= 50), "{demands:?}");
    assert!(demands.iter().sum::<usize>() as u64 + 150 >= TOTAL);
    assert_eq!(p.counters().events_out, TOTAL);
}
