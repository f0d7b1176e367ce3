//! [`Supervisor`]: GenStage's ConsumerSupervisor for threads: one worker per event, at most
//! `max_demand` running at once per producer.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::marker::PhantomData;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, unbounded, Receiver, RecvTimeoutError, Sender};
use log::{error, warn};

use crate::context::{ConsumerContext, Mailbox, Reply};
use crate::events::Events;
use crate::reason::Reason;
use crate::stage::Consumer;
use crate::subscription::{DemandMode, Subscription, SubscriptionId};

/// How a [`Supervisor`] treats a worker that fails (returns `Err` or panics).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Restart {
    /// Never run the event again (GenStage's `:temporary` child). The default.
    Never,
    /// Run the same event again, up to `max_restarts` restarts within `within`; past that the
    /// supervisor stops with an error (GenStage's `:transient` child, `max_restarts` and
    /// `max_seconds`). A restarting worker keeps its slot.
    Transient {
        /// Restarts allowed in the period (GenStage's default is 3).
        max_restarts: usize,
        /// The period (GenStage's default is 5 seconds).
        within: Duration,
    },
}

/// What a supervisor has done so far, read with [`SupervisorMsg::stats`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SupervisorStats {
    /// Workers running now.
    pub running: usize,
    /// The most workers that ever ran at once.
    pub peak: usize,
    /// Workers that finished with `Ok`.
    pub succeeded: u64,
    /// Workers that failed (`Err` or a panic), restarts included.
    pub failed: u64,
    /// Workers started again by the restart policy.
    pub restarted: u64,
}

/// The supervisor's messages: workers report through them, and users ask for
/// [`SupervisorStats`] with [`SupervisorMsg::stats`].
pub struct SupervisorMsg<T>(Msg, PhantomData<fn() -> T>);

enum Msg {
    /// A worker exited: its report waits in the supervisor's channel.
    Exited,
    Stats(Reply<SupervisorStats>),
}

/// A worker's report.
struct Exit<T> {
    sub: SubscriptionId,
    outcome: Result<(), String>,
    retry: Option<T>,
    /// The worker, now idle.
    worker: usize,
}

impl<T> SupervisorMsg<T> {
    /// A request for the supervisor's stats, for [`Stage::call`](crate::Stage::call):
    /// `supervisor.call(SupervisorMsg::stats, timeout)`.
    pub fn stats(reply: Reply<SupervisorStats>) -> SupervisorMsg<T> {
        SupervisorMsg(Msg::Stats(reply), PhantomData)
    }
}

impl<T> fmt::Debug for SupervisorMsg<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Msg::Exited => f.write_str("Exited"),
            Msg::Stats(_) => f.write_str("Stats"),
        }
    }
}

type Work<T> = dyn Fn(T) -> Result<(), String> + Send + Sync;

/// What one job of a [`Supervisor::with_results`] came to: the job, and what its worker
/// returned or how it failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobResult<T, R, E> {
    /// The job: the event the worker ran on.
    pub job: T,
    /// The worker's value, or its failure.
    pub outcome: Result<R, JobFailure<E>>,
}

/// How a worker failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobFailure<E> {
    /// The worker returned this error.
    Error(E),
    /// The worker panicked with this message.
    Panicked(String),
}

impl<E: fmt::Display> fmt::Display for JobFailure<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JobFailure::Error(e) => e.fmt(f),
            JobFailure::Panicked(msg) => write!(f, "panicked: {msg}"),
        }
    }
}
type Cloner<T> = fn(&T) -> T;

/// Per producer: workers finished since the last ask, and when to ask again.
struct Slots {
    finished: usize,
    min: usize,
}

