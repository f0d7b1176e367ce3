//! The examples, run as tests: each one's `run` and what its story promises.

mod common;

use std::time::Duration;

#[cfg(feature = "io")]
#[allow(dead_code)]
#[path = "../examples/drain.rs"]
mod drain;
#[allow(dead_code)]
#[path = "../examples/fan_out.rs"]
mod fan_out;
#[allow(dead_code)]
#[path = "../examples/rate_limiter.rs"]
mod rate_limiter;
#[allow(dead_code)]
#[path = "../examples/supervised.rs"]
mod supervised;
#[allow(dead_code)]
#[path = "../examples/supervisor.rs"]
mod supervisor;
#[allow(dead_code)]
#[path = "../examples/word_count.rs"]
mod word_count;

#[test]
fn smoke() {
    assert_eq!(fan_out::run(false).unwrap().len(), 50);
}

#[test]
fn fan_out_gives_fifty_lines_in_order() {
    let lines = fan_out::run(false).unwrap();
    let expected: Vec<String> = (1..=5)
        .flat_map(|n| (1..=10).map(move |i| format!("{n} :: {i}")))
        .collect();
    assert_eq!(lines, expected);
}

#[test]
fn rate_limiter_never_exceeds_n_per_interval() {
    let interval = Duration::from_millis(40);
    let batches = rate_limiter::run(5, interval, 30, false).unwrap();
    assert_eq!(batches.iter().map(|b| b.1).sum::<usize>(), 30);
    assert!(batches.iter().all(|b| b.1 <= 5), "{batches:?}");
    // 30 events at 5 per interval need at least 5 intervals after the first ask.
    let last = batches.last().unwrap().0;
    assert!(last >= interval * 5, "all events by {last:?}");
}

#[test]
fn supervisor_never_runs_more_than_max_demand() {
    let summary = supervisor::run(60, 4, 2).unwrap();
    assert_eq!(summary.jobs, 60);
    assert!(summary.peak_in_flight <= 4, "{summary:?}");
    assert!(
        summary.peak_in_flight >= 2,
        "workers ran concurrently: {summary:?}"
    );
}

#[test]
fn supervised_parser_crashes_and_comes_back() {
    let s = supervised::run(10_000).unwrap();
    assert_eq!(s.outcome, stageflow::Reason::Normal);
    let restarts: Vec<(&str, u64)> = s.restarts.iter().map(|(n, r)| (n.as_str(), *r)).collect();
    // Four corrupt readings (1250, 3750, 6250, 8750): four crashes, four restarts, and the
    // source and the store never stopped.
    assert_eq!(restarts, [("source", 0), ("parser", 4), ("store", 0)]);
    assert_eq!(s.emitted, 10_000);
    // Each crash loses what was inside the parser: its batch, its inbox, its output buffer.
    let lost = s.emitted - s.stored;
    assert!((4..=4 * 300).contains(&lost), "{s:?}");
}

#[cfg(feature = "io")]
#[test]
fn drain_counts_every_line_the_source_emitted() {
    // Drain once lines have flowed (any moment will do: nothing may be lost), as the first
    // signal does in the example.
    let summary = drain::run(
        |pipeline| {
            let source = &pipeline.stages()[0];
            let flowing = std::time::Instant::now();
            while source.counters().events_out < 10_000 {
                assert!(
                    flowing.elapsed() < Duration::from_secs(30),
                    "no lines flowed"
                );
                std::thread::yield_now();
            }
            pipeline.drain(Duration::from_secs(30))
        },
        false,
    )
    .unwrap();
    assert!(summary.complete, "{summary:?}");
    assert!(summary.emitted > 0);
    assert_eq!(
        summary.counted.values().sum::<u64>(),
        summary.emitted,
        "{summary:?}"
    );
    assert_eq!(summary.counted.len(), 4, "{summary:?}");
}

#[test]
fn word_count_borrows_the_lines_and_counts_every_word() {
    let lines = word_count::generated(5000);
    let report = word_count::run(&lines, 3).unwrap();
    let mut by_hand = word_count::Counts::new();
    for word in lines.iter().flat_map(|l| l.split_whitespace()) {
        *by_hand.entry(word).or_insert(0) += 1;
    }
    assert_eq!(report.words, 50_000);
    assert_eq!(report.counts, by_hand);
}
