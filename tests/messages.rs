//! A stage's own messages: `cast`, `try_cast`, `call` (the reply value, events dispatched before
//! a `ctx.reply`, and the `Timeout` / `Stopped` / `NoReply` errors), casts to a stopped stage
//! handing the message back, infos delivered after the events buffered before them
//! (`Stage::info`, `ctx.info`; reference §2.5 and §13 #72), and timers (`send_after`,
//! `cancel_timer`).

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::{joined, next, Recorder, Report, LIMIT};
use crossbeam_channel::{Receiver, Sender};
use stageflow::{
    CallError, CastError, Consumer, ConsumerContext, Context, DemandMode, Events, Producer,
    ProducerHandle, Reason, Reply, SubscribeOptions, Subscription, TimerId,
};

/// What the producer under test reports.
#[derive(Debug, PartialEq)]
enum Seen {
    Demand(usize),
    Tag(u32),
    /// `handle_message` started on a `Block` or `Keep`.
    Started,
    /// What `Reply::send` returned.
    Sent(bool),
    /// What `cancel_timer` returned.
    CancelTimer(bool),
    /// A timer armed with `delay` fired `after` it was armed.
    Fired {
        delay: Duration,
        after: Duration,
    },
}

enum Msg {
    Add(u64, u64, Reply<u64>),
    /// Emit, then `ctx.reply` with the count.
    Emit(Vec<u64>, Reply<usize>),
    /// Emit, then `ctx.info(Tag(tag))`, then reply.
    EmitThenInfo(Vec<u64>, u32, Reply<()>),
    /// Keep the reply without answering.
    Keep(Reply<u64>),
    /// Keep the reply and stop the stage with an error.
    KeepAndStop(Reply<u64>),
    /// Panic while holding the reply.
    Panic(Reply<u64>),
    /// Answer the kept reply now; reports what `Reply::send` returned.
    SendKept,
    /// Drop the reply unanswered.
    Drop(Reply<u64>),
    Tag(u32),
    /// Block until released, then schedule `Tag(tag)` with a delay of zero.
    Block(Receiver<()>, u32),
    /// Arm one timer with this delay.
    Arm(Duration),
    Fire(Duration, Instant),
    /// Arm `Tag(1)` at 20 ms and cancel it at once (twice), and `Tag(2)` at 60 ms.
    TwoTimers,
    /// Arm `Tag(3)` at 400 ms, kept for `CancelKept`, and `Tag(4)` at 450 ms.
    TimerToCancelLater,
    CancelKept,
}

struct Svc {
    tx: Sender<Seen>,
    kept: Option<Reply<u64>>,
    timer: Option<TimerId>,
    /// Simulated slow clean-up when the stage is dropped, after any kept reply is dropped.
    linger: Duration,
}

impl Drop for Svc {
    fn drop(&mut self) {
        drop(self.kept.take());
        thread::sleep(self.linger);
    }
}

impl Producer for Svc {
    type Out = u64;
    type Message = Msg;

    fn handle_demand(&mut self, demand: usize, _: &mut Context<'_, u64, Msg>) {
        let _ = self.tx.send(Seen::Demand(demand));
    }

