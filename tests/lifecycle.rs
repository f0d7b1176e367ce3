//! Lifecycle: how consumers react to a producer's end by cancel mode (normal finish, stop,
//! panic), joins that report outcomes, cancels at run time, and threads that always end.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{joined, next, Numbers, Recorder, Report};
use crossbeam_channel::Sender;
use stageflow::{
    CancelMode, Consumer, ConsumerContext, Context, Events, Producer, Reason, SubscribeOptions,
    Topology,
};

/// Waits for three consumers, then emits what is asked up to `panic_at`; panics when asked
/// for more after that.
struct Fragile {
    next: u64,
    panic_at: u64,
    pending: usize,
    consumers: usize,
}

impl Fragile {
    fn pump(&mut self, ctx: &mut Context<'_, u64>) {
        if self.consumers < 3 || self.pending == 0 {
            return;
        }
        if self.next >= self.panic_at {
            panic!("boom at {}", self.next);
        }
        let end = (self.next + self.pending as u64).min(self.panic_at);
        self.pending -= (end - self.next) as usize;
        ctx.emit_all(self.next..end);
        self.next = end;
    }
}

impl Producer for Fragile {
    type Out = u64;
    type Message = ();
    fn handle_demand(&mut self, demand: usize, ctx: &mut Context<'_, u64>) {
        self.pending += demand;
        self.pump(ctx);
    }
    fn handle_subscribe(&mut self, _: &stageflow::Subscription, ctx: &mut Context<'_, u64>) {
        self.consumers += 1;
        self.pump(ctx);
    }
}

/// A producer that never emits on its own and ends only when told.
struct Idle;

