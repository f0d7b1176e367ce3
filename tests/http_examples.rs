//! The HTTP examples, run offline as tests: each one's `run` and what its story promises.

#![cfg(feature = "http")]

use std::collections::BTreeSet;
use std::time::Duration;

#[allow(dead_code)]
#[path = "../examples/tweet_search.rs"]
mod tweet_search;
#[allow(dead_code)]
#[path = "../examples/tweet_stream.rs"]
mod tweet_stream;

fn quiet_stream() -> tweet_stream::Options {
    tweet_stream::Options {
        count: 30,
        delay: Duration::from_millis(2),
        print: false,
        ..tweet_stream::Options::default()
    }
}

#[test]
fn smoke() {
    assert_eq!(tweet_stream::run(quiet_stream()).unwrap().texts.len(), 30);
}

#[test]
fn tweet_stream_reads_every_tweet_in_order_and_pauses_for_the_slow_reader() {
    for v1 in [false, true] {
        let s = tweet_stream::run(tweet_stream::Options {
            v1,
            ..quiet_stream()
        })
        .unwrap();
        let expected: Vec<String> = (0..30)
            .map(|i| format!("tweet {i}: back-pressure reaches the server"))
            .collect();
        assert_eq!(s.texts, expected, "v1: {v1}");
        assert!(s.pauses >= 1, "the reader never paused: {s:?}");
        assert!(s.heartbeats >= 2, "{s:?}");
        assert_eq!(s.discarded, 0);
    }
}

#[test]
fn tweet_stream_firehose_drops_instead_of_pausing() {
    let s = tweet_stream::run(tweet_stream::Options {
        firehose: true,
        count: 400,
        delay: Duration::from_millis(1),
        ..quiet_stream()
    })
    .unwrap();
    assert_eq!(s.pauses, 0, "{s:?}");
    assert_eq!(s.texts.len() as u64 + s.discarded, 400, "{s:?}");
    assert!(s.discarded > 0, "{s:?}");
    assert_eq!(
        s.texts.last().map(String::as_str),
        Some("tweet 399: back-pressure reaches the server"),
        "the newest are kept"
    );
}

#[test]
fn tweet_search_gives_every_tweet_once_to_one_of_two_workers() {
    let handled = tweet_search::run(None, 60, false).unwrap();
    let ids: Vec<u64> = handled.iter().map(|(_, t)| t.id).collect();
    let unique: BTreeSet<u64> = ids.iter().copied().collect();
    assert_eq!(unique, (1..=60).collect(), "every tweet");
    assert_eq!(ids.len(), 60, "none twice");
    let workers: BTreeSet<&str> = handled.iter().map(|(w, _)| *w).collect();
    assert_eq!(workers.len(), 2, "both workers took part");
}
