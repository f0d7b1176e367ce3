//! Option validation (reference §1.1, §2.2 and §15.1): bad subscribe options are refused with an
//! error naming the option and the value, at the builder's `subscribe_to` and at run time
//! (`Stage::subscribe_to`), before anything is sent; subscribing to an ended producer gives
//! `ProducerGone`; `inbox_capacity(0)` and `buffer_size(0)` are refused at spawn.

mod common;

use std::error::Error as _;
use std::time::Duration;

use common::{joined, next, Numbers, Recorder, Report, LIMIT};
use stageflow::{
    BuildError, ConsumerContext, Context, Events, ProducerHandle, Reason, SubscribeError,
    SubscribeOptions,
};

fn numbers() -> (
    ProducerHandle<Numbers>,
    crossbeam_channel::Receiver<Report<u64>>,
) {
    let (n, rx) = Numbers::new(None);
    (stageflow::producer(n).name("numbers").spawn().unwrap(), rx)
}

fn assert_invalid(err: SubscribeError, expected_option: &str, expected_message: &str) {
    let text = err.to_string();
    match err {
        SubscribeError::InvalidOption { option, message } => {
            assert_eq!(option, expected_option);
            assert_eq!(message, expected_message);
        }
        other => panic!("expected InvalidOption, got {other:?}"),
    }
    assert_eq!(
        text,
        format!("invalid subscribe option: {expected_message}")
    );
}

/// The cases of the reference, with this crate's wording.
fn bad_options() -> Vec<(SubscribeOptions, &'static str, &'static str)> {
    vec![
        (
            SubscribeOptions::new().max_demand(0),
            "max_demand",
            "expected max_demand to be at least 1, got 0",
        ),
        (
            SubscribeOptions::new().min_demand(2000),
            "min_demand",
            "expected min_demand to be at most 999 (max_demand - 1), got 2000",
        ),
        (
            SubscribeOptions::new().max_demand(10).min_demand(10),
            "min_demand",
            "expected min_demand to be at most 9 (max_demand - 1), got 10",
        ),
        (
            SubscribeOptions::new().max_demand(1).min_demand(1),
            "min_demand",
            "expected min_demand to be at most 0 (max_demand - 1), got 1",
        ),
        // max_demand is checked first.
        (
            SubscribeOptions::new().max_demand(0).min_demand(5),
            "max_demand",
            "expected max_demand to be at least 1, got 0",
        ),
        (
            SubscribeOptions::new().max_demand(10).adaptive_demand(9),
            "adaptive_demand",
            "expected the adaptive_demand limit to be at least max_demand (10), got 9",
        ),
    ]
}

#[test]
fn smoke() {
    let err = SubscribeOptions::new()
        .max_demand(0)
        .validate()
        .unwrap_err();
    assert_invalid(
        err,
        "max_demand",
        "expected max_demand to be at least 1, got 0",
    );
}

#[test]
fn limits_that_are_valid() {
    for (max, min) in [(1, 0), (10, 9), (1000, 999), (1000, 0), (2, 1)] {
        let o = SubscribeOptions::new().max_demand(max).min_demand(min);
        assert_eq!(o.validate(), Ok(()), "max {max} min {min}");
    }
    // The defaults: min is max / 2 (1000 -> 500, 3 -> 1, 1 -> 0), always valid.
    for (max, min) in [(1000, 500), (10, 5), (3, 1), (1, 0)] {
        let o = SubscribeOptions::new().max_demand(max);
        assert_eq!(o.get_min_demand(), min);
        assert_eq!(o.validate(), Ok(()));
    }
}

#[test]
fn builder_subscribe_to_refuses_bad_options() {
    let (p, prx) = numbers();
    for (options, option, message) in bad_options() {
        let (rec, _rx) = Recorder::<u64>::new();
        let err = stageflow::consumer(rec)
            .subscribe_to(&p, options)
            .expect_err("invalid options must be refused");
        assert_invalid(err, option, message);
    }
    // Nothing reached the producer.
    assert!(p.counters().subscriptions.is_empty());
    assert!(prx.try_recv().is_err());
    p.stop();
    assert_eq!(joined(&p), Reason::Shutdown);
}

