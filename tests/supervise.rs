//! Supervised groups (`stageflow::supervise`): each restart policy, each strategy, the restart
//! intensity and the backoff, resubscription after restarts, handles across restarts, and
//! topologies draining and stopping a group.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{unbounded, Receiver, Sender};
use stageflow::supervise::{
    self, Backoff, Child, ChildSpec, GroupError, Intensity, RestartPolicy, Strategy,
};
use stageflow::{
    Consumer, ConsumerContext, ConsumerRole, Context, Events, Producer, ProducerConsumer,
    ProducerConsumerRole, ProducerRole, Reason, SubscribeOptions, Topology,
};

/// The longest any test waits for anything: only a failing test waits this long.
const LIMIT: Duration = Duration::from_secs(30);

/// What the test stages obey.
#[derive(Debug)]
enum Cmd {
    /// Panic now.
    Crash,
    /// End normally (a producer finishes; other stages stop with `Reason::Normal`).
    Finish,
}

/// Counts up from 0, one event per unit of demand; every event carries its incarnation.
struct Numbers {
    incarnation: u64,
    next: u64,
}

impl Producer for Numbers {
    type Out = (u64, u64);
    type Message = Cmd;

    fn handle_demand(&mut self, demand: usize, ctx: &mut Context<'_, (u64, u64), Cmd>) {
        for _ in 0..demand {
            ctx.emit((self.incarnation, self.next));
            self.next += 1;
        }
    }

    fn handle_message(&mut self, msg: Cmd, ctx: &mut Context<'_, (u64, u64), Cmd>) {
        match msg {
            Cmd::Crash => panic!("numbers crashed on purpose"),
            Cmd::Finish => ctx.finish(),
        }
    }
}

/// A factory of `Numbers`, counting incarnations.
fn numbers() -> impl FnMut() -> stageflow::StageBuilder<Numbers, ProducerRole> + Send {
    let mut incarnation = 0;
    move || {
        incarnation += 1;
        stageflow::producer(Numbers {
            incarnation,
            next: 0,
        })
    }
}

/// Passes events on unchanged.
struct Relay;

impl ProducerConsumer for Relay {
    type In = (u64, u64);
    type Out = (u64, u64);
    type Message = Cmd;

    fn handle_events(
        &mut self,
        events: Events<'_, (u64, u64)>,
        ctx: &mut Context<'_, (u64, u64), Cmd>,
    ) {
        ctx.emit_all(events);
    }

    fn handle_message(&mut self, msg: Cmd, ctx: &mut Context<'_, (u64, u64), Cmd>) {
        match msg {
            Cmd::Crash => panic!("relay crashed on purpose"),
            Cmd::Finish => ctx.stop(Reason::Normal),
        }
    }
}

/// Sends what it receives, with its own incarnation, to the test.
struct Sink {
    incarnation: u64,
    tx: Sender<(u64, (u64, u64))>,
}

impl Consumer for Sink {
    type In = (u64, u64);
    type Message = Cmd;

    fn handle_events(&mut self, events: Events<'_, (u64, u64)>, _: &mut ConsumerContext<'_, Cmd>) {
        for e in events {
            let _ = self.tx.send((self.incarnation, e));
        }
    }

    fn handle_message(&mut self, msg: Cmd, ctx: &mut ConsumerContext<'_, Cmd>) {
        match msg {
            Cmd::Crash => panic!("sink crashed on purpose"),
            Cmd::Finish => ctx.stop(Reason::Normal),
        }
    }
}

type Seen = Receiver<(u64, (u64, u64))>;

fn sink_factory() -> (
    impl FnMut() -> stageflow::StageBuilder<Sink, ConsumerRole> + Send,
    Seen,
) {
    let (tx, rx) = unbounded();
    let mut incarnation = 0;
    let factory = move || {
        incarnation += 1;
        stageflow::consumer(Sink {
            incarnation,
            tx: tx.clone(),
        })
    };
    (factory, rx)
}

/// Receives until `pred` holds, failing clearly after `LIMIT`.
fn until(rx: &Seen, what: &str, pred: impl Fn(&(u64, (u64, u64))) -> bool) {
    let deadline = Instant::now() + LIMIT;
    loop {
        match rx.recv_deadline(deadline) {
            Ok(x) if pred(&x) => return,
            Ok(_) => {}
            Err(e) => panic!("never saw {what} within {LIMIT:?}: {e}"),
        }
    }
}

