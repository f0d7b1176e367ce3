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
//!   The link then waits for the thread to exit, up to [`JOIN_BOUND`] (only a TCP connect or
//!   a DNS lookup in progress can take longer; the thread is then left to end by itself).

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender};
use log::warn;

use crate::{CastError, Mailbox, Reply};

use super::counters::HttpCounters;

/// How long dropping a link waits for its thread to exit.
const JOIN_BOUND: Duration = Duration::from_secs(2);

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
    agent: ureq::Agent,
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
    mailbox: Mailbox<HttpMsg>,
    /// Dropped when the thread's body returns or unwinds: the link's sign that it exited.
    _done: Sender<()>,
}

impl<R: Send + 'static> Link<R> {
    /// Starts the thread named `name` running `body`.
    pub(crate) fn spawn(
        name: String,
        agent: ureq::Agent,
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
        let wire = Wire {
            ctl: ctl_rx,
            reports: rep_tx,
            stop: stop_rx,
            wake_pending: wake_pending.clone(),
            ctl_wake_pending: ctl_wake_pending.clone(),
            stopping: stopping.clone(),
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
            agent,
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
        match self.done.recv_timeout(JOIN_BOUND) {
            Err(RecvTimeoutError::Disconnected) | Ok(()) => {
                if let Some(t) = self.thread.take() {
                    let _ = t.join();
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                warn!(
                    "http link: the i/o thread did not exit within {JOIN_BOUND:?} (a connect in \
                     progress?); leaving it to end by itself"
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
