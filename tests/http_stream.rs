//! The streaming HTTP producer against a loopback server: framings and heartbeats, frames
//! split across reads, bad input (malformed, oversize, cut mid-frame), SSE resume, the
//! stage answering and stopping while its reader is blocked, the keep-reading policy, and
//! build-time errors.

#![cfg(feature = "http")]

mod http_common;

use std::time::{Duration, Instant};

use crossbeam_channel::bounded;
use http_common::{manual_sink, none_for, sink, stop, take, wait_for, FullListener, Server, LIMIT};
use serde::Deserialize;
use serde_json::json;
use stageflow::http::{self, Framing, HttpError, HttpMsg, ReadPolicy};
use stageflow::{BufferKeep, Reason};

#[derive(Debug, Deserialize, PartialEq)]
struct N {
    n: u32,
}

#[test]
fn smoke() {
    let server = Server::start(|c| {
        let _ = c.head(200, &[("Content-Type", "application/json")]);
        let _ = c.write(b"{\"n\":1}\r\n{\"n\":2}\r\n{\"n\":3}\r\n");
        c.hold(LIMIT);
    });
    let tweets = http::stream(server.url("/2/tweets/sample/stream"))
        .build()
        .unwrap();
    let stats = tweets.stats();
    let producer = stageflow::producer(tweets).spawn().unwrap();
    let (consumer, rx) = sink(&producer, 10);
    assert_eq!(
        take(&rx, 3),
        [json!({"n": 1}), json!({"n": 2}), json!({"n": 3})]
    );
    assert_eq!(server.next_request(LIMIT).path, "/2/tweets/sample/stream");
    let s = stats.snapshot();
    assert_eq!((s.frames, s.requests, s.last_status), (3, 1, Some(200)));
    assert_eq!(s.bytes_read, 27);
    assert_eq!(stop(&producer), Reason::Shutdown);
    consumer
        .join_timeout(LIMIT)
        .expect("the consumer ends with its producer");
}

#[test]
fn heartbeats_cost_no_demand_in_each_framing() {
    let cases: [(Framing, &[u8]); 3] = [
        (Framing::Ndjson, b"\r\n{\"n\":1}\r\n\r\n\n{\"n\":2}\r\n"),
        (
            Framing::LengthPrefixed,
            b"\r\n9\r\n{\"n\":1}\r\n\r\n\r\n9\r\n{\"n\":2}\r\n",
        ),
        (
            Framing::Sse,
            b": hi\n\ndata: {\"n\":1}\n\n:\n: keep-alive\ndata: {\"n\":2}\n\n",
        ),
    ];
    for (framing, body) in cases {
        let server = Server::start(move |c| {
            let _ = c.head(200, &[]);
            let _ = c.write(body);
            c.hold(LIMIT);
        });
        let stream = http::stream(server.url("/"))
            .framing(framing)
            .json::<N>()
            .build()
            .unwrap();
        let stats = stream.stats();
        let producer = stageflow::producer(stream).spawn().unwrap();
        // One event of demand at a time: the heartbeats must not use it up.
        let (_c, rx) = sink(&producer, 1);
        assert_eq!(take(&rx, 2), [N { n: 1 }, N { n: 2 }], "{framing}");
        assert_eq!(stats.snapshot().heartbeats, 3, "{framing}");
        assert_eq!(stats.snapshot().frames, 2, "{framing}");
        stop(&producer);
    }
}

#[test]
fn a_frame_split_across_many_reads_arrives_whole() {
    let big = json!({"text": "x".repeat(3000), "id": 7});
    let mut body = serde_json::to_vec(&big).unwrap();
    body.extend_from_slice(b"\r\n");
    let total = body.len() as u64;
    let server = Server::start(move |c| {
        let _ = c.head(200, &[]);
        for piece in body.chunks(7) {
            if c.write(piece).is_err() {
                return;
            }
        }
        c.hold(LIMIT);
    });
    let stream = http::stream(server.url("/")).read_size(5).build().unwrap();
    let stats = stream.stats();
    let producer = stageflow::producer(stream).spawn().unwrap();
    let (_c, rx) = sink(&producer, 10);
    assert_eq!(take(&rx, 1), [big]);
    assert_eq!(stats.snapshot().bytes_read, total);
    stop(&producer);
}

