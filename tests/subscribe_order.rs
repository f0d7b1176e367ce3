//! A subscribe made through a running stage's handle takes effect in order with that stage's
//! other control: a cancel then a subscribe to the same broadcasting producer stay in that
//! order; a cancel or an ask made right after a subscribe returned works even when the
//! producer's confirmation has not reached the stage yet; a subscribe that fails leaves no
//! subscription behind.

mod common;

use std::time::{Duration, Instant};

use common::{joined, next, Recorder, Report, LIMIT};
use crossbeam_channel::{Receiver, Sender};
use stageflow::dispatcher::BroadcastDispatcher;
use stageflow::{
    CancelMode, Consumer, ConsumerContext, Context, DemandMode, Events, Producer, Reason, Reply,
    SubscribeError, SubscribeOptions, Subscription,
};

/// Emits what it is asked for, counting up; answers pings.
struct Counting(u64);

impl Producer for Counting {
    type Out = u64;
    type Message = Reply<()>;
    fn handle_demand(&mut self, n: usize, ctx: &mut Context<'_, u64, Reply<()>>) {
        ctx.emit_all(self.0..self.0 + n as u64);
        self.0 += n as u64;
    }
    fn handle_message(&mut self, reply: Reply<()>, ctx: &mut Context<'_, u64, Reply<()>>) {
        ctx.reply(reply, ());
    }
}

/// Waits until `cond` holds, failing the test after [`LIMIT`].
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + LIMIT;
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: not within {LIMIT:?}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn smoke() {
    let p = stageflow::producer(Counting(0)).spawn().unwrap();
    let (rec, rx) = Recorder::<u64>::new();
    let c = stageflow::consumer(rec).spawn().unwrap();
    let id = c
        .subscribe_to(&p, SubscribeOptions::new().max_demand(3).min_demand(0))
        .unwrap();
    assert_eq!(next(&rx), Report::Subscribed);
    assert_eq!(next(&rx), Report::Batch(vec![0, 1, 2]));
    assert_eq!(c.counters().subscriptions[0].id, id);
    p.stop();
    joined(&p);
    joined(&c);
}

#[test]
fn a_cancel_then_a_subscribe_to_a_broadcast_stay_in_that_order() {
    let p = stageflow::producer(Counting(0))
        .dispatcher(BroadcastDispatcher::new())
        .spawn()
        .unwrap();
    let (rec, _rx) = Recorder::<u64>::new();
    let c = stageflow::consumer(rec).spawn().unwrap();
    let opts = || {
        SubscribeOptions::new()
            .max_demand(5)
            .cancel(CancelMode::Temporary)
    };
    let mut id = c.subscribe_to(&p, opts()).unwrap();
    for round in 0..20 {
        c.cancel(id, Reason::Normal).unwrap();
        id = c
            .subscribe_to(&p, opts())
            .unwrap_or_else(|e| panic!("round {round}: a subscribe right after a cancel: {e}"));
    }
    for round in 0..20 {
        id = c
            .resubscribe(id, Reason::Normal, &p, opts())
            .unwrap_or_else(|e| panic!("round {round}: resubscribe: {e}"));
    }
    // One subscription is left on either side: the last one.
    eventually("the cancels reach both sides", || {
        p.counters().subscriptions.len() == 1 && c.counters().subscriptions.len() == 1
    });
    assert_eq!(c.counters().subscriptions[0].id, id);
    assert_eq!(c.outcome(), None);
    p.stop();
    joined(&p);
    c.stop();
    joined(&c);
}

/// A consumer that says when it is in `handle_events` and waits there until released, once
/// per batch.
struct Gated {
    entered: Sender<Vec<u64>>,
    release: Receiver<()>,
    reports: Sender<Report<u64>>,
}

impl Consumer for Gated {
    type In = u64;
    type Message = ();
    fn handle_events(&mut self, events: Events<'_, u64>, _: &mut ConsumerContext<'_>) {
        let _ = self.entered.send(events.collect());
        self.release.recv_timeout(LIMIT).expect("released");
    }
    fn handle_subscribe(&mut self, s: &Subscription, _: &mut ConsumerContext<'_>) -> DemandMode {
        let _ = self.reports.send(Report::Subscribed);
        if s.peer().starts_with("manual") {
            DemandMode::Manual
        } else {
            DemandMode::Automatic
        }
    }
    fn handle_cancel(&mut self, _: &Subscription, reason: &Reason, _: &mut ConsumerContext<'_>) {
        let _ = self.reports.send(Report::Cancelled(reason.clone()));
    }
}

/// Emits on command only.
struct OnCommand(u64);

