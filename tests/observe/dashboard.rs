//! The dashboard endpoint over loopback: status codes, content types, a metric that changes as
//! events flow, `HEAD`, malformed, oversized or stalled requests refused, and a client that
//! trickles its request cut off at the request deadline.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crossbeam_channel::bounded;
use stageflow::observe::{Dashboard, DashboardHandle, ObserveError};
use stageflow::{SubscribeOptions, Topology};

use crate::common::{joined, next, LIMIT};
use crate::fixtures::{Push, Pushed, Sink};

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(LIMIT))
        .build()
        .into()
}

/// Status, content type and body of a GET.
fn get(url: &str) -> (u16, String, String) {
    let mut r = agent().get(url).call().unwrap();
    let ct = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (
        r.status().as_u16(),
        ct,
        r.body_mut().read_to_string().unwrap(),
    )
}

/// Sends raw bytes and reads the whole answer.
fn raw(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(LIMIT)).unwrap();
    let _ = s.write_all(request); // the server may close before reading it all
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn status_of(response: &str) -> u16 {
    response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {response:?}"))
}

struct Fixture {
    p: stageflow::ProducerHandle<Pushed>,
    c: stageflow::ConsumerHandle<Sink>,
    seen: crossbeam_channel::Receiver<usize>,
    dashboard: DashboardHandle,
    _topology: Topology,
}

fn serve(options: Dashboard) -> Fixture {
    let p = stageflow::producer(Pushed).name("web-src").spawn().unwrap();
    let (seen, seen_rx) = bounded(1024);
    let c = stageflow::consumer(Sink { seen, gate: None })
        .name("web-sink")
        .subscribe_to(&p, SubscribeOptions::new().max_demand(100))
        .unwrap()
        .spawn()
        .unwrap();
    let topology = Topology::new().with(&p).with(&c);
    let dashboard = options.serve("127.0.0.1:0", &topology).unwrap();
    Fixture {
        p,
        c,
        seen: seen_rx,
        dashboard,
        _topology: topology,
    }
}

impl Fixture {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.dashboard.local_addr())
    }
    fn end(self) {
        self.dashboard.stop();
        self.p.stop();
        joined(&self.c);
    }
}

#[test]
fn smoke_three_paths_with_their_content_types() {
    let f = serve(Dashboard::new().refresh(Duration::from_millis(20)));
    let (status, ct, body) = get(&f.url("/"));
    assert_eq!((status, ct.as_str()), (200, "text/html; charset=utf-8"));
    assert!(body.starts_with("<!DOCTYPE html>") && body.contains("/snapshot.json"));
    // No external assets: the only URL is the SVG namespace, nothing is linked or imported.
    assert_eq!(
        body.matches("http").count(),
        body.matches("http://www.w3.org/2000/svg").count(),
        "no external assets"
    );
    for linked in ["src=", "href=", "@import", "url("] {
        assert!(!body.contains(linked), "the page links {linked}");
    }
    let (status, ct, body) = get(&f.url("/metrics"));
    assert_eq!(
        (status, ct.as_str()),
        (200, "text/plain; version=0.0.4; charset=utf-8")
    );
    assert!(
        body.contains("# TYPE stageflow_events_in_total counter"),
        "{body}"
    );
    let (status, ct, body) = get(&f.url("/snapshot.json?x=1"));
    assert_eq!((status, ct.as_str()), (200, "application/json"));
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["stages"][1]["name"], "web-sink");
    assert!(f.dashboard.url().starts_with("http://127.0.0.1:"));
    f.end();
}

#[test]
fn a_metric_changes_as_events_flow() {
    let f = serve(Dashboard::new().refresh(Duration::from_millis(20)));
    let line = "stageflow_events_in_total{stage=\"web-sink\",kind=\"consumer\"}";
    let value = |body: &str| -> u64 {
        body.lines()
            .find_map(|l| l.strip_prefix(line))
            .unwrap_or_else(|| panic!("no {line} in\n{body}"))
            .trim()
            .parse()
            .unwrap()
    };
    assert_eq!(value(&get(&f.url("/metrics")).2), 0);
    f.p.cast(Push::Emit((0..42).collect())).unwrap();
    let mut got = 0;
    while got < 42 {
        got += next(&f.seen);
    }
    assert_eq!(value(&get(&f.url("/metrics")).2), 42);
    // The JSON catches up at its next refresh, with a rate.
    let deadline = std::time::Instant::now() + LIMIT;
    loop {
        let v: serde_json::Value = serde_json::from_str(&get(&f.url("/snapshot.json")).2).unwrap();
        if v["stages"][1]["events_in"] == 42 {
            assert!(v["interval_secs"].as_f64().unwrap() > 0.0);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the JSON never showed 42: {v}"
        );
        std::thread::sleep(Duration::from_millis(5)); // polling a page refreshed on a timer
    }
    f.end();
}

