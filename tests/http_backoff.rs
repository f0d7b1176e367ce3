//! Reconnects against a loopback server: a 429 waits for its `Retry-After`, a 500 backs off
//! exponentially, a server that never recovers makes the producer give up with the status and
//! body excerpt, a silent server is detected as a stall, and a server that cuts every
//! connection after a frame is backed off until a connection stays up long enough.

#![cfg(feature = "http")]

mod http_common;

use std::time::Duration;

use crossbeam_channel::bounded;
use http_common::{
    assert_retried_after_one_second, none_for, rate_limited_once, sink, stop, take, Server, LIMIT,
};
use serde_json::json;
use stageflow::http::{self, Backoff};
use stageflow::Reason;

/// Short, exact backoffs for tests.
fn quick() -> Backoff {
    Backoff::new()
        .network(Duration::from_millis(50), Duration::from_millis(200))
        .http(Duration::from_millis(100), Duration::from_millis(400))
        .rate_limit(Duration::from_millis(100), Duration::from_millis(400))
        .jitter(0.0)
}

#[test]
fn smoke() {
    let server = Server::start(|c| {
        if c.request.index == 0 {
            let _ = c.respond(503, &[], b"busy");
        } else {
            let _ = c.head(200, &[]);
            let _ = c.write(b"{\"ok\":true}\n");
            c.hold(LIMIT);
        }
    });
    let stream = http::stream(server.url("/"))
        .backoff(quick())
        .build()
        .unwrap();
    let stats = stream.stats();
    let producer = stageflow::producer(stream).spawn().unwrap();
    let (_c, rx) = sink(&producer, 10);
    assert_eq!(take(&rx, 1), [json!({"ok": true})]);
    let s = stats.snapshot();
    assert_eq!((s.requests, s.reconnects, s.last_status), (2, 1, Some(200)));
    assert_eq!(s.last_error.as_deref(), Some("status 503: busy"));
    stop(&producer);
}

#[test]
fn a_429_waits_for_its_retry_after() {
    let server = rate_limited_once(|c| {
        let _ = c.head(200, &[]);
        let _ = c.write(b"{\"n\":1}\n");
        c.hold(LIMIT);
    });
    // Without the header the wait would be 100 ms.
    let stream = http::stream(server.url("/"))
        .backoff(quick())
        .build()
        .unwrap();
    let producer = stageflow::producer(stream).spawn().unwrap();
    let (_c, rx) = sink(&producer, 10);
    assert_retried_after_one_second(&server);
    assert_eq!(take(&rx, 1), [json!({"n": 1})]);
    stop(&producer);
}

#[test]
fn a_500_backs_off_exponentially_then_gives_up_with_code_and_excerpt() {
    let server = Server::start(|c| {
        let _ = c.respond(500, &[], b"  database on fire  ");
    });
    let stream = http::stream(server.url("/"))
        .backoff(quick().max_attempts(4))
        .build()
        .unwrap();
    let stats = stream.stats();
    let producer = stageflow::producer(stream).spawn().unwrap();
    let (consumer, _rx) = sink(&producer, 10);
    let reason = producer.join_timeout(LIMIT).expect("gave up");
    let Reason::Error(message) = &reason else {
        panic!("{reason:?}")
    };
    assert!(message.contains("giving up after 4 failures"), "{message}");
    assert!(
        message.contains("status 500: database on fire"),
        "{message}"
    );
    let at: Vec<_> = server.pending_requests().iter().map(|r| r.at).collect();
    assert_eq!(at.len(), 4, "four attempts");
    let gaps: Vec<Duration> = at.windows(2).map(|w| w[1] - w[0]).collect();
    for (gap, least) in gaps.iter().zip([100, 200, 400]) {
        assert!(*gap >= Duration::from_millis(least), "gaps {gaps:?}");
    }
    assert!(gaps[2] < Duration::from_millis(2000), "gaps {gaps:?}");
    assert_eq!(stats.snapshot().last_status, Some(500));
    // The consumer's permanent subscription ends it with the same reason.
    assert_eq!(consumer.join_timeout(LIMIT), Some(reason));
}

#[test]
fn a_silent_server_is_a_stall_and_the_stream_reconnects() {
    let server = Server::start(|c| {
        let _ = c.head(200, &[]);
        let _ = c.write(format!("{{\"n\":{}}}\n", c.request.index).as_bytes());
        // Then nothing, not even a heartbeat.
        c.hold(LIMIT);
    });
    let stream = http::stream(server.url("/"))
        .stall_timeout(Duration::from_millis(300))
        .backoff(quick())
        .build()
        .unwrap();
    let stats = stream.stats();
    let producer = stageflow::producer(stream).spawn().unwrap();
    let (_c, rx) = sink(&producer, 10);
    assert_eq!(take(&rx, 2), [json!({"n": 0}), json!({"n": 1})]);
    let first = server.next_request(LIMIT);
    let second = server.next_request(LIMIT);
    let waited = second.at - first.at;
    assert!(
        waited >= Duration::from_millis(300),
        "reconnected after {waited:?}"
    );
    let s = stats.snapshot();
    assert!(s.stalls >= 1, "{s:?}");
    assert!(s.last_error.unwrap().contains("stalled"));
    stop(&producer);
}