#[test]
fn malformed_frames_are_counted_and_skipped() {
    let server = Server::start(|c| {
        let _ = c.head(200, &[]);
        let _ = c.write(b"{\"n\":1}\nnot json\n{\"n\":\"one\"}\n{\"n\":2}\n");
        c.hold(LIMIT);
    });
    let stream = http::stream(server.url("/")).json::<N>().build().unwrap();
    let stats = stream.stats();
    let producer = stageflow::producer(stream).spawn().unwrap();
    let (_c, rx) = sink(&producer, 10);
    assert_eq!(take(&rx, 2), [N { n: 1 }, N { n: 2 }]);
    let s = stats.snapshot();
    assert_eq!((s.frames, s.malformed, s.requests), (2, 2, 1));
    stop(&producer);
}

#[test]
fn an_oversize_frame_is_refused_and_the_connection_reopened() {
    let server = Server::start(|c| {
        let _ = c.head(200, &[]);
        if c.request.index == 0 {
            let long = format!("{{\"n\":9,\"pad\":\"{}\"}}\n", "x".repeat(100));
            let _ = c.write(format!("{{\"n\":1}}\n{long}{{\"n\":3}}\n").as_bytes());
        } else {
            let _ = c.write(b"{\"n\":2}\n");
        }
        c.hold(LIMIT);
    });
    let stream = http::stream(server.url("/"))
        .max_frame(32)
        .json::<N>()
        .build()
        .unwrap();
    let stats = stream.stats();
    let producer = stageflow::producer(stream).spawn().unwrap();
    let (_c, rx) = sink(&producer, 10);
    assert_eq!(take(&rx, 2), [N { n: 1 }, N { n: 2 }]);
    none_for(&rx, Duration::from_millis(100));
    let s = stats.snapshot();
    assert_eq!((s.oversize, s.reconnects), (1, 1));
    assert!(s.last_error.unwrap().contains("frame too long"));
    stop(&producer);
}

#[test]
fn a_cut_inside_a_frame_emits_no_partial_event_and_reconnects() {
    let server = Server::start(|c| {
        let _ = c.head(200, &[]);
        if c.request.index == 0 {
            let _ = c.write(b"{\"n\":1}\n{\"n\":");
            // Closing the connection ends the body mid-frame.
        } else {
            let _ = c.write(b"{\"n\":2}\n");
            c.hold(LIMIT);
        }
    });
    let stream = http::stream(server.url("/")).json::<N>().build().unwrap();
    let stats = stream.stats();
    let producer = stageflow::producer(stream).spawn().unwrap();
    let (_c, rx) = sink(&producer, 10);
    assert_eq!(take(&rx, 2), [N { n: 1 }, N { n: 2 }]);
    none_for(&rx, Duration::from_millis(100));
    let s = stats.snapshot();
    assert_eq!((s.malformed, s.reconnects, s.requests), (0, 1, 2));
    stop(&producer);
}

#[test]
fn sse_resumes_with_last_event_id() {
    let server = Server::start(|c| {
        let _ = c.head(200, &[("Content-Type", "text/event-stream")]);
        if c.request.index == 0 {
            let _ = c.write(
                b"retry: 10\nid: 1\ndata: a\n\nid: 2\nevent: tick\ndata: b\n\nid: 3\ndata: c",
            );
        } else if c.request.header("Last-Event-ID") == Some("2") {
            let _ = c.write(b"id: 3\ndata: c\n\n");
            c.hold(LIMIT);
        }
    });
    let stream = http::stream(server.url("/events"))
        .framing(Framing::Sse)
        .decode_with(|f| {
            Ok((
                f.id().map(str::to_owned),
                f.event().map(str::to_owned),
                String::from_utf8_lossy(f.data()).into_owned(),
            ))
        })
        .build()
        .unwrap();
    let producer = stageflow::producer(stream).spawn().unwrap();
    let (_c, rx) = sink(&producer, 10);
    let got = take(&rx, 3);
    let s = |x: &str| Some(x.to_owned());
    assert_eq!(
        got,
        [
            (s("1"), None, "a".to_owned()),
            (s("2"), s("tick"), "b".to_owned()),
            (s("3"), None, "c".to_owned())
        ]
    );
    assert_eq!(server.next_request(LIMIT).header("Last-Event-ID"), None);
    let second = server.next_request(LIMIT);
    assert_eq!(second.header("Last-Event-ID"), Some("2"));
    stop(&producer);
}

