//! Control from handles reaches a running stage promptly whatever the event traffic: cancel,
//! ask, subscribe (which returns only once both sides hold the subscription), resubscribe; a
//! call racing a stop never waits out its timeout; counters read after a call show what the
//! stage did before replying; self-subscriptions and duplicate broadcast subscriptions are
//! refused.

mod common;

use std::time::{Duration, Instant};

use common::{joined, next, Numbers, Recorder, Report, LIMIT};
use stageflow::dispatcher::BroadcastDispatcher;
use stageflow::fns::Map;
use stageflow::{
    BuildError, CallError, CancelMode, Context, ControlError, DemandMode, Producer, Reason, Reply,
    SubscribeError, SubscribeOptions, Subscription,
};

const PROMPT: Duration = Duration::from_secs(1);

/// Emits exactly what it is asked for, forever; answers pings; can emit on command.
struct Eager {
    next: u64,
}

enum Cmd {
    Ping(Reply<()>),
    Emit(u64, Reply<()>),
    /// Emits without a reply.
    EmitQuietly(u64),
    /// Says it is blocked, then blocks until released.
    Block(
        crossbeam_channel::Sender<()>,
        crossbeam_channel::Receiver<()>,
    ),
    Noop(u32),
}

impl Producer for Eager {
    type Out = u64;
    type Message = Cmd;

    fn handle_demand(&mut self, demand: usize, ctx: &mut Context<'_, u64, Cmd>) {
        ctx.emit_all(self.next..self.next + demand as u64);
        self.next += demand as u64;
    }

    fn handle_message(&mut self, msg: Cmd, ctx: &mut Context<'_, u64, Cmd>) {
        match msg {
            Cmd::Ping(reply) => ctx.reply(reply, ()),
            Cmd::Emit(n, reply) => {
                ctx.emit_all(self.next..self.next + n);
                self.next += n;
                ctx.reply(reply, ());
            }
            Cmd::EmitQuietly(n) => {
                ctx.emit_all(self.next..self.next + n);
                self.next += n;
            }
            Cmd::Block(blocked, release) => {
                let _ = blocked.send(());
                release.recv_timeout(LIMIT).expect("released");
            }
            Cmd::Noop(_) => {}
        }
    }
}

/// Like [`Eager`], but emits only on command.
struct Commanded(Eager);

impl Producer for Commanded {
    type Out = u64;
    type Message = Cmd;

