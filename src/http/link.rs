//! The link between an HTTP producer's stage and the I/O thread it owns, built on the public
//! API only: a bounded control channel down (wake-ups and "go" orders; credits themselves are
//! an atomic count), a bounded report channel up, and the stage's [`Mailbox`] to wake the
//! stage when a report is waiting.
//!
//! The rules that keep both sides from ever blocking on each other:
//!
//! * The stage MUST NOT block on the thread: it only `try_send`s control messages, and at most
//!   one wake-up and one order are ever in flight, so the channel never fills.
//! * The thread MUST send a report before waking the stage, and wakes it only when no wake-up
//!   is pending; the stage clears the flag before draining, so no report is left unseen.
//! * Dropping the link (the stage ending, for any reason) MUST interrupt the thread wherever
//!   it blocks: `Agent::shutdown` for a socket read or write, closed channels for the rest.
//!   The link then waits for the thread to exit, up to the producer's `join_timeout` (2 s by
//!   default; only a decoder of the user's still running can take that long). A thread inside
//!   a request's connect is not waited for at all: a TCP connect or DNS lookup in progress
//!   cannot be interrupted (`Agent::shutdown` only refuses the connection it would make), so
//!   the thread is left to end by itself, within the connect timeout.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender};
use log::{debug, warn};

use crate::{CastError, Mailbox, Reply};

use super::counters::HttpCounters;

/// The messages of the HTTP producers' stages: wake-ups from their I/O thread, their backoff
/// timers, and one you can send: [`HttpMsg::counters`].
///
/// # Examples
///
/// ```
/// use std::time::Duration;
///
/// let producer = stageflow::producer(stageflow::http::stream("http://127.0.0.1:9/").build()?).spawn()?;
/// // No consumer, no demand: the producer has not connected, but it answers at once.
/// let counters = producer.call(stageflow::http::HttpMsg::counters, Duration::from_secs(5))?;
/// assert_eq!(counters.requests, 0);
/// producer.stop();
/// producer.join();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct HttpMsg(pub(crate) Msg);

pub(crate) enum Msg {
    /// The I/O thread left a report.
    Wake,
    /// A backoff or polling timer fired.
    Retry,
    Counters(Reply<HttpCounters>),
}

impl HttpMsg {
    /// A call for the producer's counters: `handle.call(HttpMsg::counters, timeout)`. The
    /// stage never blocks on the network, so it answers at once.
    pub fn counters(reply: Reply<HttpCounters>) -> HttpMsg {
        HttpMsg(Msg::Counters(reply))
    }
}

impl fmt::Debug for HttpMsg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.0 {
            Msg::Wake => "HttpMsg::Wake",
            Msg::Retry => "HttpMsg::Retry",
            Msg::Counters(_) => "HttpMsg::Counters",
        })
    }
}

/// What the stage tells its thread.
#[derive(Debug)]
pub(crate) enum Ctl {
    /// More credits (or nothing new: look again).
    Wake,
    /// Connect (a stream) or fetch (polling) this URL.
    Go(String),
}

/// The stage's end of the link.
pub(crate) struct Link<R> {
    ctl: Option<Sender<Ctl>>,
    reports: Option<Receiver<R>>,
    /// Never sent on: dropping it tells a thread waiting on a full mailbox to give up.
    stop: Option<Sender<()>>,
    wake_pending: Arc<AtomicBool>,
    ctl_wake_pending: Arc<AtomicBool>,
    stopping: Arc<AtomicBool>,
    /// The thread is inside `call()`, where a connect may be under way.
    calling: Arc<AtomicBool>,
    agent: ureq::Agent,
    /// How long dropping the link waits for the thread to exit.
    join_timeout: Duration,
    done: Receiver<()>,
    thread: Option<JoinHandle<()>>,
}

/// The thread's end of the link.
pub(crate) struct Wire<R> {
    ctl: Receiver<Ctl>,
    reports: Sender<R>,
    stop: Receiver<()>,
    wake_pending: Arc<AtomicBool>,
    ctl_wake_pending: Arc<AtomicBool>,
    stopping: Arc<AtomicBool>,
    calling: Arc<AtomicBool>,
    mailbox: Mailbox<HttpMsg>,
    /// Dropped when the thread's body returns or unwinds: the link's sign that it exited.
    _done: Sender<()>,
}

