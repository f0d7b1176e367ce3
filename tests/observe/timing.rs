//! Time per stage: callbacks timed (every one of a slow stage), time waiting for input or for
//! demand told apart, the shares an observer computes, and their Prometheus histograms.

use std::time::Duration;

use crossbeam_channel::bounded;
use stageflow::fns::ForEach;
use stageflow::observe::{Observe, Observer};
use stageflow::{StageRef, SubscribeOptions, Topology};

use crate::common::{joined, next, LIMIT};
use crate::fixtures::{until, Push, Pushed, Sink};

/// A source of `events` and a consumer named `name` that takes `per_event` for each event,
/// with a `max_demand` of `demand`.
fn slow_pair(name: &str, events: u64, per_event: Duration, demand: usize) -> (StageRef, StageRef) {
    let source = stageflow::from_iter(0..events)
        .name(format!("{name}-src"))
        .spawn()
        .unwrap();
    let sink = stageflow::consumer(ForEach::new(move |_: u64| std::thread::sleep(per_event)))
        .name(name)
        .subscribe_to(&source, SubscribeOptions::new().max_demand(demand))
        .unwrap()
        .spawn()
        .unwrap();
    (source.stage_ref(), sink.stage_ref())
}

fn ended(stage: &StageRef) {
    assert!(
        stage.join_timeout(LIMIT).is_some(),
        "{} did not end within {LIMIT:?}",
        stage.name()
    );
}

#[test]
fn smoke_every_slow_callback_is_timed() {
    const EVENTS: u64 = 200;
    let per_event = Duration::from_micros(300);
    // One event per batch: every event is a callback.
    let (source, sink) = slow_pair("timed-sink", EVENTS, per_event, 1);
    ended(&sink);
    let t = sink.timing();
    // Callbacks are sampled until one is slow; from then on every one is timed. The first
    // slow one may come up to a stride (16) after a fast one (the subscription's callback).
    let timed_at_least = EVENTS - 17;
    assert!(t.per_event.count >= timed_at_least, "{t:#?}");
    assert!(t.per_event.max >= 300_000, "{t:#?}");
    assert!(
        t.per_event.quantile(0.5) >= 200_000,
        "the median event is in the bucket above 200 µs: {t:#?}"
    );
    assert!(t.callbacks.count >= timed_at_least, "{t:#?}");
    assert!(
        t.busy >= per_event * timed_at_least as u32,
        "busy {:?}: {t:#?}",
        t.busy
    );
    assert_eq!(
        t.waiting_for_demand,
        Duration::ZERO,
        "a consumer waits for input"
    );
    // The source's callbacks are fast: sampled, but counted.
    assert!(source.timing().callbacks.count > 0);
    let text = Topology::new()
        .with(&source)
        .with(&sink)
        .snapshot()
        .to_prometheus();
    let count = format!(
        "stageflow_stage_event_seconds_count{{stage=\"timed-sink\",kind=\"consumer\"}} {}\n",
        t.per_event.count
    );
    assert!(text.contains(&count), "no {count:?} in\n{text}");
    assert!(text.contains(
        "stageflow_stage_callback_seconds_bucket{stage=\"timed-sink\",kind=\"consumer\",le=\"+Inf\"}"
    ));
    assert!(
        text.contains("stageflow_stage_busy_seconds_total{stage=\"timed-sink\",kind=\"consumer\"}")
    );
    crate::promtool::check(&text);
}

/// How long a test leaves a stage waiting. The wait is measured from when the stage reaches it,
/// which on a loaded machine can be tens of milliseconds after the test starts its sleep: the
/// tests assert a tenth of this.
const MEASURED: Duration = Duration::from_millis(200);