/// A consumer that runs one worker thread per event, GenStage's ConsumerSupervisor.
///
/// Every subscription is manual: the supervisor asks `max_demand` at first, so at most
/// `max_demand` workers run at once per producer, and asks again by ConsumerSupervisor's rule:
/// once `min_demand` workers have finished since the last ask, it asks for exactly that many
/// (so between `max_demand - min_demand` and `max_demand` run at once). A worker that fails is
/// logged at error level and frees its slot, or, with [`Restart::Transient`], runs again in the
/// same slot.
///
/// A worker is a function of the event returning `Ok(())` or `Err(message)`; a panic counts as
/// an `Err` with the panic message. Workers run on threads named after the supervisor, kept
/// in a pool: a thread that finished a job takes the next one, so the pool grows only to the
/// most workers that ever ran at once (at most `max_demand` per producer), and its threads
/// end with the supervisor. (`cargo bench --bench compare -- --only k` measures it: on 2
/// vCPUs, trivial jobs went from 40 k/s with a thread per event to about 200 k/s.)
///
/// Threads cannot be killed: workers still running when the supervisor is stopped finish on
/// their own (when it ends because its producer did, it first waits for them up to
/// [`shutdown`](Supervisor::shutdown)).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use stageflow::{SubscribeOptions, Supervisor, SupervisorMsg};
///
/// let jobs = stageflow::from_iter(1..=20u64).spawn()?;
/// let supervisor = stageflow::consumer(Supervisor::new(|job: u64| {
///     std::thread::sleep(Duration::from_millis(job % 3));
///     Ok(())
/// }))
/// .subscribe_to(&jobs, SubscribeOptions::new().max_demand(4).min_demand(2))?
/// .spawn()?;
/// supervisor.join();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Supervisor<T> {
    work: Arc<Work<T>>,
    restart: Restart,
    cloner: Option<Cloner<T>>,
    slots: HashMap<SubscriptionId, Slots>,
    restarts: VecDeque<Instant>,
    stats: SupervisorStats,
    /// Workers' reports; each report is followed by a [`Msg::Exited`] wake-up.
    reports: Receiver<Exit<T>>,
    report_to: Sender<Exit<T>>,
    shutdown: Duration,
    /// Worker threads, each by the sender of its job channel (dropping it ends the thread).
    workers: Vec<Sender<Job<T>>>,
    /// Workers waiting for a job.
    idle: Vec<usize>,
    /// The stage's name, for the logs of `terminate` (which has no context).
    name: String,
}

/// One event for a worker thread, with what it needs to report back.
struct Job<T> {
    sub: SubscriptionId,
    event: T,
    retry: Option<T>,
    mailbox: Mailbox<SupervisorMsg<T>>,
}

impl<T> fmt::Debug for Supervisor<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Supervisor")
            .field("restart", &self.restart)
            .field("stats", &self.stats)
            .finish()
    }
}

