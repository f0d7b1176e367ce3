//! Broadcast: one producer of log entries and three consumers that each see the same stream
//! their own way. An archiver takes every entry; an alerter subscribes with a selector that
//! keeps only errors, a dashboard one that keeps only warnings. The selectors filter at the
//! producer, and what they reject does not use up the consumer's demand.
//!
//! `cargo run --example broadcast`. Logs go to stderr; `RUST_LOG` sets the level (default
//! info).

use std::error::Error;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use stageflow::dispatcher::BroadcastDispatcher;
use stageflow::{
    Consumer, ConsumerContext, Context, Events, Producer, Reason, SubscribeOptions, Topology,
};

/// How serious a log entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Level {
    Info,
    Warn,
    Error,
}

/// One log entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) id: u64,
    pub(crate) level: Level,
    pub(crate) text: String,
}

/// What each consumer received.
#[derive(Debug)]
pub(crate) struct Received {
    pub(crate) name: String,
    pub(crate) received: Vec<Entry>,
}

/// What a run did.
#[derive(Debug)]
pub(crate) struct Summary {
    /// Entries the producer emitted.
    pub(crate) produced: u64,
    /// Per consumer, in subscription order.
    pub(crate) consumers: Vec<Received>,
}

/// What the producer can be told.
pub(crate) enum Cmd {
    /// Everyone has subscribed: start emitting.
    Start,
}

/// Emits `limit` entries, as demanded, once started, then finishes.
///
/// A broadcast consumer sees only what is dispatched after it subscribed, so the source holds
/// its demand until every consumer is there (GenStage's advice: start accumulating, then
/// forward).
struct Logs {
    next: u64,
    limit: u64,
    started: bool,
    /// Demand not met yet.
    owed: usize,
    /// Entries emitted so far, for the summary.
    emitted: Arc<AtomicU64>,
}

impl Logs {
    fn entry(id: u64) -> Entry {
        let level = match id % 10 {
            3 => Level::Error,
            1 | 6 => Level::Warn,
            _ => Level::Info,
        };
        Entry {
            id,
            level,
            text: format!(
                "request {id} {}",
                if level == Level::Info { "ok" } else { "slow" }
            ),
        }
    }

    fn emit(&mut self, ctx: &mut Context<'_, Entry, Cmd>) {
        let end = (self.next + self.owed as u64).min(self.limit);
        ctx.emit_all((self.next..end).map(Logs::entry));
        self.owed -= (end - self.next) as usize;
        self.emitted.store(end, Ordering::Relaxed);
        self.next = end;
        if self.next == self.limit {
            ctx.finish();
        }
    }
}

impl Producer for Logs {
    type Out = Entry;
    type Message = Cmd;

    fn handle_demand(&mut self, demand: usize, ctx: &mut Context<'_, Entry, Cmd>) {
        self.owed += demand;
        if self.started {
            self.emit(ctx);
        }
    }

    fn handle_message(&mut self, msg: Cmd, ctx: &mut Context<'_, Entry, Cmd>) {
        let Cmd::Start = msg;
        self.started = true;
        self.emit(ctx);
    }
}

/// Keeps what it receives.
struct Keeper(Arc<Mutex<Vec<Entry>>>);

impl Consumer for Keeper {
    type In = Entry;
    type Message = ();

    fn handle_events(&mut self, events: Events<'_, Entry>, _: &mut ConsumerContext<'_>) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(events);
    }
}

/// Runs the pipeline over `entries` log entries.
pub(crate) fn run(entries: u64) -> Result<Summary, Box<dyn Error>> {
    let emitted = Arc::new(AtomicU64::new(0));
    let producer = stageflow::producer(Logs {
        next: 0,
        limit: entries,
        started: false,
        owed: 0,
        emitted: emitted.clone(),
    })
    .name("logs")
    .dispatcher(BroadcastDispatcher::new())
    .spawn()?;
    let mut topology = Topology::new();
    topology.add(&producer);

    let consumers = [
        ("everything", SubscribeOptions::new().max_demand(50)),
        (
            "errors",
            SubscribeOptions::new()
                .max_demand(5)
                .selector(|e: &Entry| e.level == Level::Error),
        ),
        (
            "warnings",
            SubscribeOptions::new()
                .max_demand(10)
                .selector(|e: &Entry| e.level == Level::Warn),
        ),
    ];
    let mut kept = Vec::new();
    for (name, options) in consumers {
        let store = Arc::new(Mutex::new(Vec::new()));
        let consumer = stageflow::consumer(Keeper(store.clone()))
            .name(name)
            .subscribe_to(&producer, options)?
            .spawn()?;
        topology.add(&consumer);
        kept.push((name, store));
    }
    producer
        .cast(Cmd::Start)
        .map_err(|_| "the producer ended early")?;

    // The producer finishes after its last entry; each consumer's (permanent) subscription
    // then ends, and so does the consumer.
    for (stage, reason) in topology.join_timeout(Duration::from_secs(10)) {
        match reason {
            Some(Reason::Normal) => {}
            Some(reason) => return Err(format!("stage {stage} ended with {reason}").into()),
            None => return Err(format!("stage {stage} did not end within 10 s").into()),
        }
    }
    let consumers = kept
        .into_iter()
        .map(|(name, store)| Received {
            name: name.to_owned(),
            received: std::mem::take(&mut *store.lock().unwrap_or_else(|e| e.into_inner())),
        })
        .collect();
    Ok(Summary {
        produced: emitted.load(Ordering::Relaxed),
        consumers,
    })
}

fn main() -> Result<(), Box<dyn Error>> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_target(false)
        .init();
    let summary = run(100)?;
    println!("the producer emitted {} entries", summary.produced);
    for c in &summary.consumers {
        let ids: Vec<String> = c
            .received
            .iter()
            .take(12)
            .map(|e| e.id.to_string())
            .collect();
        let more = if c.received.len() > 12 { ", ..." } else { "" };
        println!(
            "{:>10} got {:>3} entries: {}{more}",
            c.name,
            c.received.len(),
            ids.join(", ")
        );
        if let Some(last) = c.received.last() {
            println!("{:>10} last: {:?} {}", "", last.level, last.text);
        }
    }
    Ok(())
}