fn joined(group: &supervise::Group) -> Reason {
    group
        .join_timeout(LIMIT)
        .unwrap_or_else(|| panic!("group {} did not end within {LIMIT:?}", group.name()))
}

fn crash<S: 'static, R: stageflow::role::Role<S, Message = Cmd>>(child: &Child<S, R>) {
    let stage = child
        .current()
        .unwrap_or_else(|| panic!("child {} is not running", child.name()));
    stage.cast(Cmd::Crash).expect("the stage runs");
}

fn restarted<S: 'static, R: stageflow::role::Role<S>>(child: &Child<S, R>, n: u64) {
    assert!(
        child.wait_restarts(n, LIMIT).is_some(),
        "child {} was not restarted {n} times within {LIMIT:?} (restarts: {})",
        child.name(),
        child.restarts()
    );
}

/// A source and a sink; the source is transient, so a normal finish ends the group normally.
#[test]
fn smoke() {
    let mut g = supervise::group("smoke");
    let source = g.add(
        ChildSpec::new("source", || stageflow::from_iter(0..1000u64))
            .restart(RestartPolicy::Transient),
    );
    let (tx, rx) = unbounded();
    let sink = g.add(
        ChildSpec::new("sink", move || {
            let tx = tx.clone();
            stageflow::consumer(stageflow::fns::ForEach::new(move |x: u64| {
                tx.send(x).unwrap()
            }))
        })
        .subscribe_to(&source, SubscribeOptions::new().max_demand(10))
        .unwrap(),
    );
    let group = g.start().unwrap();
    assert_eq!(joined(&group), Reason::Normal);
    let got: Vec<u64> = rx.try_iter().collect();
    assert_eq!(got, (0..1000).collect::<Vec<_>>());
    assert_eq!(group.restarts(), 0);
    assert_eq!(sink.counters().events_in, 1000);
    assert!(source.current().is_none() && sink.current().is_none());
}

/// A permanent producer that panics is restarted; its consumer stays up (one-for-one) and
/// subscribes to the new incarnation.
#[test]
fn permanent_producer_restarts_and_its_consumer_resubscribes() {
    let mut g = supervise::group("permanent");
    let source = g.add(ChildSpec::new("source", numbers()));
    let (factory, seen) = sink_factory();
    let sink = g.add(
        ChildSpec::new("sink", factory)
            .subscribe_to(&source, SubscribeOptions::new().max_demand(4))
            .unwrap(),
    );
    let group = g.start().unwrap();
    until(&seen, "the first incarnation's events", |&(_, (inc, _))| {
        inc == 1
    });
    crash(&source);
    restarted(&source, 1);
    until(
        &seen,
        "the second incarnation's events",
        |&(_, (inc, _))| inc == 2,
    );
    assert_eq!(sink.restarts(), 0, "one-for-one left the sink alone");
    assert_eq!(group.restarts(), 1);
    assert_eq!(
        group.restart_counts(),
        [("source".to_string(), 1), ("sink".to_string(), 0)]
    );
    group.stop();
    assert_eq!(joined(&group), Reason::Shutdown);
}

/// Permanent means a normal end restarts it too (OTP's rule).
#[test]
fn permanent_restarts_after_a_normal_end() {
    let mut g = supervise::group("permanent-normal");
    let source = g.add(ChildSpec::new("source", numbers()));
    let group = g.start().unwrap();
    source.current().unwrap().cast(Cmd::Finish).unwrap();
    restarted(&source, 1);
    assert!(group.outcome().is_none());
    group.stop();
    assert_eq!(joined(&group), Reason::Shutdown);
}

/// Transient: restarted after a panic, not after a normal end; the group then finishes the
/// consumer (its only producer ended for good) and ends normally.
#[test]
fn transient_restarts_only_after_an_abnormal_end() {
    let mut g = supervise::group("transient");
    let source = g.add(ChildSpec::new("source", numbers()).restart(RestartPolicy::Transient));
    let (factory, seen) = sink_factory();
    let sink = g.add(
        ChildSpec::new("sink", factory)
            .subscribe_to(&source, SubscribeOptions::new().max_demand(4))
            .unwrap(),
    );
    let group = g.start().unwrap();
    crash(&source);
    restarted(&source, 1);
    until(
        &seen,
        "the second incarnation's events",
        |&(_, (inc, _))| inc == 2,
    );
    source.current().unwrap().cast(Cmd::Finish).unwrap();
    assert_eq!(joined(&group), Reason::Normal);
    assert_eq!(source.restarts(), 1);
    assert_eq!(sink.restarts(), 0);
}