#[test]
fn only_get_on_the_three_paths() {
    let f = serve(Dashboard::new());
    let a = agent();
    let status =
        |r: Result<ureq::http::Response<ureq::Body>, ureq::Error>| r.unwrap().status().as_u16();
    assert_eq!(status(a.get(&f.url("/nope")).call()), 404);
    assert_eq!(status(a.get(&f.url("/metrics/x")).call()), 404);
    assert_eq!(status(a.post(&f.url("/nope")).send_empty()), 404);
    let r = a.post(&f.url("/metrics")).send_empty().unwrap();
    assert_eq!(r.status().as_u16(), 405);
    assert_eq!(r.headers().get("allow").unwrap(), "GET, HEAD");
    assert_eq!(status(a.delete(&f.url("/")).call()), 405);
    assert_eq!(status(a.head(&f.url("/nope")).call()), 404);
    f.end();
}

#[test]
fn head_gets_the_headers_without_the_body() {
    let f = serve(Dashboard::new());
    let addr = f.dashboard.local_addr();
    for path in ["/", "/metrics", "/snapshot.json"] {
        let reply = raw(addr, format!("HEAD {path} HTTP/1.1\r\n\r\n").as_bytes());
        assert_eq!(status_of(&reply), 200, "{path}: {reply}");
        let (head, body) = reply.split_once("\r\n\r\n").expect("a whole head");
        assert_eq!(body, "", "{path}: no body after the head");
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{path}: no Content-Length in {head}"));
        assert!(length > 0, "{path}: the length GET's body would have");
    }
    let (_, _, page) = get(&f.url("/"));
    let head = raw(addr, b"HEAD / HTTP/1.1\r\n\r\n");
    assert!(
        head.contains(&format!("Content-Length: {}\r\n", page.len())),
        "{head}"
    );
    f.end();
}

#[test]
fn a_client_trickling_its_request_is_cut_off_at_the_deadline() {
    const DEADLINE: Duration = Duration::from_millis(500);
    // One connection slot, and a per-read timeout the trickle never trips.
    let f = serve(
        Dashboard::new()
            .max_connections(1)
            .timeout(Duration::from_secs(30))
            .request_deadline(DEADLINE),
    );
    let addr = f.dashboard.local_addr();
    let start = Instant::now();
    let mut slow = TcpStream::connect(addr).unwrap();
    slow.write_all(b"GET /metrics HTTP/1.1\r\nX-Slow: ")
        .unwrap();
    // It holds the only slot: the next client is refused (503, or a reset if the refusal
    // closes before the request was read). The acceptor takes connections in order, so the
    // slow one is counted first.
    let refused = raw(addr, b"GET /metrics HTTP/1.1\r\n\r\n");
    assert!(
        refused.is_empty() || status_of(&refused) == 503,
        "{refused}"
    );
    // A byte every 20 ms (the read timeout paces it), until the server answers: before the
    // deadline, only a head of 8 KiB (minutes at this pace) or a 30 s stall would end it.
    slow.set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let mut reply = Vec::new();
    let mut buf = [0u8; 1024];
    let mut sent = 0;
    while reply.is_empty() {
        assert!(
            start.elapsed() < LIMIT,
            "not cut off after {LIMIT:?} ({sent} bytes trickled)"
        );
        if slow.write_all(b"a").is_err() {
            break;
        }
        sent += 1;
        match slow.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => reply.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("the slow client's connection failed before an answer: {e}"),
        }
    }
    let cut = start.elapsed();
    // Stop sending and read the rest of the answer.
    slow.set_read_timeout(Some(LIMIT)).unwrap();
    let _ = slow.read_to_end(&mut reply);
    let reply = String::from_utf8_lossy(&reply);
    assert_eq!(status_of(&reply), 408, "{reply}");
    assert!(
        cut >= DEADLINE,
        "cut off after {cut:?}, before the deadline"
    );
    // Its slot is free again: a normal request is served (once the server has closed the
    // slow connection, a moment after the 408).
    let served = Instant::now() + LIMIT;
    loop {
        let reply = raw(addr, b"GET /metrics HTTP/1.1\r\n\r\n");
        if !reply.is_empty() && status_of(&reply) == 200 {
            break;
        }
        assert!(
            Instant::now() < served,
            "never served after the cut: {reply}"
        );
        std::thread::yield_now();
    }
    f.end();
}

