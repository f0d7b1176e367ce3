//! The sink: `XADD` in pipelined batches, `MAXLEN ~`, JSON round trip with a source, a stop
//! seen while it retries; and the builders' option errors.

use std::time::{Duration, Instant};

use stageflow::redis::{self as rs, StreamError};
use stageflow::SubscribeOptions;

use crate::{connect, recv_n, server_or_skip, xlen};

#[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
struct Job {
    n: u64,
}

#[test]
fn the_sink_appends_in_batches_and_a_source_reads_them_back() {
    let server = server_or_skip!();
    let sink = rs::sink(server.url(), "out")
        .json::<Job>("json")
        .build()
        .unwrap();
    let stats = sink.stats();
    let jobs = stageflow::from_iter((0..500).map(|n| Job { n }))
        .spawn()
        .unwrap();
    let consumer = stageflow::consumer(sink)
        .subscribe_to(&jobs, SubscribeOptions::new().max_demand(100))
        .unwrap()
        .spawn()
        .unwrap();
    assert_eq!(consumer.join(), stageflow::Reason::Normal);
    let s = stats.snapshot();
    assert_eq!(s.added, 500, "{s:?}");
    assert!(
        s.batches >= 5 && s.batches <= 10,
        "one round trip per batch: {s:?}"
    );
    let mut con = connect(&server);
    assert_eq!(xlen(&mut con, "out"), 500);
    let source = rs::stream(server.url(), "out")
        .json::<Job>("json")
        .build()
        .unwrap();
    let producer = stageflow::producer(source.producer()).spawn().unwrap();
    let (tx, rx) = crossbeam_channel::unbounded();
    let consumer = stageflow::consumer(stageflow::fns::ForEach::new(
        move |m: stageflow::pipeline::Message<Job>| {
            tx.send(m.data.n).unwrap();
        },
    ))
    .subscribe_to(&producer, SubscribeOptions::new().max_demand(50))
    .unwrap()
    .spawn()
    .unwrap();
    let got = recv_n(&rx, 500, Duration::from_secs(10), "jobs read back");
    assert_eq!(got, (0..500).collect::<Vec<_>>(), "in stream order");
    producer.stop();
    consumer.join();
}

#[test]
fn maxlen_trims_the_stream_approximately() {
    let server = server_or_skip!();
    let sink = rs::sink(server.url(), "out").maxlen(100).build().unwrap();
    let stats = sink.stats();
    let fields =
        (0..5000u32).map(|i| rs::Fields::from([("i".to_owned(), i.to_string().into_bytes())]));
    let source = stageflow::from_iter(fields).spawn().unwrap();
    let consumer = stageflow::consumer(sink)
        .subscribe_to(&source, SubscribeOptions::new())
        .unwrap()
        .spawn()
        .unwrap();
    consumer.join();
    assert_eq!(stats.snapshot().added, 5000);
    let len = xlen(&mut connect(&server), "out");
    assert!((100..1000).contains(&len), "trimmed to about 100: {len}");
}

#[test]
fn bad_options_are_errors_naming_the_option() {
    let url = "redis://127.0.0.1:1/";
    let option = |r: Result<rs::StreamSource<rs::Entry>, StreamError>| match r {
        Err(StreamError::InvalidOption { option, .. }) => option,
        other => panic!("expected an invalid option, got {other:?}"),
    };
    assert_eq!(option(rs::stream("nope://x", "s").build()), "url");
    assert_eq!(option(rs::stream(url, "").build()), "stream");
    assert_eq!(option(rs::stream(url, "s").group("").build()), "group");
    assert_eq!(
        option(rs::stream(url, "s").max_count(0).build()),
        "max_count"
    );
    assert_eq!(
        option(rs::stream(url, "s").block(Duration::from_secs(9)).build()),
        "block"
    );
    assert_eq!(
        option(rs::stream(url, "s").dead_letter("s", 3).build()),
        "dead_letter"
    );
    assert_eq!(
        option(rs::stream(url, "s").dead_letter("d", 0).build()),
        "dead_letter"
    );
    assert_eq!(
        option(rs::stream(url, "s").claim_idle(Duration::ZERO).build()),
        "claim_idle"
    );
    let e = rs::sink(url, "s").maxlen(0).build().unwrap_err();
    assert_eq!(
        e.to_string(),
        "redis: invalid option `maxlen`: expected at least 1, got 0"
    );
}

#[test]
fn a_stop_ends_the_retries_of_a_sink_whose_server_is_gone() {
    // A loopback port nothing listens on: every connect is refused at once, and the sink
    // retries its batch for its write timeout (30 s by default), backing off up to 2 s.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let sink = rs::sink(format!("redis://127.0.0.1:{port}/"), "out")
        .json::<Job>("json")
        .build()
        .unwrap();
    let stats = sink.stats();
    let jobs = stageflow::from_iter((0..10).map(|n| Job { n }))
        .spawn()
        .unwrap();
    let consumer = stageflow::consumer(sink)
        .subscribe_to(&jobs, SubscribeOptions::new().max_demand(100))
        .unwrap()
        .spawn()
        .unwrap();
    // Retrying: two refused connects (the second after a 50 ms backoff wait).
    let limit = Instant::now() + Duration::from_secs(10);
    while stats.snapshot().errors < 2 {
        assert!(
            Instant::now() < limit,
            "never retried: {:?}",
            stats.snapshot()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let t = Instant::now();
    consumer.stop();
    let ended = consumer.join_timeout(Duration::from_secs(10));
    let took = t.elapsed();
    eprintln!("the sink stopped {took:?} after the stop");
    assert!(
        ended.is_some(),
        "the sink did not stop within 10 s: {:?}",
        stats.snapshot()
    );
    // It saw the stop at its next look (the retries used to go on for up to 30 s).
    assert!(took < Duration::from_secs(2), "took {took:?}");
    let s = stats.snapshot();
    assert_eq!(
        (s.added, s.dropped),
        (0, 10),
        "the batch was given up: {s:?}"
    );
}