/// Temporary: never restarted; its consumer, left without producers, is finished.
#[test]
fn temporary_is_never_restarted() {
    let mut g = supervise::group("temporary");
    let source = g.add(ChildSpec::new("source", numbers()).restart(RestartPolicy::Temporary));
    let (factory, _seen) = sink_factory();
    let sink = g.add(
        ChildSpec::new("sink", factory)
            .subscribe_to(&source, SubscribeOptions::new())
            .unwrap(),
    );
    let group = g.start().unwrap();
    crash(&source);
    assert_eq!(joined(&group), Reason::Normal);
    assert_eq!(group.restarts(), 0);
    assert_eq!((source.restarts(), sink.restarts()), (0, 0));
}

/// A restarted consumer subscribes to its producer again.
#[test]
fn a_restarted_consumer_subscribes_again() {
    let mut g = supervise::group("consumer");
    let source = g.add(ChildSpec::new("source", numbers()));
    let (factory, seen) = sink_factory();
    let sink = g.add(
        ChildSpec::new("sink", factory)
            .subscribe_to(&source, SubscribeOptions::new().max_demand(4))
            .unwrap(),
    );
    let group = g.start().unwrap();
    until(&seen, "the first sink's events", |&(sink, _)| sink == 1);
    crash(&sink);
    restarted(&sink, 1);
    until(&seen, "the second sink's events", |&(sink, _)| sink == 2);
    assert_eq!(source.restarts(), 0);
    group.stop();
    assert_eq!(joined(&group), Reason::Shutdown);
}

/// Three children in a chain, built for the strategy tests.
struct Chain {
    group: supervise::Group,
    source: Child<Numbers, ProducerRole>,
    relay: Child<Relay, ProducerConsumerRole>,
    sink: Child<Sink, ConsumerRole>,
    seen: Seen,
}

fn chain(name: &str, strategy: Strategy) -> Chain {
    let mut g = supervise::group(name).strategy(strategy);
    let source = g.add(ChildSpec::new("source", numbers()));
    let relay = g.add(
        ChildSpec::new("relay", || stageflow::producer_consumer(Relay))
            .subscribe_to(&source, SubscribeOptions::new().max_demand(4))
            .unwrap(),
    );
    let (factory, seen) = sink_factory();
    let sink = g.add(
        ChildSpec::new("sink", factory)
            .subscribe_to(&relay, SubscribeOptions::new().max_demand(4))
            .unwrap(),
    );
    let group = g.start().unwrap();
    Chain {
        group,
        source,
        relay,
        sink,
        seen,
    }
}

fn counts(c: &Chain) -> [u64; 3] {
    [c.source.restarts(), c.relay.restarts(), c.sink.restarts()]
}

#[test]
fn one_for_one_restarts_only_the_child_that_failed() {
    let c = chain("one-for-one", Strategy::OneForOne);
    until(&c.seen, "events", |_| true);
    crash(&c.relay);
    restarted(&c.relay, 1);
    // The sink resubscribed to the new relay: events the source emitted after the restart
    // (which only the new relay can have received) reach it.
    let emitted = c.source.counters().emitted;
    until(&c.seen, "events after the restart", |&(_, (_, n))| {
        n >= emitted
    });
    assert_eq!(counts(&c), [0, 1, 0]);
    c.group.stop();
    assert_eq!(joined(&c.group), Reason::Shutdown);
}

#[test]
fn rest_for_one_restarts_the_child_and_those_after_it() {
    let c = chain("rest-for-one", Strategy::RestForOne);
    until(&c.seen, "events", |_| true);
    crash(&c.relay);
    restarted(&c.relay, 1);
    restarted(&c.sink, 1);
    until(&c.seen, "the second sink's events", |&(sink, _)| sink == 2);
    assert_eq!(counts(&c), [0, 1, 1]);
    assert_eq!(c.group.restarts(), 1, "a strategy's restart counts once");
    c.group.stop();
    assert_eq!(joined(&c.group), Reason::Shutdown);
}

#[test]
fn one_for_all_restarts_every_child() {
    let c = chain("one-for-all", Strategy::OneForAll);
    until(&c.seen, "events", |_| true);
    crash(&c.sink);
    restarted(&c.source, 1);
    restarted(&c.relay, 1);
    restarted(&c.sink, 1);
    until(&c.seen, "the new chain's events", |&(sink, (inc, _))| {
        sink == 2 && inc == 2
    });
    assert_eq!(counts(&c), [1, 1, 1]);
    c.group.stop();
    assert_eq!(joined(&c.group), Reason::Shutdown);
}