impl<T: Send + 'static> Supervisor<T> {
    /// A supervisor that runs `work` once per event. Failures are not retried.
    pub fn new(work: impl Fn(T) -> Result<(), String> + Send + Sync + 'static) -> Supervisor<T> {
        let (report_to, reports) = unbounded();
        Supervisor {
            reports,
            report_to,
            shutdown: Duration::from_secs(5),
            work: Arc::new(work),
            restart: Restart::Never,
            cloner: None,
            slots: HashMap::new(),
            restarts: VecDeque::new(),
            stats: SupervisorStats::default(),
            workers: Vec::new(),
            idle: Vec::new(),
            name: String::new(),
        }
    }

    /// A supervisor whose workers return values: `work(&job)` gives `Ok(value)` or
    /// `Err(error)`, and every job comes back with its outcome (a panic included, as
    /// [`JobFailure::Panicked`]) on the returned channel, in the order the jobs finished.
    ///
    /// The channel holds `capacity` results: when nobody reads them, workers wait to hand
    /// theirs over, their slots stay taken, and the supervisor asks its producer for no more
    /// jobs. Back-pressure reaches the source. It ends (its iterator returns `None`) once the
    /// supervisor and its workers have ended; drop it if the results are not wanted. It is an
    /// iterator, so [`from_iter`](crate::from_iter) makes a producer of it for the next stage.
    /// With [`Restart::Transient`], every attempt of a job is reported.
    ///
    /// ```
    /// use stageflow::{JobFailure, SubscribeOptions, Supervisor};
    ///
    /// let jobs = stageflow::from_iter(1..=6u64).spawn()?;
    /// let (supervisor, results) = Supervisor::with_results(
    ///     |job: &u64| if job % 3 == 0 { Err(format!("{job} is a multiple of 3")) } else { Ok(job * 10) },
    ///     16,
    /// );
    /// let supervisor = stageflow::consumer(supervisor)
    ///     .subscribe_to(&jobs, SubscribeOptions::new().max_demand(2).min_demand(1))?
    ///     .spawn()?;
    /// let mut ok: Vec<u64> = Vec::new();
    /// let mut failed: Vec<u64> = Vec::new();
    /// for r in results {
    ///     match r.outcome {
    ///         Ok(value) => ok.push(value),
    ///         Err(JobFailure::Error(_)) => failed.push(r.job),
    ///         Err(JobFailure::Panicked(msg)) => panic!("{msg}"),
    ///     }
    /// }
    /// ok.sort();
    /// failed.sort();
    /// assert_eq!(ok, [10, 20, 40, 50]);
    /// assert_eq!(failed, [3, 6]); // each failure says which job
    /// supervisor.join();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn with_results<R, E>(
        work: impl Fn(&T) -> Result<R, E> + Send + Sync + 'static,
        capacity: usize,
    ) -> (Supervisor<T>, Receiver<JobResult<T, R, E>>)
    where
        R: Send + 'static,
        E: fmt::Display + Send + 'static,
    {
        let (tx, rx) = bounded(capacity);
        let supervisor = Supervisor::new(move |job: T| {
            let outcome = match catch_unwind(AssertUnwindSafe(|| work(&job))) {
                Ok(Ok(value)) => Ok(value),
                Ok(Err(e)) => Err(JobFailure::Error(e)),
                Err(payload) => Err(JobFailure::Panicked(crate::unwind::describe(
                    payload.as_ref(),
                ))),
            };
            let status = match &outcome {
                Ok(_) => Ok(()),
                Err(failure) => Err(failure.to_string()),
            };
            // Nobody reading (the receiver dropped) is not the worker's failure.
            let _ = tx.send(JobResult { job, outcome });
            status
        });
        (supervisor, rx)
    }

    /// When the supervisor ends (its producer finished, a [drain](crate::Topology::drain), a
    /// stop), how long it waits for running workers to finish (threads cannot be killed:
    /// workers still running then are left to finish on their own, and a warning is logged).
    /// Defaults to 5 seconds, GenStage's child shutdown.
    pub fn shutdown(mut self, timeout: Duration) -> Supervisor<T> {
        self.shutdown = timeout;
        self
    }

    fn start(
        &mut self,
        sub: SubscriptionId,
        event: T,
        ctx: &mut ConsumerContext<'_, SupervisorMsg<T>>,
    ) {
        let retry = self.cloner.map(|clone| clone(&event));
        let mut job = Job {
            sub,
            event,
            retry,
            mailbox: ctx.mailbox(),
        };
        // An idle worker thread takes it; otherwise a new one starts (at most one per slot).
        if let Some(id) = self.idle.pop() {
            match self.workers[id].send(job) {
                Ok(()) => return self.started(),
                Err(e) => job = e.into_inner(),
            }
        }
        let (tx, rx) = bounded::<Job<T>>(1);
        let id = self.workers.len();
        let work = self.work.clone();
        let report_to = self.report_to.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("{}-worker", ctx.name()))
            .spawn(move || worker(id, rx, work, report_to));
        match spawned {
            Ok(_) => {
                let _ = tx.send(job);
                self.workers.push(tx);
                self.started();
            }
            Err(e) => {
                // Counts as a worker that finished at once, as GenStage counts a failed start.
                error!("stage {}: could not start a worker: {e}", ctx.name());
                self.stats.failed += 1;
                self.finished(sub, ctx);
            }
        }
    }

    fn started(&mut self) {
        self.stats.running += 1;
        self.stats.peak = self.stats.peak.max(self.stats.running);
    }

    /// A worker's slot is free: ask again once `min_demand` slots are.
    fn finished(&mut self, sub: SubscriptionId, ctx: &mut ConsumerContext<'_, SupervisorMsg<T>>) {
        if let Some(slots) = self.slots.get_mut(&sub) {
            slots.finished += 1;
            if slots.finished >= slots.min.max(1) {
                ctx.ask(sub, slots.finished);
                slots.finished = 0;
            }
        }
    }

    /// Books a worker's report: its thread is idle again, the stats count it, a failure is
    /// logged. Returns the event to run again if the failure may be retried.
    fn account(&mut self, exit: Exit<T>, stage: &str) -> Option<T> {
        self.idle.push(exit.worker);
        self.stats.running -= 1;
        match exit.outcome {
            Ok(()) => {
                self.stats.succeeded += 1;
                None
            }
            Err(message) => {
                self.stats.failed += 1;
                error!("stage {stage}: a worker failed: {message}");
                exit.retry
            }
        }
    }

    /// Handles one worker's report: restart it, or free its slot.
    fn exited(&mut self, exit: Exit<T>, ctx: &mut ConsumerContext<'_, SupervisorMsg<T>>) {
        let sub = exit.sub;
        if let Some(event) = self.account(exit, ctx.name()) {
            if self.may_restart() {
                self.stats.restarted += 1;
                self.start(sub, event, ctx);
                return;
            }
            if let Restart::Transient {
                max_restarts,
                within,
            } = self.restart
            {
                warn!(
                    "stage {}: more than {max_restarts} worker restarts within {within:?}; stopping",
                    ctx.name()
                );
                ctx.stop(Reason::error(format!(
                    "more than {max_restarts} worker restarts within {within:?}"
                )));
                return;
            }
        }
        self.finished(sub, ctx);
    }

    fn may_restart(&mut self) -> bool {
        let Restart::Transient {
            max_restarts,
            within,
        } = self.restart
        else {
            return false;
        };
        let now = Instant::now();
        while self
            .restarts
            .front()
            .is_some_and(|&t| now.duration_since(t) > within)
        {
            self.restarts.pop_front();
        }
        if self.restarts.len() >= max_restarts {
            return false;
        }
        self.restarts.push_back(now);
        true
    }
}