    fn handle_demand(&mut self, _: usize, _: &mut Context<'_, u64, Cmd>) {}

    fn handle_message(&mut self, msg: Cmd, ctx: &mut Context<'_, u64, Cmd>) {
        self.0.handle_message(msg, ctx)
    }
}

fn eager() -> stageflow::ProducerHandle<Eager> {
    stageflow::producer(Eager { next: 0 }).spawn().unwrap()
}

fn commanded() -> stageflow::ProducerHandle<Commanded> {
    stageflow::producer(Commanded(Eager { next: 0 }))
        .spawn()
        .unwrap()
}

#[test]
fn smoke() {
    let p = eager();
    p.call(Cmd::Ping, LIMIT).unwrap();
    p.stop();
    assert_eq!(joined(&p), Reason::Shutdown);
}

#[test]
fn a_cancel_reaches_a_consumer_whose_inbox_traffic_keeps_full() {
    // Four producers race for a one-slot inbox of a slow consumer: the runtime's own sends
    // take every freed slot. A cancel from a handle must still get through at once.
    let producers: Vec<_> = (0..4).map(|_| eager()).collect();
    let (mut rec, rx) = Recorder::<u64>::new();
    rec.delay = Duration::from_millis(1);
    let mut builder = stageflow::consumer(rec).inbox_capacity(1);
    for p in &producers {
        builder = builder
            .subscribe_to(
                p,
                SubscribeOptions::new()
                    .max_demand(4)
                    .min_demand(3)
                    .cancel(CancelMode::Temporary),
            )
            .unwrap();
    }
    let c = builder.spawn().unwrap();
    while c.counters().events_in < 100 {
        let _ = next(&rx);
    }
    for sub in c.counters().subscriptions.iter().map(|s| s.id) {
        let start = Instant::now();
        c.cancel(sub, Reason::Normal).unwrap();
        assert!(
            start.elapsed() < PROMPT,
            "cancel waited {:?}",
            start.elapsed()
        );
    }
    // Every cancel takes effect: the consumer sees each subscription end.
    let deadline = Instant::now() + LIMIT;
    let mut ended = 0;
    while ended < 4 {
        assert!(
            Instant::now() < deadline,
            "only {ended} of 4 cancels took effect"
        );
        if let Report::Cancelled(r) = next(&rx) {
            assert_eq!(r, Reason::Normal);
            ended += 1;
        }
    }
    c.stop();
    joined(&c);
    for p in &producers {
        p.stop();
        joined(p);
    }
}

#[test]
fn subscribe_to_returns_an_id_that_works_at_once() {
    // A manual consumer's first ask, made right after subscribe_to returns, is never lost.
    for _ in 0..100 {
        let p = eager();
        let (mut rec, rx) = Recorder::<u64>::new();
        rec.mode = DemandMode::Manual;
        let c = stageflow::consumer(rec).spawn().unwrap();
        let sub = c
            .subscribe_to(&p, SubscribeOptions::new().max_demand(10))
            .unwrap();
        c.ask(sub, 3).unwrap();
        assert_eq!(next(&rx), Report::Subscribed);
        assert_eq!(next(&rx), Report::Batch(vec![0, 1, 2]));
        // And a cancel right away is never lost either.
        let sub2 = c
            .subscribe_to(&p, SubscribeOptions::new().cancel(CancelMode::Temporary))
            .unwrap();
        c.cancel(sub2, Reason::Normal).unwrap();
        assert_eq!(next(&rx), Report::Subscribed);
        assert_eq!(next(&rx), Report::Cancelled(Reason::Normal));
        p.stop();
        joined(&p);
        joined(&c);
    }
}

#[test]
fn build_time_subscriptions_work_at_once_too() {
    for _ in 0..100 {
        let p = eager();
        let (mut rec, rx) = Recorder::<u64>::new();
        rec.mode = DemandMode::Manual;
        let c = stageflow::consumer(rec)
            .subscribe_to(&p, SubscribeOptions::new())
            .unwrap()
            .spawn()
            .unwrap();
        let sub = c.counters().subscriptions[0].id;
        c.ask(sub, 2).unwrap();
        assert_eq!(next(&rx), Report::Subscribed);
        assert_eq!(next(&rx), Report::Batch(vec![0, 1]));
        p.stop();
        joined(&p);
        joined(&c);
    }
}

/// Reports its cancels' reasons; `slow` sleeps a little in every `handle_demand`.
struct CancelSpy {
    next: u64,
    tx: crossbeam_channel::Sender<Reason>,
    slow: bool,
}

impl Producer for CancelSpy {
    type Out = u64;
    type Message = ();

    fn handle_demand(&mut self, demand: usize, ctx: &mut Context<'_, u64>) {
        if self.slow {
            std::thread::sleep(Duration::from_millis(1));
        }
        ctx.emit_all(self.next..self.next + demand as u64);
        self.next += demand as u64;
    }

