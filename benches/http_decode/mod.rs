//! Row l of `compare`: NDJSON decode throughput through the HTTP producer, beside a plain
//! `BufRead::read_until` + `serde_json::from_slice` loop on the same bytes from the same
//! loopback server, into `serde_json::Value` and into a typed struct.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Deserialize;
use stageflow::{Consumer, ConsumerContext, Events, SubscribeOptions};

/// A v2 stream message, as typed users would read it.
#[derive(Deserialize)]
#[allow(dead_code)] // Read by serde only.
struct Message {
    data: Tweet,
}

#[derive(Deserialize)]
#[allow(dead_code)]
struct Tweet {
    id: String,
    text: String,
    author_id: String,
    created_at: String,
    lang: String,
}

/// `n` synthetic v2 messages of about 300 bytes, `\r\n` separated, a heartbeat every 100.
fn body(n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..n {
        let line = format!(
            "{{\"data\":{{\"id\":\"{}\",\"text\":\"tweet {i}: demand-driven pipelines keep the \
             socket from overflowing, and \\\"quotes\\\" and \\u00e9 escapes are decoded too\",\
             \"author_id\":\"{}\",\"created_at\":\"2024-05-01T12:00:00.000Z\",\"lang\":\"en\"}},\
             \"matching_rules\":[{{\"id\":\"1\",\"tag\":\"rust\"}}]}}\r\n",
            1_780_000_000_000_000_000u64 + i as u64,
            12_345 + i % 1000
        );
        out.extend_from_slice(line.as_bytes());
        if i % 100 == 99 {
            out.extend_from_slice(b"\r\n");
        }
    }
    out
}

/// Serves `body` with a `Content-Length` to every connection until dropped.
struct Server {
    url: String,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    fn start(body: Arc<Vec<u8>>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            for socket in listener.incoming() {
                if stopped.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(mut socket) = socket else { continue };
                let _ = socket.set_nodelay(true);
                let mut head = [0u8; 4096];
                let mut got = 0;
                while !head[..got].windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut head[got..]) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => got += n,
                    }
                }
                let h = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = socket.write_all(h.as_bytes());
                let _ = socket.write_all(&body);
            }
        });
        Server {
            url: format!("http://{addr}/stream"),
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = std::net::TcpStream::connect(
            self.url
                .trim_start_matches("http://")
                .trim_end_matches("/stream"),
        );
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Counts what it receives.
struct Count<T>(usize, std::marker::PhantomData<fn(T)>);

impl<T: Send + 'static> Consumer for Count<T> {
    type In = T;
    type Message = ();
    fn handle_events(&mut self, events: Events<'_, T>, _: &mut ConsumerContext<'_>) {
        self.0 += events.count();
    }
}

/// The HTTP producer (finishing at the end of the body) → a counting consumer.
fn through_producer<T: DeserializeOwned + Send + 'static>(url: &str, n: usize) -> Duration {
    let t = Instant::now();
    let stream = stageflow::http::stream(url)
        .finish_at_end(true)
        .json::<T>()
        .build()
        .unwrap();
    let stats = stream.stats();
    let producer = stageflow::producer(stream).spawn().unwrap();
    let consumer = stageflow::consumer(Count::<T>(0, std::marker::PhantomData))
        .subscribe_to(&producer, SubscribeOptions::new().max_demand(1000))
        .unwrap()
        .spawn()
        .unwrap();
    consumer.join();
    let elapsed = t.elapsed();
    assert_eq!(stats.snapshot().frames, n as u64);
    elapsed
}

/// ureq, a `BufReader`, `read_until` and `from_slice` on one thread.
fn plain_loop<T: DeserializeOwned + Send + 'static>(url: &str, n: usize) -> Duration {
    read_loop::<T>(url, n, false)
}

/// The same loop handing its events, 500 at a time, to another thread that drops them: the
/// least any pipeline does with them.
fn plain_handoff<T: DeserializeOwned + Send + 'static>(url: &str, n: usize) -> Duration {
    read_loop::<T>(url, n, true)
}

fn read_loop<T: DeserializeOwned + Send + 'static>(url: &str, n: usize, handoff: bool) -> Duration {
    let t = Instant::now();
    let (tx, rx) = crossbeam_channel::bounded::<Vec<T>>(4);
    let dropper = std::thread::spawn(move || rx.iter().for_each(drop));
    let mut batch = Vec::with_capacity(500);
    let response = ureq::get(url).call().unwrap();
    let mut reader = BufReader::with_capacity(64 * 1024, response.into_body().into_reader());
    let mut line = Vec::new();
    let mut count = 0;
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line).unwrap() == 0 {
            break;
        }
        let l = line.strip_suffix(b"\n").unwrap_or(&line);
        let l = l.strip_suffix(b"\r").unwrap_or(l);
        if l.is_empty() {
            continue;
        }
        let event: T = std::hint::black_box(serde_json::from_slice(l).unwrap());
        if handoff {
            batch.push(event);
            if batch.len() == 500 {
                tx.send(std::mem::replace(&mut batch, Vec::with_capacity(500)))
                    .unwrap();
            }
        }
        count += 1;
    }
    tx.send(batch).unwrap();
    drop(tx);
    dropper.join().unwrap();
    assert_eq!(count, n);
    t.elapsed()
}

fn mb_per_s(bytes: usize, times: &mut [Duration]) -> (f64, f64, f64) {
    let mut r: Vec<f64> = times
        .iter()
        .map(|t| bytes as f64 / 1e6 / t.as_secs_f64())
        .collect();
    r.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (r[r.len() / 2], r[0], r[r.len() - 1])
}

/// Prints the table of row l.
pub(crate) fn table(quick: bool, rounds: usize) {
    let n = if quick { 30_000 } else { 100_000 };
    let body = Arc::new(body(n));
    let bytes = body.len();
    let server = Server::start(body);
    println!(
        "## l: NDJSON decode, {n} messages, {:.1} MB over loopback (MB/s: median (min–max) of {rounds} rounds, run alternately)",
        bytes as f64 / 1e6
    );
    println!();
    println!(
        "| id | into | HTTP producer → consumer | plain read_until + from_slice | ratio | \
         plain loop, events dropped on another thread |"
    );
    println!("|---|---|---|---|---|---|");
    type Run = fn(&str, usize) -> Duration;
    let rows: [(&str, &str, [Run; 3]); 2] = [
        (
            "l1",
            "`serde_json::Value`",
            [
                through_producer::<serde_json::Value>,
                plain_loop::<serde_json::Value>,
                plain_handoff::<serde_json::Value>,
            ],
        ),
        (
            "l2",
            "a typed struct",
            [
                through_producer::<Message>,
                plain_loop::<Message>,
                plain_handoff::<Message>,
            ],
        ),
    ];
    for (id, into, runs) in rows {
        let mut times: [Vec<Duration>; 3] = Default::default();
        for run in &runs {
            run(&server.url, n); // Warm up.
        }
        for _ in 0..rounds {
            for (run, t) in runs.iter().zip(&mut times) {
                t.push(run(&server.url, n));
            }
        }
        let [(ma, la, ha), (mb, lb, hb), (mc, lc, hc)] = times.map(|mut t| mb_per_s(bytes, &mut t));
        println!(
            "| {id} | {into} | {ma:.0} ({la:.0}–{ha:.0}) | {mb:.0} ({lb:.0}–{hb:.0}) | {:.2}× | \
             {mc:.0} ({lc:.0}–{hc:.0}) |",
            ma / mb
        );
    }
    println!();
}