/// A child that keeps failing ends the group once the intensity is reached, with a reason
/// that names it and its last failure; every child is stopped.
#[test]
fn the_intensity_limit_ends_the_group() {
    let mut g = supervise::group("storm").intensity(Intensity::new(3, Duration::from_secs(3600)));
    let (factory, _seen) = sink_factory();
    let source = g.add(ChildSpec::new("source", numbers()));
    let sink = g.add(
        ChildSpec::new("sink", factory)
            .subscribe_to(&source, SubscribeOptions::new())
            .unwrap(),
    );
    let group = g.start().unwrap();
    for n in 1..=3 {
        crash(&source);
        restarted(&source, n);
    }
    crash(&source);
    let reason = joined(&group);
    let Reason::Error(why) = &reason else {
        panic!("expected an error, got {reason:?}");
    };
    assert!(why.contains("restart intensity reached"), "{why}");
    assert!(why.contains("child source"), "{why}");
    assert!(why.contains("numbers crashed on purpose"), "{why}");
    assert_eq!(source.restarts(), 3);
    assert!(source.current().is_none() && sink.current().is_none());
}

/// Restarts older than the period no longer count.
#[test]
fn the_intensity_window_slides() {
    let period = Duration::from_millis(300);
    let mut g = supervise::group("slide").intensity(Intensity::new(1, period));
    let source = g.add(ChildSpec::new("source", numbers()));
    let group = g.start().unwrap();
    for n in 1..=3 {
        let started = Instant::now();
        crash(&source);
        restarted(&source, n);
        // Let the restart leave the window (a lower bound only: never flaky when slow).
        std::thread::sleep(period.saturating_sub(started.elapsed()) + period / 10);
    }
    assert!(group.outcome().is_none());
    group.stop();
    assert_eq!(joined(&group), Reason::Shutdown);
}

/// A restart waits its backoff.
#[test]
fn backoff_delays_the_restart() {
    let wait = Duration::from_millis(300);
    let mut g = supervise::group("backoff").backoff(Backoff::Fixed(wait));
    let source = g.add(ChildSpec::new("source", numbers()));
    let group = g.start().unwrap();
    let crashed = Instant::now();
    crash(&source);
    restarted(&source, 1);
    assert!(
        crashed.elapsed() >= wait,
        "restarted after {:?}",
        crashed.elapsed()
    );
    group.stop();
    assert_eq!(joined(&group), Reason::Shutdown);
}

/// A child whose first start fails fails the group's start, and stops what had started.
#[test]
fn a_failed_start_stops_what_started() {
    let mut g = supervise::group("bad-start");
    let source = g.add(ChildSpec::new("source", numbers()));
    g.add(ChildSpec::new("sink", || {
        stageflow::consumer(stageflow::fns::ForEach::new(|_: u64| {})).inbox_capacity(0)
    }));
    let err = g.start().unwrap_err();
    assert!(
        matches!(&err, GroupError::Start { child, .. } if child == "sink"),
        "{err}"
    );
    // The source was started, then stopped and waited for: no incarnation is left.
    assert!(source.current().is_none());
    assert_eq!(source.restarts(), 0);
}

/// Several children of one producer (a pipeline's processors) are each subscribed when they
/// start; a failure among them names the first failing child in the order they were added,
/// and stops every child that started.
#[test]
fn children_of_one_producer_are_each_subscribed_and_a_failure_names_the_first() {
    let mut g = supervise::group("together");
    let source = g.add(
        ChildSpec::new("source", || stageflow::from_iter(0..1000u64))
            .restart(RestartPolicy::Transient),
    );
    let (tx, rx) = unbounded();
    let sinks: Vec<_> = (0..6)
        .map(|i| {
            let tx = tx.clone();
            g.add(
                ChildSpec::new(format!("sink-{i}"), move || {
                    let tx = tx.clone();
                    stageflow::consumer(stageflow::fns::ForEach::new(move |x: u64| {
                        tx.send(x).unwrap()
                    }))
                })
                .subscribe_to(&source, SubscribeOptions::new().max_demand(10))
                .unwrap(),
            )
        })
        .collect();
    let group = g.start().unwrap();
    // A sink left unsubscribed would never end, nor would the group.
    assert_eq!(joined(&group), Reason::Normal);
    let mut got: Vec<u64> = rx.try_iter().collect();
    got.sort_unstable();
    assert_eq!(got, (0..1000).collect::<Vec<_>>());
    assert!(sinks.iter().all(|sink| sink.current().is_none()));

    let mut g = supervise::group("together-bad");
    let source = g.add(ChildSpec::new("source", || stageflow::from_iter(0..10u64)));
    let sinks: Vec<_> = (0..6)
        .map(|i| {
            g.add(
                ChildSpec::new(format!("sink-{i}"), move || {
                    // Sinks 2 and 4 cannot be built (an inbox of 0).
                    let capacity = if i == 2 || i == 4 { 0 } else { 8 };
                    stageflow::consumer(stageflow::fns::ForEach::new(|_: u64| {}))
                        .inbox_capacity(capacity)
                })
                .subscribe_to(&source, SubscribeOptions::new())
                .unwrap(),
            )
        })
        .collect();
    let err = g.start().unwrap_err();
    assert!(
        matches!(&err, GroupError::Start { child, .. } if child == "sink-2"),
        "{err}"
    );
    assert!(source.current().is_none());
    for sink in &sinks {
        assert!(sink.current().is_none(), "{} still runs", sink.name());
    }
}