#[test]
fn a_refused_connection_backs_off_as_a_network_error() {
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let stream = http::stream(format!("http://127.0.0.1:{port}/"))
        .backoff(quick().max_attempts(3))
        .build()
        .unwrap();
    let stats = stream.stats();
    let producer = stageflow::producer(stream).spawn().unwrap();
    let (_c, _rx) = sink(&producer, 10);
    let reason = producer.join_timeout(LIMIT).expect("gave up");
    assert!(
        matches!(&reason, Reason::Error(m) if m.contains("request failed")),
        "{reason:?}"
    );
    let s = stats.snapshot();
    assert_eq!((s.requests, s.reconnects, s.last_status), (3, 2, None));
}

/// A network step for the cutting-server tests: waits 0, 50, 100, 150, 200 ms...
const STEP: Duration = Duration::from_millis(50);

fn cutting_backoff() -> Backoff {
    quick().network(STEP, Duration::from_secs(2))
}

#[test]
fn a_server_that_cuts_every_connection_after_a_frame_is_backed_off() {
    // Connections 0 to 4 are cut right after their frame; 5 stays up.
    let server = Server::start(|c| {
        let _ = c.head(200, &[]);
        let _ = c.write(format!("{{\"n\":{}}}\n", c.request.index).as_bytes());
        if c.request.index == 5 {
            c.hold(LIMIT);
        }
    });
    // The default healthy period (30 s): none of these connections is healthy.
    let stream = http::stream(server.url("/"))
        .backoff(cutting_backoff())
        .build()
        .unwrap();
    let stats = stream.stats();
    let producer = stageflow::producer(stream).spawn().unwrap();
    let (_c, rx) = sink(&producer, 10);
    let got: Vec<u64> = take(&rx, 6)
        .iter()
        .map(|e| e["n"].as_u64().unwrap())
        .collect();
    assert_eq!(got, [0, 1, 2, 3, 4, 5]);
    // Every frame reset the counts before: each wait was 0 and the reconnects came 25 a
    // second against a real server. Now the fifth failure in a row waits 4 steps.
    let s = stats.snapshot();
    assert_eq!(s.last_backoff, Some(STEP * 4), "{s:?}");
    assert_eq!((s.requests, s.reconnects), (6, 5), "{s:?}");
    // The server saw the waits grow (lower bounds only: a loaded machine is never early).
    let at: Vec<_> = (0..6).map(|_| server.next_request(LIMIT).at).collect();
    let gaps: Vec<Duration> = at.windows(2).map(|w| w[1] - w[0]).collect();
    for (i, gap) in gaps.iter().enumerate() {
        assert!(*gap >= STEP * i as u32, "gaps {gaps:?}");
    }
    stop(&producer);
}

#[test]
fn a_connection_up_for_the_healthy_period_resets_the_backoff() {
    const HEALTHY: Duration = Duration::from_millis(200);
    let (cut_tx, cut) = bounded::<()>(1);
    // Connections 0 and 1 are cut after their frame; 2 stays up until the test cuts it; 3
    // stays up.
    let server = Server::start(move |c| {
        let _ = c.head(200, &[]);
        let _ = c.write(format!("{{\"n\":{}}}\n", c.request.index).as_bytes());
        match c.request.index {
            2 => {
                let _ = cut.recv_timeout(LIMIT);
            }
            3 => c.hold(LIMIT),
            _ => {}
        }
    });
    let stream = http::stream(server.url("/"))
        .backoff(cutting_backoff().healthy_after(HEALTHY))
        .build()
        .unwrap();
    let stats = stream.stats();
    let producer = stageflow::producer(stream).spawn().unwrap();
    let (_c, rx) = sink(&producer, 10);
    assert_eq!(take(&rx, 3).len(), 3);
    assert_eq!(
        stats.snapshot().last_backoff,
        Some(STEP),
        "two cuts in a row"
    );
    // Connection 2 has delivered its frame, so the reader's clock for it is running: keep it
    // up for longer than the healthy period (the time passing is what is tested here), then
    // cut it.
    none_for(&rx, HEALTHY * 2);
    cut_tx.send(()).unwrap();
    assert_eq!(take(&rx, 1)[0]["n"], 3);
    let s = stats.snapshot();
    assert_eq!(
        s.last_backoff,
        Some(Duration::ZERO),
        "a healthy connection's drop reconnects at once: {s:?}"
    );
    stop(&producer);
}