/// A server that sends the headers, then nothing: the reader is blocked in a read.
fn silent_server(closed: crossbeam_channel::Sender<bool>) -> Server {
    Server::start(move |c| {
        let _ = c.head(200, &[]);
        let _ = closed.send(c.wait_closed(LIMIT));
    })
}

#[test]
fn a_call_is_answered_while_the_reader_is_blocked() {
    let (closed_tx, _closed) = bounded(1);
    let server = silent_server(closed_tx);
    let producer = stageflow::producer(http::stream(server.url("/")).build().unwrap())
        .spawn()
        .unwrap();
    let (_c, _rx) = sink(&producer, 10);
    server.next_request(LIMIT);
    let t = Instant::now();
    let counters = producer
        .call(HttpMsg::counters, Duration::from_secs(1))
        .unwrap();
    assert!(t.elapsed() < Duration::from_secs(1));
    assert_eq!(counters.requests, 1);
    stop(&producer);
}

#[test]
fn stop_during_a_blocked_read_closes_the_connection_at_once() {
    let (closed_tx, closed) = bounded(1);
    let server = silent_server(closed_tx);
    let stream = http::stream(server.url("/")).build().unwrap();
    let stats = stream.stats();
    let producer = stageflow::producer(stream).spawn().unwrap();
    let (_c, _rx) = sink(&producer, 10);
    server.next_request(LIMIT);
    wait_for("the response", LIMIT, || {
        stats.snapshot().last_status == Some(200)
    });
    let t = Instant::now();
    producer.stop();
    let reason = producer.join_timeout(Duration::from_secs(1));
    assert_eq!(reason, Some(Reason::Shutdown), "stopped within a second");
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "took {:?}",
        t.elapsed()
    );
    assert_eq!(
        closed.recv_timeout(LIMIT),
        Ok(true),
        "the server saw the connection close"
    );
}

#[test]
fn stop_during_a_hanging_connect_does_not_wait_for_it() {
    let full = FullListener::start();
    // The default connect timeout (10 s): the connect outlasts the test unless interrupted.
    let stream = http::stream(format!("http://{}/", full.addr))
        .build()
        .unwrap();
    let producer = stageflow::producer(stream).spawn().unwrap();
    let (_c, _rx) = sink(&producer, 10);
    wait_for("the reader's connect to hang", LIMIT, || {
        full.connect_hanging()
    });
    let t = Instant::now();
    producer.stop();
    let reason = producer.join_timeout(LIMIT);
    let took = t.elapsed();
    eprintln!("stop during a hanging connect took {took:?}");
    assert_eq!(reason, Some(Reason::Shutdown));
    // It took 2 s (the link waited for a connect nothing can interrupt); now it does not
    // wait for the connect at all.
    assert!(took < Duration::from_secs(1), "took {took:?}");
}

#[test]
fn a_stop_waits_for_a_decoder_still_running_no_longer_than_join_timeout() {
    const JOIN: Duration = Duration::from_millis(200);
    let server = Server::start(|c| {
        let _ = c.head(200, &[]);
        let _ = c.write(b"{\"n\":1}\n");
        c.hold(LIMIT);
    });
    let (blocked_tx, blocked) = bounded(1);
    let (gate_tx, gate) = bounded::<()>(1);
    let stream = http::stream(server.url("/"))
        .join_timeout(JOIN)
        .decode_with(move |f| {
            let _ = blocked_tx.try_send(());
            let _ = gate.recv_timeout(LIMIT);
            Ok(f.data().to_vec())
        })
        .build()
        .unwrap();
    let producer = stageflow::producer(stream).spawn().unwrap();
    let (_c, _rx) = sink(&producer, 10);
    blocked
        .recv_timeout(LIMIT)
        .expect("the decoder got the frame");
    let t = Instant::now();
    producer.stop();
    let reason = producer.join_timeout(LIMIT);
    let took = t.elapsed();
    assert_eq!(reason, Some(Reason::Shutdown));
    assert!(took >= JOIN, "did not wait for the decoder: {took:?}");
    // The wait was a fixed 2 s before.
    assert!(took < Duration::from_millis(1500), "took {took:?}");
    gate_tx.send(()).unwrap();
}

