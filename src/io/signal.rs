//! [`SignalShutdown`]: ends a pipeline on SIGINT or SIGTERM (unix): the first signal drains
//! it ([`Topology::drain`]), a second one stops it; the [`ShutdownReport`] says what happened.
//! Built on `signal-hook`'s iterator, which hands each signal to a thread of ours (no code of
//! ours runs inside a signal handler) and removes its actions when dropped.

use std::fmt;
use std::os::raw::c_int;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use log::info;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::{DrainReport, Member, Topology};

use super::error::IoError;

/// What a signal makes [`SignalShutdown::run`] do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SignalAction {
    /// The first signal: drain the pipeline.
    Drain,
    /// A signal during the drain: stop every stage now.
    Stop,
}

type Notify = Arc<dyn Fn(c_int, SignalAction) + Send + Sync>;

/// Starts building a [`SignalShutdown`]; see [`ShutdownBuilder`].
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use stageflow::fns::ForEach;
/// use stageflow::{SubscribeOptions, Topology};
///
/// let source = stageflow::from_iter(0u64..100).spawn()?;
/// let sink = stageflow::consumer(ForEach::new(|_: u64| {}))
///     .subscribe_to(&source, SubscribeOptions::new())?
///     .spawn()?;
/// let pipeline = Topology::new().with(&source).with(&sink);
/// // Handlers are installed here, before the pipeline is said to run.
/// let shutdown = stageflow::io::shutdown_on_signals()
///     .drain_timeout(Duration::from_secs(10))
///     .on_signal(|signal, action| eprintln!("signal {signal}: {action:?}"))
///     .build()?;
/// // A finite pipeline ends by itself: `run` returns then, with no signal.
/// let report = shutdown.run(&pipeline);
/// assert_eq!(report.signal, None);
/// assert!(report.drain.is_complete());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn shutdown_on_signals() -> ShutdownBuilder {
    ShutdownBuilder {
        signals: vec![SIGINT, SIGTERM],
        drain_timeout: Duration::from_secs(30),
        notify: None,
    }
}

/// The options of a [`SignalShutdown`]. Made by [`shutdown_on_signals`].
pub struct ShutdownBuilder {
    signals: Vec<c_int>,
    drain_timeout: Duration,
    notify: Option<Notify>,
}

impl fmt::Debug for ShutdownBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShutdownBuilder")
            .field("signals", &self.signals)
            .field("drain_timeout", &self.drain_timeout)
            .finish_non_exhaustive()
    }
}

impl ShutdownBuilder {
    /// The signals that drain (the first) and stop (a second). Not empty, and none that
    /// cannot be handled (`SIGKILL`, `SIGSTOP`, `SIGILL`, `SIGFPE`, `SIGSEGV`). Defaults to
    /// `[SIGINT, SIGTERM]`.
    pub fn signals(mut self, signals: &[c_int]) -> Self {
        self.signals = signals.to_vec();
        self
    }

    /// How long the drain may take before the stages still running are stopped (and what
    /// they held counted in the report); see [`Topology::drain`]. Defaults to `30 s`.
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }

    /// Called with each signal received and what it is about to do (print "draining…",
    /// say), on a thread of the shutdown's, never inside a signal handler. Defaults to none:
    /// signals are logged at info level in any case.
    pub fn on_signal(mut self, f: impl Fn(c_int, SignalAction) + Send + Sync + 'static) -> Self {
        self.notify = Some(Arc::new(f));
        self
    }

    /// Checks the options and installs the handlers: from now on, the signals no longer end
    /// the process; they are kept for [`SignalShutdown::run`].
    ///
    /// When `run` returns (or the [`SignalShutdown`] is dropped) its actions are removed, but
    /// `signal-hook` leaves its low-level handler in place, so the process then *ignores*
    /// these signals instead of dying of them. That suits the end of a program, which is
    /// what `run` is for; a program that goes on after it should build another
    /// `SignalShutdown` to act on them again.
    ///
    /// # Errors
    ///
    /// [`IoError::InvalidOption`] for an empty or forbidden `signals`; [`IoError::Signals`]
    /// if the system refused the handlers.
    pub fn build(self) -> Result<SignalShutdown, IoError> {
        if self.signals.is_empty() {
            return Err(IoError::invalid(
                "signals",
                "expected at least one signal, got none".to_owned(),
            ));
        }
        if let Some(s) = self
            .signals
            .iter()
            .find(|s| signal_hook::consts::FORBIDDEN.contains(s))
        {
            return Err(IoError::invalid(
                "signals",
                format!("expected signals that can be handled, got {}", name(*s)),
            ));
        }
        let signals = Signals::new(&self.signals).map_err(IoError::Signals)?;
        Ok(SignalShutdown {
            signals,
            drain_timeout: self.drain_timeout,
            notify: self.notify,
        })
    }
}