    fn handle_cancel(&mut self, _: &Subscription, reason: &Reason, _: &mut Context<'_, u64>) {
        let _ = self.tx.send(reason.clone());
    }
}

#[test]
fn resubscribe_cancels_then_subscribes() {
    let (tx, cancels) = crossbeam_channel::unbounded();
    let old = stageflow::producer(CancelSpy {
        next: 0,
        tx,
        slow: false,
    })
    .spawn()
    .unwrap();
    let new = stageflow::producer(CancelSpy {
        next: 1000,
        tx: crossbeam_channel::unbounded().0,
        slow: false,
    })
    .spawn()
    .unwrap();
    let (rec, rx) = Recorder::<u64>::new();
    let c = stageflow::consumer(rec)
        .subscribe_to(
            &old,
            SubscribeOptions::new()
                .max_demand(2)
                .cancel(CancelMode::Temporary),
        )
        .unwrap()
        .spawn()
        .unwrap();
    let first = c.counters().subscriptions[0].id;
    let second = c
        .resubscribe(
            first,
            Reason::Normal,
            &new,
            SubscribeOptions::new().max_demand(2),
        )
        .unwrap();
    assert_ne!(first, second);
    assert_eq!(next(&cancels), Reason::Normal);
    // Events from the new producer arrive, and the consumer hears that the old subscription
    // ended (its `handle_cancel` runs once the subscription is gone from its counters).
    let (mut new_events, mut old_gone) = (false, false);
    while !(new_events && old_gone) {
        match next(&rx) {
            Report::Batch(b) if b[0] >= 1000 => new_events = true,
            Report::Cancelled(r) => {
                assert_eq!(r, Reason::Normal);
                old_gone = true;
            }
            _ => {}
        }
    }
    let subs = c.counters().subscriptions;
    assert_eq!(subs.len(), 1);
    assert_eq!(subs[0].id, second);
    for s in [&old, &new] {
        s.stop();
        joined(s);
    }
    joined(&c);
}

#[test]
fn a_stage_cannot_subscribe_to_itself() {
    let p = eager();
    let pc = stageflow::producer_consumer(Map::new(|x: u64| x))
        .subscribe_to(&p, SubscribeOptions::new())
        .unwrap()
        .spawn()
        .unwrap();
    let err = pc
        .subscribe_to(&pc, SubscribeOptions::new())
        .expect_err("a self-subscription");
    assert_eq!(
        err,
        SubscribeError::SelfSubscription {
            stage: pc.name().to_string()
        }
    );
    assert!(
        err.to_string().contains("cannot subscribe to itself"),
        "{err}"
    );
    assert_eq!(pc.outcome(), None, "the stage keeps running");
    p.stop();
    joined(&p);
    pc.stop();
    joined(&pc);
}

#[test]
fn a_second_subscription_to_a_broadcast_is_refused() {
    let (numbers, _) = Numbers::new(None);
    let p = stageflow::producer(numbers)
        .dispatcher(BroadcastDispatcher::new())
        .spawn()
        .unwrap();
    let (rec, rx) = Recorder::<u64>::new();
    let c = stageflow::consumer(rec)
        .subscribe_to(&p, SubscribeOptions::new().max_demand(5))
        .unwrap()
        .spawn()
        .unwrap();
    let err = c
        .subscribe_to(&p, SubscribeOptions::new().max_demand(5))
        .expect_err("already subscribed");
    assert!(
        matches!(&err, SubscribeError::Rejected { message, .. } if message.contains("already subscribed")),
        "{err}"
    );
    // The first subscription is kept, and nothing arrives twice.
    let mut seen = Vec::new();
    while seen.len() < 30 {
        if let Report::Batch(b) = next(&rx) {
            seen.extend(b);
        }
    }
    assert!(seen.windows(2).all(|w| w[0] + 1 == w[1]), "{seen:?}");
    assert_eq!(c.counters().subscriptions.len(), 1);
    assert_eq!(c.outcome(), None);
    p.stop();
    joined(&p);
    joined(&c);
}

#[test]
fn a_temporary_subscription_to_an_ended_producer_does_not_stop_the_build() {
    let (numbers, _) = Numbers::new(None);
    let gone = stageflow::producer(numbers).spawn().unwrap();
    gone.stop();
    joined(&gone);
    let (rec, rx) = Recorder::<u64>::new();
    let c = stageflow::consumer(rec)
        .subscribe_to(&gone, SubscribeOptions::new().cancel(CancelMode::Temporary))
        .unwrap()
        .spawn()
        .expect("a temporary subscription is optional");
    match next(&rx) {
        Report::Cancelled(Reason::Error(msg)) => assert!(msg.contains("noproc"), "{msg}"),
        other => panic!("expected the subscription to fail, got {other:?}"),
    }
    assert_eq!(c.outcome(), None);
    c.stop();
    joined(&c);
    // Permanent and transient still fail the build.
    for mode in [CancelMode::Permanent, CancelMode::Transient] {
        let (rec, _rx) = Recorder::<u64>::new();
        let err = stageflow::consumer(rec)
            .subscribe_to(&gone, SubscribeOptions::new().cancel(mode))
            .unwrap()
            .spawn()
            .unwrap_err();
        assert!(
            matches!(
                err,
                BuildError::Subscribe(SubscribeError::ProducerGone { .. })
            ),
            "{err}"
        );
    }
}

#[test]
fn dropping_a_stream_early_cancels_with_normal() {
    // A slow producer and a small max_demand: asks are in flight when the stream is dropped.
    for slow in [false, true] {
        for max in [1, 2, 5, 1000] {
            for _ in 0..10 {
                let (tx, cancels) = crossbeam_channel::unbounded();
                let p = stageflow::producer(CancelSpy { next: 0, tx, slow })
                    .spawn()
                    .unwrap();
                let got: Vec<u64> = stageflow::stream(&p, SubscribeOptions::new().max_demand(max))
                    .unwrap()
                    .take(3)
                    .collect();
                assert_eq!(got, vec![0, 1, 2]);
                assert_eq!(
                    next(&cancels),
                    Reason::Normal,
                    "max_demand {max}, slow {slow}"
                );
                p.stop();
                joined(&p);
            }
        }
    }
}

#[test]
fn a_call_racing_a_stop_never_waits_out_its_timeout() {
    for _ in 0..20 {
        let p = eager();
        let callers: Vec<_> = (0..4)
            .map(|_| {
                let p = p.clone();
                std::thread::spawn(move || loop {
                    match p.call(Cmd::Ping, Duration::from_secs(60)) {
                        Ok(()) => continue,
                        Err(e) => return e,
                    }
                })
            })
            .collect();
        p.call(Cmd::Ping, LIMIT).unwrap();
        p.stop();
        let start = Instant::now();
        for caller in callers {
            assert_eq!(caller.join().unwrap(), CallError::Stopped);
        }
        assert!(
            start.elapsed() < PROMPT,
            "callers waited {:?}",
            start.elapsed()
        );
        joined(&p);
    }
}

/// Answers pings; says when it is being dropped, and takes its time about it.
struct SlowToDrop {
    dropping: crossbeam_channel::Sender<()>,
}

impl Producer for SlowToDrop {
    type Out = u64;
    type Message = Cmd;