impl<R: Send + 'static> Link<R> {
    /// Starts the thread named `name` running `body`. Dropping the link waits up to
    /// `join_timeout` for the thread to exit.
    pub(crate) fn spawn(
        name: String,
        agent: ureq::Agent,
        join_timeout: Duration,
        mailbox: Mailbox<HttpMsg>,
        body: impl FnOnce(Wire<R>) + Send + 'static,
    ) -> std::io::Result<Link<R>> {
        let (ctl_tx, ctl_rx) = bounded(4);
        let (rep_tx, rep_rx) = bounded(16);
        let (stop_tx, stop_rx) = bounded(0);
        let (done_tx, done_rx) = bounded(0);
        let wake_pending = Arc::new(AtomicBool::new(false));
        let ctl_wake_pending = Arc::new(AtomicBool::new(false));
        let stopping = Arc::new(AtomicBool::new(false));
        let calling = Arc::new(AtomicBool::new(false));
        let wire = Wire {
            ctl: ctl_rx,
            reports: rep_tx,
            stop: stop_rx,
            wake_pending: wake_pending.clone(),
            ctl_wake_pending: ctl_wake_pending.clone(),
            stopping: stopping.clone(),
            calling: calling.clone(),
            mailbox,
            _done: done_tx,
        };
        let thread = std::thread::Builder::new()
            .name(name)
            .spawn(move || body(wire))?;
        Ok(Link {
            ctl: Some(ctl_tx),
            reports: Some(rep_rx),
            stop: Some(stop_tx),
            wake_pending,
            ctl_wake_pending,
            stopping,
            calling,
            agent,
            join_timeout,
            done: done_rx,
            thread: Some(thread),
        })
    }

    /// Orders the thread to connect or fetch. Only sent while it waits for an order.
    pub(crate) fn go(&self, url: String) {
        if let Some(ctl) = &self.ctl {
            if ctl.try_send(Ctl::Go(url)).is_err() {
                warn!("http link: the control channel is full; an order was lost");
            }
        }
    }

    /// Tells the thread to look at its credits again, unless it was already told.
    pub(crate) fn wake(&self) {
        if !self.ctl_wake_pending.swap(true, Ordering::AcqRel) {
            if let Some(ctl) = &self.ctl {
                let _ = ctl.try_send(Ctl::Wake);
            }
        }
    }

    /// The reports waiting, in order. Call on every wake-up.
    pub(crate) fn drain(&self) -> impl Iterator<Item = R> + '_ {
        self.wake_pending.store(false, Ordering::Release);
        self.reports.iter().flat_map(|r| r.try_iter())
    }
}

impl<R> Drop for Link<R> {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::Release);
        // Interrupt a socket read or write, then every channel wait.
        self.agent.clone().shutdown();
        self.ctl = None;
        self.reports = None;
        self.stop = None;
        // A thread inside `call()` after the shutdown may be in a TCP connect or a DNS lookup,
        // which nothing interrupts: waiting for it would hold the stop up to the connect
        // timeout. Whatever it is doing there ends in an error (ureq refuses to register a
        // connection made after the shutdown), and the thread then exits by itself. (It
        // sets the flag before ureq checks for the shutdown under the pool's lock, which the
        // shutdown above took too, so a thread that got past that check is seen here.)
        if self.calling.load(Ordering::SeqCst) {
            debug!(
                "http link: the i/o thread is inside a request (a connect cannot be \
                 interrupted); leaving it to end by itself"
            );
            return;
        }
        match self.done.recv_timeout(self.join_timeout) {
            Err(RecvTimeoutError::Disconnected) | Ok(()) => {
                if let Some(t) = self.thread.take() {
                    let _ = t.join();
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                warn!(
                    "http link: the i/o thread did not exit within {:?} (a decoder still \
                     running?); leaving it to end by itself",
                    self.join_timeout
                );
            }
        }
    }
}

impl<R> Wire<R> {
    /// Waits for the stage's next control message; `None` when the stage has gone.
    pub(crate) fn recv(&self) -> Option<Ctl> {
        let ctl = self.ctl.recv().ok()?;
        if matches!(ctl, Ctl::Wake) {
            self.ctl_wake_pending.store(false, Ordering::Release);
        }
        Some(ctl)
    }

    /// Runs `request` (a ureq `call()`, which may connect) marked as such, so that a stop does
    /// not wait for a connect it cannot interrupt.
    pub(crate) fn call<T>(&self, request: impl FnOnce() -> T) -> T {
        self.calling.store(true, Ordering::SeqCst);
        let result = request();
        self.calling.store(false, Ordering::SeqCst);
        result
    }

    /// Whether the stage is ending (an I/O error now is the shutdown, not the network).
    pub(crate) fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// Hands `report` to the stage and wakes it. Returns `false` when the stage has gone.
    pub(crate) fn report(&self, report: R) -> bool {
        if self.reports.send(report).is_err() {
            return false;
        }
        if self.wake_pending.swap(true, Ordering::AcqRel) {
            return true; // The stage has a wake-up coming and will see this report.
        }
        let mut wait = Duration::from_millis(1);
        loop {
            match self.mailbox.try_cast(HttpMsg(Msg::Wake)) {
                Ok(()) => return true,
                Err(CastError::Stopped(_)) => return false,
                // The stage's inbox is full, so the stage is busy; try again shortly, unless
                // it is ending.
                Err(_) => match self.stop.recv_timeout(wait) {
                    Err(RecvTimeoutError::Timeout) => {
                        wait = (wait * 2).min(Duration::from_millis(50))
                    }
                    _ => return false,
                },
            }
        }
    }
}