impl Producer for Idle {
    type Out = u64;
    type Message = Reason;
    fn handle_demand(&mut self, _: usize, _: &mut Context<'_, u64, Reason>) {}
    fn handle_message(&mut self, reason: Reason, ctx: &mut Context<'_, u64, Reason>) {
        if reason == Reason::Normal {
            ctx.finish();
        } else {
            ctx.stop(reason);
        }
    }
}

/// Reports its own drop, to prove its thread let go of it.
struct DropSignal(Sender<&'static str>, &'static str);

impl Drop for DropSignal {
    fn drop(&mut self) {
        let _ = self.0.send(self.1);
    }
}

struct Sink(#[allow(dead_code)] DropSignal);

impl Consumer for Sink {
    type In = u64;
    type Message = ();
    fn handle_events(&mut self, _: Events<'_, u64>, _: &mut ConsumerContext<'_>) {}
}

fn consumer_of_idle(
    mode: CancelMode,
) -> (
    stageflow::ProducerHandle<Idle>,
    stageflow::ConsumerHandle<Recorder<u64>>,
    crossbeam_channel::Receiver<Report<u64>>,
) {
    let p = stageflow::producer(Idle).spawn().unwrap();
    let (rec, rx) = Recorder::new();
    let c = stageflow::consumer(rec)
        .subscribe_to(&p, SubscribeOptions::new().cancel(mode))
        .unwrap()
        .spawn()
        .unwrap();
    assert_eq!(next(&rx), Report::Subscribed);
    (p, c, rx)
}

/// Ends the producer with `reason`; returns how the consumer reacted (None: still running).
fn reaction(mode: CancelMode, reason: Reason) -> Option<Reason> {
    let (p, c, rx) = consumer_of_idle(mode);
    p.cast(reason.clone()).unwrap();
    assert_eq!(joined(&p), reason);
    assert_eq!(next(&rx), Report::Cancelled(reason));
    let outcome = c.join_timeout(Duration::from_millis(100));
    c.stop();
    joined(&c);
    outcome
}

#[test]
fn smoke() {
    let (numbers, _) = Numbers::new(Some(10));
    let p = stageflow::producer(numbers).spawn().unwrap();
    let (rec, rx) = Recorder::new();
    let c = stageflow::consumer(rec)
        .subscribe_to(&p, SubscribeOptions::new())
        .unwrap()
        .spawn()
        .unwrap();
    assert_eq!(joined(&c), Reason::Normal);
    assert_eq!(joined(&p), Reason::Normal);
    let reports: Vec<_> = rx.try_iter().collect();
    assert_eq!(reports.first(), Some(&Report::Subscribed));
    assert_eq!(reports.last(), Some(&Report::Cancelled(Reason::Normal)));
}

#[test]
fn permanent_ends_with_any_reason() {
    assert_eq!(
        reaction(CancelMode::Permanent, Reason::Normal),
        Some(Reason::Normal)
    );
    assert_eq!(
        reaction(CancelMode::Permanent, Reason::Shutdown),
        Some(Reason::Shutdown)
    );
    let oops = Reason::error("oops");
    assert_eq!(reaction(CancelMode::Permanent, oops.clone()), Some(oops));
}

#[test]
fn transient_ends_only_on_failure() {
    assert_eq!(reaction(CancelMode::Transient, Reason::Normal), None);
    assert_eq!(reaction(CancelMode::Transient, Reason::Shutdown), None);
    let oops = Reason::error("oops");
    assert_eq!(reaction(CancelMode::Transient, oops.clone()), Some(oops));
}

#[test]
fn temporary_never_ends() {
    assert_eq!(reaction(CancelMode::Temporary, Reason::Normal), None);
    assert_eq!(reaction(CancelMode::Temporary, Reason::error("oops")), None);
}

#[test]
fn stop_from_outside_is_a_shutdown() {
    let logs = common::capture_logs();
    let (p, c, rx) = consumer_of_idle(CancelMode::Permanent);
    p.stop();
    assert_eq!(joined(&p), Reason::Shutdown);
    assert_eq!(next(&rx), Report::Cancelled(Reason::Shutdown));
    assert_eq!(joined(&c), Reason::Shutdown);
    // The consumer says why it stops, at info level, naming itself.
    let why = common::logged(
        &logs,
        &format!("stage {}: stopping after subscription", c.name()),
    );
    assert_eq!(why.len(), 1, "{why:?}");
    assert_eq!(why[0].0, log::Level::Info);
    assert!(why[0].1.ends_with("ended: shutdown"), "{}", why[0].1);
}

#[test]
fn a_panic_is_reported_by_join_and_reaches_consumers_by_cancel_mode() {
    let p = stageflow::producer(Fragile {
        next: 0,
        panic_at: 25,
        pending: 0,
        consumers: 0,
    })
    .name("fragile")
    .spawn()
    .unwrap();
    let mut consumers = Vec::new();
    for mode in [
        CancelMode::Permanent,
        CancelMode::Transient,
        CancelMode::Temporary,
    ] {
        let (rec, rx) = Recorder::new();
        let c = stageflow::consumer(rec)
            .subscribe_to(&p, SubscribeOptions::new().max_demand(10).cancel(mode))
            .unwrap()
            .spawn()
            .unwrap();
        consumers.push((mode, c, rx));
    }
    let outcome = joined(&p);
    assert_eq!(outcome, Reason::Panicked("boom at 25".into()));
    let mut received = 0;
    for (mode, c, rx) in &consumers {
        // Every event sent before the panic is handled before the cancel.
        loop {
            match next(rx) {
                Report::Batch(b) => received += b.len(),
                Report::Subscribed => {}
                Report::Cancelled(r) => {
                    assert_eq!(r, outcome);
                    break;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        match mode {
            CancelMode::Temporary => {
                assert_eq!(c.join_timeout(Duration::from_millis(50)), None);
                c.stop();
                assert_eq!(joined(c), Reason::Shutdown);
            }
            _ => assert_eq!(joined(c), outcome),
        }
    }
    assert_eq!(
        received, 25,
        "every event emitted before the panic is delivered"
    );
}

#[test]
fn a_panicking_consumer_is_dropped_by_its_producer() {
    struct Grumpy;
    impl Consumer for Grumpy {
        type In = u64;
        type Message = ();
        fn handle_events(&mut self, _: Events<'_, u64>, _: &mut ConsumerContext<'_>) {
            panic!("no thanks");
        }
    }
    let (numbers, demands) = Numbers::new(None);
    let p = stageflow::producer(numbers).spawn().unwrap();
    let c = stageflow::consumer(Grumpy)
        .subscribe_to(&p, SubscribeOptions::new().max_demand(5))
        .unwrap()
        .spawn()
        .unwrap();
    assert_eq!(next(&demands), Report::Demand(5));
    assert_eq!(joined(&c), Reason::Panicked("no thanks".into()));
    // The producer keeps running and has no subscription left.
    let deadline = std::time::Instant::now() + common::LIMIT;
    while !p.counters().subscriptions.is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the producer kept the dead consumer"
        );
        std::thread::yield_now();
    }
    assert!(!p.is_finished());
    p.stop();
    assert_eq!(joined(&p), Reason::Shutdown);
}

#[test]
fn cancel_at_run_time_then_resubscribe() {
    let (numbers, _) = Numbers::new(None);
    let p = stageflow::producer(numbers).spawn().unwrap();
    let (rec, rx) = Recorder::new();
    let c = stageflow::consumer(rec).spawn().unwrap();
    let opts = SubscribeOptions::new()
        .max_demand(3)
        .cancel(CancelMode::Temporary);
    let sub = c.subscribe_to(&p, opts.clone()).unwrap();
    assert_eq!(next(&rx), Report::Subscribed);
    assert!(matches!(next(&rx), Report::Batch(_)));
    c.cancel(sub, Reason::error("enough")).unwrap();
    // Batches already sent may still arrive; then the cancel, and the consumer stays.
    loop {
        match next(&rx) {
            Report::Cancelled(r) => {
                assert_eq!(r, Reason::error("enough"));
                break;
            }
            Report::Batch(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(!c.is_finished());
    let again = c.subscribe_to(&p, opts).unwrap();
    assert_ne!(again, sub);
    assert_eq!(next(&rx), Report::Subscribed);
    assert!(matches!(next(&rx), Report::Batch(_)));
    let topology = Topology::new().with(&p).with(&c);
    topology.stop();
    for (_, outcome) in topology.join_timeout(common::LIMIT) {
        assert_eq!(outcome, Some(Reason::Shutdown));
    }
}

#[test]
fn dropping_every_handle_of_a_finite_pipeline_ends_its_threads() {
    let (tx, rx) = crossbeam_channel::unbounded();
    let (numbers, _) = Numbers::new(Some(1000));
    let p = stageflow::producer(numbers).spawn().unwrap();
    let c = stageflow::consumer(Sink(DropSignal(tx, "consumer")))
        .subscribe_to(&p, SubscribeOptions::new())
        .unwrap()
        .spawn()
        .unwrap();
    drop((p, c));
    assert_eq!(next(&rx), "consumer");
}

#[test]
fn an_unreachable_stage_ends() {
    // A transient consumer outlives its producer; once its last handle is dropped nothing can
    // reach it, and it ends.
    let (tx, rx) = crossbeam_channel::unbounded();
    let (numbers, _) = Numbers::new(Some(10));
    let p = stageflow::producer(numbers).spawn().unwrap();
    let c = stageflow::consumer(Sink(DropSignal(tx, "consumer")))
        .subscribe_to(&p, SubscribeOptions::new().cancel(CancelMode::Transient))
        .unwrap()
        .spawn()
        .unwrap();
    assert_eq!(joined(&p), Reason::Normal);
    assert_eq!(c.join_timeout(Duration::from_millis(50)), None);
    drop(c);
    assert_eq!(next(&rx), "consumer");
}

#[test]
fn dropping_a_topology_stops_an_endless_pipeline() {
    let (tx, rx) = crossbeam_channel::unbounded();
    let (numbers, _) = Numbers::new(None);
    let p = stageflow::producer(numbers).spawn().unwrap();
    let c = stageflow::consumer(Sink(DropSignal(tx, "consumer")))
        .subscribe_to(&p, SubscribeOptions::new())
        .unwrap()
        .spawn()
        .unwrap();
    let topology = Topology::new().with(&p).with(&c);
    let p_ref = p.stage_ref();
    drop((p, c));
    drop(topology);
    assert_eq!(next(&rx), "consumer");
    assert_eq!(p_ref.join_timeout(common::LIMIT), Some(Reason::Shutdown));
}

#[test]
fn a_stop_ends_a_consumer_between_two_batches_of_one_message() {
    // max 100, min 99: a message of 100 events is cut into 100 batches of one. A consumer
    // told to stop while in the first must not go through the other 99 (each could be slow).
    struct Slow {
        entered: Sender<()>,
        release: crossbeam_channel::Receiver<()>,
        handled: Arc<std::sync::atomic::AtomicU64>,
    }
    impl Consumer for Slow {
        type In = u64;
        type Message = ();
        fn handle_events(&mut self, events: Events<'_, u64>, _: &mut ConsumerContext<'_>) {
            let n = events.count() as u64;
            self.handled
                .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
            let _ = self.entered.send(());
            let _ = self.release.recv_timeout(common::LIMIT);
        }
    }
    let p = stageflow::from_iter(0..100u64).spawn().unwrap();
    let (entered, has_entered) = crossbeam_channel::unbounded();
    let (release, released) = crossbeam_channel::unbounded();
    let handled = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let c = stageflow::consumer(Slow {
        entered,
        release: released,
        handled: handled.clone(),
    })
    .subscribe_to(&p, SubscribeOptions::new().max_demand(100).min_demand(99))
    .unwrap()
    .spawn()
    .unwrap();
    next(&has_entered);
    c.stop();
    release.send(()).unwrap();
    assert_eq!(joined(&c), Reason::Shutdown);
    assert_eq!(handled.load(std::sync::atomic::Ordering::Relaxed), 1);
    let counters = c.counters();
    assert_eq!(counters.events_in, 100);
    assert_eq!(counters.discarded, 99, "the batches it never handled");
    p.stop();
    joined(&p);
}

#[test]
fn stop_reaches_a_callback_that_blocks() {
    // A blocking source checks is_stop_requested between blocking steps.
    struct Blocking(Arc<std::sync::Barrier>);
    impl Producer for Blocking {
        type Out = u64;
        type Message = ();
        fn handle_demand(&mut self, _: usize, ctx: &mut Context<'_, u64>) {
            self.0.wait();
            while !ctx.is_stop_requested() {
                std::thread::sleep(Duration::from_millis(1)); // one "read" with a timeout
            }
        }
    }
    let barrier = Arc::new(std::sync::Barrier::new(2));
    let p = stageflow::producer(Blocking(barrier.clone()))
        .spawn()
        .unwrap();
    let c = stageflow::consumer(Sink(DropSignal(crossbeam_channel::unbounded().0, "")))
        .subscribe_to(&p, SubscribeOptions::new())
        .unwrap()
        .spawn()
        .unwrap();
    barrier.wait(); // the producer is inside handle_demand
    p.stop();
    assert_eq!(joined(&p), Reason::Shutdown);
    assert_eq!(joined(&c), Reason::Shutdown);
}

#[test]
fn a_mailbox_delivers_from_another_thread() {
    // A consumer hands each event to a worker thread, which reports back through a mailbox.
    struct Offload(Sender<u64>);
    enum Msg {
        Done(u64),
    }
    impl Consumer for Offload {
        type In = u64;
        type Message = Msg;
        fn handle_events(&mut self, events: Events<'_, u64>, ctx: &mut ConsumerContext<'_, Msg>) {
            for x in events {
                let mailbox = ctx.mailbox();
                std::thread::spawn(move || mailbox.cast(Msg::Done(x * 10)).unwrap());
            }
        }
        fn handle_message(&mut self, msg: Msg, _: &mut ConsumerContext<'_, Msg>) {
            let Msg::Done(x) = msg;
            let _ = self.0.send(x);
        }
    }
    let (tx, rx) = crossbeam_channel::unbounded();
    let (numbers, _) = Numbers::new(Some(5));
    let p = stageflow::producer(numbers).spawn().unwrap();
    let c = stageflow::consumer(Offload(tx))
        .subscribe_to(&p, SubscribeOptions::new().cancel(CancelMode::Temporary))
        .unwrap()
        .spawn()
        .unwrap();
    let mut got: Vec<u64> = (0..5).map(|_| next(&rx)).collect();
    got.sort_unstable();
    assert_eq!(got, vec![0, 10, 20, 30, 40]);
    c.stop();
    joined(&c);
}

#[test]
fn stop_discards_what_is_buffered_and_counts_it() {
    enum Msg {
        Emit(Vec<u64>),
        Sync(stageflow::Reply<()>),
    }
    struct Caster;
    impl Producer for Caster {
        type Out = u64;
        type Message = Msg;
        fn handle_demand(&mut self, _: usize, _: &mut Context<'_, u64, Msg>) {}
        fn handle_message(&mut self, msg: Msg, ctx: &mut Context<'_, u64, Msg>) {
            match msg {
                Msg::Emit(events) => ctx.emit_all(events),
                Msg::Sync(reply) => ctx.reply(reply, ()),
            }
        }
    }
    let p = stageflow::producer(Caster).spawn().unwrap();
    // Nobody is subscribed: all 7 are buffered.
    p.cast(Msg::Emit((0..7).collect())).unwrap();
    p.call(Msg::Sync, Duration::from_secs(5)).unwrap();
    assert_eq!(p.counters().buffered, 7);
    p.stop();
    assert_eq!(joined(&p), Reason::Shutdown);
    let counters = p.counters();
    assert_eq!((counters.discarded, counters.buffered), (7, 0));
}

#[test]
fn counters_balance_for_a_finished_pipeline() {
    let (numbers, _) = Numbers::new(Some(5_000));
    let p = stageflow::producer(numbers).spawn().unwrap();
    let (rec, _rx) = Recorder::new();
    let c = stageflow::consumer(rec)
        .subscribe_to(&p, SubscribeOptions::new().max_demand(64))
        .unwrap()
        .spawn()
        .unwrap();
    assert_eq!(joined(&c), Reason::Normal);
    assert_eq!(joined(&p), Reason::Normal);
    let (pc, cc) = (p.counters(), c.counters());
    assert_eq!(pc.events_out, 5_000);
    assert_eq!(cc.events_in, pc.events_out);
    assert_eq!((pc.discarded, pc.buffered, cc.discarded), (0, 0, 0));
    assert!(pc.subscriptions.is_empty() && cc.subscriptions.is_empty());
}

#[test]
fn a_stage_thread_is_named_after_the_stage() {
    struct Named(Sender<Option<String>>);
    impl Producer for Named {
        type Out = u64;
        type Message = ();
        fn handle_demand(&mut self, _: usize, _: &mut Context<'_, u64>) {}
        fn handle_message(&mut self, _: (), _: &mut Context<'_, u64>) {
            let _ = self.0.send(std::thread::current().name().map(String::from));
        }
    }
    let (tx, rx) = crossbeam_channel::unbounded();
    let p = stageflow::producer(Named(tx.clone()))
        .name("reader")
        .spawn()
        .unwrap();
    p.cast(()).unwrap();
    assert_eq!(next(&rx).as_deref(), Some("reader"));
    // Unnamed stages are named after their type, with a number.
    let q = stageflow::producer(Named(tx)).spawn().unwrap();
    assert!(q.name().starts_with("Named-"), "{}", q.name());
    q.cast(()).unwrap();
    assert_eq!(next(&rx).as_deref(), Some(q.name()));
    for s in [&p, &q] {
        s.stop();
        joined(s);
    }
}

#[test]
fn a_consumer_that_finishes_ends_normally() {
    struct Three(usize);
    impl Consumer for Three {
        type In = u64;
        type Message = ();
        fn handle_events(&mut self, events: Events<'_, u64>, ctx: &mut ConsumerContext<'_>) {
            self.0 += events.len();
            if self.0 >= 3 {
                ctx.finish();
            }
        }
    }
    let (numbers, _) = Numbers::new(None);
    let p = stageflow::producer(numbers).spawn().unwrap();
    let c = stageflow::consumer(Three(0))
        .subscribe_to(&p, SubscribeOptions::new().max_demand(2))
        .unwrap()
        .spawn()
        .unwrap();
    assert_eq!(joined(&c), Reason::Normal);
    // The producer keeps running without its consumer.
    assert!(!p.is_finished());
    p.stop();
    joined(&p);
}

#[test]
fn a_tag_reaches_both_sides_of_a_subscription() {
    struct Tags(Sender<(stageflow::Direction, Option<String>)>);
    impl Producer for Tags {
        type Out = u64;
        type Message = ();
        fn handle_demand(&mut self, _: usize, _: &mut Context<'_, u64>) {}
        fn handle_subscribe(&mut self, s: &stageflow::Subscription, _: &mut Context<'_, u64>) {
            let _ = self
                .0
                .send((s.direction(), s.options().get_tag().map(String::from)));
        }
    }
    impl Consumer for Tags {
        type In = u64;
        type Message = ();
        fn handle_events(&mut self, _: Events<'_, u64>, _: &mut ConsumerContext<'_>) {}
        fn handle_subscribe(
            &mut self,
            s: &stageflow::Subscription,
            _: &mut ConsumerContext<'_>,
        ) -> stageflow::DemandMode {
            let _ = self
                .0
                .send((s.direction(), s.options().get_tag().map(String::from)));
            stageflow::DemandMode::Automatic
        }
    }
    let (tx, rx) = crossbeam_channel::unbounded();
    let p = stageflow::producer(Tags(tx.clone())).spawn().unwrap();
    let c = stageflow::consumer(Tags(tx))
        .subscribe_to(&p, SubscribeOptions::new().tag("interval=100"))
        .unwrap()
        .spawn()
        .unwrap();
    let mut seen = vec![next(&rx), next(&rx)];
    seen.sort_by_key(|(d, _)| *d == stageflow::Direction::Upstream);
    let tag = Some("interval=100".to_string());
    assert_eq!(
        seen,
        vec![
            (stageflow::Direction::Downstream, tag.clone()),
            (stageflow::Direction::Upstream, tag)
        ]
    );
    p.stop();
    joined(&p);
    joined(&c);
}

#[test]
fn a_stop_ends_a_producer_consumer_between_two_queued_messages() {
    // A producer-consumer whose consumers have no demand queues what it receives. When demand
    // comes it handles the queue a message at a time; a stop seen in the first must not wait
    // for the other four (each could be slow).
    struct OnCast;
    impl Producer for OnCast {
        type Out = u64;
        type Message = u64;
        fn handle_demand(&mut self, _: usize, _: &mut Context<'_, u64, u64>) {}
        fn handle_message(&mut self, n: u64, ctx: &mut Context<'_, u64, u64>) {
            ctx.emit(n);
        }
    }
    struct Slow {
        entered: Sender<()>,
        release: crossbeam_channel::Receiver<()>,
        handled: Arc<std::sync::atomic::AtomicU64>,
    }
    impl stageflow::ProducerConsumer for Slow {
        type In = u64;
        type Out = u64;
        type Message = ();
        fn handle_events(&mut self, events: Events<'_, u64>, ctx: &mut Context<'_, u64>) {
            self.handled
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            ctx.emit_all(events);
            let _ = self.entered.send(());
            let _ = self.release.recv_timeout(common::LIMIT);
        }
    }
    let p = stageflow::producer(OnCast).spawn().unwrap();
    let (entered, has_entered) = crossbeam_channel::unbounded();
    let (release, released) = crossbeam_channel::unbounded();
    let handled = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let pc = stageflow::producer_consumer(Slow {
        entered,
        release: released,
        handled: handled.clone(),
    })
    .subscribe_to(&p, SubscribeOptions::new().max_demand(10))
    .unwrap()
    .spawn()
    .unwrap();
    let (mut rec, _rx) = Recorder::<u64>::new();
    rec.mode = stageflow::DemandMode::Manual;
    let c = stageflow::consumer(rec).spawn().unwrap();
    let sub = c.subscribe_to(&pc, SubscribeOptions::new()).unwrap();
    // Five messages of one event each, every one received (and queued) before the next is
    // sent, so none merges with another.
    for n in 1..=5u64 {
        p.cast(n).unwrap();
        let deadline = std::time::Instant::now() + common::LIMIT;
        while pc.counters().events_in < n {
            assert!(
                std::time::Instant::now() < deadline,
                "the producer-consumer did not receive event {n} within {:?}",
                common::LIMIT
            );
            std::thread::yield_now();
        }
    }
    assert_eq!(handled.load(std::sync::atomic::Ordering::Relaxed), 0);
    c.ask(sub, 100).unwrap();
    next(&has_entered);
    pc.stop();
    release.send(()).unwrap();
    assert_eq!(joined(&pc), Reason::Shutdown);
    assert_eq!(
        handled.load(std::sync::atomic::Ordering::Relaxed),
        1,
        "the queued messages after the stop were handled"
    );
    let counters = pc.counters();
    assert_eq!(counters.events_in, 5);
    assert_eq!(counters.discarded, 4, "the four it never handled");
    c.stop();
    p.stop();
    joined(&c);
    joined(&p);
}
