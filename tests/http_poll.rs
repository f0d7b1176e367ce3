//! The polling producer against a loopback search endpoint: cursors advance, no item comes
//! twice, it fetches only when demand exceeds what it holds, and an empty page makes it wait
//! its interval before asking again.

#![cfg(feature = "http")]

mod http_common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_common::{
    assert_retried_after_one_second, none_for, rate_limited_once, sink, stop, take, wait_for,
    FullListener, Server, LIMIT,
};
use serde_json::{json, Value};
use stageflow::http::{self, HttpError, Page};
use stageflow::Reason;

/// `/search?since_id=N`: up to 5 items with ids above N, up to `available`.
fn search_server(available: Arc<AtomicU64>) -> Server {
    Server::start(move |c| {
        let since: u64 = c
            .request
            .path
            .split("since_id=")
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let top = available.load(Ordering::Relaxed);
        let ids: Vec<u64> = (since + 1..=top).take(5).collect();
        let body = match ids.last() {
            Some(newest) => json!({
                "data": ids.iter().map(|i| json!({"id": i.to_string(), "text": format!("tweet {i}")})).collect::<Vec<_>>(),
                "meta": {"newest_id": newest.to_string(), "result_count": ids.len()}
            }),
            None => json!({"meta": {"result_count": 0}}),
        };
        let _ = c.respond(
            200,
            &[("Content-Type", "application/json")],
            body.to_string().as_bytes(),
        );
    })
}

fn search(server: &Server) -> http::PollBuilder<u64, String> {
    let base = server.url("/search");
    http::poll(
        move |since: Option<&String>| match since {
            Some(id) => format!("{base}?since_id={id}"),
            None => base.clone(),
        },
        |body: Value| {
            let ids = body["data"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|t| t["id"].as_str().and_then(|s| s.parse().ok()).ok_or("no id"))
                .collect::<Result<Vec<u64>, _>>()?;
            let newest = body["meta"]["newest_id"].as_str().map(str::to_owned);
            Ok(Page::new(ids, newest))
        },
    )
}

#[test]
fn smoke() {
    let server = search_server(Arc::new(AtomicU64::new(3)));
    let producer = stageflow::producer(search(&server).build().unwrap())
        .spawn()
        .unwrap();
    let (_c, rx) = sink(&producer, 10);
    assert_eq!(take(&rx, 3), [1, 2, 3]);
    stop(&producer);
}

#[test]
fn cursors_advance_no_item_twice_and_an_empty_page_waits_the_interval() {
    let available = Arc::new(AtomicU64::new(12));
    let server = search_server(available.clone());
    let interval = Duration::from_millis(200);
    let poll = search(&server).interval(interval).build().unwrap();
    let stats = poll.stats();
    let producer = stageflow::producer(poll).spawn().unwrap();
    let (_c, rx) = sink(&producer, 4);
    assert_eq!(take(&rx, 12), (1..=12).collect::<Vec<_>>());

    // Pages of 5, 5 and 2: three fetches, no more while events were held.
    let paths: Vec<String> = (0..4).map(|_| server.next_request(LIMIT).path).collect();
    assert_eq!(
        paths,
        [
            "/search",
            "/search?since_id=5",
            "/search?since_id=10",
            "/search?since_id=12"
        ]
    );
    // Nothing new: the next request waits the interval.
    let empty = server.next_request(LIMIT);
    let again = server.next_request(LIMIT);
    assert_eq!(again.path, "/search?since_id=12");
    assert!(
        again.at - empty.at >= interval,
        "asked again after {:?}",
        again.at - empty.at
    );

    available.store(15, Ordering::Relaxed);
    assert_eq!(take(&rx, 3), [13, 14, 15]);
    none_for(&rx, Duration::from_millis(300));
    let s = stats.snapshot();
    assert_eq!((s.frames, s.malformed, s.last_status), (15, 0, Some(200)));
    stop(&producer);
}

#[test]
fn a_refused_page_is_counted_and_the_interval_waited() {
    let server = Server::start(|c| {
        let _ = c.respond(200, &[], b"{\"data\": \"not a list\"}");
    });
    let base = server.url("/");
    let poll = http::poll(
        move |_: Option<&()>| base.clone(),
        |body: Value| match body["data"].as_array() {
            Some(_) => Ok(Page::new(vec![1u8], None)),
            None => Err("data is not a list".to_owned()),
        },
    )
    .interval(Duration::from_millis(100))
    .build()
    .unwrap();
    let stats = poll.stats();
    let producer = stageflow::producer(poll).spawn().unwrap();
    let (_c, rx) = sink(&producer, 10);
    let first = server.next_request(LIMIT);
    let second = server.next_request(LIMIT);
    assert!(second.at - first.at >= Duration::from_millis(100));
    none_for(&rx, Duration::from_millis(10));
    assert!(stats.snapshot().malformed >= 1);
    assert!(stats
        .snapshot()
        .last_error
        .unwrap()
        .contains("data is not a list"));
    stop(&producer);
}

