//! Consumer groups: entries split across consumers, credits bound what is read, a restarted
//! consumer resumes its own pending entries first.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use stageflow::pipeline::{self, Message, ProcessorOptions};
use stageflow::redis::{self as rs, Entry};

use crate::{connect, counts, fill, group_info, recv_n, server_or_skip, xlen};

/// A pipeline reading `source`, sending each handled entry's `n` to `tx`.
fn worker(
    name: &str,
    source: &rs::StreamSource<Entry>,
    tx: crossbeam_channel::Sender<(String, u64)>,
) -> pipeline::Pipeline<Entry> {
    let src = source.clone();
    let me = name.to_owned();
    pipeline::builder(name)
        .producers(1, move |_| stageflow::producer(src.producer()))
        .processors(
            ProcessorOptions::new().concurrency(2),
            move |m: &mut Message<Entry>| {
                let n: u64 = m.data.get_str("n").unwrap().parse().unwrap();
                tx.send((me.clone(), n)).unwrap();
                Ok::<(), String>(())
            },
        )
        .start()
        .unwrap()
}

#[test]
fn entries_split_across_two_consumers_none_handled_twice() {
    let server = server_or_skip!();
    let mut con = connect(&server);
    fill(&mut con, "jobs", 3000);
    let (tx, rx) = crossbeam_channel::unbounded();
    let sources: Vec<_> = ["a", "b"]
        .iter()
        .map(|c| {
            rs::stream(server.url(), "jobs")
                .group("g")
                .consumer(*c)
                .build()
                .unwrap()
        })
        .collect();
    let a = worker("a", &sources[0], tx.clone());
    let b = worker("b", &sources[1], tx);
    let got = recv_n(&rx, 3000, Duration::from_secs(20), "entries handled");
    assert!(a.shutdown().is_complete());
    assert!(b.shutdown().is_complete());
    let by_n = counts(&got.iter().map(|(_, n)| *n).collect::<Vec<_>>());
    assert_eq!(by_n.len(), 3000, "every entry handled");
    assert!(by_n.values().all(|&c| c == 1), "an entry was handled twice");
    let by_worker = counts(&got.iter().map(|(w, _)| w.clone()).collect::<Vec<_>>());
    assert_eq!(
        by_worker.len(),
        2,
        "one consumer got nothing: {by_worker:?}"
    );
    let (ca, cb) = (sources[0].counters(), sources[1].counters());
    assert_eq!(ca.acked + cb.acked, 3000, "{ca:?} {cb:?}");
    assert_eq!(ca.read as usize, by_worker["a"], "{ca:?}");
    assert_eq!(group_info(&mut con, "jobs", "g"), (0, 3000));
    assert!(rx.try_recv().is_err(), "nothing more after the shutdown");
}

#[test]
fn credits_bound_what_is_read_and_the_rest_stays_in_the_stream() {
    let server = server_or_skip!();
    let mut con = connect(&server);
    fill(&mut con, "jobs", 1000);
    let source = rs::stream(server.url(), "jobs").group("g").build().unwrap();
    let (started_tx, started) = crossbeam_channel::unbounded();
    let (gate_tx, gate) = crossbeam_channel::unbounded::<()>();
    let src = source.clone();
    let p = pipeline::builder("stalled")
        .producers(1, move |_| stageflow::producer(src.producer()))
        .processors(
            ProcessorOptions::new()
                .concurrency(1)
                .max_demand(10)
                .min_demand(5),
            move |_: &mut Message<Entry>| {
                let _ = started_tx.send(());
                // Stalled until the test opens the gate.
                gate.recv_timeout(Duration::from_secs(30)).ok();
                Ok::<(), String>(())
            },
        )
        .start()
        .unwrap();
    recv_n(&started, 1, Duration::from_secs(10), "first entry handled");
    // An observation window: a producer with demand would read on within it.
    std::thread::sleep(Duration::from_millis(300));
    let (pending, read) = group_info(&mut con, "jobs", "g");
    assert_eq!(read, 10, "read beyond the processor's max_demand of 10");
    assert_eq!(pending, 10);
    assert_eq!(xlen(&mut con, "jobs"), 1000, "entries stay in the stream");
    let c = source.counters();
    assert_eq!((c.read, c.acked), (10, 0), "{c:?}");
    // Open the gate: the rest flows, 10 at most in flight at any time.
    for _ in 0..1000 {
        gate_tx.send(()).unwrap();
    }
    recv_n(&started, 999, Duration::from_secs(20), "the rest handled");
    let report = p.shutdown();
    assert!(report.is_complete(), "{report:?}");
    assert_eq!(source.counters().acked, 1000);
    assert_eq!(group_info(&mut con, "jobs", "g"), (0, 1000));
    // The same counters, exported to observers (layer `redis`).
    use stageflow::observe::Observe;
    let snapshot = stageflow::observe::Observed::default()
        .source("jobs", source.clone())
        .snapshot();
    let jobs = snapshot.source("jobs").unwrap();
    assert_eq!(jobs.layer, "redis");
    assert_eq!(jobs.value("acked_total", &[]), Some(1000.0));
    assert_eq!(jobs.value("read_total", &[]), Some(1000.0));
    assert!(snapshot
        .to_prometheus()
        .contains("stageflow_redis_acked_total{source=\"jobs\"} 1000\n"));
}

#[test]
fn a_restarted_consumer_resumes_its_own_pending_entries_first() {
    let server = server_or_skip!();
    let mut con = connect(&server);
    fill(&mut con, "jobs", 100);
    // The consumer's previous life read 30 entries and died before acknowledging them.
    redis::cmd("XGROUP")
        .arg("CREATE")
        .arg("jobs")
        .arg("g")
        .arg("0")
        .exec(&mut con)
        .unwrap();
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("g")
        .arg("w1")
        .arg("COUNT")
        .arg(30)
        .arg("STREAMS")
        .arg("jobs")
        .arg(">")
        .query(&mut con)
        .unwrap();
    let source = rs::stream(server.url(), "jobs")
        .group("g")
        .consumer("w1")
        .claim_idle(Duration::from_secs(60))
        .build()
        .unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = crossbeam_channel::unbounded();
    let src = source.clone();
    let o = order.clone();
    let p = pipeline::builder("w1")
        .producers(1, move |_| stageflow::producer(src.producer()))
        .processors(
            ProcessorOptions::new().concurrency(1),
            move |m: &mut Message<Entry>| {
                let n: u64 = m.data.get_str("n").unwrap().parse().unwrap();
                o.lock().push(n);
                tx.send(n).unwrap();
                Ok::<(), String>(())
            },
        )
        .start()
        .unwrap();
    recv_n(&rx, 100, Duration::from_secs(10), "entries handled");
    assert!(p.shutdown().is_complete());
    let order = order.lock().clone();
    let mut first: Vec<u64> = order[..30].to_vec();
    first.sort_unstable();
    assert_eq!(
        first,
        (0..30).collect::<Vec<_>>(),
        "own pending entries first"
    );
    assert_eq!(counts(&order).len(), 100);
    let c = source.counters();
    assert_eq!((c.resumed, c.read, c.acked), (30, 70, 100), "{c:?}");
    assert_eq!(group_info(&mut con, "jobs", "g").0, 0);
}
