//! Helpers shared by the integration tests: bounded waits and instrumented stages that report
//! what happened to them over channels.
#![allow(dead_code, unreachable_pub)] // each test file uses a different part of this module

use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use stageflow::{
    Consumer, ConsumerContext, Context, DemandMode, Events, Producer, ProducerConsumer, Reason,
    Role, Stage, Subscription,
};

/// The longest any test waits for anything: only a failing test waits this long. Generous,
/// because a test must pass on a loaded machine (at load 12 on 2 cores, a timer-driven
/// producer feeding a consumer that asks for 7 at a time took more than 10 s for 2 300 events).
pub const LIMIT: Duration = Duration::from_secs(30);

/// Joins a stage, failing the test clearly if it does not end within [`LIMIT`].
pub fn joined<S, R: Role<S>>(stage: &Stage<S, R>) -> Reason {
    stage
        .join_timeout(LIMIT)
        .unwrap_or_else(|| panic!("stage {} did not end within {LIMIT:?}", stage.name()))
}

/// Receives the next report, failing the test clearly after [`LIMIT`].
pub fn next<T>(rx: &Receiver<T>) -> T {
    rx.recv_timeout(LIMIT)
        .unwrap_or_else(|e| panic!("nothing arrived within {LIMIT:?}: {e}"))
}

/// Asserts that nothing arrives for a short while.
pub fn quiet<T: std::fmt::Debug>(rx: &Receiver<T>) {
    if let Ok(x) = rx.recv_timeout(Duration::from_millis(100)) {
        panic!("expected nothing, got {x:?}");
    }
}

/// What an instrumented stage reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report<T> {
    /// `handle_demand(n)` was called.
    Demand(usize),
    /// `handle_events` was called with this batch.
    Batch(Vec<T>),
    /// `handle_subscribe` was called.
    Subscribed,
    /// `handle_cancel` was called with this reason.
    Cancelled(Reason),
}

/// A producer that emits exactly what it is asked for, counting up from `next`, and finishes
/// after `limit` events (never, with `None`). Reports each demand.
pub struct Numbers {
    pub next: u64,
    pub limit: Option<u64>,
    pub tx: Sender<Report<u64>>,
}

impl Numbers {
    pub fn new(limit: Option<u64>) -> (Numbers, Receiver<Report<u64>>) {
        let (tx, rx) = crossbeam_channel::unbounded();
        (Numbers { next: 0, limit, tx }, rx)
    }
}

impl Producer for Numbers {
    type Out = u64;
    type Message = ();

    fn handle_demand(&mut self, demand: usize, ctx: &mut Context<'_, u64>) {
        let _ = self.tx.send(Report::Demand(demand));
        let mut end = self.next + demand as u64;
        if let Some(limit) = self.limit {
            end = end.min(limit);
        }
        ctx.emit_all(self.next..end);
        self.next = end;
        if Some(self.next) == self.limit {
            ctx.finish();
        }
    }
}

/// A consumer that reports every batch, subscription and cancellation; it can sleep per batch
/// and can take its demand into its own hands.
pub struct Recorder<T> {
    pub tx: Sender<Report<T>>,
    pub delay: Duration,
    pub mode: DemandMode,
}

impl<T> Recorder<T> {
    pub fn new() -> (Recorder<T>, Receiver<Report<T>>) {
        let (tx, rx) = crossbeam_channel::unbounded();
        (
            Recorder {
                tx,
                delay: Duration::ZERO,
                mode: DemandMode::Automatic,
            },
            rx,
        )
    }
}

impl<T: Send + 'static> Consumer for Recorder<T> {
    type In = T;
    type Message = ();

    fn handle_events(&mut self, events: Events<'_, T>, _: &mut ConsumerContext<'_>) {
        let batch: Vec<T> = events.collect();
        if !self.delay.is_zero() {
            std::thread::sleep(self.delay);
        }
        let _ = self.tx.send(Report::Batch(batch));
    }

    fn handle_subscribe(&mut self, _: &Subscription, _: &mut ConsumerContext<'_>) -> DemandMode {
        let _ = self.tx.send(Report::Subscribed);
        self.mode
    }

    fn handle_cancel(&mut self, _: &Subscription, reason: &Reason, _: &mut ConsumerContext<'_>) {
        let _ = self.tx.send(Report::Cancelled(reason.clone()));
    }
}

/// Collects batches from a recorder's reports until `n` events have arrived.
pub fn collect_events<T: std::fmt::Debug>(rx: &Receiver<Report<T>>, n: usize) -> Vec<Vec<T>> {
    let mut batches = Vec::new();
    let mut got = 0;
    while got < n {
        if let Report::Batch(b) = next(rx) {
            got += b.len();
            batches.push(b);
        }
    }
    batches
}

/// A producer-consumer that passes numbers on unchanged.
pub struct Pass;

impl ProducerConsumer for Pass {
    type In = u64;
    type Out = u64;
    type Message = ();

    fn handle_events(&mut self, events: Events<'_, u64>, ctx: &mut Context<'_, u64>) {
        ctx.emit_all(events);
    }
}

/// Like [`Recorder`], and it answers a sync call (its message is the reply), so that a test
/// knows it has handled everything sent to it before (its asks included).
pub struct Synced<T> {
    pub tx: Sender<Report<T>>,
    pub mode: DemandMode,
}