#[test]
fn an_observer_sees_a_slow_stage_busy() {
    // Batches of 5 events of 2 ms each: the next batch is in hand before one ends, so the
    // stage hardly ever waits, even on a loaded machine.
    let (source, sink) = slow_pair("busy-sink", 400, Duration::from_millis(2), 10);
    let topology = Topology::new().with(&source).with(&sink);
    let mut observer = Observer::new(&topology);
    let first = observer.snapshot();
    assert_eq!(first.stages[1].share_busy, 0.0, "no interval, no share");
    // The interval starts once the sink is well under way (not while its threads start, which
    // a loaded machine can make slow), and ends after another 100 ms in its callbacks.
    until(&topology, "50 ms in callbacks", |s| {
        s.stages[1].timing.busy >= Duration::from_millis(50)
    });
    observer.snapshot();
    until(&topology, "150 ms in callbacks", |s| {
        s.stages[1].timing.busy >= Duration::from_millis(150)
    });
    let s = observer.snapshot();
    let sink_s = &s.stages[1];
    assert!(
        sink_s.share_busy > 0.3,
        "a stage sleeping in its callback is busy most of the time: {sink_s:#?}"
    );
    let sum = sink_s.share_busy + sink_s.share_waiting_input + sink_s.share_waiting_demand;
    assert!(sum <= 1.01, "{sum}: {sink_s:#?}");
    assert_eq!(sink_s.share_waiting_demand, 0.0);
    sink.stop();
    ended(&sink);
    source.stop();
    ended(&source);
}

#[test]
fn a_starved_consumer_waits_for_input() {
    let p = stageflow::producer(Pushed).name("starver").spawn().unwrap();
    let (seen, seen_rx) = bounded(64);
    let c = stageflow::consumer(Sink { seen, gate: None })
        .name("starved")
        .subscribe_to(&p, SubscribeOptions::new().max_demand(10))
        .unwrap()
        .spawn()
        .unwrap();
    p.cast(Push::Emit(vec![1, 2, 3])).unwrap();
    next(&seen_rx);
    // The consumer now waits for input: give it nothing for a while (the wait is measured).
    std::thread::sleep(MEASURED);
    p.cast(Push::Emit(vec![4])).unwrap();
    next(&seen_rx); // the wait is counted before the events are handed over
    let t = c.timing();
    assert!(
        t.waiting_for_input >= Duration::from_millis(20),
        "waited for input {:?}",
        t.waiting_for_input
    );
    assert_eq!(t.waiting_for_demand, Duration::ZERO);
    p.cast(Push::End(stageflow::Reason::Normal)).unwrap();
    joined(&c);
}

#[test]
fn a_producer_nobody_asks_waits_for_demand() {
    let p = stageflow::producer(Pushed).name("unasked").spawn().unwrap();
    std::thread::sleep(MEASURED); // the wait being measured
    p.cast(Push::Emit(vec![1])).unwrap();
    // Handling the message follows the end of the wait.
    until(&p, "the event emitted", |s| s.stages[0].emitted == 1);
    let t = p.timing();
    assert!(
        t.waiting_for_demand >= Duration::from_millis(20),
        "waited for demand {:?}",
        t.waiting_for_demand
    );
    assert_eq!(
        t.waiting_for_input,
        Duration::ZERO,
        "it never had demand to serve"
    );
    p.stop();
    assert!(p.join_timeout(LIMIT).is_some());
}

#[test]
fn a_producer_asked_for_events_waits_for_input() {
    let p = stageflow::producer(Pushed).name("asked").spawn().unwrap();
    let (seen, seen_rx) = bounded(64);
    let c = stageflow::consumer(Sink { seen, gate: None })
        .name("asking")
        .subscribe_to(&p, SubscribeOptions::new().max_demand(10))
        .unwrap()
        .spawn()
        .unwrap();
    // Once the producer holds the consumer's demand, it has nothing to send: it waits for
    // its input (the messages that carry events).
    until(&p, "the demand reached the producer", |s| {
        s.stages[0].owed == 10
    });
    std::thread::sleep(MEASURED); // the wait being measured
    p.cast(Push::Emit(vec![1])).unwrap();
    next(&seen_rx);
    let t = p.timing();
    assert!(
        t.waiting_for_input >= Duration::from_millis(20),
        "waited for input {:?}, for demand {:?}",
        t.waiting_for_input,
        t.waiting_for_demand
    );
    p.cast(Push::End(stageflow::Reason::Normal)).unwrap();
    joined(&c);
}