#[test]
fn the_last_consumer_leaving_stops_the_producer_when_asked() {
    let (closed_tx, closed) = bounded(1);
    let server = silent_server(closed_tx);
    let stream = http::stream(server.url("/"))
        .stop_on_cancel()
        .build()
        .unwrap();
    let producer = stageflow::producer(stream).spawn().unwrap();
    let (consumer, _rx) = sink(&producer, 10);
    server.next_request(LIMIT);
    consumer.stop();
    assert_eq!(producer.join_timeout(LIMIT), Some(Reason::Normal));
    assert_eq!(closed.recv_timeout(LIMIT), Ok(true));
}

#[test]
fn keep_reading_drops_by_the_buffer_policy_and_counts_every_discard() {
    let (done_tx, done) = bounded(1);
    let server = Server::start(move |c| {
        let _ = c.head(200, &[]);
        let body: String = (0..1000).map(|i| format!("{{\"n\":{i}}}\n")).collect();
        let _ = c.write(body.as_bytes());
        let _ = done_tx.send(());
    });
    let stream = http::stream(server.url("/"))
        .read_policy(ReadPolicy::KeepReading)
        .finish_at_end(true)
        .json::<N>()
        .build()
        .unwrap();
    let stats = stream.stats();
    let producer = stageflow::producer(stream)
        .buffer_size(10)
        .buffer_keep(BufferKeep::Last)
        .spawn()
        .unwrap();
    // A consumer with no demand at all: the reader connects on the first demand, so give it
    // one event's worth, then nothing until the body has been read whole.
    let (consumer, sub, rx) = manual_sink(&producer, 1000);
    consumer.ask(sub, 1).unwrap();
    done.recv_timeout(LIMIT)
        .expect("the server wrote everything");
    wait_for("all frames decoded", LIMIT, || {
        stats.snapshot().frames == 1000
    });
    let first = take(&rx, 1);
    assert_eq!(first, [N { n: 0 }]);
    consumer.ask(sub, 1000).unwrap();
    assert_eq!(
        producer.join_timeout(LIMIT),
        Some(Reason::Normal),
        "finished at the end"
    );
    let rest: Vec<u32> = take(&rx, 10).into_iter().map(|e| e.n).collect();
    assert_eq!(rest, (990..1000).collect::<Vec<_>>(), "the last ten kept");
    none_for(&rx, Duration::from_millis(50));
    assert_eq!(stats.snapshot().discarded, 989);
    assert_eq!(producer.counters().discarded, 989);
    assert_eq!(stats.snapshot().pauses, 0, "never paused for demand");
}

#[test]
fn bad_options_are_build_errors_naming_the_option() {
    let option = |r: Result<http::HttpStream<serde_json::Value>, HttpError>| match r {
        Err(HttpError::InvalidOption { option, message }) => (option, message),
        Ok(_) => panic!("built"),
        Err(e) => panic!("{e}"),
    };
    let (o, m) = option(http::stream("localhost:8080/x").build());
    assert_eq!(o, "url");
    assert!(m.contains("\"localhost:8080/x\""), "{m}");
    assert_eq!(option(http::stream("http://").build()).0, "url");
    // ureq would connect to port 80 for these.
    for url in ["http://127.0.0.1:99999/", "http://127.0.0.1:0/"] {
        let (o, m) = option(http::stream(url).build());
        assert_eq!(o, "url", "{url}");
        assert!(m.contains("port from 1 to 65535"), "{m}");
    }
    let (o, m) = option(http::stream("http://a").header("Bad Name", "x").build());
    assert_eq!(o, "header");
    assert!(m.contains("Bad Name"), "{m}");
    assert_eq!(
        option(http::stream("http://a").header("X", "a\nb").build()).0,
        "header"
    );
    assert_eq!(
        option(http::stream("http://a").max_frame(0).build()).0,
        "max_frame"
    );
    assert_eq!(
        option(http::stream("http://a").read_size(0).build()).0,
        "read_size"
    );
    let (o, m) = option(
        http::stream("http://a")
            .stall_timeout(Duration::ZERO)
            .build(),
    );
    assert_eq!(o, "stall_timeout");
    assert!(m.contains("0ns"), "{m}");
    let bad = http::Backoff::new().jitter(-1.0);
    assert_eq!(
        option(http::stream("http://a").backoff(bad).build()).0,
        "backoff.jitter"
    );
}