#[test]
fn invalid_options_are_named() {
    let g = supervise::group("bad").intensity(Intensity::new(3, Duration::ZERO));
    let err = g.start().unwrap_err();
    assert!(
        matches!(
            err,
            GroupError::InvalidOption {
                option: "intensity.period",
                ..
            }
        ),
        "{err}"
    );

    let mut g = supervise::group("twice");
    g.add(ChildSpec::new("same", numbers()));
    g.add(ChildSpec::new("same", numbers()));
    let err = g.start().unwrap_err();
    assert!(
        matches!(
            err,
            GroupError::InvalidOption {
                option: "child.name",
                ..
            }
        ),
        "{err}"
    );

    let mut other = supervise::group("other");
    let foreign = other.add(ChildSpec::new("source", numbers()));
    let mut g = supervise::group("mine");
    let (factory, _seen) = sink_factory();
    g.add(
        ChildSpec::new("sink", factory)
            .subscribe_to(&foreign, SubscribeOptions::new())
            .unwrap(),
    );
    let err = g.start().unwrap_err();
    assert!(
        matches!(
            err,
            GroupError::InvalidOption {
                option: "child.subscribe_to",
                ..
            }
        ),
        "{err}"
    );
}

/// `Topology::drain` drains a group with the stages around it, even after restarts: the
/// incarnations running then finish, nothing is restarted, every event reaches the end.
#[test]
fn a_topology_drains_a_group() {
    let mut g = supervise::group("drained");
    let source = g.add(ChildSpec::new("source", numbers()));
    let relay = g.add(
        ChildSpec::new("relay", || stageflow::producer_consumer(Relay))
            .subscribe_to(&source, SubscribeOptions::new().max_demand(4))
            .unwrap(),
    );
    let group = g.start().unwrap();
    let count = Arc::new(AtomicU64::new(0));
    let c = count.clone();
    // A consumer outside the group, on the relay's first incarnation: temporary, since the
    // relay will be restarted under it.
    crash(&relay);
    let relay_now = relay.wait_restarts(1, LIMIT).expect("the relay came back");
    let outside = stageflow::consumer(stageflow::fns::ForEach::new(move |_: (u64, u64)| {
        c.fetch_add(1, Ordering::Relaxed);
    }))
    .subscribe_to(&relay_now, SubscribeOptions::new())
    .unwrap()
    .spawn()
    .unwrap();
    let topology = Topology::new().with_member(group.clone()).with(&outside);
    let deadline = Instant::now() + LIMIT;
    while count.load(Ordering::Relaxed) == 0 {
        assert!(Instant::now() < deadline, "no events reached the end");
        std::thread::yield_now();
    }
    let report = topology.drain(LIMIT);
    assert!(report.is_complete(), "{report:?}");
    assert_eq!(
        report.outcomes,
        [
            ("drained".to_string(), Some(Reason::Normal)),
            (outside.name().to_string(), Some(Reason::Normal))
        ]
    );
    assert_eq!(relay.restarts(), 1);
    let (source_c, relay_c) = (source.counters(), relay.counters());
    // Everything the second relay sent reached the outside consumer.
    assert_eq!(
        relay_now.counters().events_out,
        outside.counters().events_in
    );
    assert_eq!(outside.counters().events_in, count.load(Ordering::Relaxed));
    assert!(source_c.emitted >= relay_c.events_in);
}