#[test]
fn runtime_subscribe_to_refuses_bad_options_and_sends_nothing() {
    let (p, prx) = numbers();
    let (rec, crx) = Recorder::<u64>::new();
    let c = stageflow::consumer(rec).name("late").spawn().unwrap();
    for (options, option, message) in bad_options() {
        let err = c
            .subscribe_to(&p, options)
            .expect_err("invalid options must be refused");
        assert_invalid(err, option, message);
    }
    assert!(p.counters().subscriptions.is_empty());
    assert!(
        crx.try_recv().is_err(),
        "no handle_subscribe on the consumer"
    );
    assert!(prx.try_recv().is_err(), "no demand at the producer");

    // The consumer is unharmed and can still subscribe with good options.
    c.subscribe_to(&p, SubscribeOptions::new().max_demand(2).min_demand(0))
        .unwrap();
    assert_eq!(next(&crx), Report::Subscribed);
    assert_eq!(next(&prx), Report::Demand(2));
    assert_eq!(next(&crx), Report::Batch(vec![0, 1]));
    p.stop();
    assert_eq!(joined(&p), Reason::Shutdown);
    assert_eq!(joined(&c), Reason::Shutdown);
}

#[test]
fn subscribing_to_an_ended_producer_fails_with_producer_gone() {
    let (p, _prx) = numbers();
    p.stop();
    assert_eq!(joined(&p), Reason::Shutdown);
    let gone = SubscribeError::ProducerGone {
        producer: "numbers".into(),
    };

    // At spawn, through the builder.
    let (rec, _rx) = Recorder::<u64>::new();
    let err = stageflow::consumer(rec)
        .subscribe_to(&p, SubscribeOptions::new())
        .expect("the options are fine")
        .spawn()
        .expect_err("the producer has ended");
    match &err {
        BuildError::Subscribe(e) => assert_eq!(*e, gone),
        other => panic!("expected BuildError::Subscribe, got {other:?}"),
    }
    assert_eq!(
        err.source().map(|s| s.to_string()),
        Some("cannot subscribe: producer numbers has ended".to_string())
    );

    // At run time.
    let (rec, crx) = Recorder::<u64>::new();
    let c = stageflow::consumer(rec).name("orphan").spawn().unwrap();
    assert_eq!(c.subscribe_to(&p, SubscribeOptions::new()), Err(gone));
    assert_eq!(
        c.outcome(),
        None,
        "a failed subscription does not end the consumer"
    );
    assert!(crx.try_recv().is_err());
    c.stop();
    assert_eq!(joined(&c), Reason::Shutdown);
}

#[test]
fn subscribing_to_a_producer_that_finished_fails_with_producer_gone() {
    let (n, _rx) = Numbers::new(Some(3));
    let p = stageflow::producer(n).name("three").spawn().unwrap();
    let (rec, crx) = Recorder::<u64>::new();
    let first = stageflow::consumer(rec)
        .subscribe_to(&p, SubscribeOptions::new())
        .unwrap()
        .spawn()
        .unwrap();
    assert_eq!(joined(&first), Reason::Normal);
    assert_eq!(joined(&p), Reason::Normal);
    let reports: Vec<_> = crx.try_iter().collect();
    assert_eq!(
        reports,
        vec![
            Report::Subscribed,
            Report::Batch(vec![0, 1, 2]),
            Report::Cancelled(Reason::Normal)
        ]
    );

    let (rec, _rx) = Recorder::<u64>::new();
    let c = stageflow::consumer(rec).spawn().unwrap();
    assert_eq!(
        c.subscribe_to(&p, SubscribeOptions::new()),
        Err(SubscribeError::ProducerGone {
            producer: "three".into()
        })
    );
    c.stop();
    joined(&c);
}

#[test]
fn subscribing_an_ended_consumer_fails_with_consumer_gone() {
    let (p, _prx) = numbers();
    let (rec, _rx) = Recorder::<u64>::new();
    let c = stageflow::consumer(rec).name("gone").spawn().unwrap();
    c.stop();
    assert_eq!(joined(&c), Reason::Shutdown);
    assert_eq!(
        c.subscribe_to(&p, SubscribeOptions::new()),
        Err(SubscribeError::ConsumerGone {
            consumer: "gone".into()
        })
    );
    assert!(p.counters().subscriptions.is_empty());
    p.stop();
    joined(&p);
}

