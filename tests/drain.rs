//! Graceful endings: `Stage::finish` and `Topology::drain`. Sources stop producing, every event
//! in flight reaches the end, every stage ends normally; past the timeout, what is left is
//! stopped and counted.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{joined, LIMIT};
use stageflow::fns::{ForEach, Map};
use stageflow::{
    CancelMode, Consumer, ConsumerContext, Context, DemandMode, Events, Producer, Reason,
    SubscribeOptions, Subscription, Supervisor, Topology,
};

/// Emits `burst` events on every demand, far beyond it: most of them wait in its buffer.
struct Bursts {
    next: u64,
    burst: u64,
}

impl Producer for Bursts {
    type Out = u64;
    type Message = ();

    fn handle_demand(&mut self, _: usize, ctx: &mut Context<'_, u64>) {
        ctx.emit_all(self.next..self.next + self.burst);
        self.next += self.burst;
    }
}

#[test]
fn drain_delivers_every_event_in_flight_through_a_chain() {
    let source = stageflow::from_iter(0u64..).name("source").spawn().unwrap();
    let map = stageflow::producer_consumer(Map::new(|x: u64| x * 2))
        .name("map")
        .subscribe_to(&source, SubscribeOptions::new().max_demand(100))
        .unwrap()
        .spawn()
        .unwrap();
    let (seen_tx, seen) = crossbeam_channel::unbounded();
    let sink = stageflow::consumer(ForEach::new(move |x: u64| seen_tx.send(x).unwrap()))
        .name("sink")
        .subscribe_to(&map, SubscribeOptions::new().max_demand(10))
        .unwrap()
        .spawn()
        .unwrap();
    // Let events flow before the drain.
    seen.recv_timeout(LIMIT).expect("an event reaches the sink");
    let pipeline = Topology::new().with(&source).with(&map).with(&sink);
    let report = pipeline.drain(LIMIT);
    assert!(report.is_complete(), "{report:?}");
    assert_eq!(report.discarded, 0);
    for (name, outcome) in &report.outcomes {
        assert_eq!(outcome, &Some(Reason::Normal), "stage {name}");
    }
    let (s, m, k) = (source.counters(), map.counters(), sink.counters());
    assert_eq!(s.events_out, m.events_in);
    assert_eq!(m.events_out, k.events_in);
    assert_eq!(m.events_in, m.events_out);
    assert_eq!(s.discarded + m.discarded + k.discarded, 0);
    // In order, none missing.
    let got: Vec<u64> = seen.try_iter().collect();
    assert_eq!(got.len() as u64 + 1, k.events_in);
    assert!(got.windows(2).all(|w| w[1] == w[0] + 2));
}

#[test]
fn a_finished_producer_delivers_its_buffer_first() {
    let source = stageflow::producer(Bursts {
        next: 0,
        burst: 5_000,
    })
    .buffer_size(10_000)
    .spawn()
    .unwrap();
    let count = Arc::new(AtomicU64::new(0));
    let c = count.clone();
    let (first_tx, first) = crossbeam_channel::bounded(1);
    let sink = stageflow::consumer(ForEach::new(move |_: u64| {
        c.fetch_add(1, Ordering::Relaxed);
        let _ = first_tx.try_send(());
    }))
    .subscribe_to(&source, SubscribeOptions::new().max_demand(10))
    .unwrap()
    .spawn()
    .unwrap();
    // The first burst is out (and mostly buffered): finish now.
    first.recv_timeout(LIMIT).expect("an event arrives");
    source.finish();
    assert_eq!(joined(&source), Reason::Normal);
    assert_eq!(joined(&sink), Reason::Normal);
    let emitted = source.counters().events_out + source.counters().discarded;
    assert!(emitted >= 5_000, "one burst at least: {emitted}");
    assert_eq!(source.counters().discarded, 0);
    assert_eq!(count.load(Ordering::Relaxed), source.counters().events_out);
    assert_eq!(sink.counters().events_in, source.counters().events_out);
}

#[test]
fn fan_in_with_temporary_subscriptions_drains_from_every_producer() {
    let a = stageflow::from_iter(0u64..).name("a").spawn().unwrap();
    let b = stageflow::from_iter(0u64..).name("b").spawn().unwrap();
    let temporary = SubscribeOptions::new()
        .max_demand(50)
        .cancel(CancelMode::Temporary);
    let sink = stageflow::consumer(ForEach::new(|_: u64| {}))
        .name("sink")
        .subscribe_to(&a, temporary.clone())
        .unwrap()
        .subscribe_to(&b, temporary)
        .unwrap()
        .spawn()
        .unwrap();
    let report = Topology::new().with(&a).with(&b).with(&sink).drain(LIMIT);
    assert!(report.is_complete(), "{report:?}");
    // A temporary subscription alone would leave the sink running: the drain ends it.
    assert_eq!(joined(&sink), Reason::Normal);
    assert_eq!(
        sink.counters().events_in,
        a.counters().events_out + b.counters().events_out
    );
}