/// `Topology::stop` stops a group: it ends with `Shutdown`, nothing restarted.
#[test]
fn a_topology_stops_a_group() {
    let mut g = supervise::group("stopped");
    let source = g.add(ChildSpec::new("source", numbers()));
    let group = g.start().unwrap();
    let topology = Topology::new().with_member(group.clone());
    topology.stop();
    assert_eq!(topology.join(), [("stopped".to_string(), Reason::Shutdown)]);
    assert_eq!(source.restarts(), 0);
    assert!(source.current().is_none());
}

/// Dropping the last group handle stops the group.
#[test]
fn dropping_the_group_stops_it() {
    let mut g = supervise::group("dropped");
    let source = g.add(ChildSpec::new("source", numbers()));
    let group = g.start().unwrap();
    let stage = source.current().unwrap();
    drop(group);
    assert_eq!(stage.join_timeout(LIMIT), Some(Reason::Shutdown));
}

/// A child subscribed to a stage outside the group subscribes to it again when restarted.
#[test]
fn a_restarted_child_subscribes_again_outside_the_group() {
    let outside = stageflow::producer(Numbers {
        incarnation: 0,
        next: 0,
    })
    .spawn()
    .unwrap();
    let mut g = supervise::group("outside");
    let (factory, seen) = sink_factory();
    let sink = g.add(
        ChildSpec::new("sink", factory)
            .subscribe_to_stage(&outside, SubscribeOptions::new().max_demand(4))
            .unwrap(),
    );
    let group = g.start().unwrap();
    until(&seen, "the first sink's events", |&(sink, _)| sink == 1);
    crash(&sink);
    restarted(&sink, 1);
    until(&seen, "the second sink's events", |&(sink, _)| sink == 2);
    group.stop();
    assert_eq!(joined(&group), Reason::Shutdown);
    assert!(outside.outcome().is_none(), "the outside producer runs on");
    outside.stop();
    assert!(outside.join_timeout(LIMIT).is_some());
}

/// A restart that fails (the factory panics) counts as a failure: retried, then the
/// intensity ends the group, naming the failure.
#[test]
fn a_restart_that_fails_counts_against_the_intensity() {
    let mut g = supervise::group("bad-restart").intensity(Intensity::new(2, LIMIT * 10));
    let mut starts = 0;
    let source = g.add(ChildSpec::new("source", move || {
        starts += 1;
        assert!(starts == 1, "no second source today");
        stageflow::producer(Numbers {
            incarnation: starts,
            next: 0,
        })
    }));
    let group = g.start().unwrap();
    crash(&source);
    let reason = joined(&group);
    let Reason::Error(why) = &reason else {
        panic!("expected an error, got {reason:?}");
    };
    assert!(why.contains("restart failed"), "{why}");
    assert!(why.contains("no second source today"), "{why}");
    assert_eq!(source.restarts(), 0, "no restart succeeded");
    assert_eq!(group.restarts(), 2);
}

/// A snapshot of a topology holding a group reads the group's current stages.
#[test]
fn snapshots_see_the_current_incarnations() {
    use stageflow::observe::Observe;
    let mut g = supervise::group("observed");
    let source = g.add(ChildSpec::new("source", numbers()));
    let (factory, _seen) = sink_factory();
    g.add(
        ChildSpec::new("sink", factory)
            .subscribe_to(&source, SubscribeOptions::new())
            .unwrap(),
    );
    let group = g.start().unwrap();
    let topology = Topology::new().with_member(group.clone());
    let names =
        |t: &Topology| -> Vec<String> { t.snapshot().stages.into_iter().map(|s| s.name).collect() };
    assert_eq!(names(&topology), ["source", "sink"]);
    crash(&source);
    restarted(&source, 1);
    assert_eq!(names(&topology), ["source", "sink"]);
    let now = source.current().unwrap();
    let refs = topology.current_stages();
    assert!(
        refs.iter()
            .any(|r| r.name() == "source" && r.outcome().is_none()),
        "the running source, not the crashed one: {refs:?} ({now:?})"
    );
    topology.stop();
    assert_eq!(joined(&group), Reason::Shutdown);
}

/// The handles can be shared between threads; the descriptions can be sent.
#[test]
fn handles_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<supervise::Group>();
    send_sync::<Child<Numbers, ProducerRole>>();
    send_sync::<Child<Sink, ConsumerRole>>();
    send_sync::<supervise::ChildSource<(u64, u64)>>();
    send_sync::<supervise::GroupBuilder>();
    send::<ChildSpec<Relay, ProducerConsumerRole>>();
    send::<GroupError>();
}