    fn handle_message(&mut self, msg: Msg, ctx: &mut Context<'_, u64, Msg>) {
        let report = |s| {
            let _ = self.tx.send(s);
        };
        match msg {
            Msg::Add(a, b, reply) => ctx.reply(reply, a + b),
            Msg::Emit(events, reply) => {
                let n = events.len();
                ctx.emit_all(events);
                ctx.reply(reply, n);
            }
            Msg::EmitThenInfo(events, tag, reply) => {
                ctx.emit_all(events);
                ctx.info(Msg::Tag(tag));
                ctx.reply(reply, ());
            }
            Msg::Keep(reply) => {
                self.kept = Some(reply);
                report(Seen::Started);
            }
            Msg::KeepAndStop(reply) => {
                self.kept = Some(reply);
                ctx.stop(Reason::error("stopping with a call unanswered"));
            }
            Msg::Panic(reply) => {
                let _reply = reply;
                panic!("boom while handling a call");
            }
            Msg::SendKept => {
                let sent = self.kept.take().expect("a kept reply").send(7);
                report(Seen::Sent(sent));
            }
            Msg::Drop(reply) => drop(reply),
            Msg::Tag(t) => report(Seen::Tag(t)),
            Msg::Block(release, tag) => {
                report(Seen::Started);
                release.recv_timeout(LIMIT).expect("released");
                ctx.send_after(Msg::Tag(tag), Duration::ZERO);
            }
            Msg::Arm(delay) => {
                ctx.send_after(Msg::Fire(delay, Instant::now()), delay);
            }
            Msg::Fire(delay, armed) => report(Seen::Fired {
                delay,
                after: armed.elapsed(),
            }),
            Msg::TwoTimers => {
                let t1 = ctx.send_after(Msg::Tag(1), Duration::from_millis(20));
                ctx.send_after(Msg::Tag(2), Duration::from_millis(60));
                report(Seen::CancelTimer(ctx.cancel_timer(t1)));
                report(Seen::CancelTimer(ctx.cancel_timer(t1)));
            }
            Msg::TimerToCancelLater => {
                self.timer = Some(ctx.send_after(Msg::Tag(3), Duration::from_millis(400)));
                ctx.send_after(Msg::Tag(4), Duration::from_millis(450));
            }
            Msg::CancelKept => {
                let t = self.timer.expect("a kept timer");
                report(Seen::CancelTimer(ctx.cancel_timer(t)));
            }
        }
    }
}

fn svc() -> (ProducerHandle<Svc>, Receiver<Seen>) {
    svc_with(Duration::ZERO, |b| b)
}

fn svc_with(
    linger: Duration,
    configure: impl FnOnce(
        stageflow::StageBuilder<Svc, stageflow::ProducerRole>,
    ) -> stageflow::StageBuilder<Svc, stageflow::ProducerRole>,
) -> (ProducerHandle<Svc>, Receiver<Seen>) {
    let (tx, rx) = crossbeam_channel::unbounded();
    let stage = Svc {
        tx,
        kept: None,
        timer: None,
        linger,
    };
    let p = configure(stageflow::producer(stage).name("svc"))
        .spawn()
        .unwrap();
    (p, rx)
}

fn stop(p: &ProducerHandle<Svc>) {
    p.stop();
    assert_eq!(joined(p), Reason::Shutdown);
}

/// A consumer that reports its batches and its own messages on one channel.
#[derive(Debug, PartialEq)]
enum Got {
    Subscribed,
    Batch(Vec<u64>),
    Msg(u32),
}

struct Probe {
    tx: Sender<Got>,
}

impl Consumer for Probe {
    type In = u64;
    type Message = u32;

    fn handle_events(&mut self, events: Events<'_, u64>, _: &mut ConsumerContext<'_, u32>) {
        let _ = self.tx.send(Got::Batch(events.collect()));
    }

    fn handle_message(&mut self, msg: u32, ctx: &mut ConsumerContext<'_, u32>) {
        let _ = self.tx.send(Got::Msg(msg));
        if msg == 100 {
            ctx.info(101);
        }
    }

    fn handle_subscribe(
        &mut self,
        _: &Subscription,
        _: &mut ConsumerContext<'_, u32>,
    ) -> DemandMode {
        let _ = self.tx.send(Got::Subscribed);
        DemandMode::Automatic
    }
}

#[test]
fn smoke() {
    let (p, rx) = svc();
    p.cast(Msg::Tag(1)).unwrap();
    assert_eq!(next(&rx), Seen::Tag(1));
    stop(&p);
}

#[test]
fn cast_and_try_cast_reach_handle_message_in_order() {
    let (p, rx) = svc();
    p.cast(Msg::Tag(1)).unwrap();
    p.try_cast(Msg::Tag(2)).unwrap();
    p.cast(Msg::Tag(3)).unwrap();
    assert_eq!(
        [next(&rx), next(&rx), next(&rx)],
        [Seen::Tag(1), Seen::Tag(2), Seen::Tag(3)]
    );
    stop(&p);
}

#[test]
fn call_returns_the_reply() {
    let (p, _rx) = svc();
    assert_eq!(p.call(|r| Msg::Add(2, 3, r), LIMIT), Ok(5));
    assert_eq!(p.call(|r| Msg::Add(40, 2, r), LIMIT), Ok(42));
    stop(&p);
}

