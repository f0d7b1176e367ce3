//! The `BroadcastDispatcher` end to end (reference §3.2): every consumer receives the same
//! events in the same order, the slowest consumer sets the pace and its demand is asked once,
//! selectors filter per consumer without using up demand, subscribe errors come back as values,
//! and (unlike GenStage, probe p13) no buffered event is stranded after a cancellation.

mod common;

use common::{collect_events, joined, next, Numbers, Recorder, Report, LIMIT};
use crossbeam_channel::{Receiver, Sender};
use stageflow::dispatcher::BroadcastDispatcher;
use stageflow::{
    BuildError, CancelMode, ConsumerHandle, Context, DemandMode, Producer, ProducerHandle, Reason,
    Reply, SubscribeError, SubscribeOptions,
};

enum Cmd {
    /// Emit the next `n` numbers in one callback, then reply.
    Emit(u64, Reply<()>),
    Sync(Reply<()>),
    Finish,
}

/// Reports every `handle_demand`; emits the next numbers when told to, or, with `auto`,
/// exactly what it is asked for.
struct Source {
    next: u64,
    auto: bool,
    tx: Sender<usize>,
}

impl Source {
    fn emit(&mut self, n: u64, ctx: &mut Context<'_, u64, Cmd>) {
        ctx.emit_all(self.next..self.next + n);
        self.next += n;
    }
}

impl Producer for Source {
    type Out = u64;
    type Message = Cmd;

    fn handle_demand(&mut self, demand: usize, ctx: &mut Context<'_, u64, Cmd>) {
        let _ = self.tx.send(demand);
        if self.auto {
            self.emit(demand as u64, ctx);
        }
    }

    fn handle_message(&mut self, msg: Cmd, ctx: &mut Context<'_, u64, Cmd>) {
        match msg {
            Cmd::Emit(n, reply) => {
                self.emit(n, ctx);
                ctx.reply(reply, ());
            }
            Cmd::Sync(reply) => ctx.reply(reply, ()),
            Cmd::Finish => ctx.finish(),
        }
    }
}

/// A broadcasting `Source`, and the demands it is asked for.
fn source(auto: bool) -> (ProducerHandle<Source>, Receiver<usize>) {
    let (tx, rx) = crossbeam_channel::unbounded();
    let p = stageflow::producer(Source { next: 0, auto, tx })
        .name("source")
        .dispatcher(BroadcastDispatcher::new())
        .spawn()
        .unwrap();
    (p, rx)
}

fn emit(p: &ProducerHandle<Source>, n: u64) {
    p.call(|r| Cmd::Emit(n, r), LIMIT).unwrap();
}

fn sync(p: &ProducerHandle<Source>) {
    p.call(Cmd::Sync, LIMIT).unwrap();
}

/// A running `Synced` with no subscription yet.
fn sink(
    name: &str,
    mode: DemandMode,
) -> (ConsumerHandle<common::Synced<u64>>, Receiver<Report<u64>>) {
    let (tx, rx) = crossbeam_channel::unbounded();
    let c = stageflow::consumer(common::Synced { tx, mode })
        .name(name)
        .spawn()
        .unwrap();
    (c, rx)
}

/// A `Recorder` subscribed to `p` when it starts.
fn recorder(
    p: &ProducerHandle<Source>,
    options: SubscribeOptions,
) -> (ConsumerHandle<Recorder<u64>>, Receiver<Report<u64>>) {
    let (rec, rx) = Recorder::new();
    let c = stageflow::consumer(rec)
        .subscribe_to(p, options)
        .unwrap()
        .spawn()
        .unwrap();
    (c, rx)
}

/// Every event a consumer received until its subscription ended, in order.
fn received(rx: &Receiver<Report<u64>>) -> Vec<u64> {
    let mut events = Vec::new();
    loop {
        match next(rx) {
            Report::Batch(b) => events.extend(b),
            Report::Cancelled(_) => return events,
            _ => {}
        }
    }
}

fn flat(batches: Vec<Vec<u64>>) -> Vec<u64> {
    batches.into_iter().flatten().collect()
}

#[test]
fn smoke() {
    let (numbers, _demands) = Numbers::new(None);
    let p = stageflow::producer(numbers)
        .dispatcher(BroadcastDispatcher::new())
        .spawn()
        .unwrap();
    let spawn = || {
        let (rec, rx) = Recorder::new();
        let c = stageflow::consumer(rec)
            .subscribe_to(&p, SubscribeOptions::new().max_demand(10))
            .unwrap()
            .spawn()
            .unwrap();
        (c, rx)
    };
    let (a, a_rx) = spawn();
    let (b, b_rx) = spawn();
    // Both get consecutive numbers: the first from 0, the second from where it joined.
    let from_a = flat(collect_events(&a_rx, 200));
    let from_b = flat(collect_events(&b_rx, 100));
    assert_eq!(from_a[..200], (0..200).collect::<Vec<_>>());
    let joined_at = from_b[0];
    assert_eq!(
        from_b[..100],
        (joined_at..joined_at + 100).collect::<Vec<_>>()
    );
    p.stop();
    joined(&p);
    joined(&a);
    joined(&b);
}