#[test]
fn a_429_page_waits_for_its_retry_after() {
    let server = rate_limited_once(|c| {
        let body = json!({"data": [{"id": "1"}], "meta": {"newest_id": "1"}});
        let _ = c.respond(200, &[], body.to_string().as_bytes());
    });
    // Without the header the wait would be 100 ms.
    let quick = http::Backoff::new()
        .rate_limit(Duration::from_millis(100), Duration::from_millis(400))
        .jitter(0.0);
    let poll = search(&server).backoff(quick).build().unwrap();
    let producer = stageflow::producer(poll).spawn().unwrap();
    let (_c, rx) = sink(&producer, 10);
    assert_retried_after_one_second(&server);
    assert_eq!(take(&rx, 1), [1]);
    stop(&producer);
}

#[test]
fn the_last_consumer_leaving_stops_the_poller_when_asked() {
    let available = Arc::new(AtomicU64::new(2));
    let server = search_server(available.clone());
    let poll = search(&server)
        .interval(Duration::from_millis(20))
        .stop_on_cancel()
        .build()
        .unwrap();
    let producer = stageflow::producer(poll).spawn().unwrap();
    let subscribed = |n: usize| producer.counters().subscriptions.len() == n;
    let (first, rx1) = sink(&producer, 10);
    assert_eq!(take(&rx1, 2), [1, 2]);
    let (second, rx2) = sink(&producer, 10);
    wait_for("the second subscription", LIMIT, || subscribed(2));
    stop(&first);
    wait_for("the first consumer's cancel", LIMIT, || subscribed(1));
    // Not the last one: the poller goes on fetching, for the second.
    available.store(4, Ordering::Relaxed);
    assert_eq!(take(&rx2, 2), [3, 4]);
    assert_eq!(producer.outcome(), None, "ended with a consumer left");
    stop(&second);
    assert_eq!(producer.join_timeout(LIMIT), Some(Reason::Normal));
}

#[test]
fn a_bad_first_url_is_a_build_error() {
    let e = http::poll(
        |_: Option<&()>| "search?q=x".to_owned(),
        |_| Ok(Page::<u8, ()>::new(vec![], None)),
    )
    .build()
    .unwrap_err();
    assert!(
        matches!(e, HttpError::InvalidOption { option: "url", .. }),
        "{e}"
    );
    // ureq would connect to port 80 for these.
    for url in ["http://127.0.0.1:99999/", "http://127.0.0.1:0/"] {
        let e = http::poll(
            move |_: Option<&()>| url.to_owned(),
            |_| Ok(Page::<u8, ()>::new(vec![], None)),
        )
        .build()
        .unwrap_err();
        let port_named = matches!(
            &e,
            HttpError::InvalidOption { option: "url", message } if message.contains("port")
        );
        assert!(port_named, "{e}");
    }
    let e = http::poll(
        |_: Option<&()>| "http://a/".to_owned(),
        |_| Ok(Page::<u8, ()>::new(vec![], None)),
    )
    .interval(Duration::ZERO)
    .build()
    .unwrap_err();
    assert!(
        matches!(
            e,
            HttpError::InvalidOption {
                option: "interval",
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn stop_during_a_hanging_connect_does_not_wait_for_it() {
    let full = FullListener::start();
    let url = format!("http://{}/search", full.addr);
    let search = http::poll(
        move |_: Option<&()>| url.clone(),
        |_| Ok(Page::<u8, ()>::new(vec![], None)),
    )
    .build()
    .unwrap();
    let producer = stageflow::producer(search).spawn().unwrap();
    let (_c, _rx) = sink(&producer, 10);
    wait_for("the fetcher's connect to hang", LIMIT, || {
        full.connect_hanging()
    });
    let t = Instant::now();
    producer.stop();
    let reason = producer.join_timeout(LIMIT);
    let took = t.elapsed();
    eprintln!("stop during a hanging connect took {took:?}");
    assert_eq!(reason, Some(stageflow::Reason::Shutdown));
    // 2 s before: the link waited for a connect nothing can interrupt.
    assert!(took < Duration::from_secs(1), "took {took:?}");
}

#[test]
fn a_later_url_with_a_bad_port_stops_the_producer_naming_it() {
    let server = search_server(Arc::new(AtomicU64::new(3)));
    let base = server.url("/search");
    let poll = http::poll(
        move |since: Option<&String>| match since {
            // ureq would send this one to port 80.
            Some(id) => format!("http://127.0.0.1:99999/search?since_id={id}"),
            None => base.clone(),
        },
        |body: Value| {
            let ids = body["data"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|t| t["id"].as_str().and_then(|s| s.parse().ok()).ok_or("no id"))
                .collect::<Result<Vec<u64>, _>>()?;
            let newest = body["meta"]["newest_id"].as_str().map(str::to_owned);
            Ok(Page::new(ids, newest))
        },
    )
    .build()
    .unwrap();
    let producer = stageflow::producer(poll).spawn().unwrap();
    let (_c, rx) = sink(&producer, 10);
    assert_eq!(take(&rx, 3), [1, 2, 3]);
    let reason = producer.join_timeout(LIMIT).expect("stopped");
    assert!(
        matches!(&reason, stageflow::Reason::Error(m) if m.contains("url") && m.contains("99999")),
        "{reason:?}"
    );
    assert_eq!(
        server.pending_requests().len(),
        1,
        "no request to port 80 or elsewhere"
    );
}