#[test]
fn events_emitted_with_ctx_reply_reach_the_consumer_before_the_reply() {
    let (p, prx) = svc();
    let (tx, crx) = crossbeam_channel::unbounded();
    let c = stageflow::consumer(Probe { tx })
        .name("probe")
        .subscribe_to(&p, SubscribeOptions::new().max_demand(10))
        .unwrap()
        .spawn()
        .unwrap();
    assert_eq!(next(&crx), Got::Subscribed);
    assert_eq!(
        next(&prx),
        Seen::Demand(10),
        "the consumer's demand is there"
    );

    assert_eq!(p.call(|r| Msg::Emit(vec![1, 2, 3], r), LIMIT), Ok(3));
    // The events left the producer before the reply did...
    assert_eq!(p.counters().events_out, 3);
    // ...into the consumer's inbox: a message sent to the consumer after the reply arrived
    // is handled after them.
    c.cast(9).unwrap();
    assert_eq!(next(&crx), Got::Batch(vec![1, 2, 3]));
    assert_eq!(next(&crx), Got::Msg(9));

    stop(&p);
    assert_eq!(joined(&c), Reason::Shutdown);
}

#[test]
fn call_times_out_when_the_stage_does_not_answer() {
    let (p, rx) = svc();
    let timeout = Duration::from_millis(50);
    let start = Instant::now();
    assert_eq!(p.call(Msg::Keep, timeout), Err(CallError::Timeout));
    assert!(start.elapsed() >= timeout, "not before the timeout");
    assert_eq!(next(&rx), Seen::Started);
    // The caller has stopped waiting: a late answer is not delivered.
    p.cast(Msg::SendKept).unwrap();
    assert_eq!(next(&rx), Seen::Sent(false));
    // The stage is fine.
    assert_eq!(p.call(|r| Msg::Add(1, 1, r), LIMIT), Ok(2));
    stop(&p);
}

#[test]
fn call_to_a_stopped_stage_fails_with_stopped() {
    let (p, _rx) = svc();
    stop(&p);
    assert_eq!(
        p.call(|r| Msg::Add(1, 2, r), LIMIT),
        Err(CallError::Stopped)
    );
}

#[test]
fn call_fails_with_stopped_when_the_stage_is_stopped_while_holding_the_reply() {
    let (p, rx) = svc();
    let caller = {
        let p = p.clone();
        thread::spawn(move || p.call(Msg::Keep, LIMIT))
    };
    assert_eq!(next(&rx), Seen::Started, "the call is being held");
    stop(&p);
    assert_eq!(caller.join().unwrap(), Err(CallError::Stopped));
}

// The stage's state (holding the reply) is dropped, slowly, before its outcome is published;
// the caller must still learn that the stage ended, not that it "dropped the reply".
#[test]
fn call_fails_with_stopped_when_the_stage_stops_itself_while_holding_the_reply() {
    let (p, _rx) = svc_with(Duration::from_millis(100), |b| b);
    assert_eq!(p.call(Msg::KeepAndStop, LIMIT), Err(CallError::Stopped));
    assert_eq!(joined(&p), Reason::error("stopping with a call unanswered"));
}

#[test]
fn call_fails_with_stopped_when_the_handler_panics() {
    let (p, _rx) = svc_with(Duration::from_millis(100), |b| b);
    assert_eq!(p.call(Msg::Panic, LIMIT), Err(CallError::Stopped));
    assert_eq!(
        joined(&p),
        Reason::Panicked("boom while handling a call".into())
    );
}

#[test]
fn call_whose_reply_is_dropped_fails_with_no_reply() {
    let (p, _rx) = svc();
    assert_eq!(p.call(Msg::Drop, LIMIT), Err(CallError::NoReply));
    assert_eq!(p.outcome(), None, "the stage runs on");
    assert_eq!(p.call(|r| Msg::Add(1, 1, r), LIMIT), Ok(2));
    stop(&p);
}

/// A producer that does not handle its messages: the default `handle_message` drops them.
struct Deaf;

impl Producer for Deaf {
    type Out = u64;
    type Message = Reply<u64>;

