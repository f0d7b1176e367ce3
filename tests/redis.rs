//! The Redis Streams layer (`stageflow::redis`) against a real `redis-server` each test
//! starts on a free loopback port: consumer groups split entries, credits bound reads,
//! dead consumers' entries are claimed, failures are retried then dead-lettered, the server
//! restarts under a running pipeline, and the sink appends (and trims). Skipped, with a
//! message, only outside CI when no `redis-server` binary is found.

#![cfg(feature = "redis")]

#[path = "redis/faults.rs"]
mod faults;
#[path = "redis/groups.rs"]
mod groups;
#[path = "redis/sink.rs"]
mod sink;

#[allow(dead_code)]
#[path = "../examples/redis_workers.rs"]
mod redis_workers;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use redis_workers::redis_server::RedisServer;

/// A server for one test, or `None` (the test returns) outside CI without a binary.
pub(crate) fn server() -> Option<RedisServer> {
    RedisServer::start().expect("starting redis-server")
}

/// Skips the test when there is no server (outside CI only; see `RedisServer::start`).
#[macro_export]
macro_rules! server_or_skip {
    () => {
        match $crate::server() {
            Some(s) => s,
            None => return,
        }
    };
}

pub(crate) fn connect(server: &RedisServer) -> redis::Connection {
    redis::Client::open(server.url())
        .unwrap()
        .get_connection_with_timeout(Duration::from_secs(5))
        .unwrap()
}

/// Appends `n` entries `{"n": i}` (field `n` and JSON field `json`) to `stream`.
pub(crate) fn fill(con: &mut redis::Connection, stream: &str, n: u64) {
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let mut pipe = redis::pipe();
        for i in chunk {
            pipe.cmd("XADD")
                .arg(stream)
                .arg("*")
                .arg("n")
                .arg(i)
                .arg("json")
                .arg(format!("{{\"n\":{i}}}"))
                .ignore();
        }
        pipe.exec(con).unwrap();
    }
}

/// The group's pending count and entries read (`XINFO GROUPS`).
pub(crate) fn group_info(con: &mut redis::Connection, stream: &str, group: &str) -> (usize, usize) {
    let reply: redis::streams::StreamInfoGroupsReply = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(stream)
        .query(con)
        .unwrap();
    let g = reply
        .groups
        .into_iter()
        .find(|g| g.name == group)
        .expect("the group exists");
    (g.pending, g.entries_read.unwrap_or(0))
}

pub(crate) fn xlen(con: &mut redis::Connection, stream: &str) -> usize {
    redis::cmd("XLEN").arg(stream).query(con).unwrap()
}

/// Receives `n` items within `within`, or fails naming what was missing.
pub(crate) fn recv_n<T>(rx: &Receiver<T>, n: usize, within: Duration, what: &str) -> Vec<T> {
    let deadline = Instant::now() + within;
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(x) => got.push(x),
            Err(_) => panic!("{what}: got {} of {n} within {within:?}", got.len()),
        }
    }
    got
}

/// How many times each value occurs.
pub(crate) fn counts<T: Ord + Clone>(items: &[T]) -> BTreeMap<T, usize> {
    let mut m = BTreeMap::new();
    for x in items {
        *m.entry(x.clone()).or_insert(0) += 1;
    }
    m
}

/// A pipeline named `name` reading `source` with 2 processors, each handled entry's `n` sent
/// to `tx`.
fn handling(
    name: &str,
    source: &stageflow::redis::StreamSource<stageflow::redis::Entry>,
    tx: crossbeam_channel::Sender<String>,
) -> stageflow::pipeline::Pipeline<stageflow::redis::Entry> {
    let src = source.clone();
    stageflow::pipeline::builder(name)
        .producers(1, move |_| stageflow::producer(src.producer()))
        .processors(
            stageflow::pipeline::ProcessorOptions::new().concurrency(2),
            move |m: &mut stageflow::pipeline::Message<stageflow::redis::Entry>| {
                tx.send(m.data.get_str("n").unwrap().to_owned()).unwrap();
                Ok::<(), String>(())
            },
        )
        .start()
        .unwrap()
}

#[test]
fn smoke() {
    let server = server_or_skip!();
    let mut con = connect(&server);
    fill(&mut con, "jobs", 100);
    let source = stageflow::redis::stream(server.url(), "jobs")
        .group("g")
        .consumer("c")
        .build()
        .unwrap();
    let (tx, rx) = crossbeam_channel::unbounded();
    let p = handling("smoke", &source, tx);
    let got = recv_n(&rx, 100, Duration::from_secs(10), "entries handled");
    let report = p.shutdown();
    assert!(report.is_complete(), "{report:?}");
    assert_eq!(counts(&got).len(), 100);
    let c = source.counters();
    assert_eq!((c.read, c.acked, c.failed), (100, 100, 0), "{c:?}");
    assert_eq!(group_info(&mut con, "jobs", "g"), (0, 100));
    assert_eq!(source.in_flight(), 0);
}

#[test]
fn a_shutdown_right_after_a_backlog_does_not_wait_out_the_block() {
    // A long `block`: a producer that waited it out after the backlog's last read would hold
    // the shutdown for 20 s. Its waits start at 1 ms after a read that found entries.
    let server = server_or_skip!();
    let mut con = connect(&server);
    fill(&mut con, "jobs", 500);
    let source = stageflow::redis::stream(server.url(), "jobs")
        .group("g")
        .consumer("c")
        .timeout(Duration::from_secs(30))
        .block(Duration::from_secs(20))
        .build()
        .unwrap();
    let (tx, rx) = crossbeam_channel::unbounded();
    let p = handling("backlog", &source, tx);
    recv_n(&rx, 500, Duration::from_secs(10), "entries handled");
    let asked = Instant::now();
    let report = p.shutdown();
    let took = asked.elapsed();
    assert!(report.is_complete(), "{report:?}");
    assert_eq!(source.counters().acked, 500);
    // Far below the block (a loaded machine gets seconds of slack): the producer's wait
    // when the shutdown came had doubled from 1 ms for as long as the stream was empty.
    assert!(took < Duration::from_secs(10), "shutdown took {took:?}");
}

#[test]
fn the_example_processes_every_job_once_across_two_worker_processes() {
    let server = server_or_skip!();
    let s = redis_workers::run(redis_workers::Options {
        url: Some(server.url()),
        jobs: 4000,
        work: Duration::from_micros(20),
        print: false,
        worker_args: ["redis_workers_worker_process", "--exact", "--nocapture"]
            .map(String::from)
            .to_vec(),
    })
    .unwrap();
    assert_eq!(s.processed, 4000, "every job processed: {s:?}");
    assert_eq!(s.pending, 0, "every entry acknowledged: {s:?}");
    assert!(s.claimed > 0, "the survivor claimed nothing: {s:?}");
    assert_eq!(
        s.per_worker.iter().sum::<u64>(),
        4000 + s.duplicates,
        "{s:?}"
    );
    // Done twice only what the killed worker finished and had not acknowledged: at most
    // what it holds in flight (its batcher's batch and its processors' demand).
    assert!(s.duplicates <= 200, "{s:?}");
}

/// The example's worker process, when the example (run above) re-executes this binary;
/// otherwise it does nothing.
#[test]
fn redis_workers_worker_process() {
    if let Ok(name) = std::env::var(redis_workers::WORKER_ENV) {
        redis_workers::worker(&name).unwrap();
    }
}