impl<T: Send + 'static> Consumer for Synced<T> {
    type In = T;
    type Message = stageflow::Reply<()>;

    fn handle_events(
        &mut self,
        events: Events<'_, T>,
        _: &mut ConsumerContext<'_, stageflow::Reply<()>>,
    ) {
        let _ = self.tx.send(Report::Batch(events.collect()));
    }

    fn handle_message(
        &mut self,
        reply: stageflow::Reply<()>,
        ctx: &mut ConsumerContext<'_, stageflow::Reply<()>>,
    ) {
        ctx.reply(reply, ());
    }

    fn handle_subscribe(
        &mut self,
        _: &Subscription,
        _: &mut ConsumerContext<'_, stageflow::Reply<()>>,
    ) -> DemandMode {
        let _ = self.tx.send(Report::Subscribed);
        self.mode
    }

    fn handle_cancel(
        &mut self,
        _: &Subscription,
        reason: &Reason,
        _: &mut ConsumerContext<'_, stageflow::Reply<()>>,
    ) {
        let _ = self.tx.send(Report::Cancelled(reason.clone()));
    }
}

/// Log records captured by [`capture_logs`]: (level, message).
pub type Logs = std::sync::Arc<parking_lot::Mutex<Vec<(log::Level, String)>>>;

struct Capture(Logs);

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        self.0
            .lock()
            .push((record.level(), record.args().to_string()));
    }
    fn flush(&self) {}
}

/// Installs, once per test binary, a logger that keeps every record; returns them.
pub fn capture_logs() -> Logs {
    static LOGS: std::sync::OnceLock<Logs> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Logs::default();
        log::set_boxed_logger(Box::new(Capture(logs.clone()))).expect("one logger per binary");
        log::set_max_level(log::LevelFilter::Trace);
        logs
    })
    .clone()
}

/// The captured records whose message contains `needle`.
pub fn logged(logs: &Logs, needle: &str) -> Vec<(log::Level, String)> {
    logs.lock()
        .iter()
        .filter(|(_, m)| m.contains(needle))
        .cloned()
        .collect()
}

/// Emits on demand; a message (a "blocked" signal and a gate) makes its callback block until
/// the gate opens (or the test's limit passes): a stage busy in a long callback.
pub struct Blocking {
    pub next: u64,
}

impl Producer for Blocking {
    type Out = u64;
    type Message = (Sender<()>, Receiver<()>);

    fn handle_demand(&mut self, demand: usize, ctx: &mut Context<'_, u64, Self::Message>) {
        ctx.emit_all(self.next..self.next + demand as u64);
        self.next += demand as u64;
    }

    fn handle_message(
        &mut self,
        (blocked, gate): Self::Message,
        _: &mut Context<'_, u64, Self::Message>,
    ) {
        let _ = blocked.send(());
        let _ = gate.recv_timeout(LIMIT);
    }
}

/// Makes `p` block in a callback; returns once it is inside it, with the gate that frees it.
pub fn block<S>(p: &stageflow::ProducerHandle<S>) -> Sender<()>
where
    S: Producer<Message = (Sender<()>, Receiver<()>)>,
{
    let (blocked_tx, blocked) = crossbeam_channel::bounded(1);
    let (gate_tx, gate) = crossbeam_channel::bounded(1);
    p.cast((blocked_tx, gate)).unwrap();
    blocked
        .recv_timeout(LIMIT)
        .expect("the producer entered its blocking callback");
    gate_tx
}

/// A timer message.
pub enum Tick {
    Tick,
}

/// The guide's pattern for blocking sources: it keeps its unmet demand and emits from a timer,
/// a few events per tick, counting up to `limit`, then finishes.
pub struct Trickle {
    pub next: u64,
    pub limit: u64,
    pub demand: usize,
    pub ticking: bool,
}

impl Trickle {
    /// Counts from 0 to `limit`.
    pub fn new(limit: u64) -> Trickle {
        Trickle {
            next: 0,
            limit,
            demand: 0,
            ticking: false,
        }
    }
}

impl Producer for Trickle {
    type Out = u64;
    type Message = Tick;

    fn handle_demand(&mut self, demand: usize, ctx: &mut Context<'_, u64, Tick>) {
        self.demand += demand;
        if !self.ticking {
            self.ticking = true;
            ctx.send_after(Tick::Tick, Duration::from_millis(1));
        }
    }

    fn handle_message(&mut self, Tick::Tick: Tick, ctx: &mut Context<'_, u64, Tick>) {
        let k = self.demand.min(3) as u64;
        let end = (self.next + k).min(self.limit);
        ctx.emit_all(self.next..end);
        self.demand -= (end - self.next) as usize;
        self.next = end;
        if self.next == self.limit {
            ctx.finish();
        } else if self.demand > 0 {
            ctx.send_after(Tick::Tick, Duration::from_millis(1));
        } else {
            self.ticking = false;
        }
    }
}

/// What a [`BySubscription`] sink handled, per subscription.
pub type Log = std::sync::Arc<
    std::sync::Mutex<std::collections::HashMap<stageflow::SubscriptionId, Vec<u64>>>,
>;

/// Records every batch by subscription; asks by hand if `manual`.
pub struct BySubscription {
    pub log: Log,
    pub manual: bool,
}

impl Consumer for BySubscription {
    type In = u64;
    type Message = ();
    fn handle_events(&mut self, events: Events<'_, u64>, _: &mut ConsumerContext<'_>) {
        let sub = events.subscription();
        let events: Vec<u64> = events.collect();
        self.log
            .lock()
            .unwrap()
            .entry(sub)
            .or_default()
            .extend(events);
    }
    fn handle_subscribe(&mut self, _: &Subscription, _: &mut ConsumerContext<'_>) -> DemandMode {
        if self.manual {
            DemandMode::Manual
        } else {
            DemandMode::Automatic
        }
    }
}
