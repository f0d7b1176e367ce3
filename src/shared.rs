//! What a stage's thread shares with its handles: its name, the stop flag, counters and its
//! outcome. The stage's thread is the only writer of the counters (plain stores, no locked
//! read-modify-write); handles read them at any time.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};
use parking_lot::{Condvar, Mutex};

use crate::reason::Reason;
use crate::subscription::{Direction, SubscribeOptions, SubscriptionId};
use crate::timing::{StageTiming, Timing};

/// A snapshot of a stage's counters, read with [`Stage::counters`](crate::Stage::counters).
///
/// For a finished pipeline the counters balance: every event a producer emitted was received
/// by a consumer or discarded, and `discarded` counts each event dropped by a stage's explicit
/// policy (`buffer_keep`, or a stop that left events buffered).
///
/// # The accounting, as equations
///
/// Once a stage has ended these hold exactly, whatever ended it (a stop, a panic, a cancel,
/// its producers ending). While it runs they are approximate: `buffered` is published before
/// the stage waits and every few turns while it is busy, and events may be between two
/// stages. *handled* is what the stage's `handle_events` was handed,
/// the batch a panicking callback was in included: the engine does not count it, a callback
/// can.
///
/// - A **producer** whose dispatcher sends each event to one consumer (demand, partition):
///   `emitted = events_out + discarded + buffered`.
/// - A producer with a **broadcast** dispatcher counts every copy in `events_out`, so there
///   `emitted <= events_out + discarded + buffered` (each event that left went to every
///   consumer subscribed then, at least one), and each consumer's count of events from it is
///   at most `emitted`.
/// - A **consumer**: `events_in = handled + discarded + buffered`. Its discards are part of
///   what it received (events that reached it after it stopped, or on a subscription it had
///   let go).
/// - A **producer-consumer** is both at once, and its `discarded` and `buffered` sum both
///   sides: `events_in + emitted = handled + events_out + discarded + buffered`. One that
///   emits exactly one event per event handled (a map) therefore has
///   `events_in = events_out + discarded + buffered`.
/// - Across a **link**: once both stages have ended, the events a producer sent on a
///   subscription are the events its consumer received on it, so for a whole pipeline
///   `Σ events_out = Σ events_in`.
///
/// The soak test (`tests/soak.rs`) asserts them in every run, faults included: the producer's
/// and the consumer's exactly, the broadcast's bound, the producer-consumer's for its maps
/// (exactly, or as `events_in >= events_out + discarded + buffered` for one that panicked:
/// the soak cannot see how much of the batch it panicked in was emitted), and the link's
/// sum unless a `Stream` took part (a stream keeps no counters).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Counters {
    /// Events received from producers.
    pub events_in: u64,
    /// Events sent to consumers: each copy counts, so with a
    /// [`BroadcastDispatcher`](crate::dispatcher::BroadcastDispatcher) an event sent to three
    /// consumers counts three times. See `emitted` for each event once.
    pub events_out: u64,
    /// Events the stage emitted, each once however many consumers received it. For a producer
    /// at the end of its life, `emitted = events_out + discarded` (one consumer per event),
    /// and with a broadcast every consumer's `events_in` is at most `emitted`.
    pub emitted: u64,
    /// Events dropped by the buffer's keep policy, or left behind when the stage ended.
    pub discarded: u64,
    /// Events waiting in the stage: in its producer buffer, or (for a producer-consumer)
    /// received and not yet handled.
    ///
    /// The stage counts these itself and publishes the count when it is about to wait for a
    /// message, before it replies to a call, when it ends, and every few turns while it is
    /// busy: read while the stage is busy, the figure may be a few turns old. (The count sums
    /// several holders; recounting it on every turn was work on every message's path.)
    pub buffered: u64,
    /// Per subscription, the outstanding demand.
    pub subscriptions: Vec<SubscriptionCounters>,
}

/// The counters of one subscription of a stage.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SubscriptionCounters {
    /// The subscription.
    pub id: SubscriptionId,
    /// [`Direction::Upstream`]: this stage consumes from `peer`, and `demand` is what this stage
    /// has asked for and not yet received. [`Direction::Downstream`]: `peer` consumes from this
    /// stage, and `demand` is what `peer` asked for and was not yet sent.
    pub direction: Direction,
    /// The other stage's name.
    pub peer: String,
    /// Outstanding demand (see `direction`).
    pub demand: u64,
    /// The subscription's `max_demand` (see [`SubscribeOptions::max_demand`]).
    pub max_demand: u64,
    /// The subscription's `min_demand` (see [`SubscribeOptions::min_demand`]).
    pub min_demand: u64,
    /// Events that went through this subscription so far. [`Direction::Upstream`]: events
    /// from `peer` that this stage has handled (events still waiting in its inbox or input
    /// queue are not counted yet). [`Direction::Downstream`]: events this stage dispatched to
    /// `peer` (including any still on their way to its inbox).
    pub events: u64,
}

