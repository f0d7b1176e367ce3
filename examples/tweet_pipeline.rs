//! Broadway's classic shape over a tweet stream: one producer reads the stream (only while
//! the pipeline has demand), 50 processors upper-case each tweet, one batcher groups them by
//! 20 (or whatever arrived within 2 s) and prints each batch; every tweet is acknowledged,
//! successful or failed, and the totals add up to what was read.
//!
//! With no arguments it reads the local synthetic v2 stream (offline):
//!
//! `cargo run --example tweet_pipeline [-- --count 200 --fail-every 7]`
//!
//! * `--fail-every K`: every K-th tweet fails in its processor (and is acknowledged failed);
//! * `--url URL` with `TWITTER_BEARER_TOKEN` set: read a real stream for `--count` tweets,
//!   e.g. `https://api.x.com/2/tweets/sample/stream`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use stageflow::http::{self, Framing};
use stageflow::pipeline::{self, Acked, Batch, BatcherOptions, Message, ProcessorOptions};

#[path = "support/tweet_server.rs"]
mod tweet_server;

/// The part of a v2 stream message this example reads.
#[derive(Debug, Deserialize)]
struct Envelope {
    data: Tweet,
}

#[derive(Debug, Deserialize)]
struct Tweet {
    text: String,
}

/// The run's options (see the module docs).
#[derive(Clone, Debug)]
pub(crate) struct Options {
    pub(crate) url: Option<String>,
    pub(crate) count: usize,
    pub(crate) fail_every: Option<u64>,
    pub(crate) processors: usize,
    pub(crate) batch_size: usize,
    pub(crate) batch_timeout: Duration,
    pub(crate) print: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            url: None,
            count: 100,
            fail_every: None,
            processors: 50,
            batch_size: 20,
            batch_timeout: Duration::from_secs(2),
            print: true,
        }
    }
}

/// What a run saw.
#[derive(Debug, Default)]
pub(crate) struct Summary {
    /// Tweets read from the stream.
    pub(crate) read: u64,
    /// Acknowledged successful / failed.
    pub(crate) successful: u64,
    pub(crate) failed: u64,
    /// The size of each batch, in the order they were handled.
    pub(crate) batches: Vec<usize>,
    /// Every text the batches saw.
    #[allow(dead_code)] // Read by the test.
    pub(crate) texts: Vec<String>,
}

/// Runs the example.
pub(crate) fn run(opts: Options) -> Result<Summary, Box<dyn std::error::Error>> {
    let (url, server) = match &opts.url {
        Some(u) => (u.clone(), None),
        None => {
            let (url, thread) = tweet_server::synthetic_server(opts.count, false)?;
            (url, Some(thread))
        }
    };
    let offline = server.is_some();

    // The acknowledger: a real source would acknowledge deliveries; this one counts.
    let acked = Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
    let a = acked.clone();
    let ack: Arc<dyn pipeline::Acknowledger> =
        Arc::new(move |ok: Vec<Acked>, failed: Vec<Acked>| {
            a.0.fetch_add(ok.len() as u64, Ordering::Relaxed);
            a.1.fetch_add(failed.len() as u64, Ordering::Relaxed);
        });

    // Each frame becomes a message carrying its index as its acknowledgement id.
    let next_id = AtomicU64::new(0);
    let mut stream = http::stream(url)
        .framing(Framing::Ndjson)
        .finish_at_end(offline)
        .decode_with(move |frame| {
            let envelope: Envelope =
                serde_json::from_slice(frame.data()).map_err(|e| e.to_string())?;
            let id = next_id.fetch_add(1, Ordering::Relaxed);
            Ok(Message::new(envelope.data.text).acknowledger(ack.clone(), id))
        });
    if let (Ok(token), false) = (std::env::var("TWITTER_BEARER_TOKEN"), offline) {
        stream = stream.bearer_token(token);
    }
    let mut producer = Some(stream.build()?);

    let batches = Arc::new(parking_lot::Mutex::new((Vec::new(), Vec::new())));
    let b = batches.clone();
    let (print, fail_every) = (opts.print, opts.fail_every);
    let p = pipeline::builder("tweets")
        .producers(1, move |_| {
            let tweets = producer.take().expect("one producer");
            stageflow::producer(tweets).buffer_size(100)
        })
        .processors(
            ProcessorOptions::new().concurrency(opts.processors),
            move |m: &mut Message<String>| match (fail_every, m.ack_id()) {
                (Some(k), Some(id)) if id % k == k - 1 => Err("injected failure"),
                _ => Ok(m.data.to_uppercase()),
            },
        )
        .batcher(
            "print",
            BatcherOptions::new()
                .batch_size(opts.batch_size)
                .batch_timeout(opts.batch_timeout),
            move |batch: &mut Batch<String>| {
                if print {
                    println!("Got batch of {}", batch.messages.len());
                    for m in &batch.messages {
                        println!("  {}", m.data);
                    }
                }
                let mut b = b.lock();
                b.0.push(batch.messages.len());
                b.1.extend(batch.messages.iter().map(|m| m.data.clone()));
                Ok::<(), String>(())
            },
        )
        .start()?;

    let counters = if offline {
        // The server's stream ends; the producer finishes, and the pipeline after it.
        let outcomes = p.join();
        if let Some((stage, reason)) = outcomes.iter().find(|(_, r)| !r.is_normal()) {
            return Err(format!("stage {stage} ended with {reason}").into());
        }
        p.counters()
    } else {
        // A real stream never ends: read `count` tweets, then shut down gracefully.
        while p.counters().producers.emitted < opts.count as u64 {
            std::thread::sleep(Duration::from_millis(100));
        }
        let report = p.shutdown();
        if !report.is_complete() {
            return Err(format!("the shutdown left work behind: {report:?}").into());
        }
        report.counters
    };
    if let Some(thread) = server {
        let _ = thread.join();
    }
    let (sizes, texts) = std::mem::take(&mut *batches.lock());
    Ok(Summary {
        read: counters.producers.emitted,
        successful: acked.0.load(Ordering::Relaxed),
        failed: acked.1.load(Ordering::Relaxed),
        batches: sizes,
        texts,
    })
}

#[allow(dead_code)] // Tests call `run` only.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut opts = Options::default();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--url" => opts.url = args.next(),
            "--count" => opts.count = args.next().ok_or("--count needs a number")?.parse()?,
            "--fail-every" => {
                let k: u64 = args.next().ok_or("--fail-every needs a number")?.parse()?;
                if k == 0 {
                    return Err("--fail-every needs a number above 0".into());
                }
                opts.fail_every = Some(k);
            }
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }
    if opts.url.is_some() && std::env::var("TWITTER_BEARER_TOKEN").is_err() {
        return Err("--url needs TWITTER_BEARER_TOKEN in the environment".into());
    }
    let s = run(opts)?;
    println!(
        "{} tweets read: {} acknowledged successful, {} failed, in {} batches",
        s.read,
        s.successful,
        s.failed,
        s.batches.len()
    );
    Ok(())
}
