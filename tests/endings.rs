//! Consumers that leave while a producer sends to them: whatever the producer could not
//! deliver is counted as discarded, the other consumers are never stranded, and a cancel is
//! never lost (a dropped `Stream`, a failed build's withdrawn subscriptions), even when the
//! producer's inbox is full.

mod common;

use std::time::Duration;

use common::{joined, next, Recorder, Report, LIMIT};
use crossbeam_channel::{Receiver, Sender};
use stageflow::dispatcher::{BroadcastDispatcher, PartitionDispatcher};
use stageflow::{
    BuildError, CancelMode, Context, Producer, Reason, Reply, SubscribeOptions, Subscription,
};

enum Cmd {
    /// Says it is blocked, then blocks until released; then emits `n` events.
    BlockThenEmit(Sender<()>, Receiver<()>, u64),
    Sync(Reply<()>),
    Noop,
}

/// Emits only on command; reports its cancels; can block in its first `handle_subscribe`.
struct Gated {
    next: u64,
    cancels: Sender<Reason>,
    subscribe_gate: Option<(Sender<()>, Receiver<()>)>,
}

impl Producer for Gated {
    type Out = u64;
    type Message = Cmd;

    fn handle_demand(&mut self, _: usize, _: &mut Context<'_, u64, Cmd>) {}

    fn handle_message(&mut self, msg: Cmd, ctx: &mut Context<'_, u64, Cmd>) {
        match msg {
            Cmd::BlockThenEmit(blocked, release, n) => {
                let _ = blocked.send(());
                release.recv_timeout(LIMIT).expect("released");
                ctx.emit_all(self.next..self.next + n);
                self.next += n;
            }
            Cmd::Sync(reply) => ctx.reply(reply, ()),
            Cmd::Noop => {}
        }
    }

    fn handle_subscribe(&mut self, _: &Subscription, _: &mut Context<'_, u64, Cmd>) {
        if let Some((blocked, release)) = self.subscribe_gate.take() {
            let _ = blocked.send(());
            release.recv_timeout(LIMIT).expect("released");
        }
    }

    fn handle_cancel(&mut self, _: &Subscription, reason: &Reason, _: &mut Context<'_, u64, Cmd>) {
        let _ = self.cancels.send(reason.clone());
    }
}

fn gated() -> (stageflow::ProducerHandle<Gated>, Receiver<Reason>) {
    gated_with(|b| b)
}

fn gated_with(
    f: impl FnOnce(
        stageflow::StageBuilder<Gated, stageflow::ProducerRole>,
    ) -> stageflow::StageBuilder<Gated, stageflow::ProducerRole>,
) -> (stageflow::ProducerHandle<Gated>, Receiver<Reason>) {
    let (tx, rx) = crossbeam_channel::unbounded();
    let p = f(stageflow::producer(Gated {
        next: 0,
        cancels: tx,
        subscribe_gate: None,
    }))
    .spawn()
    .unwrap();
    (p, rx)
}

/// Blocks the producer in a callback; returns the release and (after release) it emits `n`.
fn block(p: &stageflow::ProducerHandle<Gated>, n: u64) -> Sender<()> {
    let (blocked, is_blocked) = crossbeam_channel::bounded(1);
    let (release, released) = crossbeam_channel::bounded(1);
    p.cast(Cmd::BlockThenEmit(blocked, released, n)).unwrap();
    next(&is_blocked);
    release
}

#[test]
fn smoke() {
    let (p, _) = gated();
    p.call(Cmd::Sync, LIMIT).unwrap();
    p.stop();
    joined(&p);
}

#[test]
fn confirm_timeout_bounds_how_long_an_ending_stage_waits_for_a_stuck_producer() {
    let (p, _) = gated();
    let (rec, _rx) = Recorder::<u64>::new();
    let c = stageflow::consumer(rec)
        .confirm_timeout(Duration::ZERO)
        .subscribe_to(&p, SubscribeOptions::new().max_demand(10))
        .unwrap()
        .spawn()
        .unwrap();
    let release = block(&p, 5);
    // The producer cannot confirm; with no time to wait, the consumer ends at once (the fixed
    // wait it replaces was 2 s).
    let start = std::time::Instant::now();
    c.stop();
    assert_eq!(joined(&c), Reason::Shutdown);
    let took = start.elapsed();
    // Generous for a loaded machine, and still short of the old fixed 2 s.
    assert!(took < Duration::from_millis(1500), "took {took:?}");
    release.send(()).unwrap();
    p.call(Cmd::Sync, LIMIT).unwrap();
    assert_eq!(p.counters().discarded, 5, "counted by the producer");
    p.stop();
    joined(&p);
}

#[test]
fn events_sent_to_a_consumer_that_just_ended_are_counted_as_discarded() {
    let (p, _) = gated();
    let (rec, _rx) = Recorder::<u64>::new();
    let c = stageflow::consumer(rec)
        .subscribe_to(&p, SubscribeOptions::new().max_demand(100))
        .unwrap()
        .spawn()
        .unwrap();
    let release = block(&p, 50);
    // The consumer ends while the producer cannot hear of it (it waits a while for the
    // producer's confirmation, then gives up): its inbox is gone.
    c.stop();
    assert_eq!(joined(&c), Reason::Shutdown);
    release.send(()).unwrap();
    p.call(Cmd::Sync, LIMIT).unwrap();
    let counters = p.counters();
    assert_eq!(
        (counters.events_out, counters.discarded, counters.buffered),
        (0, 50, 0),
        "50 emitted: none sent, all counted as discarded"
    );
    p.stop();
    joined(&p);
}

#[test]
fn a_broadcast_whose_slowest_consumer_vanished_mid_dispatch_serves_the_others() {
    let (p, _) = gated_with(|b| b.dispatcher(BroadcastDispatcher::new()));
    let (fast, fast_rx) = Recorder::<u64>::new();
    let fast = stageflow::consumer(fast)
        .subscribe_to(&p, SubscribeOptions::new().max_demand(100))
        .unwrap()
        .spawn()
        .unwrap();
    let (slow, _slow_rx) = Recorder::<u64>::new();
    let slow = stageflow::consumer(slow)
        .subscribe_to(
            &p,
            SubscribeOptions::new()
                .max_demand(2)
                .cancel(CancelMode::Temporary),
        )
        .unwrap()
        .spawn()
        .unwrap();
    let release = block(&p, 60);
    slow.stop();
    joined(&slow);
    release.send(()).unwrap();
    // The fast consumer gets all 60, although the slowest (demand 2) set the pace when the
    // dispatch began.
    let mut got = Vec::new();
    while got.len() < 60 {
        if let Report::Batch(b) = next(&fast_rx) {
            got.extend(b);
        }
    }
    assert_eq!(got, (0..60).collect::<Vec<_>>());
    p.stop();
    joined(&p);
    joined(&fast);
}

#[test]
fn dropping_a_stream_cancels_even_when_the_producer_inbox_is_full() {
    let (p, cancels) = gated_with(|b| b.inbox_capacity(1));
    let stream = stageflow::stream(&p, SubscribeOptions::new().max_demand(5)).unwrap();
    let release = block(&p, 0);
    // Fill the one-slot inbox.
    let filler = {
        let p = p.clone();
        std::thread::spawn(move || p.call(Cmd::Sync, LIMIT))
    };
    std::thread::sleep(Duration::from_millis(20));
    // Dropping waits for the producer's confirmation: do it on another thread, and release the
    // producer once the drop has had time to send its cancel.
    let dropper = std::thread::spawn(move || drop(stream));
    std::thread::sleep(Duration::from_millis(20));
    release.send(()).unwrap();
    assert_eq!(next(&cancels), Reason::Normal, "the cancel was not lost");
    dropper.join().unwrap();
    filler.join().unwrap().unwrap();
    assert!(p.counters().subscriptions.is_empty());
    p.stop();
    joined(&p);
}

#[test]
fn a_failed_build_withdraws_the_subscriptions_accepted_after_the_refused_one() {
    // The requests go out together: q refuses the first, p accepts the second, and the
    // build must withdraw what p accepted.
    let q = stageflow::from_iter(0u64..)
        .dispatcher(PartitionDispatcher::new(1, |_: &u64| Some(0)).unwrap())
        .spawn()
        .unwrap();
    let p = stageflow::from_iter(0u64..).spawn().unwrap();
    let (rec, _rx) = Recorder::<u64>::new();
    let err = stageflow::consumer(rec)
        // No partition given: the partitioned producer refuses.
        .subscribe_to(&q, SubscribeOptions::new())
        .unwrap()
        .subscribe_to(&p, SubscribeOptions::new())
        .unwrap()
        .spawn()
        .map(|_| ())
        .unwrap_err();
    assert!(matches!(err, BuildError::Subscribe(_)), "{err}");
    let deadline = std::time::Instant::now() + LIMIT;
    while !p.counters().subscriptions.is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "p still holds the subscription"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    for s in [p.stage_ref(), q.stage_ref()] {
        s.stop();
        s.join();
    }
}

#[test]
fn a_failed_build_withdraws_its_subscriptions_even_from_a_full_inbox() {
    // p accepts the first subscription, then blocks in handle_subscribe with its one-slot
    // inbox full; q refuses the second: the build fails and must withdraw the first.
    let (cancels_tx, cancels) = crossbeam_channel::unbounded();
    let (blocked, is_blocked) = crossbeam_channel::bounded(1);
    let (release_p, released_p) = crossbeam_channel::bounded(1);
    let p = stageflow::producer(Gated {
        next: 0,
        cancels: cancels_tx,
        subscribe_gate: Some((blocked, released_p)),
    })
    .inbox_capacity(1)
    .spawn()
    .unwrap();
    let (q, _) =
        gated_with(|b| b.dispatcher(PartitionDispatcher::new(1, |_: &u64| Some(0)).unwrap()));
    let release_q = block(&q, 0);
    let (rec, _rx) = Recorder::<u64>::new();
    let builder = stageflow::consumer(rec)
        .subscribe_to(&p, SubscribeOptions::new())
        .unwrap()
        // No partition given: the partitioned producer refuses.
        .subscribe_to(&q, SubscribeOptions::new())
        .unwrap();
    let build = std::thread::spawn(move || builder.spawn().map(|_| ()));
    next(&is_blocked);
    for _ in 0..100 {
        if p.try_cast(Cmd::Noop).is_err() {
            break;
        }
    }
    assert!(p.try_cast(Cmd::Noop).is_err(), "the inbox is full");
    release_q.send(()).unwrap();
    let err = build.join().unwrap().unwrap_err();
    assert!(matches!(err, BuildError::Subscribe(_)), "{err}");
    release_p.send(()).unwrap();
    // The producer that accepted sees the withdrawal.
    assert_eq!(next(&cancels), Reason::Shutdown);
    p.call(Cmd::Sync, LIMIT).unwrap();
    assert!(p.counters().subscriptions.is_empty());
    for s in [p.stage_ref(), q.stage_ref()] {
        s.stop();
        s.join();
    }
}

#[test]
fn an_ended_partition_producer_reports_nothing_buffered() {
    // Events queued for a partition nobody took are discarded at the end, and no longer shown
    // as buffered.
    let (p, _) =
        gated_with(|b| b.dispatcher(PartitionDispatcher::new(2, |x: &u64| Some(x % 2)).unwrap()));
    let (rec, _rx) = Recorder::<u64>::new();
    let c = stageflow::consumer(rec)
        .subscribe_to(
            &p,
            SubscribeOptions::new()
                .partition(0u64)
                .max_demand(100)
                .cancel(CancelMode::Temporary),
        )
        .unwrap()
        .spawn()
        .unwrap();
    let release = block(&p, 20);
    release.send(()).unwrap();
    p.call(Cmd::Sync, LIMIT).unwrap();
    p.stop();
    joined(&p);
    let counters = p.counters();
    assert_eq!(counters.buffered, 0);
    assert_eq!(counters.events_out + counters.discarded, 20);
    c.stop();
    joined(&c);
}

/// Panics on the event `at`; reports how many events it handled before.
struct PanicsAt {
    at: u64,
    handled: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl stageflow::Consumer for PanicsAt {
    type In = u64;
    type Message = ();

    fn handle_events(
        &mut self,
        events: stageflow::Events<'_, u64>,
        _: &mut stageflow::ConsumerContext<'_>,
    ) {
        for e in events {
            if e == self.at {
                panic!("boom at {e}");
            }
            self.handled
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

#[test]
fn a_consumer_that_panics_mid_message_counts_the_rest_as_discarded() {
    // One message of 100 events, cut into batches of 10; the panic comes in the third batch.
    let (p, _) = gated();
    let handled = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let c = stageflow::consumer(PanicsAt {
        at: 25,
        handled: handled.clone(),
    })
    .subscribe_to(&p, SubscribeOptions::new().max_demand(100).min_demand(90))
    .unwrap()
    .spawn()
    .unwrap();
    let release = block(&p, 100);
    release.send(()).unwrap();
    assert!(matches!(joined(&c), Reason::Panicked(_)));
    let counters = c.counters();
    assert_eq!(counters.events_in, 100);
    // 25 handled, the batch it panicked in (20..30) was its own, the 70 after it discarded.
    assert_eq!(handled.load(std::sync::atomic::Ordering::Relaxed), 25);
    assert_eq!(counters.discarded, 70);
    p.stop();
    joined(&p);
}

/// Emits `n` events when told, then finishes.
struct EmitThenFinish;

impl Producer for EmitThenFinish {
    type Out = u64;
    type Message = u64;

    fn handle_demand(&mut self, _: usize, _: &mut Context<'_, u64, u64>) {}

    fn handle_message(&mut self, n: u64, ctx: &mut Context<'_, u64, u64>) {
        ctx.emit_all(0..n);
        ctx.finish();
    }
}

#[test]
fn a_finishing_producer_whose_consumers_all_left_ends_and_counts_the_rest() {
    let p = stageflow::producer(EmitThenFinish).spawn().unwrap();
    let (mut rec, rx) = Recorder::<u64>::new();
    rec.mode = stageflow::DemandMode::Manual;
    let c = stageflow::consumer(rec)
        .subscribe_to(
            &p,
            SubscribeOptions::new()
                .max_demand(10)
                .cancel(CancelMode::Temporary),
        )
        .unwrap()
        .spawn()
        .unwrap();
    // 50 events for a consumer that asked 10: 40 wait in the buffer while it finishes.
    let sub = c.counters().subscriptions[0].id;
    c.ask(sub, 10).unwrap();
    p.cast(50).unwrap();
    let mut got = 0;
    while got < 10 {
        if let Report::Batch(b) = next(&rx) {
            got += b.len();
        }
    }
    // The consumer leaves without asking again: nobody can take the rest.
    c.cancel(sub, Reason::Normal).unwrap();
    assert_eq!(joined(&p), Reason::Normal);
    let counters = p.counters();
    assert_eq!(
        (counters.events_out, counters.discarded, counters.buffered),
        (10, 40, 0)
    );
    c.stop();
    joined(&c);
}