#[test]
fn every_consumer_gets_the_same_sequence() {
    let (p, _demands) = source(false);
    // Different paces: each gets every event, in order, once.
    let consumers: Vec<_> = [3, 10, 100]
        .into_iter()
        .map(|max| recorder(&p, SubscribeOptions::new().max_demand(max)))
        .collect();
    for chunk in [1, 500, 499] {
        emit(&p, chunk);
    }
    p.cast(Cmd::Finish).unwrap();
    for (c, rx) in &consumers {
        assert_eq!(received(rx), (0..1000).collect::<Vec<_>>());
        assert_eq!(joined(c), Reason::Normal);
    }
    assert_eq!(joined(&p), Reason::Normal);
    let counters = p.counters();
    // Each copy counts in `events_out`; `emitted` counts each event once.
    assert_eq!((counters.events_out, counters.discarded), (3000, 0));
    assert_eq!(counters.emitted, 1000);
}

#[test]
fn shared_demand_is_asked_once() {
    // GS "with shared (broadcast) demand does not result in duplicate upstream demand": a
    // producer that never emits; consumers with max_demand 10 and 20: handle_demand(10),
    // exactly once.
    let (p, demands) = source(false);
    let (c10, _r10) = sink("ten", DemandMode::Automatic);
    let (c20, _r20) = sink("twenty", DemandMode::Automatic);
    let opts = |max| SubscribeOptions::new().max_demand(max).min_demand(0);
    c10.subscribe_to(&p, opts(10)).unwrap();
    assert_eq!(next(&demands), 10);
    c20.subscribe_to(&p, opts(20)).unwrap();
    // Once the consumer has handled its subscription its ask is on the way; once the
    // producer answers a call after it, the ask has been handled.
    c20.call(|r| r, LIMIT).unwrap();
    sync(&p);
    assert_eq!(demands.try_iter().collect::<Vec<_>>(), Vec::<usize>::new());
    for stage in [&c10, &c20] {
        stage.stop();
        joined(stage);
    }
    p.stop();
    joined(&p);
}

#[test]
fn the_slowest_consumer_sets_the_pace() {
    let (p, demands) = source(true);
    // The slow one asks by hand, 4 at first and then what it received: it never has more
    // than 4 outstanding. It subscribes first, and asks only once the fast one (max_demand
    // 50) is there too, so that both see every event.
    let (mut slow_rec, slow_rx) = Recorder::new();
    slow_rec.mode = DemandMode::Manual;
    let slow = stageflow::consumer(slow_rec).spawn().unwrap();
    let slow_sub = slow.subscribe_to(&p, SubscribeOptions::new()).unwrap();
    let (fast, fast_rx) = recorder(&p, SubscribeOptions::new().max_demand(50));
    slow.ask(slow_sub, 4).unwrap();
    let mut slow_events = Vec::new();
    while slow_events.len() < 40 {
        let batch = flat(collect_events(&slow_rx, 1));
        slow.ask(slow_sub, batch.len()).unwrap();
        slow_events.extend(batch);
    }
    let fast_events = flat(collect_events(&fast_rx, 40));
    assert_eq!(slow_events[..40], fast_events[..40]);
    assert_eq!(fast_events[..40], (0..40).collect::<Vec<_>>());
    // The producer is never asked for more than the slow consumer can take.
    let asked: Vec<usize> = demands.try_iter().collect();
    assert!(asked.iter().sum::<usize>() >= 40);
    assert!(asked.iter().all(|&n| n <= 4), "{asked:?}");
    p.stop();
    joined(&p);
    joined(&slow);
    joined(&fast);
}