/// What kind of stage a handle is on, read with [`StageRef::kind`](crate::StageRef::kind).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StageKind {
    /// A [`Producer`](crate::Producer).
    Producer,
    /// A [`ProducerConsumer`](crate::ProducerConsumer).
    ProducerConsumer,
    /// A [`Consumer`](crate::Consumer) (a [`Supervisor`](crate::Supervisor) is one too).
    Consumer,
}

impl StageKind {
    /// `"producer"`, `"producer_consumer"` or `"consumer"`.
    pub fn as_str(self) -> &'static str {
        match self {
            StageKind::Producer => "producer",
            StageKind::ProducerConsumer => "producer_consumer",
            StageKind::Consumer => "consumer",
        }
    }
}

impl std::fmt::Display for StageKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The length and capacity of a stage's inbox, read without touching the stage.
pub(crate) trait InboxGauge: Send + Sync + std::fmt::Debug {
    fn len(&self) -> usize;
    fn capacity(&self) -> usize;
}

impl<T: Send> InboxGauge for Sender<T> {
    fn len(&self) -> usize {
        Sender::len(self)
    }
    fn capacity(&self) -> usize {
        Sender::capacity(self).unwrap_or(usize::MAX)
    }
}

/// What an observer reads beside the counters, set once when the stage is launched.
#[derive(Debug)]
pub(crate) struct Probe {
    pub(crate) kind: StageKind,
    /// `None` for a stage in a scope: a gauge holds a sender, which must not outlive it.
    pub(crate) inbox: Option<Box<dyn InboxGauge>>,
}

#[derive(Debug, Default)]
pub(crate) struct Cells {
    pub(crate) events_in: AtomicU64,
    pub(crate) events_out: AtomicU64,
    pub(crate) emitted: AtomicU64,
    pub(crate) discarded: AtomicU64,
    pub(crate) buffered: AtomicU64,
}

/// Adds to a counter that only the calling thread writes.
#[inline]
pub(crate) fn bump(cell: &AtomicU64, n: u64) {
    cell.store(cell.load(Ordering::Relaxed) + n, Ordering::Relaxed);
}

#[derive(Debug)]
pub(crate) struct SubCell {
    pub(crate) id: SubscriptionId,
    pub(crate) direction: Direction,
    pub(crate) peer: Arc<str>,
    pub(crate) demand: Arc<AtomicU64>,
    pub(crate) events: Arc<AtomicU64>,
    pub(crate) max_demand: u64,
    pub(crate) min_demand: u64,
}

/// Told of a stage's end, once, on the thread that ends it (see [`Shared::on_end`]).
pub(crate) type EndWatcher = Box<dyn FnOnce(&Reason) + Send>;

#[derive(Default)]
struct Done {
    outcome: Option<Reason>,
    thread: Option<JoinHandle<()>>,
    watchers: Vec<EndWatcher>,
}

impl std::fmt::Debug for Done {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Done")
            .field("outcome", &self.outcome)
            .finish()
    }
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) name: Arc<str>,
    pub(crate) stop_requested: AtomicBool,
    /// Something waits on the control channel (set after each push; a stage's turn reads one
    /// flag instead of polling the channel).
    pub(crate) control_pending: AtomicBool,
    /// Handles, mailboxes and peer ports that can reach the stage (see `Counted`).
    pub(crate) refs: AtomicUsize,
    pub(crate) cells: Cells,
    /// Time in callbacks and waiting (written by the stage's loop).
    pub(crate) timing: Timing,
    /// The stage's kind and inbox, for observers (set by the builder).
    pub(crate) probe: OnceLock<Probe>,
    subs: Mutex<Vec<SubCell>>,
    done: Mutex<Done>,
    done_cond: Condvar,
    /// Dropped when the stage ends, so that `ended` disconnects: a waiter can select on it
    /// beside its own channel (a reply, a registration) and never wait for a stage that is
    /// gone.
    ended_tx: Mutex<Option<Sender<Infallible>>>,
    ended: Receiver<Infallible>,
    /// The stage runs in a simulation (`crate::sim`), not on a thread of its own.
    pub(crate) simulated: AtomicBool,
}

