//! Snapshot contents against a pipeline whose every step the test decides: counts, demand,
//! edges, ended reasons, rates and the bottleneck.

use crossbeam_channel::bounded;
use stageflow::observe::{Observe, Observer, Snapshot};
use stageflow::{Reason, StageKind, SubscribeOptions, Topology};

use crate::common::{joined, next};
use crate::fixtures::{until, Push, Pushed, Sink};

#[test]
fn smoke_snapshot_of_a_topology() {
    let p = stageflow::producer(Pushed)
        .name("smoke-src")
        .spawn()
        .unwrap();
    let (seen, _rx) = bounded(64);
    let c = stageflow::consumer(Sink { seen, gate: None })
        .name("smoke-sink")
        .subscribe_to(&p, SubscribeOptions::new())
        .unwrap()
        .spawn()
        .unwrap();
    let topology = Topology::new().with(&p).with(&c);
    let s = topology.snapshot();
    assert_eq!(s.stages.len(), 2);
    assert_eq!(s.stages[0].name, "smoke-src");
    assert_eq!(s.stages[0].thread, "smoke-src");
    assert_eq!(s.stages[1].kind, StageKind::Consumer);
    assert_eq!(s.edges.len(), 1);
    assert_eq!(s.interval, None);
    assert!(s
        .stages
        .iter()
        .all(|s| s.in_per_sec == 0.0 && s.out_per_sec == 0.0));
    // One stage alone: its subscription still appears, with the peer's name.
    let alone = c.snapshot();
    assert_eq!(alone.stages.len(), 1);
    assert_eq!(alone.edges[0].producer, "smoke-src");
    assert_eq!(alone.edges[0].owed, None, "the producer is not observed");
    drop(topology);
    joined(&c);
}

#[test]
fn counts_demand_and_edges_follow_the_credit_protocol() {
    let p = stageflow::producer(Pushed).name("src").spawn().unwrap();
    let (seen, seen_rx) = bounded(64);
    let c = stageflow::consumer(Sink { seen, gate: None })
        .name("sink")
        .subscribe_to(&p, SubscribeOptions::new().max_demand(10).min_demand(5))
        .unwrap()
        .spawn()
        .unwrap();
    let topology = Topology::new().with(&p).with(&c);

    // The consumer asked 10; the producer owes 10 and has nothing: its consumer waits on it.
    let s = until(&topology, "the first ask", |s| s.edges[0].owed == Some(10));
    let e = &s.edges[0];
    assert_eq!((e.producer.as_str(), e.consumer.as_str()), ("src", "sink"));
    assert_eq!(
        (e.demand, e.max_demand, e.min_demand, e.events),
        (Some(10), 10, 5, 0)
    );
    assert_eq!(s.stage("src").unwrap().owed, 10);
    assert!(s.stage("src").unwrap().busy);
    assert_eq!(s.bottleneck_stage().map(|b| b.name.as_str()), Some("src"));
    assert_eq!(s.stage("src").unwrap().kind, StageKind::Producer);
    assert!(s.stages.iter().all(|s| s.is_running()));

    // 4 events: outstanding 6, above min_demand 5, so no new ask.
    p.cast(Push::Emit(vec![1, 2, 3, 4])).unwrap();
    assert_eq!(next(&seen_rx), 4);
    // (A producer counts events out just after they reach the consumer's inbox.)
    let sent = |n: u64| move |s: &Snapshot| s.edges[0].events == n && s.stages[0].events_out == n;
    let s = until(&topology, "4 events sent", sent(4));
    let e = &s.edges[0];
    assert_eq!((e.demand, e.owed), (Some(6), Some(6)));
    assert_eq!(s.stage("src").unwrap().events_out, 4);
    assert_eq!(s.stage("sink").unwrap().events_in, 4);

    // 3 more: outstanding 3 <= 5, so the consumer asks 7 and is back at 10.
    p.cast(Push::Emit(vec![5, 6, 7])).unwrap();
    assert_eq!(next(&seen_rx), 3);
    let s = until(&topology, "the second ask", |s| s.edges[0].owed == Some(10));
    assert_eq!((s.edges[0].demand, s.edges[0].events), (Some(10), 7));

    // 15 events beyond the demand of 10: 10 go, 5 wait in the producer's buffer until the
    // consumer, after its first batch of 5, asks again.
    p.cast(Push::Emit((0..15).collect())).unwrap();
    let mut got = 0;
    while got < 15 {
        got += next(&seen_rx);
    }
    let s = until(&topology, "all 22 through", sent(22));
    assert_eq!(s.stage("src").unwrap().events_out, 22);
    assert_eq!(s.stage("src").unwrap().buffered, 0);

    // The producer fails: both end, and the snapshot says how.
    p.cast(Push::End(Reason::error("boom"))).unwrap();
    joined(&p);
    joined(&c);
    let s = topology.snapshot();
    assert!(s.all_ended());
    let src = s.stage("src").unwrap();
    assert_eq!(src.outcome, Some(Reason::error("boom")));
    assert_eq!(src.state(), "error: boom");
    let sink = s.stage("sink").unwrap();
    assert!(
        matches!(sink.outcome, Some(ref r) if !r.is_normal()),
        "{:?}",
        sink.outcome
    );
    assert_eq!(s.bottleneck, None, "ended stages hold nothing back");
    assert!(
        s.edges.is_empty(),
        "ended subscriptions are gone: {:?}",
        s.edges
    );
    // Counters balance: what the producer emitted was received or discarded.
    assert_eq!(src.events_out + src.discarded + src.buffered, 22);
}