struct Sink;

impl stageflow::Consumer for Sink {
    type In = u64;
    type Message = ();

    fn handle_events(&mut self, _: Events<'_, u64>, _: &mut ConsumerContext<'_>) {}
}

fn assert_build_invalid(result: Result<impl std::fmt::Debug, BuildError>, option: &str) {
    let err = result.expect_err("the option must be refused");
    let expected = format!("expected {option} to be at least 1, got 0");
    assert_eq!(err.to_string(), format!("invalid stage option: {expected}"));
    match err {
        BuildError::InvalidOption { option: o, message } => {
            assert_eq!(o, option);
            assert_eq!(message, expected);
        }
        other => panic!("expected InvalidOption, got {other:?}"),
    }
}

#[test]
fn zero_inbox_capacity_is_refused_at_spawn() {
    let (n, _rx) = Numbers::new(None);
    assert_build_invalid(
        stageflow::producer(n).inbox_capacity(0).spawn(),
        "inbox_capacity",
    );
    assert_build_invalid(
        stageflow::producer_consumer(common::Pass)
            .inbox_capacity(0)
            .spawn(),
        "inbox_capacity",
    );
    assert_build_invalid(
        stageflow::consumer(Sink).inbox_capacity(0).spawn(),
        "inbox_capacity",
    );
}

#[test]
fn an_inbox_too_large_to_allocate_is_refused_at_spawn() {
    // crossbeam allocates every slot up front: a huge capacity is an error, not an abort.
    let (n, _rx) = Numbers::new(None);
    let err = stageflow::producer(n)
        .inbox_capacity(usize::MAX)
        .spawn()
        .unwrap_err();
    assert!(
        err.to_string().contains(&format!(
            "expected inbox_capacity to be at most 1048576, got {}",
            usize::MAX
        )),
        "{err}"
    );
}

#[test]
fn zero_buffer_size_is_refused_at_spawn() {
    let (n, _rx) = Numbers::new(None);
    assert_build_invalid(stageflow::producer(n).buffer_size(0).spawn(), "buffer_size");
    assert_build_invalid(
        stageflow::producer_consumer(common::Pass)
            .buffer_size(0)
            .spawn(),
        "buffer_size",
    );
}

#[test]
fn a_refused_build_makes_no_subscription() {
    // The stage options are checked before any producer is asked.
    let (p, prx) = numbers();
    assert_build_invalid(
        stageflow::consumer(Sink)
            .inbox_capacity(0)
            .subscribe_to(&p, SubscribeOptions::new())
            .unwrap()
            .spawn(),
        "inbox_capacity",
    );
    assert_build_invalid(
        stageflow::producer_consumer(common::Pass)
            .buffer_size(0)
            .subscribe_to(&p, SubscribeOptions::new())
            .unwrap()
            .spawn(),
        "buffer_size",
    );
    // A call-free barrier: a fresh subscription is confirmed after anything sent before it.
    let (rec, crx) = Recorder::<u64>::new();
    let probe = stageflow::consumer(rec)
        .subscribe_to(&p, SubscribeOptions::new().max_demand(1))
        .unwrap()
        .spawn()
        .unwrap();
    assert_eq!(next(&crx), Report::Subscribed);
    assert_eq!(next(&prx), Report::Demand(1), "only the probe ever asked");
    let subs = p.counters().subscriptions;
    assert_eq!(subs.len(), 1, "only the probe subscribed: {subs:?}");
    p.stop();
    assert_eq!(joined(&p), Reason::Shutdown);
    assert_eq!(joined(&probe), Reason::Shutdown);
}

/// A producer that can be made to block in a callback, so that it cannot answer.
struct Gate;

enum GateMsg {
    /// Says it is blocked on the first channel, then blocks until the second says go.
    Block(
        crossbeam_channel::Sender<()>,
        crossbeam_channel::Receiver<()>,
    ),
    Sync(stageflow::Reply<()>),
}