/// Signal handlers installed, waiting for [`run`](SignalShutdown::run) to drain a pipeline.
/// Made by [`ShutdownBuilder::build`]. Unix only (`signal-hook`'s iterator).
pub struct SignalShutdown {
    signals: Signals,
    drain_timeout: Duration,
    notify: Option<Notify>,
}

impl fmt::Debug for SignalShutdown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignalShutdown")
            .field("drain_timeout", &self.drain_timeout)
            .finish_non_exhaustive()
    }
}

/// How often the thread that watches for the pipeline's own end looks whether `run` is done
/// (a stage handle has no wait that another thread can interrupt).
const WATCH: Duration = Duration::from_millis(50);

impl SignalShutdown {
    /// Waits for a signal or for every stage of `topology` to end by itself, whichever
    /// comes first, then drains the pipeline ([`Topology::drain`] with the drain timeout); a
    /// signal during the drain stops every stage at once. Returns when every stage has ended
    /// (or, for a callback that never returns, when the drain gave up on it). Its actions are
    /// removed when it returns (see [`ShutdownBuilder::build`] for what that leaves).
    pub fn run(self, topology: &Topology) -> ShutdownReport {
        let SignalShutdown {
            mut signals,
            drain_timeout,
            notify,
        } = self;
        let handle = signals.handle();
        let done = Arc::new(AtomicBool::new(false));
        // Close the signal wait when the pipeline ends by itself.
        let watcher = {
            // Its members, not only its stages: a supervised group restarts its stages.
            let members: Vec<Arc<dyn Member>> = topology.members().to_vec();
            let (handle, done) = (handle.clone(), done.clone());
            thread::Builder::new()
                .name("stageflow-signal-watch".into())
                .spawn(move || {
                    for member in &members {
                        while member.join_timeout(Some(WATCH)).is_none() {
                            if done.load(Ordering::Relaxed) {
                                return;
                            }
                        }
                    }
                    handle.close();
                })
        };
        let first = signals.forever().next();
        done.store(true, Ordering::Relaxed);
        let mut second = None;
        if let Some(signal) = first {
            tell(&notify, signal, SignalAction::Drain);
            let members: Vec<Arc<dyn Member>> = topology.members().to_vec();
            second = thread::Builder::new()
                .name("stageflow-signal-stop".into())
                .spawn(move || {
                    let signal = signals.forever().next()?;
                    tell(&notify, signal, SignalAction::Stop);
                    for member in &members {
                        member.stop();
                    }
                    Some(signal)
                })
                .ok();
        }
        let drain = topology.drain(drain_timeout);
        handle.close();
        let forced_by = second.and_then(|t| t.join().ok().flatten());
        if let Ok(watcher) = watcher {
            let _ = watcher.join();
        }
        ShutdownReport {
            signal: first,
            forced_by,
            drain,
        }
    }
}

/// What [`SignalShutdown::run`] saw.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// The signal that started the drain; `None` if the pipeline ended by itself first.
    pub signal: Option<c_int>,
    /// The second signal, which stopped every stage during the drain, if one came.
    pub forced_by: Option<c_int>,
    /// What the drain saw (after a second signal, stopped stages end with
    /// [`Reason::Shutdown`](crate::Reason::Shutdown) in its outcomes).
    pub drain: DrainReport,
}

impl fmt::Display for ShutdownReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.signal {
            Some(s) => write!(f, "{}: drained", name(s))?,
            None => f.write_str("ended by itself")?,
        }
        if let Some(s) = self.forced_by {
            write!(f, ", then stopped by {}", name(s))?;
        }
        if self.drain.is_complete() {
            write!(f, "; {} stages ended", self.drain.outcomes.len())
        } else {
            write!(
                f,
                "; timed out: stopped {:?}, {} events discarded",
                self.drain.stopped, self.drain.discarded
            )
        }
    }
}

/// Logs a signal and hands it to the user's callback.
fn tell(notify: &Option<Notify>, signal: c_int, action: SignalAction) {
    let verb = match action {
        SignalAction::Drain => "draining the pipeline (a second signal stops it)",
        SignalAction::Stop => "stopping every stage",
    };
    info!("received {}: {verb}", name(signal));
    if let Some(f) = notify {
        f(signal, action);
    }
}

/// A signal's name (`SIGINT`), or its number.
fn name(signal: c_int) -> String {
    signal_hook::low_level::signal_name(signal)
        .map(str::to_owned)
        .unwrap_or_else(|| format!("signal {signal}"))
}
