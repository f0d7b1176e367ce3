//! [`Reporter`]: a thread that takes a snapshot every interval and logs one line per stage, or
//! hands the snapshot to a callback.

use std::fmt;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{bounded, RecvTimeoutError, Sender};

use super::error::ObserveError;
use super::render::compact;
use super::snapshot::{Observe, Observer, Snapshot, StageSnapshot};

type Callback = Box<dyn FnMut(&Snapshot) + Send + 'static>;

/// Reports on a pipeline periodically: every interval it takes a snapshot (with rates since
/// the previous one) and logs one line per stage at info level (target `stageflow::observe`),
/// or passes the snapshot to a callback. It ends by itself after reporting a snapshot in which
/// every stage has ended, or when its [`ReporterHandle`] is stopped or dropped.
///
/// The reporter reads only the counters the stages publish, from its own thread: a stage
/// never waits for it.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use stageflow::observe::Reporter;
/// use stageflow::{SubscribeOptions, Topology};
///
/// let numbers = stageflow::from_iter(0..100u64).name("numbers").spawn()?;
/// let sink = stageflow::consumer(stageflow::fns::ForEach::new(|_: u64| {}))
///     .name("sink")
///     .subscribe_to(&numbers, SubscribeOptions::new())?
///     .spawn()?;
/// let topology = Topology::new().with(&numbers).with(&sink);
/// let (tx, rx) = std::sync::mpsc::channel();
/// let reporter = Reporter::every(Duration::from_millis(10))
///     .on_snapshot(move |s| { let _ = tx.send(s.stage("sink").unwrap().events_in); })
///     .start(&topology)?;
/// topology.join();
/// reporter.join(); // ends after reporting the ended pipeline
/// assert_eq!(rx.iter().last(), Some(100));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Reporter {
    interval: Duration,
    callback: Option<Callback>,
}

impl fmt::Debug for Reporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reporter")
            .field("interval", &self.interval)
            .field("callback", &self.callback.is_some())
            .finish()
    }
}

impl Reporter {
    /// A reporter that reports every `interval` (at least 1 ms), by logging unless
    /// [`on_snapshot`](Reporter::on_snapshot) says otherwise.
    pub fn every(interval: Duration) -> Reporter {
        Reporter {
            interval,
            callback: None,
        }
    }

    /// Hands each snapshot to `f` instead of logging it. `f` runs on the reporter's thread.
    /// Defaults to logging one line per stage at info level.
    pub fn on_snapshot(mut self, f: impl FnMut(&Snapshot) + Send + 'static) -> Reporter {
        self.callback = Some(Box::new(f));
        self
    }

    /// Starts reporting on `stages` (a [`Topology`](crate::Topology), a handle, a list of
    /// [`StageRef`](crate::StageRef)s) on a thread of its own, named `stageflow-reporter`.
    /// The first report comes one interval from now.
    ///
    /// # Errors
    ///
    /// [`ObserveError::InvalidOption`] for an interval under 1 ms, [`ObserveError::Spawn`] if
    /// the thread could not start.
    pub fn start(self, stages: &(impl Observe + ?Sized)) -> Result<ReporterHandle, ObserveError> {
        if self.interval < Duration::from_millis(1) {
            return Err(ObserveError::InvalidOption {
                option: "interval",
                message: format!(
                    "expected an interval of at least 1ms, got {:?}",
                    self.interval
                ),
            });
        }
        let mut observer = Observer::new(stages);
        let (stop, stopped) = bounded::<()>(0);
        let interval = self.interval;
        let mut callback = self.callback;
        let thread = std::thread::Builder::new()
            .name("stageflow-reporter".into())
            .spawn(move || {
                // The first snapshot sets the baseline for the rates.
                observer.snapshot();
                loop {
                    match stopped.recv_timeout(interval) {
                        Err(RecvTimeoutError::Timeout) => {}
                        _ => return,
                    }
                    let snapshot = observer.snapshot();
                    match &mut callback {
                        Some(f) => f(&snapshot),
                        None => {
                            for line in snapshot.report_lines() {
                                log::info!(target: "stageflow::observe", "{line}");
                            }
                        }
                    }
                    if snapshot.all_ended() {
                        return;
                    }
                }
            })
            .map_err(ObserveError::Spawn)?;
        Ok(ReporterHandle {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

/// A running [`Reporter`]. Dropping it stops the reporter and waits for its thread.
#[derive(Debug)]
pub struct ReporterHandle {
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl ReporterHandle {
    /// Stops the reporter (a report under way completes) and waits for its thread.
    pub fn stop(mut self) {
        self.stop.take();
        self.wait();
    }

    /// Waits until the reporter ends by itself, after reporting a snapshot in which every
    /// stage has ended.
    pub fn join(mut self) {
        self.wait();
    }

    /// Whether the reporter has ended.
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(JoinHandle::is_finished)
    }

    fn wait(&mut self) {
        if let Some(t) = self.thread.take() {
            // A panicking callback ends the reporter; the pipeline is unaffected.
            let _ = t.join();
        }
    }
}

impl Drop for ReporterHandle {
    fn drop(&mut self) {
        self.stop.take();
        self.wait();
    }
}

impl fmt::Display for StageSnapshot {
    /// One line: `name (kind, state): in N (R/s), out N (R/s), discarded N, buffered N,
    /// inbox L/C, busy P%` (the share of the interval in callbacks).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}, {}): in {} ({}/s), out {} ({}/s), discarded {}, buffered {}, inbox {}/{}, busy {:.0}%",
            self.name,
            self.kind,
            self.state(),
            self.events_in,
            compact(self.in_per_sec),
            self.events_out,
            compact(self.out_per_sec),
            self.discarded,
            self.buffered,
            self.inbox_len,
            self.inbox_capacity,
            self.share_busy * 100.0
        )
    }
}

impl Snapshot {
    /// The lines a [`Reporter`] logs: one per stage, `stage …` followed by the stage's
    /// `Display`, the bottleneck's line ending with `[bottleneck]`.
    pub fn report_lines(&self) -> Vec<String> {
        self.stages
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let mark = if self.bottleneck == Some(i) {
                    " [bottleneck]"
                } else {
                    ""
                };
                format!("stage {s}{mark}")
            })
            .collect()
    }
}
