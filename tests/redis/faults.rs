//! Faults: a consumer that dies mid-batch (its entries claimed by another), failed entries
//! retried then dead-lettered, entries that do not decode, and a server restart under a
//! running pipeline.

use std::collections::BTreeMap;
use std::time::Duration;

use stageflow::pipeline::{self, Message, ProcessorOptions};
use stageflow::redis as rs;

use crate::{connect, counts, fill, group_info, recv_n, server_or_skip, xlen};

#[derive(serde::Deserialize, Debug)]
struct Job {
    n: u64,
}

#[test]
fn a_consumer_killed_mid_batch_loses_nothing() {
    let server = server_or_skip!();
    let mut con = connect(&server);
    fill(&mut con, "jobs", 200);
    // The dead consumer: read 50 entries as its batch, then vanished.
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
        .arg("dead")
        .arg("COUNT")
        .arg(50)
        .arg("STREAMS")
        .arg("jobs")
        .arg(">")
        .query(&mut con)
        .unwrap();
    let source = rs::stream(server.url(), "jobs")
        .group("g")
        .consumer("alive")
        .claim_idle(Duration::from_millis(200))
        .claim_interval(Duration::from_millis(50))
        .json::<Job>("json")
        .build()
        .unwrap();
    let (tx, rx) = crossbeam_channel::unbounded();
    let src = source.clone();
    let p = pipeline::builder("alive")
        .producers(1, move |_| stageflow::producer(src.producer()))
        .processors(
            ProcessorOptions::new().concurrency(2),
            move |m: &mut Message<Job>| {
                tx.send(m.data.n).unwrap();
                Ok::<(), String>(())
            },
        )
        .start()
        .unwrap();
    let got = recv_n(&rx, 200, Duration::from_secs(15), "entries handled");
    assert!(p.shutdown().is_complete());
    let by_n = counts(&got);
    assert_eq!(by_n.len(), 200);
    assert!(by_n.values().all(|&c| c == 1));
    let c = source.counters();
    assert_eq!((c.claimed, c.read, c.acked), (50, 150, 200), "{c:?}");
    assert_eq!(
        group_info(&mut con, "jobs", "g").0,
        0,
        "nothing left pending"
    );
}

#[test]
fn failed_entries_are_retried_then_dead_lettered() {
    let server = server_or_skip!();
    let mut con = connect(&server);
    fill(&mut con, "jobs", 10);
    // One entry that does not decode.
    let _: String = redis::cmd("XADD")
        .arg("jobs")
        .arg("*")
        .arg("json")
        .arg("{not json")
        .query(&mut con)
        .unwrap();
    let source = rs::stream(server.url(), "jobs")
        .group("g")
        .claim_idle(Duration::from_millis(250))
        .claim_interval(Duration::from_millis(50))
        .dead_letter("jobs:dead", 3)
        .json::<Job>("json")
        .build()
        .unwrap();
    let (tx, rx) = crossbeam_channel::unbounded();
    let src = source.clone();
    let p = pipeline::builder("retries")
        .producers(1, move |_| stageflow::producer(src.producer()))
        .processors(
            ProcessorOptions::new().concurrency(1),
            move |m: &mut Message<Job>| {
                tx.send(m.data.n).unwrap();
                if m.data.n.is_multiple_of(5) {
                    return Err(format!("job {} always fails", m.data.n));
                }
                Ok(())
            },
        )
        .start()
        .unwrap();
    // 8 good entries once, 2 failing ones 3 times each.
    let got = recv_n(&rx, 14, Duration::from_secs(15), "deliveries");
    let by_n = counts(&got);
    assert_eq!(by_n[&0], 3);
    assert_eq!(by_n[&5], 3);
    assert_eq!(by_n.len(), 10);
    // The last failures are dead-lettered as they are acknowledged, and the malformed entry
    // goes through its own claim rounds: wait for the three (bounded; the server tells).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while xlen(&mut con, "jobs:dead") < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "not dead-lettered: {:?}",
            source.counters()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let report = p.shutdown();
    assert!(report.is_complete(), "{report:?}");
    assert!(rx.try_recv().is_err(), "a dead-lettered job came back");
    let c = source.counters();
    assert_eq!(c.acked, 8, "{c:?}");
    assert_eq!(c.dead_lettered, 3, "{c:?}");
    assert_eq!(c.malformed, 3, "{c:?}");
    assert_eq!(c.left_pending, 6, "two tries of three entries: {c:?}");
    assert_eq!(
        group_info(&mut con, "jobs", "g").0,
        0,
        "nothing left pending"
    );
    let dead: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg("jobs:dead")
        .arg("-")
        .arg("+")
        .query(&mut con)
        .unwrap();
    let reasons: BTreeMap<String, (String, String)> = dead
        .ids
        .into_iter()
        .map(|e| {
            let e = rs::Entry::from(e);
            (
                e.get_str("json").unwrap().to_owned(),
                (
                    e.get_str("stageflow.reason").unwrap().to_owned(),
                    e.get_str("stageflow.deliveries").unwrap().to_owned(),
                ),
            )
        })
        .collect();
    assert_eq!(
        reasons["{\"n\":5}"],
        ("job 5 always fails".to_owned(), "3".to_owned())
    );
    assert!(
        reasons["{not json"].0.contains("field `json`"),
        "{reasons:?}"
    );
}

#[test]
fn the_pipeline_reconnects_after_the_server_restarts() {
    let mut server = server_or_skip!();
    let mut con = connect(&server);
    fill(&mut con, "jobs", 600);
    drop(con);
    let source = rs::stream(server.url(), "jobs")
        .group("g")
        .claim_idle(Duration::from_secs(60))
        .build()
        .unwrap();
    let (tx, rx) = crossbeam_channel::unbounded();
    let (gate_tx, gate) = crossbeam_channel::unbounded::<()>();
    let src = source.clone();
    let p = pipeline::builder("restart")
        .producers(1, move |_| stageflow::producer(src.producer()))
        .processors(
            ProcessorOptions::new().concurrency(2),
            move |m: &mut Message<rs::Entry>| {
                let n: u64 = m.data.get_str("n").unwrap().parse().unwrap();
                tx.send(n).unwrap();
                if n >= 200 {
                    gate.recv_timeout(Duration::from_secs(20)).ok();
                }
                Ok::<(), String>(())
            },
        )
        .start()
        .unwrap();
    let mut got = recv_n(&rx, 201, Duration::from_secs(10), "before the restart");
    // Restart the server while entries are in flight (the gate holds them).
    server.restart(Duration::from_millis(300)).unwrap();
    for _ in 0..600 {
        gate_tx.send(()).unwrap();
    }
    got.extend(recv_n(
        &rx,
        399,
        Duration::from_secs(20),
        "after the restart",
    ));
    let report = p.shutdown();
    assert!(report.is_complete(), "{report:?}");
    let by_n = counts(&got);
    assert_eq!(by_n.len(), 600);
    assert!(by_n.values().all(|&c| c == 1), "an entry was handled twice");
    let c = source.counters();
    assert!(c.reconnects >= 1, "{c:?}");
    assert_eq!(c.acked, 600, "{c:?}");
    let mut con = connect(&server);
    assert_eq!(group_info(&mut con, "jobs", "g").0, 0);
}
