//! The top 25 hashtags over time windows, across two tweet streams: Flow's seed story on
//! threads. Two synthetic streams (in-process, offline) are merged, hashtags extracted by the
//! mapper stages, partitioned by tag into counting stages, counted per 5-second periodic
//! window, and each window's top 25 (merged from every partition's top 25) is printed as a
//! ranked table, redrawn in place in a terminal (plain lines when stdout is not one).
//!
//! `cargo run --release --example top_hashtags [-- --window-secs 5 --tweets 5000 --pace-ms 1]`
//!
//! * `--window-secs N`: the window's length (default 5);
//! * `--tweets N`: tweets per synthetic stream (default 20 000), `--pace-ms N` between two
//!   tweets of a stream (default 1; 0 for as fast as they are asked);
//! * `--url URL` with `TWITTER_BEARER_TOKEN` set (feature `http`): read a real
//!   newline-delimited JSON stream instead, e.g. `https://api.x.com/2/tweets/sample/stream`.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::time::Duration;

use stageflow::flow::{
    top_n, Emitted, Fired, Flow, FlowError, FlowStream, ManualClock, Partitions, SystemClock,
    Window, WindowId,
};
use stageflow::{Context, Producer};

/// The run's options (see the module docs).
#[derive(Clone, Debug)]
pub(crate) struct Options {
    pub(crate) url: Option<String>,
    /// Tweets per synthetic stream.
    pub(crate) tweets: usize,
    /// Time between two tweets of a stream; `None`: as fast as they are asked for.
    pub(crate) pace: Option<Duration>,
    pub(crate) window: Duration,
    pub(crate) top: usize,
    pub(crate) partitions: usize,
    /// Processing time from this clock instead of the system's (tests keep it still).
    pub(crate) clock: Option<ManualClock>,
    pub(crate) print: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            url: None,
            tweets: 20_000,
            pace: Some(Duration::from_millis(1)),
            window: Duration::from_secs(5),
            top: 25,
            partitions: 4,
            clock: None,
            print: true,
        }
    }
}

/// Tags and their counts, greatest first.
pub(crate) type Top = Vec<(String, u64)>;

/// What a run saw: each window's top tags, in window order.
#[derive(Debug, Default)]
pub(crate) struct Summary {
    pub(crate) windows: Vec<(WindowId, Fired, Top)>,
}

/// The hashtags the synthetic streams use, the first ones far more often.
const TAGS: [&str; 40] = [
    "rust",
    "elixir",
    "genstage",
    "backpressure",
    "flow",
    "threads",
    "crossbeam",
    "tokio",
    "pipeline",
    "stream",
    "demand",
    "broadway",
    "erlang",
    "beam",
    "async",
    "sync",
    "channels",
    "bounded",
    "windows",
    "triggers",
    "partition",
    "reduce",
    "departition",
    "hashtags",
    "twitter",
    "bench",
    "latency",
    "throughput",
    "memory",
    "cores",
    "proptest",
    "criterion",
    "rayon",
    "serde",
    "ureq",
    "json",
    "http",
    "tcp",
    "loopback",
    "offline",
];

