//! `Chain`: linear pipelines in one expression, wired from the ordinary stages.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use stageflow::fns::{Collect, Filter, ForEach, Map};
use stageflow::{BuildError, Reason, SubscribeError, SubscribeOptions};

#[test]
fn a_line_of_stages_keeps_order_and_loses_nothing() {
    let got = stageflow::from_iter(0..10_000u64)
        .via(Map::new(|x: u64| x + 1))
        .via(Filter::new(|x: &u64| !x.is_multiple_of(3)))
        .options(SubscribeOptions::new().max_demand(7))
        .collect()
        .unwrap();
    let expected: Vec<u64> = (1..=10_000u64).filter(|x| !x.is_multiple_of(3)).collect();
    assert_eq!(got, expected);
}

#[test]
fn partitions_bring_every_key_to_one_lane_in_order() {
    let (pipeline, lanes) = stageflow::from_iter((0..4_000u64).map(|i| (i % 37, i)))
        .via(Map::new(|(k, i): (u64, u64)| (k, i * 2)))
        .partition(4, |(k, _): &(u64, u64)| *k)
        .options(SubscribeOptions::new().max_demand(10))
        .to(|_lane| stageflow::consumer(Collect::new()).keep_state())
        .run_sinks()
        .unwrap();
    for (name, outcome) in pipeline.join() {
        assert_eq!(outcome, Reason::Normal, "stage {name}");
    }
    let mut lane_of: BTreeMap<u64, usize> = BTreeMap::new();
    let mut total = 0;
    for (lane, sink) in lanes.iter().enumerate() {
        let events = sink.join_state().1.expect("kept").into_vec();
        total += events.len();
        let mut last: BTreeMap<u64, u64> = BTreeMap::new();
        for (k, v) in events {
            assert_eq!(
                *lane_of.entry(k).or_insert(lane),
                lane,
                "key {k} in two lanes"
            );
            if let Some(prev) = last.insert(k, v) {
                assert!(prev < v, "key {k}: {v} after {prev}");
            }
        }
    }
    assert_eq!(total, 4_000);
    assert_eq!(lane_of.len(), 37);
}

#[test]
fn parallel_lanes_share_the_work_and_merge_again() {
    let got: BTreeSet<u64> = stageflow::from_iter(0..5_000u64)
        .options(SubscribeOptions::new().max_demand(5))
        .parallel(3)
        .via(|lane| {
            stageflow::producer_consumer(Map::new(|x: u64| x * 10)).name(format!("times-{lane}"))
        })
        .collect()
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(got, (0..5_000u64).map(|x| x * 10).collect());
}

#[test]
fn stage_options_stay_reachable_and_the_topology_holds_every_stage() {
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let s = seen.clone();
    let pipeline = stageflow::from_iter(0..100u64)
        .name("numbers")
        .via(
            stageflow::producer_consumer(Map::new(|x: u64| x))
                .name("same")
                .buffer_size(50),
        )
        .to(stageflow::consumer(ForEach::new(move |_: u64| {
            s.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }))
        .name("count"))
        .run()
        .unwrap();
    let names: Vec<String> = pipeline.join().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["numbers", "same", "count"]);
    assert_eq!(seen.load(std::sync::atomic::Ordering::Relaxed), 100);
}

#[test]
fn bad_options_come_back_from_run() {
    let err = stageflow::from_iter(0..10u64)
        .name("started")
        .via(Map::new(|x: u64| x))
        .options(SubscribeOptions::new().max_demand(0))
        .to(ForEach::new(|_: u64| {}))
        .run()
        .unwrap_err();
    assert!(
        matches!(
            err,
            BuildError::Subscribe(SubscribeError::InvalidOption {
                option: "max_demand",
                ..
            })
        ),
        "{err}"
    );
    let err = stageflow::from_iter(0..10u64)
        .partition(0, |x: &u64| *x)
        .to(|_| ForEach::new(|_: u64| {}))
        .run()
        .unwrap_err();
    assert!(
        matches!(
            err,
            BuildError::InvalidOption {
                option: "partition",
                ..
            }
        ),
        "{err}"
    );
}