impl Shared {
    pub(crate) fn new(name: Arc<str>) -> Shared {
        let (ended_tx, ended) = crossbeam_channel::bounded(0);
        Shared {
            ended_tx: Mutex::new(Some(ended_tx)),
            ended,
            name,
            stop_requested: AtomicBool::new(false),
            control_pending: AtomicBool::new(false),
            refs: AtomicUsize::new(0),
            cells: Cells::default(),
            timing: Timing::default(),
            probe: OnceLock::new(),
            subs: Mutex::new(Vec::new()),
            done: Mutex::new(Done::default()),
            done_cond: Condvar::new(),
            simulated: AtomicBool::new(false),
        }
    }

    /// Registers a subscription's cells: its outstanding demand, and the events that went
    /// through it.
    pub(crate) fn add_sub(
        &self,
        id: SubscriptionId,
        direction: Direction,
        peer: Arc<str>,
        options: &SubscribeOptions,
    ) -> (Arc<AtomicU64>, Arc<AtomicU64>) {
        let demand = Arc::new(AtomicU64::new(0));
        let events = Arc::new(AtomicU64::new(0));
        self.subs.lock().push(SubCell {
            id,
            direction,
            peer,
            demand: demand.clone(),
            events: events.clone(),
            max_demand: options.get_max_demand() as u64,
            min_demand: options.get_min_demand() as u64,
        });
        (demand, events)
    }

    pub(crate) fn remove_sub(&self, id: SubscriptionId, direction: Direction) {
        self.subs
            .lock()
            .retain(|c| !(c.id == id && c.direction == direction));
    }

    pub(crate) fn counters(&self) -> Counters {
        let c = &self.cells;
        Counters {
            events_in: c.events_in.load(Ordering::Relaxed),
            events_out: c.events_out.load(Ordering::Relaxed),
            emitted: c.emitted.load(Ordering::Relaxed),
            discarded: c.discarded.load(Ordering::Relaxed),
            buffered: c.buffered.load(Ordering::Relaxed),
            subscriptions: self
                .subs
                .lock()
                .iter()
                .map(|s| SubscriptionCounters {
                    id: s.id,
                    direction: s.direction,
                    peer: s.peer.to_string(),
                    demand: s.demand.load(Ordering::Relaxed),
                    max_demand: s.max_demand,
                    min_demand: s.min_demand,
                    events: s.events.load(Ordering::Relaxed),
                })
                .collect(),
        }
    }

    /// Time in callbacks and waiting, so far.
    pub(crate) fn timing(&self) -> StageTiming {
        self.timing.snapshot()
    }

    /// The stage's kind (a consumer if the builder did not say).
    pub(crate) fn kind(&self) -> StageKind {
        self.probe.get().map_or(StageKind::Consumer, |p| p.kind)
    }

    /// Messages waiting in the stage's inbox, and its capacity (0 and 0 if the builder did not
    /// say).
    pub(crate) fn inbox(&self) -> (usize, usize) {
        self.probe
            .get()
            .and_then(|p| p.inbox.as_ref())
            .map_or((0, 0), |g| (g.len(), g.capacity()))
    }

    pub(crate) fn set_thread(&self, handle: JoinHandle<()>) {
        let mut done = self.done.lock();
        if done.outcome.is_none() {
            done.thread = Some(handle);
        }
        // A stage that already ended has nothing left to join but its handle, which is
        // dropped here (the thread is exiting or gone).
    }