#[test]
fn malformed_oversized_and_stalled_requests_are_refused() {
    let f = serve(
        Dashboard::new()
            .max_request_bytes(512)
            .timeout(Duration::from_millis(300)),
    );
    let addr = f.dashboard.local_addr();
    assert_eq!(status_of(&raw(addr, b"\x16\x03\x01garbage\r\n\r\n")), 400);
    assert_eq!(
        status_of(&raw(addr, b"GET / HTTP/1.1\r\nno colon here\r\n\r\n")),
        400
    );
    assert_eq!(
        status_of(&raw(
            addr,
            b"GET / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"
        )),
        413
    );
    let long_line = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(600));
    assert_eq!(status_of(&raw(addr, long_line.as_bytes())), 414);
    let big_head = format!("GET / HTTP/1.1\r\nX-Big: {}\r\n\r\n", "b".repeat(600));
    assert_eq!(status_of(&raw(addr, big_head.as_bytes())), 431);
    // An endless head is cut at the limit, not read to its end.
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(LIMIT)).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\n").unwrap();
    let mut sent = 0;
    let mut reply = Vec::new();
    while sent < 64 * 1024 {
        if s.write_all(&[b'x'; 1024]).is_err() {
            break; // the server has closed
        }
        sent += 1024;
    }
    let _ = s.read_to_end(&mut reply);
    assert_eq!(status_of(&String::from_utf8_lossy(&reply)), 431);
    // A client that sends half a request and stalls gets 408 after the timeout...
    let mut stalled = TcpStream::connect(addr).unwrap();
    stalled.set_read_timeout(Some(LIMIT)).unwrap();
    stalled.write_all(b"GET /metr").unwrap();
    // ...and holds no one else back meanwhile.
    assert_eq!(get(&f.url("/metrics")).0, 200);
    let mut reply = String::new();
    let _ = stalled.read_to_string(&mut reply);
    assert_eq!(status_of(&reply), 408);
    // A client that connects and says nothing is dropped without an answer.
    let mut silent = TcpStream::connect(addr).unwrap();
    silent.set_read_timeout(Some(LIMIT)).unwrap();
    let mut reply = Vec::new();
    let _ = silent.read_to_end(&mut reply);
    assert!(reply.is_empty());
    // After all that, the server still serves.
    assert_eq!(get(&f.url("/")).0, 200);
    f.end();
}

#[test]
fn a_stuck_client_never_holds_a_stage_back() {
    let f = serve(
        Dashboard::new()
            .max_connections(2)
            .timeout(Duration::from_secs(30)),
    );
    let addr = f.dashboard.local_addr();
    // Two clients take every connection slot and never finish their requests.
    let stuck: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(b"GET / HTTP/1.1\r\n").unwrap();
            s
        })
        .collect();
    // The stages run on regardless.
    f.p.cast(Push::Emit((0..1000).collect())).unwrap();
    let mut got = 0;
    while got < 1000 {
        got += next(&f.seen);
    }
    // A third client is told to come back later rather than queued behind them (503, or a
    // reset if the refusal closes the socket before the request was read). The acceptor may
    // not have counted the stuck ones yet: retry until it has.
    let deadline = std::time::Instant::now() + LIMIT;
    loop {
        let reply = raw(addr, b"GET /metrics HTTP/1.1\r\n\r\n");
        if reply.is_empty() || status_of(&reply) == 503 {
            break;
        }
        assert_eq!(status_of(&reply), 200, "{reply}");
        assert!(
            std::time::Instant::now() < deadline,
            "never refused: {reply}"
        );
    }
    drop(stuck);
    // Once they leave, it serves again.
    let deadline = std::time::Instant::now() + LIMIT;
    while !raw(addr, b"GET /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 200 ") {
        assert!(std::time::Instant::now() < deadline, "never served again");
        std::thread::yield_now();
    }
    f.end();
}