#[test]
fn selectors_filter_each_consumer() {
    let (p, _demands) = source(false);
    let (all, all_rx) = recorder(&p, SubscribeOptions::new().max_demand(10));
    let (even, even_rx) = recorder(
        &p,
        SubscribeOptions::new()
            .max_demand(10)
            .selector(|x: &u64| x.is_multiple_of(2)),
    );
    let (threes, threes_rx) = recorder(
        &p,
        SubscribeOptions::new()
            .max_demand(5)
            .selector(|x: &u64| x.is_multiple_of(3)),
    );
    emit(&p, 60);
    p.cast(Cmd::Finish).unwrap();
    assert_eq!(received(&all_rx), (0..60).collect::<Vec<_>>());
    assert_eq!(received(&even_rx), (0..60).step_by(2).collect::<Vec<_>>());
    assert_eq!(received(&threes_rx), (0..60).step_by(3).collect::<Vec<_>>());
    for c in [&all, &even, &threes] {
        assert_eq!(joined(c), Reason::Normal);
    }
    assert_eq!(joined(&p), Reason::Normal);
    assert_eq!(p.counters().discarded, 0, "`all` took every event");
}

#[test]
fn events_no_selector_accepts_are_discarded_and_counted() {
    let (p, _demands) = source(false);
    let (even, even_rx) = recorder(
        &p,
        SubscribeOptions::new().selector(|x: &u64| x.is_multiple_of(2)),
    );
    let (threes, threes_rx) = recorder(
        &p,
        SubscribeOptions::new().selector(|x: &u64| x.is_multiple_of(3)),
    );
    emit(&p, 60);
    p.cast(Cmd::Finish).unwrap();
    assert_eq!(received(&even_rx), (0..60).step_by(2).collect::<Vec<_>>());
    assert_eq!(received(&threes_rx), (0..60).step_by(3).collect::<Vec<_>>());
    joined(&even);
    joined(&threes);
    assert_eq!(joined(&p), Reason::Normal);
    let odd_non_threes = (0..60u64).filter(|x| x % 2 != 0 && x % 3 != 0).count();
    assert_eq!(p.counters().discarded, odd_non_threes as u64);
}

#[test]
fn a_selector_of_another_type_is_refused_and_the_producer_keeps_running() {
    let (p, _demands) = source(false);
    let wrong = || SubscribeOptions::new().selector(|s: &String| s.is_empty());

    // At build time.
    let (rec, _rx) = Recorder::<u64>::new();
    let e = stageflow::consumer(rec)
        .subscribe_to(&p, wrong())
        .unwrap()
        .spawn()
        .unwrap_err();
    assert!(
        matches!(
            e,
            BuildError::Subscribe(SubscribeError::InvalidOption {
                option: "selector",
                ..
            })
        ),
        "{e}"
    );

    // At run time.
    let (c, rx) = sink("late", DemandMode::Automatic);
    let e = c.subscribe_to(&p, wrong()).unwrap_err();
    assert!(
        matches!(
            e,
            SubscribeError::InvalidOption {
                option: "selector",
                ..
            }
        ),
        "{e}"
    );

    // The producer is still there, and serves a good subscription.
    assert!(!p.is_finished());
    c.subscribe_to(&p, SubscribeOptions::new().selector(|x: &u64| *x > 2))
        .unwrap();
    emit(&p, 6);
    assert_eq!(flat(collect_events(&rx, 3)), vec![3, 4, 5]);
    c.stop();
    joined(&c);
    p.stop();
    joined(&p);
}

#[test]
fn a_late_subscriber_sees_only_later_events() {
    let (p, _demands) = source(false);
    let (first, first_rx) = recorder(&p, SubscribeOptions::new().max_demand(10));
    emit(&p, 5);
    assert_eq!(flat(collect_events(&first_rx, 5)), vec![0, 1, 2, 3, 4]);
    let (late, late_rx) = recorder(&p, SubscribeOptions::new().max_demand(10));
    emit(&p, 5);
    p.cast(Cmd::Finish).unwrap();
    assert_eq!(received(&late_rx), vec![5, 6, 7, 8, 9]);
    assert_eq!(received(&first_rx), vec![5, 6, 7, 8, 9]);
    joined(&first);
    joined(&late);
    joined(&p);
}

#[test]
fn no_buffered_event_is_stranded_after_a_cancel() {
    // Probe p13, where GenStage strands the buffer: a consumer asks 5 and cancels; the
    // producer then emits 5 events, which it buffers. A new consumer asking 5 must get those
    // 5, in order, before anything newer.
    let (p, demands) = source(false);
    let (first, first_rx) = sink("first", DemandMode::Automatic);
    let opts = || {
        SubscribeOptions::new()
            .max_demand(5)
            .cancel(CancelMode::Temporary)
    };
    let sub = first.subscribe_to(&p, opts()).unwrap();
    assert_eq!(next(&demands), 5);
    first.cancel(sub, Reason::Normal).unwrap();
    loop {
        if let Report::Cancelled(_) = next(&first_rx) {
            break;
        }
    }
    emit(&p, 5);
    sync(&p); // the counters are published at the end of each turn
    assert_eq!(p.counters().buffered, 5);

    let (second, second_rx) = sink("second", DemandMode::Automatic);
    second.subscribe_to(&p, opts()).unwrap();
    assert_eq!(flat(collect_events(&second_rx, 5)), vec![0, 1, 2, 3, 4]);
    emit(&p, 3);
    assert_eq!(flat(collect_events(&second_rx, 3)), vec![5, 6, 7]);
    sync(&p);
    assert_eq!(p.counters().buffered, 0);
    for c in [&first, &second] {
        c.stop();
        joined(c);
    }
    p.stop();
    joined(&p);
}