/// A small deterministic generator (SplitMix64).
fn next_random(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The next tweet of a stream: one to three hashtags, the first of `TAGS` most often.
fn tweet(state: &mut u64) -> String {
    let n = 1 + next_random(state) % 3;
    let mut text = String::from("reading about");
    for _ in 0..n {
        let r = (next_random(state) % 10_000) as f64 / 10_000.0;
        let tag = TAGS[(r * r * TAGS.len() as f64) as usize];
        text.push_str(&format!(" #{tag}"));
    }
    text.push_str(", again!");
    text
}

/// The tweets of a synthetic stream, as [`TweetStream`] emits them.
#[allow(dead_code)] // Read by the tests, through `expected_top`.
fn synthetic(seed: u64, count: usize) -> impl Iterator<Item = String> {
    let mut state = seed;
    (0..count).map(move |_| tweet(&mut state))
}

/// The hashtags of a tweet, lowercased, without trailing punctuation.
pub(crate) fn hashtags(text: &str) -> Vec<String> {
    text.split_whitespace()
        .filter_map(|w| w.strip_prefix('#'))
        .map(|t| t.trim_end_matches(|c: char| !c.is_alphanumeric() && c != '_'))
        .filter(|t| !t.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// The top tags of both synthetic streams, counted on one thread.
#[allow(dead_code)] // Read by the tests.
pub(crate) fn expected_top(opts: &Options) -> Vec<(String, u64)> {
    let mut counts: HashMap<String, u64> = HashMap::new();
    for text in synthetic(1, opts.tweets).chain(synthetic(2, opts.tweets)) {
        for tag in hashtags(&text) {
            *counts.entry(tag).or_insert(0) += 1;
        }
    }
    top_n(counts, opts.top, |(_, n)| *n)
}

/// A synthetic tweet stream: `count` tweets, one per `pace` while there is demand.
struct TweetStream {
    state: u64,
    left: usize,
    pace: Option<Duration>,
    demand: usize,
    scheduled: bool,
}

struct Tick;

impl TweetStream {
    fn new(seed: u64, count: usize, pace: Option<Duration>) -> TweetStream {
        TweetStream {
            state: seed,
            left: count,
            pace,
            demand: 0,
            scheduled: false,
        }
    }

    fn emit(&mut self, n: usize, ctx: &mut Context<'_, String, Tick>) {
        let n = n.min(self.left);
        for _ in 0..n {
            ctx.emit(tweet(&mut self.state));
        }
        self.left -= n;
        self.demand -= n.min(self.demand);
        if self.left == 0 {
            ctx.finish();
        }
    }

    fn schedule(&mut self, ctx: &mut Context<'_, String, Tick>) {
        if let (Some(pace), false, true) = (self.pace, self.scheduled, self.demand > 0) {
            self.scheduled = true;
            ctx.send_after(Tick, pace);
        }
    }
}

impl Producer for TweetStream {
    type Out = String;
    type Message = Tick;

    fn handle_demand(&mut self, demand: usize, ctx: &mut Context<'_, String, Tick>) {
        self.demand += demand;
        match self.pace {
            None => self.emit(demand, ctx),
            Some(_) => self.schedule(ctx),
        }
    }

    fn handle_message(&mut self, _: Tick, ctx: &mut Context<'_, String, Tick>) {
        self.scheduled = false;
        if self.left > 0 {
            self.emit(1, ctx);
        }
        if self.left > 0 {
            self.schedule(ctx);
        }
    }
}

/// The flow: hashtags, partitioned by tag, counted per window, each partition's top merged
/// into the window's top.
fn top_per_window<S: Send + 'static>(
    tweets: Flow<S, String>,
    opts: &Options,
) -> Result<FlowStream<Emitted<Top>>, FlowError> {
    let top = opts.top;
    let window = match &opts.clock {
        Some(clock) => Window::periodic(opts.window).clock(clock.clone()),
        None => Window::periodic(opts.window).clock(SystemClock),
    };
    tweets
        .flat_map(|text: String| hashtags(&text))
        .partition(
            Partitions::by_key(|tag: &String| tag.clone())
                .stages(opts.partitions)
                .window(window),
        )
        .count_by_key(|tag| tag.clone())
        .take_top(top, |(_, n)| *n)
        .departition_top(top, |(_, n)| *n)
        .stream()
}

/// A v2 stream message (`{"data":{"text":...}}`), as far as this example reads it.
#[cfg(feature = "http")]
#[derive(serde::Deserialize)]
struct Message {
    data: Text,
}

#[cfg(feature = "http")]
#[derive(serde::Deserialize)]
struct Text {
    text: String,
}

/// Reads a real newline-delimited JSON stream of v2 tweets.
#[cfg(feature = "http")]
fn from_url(url: &str) -> Result<Flow<Message, String>, Box<dyn std::error::Error>> {
    let mut builder = stageflow::http::stream(url);
    if let Ok(token) = std::env::var("TWITTER_BEARER_TOKEN") {
        builder = builder.bearer_token(token);
    }
    let tweets = builder.json::<Message>().build()?;
    Ok(Flow::from_producer(tweets)
        .stages(2)
        .map(|m: Message| m.data.text))
}

/// Prints one window's table.
fn show(e: &Emitted<Top>, clear: bool) {
    let mut out = std::io::stdout().lock();
    if clear {
        let _ = write!(out, "\x1b[2J\x1b[H");
    }
    let hms = |d: Duration| {
        let s = d.as_secs() % 86_400;
        format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    };
    let span = match e.window {
        WindowId::Periodic { start, end } => format!("{}–{} UTC", hms(start), hms(end)),
        other => format!("{other:?}"),
    };
    let why = if e.fired == Fired::Done {
        " (input ended)"
    } else {
        ""
    };
    let _ = writeln!(out, "top {} hashtags, {span}{why}", e.value.len());
    let _ = writeln!(out, "{:>4}  {:<16} {:>6}", "rank", "hashtag", "count");
    for (i, (tag, n)) in e.value.iter().enumerate() {
        let _ = writeln!(out, "{:>4}  #{:<15} {:>6}", i + 1, tag, n);
    }
    let _ = writeln!(out);
    let _ = out.flush();
}

/// Runs the example.
pub(crate) fn run(opts: Options) -> Result<Summary, Box<dyn std::error::Error>> {
    let stream = match &opts.url {
        #[cfg(feature = "http")]
        Some(url) => top_per_window(from_url(url)?, &opts)?,
        #[cfg(not(feature = "http"))]
        Some(_) => return Err("--url needs the `http` feature".into()),
        None => {
            let streams = [
                TweetStream::new(1, opts.tweets, opts.pace),
                TweetStream::new(2, opts.tweets, opts.pace),
            ];
            top_per_window(Flow::from_producers(streams).stages(2), &opts)?
        }
    };
    let clear = opts.print && std::io::stdout().is_terminal();
    let mut summary = Summary::default();
    let mut stream = stream;
    for e in stream.by_ref() {
        if opts.print {
            show(&e, clear);
        }
        summary.windows.push((e.window, e.fired, e.value));
    }
    stream.finish()?;
    Ok(summary)
}

#[allow(dead_code)] // Tests call `run` only.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut opts = Options::default();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut number = |name: &str| -> Result<u64, Box<dyn std::error::Error>> {
            Ok(args
                .next()
                .ok_or(format!("{name} needs a number"))?
                .parse()?)
        };
        match a.as_str() {
            "--window-secs" => opts.window = Duration::from_secs(number("--window-secs")?.max(1)),
            "--tweets" => opts.tweets = number("--tweets")? as usize,
            "--pace-ms" => {
                let ms = number("--pace-ms")?;
                opts.pace = (ms > 0).then(|| Duration::from_millis(ms));
            }
            "--url" => opts.url = args.next(),
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }
    let summary = run(opts)?;
    eprintln!("{} windows", summary.windows.len());
    Ok(())
}