impl Producer for OnCommand {
    type Out = u64;
    type Message = Reply<()>;
    fn handle_demand(&mut self, _: usize, _: &mut Context<'_, u64, Reply<()>>) {}
    fn handle_message(&mut self, reply: Reply<()>, ctx: &mut Context<'_, u64, Reply<()>>) {
        ctx.emit(self.0);
        self.0 += 1;
        ctx.reply(reply, ());
    }
}

/// A consumer `c` stuck in `handle_events` behind which the confirmation of a new
/// subscription to a producer named `name` waits: `subscribe_to` returns (after its short
/// timeout) before `c` holds the subscription. Returns the consumer, its gate, the
/// feeding producer, the new producer and the id.
#[allow(clippy::type_complexity)]
fn subscribed_behind_a_busy_callback(
    name: &str,
) -> (
    stageflow::ConsumerHandle<Gated>,
    Receiver<Vec<u64>>,
    Sender<()>,
    Receiver<Report<u64>>,
    stageflow::ProducerHandle<OnCommand>,
    stageflow::ProducerHandle<Counting>,
    stageflow::SubscriptionId,
) {
    let feeder = stageflow::producer(OnCommand(0)).spawn().unwrap();
    let target = stageflow::producer(Counting(100))
        .name(name)
        .spawn()
        .unwrap();
    let (entered_tx, entered) = crossbeam_channel::unbounded();
    let (release, release_rx) = crossbeam_channel::unbounded();
    let (reports_tx, reports) = crossbeam_channel::unbounded();
    let c = stageflow::consumer(Gated {
        entered: entered_tx,
        release: release_rx,
        reports: reports_tx,
    })
    .subscribe_to(&feeder, SubscribeOptions::new().max_demand(10))
    .unwrap()
    .spawn()
    .unwrap();
    assert_eq!(next(&reports), Report::Subscribed);
    // First batch: the consumer is in its callback.
    feeder.call(|r| r, LIMIT).unwrap();
    assert_eq!(next(&entered), vec![0]);
    // Second batch: waits in its inbox.
    feeder.call(|r| r, LIMIT).unwrap();
    // Subscribe from another thread: the consumer passes the request on between the two
    // batches, and the confirmation queues behind the second one.
    let subscriber = {
        let c = c.clone();
        let target = target.clone();
        std::thread::spawn(move || {
            c.subscribe_to(
                &target,
                SubscribeOptions::new()
                    .max_demand(4)
                    .cancel(CancelMode::Temporary)
                    .timeout(Duration::from_millis(200)),
            )
        })
    };
    // The request is on the consumer's control path once its wake-up note is in the inbox,
    // behind the second batch (control itself is not counted in `inbox_len`).
    eventually("the subscribe request reaches the consumer", || {
        c.inbox_len() == 2
    });
    // Released, the consumer passes the request on before it takes the second batch.
    release.send(()).unwrap();
    assert_eq!(next(&entered), vec![1]);
    eventually("the producer accepts", || {
        target.counters().subscriptions.len() == 1
    });
    let id = subscriber
        .join()
        .unwrap()
        .expect("accepted by the producer; its confirmation waits in the inbox");
    (c, entered, release, reports, feeder, target, id)
}

#[test]
fn a_cancel_made_before_the_confirmation_arrives_takes_effect_when_it_does() {
    let (c, _entered, release, reports, feeder, target, id) =
        subscribed_behind_a_busy_callback("target");
    assert!(
        c.counters().subscriptions.iter().all(|s| s.id != id),
        "the confirmation was meant to wait behind the busy callback"
    );
    c.cancel(id, Reason::Normal).unwrap();
    release.send(()).unwrap();
    // The consumer hears of the subscription, cancels it, and the producer lets it go.
    assert_eq!(next(&reports), Report::Subscribed);
    assert_eq!(next(&reports), Report::Cancelled(Reason::Normal));
    eventually("the producer drops the cancelled subscription", || {
        target.counters().subscriptions.is_empty()
    });
    assert_eq!(target.counters().events_out, 0, "it never asked");
    assert_eq!(c.outcome(), None, "a temporary subscription");
    for s in [&feeder.stage_ref(), &target.stage_ref(), &c.stage_ref()] {
        s.stop();
        s.join_timeout(LIMIT).expect("ends");
    }
}

#[test]
fn a_manual_ask_made_before_the_confirmation_arrives_takes_effect_when_it_does() {
    let (c, entered, release, reports, feeder, target, id) =
        subscribed_behind_a_busy_callback("manual-target");
    c.ask(id, 3).unwrap();
    release.send(()).unwrap();
    assert_eq!(next(&reports), Report::Subscribed);
    assert_eq!(next(&entered), vec![100, 101, 102]);
    release.send(()).unwrap();
    for s in [&feeder.stage_ref(), &target.stage_ref(), &c.stage_ref()] {
        s.stop();
        s.join_timeout(LIMIT).expect("ends");
    }
}

#[test]
fn subscribes_cancelled_at_once_leave_nothing_behind_whatever_their_timeout() {
    let p = stageflow::producer(Counting(0)).spawn().unwrap();
    let (rec, _rx) = Recorder::<u64>::new();
    let c = stageflow::consumer(rec).spawn().unwrap();
    let mut made = 0;
    for i in 0..40 {
        // Half with no time at all: those fail (or succeed) and must leave nothing either way.
        let timeout = if i % 2 == 0 { Duration::ZERO } else { LIMIT };
        let opts = SubscribeOptions::new()
            .max_demand(2)
            .cancel(CancelMode::Temporary)
            .timeout(timeout);
        match c.subscribe_to(&p, opts) {
            Ok(id) => {
                made += 1;
                c.cancel(id, Reason::Normal).unwrap();
            }
            Err(SubscribeError::Timeout { .. }) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert!(made >= 20, "every subscribe with time succeeds: {made}");
    // One more, behind all of them on both control paths: once it is held, every request
    // before it has been answered and every confirmation before it handled.
    let last = c
        .subscribe_to(&p, SubscribeOptions::new().cancel(CancelMode::Temporary))
        .unwrap();
    c.cancel(last, Reason::Normal).unwrap();
    eventually("no subscription is left on either side", || {
        p.counters().subscriptions.is_empty() && c.counters().subscriptions.is_empty()
    });
    assert_eq!(c.outcome(), None);
    p.stop();
    joined(&p);
    c.stop();
    joined(&c);
}