#[test]
fn cancelling_the_slowest_releases_the_others() {
    // GS "with shared (broadcast) demand and synchronizer subscriber": a consumer that never
    // asks holds everyone back; once it cancels, the others get their events.
    let (p, demands) = source(true);
    let (blocker, blocker_rx) = sink("blocker", DemandMode::Manual);
    let sub = blocker
        .subscribe_to(&p, SubscribeOptions::new().cancel(CancelMode::Temporary))
        .unwrap();
    let (fast, fast_rx) = sink("fast", DemandMode::Automatic);
    fast.subscribe_to(&p, SubscribeOptions::new().max_demand(10))
        .unwrap();
    fast.call(|r| r, LIMIT).unwrap();
    sync(&p);
    assert_eq!(demands.try_iter().count(), 0, "held back by the blocker");

    blocker.cancel(sub, Reason::Normal).unwrap();
    assert_eq!(next(&demands), 10);
    assert_eq!(
        flat(collect_events(&fast_rx, 10)),
        (0..10).collect::<Vec<_>>()
    );
    blocker.call(|r| r, LIMIT).unwrap();
    assert!(!blocker_rx.try_iter().any(|r| matches!(r, Report::Batch(_))));
    for c in [&blocker, &fast] {
        c.stop();
        joined(c);
    }
    p.stop();
    joined(&p);
}

#[test]
fn a_broadcasting_producer_consumer_keeps_flowing() {
    // A producer-consumer's downstream demand is used up by the events its dispatcher takes,
    // not by the copies a broadcast sends: two consumers asking 10 get 10 each.
    let (numbers, _demands) = Numbers::new(None);
    let p = stageflow::producer(numbers).spawn().unwrap();
    // Upstream messages of at most 4 events: fewer than the downstream demand of 10.
    let pc = stageflow::producer_consumer(common::Pass)
        .dispatcher(BroadcastDispatcher::new())
        .subscribe_to(&p, SubscribeOptions::new().max_demand(4))
        .unwrap()
        .spawn()
        .unwrap();
    // Two consumers on manual demand, both subscribed before either asks, each asking 10 at a
    // time and again only once its 10 have arrived.
    let manual = || {
        let (mut rec, rx) = Recorder::<u64>::new();
        rec.mode = DemandMode::Manual;
        let c = stageflow::consumer(rec).spawn().unwrap();
        let sub = c.subscribe_to(&pc, SubscribeOptions::new()).unwrap();
        (c, sub, rx)
    };
    let (a, a_sub, a_rx) = manual();
    let (b, b_sub, b_rx) = manual();
    for round in 0..5u64 {
        a.ask(a_sub, 10).unwrap();
        b.ask(b_sub, 10).unwrap();
        let expected: Vec<u64> = (round * 10..round * 10 + 10).collect();
        assert_eq!(flat(collect_events(&a_rx, 10)), expected);
        assert_eq!(flat(collect_events(&b_rx, 10)), expected);
    }
    for stage in [&a, &b] {
        stage.stop();
        joined(stage);
    }
    pc.stop();
    joined(&pc);
    p.stop();
    joined(&p);
}

#[allow(dead_code)]
#[path = "../examples/broadcast.rs"]
mod example;

#[test]
fn the_example_runs() {
    use example::Level;

    let summary = example::run(200).unwrap();
    assert_eq!(summary.produced, 200);
    let names: Vec<&str> = summary.consumers.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["everything", "errors", "warnings"]);
    let (all, errors, warnings) = (
        &summary.consumers[0].received,
        &summary.consumers[1].received,
        &summary.consumers[2].received,
    );
    // The archiver got every entry, in order; each selector got exactly its level, in order.
    assert_eq!(
        all.iter().map(|e| e.id).collect::<Vec<_>>(),
        (0..200).collect::<Vec<_>>()
    );
    let only = |level| {
        all.iter()
            .filter(|e| e.level == level)
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(*errors, only(Level::Error));
    assert_eq!(*warnings, only(Level::Warn));
    assert!(!errors.is_empty() && !warnings.is_empty());
}