#[test]
fn a_full_inbox_marks_the_bottleneck() {
    let p = stageflow::producer(Pushed).name("fast").spawn().unwrap();
    let (seen, seen_rx) = bounded(64);
    let (open, gate) = bounded(64);
    let c = stageflow::consumer(Sink {
        seen,
        gate: Some(gate),
    })
    .name("stuck")
    .inbox_capacity(4)
    .subscribe_to(&p, SubscribeOptions::new().max_demand(100))
    .unwrap()
    .spawn()
    .unwrap();
    let topology = Topology::new().with(&p).with(&c);
    // One batch holds the consumer in its callback; four more fill its inbox.
    for i in 0..5 {
        p.cast(Push::Emit(vec![i])).unwrap();
    }
    let s = until(&topology, "a full inbox", |s| {
        s.stage("stuck").unwrap().inbox_len == 4
    });
    let stuck = s.stage("stuck").unwrap();
    assert_eq!((stuck.inbox_capacity, stuck.inbox_fill()), (4, 1.0));
    assert!(stuck.busy);
    assert_eq!(s.bottleneck_stage().unwrap().name, "stuck");
    for _ in 0..5 {
        open.send(()).unwrap();
        next(&seen_rx);
    }
    let s = until(&topology, "an empty inbox", |s| {
        s.stage("stuck").unwrap().inbox_len == 0
    });
    assert!(!s.stage("stuck").unwrap().busy);
    p.stop();
    joined(&c);
}

#[test]
fn an_observer_computes_rates_between_snapshots() {
    let p = stageflow::producer(Pushed)
        .name("rate-src")
        .spawn()
        .unwrap();
    let (seen, seen_rx) = bounded(64);
    let c = stageflow::consumer(Sink { seen, gate: None })
        .name("rate-sink")
        .subscribe_to(&p, SubscribeOptions::new().max_demand(1000))
        .unwrap()
        .spawn()
        .unwrap();
    let topology = Topology::new().with(&p).with(&c);
    let mut observer = Observer::new(&topology);
    let first = observer.snapshot();
    assert_eq!(first.interval, None);
    p.cast(Push::Emit((0..500).collect())).unwrap();
    let mut got = 0;
    while got < 500 {
        got += next(&seen_rx);
    }
    let second = observer.snapshot();
    let interval = second.interval.expect("a second snapshot has an interval");
    let expected = 500.0 / interval.as_secs_f64();
    let sink = second.stage("rate-sink").unwrap();
    let edge = &second.edges[0];
    if sink.events_in == 500 && edge.events == 500 {
        assert!(
            (sink.in_per_sec - expected).abs() < 1e-6 * expected,
            "{sink:?}"
        );
        assert!(
            (edge.per_sec - expected).abs() < 1e-6 * expected,
            "{edge:?}"
        );
    }
    assert!(sink.in_per_sec > 0.0 && edge.per_sec > 0.0);
    // Nothing moves: the next rates are 0.
    let third = observer.snapshot();
    let moved = third.stage("rate-sink").unwrap().events_in - sink.events_in;
    if moved == 0 {
        assert_eq!(third.stage("rate-sink").unwrap().in_per_sec, 0.0);
    }
    drop(topology);
    joined(&c);
}

#[test]
fn a_thousand_stages_snapshot_quickly() {
    // 500 producer -> consumer pairs.
    let mut stages = Vec::new();
    let mut producers = Vec::new();
    for i in 0..500 {
        let p = stageflow::producer(Pushed)
            .name(format!("p{i}"))
            .inbox_capacity(4)
            .spawn()
            .unwrap();
        let (seen, _) = bounded(1);
        let c = stageflow::consumer(Sink { seen, gate: None })
            .name(format!("c{i}"))
            .inbox_capacity(4)
            .subscribe_to(&p, SubscribeOptions::new())
            .unwrap()
            .spawn()
            .unwrap();
        stages.push(p.stage_ref());
        stages.push(c.stage_ref());
        producers.push(p);
    }
    let started = std::time::Instant::now();
    let s = Snapshot::of(&stages);
    let took = started.elapsed();
    assert_eq!((s.stages.len(), s.edges.len()), (1000, 500));
    // Generous for a debug build on a busy 2-core machine; release takes about a millisecond.
    assert!(took < std::time::Duration::from_secs(2), "took {took:?}");
    let topology: Topology = stages.iter().fold(Topology::new(), |t, s| t.with(s));
    drop(stages);
    drop(producers);
    topology.stop();
    let ended = topology.join_timeout(crate::common::LIMIT);
    assert!(
        ended.iter().all(|(_, r)| r.is_some()),
        "stages left running"
    );
}
