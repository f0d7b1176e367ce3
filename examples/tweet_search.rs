//! "Search recent" as a polling producer with two consumers: the producer fetches a JSON page
//! from a URL built from its cursor (`since_id`), serves the consumers' demand from what it
//! holds, fetches again only when demand exceeds it, and waits an interval when a page comes
//! back empty. Each consumer subscribes with max demand 10 and min demand 0, so it asks for
//! ten tweets only when it has handled the last ten.
//!
//! With no arguments it searches a local synthetic endpoint, offline:
//!
//! `cargo run --example tweet_search [-- --count 60]`
//!
//! `--url URL` with `TWITTER_BEARER_TOKEN` set searches a real endpoint instead, e.g.
//! `'https://api.x.com/2/tweets/search/recent?query=rust'`.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{unbounded, Sender};
use serde_json::{json, Value};
use stageflow::http::{self, Page};
use stageflow::{Consumer, ConsumerContext, Events, SubscribeOptions, Topology};

/// A tweet as the search returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Tweet {
    pub(crate) id: u64,
    pub(crate) text: String,
}

/// Handles tweets one batch at a time, reporting each with the worker's name.
struct Worker {
    name: &'static str,
    out: Sender<(&'static str, Tweet)>,
    print: bool,
}

impl Consumer for Worker {
    type In = Tweet;
    type Message = ();

    fn handle_events(&mut self, events: Events<'_, Tweet>, _: &mut ConsumerContext<'_>) {
        for t in events {
            if self.print {
                println!("[{}] {}: {}", self.name, t.id, t.text);
            }
            let _ = self.out.send((self.name, t));
        }
    }
}

/// A search endpoint where seven new tweets appear at each request, up to `count`: it answers
/// `?since_id=N` with at most ten tweets newer than N, oldest first, and `meta.newest_id`.
fn synthetic_search(count: u64) -> std::io::Result<(String, Synthetic)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let url = format!("http://{addr}/2/tweets/search/recent?query=stageflow");
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = stop.clone();
    let thread = std::thread::spawn(move || {
        let mut posted = 0;
        for socket in listener.incoming() {
            if stopped.load(Ordering::Relaxed) {
                return;
            }
            let Ok(mut socket) = socket else { continue };
            let mut reader = BufReader::new(socket.try_clone().expect("clone the socket"));
            let mut request = String::new();
            let _ = reader.read_line(&mut request);
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let since: u64 = request
                .split("since_id=")
                .nth(1)
                .and_then(|s| s.split([' ', '&']).next())
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            posted = (posted + 7).min(count);
            let ids: Vec<u64> = (since + 1..=posted).take(10).collect();
            let body = match ids.last() {
                Some(newest) => json!({
                    "data": ids.iter().map(|i| json!({"id": i.to_string(), "text": format!("result {i} for stageflow")})).collect::<Vec<_>>(),
                    "meta": {"newest_id": newest.to_string(), "result_count": ids.len()},
                }),
                None => json!({"meta": {"result_count": 0}}),
            }
            .to_string();
            let _ = write!(
                socket,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
        }
    });
    Ok((url, Synthetic { addr, stop, thread }))
}

/// The synthetic endpoint's thread.
struct Synthetic {
    addr: std::net::SocketAddr,
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl Synthetic {
    /// Stops the endpoint: wakes its accept loop with a connection and joins it.
    fn close(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = std::net::TcpStream::connect(self.addr);
        let _ = self.thread.join();
    }
}

/// The tweets of one page, and the page's newest id as the next cursor.
fn page(body: Value) -> Result<Page<Tweet, String>, String> {
    let tweets = body["data"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            let id = t["id"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .ok_or("a tweet without an id")?;
            let text = t["text"].as_str().unwrap_or_default().to_owned();
            Ok(Tweet { id, text })
        })
        .collect::<Result<Vec<_>, String>>()?;
    let newest = body["meta"]["newest_id"].as_str().map(str::to_owned);
    Ok(Page::new(tweets, newest))
}

/// Runs the search until `count` tweets were handled; returns which worker handled which.
pub(crate) fn run(
    url: Option<String>,
    count: usize,
    print: bool,
) -> Result<Vec<(&'static str, Tweet)>, Box<dyn std::error::Error>> {
    let (base, server) = match url {
        Some(u) => (u, None),
        None => {
            let (u, stop) = synthetic_search(count as u64)?;
            (u, Some(stop))
        }
    };
    let separator = if base.contains('?') { '&' } else { '?' };
    let mut search = http::poll(
        move |since: Option<&String>| match since {
            Some(id) => format!("{base}{separator}since_id={id}"),
            None => base.clone(),
        },
        page,
    )
    .interval(Duration::from_millis(if server.is_some() {
        50
    } else {
        5_000
    }));
    if server.is_none() {
        let token = std::env::var("TWITTER_BEARER_TOKEN")
            .map_err(|_| "--url needs TWITTER_BEARER_TOKEN in the environment")?;
        search = search.bearer_token(token);
    }
    let producer = stageflow::producer(search.build()?)
        .name("search")
        .spawn()?;
    let (tx, rx) = unbounded();
    let options = SubscribeOptions::new().max_demand(10).min_demand(0);
    let mut topology = Topology::new().with(&producer);
    for name in ["worker-a", "worker-b"] {
        let w = Worker {
            name,
            out: tx.clone(),
            print,
        };
        let c = stageflow::consumer(w)
            .name(name)
            .subscribe_to(&producer, options.clone())?
            .spawn()?;
        topology.add(&c);
    }
    let mut handled = Vec::with_capacity(count);
    while handled.len() < count {
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(x) => handled.push(x),
            Err(_) => return Err("no tweet for 30 s".into()),
        }
    }
    topology.stop();
    topology.join_timeout(Duration::from_secs(10));
    if let Some(server) = server {
        server.close();
    }
    Ok(handled)
}

#[allow(dead_code)] // Tests call `run` only.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut url = None;
    let mut count = 60;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--url" => url = args.next(),
            "--count" => count = args.next().ok_or("--count needs a number")?.parse()?,
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }
    let handled = run(url, count, true)?;
    let a = handled.iter().filter(|(w, _)| *w == "worker-a").count();
    println!(
        "{} tweets: worker-a handled {a}, worker-b {}",
        handled.len(),
        handled.len() - a
    );
    Ok(())
}
