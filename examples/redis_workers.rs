//! Two worker processes share a job queue through a Redis consumer group; one is killed
//! half-way, and the other claims the jobs it left pending: every job is processed and
//! acknowledged, nothing is lost.
//!
//! With no arguments it starts its own `redis-server` (on a free loopback port, persistence
//! off), fills the stream `jobs` with 100 000 jobs, and runs two workers (this program
//! re-executing itself), each a pipeline: a stream producer, 2 processors and a batcher of 100
//! that records the jobs it finished in Redis. Once half the jobs are done, worker `a` is
//! killed (`SIGKILL`, mid-batch); worker `b` claims `a`'s pending entries after 500 ms idle
//! and finishes the queue. The per-worker counts are printed at the end.
//!
//! `cargo run --release --example redis_workers --features redis [-- --jobs 20000 --url redis://127.0.0.1:6379/]`
//!
//! `--url` uses an existing server instead (the keys `jobs`, `done` and `per_worker` are
//! replaced).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use stageflow::pipeline::{self, Batch, BatcherOptions, Message, ProcessorOptions};

#[path = "support/redis_server.rs"]
pub(crate) mod redis_server;

/// A worker process is this program with this variable set to its consumer name.
pub(crate) const WORKER_ENV: &str = "STAGEFLOW_REDIS_WORKER";
const URL_ENV: &str = "STAGEFLOW_REDIS_URL";
const WORK_ENV: &str = "STAGEFLOW_REDIS_WORK_US";
const GROUP: &str = "workers";

/// One job of the queue.
#[derive(Debug, Serialize, Deserialize)]
struct Job {
    n: u64,
}

/// The run's options (see the module docs).
#[derive(Clone, Debug)]
pub(crate) struct Options {
    /// An existing server; `None` starts one.
    pub(crate) url: Option<String>,
    pub(crate) jobs: u64,
    /// Simulated work per job, in each processor.
    pub(crate) work: Duration,
    pub(crate) print: bool,
    /// Arguments for re-executing this program as a worker (a test binary needs some).
    pub(crate) worker_args: Vec<String>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            url: None,
            jobs: 100_000,
            work: Duration::ZERO,
            print: true,
            worker_args: Vec::new(),
        }
    }
}

/// What the run saw.
#[derive(Debug, Default)]
pub(crate) struct Summary {
    /// Jobs finished by worker `a` (killed) and `b`, as each recorded them.
    pub(crate) per_worker: Vec<u64>,
    /// Distinct jobs finished.
    pub(crate) processed: u64,
    /// Jobs finished twice: done by `a`, which was killed before acknowledging them.
    pub(crate) duplicates: u64,
    /// Entries of the group still pending at the end (acknowledged: 0).
    pub(crate) pending: u64,
    /// Entries `b` claimed from `a`.
    pub(crate) claimed: u64,
    /// Entries `b` acknowledged.
    pub(crate) acked: u64,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if let Ok(name) = std::env::var(WORKER_ENV) {
        return worker(&name);
    }
    let mut options = Options::default();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--url" => options.url = Some(args.next().ok_or("--url needs a value")?),
            "--jobs" => options.jobs = args.next().ok_or("--jobs needs a value")?.parse()?,
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }
    let s = run(options)?;
    if s.processed == 0 {
        return Err("no job processed".into());
    }
    Ok(())
}

fn connect(url: &str) -> redis::RedisResult<redis::Connection> {
    redis::Client::open(url)?.get_connection_with_timeout(Duration::from_secs(5))
}