impl stageflow::Producer for Gate {
    type Out = u64;
    type Message = GateMsg;

    fn handle_demand(&mut self, _: usize, _: &mut Context<'_, u64, GateMsg>) {}

    fn handle_message(&mut self, msg: GateMsg, ctx: &mut Context<'_, u64, GateMsg>) {
        match msg {
            GateMsg::Block(blocked, release) => {
                blocked.send(()).expect("the test waits for it");
                release.recv_timeout(LIMIT).expect("released");
            }
            GateMsg::Sync(reply) => ctx.reply(reply, ()),
        }
    }
}

#[test]
fn subscribe_timeout_is_reported_with_the_producer_name() {
    let p = stageflow::producer(Gate).name("gate").spawn().unwrap();
    let (rec, _crx) = Recorder::<u64>::new();
    let c = stageflow::consumer(rec).name("waiting").spawn().unwrap();
    let (release, released) = crossbeam_channel::bounded(1);
    // Control (a subscribe request) overtakes data: wait until the producer is blocked.
    let (blocked, is_blocked) = crossbeam_channel::bounded(1);
    p.cast(GateMsg::Block(blocked, released)).unwrap();
    next(&is_blocked);
    let timeout = Duration::from_millis(50);
    let start = std::time::Instant::now();
    let err = c
        .subscribe_to(&p, SubscribeOptions::new().timeout(timeout))
        .expect_err("the producer is blocked");
    assert!(start.elapsed() >= timeout);
    assert_eq!(
        err,
        SubscribeError::Timeout {
            producer: "gate".into()
        }
    );
    assert_eq!(
        err.to_string(),
        "subscription to producer gate was not confirmed in time"
    );
    release.send(()).unwrap();
    // Once unblocked, the producer handles the request and its withdrawal: no subscription
    // is left behind.
    p.call(GateMsg::Sync, LIMIT).unwrap();
    assert!(p.counters().subscriptions.is_empty());
    p.stop();
    assert_eq!(joined(&p), Reason::Shutdown);
    c.stop();
    joined(&c);
}

#[test]
fn a_timed_out_subscription_does_not_reach_or_end_the_consumer() {
    let p = stageflow::producer(Gate).name("gate").spawn().unwrap();
    let (rec, crx) = Recorder::<u64>::new();
    let c = stageflow::consumer(rec).name("waiting").spawn().unwrap();
    let (release, released) = crossbeam_channel::bounded(1);
    // Control (a subscribe request) overtakes data: wait until the producer is blocked.
    let (blocked, is_blocked) = crossbeam_channel::bounded(1);
    p.cast(GateMsg::Block(blocked, released)).unwrap();
    next(&is_blocked);
    let r = c.subscribe_to(
        &p,
        SubscribeOptions::new().timeout(Duration::from_millis(50)),
    );
    assert!(matches!(r, Err(SubscribeError::Timeout { .. })), "{r:?}");
    release.send(()).unwrap();
    // The producer has now sent whatever it sends for the withdrawn request.
    p.call(GateMsg::Sync, LIMIT).unwrap();

    // A good subscription afterwards: the consumer's callbacks see only this one.
    let (n, nrx) = numbers();
    c.subscribe_to(&n, SubscribeOptions::new().max_demand(1))
        .expect("the consumer is still running");
    assert_eq!(next(&crx), Report::Subscribed);
    assert_eq!(next(&nrx), Report::Demand(1));
    assert_eq!(next(&crx), Report::Batch(vec![0]));
    assert_eq!(c.outcome(), None);
    n.stop();
    p.stop();
    assert_eq!(joined(&c), Reason::Shutdown);
    joined(&n);
    joined(&p);
}

#[test]
fn a_name_with_a_nul_is_refused_at_spawn() {
    let (n, _rx) = Numbers::new(None);
    let err = stageflow::producer(n)
        .name("bad\0name")
        .spawn()
        .unwrap_err();
    assert!(
        matches!(err, BuildError::InvalidOption { option: "name", .. }),
        "{err}"
    );
}
