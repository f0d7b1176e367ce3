//! The `top` example, run as a test: it draws frames and finds its slow stage.

#[allow(dead_code)]
#[path = "../../examples/top.rs"]
mod top;

use std::time::Duration;

#[test]
fn top_marks_the_slow_stage_as_the_bottleneck() {
    let seen = top::run(top::Options {
        run_for: Duration::from_millis(1200),
        refresh: Duration::from_millis(200),
        slow: Duration::from_micros(300),
        print: false,
        serve: None,
    })
    .unwrap();
    assert!(seen.frames.len() >= 5, "{} frames", seen.frames.len());
    let enrich = seen
        .frames
        .iter()
        .filter(|s| s.bottleneck_stage().is_some_and(|b| b.name == "enrich"))
        .count();
    // The slow stage is the bottleneck in most frames (a snapshot is an instant: now and
    // then it catches the slow stage between batches).
    assert!(
        enrich * 2 > seen.frames.len(),
        "enrich was the bottleneck in {enrich} of {} frames; last:\n{}",
        seen.frames.len(),
        seen.frames.last().unwrap()
    );
    let store = seen.frames.last().unwrap().stage("store").unwrap();
    assert!(store.events_in > 0 && store.in_per_sec > 0.0);
    assert!(seen.last.all_ended(), "stopped:\n{}", seen.last);
}