/// Runs the story: fill, two workers, kill one half-way, let the other finish.
pub(crate) fn run(o: Options) -> Result<Summary, Box<dyn std::error::Error>> {
    let server = match &o.url {
        Some(_) => None,
        None => Some(redis_server::RedisServer::start()?.ok_or("no redis-server binary")?),
    };
    let url = o
        .url
        .clone()
        .unwrap_or_else(|| server.as_ref().unwrap().url());
    let mut con = connect(&url)?;
    redis::cmd("DEL")
        .arg(&["jobs", "done", "per_worker"])
        .exec(&mut con)?;
    let started = Instant::now();
    for chunk in (0..o.jobs).collect::<Vec<_>>().chunks(5000) {
        let mut pipe = redis::pipe();
        for &n in chunk {
            let json = serde_json::to_string(&Job { n })?;
            pipe.cmd("XADD")
                .arg("jobs")
                .arg("*")
                .arg("json")
                .arg(json)
                .ignore();
        }
        pipe.exec(&mut con)?;
    }
    redis::cmd("XGROUP")
        .arg("CREATE")
        .arg("jobs")
        .arg(GROUP)
        .arg("0")
        .exec(&mut con)?;
    if o.print {
        println!("{} jobs queued in {:?}", o.jobs, started.elapsed());
    }
    let spawn = |name: &str| -> std::io::Result<Child> {
        Command::new(std::env::current_exe()?)
            .args(&o.worker_args)
            .env(WORKER_ENV, name)
            .env(URL_ENV, &url)
            .env(WORK_ENV, o.work.as_micros().to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
    };
    let mut a = spawn("a")?;
    let b = spawn("b")?;
    // Kill `a` once half the jobs are done (mid-batch: it always has some in flight).
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let done: Vec<Option<u64>> = redis::cmd("HMGET")
            .arg("per_worker")
            .arg(&["a", "b"])
            .query(&mut con)?;
        let total: u64 = done.iter().flatten().sum();
        if total * 2 >= o.jobs || Instant::now() > deadline {
            break;
        }
        if a.try_wait()?.is_some() {
            return Err("worker a ended before it could be killed".into());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    a.kill()?;
    a.wait()?;
    if o.print {
        println!("worker a killed after {:?}", started.elapsed());
    }
    let out = b.wait_with_output()?;
    if !out.status.success() {
        return Err(format!("worker b failed: {}", out.status).into());
    }
    let mut s = Summary::default();
    for line in BufReader::new(&out.stdout[..]).lines() {
        let line = line?;
        if let Some(rest) = line.strip_prefix("WORKER-RESULT ") {
            let v: Vec<u64> = rest.split(' ').map(str::parse).collect::<Result<_, _>>()?;
            (s.claimed, s.acked) = (v[0], v[1]);
        }
    }
    let done: Vec<u64> = redis::cmd("HVALS").arg("done").query(&mut con)?;
    s.processed = done.len() as u64;
    s.duplicates = done.iter().map(|&c| c - 1).sum();
    let per: Vec<Option<u64>> = redis::cmd("HMGET")
        .arg("per_worker")
        .arg(&["a", "b"])
        .query(&mut con)?;
    s.per_worker = per.into_iter().map(Option::unwrap_or_default).collect();
    let pending: redis::streams::StreamPendingReply = redis::cmd("XPENDING")
        .arg("jobs")
        .arg(GROUP)
        .query(&mut con)?;
    s.pending = pending.count() as u64;
    if o.print {
        println!(
            "done in {:?}: worker a (killed) {}, worker b {} (claimed {} of a's, acknowledged {})",
            started.elapsed(),
            s.per_worker[0],
            s.per_worker[1],
            s.claimed,
            s.acked
        );
        println!(
            "{} distinct jobs processed of {}; {} done twice (finished by a, not yet acknowledged when it died); {} pending",
            s.processed, o.jobs, s.duplicates, s.pending
        );
    }
    Ok(s)
}

/// A worker process: reads the group as consumer `name` until the queue is empty and
/// nothing is pending, then prints its counters.
pub(crate) fn worker(name: &str) -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var(URL_ENV)?;
    let work = Duration::from_micros(std::env::var(WORK_ENV)?.parse()?);
    let source = stageflow::redis::stream(&url, "jobs")
        .group(GROUP)
        .consumer(name)
        .claim_idle(Duration::from_millis(500))
        .claim_interval(Duration::from_millis(200))
        .json::<Job>("json")
        .build()?;
    let con = Arc::new(Mutex::new(connect(&url)?));
    let me = name.to_owned();
    let src = source.clone();
    let p = pipeline::builder(name)
        .producers(1, move |_| stageflow::producer(src.producer()))
        .processors(
            ProcessorOptions::new().concurrency(2),
            move |m: &mut Message<Job>| {
                if !work.is_zero() {
                    std::thread::sleep(work);
                }
                Ok::<u64, String>(m.data.n)
            },
        )
        .batcher(
            "done",
            BatcherOptions::new()
                .batch_size(100)
                .batch_timeout(Duration::from_millis(50)),
            move |batch: &mut Batch<u64>| {
                let mut pipe = redis::pipe();
                for m in &batch.messages {
                    pipe.cmd("HINCRBY").arg("done").arg(m.data).arg(1).ignore();
                }
                pipe.cmd("HINCRBY")
                    .arg("per_worker")
                    .arg(&me)
                    .arg(batch.messages.len())
                    .ignore();
                pipe.exec(&mut *con.lock()).map_err(|e| e.to_string())
            },
        )
        .start()?;
    let mut con = connect(&url)?;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let len: u64 = redis::cmd("XLEN").arg("jobs").query(&mut con)?;
        let groups: redis::streams::StreamInfoGroupsReply = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg("jobs")
            .query(&mut con)?;
        let g = groups
            .groups
            .iter()
            .find(|g| g.name == GROUP)
            .ok_or("no group")?;
        if g.pending == 0 && g.entries_read.unwrap_or(0) as u64 >= len {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("worker {name}: queue not done within 120 s").into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let report = p.shutdown();
    let c = source.counters();
    println!("WORKER-RESULT {} {}", c.claimed, c.acked);
    if !report.is_complete() {
        return Err(format!("worker {name}: {report:?}").into());
    }
    Ok(())
}