    fn handle_demand(&mut self, _: usize, _: &mut Context<'_, u64, Reply<u64>>) {}
}

#[test]
fn call_to_the_default_handle_message_fails_with_no_reply() {
    let p = stageflow::producer(Deaf).name("deaf").spawn().unwrap();
    assert_eq!(p.call(|r| r, LIMIT), Err(CallError::NoReply));
    p.stop();
    assert_eq!(joined(&p), Reason::Shutdown);
}

#[test]
fn cast_to_a_stopped_stage_hands_the_message_back() {
    let (p, _rx) = svc();
    stop(&p);
    match p.cast(Msg::Tag(7)) {
        Err(CastError::Stopped(Msg::Tag(7))) => {}
        Err(e) => panic!("expected Stopped(Tag(7)), got {e:?}"),
        Ok(()) => panic!("a cast to a stopped stage succeeded"),
    }
    match p.try_cast(Msg::Tag(8)).map_err(CastError::into_inner) {
        Err(Msg::Tag(8)) => {}
        _ => panic!("expected the message back"),
    }
    assert!(matches!(
        p.try_cast(Msg::Tag(8)),
        Err(CastError::Stopped(_))
    ));
    assert!(matches!(
        p.info(Msg::Tag(9)),
        Err(CastError::Stopped(Msg::Tag(9)))
    ));
    let err = p.cast(Msg::Tag(1)).unwrap_err();
    assert_eq!(err.to_string(), "cast failed: the stage has stopped");
}

#[test]
fn try_cast_to_a_full_inbox_hands_the_message_back() {
    let (p, rx) = svc_with(Duration::ZERO, |b| b.inbox_capacity(1));
    let (release, released) = crossbeam_channel::bounded(1);
    p.cast(Msg::Block(released, 99)).unwrap();
    assert_eq!(next(&rx), Seen::Started, "the inbox is empty again");
    p.cast(Msg::Tag(1)).unwrap(); // fills the inbox of 1
    match p.try_cast(Msg::Tag(2)) {
        Err(CastError::Full(Msg::Tag(2))) => {}
        Err(e) => panic!("expected Full(Tag(2)), got {e:?}"),
        Ok(()) => panic!("try_cast into a full inbox succeeded"),
    }
    release.send(()).unwrap();
    let mut got = vec![next(&rx), next(&rx)];
    got.sort_by_key(|s| format!("{s:?}"));
    assert_eq!(got, vec![Seen::Tag(1), Seen::Tag(99)]);
    stop(&p);
    assert!(
        rx.try_iter().all(|s| s != Seen::Tag(2)),
        "Tag(2) was not sent"
    );
}

#[test]
fn info_waits_for_the_events_buffered_before_it() {
    // Reference §13 #72: buffer [a, b, c] + info 1; ask 2 -> [a, b], no info yet; queue [d, e]
    // + info 2; ask 1 -> [c] and info 1; ask 2 -> [d, e] and info 2.
    let (p, prx) = svc();
    let (mut rec, crx) = Recorder::new();
    rec.mode = DemandMode::Manual;
    let c = stageflow::consumer(rec).name("manual").spawn().unwrap();
    let sub = c.subscribe_to(&p, SubscribeOptions::new()).unwrap();
    assert_eq!(next(&crx), Report::Subscribed);
    let sync = || {
        assert_eq!(p.call(|r| Msg::Add(0, 0, r), LIMIT), Ok(0));
    };

    // With nobody asking, the events are buffered; Stage::info queues behind them.
    assert_eq!(p.call(|r| Msg::Emit(vec![0, 1, 2], r), LIMIT), Ok(3));
    p.info(Msg::Tag(1)).unwrap();
    sync();
    assert_eq!(p.counters().buffered, 3);

    c.ask(sub, 2).unwrap();
    assert_eq!(next(&crx), Report::Batch(vec![0, 1]));
    sync(); // the ask has been handled completely
    assert!(prx.try_recv().is_err(), "info 1 still waits behind event 2");

    // ctx.info from a callback queues behind the events it just emitted.
    assert_eq!(
        p.call(|r| Msg::EmitThenInfo(vec![3, 4], 2, r), LIMIT),
        Ok(())
    );
    sync();
    assert!(prx.try_recv().is_err());
    assert_eq!(p.counters().buffered, 3);

    c.ask(sub, 1).unwrap();
    assert_eq!(next(&crx), Report::Batch(vec![2]));
    assert_eq!(next(&prx), Seen::Tag(1), "info 1 once event 2 has left");
    sync();
    assert!(
        prx.try_recv().is_err(),
        "info 2 still waits behind events 3 and 4"
    );

    c.ask(sub, 2).unwrap();
    assert_eq!(next(&crx), Report::Batch(vec![3, 4]));
    assert_eq!(next(&prx), Seen::Tag(2));
    sync();
    assert_eq!(p.counters().buffered, 0);
    assert!(
        prx.try_recv().is_err(),
        "no handle_demand: the buffer covered every ask"
    );

    stop(&p);
    assert_eq!(joined(&c), Reason::Shutdown);
}

#[test]
fn info_with_nothing_buffered_is_delivered_at_once() {
    let (p, rx) = svc();
    p.info(Msg::Tag(5)).unwrap();
    assert_eq!(next(&rx), Seen::Tag(5));
    stop(&p);

    // On a consumer, ctx.info comes back on a later turn.
    let (tx, crx) = crossbeam_channel::unbounded();
    let c = stageflow::consumer(Probe { tx })
        .name("probe")
        .spawn()
        .unwrap();
    c.cast(100).unwrap();
    assert_eq!(next(&crx), Got::Msg(100));
    assert_eq!(next(&crx), Got::Msg(101));
    c.info(102).unwrap();
    assert_eq!(next(&crx), Got::Msg(102));
    c.stop();
    assert_eq!(joined(&c), Reason::Shutdown);
}

#[test]
fn send_after_fires_no_earlier_than_its_delay() {
    let (p, rx) = svc();
    let delay = Duration::from_millis(30);
    p.cast(Msg::Arm(delay)).unwrap();
    match next(&rx) {
        Seen::Fired { delay: d, after } => {
            assert_eq!(d, delay);
            assert!(after >= delay, "fired after {after:?}, armed for {delay:?}");
        }
        other => panic!("expected the timer, got {other:?}"),
    }
    stop(&p);
}

#[test]
fn cancel_timer_prevents_the_timer() {
    let (p, rx) = svc();
    p.cast(Msg::TwoTimers).unwrap();
    assert_eq!(next(&rx), Seen::CancelTimer(true));
    assert_eq!(next(&rx), Seen::CancelTimer(false), "cancelled already");
    // Tag(1) was due before Tag(2): had it not been cancelled, it would come first.
    assert_eq!(next(&rx), Seen::Tag(2));

    // Cancelled from a later callback (queued right behind the one that armed it, long before
    // its 400 ms); Tag(4) is due 50 ms after it.
    p.cast(Msg::TimerToCancelLater).unwrap();
    p.cast(Msg::CancelKept).unwrap();
    assert_eq!(next(&rx), Seen::CancelTimer(true));
    assert_eq!(next(&rx), Seen::Tag(4));
    // A fired or cancelled timer cannot be cancelled.
    p.cast(Msg::CancelKept).unwrap();
    assert_eq!(next(&rx), Seen::CancelTimer(false));
    stop(&p);
    assert!(rx.try_recv().is_err());
}

#[test]
fn zero_delay_timer_comes_after_the_messages_already_queued() {
    // Context::send_after: "A delay of zero delivers it on the stage's next turn, after
    // messages already in its inbox."
    let (p, rx) = svc();
    let (release, released) = crossbeam_channel::bounded(1);
    p.cast(Msg::Block(released, 3)).unwrap();
    assert_eq!(next(&rx), Seen::Started);
    p.cast(Msg::Tag(1)).unwrap();
    p.cast(Msg::Tag(2)).unwrap();
    release.send(()).unwrap(); // now it schedules Tag(3) with a delay of zero
    assert_eq!(
        [next(&rx), next(&rx), next(&rx)],
        [Seen::Tag(1), Seen::Tag(2), Seen::Tag(3)]
    );
    stop(&p);
}

#[test]
fn durations_too_long_to_represent_are_not_a_panic() {
    // A timer or a timeout of Duration::MAX means "practically never", not an overflow.
    struct Sleepy;
    impl stageflow::Producer for Sleepy {
        type Out = u64;
        type Message = ();
        fn handle_demand(&mut self, _: usize, ctx: &mut stageflow::Context<'_, u64>) {
            ctx.send_after((), Duration::MAX);
        }
    }
    let p = stageflow::producer(Sleepy).spawn().unwrap();
    assert_eq!(p.join_timeout(Duration::from_millis(10)), None);
    let s = stageflow::stream(&p, SubscribeOptions::new().timeout(Duration::MAX)).unwrap();
    drop(s);
    p.stop();
    assert_eq!(p.join_timeout(Duration::MAX), Some(Reason::Shutdown));
}