    fn handle_demand(&mut self, _: usize, _: &mut Context<'_, u64, Cmd>) {}

    fn handle_message(&mut self, msg: Cmd, ctx: &mut Context<'_, u64, Cmd>) {
        if let Cmd::Ping(reply) = msg {
            ctx.reply(reply, ());
        }
    }
}

impl Drop for SlowToDrop {
    fn drop(&mut self) {
        let _ = self.dropping.send(());
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_call_that_reaches_a_stage_after_its_last_look_at_its_inbox_returns_stopped() {
    // While the stage's own value is dropped, its inbox is no longer read but still open: a
    // call sent then must not wait out its timeout.
    let (tx, dropping) = crossbeam_channel::unbounded();
    let p = stageflow::producer(SlowToDrop { dropping: tx })
        .spawn()
        .unwrap();
    p.call(Cmd::Ping, LIMIT).unwrap();
    p.stop();
    next(&dropping);
    let start = Instant::now();
    assert_eq!(
        p.call(Cmd::Ping, Duration::from_secs(60)),
        Err(CallError::Stopped)
    );
    assert!(start.elapsed() < PROMPT, "waited {:?}", start.elapsed());
    joined(&p);
}

#[test]
fn a_stage_that_waits_has_published_its_buffered_counter() {
    // Casts, not calls: nothing replies, so only the stage's own publication before it waits
    // can show the buffered events. (This producer emits only when told to.)
    let p = commanded();
    for n in 1..=50u64 {
        p.cast(Cmd::EmitQuietly(n)).unwrap();
    }
    let expected = 50 * 51 / 2;
    let deadline = Instant::now() + LIMIT;
    while p.counters().buffered != expected {
        assert!(
            Instant::now() < deadline,
            "buffered still {} after {LIMIT:?}, expected {expected}",
            p.counters().buffered
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    p.stop();
    joined(&p);
}

#[test]
fn a_busy_stage_publishes_its_buffered_counter_without_waiting() {
    // The stage is held in a callback while 40 casts queue behind it; released, it handles
    // them back to back (its inbox is never empty, so it never waits) and then blocks in a
    // callback again. It has published a count on the way, every few turns, though nothing
    // replied and it did not wait: the figure is no older than those turns.
    let p = commanded();
    let (blocked_tx, blocked_rx) = crossbeam_channel::bounded(2);
    let (release_tx, release_rx) = crossbeam_channel::bounded(2);
    let hold = || Cmd::Block(blocked_tx.clone(), release_rx.clone());
    p.cast(hold()).unwrap();
    blocked_rx.recv_timeout(LIMIT).expect("held the first time");
    assert_eq!(p.counters().buffered, 0);
    for _ in 0..40 {
        p.cast(Cmd::EmitQuietly(1)).unwrap();
    }
    p.cast(hold()).unwrap();
    release_tx.send(()).unwrap();
    blocked_rx
        .recv_timeout(LIMIT)
        .expect("held the second time");
    let seen = p.counters().buffered;
    assert!(
        (1..=40).contains(&seen),
        "a busy stage published {seen} of the 40 events it buffered"
    );
    release_tx.send(()).unwrap();
    p.stop();
    joined(&p);
}

#[test]
fn counters_after_a_call_show_what_the_stage_did_before_replying() {
    // With no consumer, events go to the buffer, and the counter says so the moment the call
    // returns. (This producer emits only when told to.)
    let p = commanded();
    for n in 1..=50u64 {
        p.call(|r| Cmd::Emit(n, r), LIMIT).unwrap();
        assert_eq!(p.counters().buffered, n * (n + 1) / 2);
    }
    // With a consumer that has demand, they are out by then.
    let (rec, rx) = Recorder::<u64>::new();
    let c = stageflow::consumer(rec)
        .subscribe_to(&p, SubscribeOptions::new().max_demand(5000))
        .unwrap()
        .spawn()
        .unwrap();
    assert_eq!(next(&rx), Report::Subscribed);
    let mut got = 0;
    while got < 1275 {
        // The buffer, delivered on the first ask.
        if let Report::Batch(b) = next(&rx) {
            got += b.len();
        }
    }
    // The producer counts events as sent once they are in the consumer's inbox, just after
    // the send: the consumer can hold them before the count moves. A call is the point where
    // the counters show everything the stage did before it.
    p.call(Cmd::Ping, LIMIT).unwrap();
    let out = p.counters().events_out;
    assert_eq!(out, 1275);
    p.call(|r| Cmd::Emit(9, r), LIMIT).unwrap();
    let after = p.counters();
    assert_eq!(after.events_out + after.buffered, out + 9);
    p.stop();
    joined(&p);
    joined(&c);
}

#[test]
fn control_to_an_ended_stage_fails_naming_it() {
    // Cancel, ask and set_demand cannot find an inbox full: they fail only once the stage has
    // ended, and say which stage.
    let p = eager();
    let (mut rec, _rx) = Recorder::<u64>::new();
    rec.mode = DemandMode::Manual;
    let c = stageflow::consumer(rec).spawn().unwrap();
    let sub = c.subscribe_to(&p, SubscribeOptions::new()).unwrap();
    c.stop();
    assert_eq!(joined(&c), Reason::Shutdown);
    let stopped = ControlError::Stopped {
        stage: c.name().to_owned(),
    };
    assert_eq!(c.ask(sub, 1), Err(stopped.clone()));
    assert_eq!(c.cancel(sub, Reason::Normal), Err(stopped.clone()));
    assert_eq!(
        stopped.to_string(),
        format!("control failed: stage {} has stopped", c.name())
    );
    p.stop();
    joined(&p);
    assert_eq!(
        p.set_demand(stageflow::ProducerDemand::Forward),
        Err(ControlError::Stopped {
            stage: p.name().to_owned()
        })
    );
}

#[test]
fn switching_to_forward_can_finish_a_producer_at_once() {
    // Replaying the accumulated demand finishes the producer (nothing to emit): it ends, with
    // no further message to wake it.
    for _ in 0..50 {
        let p = stageflow::from_iter(0..0u64)
            .demand(stageflow::ProducerDemand::Accumulate)
            .spawn()
            .unwrap();
        let (rec, _rx) = Recorder::<u64>::new();
        let c = stageflow::consumer(rec)
            .subscribe_to(&p, SubscribeOptions::new())
            .unwrap()
            .spawn()
            .unwrap();
        p.set_demand(stageflow::ProducerDemand::Forward).unwrap();
        assert_eq!(joined(&p), Reason::Normal);
        assert_eq!(joined(&c), Reason::Normal);
    }
}

#[test]
fn cast_timeout_gives_up_on_a_full_inbox_and_hands_the_message_back() {
    // A producer blocked in a callback, its one-slot inbox full: a cast cannot get in.
    let p = stageflow::producer(Commanded(Eager { next: 0 }))
        .inbox_capacity(1)
        .spawn()
        .unwrap();
    let (blocked, is_blocked) = crossbeam_channel::bounded(1);
    let (release, released) = crossbeam_channel::bounded(1);
    p.cast(Cmd::Block(blocked, released)).unwrap();
    next(&is_blocked);
    while p.try_cast(Cmd::Noop(0)).is_ok() {}
    let start = Instant::now();
    match p.cast_timeout(Cmd::Noop(7), Duration::from_millis(50)) {
        Err(stageflow::CastError::Full(Cmd::Noop(7))) => {}
        Err(e) => panic!("expected Full with the message back, got {e:?}"),
        Ok(()) => panic!("the inbox was full"),
    }
    assert!(start.elapsed() >= Duration::from_millis(50));
    release.send(()).unwrap();
    // Once there is room, it gets in.
    p.cast_timeout(Cmd::Noop(8), LIMIT).unwrap();
    p.stop();
    joined(&p);
}