/// Takes a manual subscription and never asks.
struct Stuck;

impl Consumer for Stuck {
    type In = u64;
    type Message = ();

    fn handle_subscribe(&mut self, _: &Subscription, _: &mut ConsumerContext<'_>) -> DemandMode {
        DemandMode::Manual
    }

    fn handle_events(&mut self, _: Events<'_, u64>, _: &mut ConsumerContext<'_>) {}
}

/// Emits seven events whenever it is called, whatever the demand: they wait in its buffer.
struct Hoard;

impl Producer for Hoard {
    type Out = u64;
    type Message = stageflow::Reply<()>;

    fn handle_demand(&mut self, _: usize, _: &mut Context<'_, u64, stageflow::Reply<()>>) {}

    fn handle_message(
        &mut self,
        reply: stageflow::Reply<()>,
        ctx: &mut Context<'_, u64, stageflow::Reply<()>>,
    ) {
        ctx.emit_all(0..7);
        reply.send(());
    }
}

#[test]
fn what_cannot_drain_in_time_is_stopped_and_counted() {
    let source = stageflow::producer(Hoard).name("hoard").spawn().unwrap();
    let stuck = stageflow::consumer(Stuck)
        .name("stuck")
        .subscribe_to(&source, SubscribeOptions::new())
        .unwrap()
        .spawn()
        .unwrap();
    // Seven events buffered, and a consumer that never asks for them.
    // (The reply is sent from inside the callback: the buffered counter may not be published
    // yet when the call returns, so the discard count below is what the test checks.)
    source.call(|r| r, LIMIT).unwrap();
    let report = Topology::new()
        .with(&source)
        .with(&stuck)
        .drain(Duration::from_millis(300));
    assert!(!report.is_complete());
    assert_eq!(report.stopped, ["hoard", "stuck"], "{report:?}");
    for (name, outcome) in &report.outcomes {
        assert_eq!(outcome, &Some(Reason::Shutdown), "stage {name}");
    }
    // Nothing silently lost: the stop discarded the seven, and the report counts them.
    assert_eq!(source.counters().discarded, 7);
    assert_eq!(report.discarded, 7, "{report:?}");
}

#[test]
fn a_drained_supervisor_waits_for_its_running_workers() {
    let jobs = stageflow::from_iter(0u64..).name("jobs").spawn().unwrap();
    let done = Arc::new(AtomicU64::new(0));
    let d = done.clone();
    let (started_tx, started) = crossbeam_channel::unbounded();
    let supervisor = stageflow::consumer(Supervisor::new(move |_: u64| {
        let _ = started_tx.send(());
        std::thread::sleep(Duration::from_millis(20));
        d.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }))
    .name("supervisor")
    .subscribe_to(
        &jobs,
        SubscribeOptions::new()
            .max_demand(4)
            .min_demand(2)
            .cancel(CancelMode::Temporary),
    )
    .unwrap()
    .spawn()
    .unwrap();
    started.recv_timeout(LIMIT).expect("a job starts");
    let report = Topology::new().with(&jobs).with(&supervisor).drain(LIMIT);
    assert!(report.is_complete(), "{report:?}");
    // Every job it received ran to the end before the drain returned.
    assert_eq!(done.load(Ordering::SeqCst), supervisor.counters().events_in);
    assert_eq!(supervisor.counters().events_in, jobs.counters().events_out);
}

#[test]
fn finishing_a_consumer_without_producers_ends_it() {
    let sink = stageflow::consumer(ForEach::new(|_: u64| {}))
        .spawn()
        .unwrap();
    sink.finish();
    assert_eq!(joined(&sink), Reason::Normal);
}

/// Handles casts: the first waits until the test says go, the rest are counted.
struct Listener {
    go: crossbeam_channel::Receiver<()>,
    handled: Arc<AtomicU64>,
}

impl Consumer for Listener {
    type In = u64;
    type Message = u64;

    fn handle_events(&mut self, _: Events<'_, u64>, _: &mut ConsumerContext<'_, u64>) {}

