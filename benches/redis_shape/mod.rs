//! Row r of `compare`: entries/s from a Redis stream through a consumer group and back as
//! acknowledgements: stageflow's stream producer → 2 processors → a batcher of 100 →
//! `XACK`, beside a hand-written loop of `XREADGROUP COUNT 100` / handle / `XACK` on one
//! connection. Both against the same local `redis-server` (started here), each round on a
//! fresh stream of `n` entries (filling it is not timed).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use stageflow::pipeline::{self, Batch, BatcherOptions, Message, ProcessorOptions};
use stageflow::redis::Entry;

#[path = "../../examples/support/redis_server.rs"]
mod redis_server;

const BATCH: usize = 100;

fn connect(url: &str) -> redis::Connection {
    redis::Client::open(url)
        .unwrap()
        .get_connection_with_timeout(Duration::from_secs(5))
        .unwrap()
}

/// A fresh stream `key` of `n` small entries, and its group `g` at the start.
fn fill(url: &str, key: &str, n: u64) {
    let mut con = connect(url);
    redis::cmd("DEL").arg(key).exec(&mut con).unwrap();
    for chunk in (0..n).collect::<Vec<_>>().chunks(5000) {
        let mut pipe = redis::pipe();
        for i in chunk {
            pipe.cmd("XADD")
                .arg(key)
                .arg("*")
                .arg("n")
                .arg(i)
                .arg("body")
                .arg("a job of about forty bytes, as queues carry")
                .ignore();
        }
        pipe.exec(&mut con).unwrap();
    }
    redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(key)
        .arg("g")
        .arg("0")
        .exec(&mut con)
        .unwrap();
}

/// The handling both sides do: parse the job number.
fn handle(fields: &stageflow::redis::Fields) -> u64 {
    std::str::from_utf8(&fields["n"]).unwrap().parse().unwrap()
}

/// `demand`: the processors' fixed `max_demand` (half of it their `min_demand`); `None`: the
/// pipeline's defaults (10 / 5, adaptive up to 100).
fn with_pipeline(url: &str, n: u64, demand: Option<usize>) -> Duration {
    fill(url, "bench", n);
    let source = stageflow::redis::stream(url, "bench")
        .group("g")
        .consumer("stageflow")
        .build()
        .unwrap();
    // The handlers count what they handled; the last one tells this thread, once (a message
    // per batch would wake this thread per batch, work the hand-written loop does not do).
    let handled = Arc::new(AtomicU64::new(0));
    let (done, finished) = crossbeam_channel::bounded(1);
    let started = Instant::now();
    let src = source.clone();
    let p = pipeline::builder("bench")
        .producers(1, move |_| stageflow::producer(src.producer()))
        .processors(
            match demand {
                Some(d) => ProcessorOptions::new()
                    .fixed_demand()
                    .max_demand(d)
                    .min_demand(d / 2),
                None => ProcessorOptions::new(),
            }
            .concurrency(2),
            |m: &mut Message<Entry>| Ok::<u64, String>(handle(&m.data.fields)),
        )
        .batcher(
            "ack",
            BatcherOptions::new()
                .batch_size(BATCH)
                .batch_timeout(Duration::from_millis(10)),
            move |b: &mut Batch<u64>| {
                let len = b.messages.len() as u64;
                if handled.fetch_add(len, Ordering::Relaxed) + len >= n {
                    let _ = done.try_send(());
                }
                Ok::<(), String>(())
            },
        )
        .start()
        .unwrap();
    finished
        .recv_timeout(Duration::from_secs(60))
        .expect("every entry handled within a minute");
    // The last batch is acknowledged right after its handler returns.
    let report = p.shutdown();
    let took = started.elapsed();
    assert!(report.is_complete(), "{report:?}");
    assert_eq!(source.counters().acked, n);
    took
}

fn by_hand(url: &str, n: u64) -> Duration {
    fill(url, "bench", n);
    let mut con = connect(url);
    let started = Instant::now();
    let (mut handled, mut sum) = (0u64, 0u64);
    while handled < n {
        let reply: Option<redis::streams::StreamReadReply> = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg("g")
            .arg("by-hand")
            .arg("COUNT")
            .arg(BATCH)
            .arg("BLOCK")
            .arg(100)
            .arg("STREAMS")
            .arg("bench")
            .arg(">")
            .query(&mut con)
            .unwrap();
        let ids: Vec<_> = reply
            .into_iter()
            .flat_map(|r| r.keys)
            .flat_map(|k| k.ids)
            .collect();
        let mut acks = Vec::with_capacity(ids.len());
        for sid in ids {
            let e = Entry::from(sid);
            sum += handle(&e.fields);
            acks.push(e.id);
        }
        let acked: u64 = redis::cmd("XACK")
            .arg("bench")
            .arg("g")
            .arg(&acks)
            .query(&mut con)
            .unwrap();
        handled += acked;
    }
    let took = started.elapsed();
    assert!(sum > 0);
    took
}

pub(crate) fn table(s: &super::Settings) {
    let server = match redis_server::RedisServer::start() {
        Ok(Some(server)) => server,
        Ok(None) => return println!("(row r skipped: no redis-server)\n"),
        Err(e) => return println!("(row r skipped: {e})\n"),
    };
    let url = server.url();
    println!(
        "## r: Redis Streams consumer group (entries/s: median (min–max) of {} rounds, run alternately)",
        s.rounds
    );
    println!();
    println!("| id | shape | stageflow::redis | by hand (redis crate) | ratio |");
    println!("|---|---|---|---|---|");
    let n = if s.quick { 20_000 } else { 100_000 };
    super::row(
        s,
        "r",
        "XREADGROUP → 2 processors (100 / 50, fixed) → batcher of 100 → XACK, beside an XREADGROUP COUNT 100 / XACK loop",
        n,
        || with_pipeline(&url, n, Some(BATCH)),
        || by_hand(&url, n),
    );
    super::row(
        s,
        "rd",
        "the same at the pipeline's defaults: processors at 10 / 5, adaptive up to 100 (issue 22: r at default options)",
        n,
        || with_pipeline(&url, n, None),
        || by_hand(&url, n),
    );
    super::row(
        s,
        "r200",
        "the same with processors at 200 / 100 (reads of about 100)",
        n,
        || with_pipeline(&url, n, Some(2 * BATCH)),
        || by_hand(&url, n),
    );
    println!();
}