    pub(crate) fn set_outcome(&self, reason: Reason) {
        let mut done = self.done.lock();
        done.outcome = Some(reason.clone());
        let watchers = std::mem::take(&mut done.watchers);
        self.done_cond.notify_all();
        drop(done);
        self.ended_tx.lock().take();
        for watcher in watchers {
            // One watcher's panic keeps neither the others nor the thread's end from happening.
            let told = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| watcher(&reason)));
            if told.is_err() {
                log::error!("stage {}: an end watcher panicked", self.name);
            }
        }
    }

    /// Calls `watcher` with the stage's outcome once it has ended: on the stage's thread as
    /// its last act (after its `terminate` and its drop), or at once on this one if it has
    /// ended already. For a supervisor, which would otherwise need a thread per child blocked
    /// in its `join`. `watcher` must be quick and must not block (it sends an event).
    pub(crate) fn on_end(&self, watcher: EndWatcher) {
        let mut done = self.done.lock();
        match done.outcome.clone() {
            Some(reason) => {
                drop(done);
                watcher(&reason);
            }
            None => done.watchers.push(watcher),
        }
    }

    /// Receives from `rx` (a reply, a registration) until `deadline`, giving up as soon as the
    /// stage has ended: `Ok(Some(value))`, `Ok(None)` if `rx` disconnected or the stage ended
    /// without sending, `Err(())` at the deadline. A value sent just before the end is still
    /// received.
    pub(crate) fn recv_unless_ended<T>(
        &self,
        rx: &Receiver<T>,
        deadline: Instant,
    ) -> Result<Option<T>, ()> {
        if self.simulated.load(Ordering::Relaxed) {
            return self.recv_simulated(rx);
        }
        let mut sel = crossbeam_channel::Select::new();
        let mine = sel.recv(rx);
        sel.recv(&self.ended);
        match sel.select_deadline(deadline) {
            Err(_) => Err(()),
            Ok(op) if op.index() == mine => Ok(op.recv(rx).ok()),
            Ok(op) => {
                let _ = op.recv(&self.ended);
                Ok(rx.try_recv().ok())
            }
        }
    }

    pub(crate) fn outcome(&self) -> Option<Reason> {
        self.done.lock().outcome.clone()
    }

    /// Disconnects when the stage has ended (its outcome is published): for a select.
    pub(crate) fn ended(&self) -> &Receiver<Infallible> {
        &self.ended
    }

    /// [`Shared::recv_unless_ended`] for a stage in a simulation: the schedule runs until
    /// the value comes or the stage ends; if it cannot run (this is a stage's own turn) or
    /// nothing can move, the wait is over at once, as at its deadline.
    fn recv_simulated<T>(&self, rx: &Receiver<T>) -> Result<Option<T>, ()> {
        let mut got = None;
        crate::sim::wait_until(|| {
            if got.is_none() {
                got = match rx.try_recv() {
                    Ok(v) => Some(Some(v)),
                    Err(crossbeam_channel::TryRecvError::Disconnected) => Some(None),
                    Err(crossbeam_channel::TryRecvError::Empty) if self.outcome().is_some() => {
                        Some(rx.try_recv().ok())
                    }
                    Err(crossbeam_channel::TryRecvError::Empty) => None,
                };
            }
            got.is_some()
        });
        got.ok_or(())
    }

    /// Waits for the outcome until `deadline` (forever with `None`), then joins the thread.
    ///
    /// A stage in a simulation has no thread: the schedule runs until it has ended (a
    /// simulation that cannot end it panics rather than wait forever, naming the stage).
    pub(crate) fn wait(&self, deadline: Option<Instant>) -> Option<Reason> {
        if self.simulated.load(Ordering::Relaxed) && self.outcome().is_none() {
            let ended = crate::sim::wait_until(|| self.outcome().is_some());
            if ended != Some(true) && deadline.is_none() {
                panic!(
                    "joined stage {}, which runs in a simulation that cannot end it now (no \
                     simulation runs on this thread, this is a stage's own turn, or the \
                     simulation is stuck): end it in a run (Sim::run) first",
                    self.name
                );
            }
            return self.outcome();
        }
        let mut done = self.done.lock();
        while done.outcome.is_none() {
            match deadline {
                Some(d) => {
                    if self.done_cond.wait_until(&mut done, d).timed_out() && done.outcome.is_none()
                    {
                        return None;
                    }
                }
                None => self.done_cond.wait(&mut done),
            }
        }
        let thread = done.thread.take();
        let outcome = done.outcome.clone();
        drop(done);
        if let Some(t) = thread {
            // The outcome is set as the thread's last act, so this returns at once.
            let _ = t.join();
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_end_watcher_hears_the_outcome_once_whenever_it_came() {
        let shared = Shared::new("s".into());
        let (tx, rx) = crossbeam_channel::unbounded();
        let before = tx.clone();
        shared.on_end(Box::new(move |r: &Reason| {
            before.send(("before", r.clone())).unwrap()
        }));
        assert!(rx.try_recv().is_err(), "told before the end");
        shared.set_outcome(Reason::Normal);
        assert_eq!(rx.try_recv(), Ok(("before", Reason::Normal)));
        // Registered after the end: told at once, on this thread.
        shared.on_end(Box::new(move |r: &Reason| {
            tx.send(("after", r.clone())).unwrap()
        }));
        assert_eq!(rx.try_recv(), Ok(("after", Reason::Normal)));
        assert!(rx.try_recv().is_err(), "told twice");
    }

    #[test]
    fn a_panicking_end_watcher_does_not_keep_the_next_from_being_told() {
        let shared = Shared::new("s".into());
        let (tx, rx) = crossbeam_channel::unbounded();
        shared.on_end(Box::new(|_: &Reason| panic!("a watcher's bug")));
        shared.on_end(Box::new(move |r: &Reason| tx.send(r.clone()).unwrap()));
        shared.set_outcome(Reason::Normal);
        assert_eq!(rx.try_recv(), Ok(Reason::Normal));
    }
}