impl<T: Clone + Send + 'static> Supervisor<T> {
    /// Sets the restart policy (restarting needs a copy of the event, hence `T: Clone`).
    /// Defaults to [`Restart::Never`].
    pub fn restart(mut self, restart: Restart) -> Supervisor<T> {
        self.restart = restart;
        self.cloner = match restart {
            Restart::Never => None,
            Restart::Transient { .. } => Some(T::clone),
        };
        self
    }
}

impl<T: Send + 'static> Consumer for Supervisor<T> {
    type In = T;
    type Message = SupervisorMsg<T>;

    fn handle_subscribe(
        &mut self,
        producer: &Subscription,
        ctx: &mut ConsumerContext<'_, SupervisorMsg<T>>,
    ) -> DemandMode {
        let opts = producer.options();
        if self.name.is_empty() {
            self.name = ctx.name().to_owned();
        }
        self.slots.insert(
            producer.id(),
            Slots {
                finished: 0,
                min: opts.get_min_demand(),
            },
        );
        ctx.ask(producer.id(), opts.get_max_demand());
        DemandMode::Manual
    }

    fn handle_events(
        &mut self,
        events: Events<'_, T>,
        ctx: &mut ConsumerContext<'_, SupervisorMsg<T>>,
    ) {
        let sub = events.subscription();
        for event in events {
            self.start(sub, event, ctx);
        }
    }

    fn handle_message(
        &mut self,
        msg: SupervisorMsg<T>,
        ctx: &mut ConsumerContext<'_, SupervisorMsg<T>>,
    ) {
        match msg.0 {
            Msg::Stats(reply) => {
                reply.send(self.stats.clone());
            }
            Msg::Exited => {
                while let Ok(exit) = self.reports.try_recv() {
                    self.exited(exit, ctx);
                }
            }
        }
    }

    fn handle_cancel(
        &mut self,
        producer: &Subscription,
        reason: &Reason,
        ctx: &mut ConsumerContext<'_, SupervisorMsg<T>>,
    ) {
        let _ = (reason, ctx);
        self.slots.remove(&producer.id());
    }

    /// The supervisor ends: running workers finish first (no restarts now), up to the
    /// [`shutdown`](Supervisor::shutdown) timeout, so their work is done when `join` returns.
    fn terminate(&mut self, reason: &Reason) {
        let _ = reason;
        let deadline = crate::timer::deadline(self.shutdown);
        while self.stats.running > 0 {
            match self.reports.recv_deadline(deadline) {
                Ok(exit) => {
                    let name = std::mem::take(&mut self.name);
                    drop(self.account(exit, &name));
                    self.name = name;
                }
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
                    warn!(
                        "stage {}: ending with {} workers still running",
                        self.name, self.stats.running
                    );
                    break;
                }
            }
        }
    }
}

/// A worker thread: runs jobs one at a time and reports each; it ends when its supervisor is
/// gone (the job channel closes).
fn worker<T>(id: usize, jobs: Receiver<Job<T>>, work: Arc<Work<T>>, report_to: Sender<Exit<T>>) {
    while let Ok(job) = jobs.recv() {
        let Job {
            sub,
            event,
            retry,
            mailbox,
        } = job;
        let outcome = catch_unwind(AssertUnwindSafe(|| work(event)))
            .unwrap_or_else(|payload| Err(crate::unwind::describe(payload.as_ref())));
        let exit = Exit {
            sub,
            outcome,
            retry,
            worker: id,
        };
        if report_to.send(exit).is_err() {
            return;
        }
        // The wake-up goes last, and the mailbox is dropped with the job: an idle worker does
        // not keep its supervisor reachable.
        let _ = mailbox.cast(SupervisorMsg(Msg::Exited, PhantomData));
    }
}
