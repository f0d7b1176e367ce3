//! Manual demand: a consumer that takes its subscription's demand into its own hands receives
//! exactly what it asks for, each message whole, and nothing before it asks.

mod common;

use common::{joined, next, quiet, Numbers, Recorder, Report};
use stageflow::{DemandMode, Direction, SubscribeOptions};

#[test]
fn smoke() {
    let (numbers, demands) = Numbers::new(None);
    let p = stageflow::producer(numbers).spawn().unwrap();
    let (mut rec, rx) = Recorder::new();
    rec.mode = DemandMode::Manual;
    let c = stageflow::consumer(rec).spawn().unwrap();
    let sub = c
        .subscribe_to(&p, SubscribeOptions::new().max_demand(2))
        .unwrap();
    assert_eq!(next(&rx), Report::Subscribed);
    // Nothing is asked for automatically.
    quiet(&demands);
    c.ask(sub, 1).unwrap();
    assert_eq!(next(&rx), Report::Batch(vec![0]));
    p.stop();
    joined(&p);
    joined(&c);
}

#[test]
fn delivers_exactly_what_was_asked_each_message_whole() {
    let (numbers, demands) = Numbers::new(None);
    let p = stageflow::producer(numbers).spawn().unwrap();
    let (mut rec, rx) = Recorder::new();
    rec.mode = DemandMode::Manual;
    let c = stageflow::consumer(rec).spawn().unwrap();
    let sub = c
        .subscribe_to(&p, SubscribeOptions::new().max_demand(2).min_demand(0))
        .unwrap();
    assert_eq!(next(&rx), Report::Subscribed);
    // An ask above max_demand is honoured (GenStage probe p12), and the message is handed
    // over whole, not cut by max - min.
    c.ask(sub, 7).unwrap();
    assert_eq!(next(&demands), Report::Demand(7));
    assert_eq!(next(&rx), Report::Batch((0..7).collect()));
    quiet(&rx);
    c.ask(sub, 3).unwrap();
    assert_eq!(next(&demands), Report::Demand(3));
    assert_eq!(next(&rx), Report::Batch(vec![7, 8, 9]));
    quiet(&rx);
    // An ask of 0 does nothing.
    c.ask(sub, 0).unwrap();
    quiet(&demands);
    let counters = c.counters();
    assert_eq!(counters.events_in, 10);
    let upstream = counters
        .subscriptions
        .iter()
        .find(|s| s.direction == Direction::Upstream)
        .unwrap();
    assert_eq!(upstream.demand, 0, "everything asked for has arrived");
    p.stop();
    joined(&p);
    joined(&c);
}