#[test]
fn bad_options_and_addresses_are_errors() {
    let p = stageflow::producer(Pushed)
        .name("web-opts")
        .spawn()
        .unwrap();
    for (d, option) in [
        (Dashboard::new().refresh(Duration::ZERO), "refresh"),
        (Dashboard::new().max_request_bytes(10), "max_request_bytes"),
        (Dashboard::new().max_connections(0), "max_connections"),
        (Dashboard::new().timeout(Duration::ZERO), "timeout"),
        (
            Dashboard::new().request_deadline(Duration::from_millis(9)),
            "request_deadline",
        ),
    ] {
        match d.serve("127.0.0.1:0", &p) {
            Err(ObserveError::InvalidOption { option: o, .. }) => assert_eq!(o, option),
            other => panic!("{option}: {other:?}"),
        }
    }
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let err = Dashboard::new()
        .serve(taken.local_addr().unwrap(), &p)
        .unwrap_err();
    assert!(matches!(err, ObserveError::Bind(_)), "{err:?}");
    p.stop();
    joined(&p);
}

#[test]
fn the_json_keeps_a_bounded_history_and_the_process() {
    let f = serve(
        Dashboard::new()
            .refresh(Duration::from_millis(20))
            .history(Duration::from_millis(200)),
    );
    f.p.cast(Push::Emit((0..10).collect())).unwrap();
    let mut got = 0;
    while got < 10 {
        got += next(&f.seen);
    }
    // Points come every 20 ms; the history keeps 200 ms of them: wait until it has filled
    // (its oldest point is 180 ms or more older than its newest), then it stays bounded.
    let deadline = Instant::now() + LIMIT;
    let v = loop {
        let v: serde_json::Value = serde_json::from_str(&get(&f.url("/snapshot.json")).2).unwrap();
        let ages: Vec<f64> = v["history"]["ages_secs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_f64().unwrap())
            .collect();
        if ages.first().is_some_and(|a| *a >= 0.18) {
            assert!(ages[0] <= 0.2, "older than the span: {ages:?}");
            assert_eq!(ages.last(), Some(&0.0));
            break v;
        }
        assert!(Instant::now() < deadline, "the history never filled: {v}");
        std::thread::sleep(Duration::from_millis(5)); // polling a page refreshed on a timer
    };
    assert_eq!(v["history"]["span_secs"], 0.2);
    let points = v["history"]["ages_secs"].as_array().unwrap().len();
    let stages = v["history"]["stages"].as_array().unwrap();
    assert_eq!(stages.len(), 2);
    assert_eq!(stages[1]["name"], "web-sink");
    for s in stages {
        assert_eq!(s["out_per_sec"].as_array().unwrap().len(), points);
        assert_eq!(s["share_busy"].as_array().unwrap().len(), points);
    }
    // Per stage, the shares and the callback times; the process beside them (Linux).
    let sink = &v["stages"][1];
    for key in ["share_busy", "share_waiting_input", "share_waiting_demand"] {
        let share = sink[key].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&share), "{key} {share}");
    }
    assert!(sink["callback"]["count"].as_u64().is_some(), "{sink}");
    assert!(sink["per_event"]["p99_secs"].as_f64().is_some(), "{sink}");
    if cfg!(target_os = "linux") {
        assert!(v["process"]["threads"].as_u64().unwrap() > 2, "{v}");
    }
    // /metrics has the per-stage histograms and the process's figures.
    let metrics = get(&f.url("/metrics")).2;
    assert!(metrics.contains("# TYPE stageflow_stage_callback_seconds histogram"));
    if cfg!(target_os = "linux") {
        assert!(
            metrics.contains("# TYPE process_resident_memory_bytes gauge"),
            "{metrics}"
        );
    }
    crate::promtool::check(&metrics);
    f.end();
}

#[test]
fn too_long_a_history_is_refused() {
    let p = stageflow::producer(Pushed)
        .name("web-hist")
        .spawn()
        .unwrap();
    let too_long = Dashboard::new()
        .refresh(Duration::from_millis(10))
        .history(Duration::from_secs(3600));
    match too_long.serve("127.0.0.1:0", &p) {
        Err(ObserveError::InvalidOption { option, message }) => {
            assert_eq!(option, "history");
            assert!(message.contains("100000 points"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    // Zero keeps none.
    let none = Dashboard::new()
        .history(Duration::ZERO)
        .serve("127.0.0.1:0", &p)
        .unwrap();
    let body = get(&format!("http://{}/snapshot.json", none.local_addr())).2;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["history"]["ages_secs"].as_array().unwrap().len(), 0);
    none.stop();
    p.stop();
    joined(&p);
}
