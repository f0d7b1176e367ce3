//! A Twitter/X-style stream read by a slow consumer: the HTTP producer reads the response body
//! only while the consumer has demand, so when the consumer falls behind, reading pauses and
//! TCP holds the server back; a line says when the producer pauses and when it resumes.
//!
//! With no arguments it starts a local server streaming synthetic tweets in the v2 format
//! (newline-delimited JSON with blank-line heartbeats) and reads it offline:
//!
//! `cargo run --example tweet_stream [-- --count 40 --delay-ms 20 --format v1 --firehose]`
//!
//! * `--format v1`: the v1.1 length-delimited format (`delimited=length`);
//! * `--firehose`: keep reading whatever the demand and let the producer's buffer drop the
//!   oldest tweets (for sampled streams that disconnect slow readers);
//! * `--url URL` with `TWITTER_BEARER_TOKEN` set: read a real stream instead, e.g.
//!   `https://api.x.com/2/tweets/sample/stream`.

use std::time::Duration;

use serde::Deserialize;
use stageflow::http::{self, Framing, HttpStats, ReadPolicy};
use stageflow::{BufferKeep, Consumer, ConsumerContext, Events, Reason, SubscribeOptions};

#[path = "support/tweet_server.rs"]
mod tweet_server;
use tweet_server::synthetic_server;

/// The part of a v2 stream message this example reads.
#[derive(Debug, Deserialize)]
struct Message {
    data: Tweet,
}

#[derive(Debug, Deserialize)]
struct Tweet {
    text: String,
}

/// What a run saw.
#[derive(Debug, Default)]
pub(crate) struct Summary {
    pub(crate) texts: Vec<String>,
    pub(crate) pauses: u64,
    pub(crate) heartbeats: u64,
    pub(crate) discarded: u64,
}

/// The run's options (see the module docs).
#[derive(Clone, Debug)]
pub(crate) struct Options {
    pub(crate) url: Option<String>,
    pub(crate) v1: bool,
    pub(crate) firehose: bool,
    pub(crate) count: usize,
    pub(crate) delay: Duration,
    pub(crate) print: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            url: None,
            v1: false,
            firehose: false,
            count: 40,
            delay: Duration::from_millis(20),
            print: true,
        }
    }
}

/// Reads tweets slowly; prints them, and a line when the producer pauses or resumes reading.
struct SlowReader {
    opts: Options,
    stats: HttpStats,
    pauses_shown: u64,
    resumes_shown: u64,
    texts: std::sync::Arc<parking_lot::Mutex<Vec<String>>>,
}

impl Consumer for SlowReader {
    type In = Message;
    type Message = ();

    fn handle_events(&mut self, events: Events<'_, Message>, ctx: &mut ConsumerContext<'_>) {
        for m in events {
            // Report the reader's pauses and resumes since the last tweet, in order.
            let s = self.stats.snapshot();
            let resumes = s.pauses - u64::from(s.paused);
            while self.opts.print && (self.pauses_shown < s.pauses || self.resumes_shown < resumes)
            {
                if self.resumes_shown < self.pauses_shown {
                    println!("-- producer resumed reading");
                    self.resumes_shown += 1;
                } else {
                    println!("-- producer paused reading: no demand (TCP holds the server back)");
                    self.pauses_shown += 1;
                }
            }
            if self.opts.print {
                println!("{}", m.data.text);
            }
            let mut texts = self.texts.lock();
            texts.push(m.data.text);
            if texts.len() >= self.opts.count {
                ctx.stop(Reason::Normal);
                return;
            }
            drop(texts);
            std::thread::sleep(self.opts.delay); // The slow part.
        }
    }
}

/// Runs the example: reads `count` tweets through a slow consumer.
pub(crate) fn run(opts: Options) -> Result<Summary, Box<dyn std::error::Error>> {
    let (url, server) = match &opts.url {
        Some(u) => (u.clone(), None),
        None => {
            let (url, thread) = synthetic_server(opts.count, opts.v1)?;
            (url, Some(thread))
        }
    };
    let offline = server.is_some();
    let mut builder = http::stream(url)
        .framing(if opts.v1 {
            Framing::LengthPrefixed
        } else {
            Framing::Ndjson
        })
        .finish_at_end(offline);
    if let Ok(token) = std::env::var("TWITTER_BEARER_TOKEN") {
        if !offline {
            builder = builder.bearer_token(token);
        }
    }
    if opts.firehose {
        builder = builder.read_policy(ReadPolicy::KeepReading);
    }
    let tweets = builder.json::<Message>().build()?;
    let stats = tweets.stats();
    let producer = stageflow::producer(tweets)
        .name("tweets")
        .buffer_size(100)
        .buffer_keep(BufferKeep::Last)
        .spawn()?;
    let texts = std::sync::Arc::new(parking_lot::Mutex::new(Vec::new()));
    let reader = SlowReader {
        opts: opts.clone(),
        stats: stats.clone(),
        pauses_shown: 0,
        resumes_shown: 0,
        texts: texts.clone(),
    };
    let consumer = stageflow::consumer(reader)
        .name("slow-reader")
        .subscribe_to(&producer, SubscribeOptions::new().max_demand(10))?
        .spawn()?;
    let reason = consumer.join();
    producer.stop();
    producer.join();
    if let Some(thread) = server {
        let _ = thread.join();
    }
    if !reason.is_normal() {
        return Err(format!("the reader ended with {reason}").into());
    }
    let s = stats.snapshot();
    let texts = std::mem::take(&mut *texts.lock());
    Ok(Summary {
        texts,
        pauses: s.pauses,
        heartbeats: s.heartbeats,
        discarded: s.discarded,
    })
}

#[allow(dead_code)] // Tests call `run` only.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut opts = Options::default();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--url" => opts.url = args.next(),
            "--format" => opts.v1 = args.next().as_deref() == Some("v1"),
            "--firehose" => opts.firehose = true,
            "--count" => opts.count = args.next().ok_or("--count needs a number")?.parse()?,
            "--delay-ms" => {
                let ms: u64 = args.next().ok_or("--delay-ms needs a number")?.parse()?;
                opts.delay = Duration::from_millis(ms);
            }
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }
    if opts.url.is_some() && std::env::var("TWITTER_BEARER_TOKEN").is_err() {
        return Err("--url needs TWITTER_BEARER_TOKEN in the environment".into());
    }
    let s = run(opts)?;
    println!(
        "{} tweets; the producer paused {} times; {} heartbeats; {} discarded",
        s.texts.len(),
        s.pauses,
        s.heartbeats,
        s.discarded
    );
    Ok(())
}