    fn handle_message(&mut self, n: u64, _: &mut ConsumerContext<'_, u64>) {
        if n == 0 {
            self.go.recv_timeout(LIMIT).expect("the test says go");
        }
        self.handled.fetch_add(1, Ordering::Relaxed);
    }
}

#[test]
fn a_finished_consumer_without_producers_handles_the_messages_cast_before() {
    // `finish` takes the control path, ahead of the inbox: the consumer hears of it while the
    // casts still wait there. It handles them before it ends.
    let (go_tx, go) = crossbeam_channel::bounded(1);
    let handled = Arc::new(AtomicU64::new(0));
    let listener = stageflow::consumer(Listener {
        go,
        handled: handled.clone(),
    })
    .spawn()
    .unwrap();
    for n in 0..100 {
        listener.cast(n).unwrap();
    }
    listener.finish();
    go_tx.send(()).unwrap();
    assert_eq!(joined(&listener), Reason::Normal);
    assert_eq!(handled.load(Ordering::Relaxed), 100);
}

#[test]
fn a_stopped_supervisor_joins_after_its_running_workers() {
    let jobs = stageflow::from_iter(0u64..).spawn().unwrap();
    let done = Arc::new(AtomicU64::new(0));
    let d = done.clone();
    let (started_tx, started) = crossbeam_channel::unbounded();
    let supervisor = stageflow::consumer(Supervisor::new(move |_: u64| {
        let _ = started_tx.send(());
        std::thread::sleep(Duration::from_millis(50));
        d.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }))
    .subscribe_to(&jobs, SubscribeOptions::new().max_demand(2).min_demand(1))
    .unwrap()
    .spawn()
    .unwrap();
    started.recv_timeout(LIMIT).expect("a job starts");
    supervisor.stop();
    assert_eq!(joined(&supervisor), Reason::Shutdown);
    // The job that was running when it stopped has finished (not abandoned after the join).
    assert!(done.load(Ordering::SeqCst) >= 1);
    assert_eq!(
        done.load(Ordering::SeqCst),
        started.try_iter().count() as u64 + 1
    );
    jobs.stop();
}

/// Reports its `terminate` call.
struct Terminates(crossbeam_channel::Sender<Reason>);

impl Consumer for Terminates {
    type In = u64;
    type Message = ();

    fn handle_events(&mut self, events: Events<'_, u64>, _: &mut ConsumerContext<'_>) {
        for e in events {
            assert_ne!(e, 3, "three is not allowed");
        }
    }

    fn terminate(&mut self, reason: &Reason) {
        self.0.send(reason.clone()).unwrap();
    }
}

#[test]
fn terminate_runs_however_a_stage_ends() {
    for (input, expected) in [
        (0..3u64, Reason::Normal),
        (0..5u64, Reason::Panicked(String::new())),
    ] {
        let (tx, rx) = crossbeam_channel::unbounded();
        let source = stageflow::from_iter(input).spawn().unwrap();
        let sink = stageflow::consumer(Terminates(tx))
            .subscribe_to(&source, SubscribeOptions::new().max_demand(1))
            .unwrap()
            .spawn()
            .unwrap();
        let reason = joined(&sink);
        // By the time join returns, terminate has run with the same reason.
        assert_eq!(rx.try_recv().ok(), Some(reason.clone()));
        assert_eq!(
            std::mem::discriminant(&reason),
            std::mem::discriminant(&expected)
        );
    }
}

/// Emits one event per turn of its loop, with a zero-delay timer; `polite` ones stop when
/// asked to finish.
struct Turns {
    demand: usize,
    next: u64,
    polite: bool,
}

impl Producer for Turns {
    type Out = u64;
    type Message = ();

    fn handle_demand(&mut self, demand: usize, ctx: &mut Context<'_, u64, ()>) {
        if self.demand == 0 {
            ctx.send_after((), Duration::ZERO);
        }
        self.demand += demand;
    }

    fn handle_message(&mut self, (): (), ctx: &mut Context<'_, u64, ()>) {
        if self.polite && ctx.is_finishing() {
            return;
        }
        ctx.emit(self.next);
        self.next += 1;
        self.demand -= 1;
        if self.demand > 0 || !self.polite {
            self.demand = self.demand.max(1);
            ctx.send_after((), Duration::ZERO);
        }
    }
}

#[test]
fn a_producer_driven_by_timers_drains_when_it_watches_is_finishing() {
    for polite in [true, false] {
        let source = stageflow::producer(Turns {
            demand: 0,
            next: 0,
            polite,
        })
        .name("turns")
        .spawn()
        .unwrap();
        let (seen_tx, seen) = crossbeam_channel::unbounded();
        let sink = stageflow::consumer(ForEach::new(move |x: u64| {
            let _ = seen_tx.send(x);
        }))
        .subscribe_to(&source, SubscribeOptions::new().max_demand(4))
        .unwrap()
        .spawn()
        .unwrap();
        seen.recv_timeout(LIMIT).expect("events flow");
        let report = Topology::new()
            .with(&source)
            .with(&sink)
            .drain(Duration::from_millis(500));
        if polite {
            assert!(report.is_complete(), "{report:?}");
            assert_eq!(source.counters().events_out, sink.counters().events_in);
        } else {
            // A timer always due keeps it (and so its consumer) from ending: the drain stops
            // them and says so.
            assert!(report.stopped.contains(&"turns".to_string()), "{report:?}");
            assert!(report.outcomes.iter().all(|(_, r)| r.is_some()));
        }
    }
}
