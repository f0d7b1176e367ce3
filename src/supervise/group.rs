//! [`GroupBuilder`] and [`Group`]: a group's options and children, and the handle on the
//! running group (its outcome, restarts, current stages; finish, stop, drain, join).

use std::collections::HashSet;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{unbounded, Sender};
use parking_lot::{Condvar, Mutex};

use super::child::{Child, Entry, Slot};
use super::error::GroupError;
use super::policy::{Backoff, Intensity, Strategy};
use super::run::{Event, Supervisor};
use super::spec::{ChildSpec, Spawn};
use crate::{panic_message, DrainReport, Member, Reason, StageRef, Topology};

/// Starts describing a group named `name` (used in logs and as its supervisor thread's name).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use stageflow::supervise::{self, Backoff, ChildSpec, Intensity, Strategy};
///
/// let mut group = supervise::group("ingest")
///     .strategy(Strategy::RestForOne)
///     .intensity(Intensity::new(5, Duration::from_secs(10)))
///     .backoff(Backoff::Exponential {
///         first: Duration::from_millis(50),
///         max: Duration::from_secs(5),
///     });
/// let source = group.add(ChildSpec::new("source", || stageflow::from_iter(0u64..)));
/// let group = group.start()?;
/// assert_eq!(group.stages()[0].name(), "source");
/// group.stop();
/// assert_eq!(group.join(), stageflow::Reason::Shutdown);
/// assert_eq!(source.restarts(), 0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn group(name: impl Into<String>) -> GroupBuilder {
    GroupBuilder {
        name: name.into(),
        strategy: Strategy::default(),
        intensity: Intensity::default(),
        backoff: Backoff::default(),
        entries: Vec::new(),
    }
}

/// A group's options and children, before it starts. Made by [`group`].
pub struct GroupBuilder {
    name: String,
    strategy: Strategy,
    intensity: Intensity,
    backoff: Backoff,
    entries: Vec<Arc<dyn Entry>>,
}

impl fmt::Debug for GroupBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GroupBuilder")
            .field("name", &self.name)
            .field("strategy", &self.strategy)
            .field("intensity", &self.intensity)
            .field("backoff", &self.backoff)
            .field(
                "children",
                &self.entries.iter().map(|e| e.name()).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl GroupBuilder {
    /// Which children restart with one that must. Defaults to [`Strategy::OneForOne`].
    pub fn strategy(mut self, strategy: Strategy) -> GroupBuilder {
        self.strategy = strategy;
        self
    }

    /// How many restarts are too many: one more ends the group. Its period must be above
    /// zero. Defaults to 3 restarts within 5 s (OTP's and Broadway's).
    pub fn intensity(mut self, intensity: Intensity) -> GroupBuilder {
        self.intensity = intensity;
        self
    }

    /// How long a child waits before it is started again. Defaults to
    /// `Backoff::Fixed(Duration::ZERO)` (at once).
    pub fn backoff(mut self, backoff: Backoff) -> GroupBuilder {
        self.backoff = backoff;
        self
    }

    /// Adds a child, to be started after those added before it (and, on a
    /// [`Strategy::RestForOne`] restart, restarted with them). Returns the handle that
    /// resolves its running incarnation; a child added later subscribes to it with
    /// [`ChildSpec::subscribe_to`].
    pub fn add<S: Send + 'static, R: Spawn<S>>(&mut self, spec: ChildSpec<S, R>) -> Child<S, R> {
        let slot = Arc::new(Slot::new(spec));
        self.entries.push(slot.clone());
        Child { slot }
    }

    fn validate(&self) -> Result<(), GroupError> {
        if self.name.is_empty() || self.name.contains('\0') {
            return Err(GroupError::invalid(
                "name",
                format!("expected a non-empty name without NUL, got {:?}", self.name),
            ));
        }
        if self.intensity.period.is_zero() {
            return Err(GroupError::invalid(
                "intensity.period",
                "expected a period above zero, got 0",
            ));
        }
        if let Backoff::Exponential { first, max } = self.backoff {
            if first > max {
                return Err(GroupError::invalid(
                    "backoff",
                    format!("expected first ({first:?}) to be at most max ({max:?})"),
                ));
            }
        }
        let mut names = HashSet::new();
        let mut before = HashSet::new();
        for e in &self.entries {
            if e.name().is_empty() || e.name().contains('\0') {
                return Err(GroupError::invalid(
                    "child.name",
                    format!("expected a non-empty name without NUL, got {:?}", e.name()),
                ));
            }
            if !names.insert(e.name()) {
                return Err(GroupError::invalid(
                    "child.name",
                    format!("expected unique child names, got {:?} twice", e.name()),
                ));
            }
            if e.producers().iter().any(|(p, _)| !before.contains(p)) {
                return Err(GroupError::invalid(
                    "child.subscribe_to",
                    format!(
                        "child {:?} subscribes to a child that is not added to group {:?} before it",
                        e.name(),
                        self.name
                    ),
                ));
            }
            before.insert(e.id());
        }
        Ok(())
    }

    /// Checks the options and starts every child in the order added, each subscribed to the
    /// children it names, then the supervisor's thread.
    ///
    /// # Errors
    ///
    /// [`GroupError::InvalidOption`] naming the option (an intensity period of zero, a child
    /// name given twice, a subscription to a child of another group or added later);
    /// [`GroupError::Start`] if a child's stage did not start (the children started before it
    /// are stopped and waited for).
    pub fn start(self) -> Result<Group, GroupError> {
        self.validate()?;
        let GroupBuilder {
            name,
            strategy,
            intensity,
            backoff,
            entries,
        } = self;
        let (tx, rx) = unbounded();
        let shared = Arc::new(GroupShared {
            name: name.into(),
            tx,
            entries,
            restarts: AtomicU64::new(0),
            outcome: Mutex::new(None),
            ended: Condvar::new(),
            thread: Mutex::new(None),
        });
        let mut supervisor = Supervisor::new(shared.clone(), rx, strategy, intensity, backoff);
        if let Err((child, why)) = supervisor.start_all() {
            return Err(GroupError::Start {
                child,
                message: why,
            });
        }
        let watched = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("{}.supervisor", shared.name))
            .spawn(move || {
                // The supervisor runs no user code outside `catch_unwind` (factories are
                // caught where they run); should it panic all the same, the group must still
                // end, and say why, rather than leave its children and joiners waiting.
                if let Err(panic) = catch_unwind(AssertUnwindSafe(|| supervisor.run())) {
                    let why = panic_message(&*panic).unwrap_or("a non-string payload");
                    log::error!("group {}: its supervisor panicked: {why}", watched.name);
                    for e in &watched.entries {
                        if let Some(stage) = e.stage_ref() {
                            stage.stop();
                        }
                    }
                    watched.publish(Reason::Panicked(format!("supervisor: {why}")));
                }
            });
        match thread {
            Ok(handle) => *shared.thread.lock() = Some(handle),
            Err(e) => {
                // The supervisor went with the closure: stop the children by hand.
                for e in &shared.entries {
                    if let Some(s) = e.stage_ref() {
                        s.stop();
                    }
                }
                return Err(GroupError::Spawn(e));
            }
        }
        Ok(Group {
            handle: Arc::new(Handle { shared }),
        })
    }
}

/// What a group's handles and its supervisor share.
pub(crate) struct GroupShared {
    pub(crate) name: Arc<str>,
    pub(crate) tx: Sender<Event>,
    pub(crate) entries: Vec<Arc<dyn Entry>>,
    restarts: AtomicU64,
    outcome: Mutex<Option<Reason>>,
    ended: Condvar,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl GroupShared {
    pub(crate) fn count_restart(&self) {
        self.restarts.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn publish(&self, outcome: Reason) {
        *self.outcome.lock() = Some(outcome);
        self.ended.notify_all();
    }

    fn wait(&self, timeout: Option<Duration>) -> Option<Reason> {
        let mut outcome = self.outcome.lock();
        let deadline = timeout.map(super::deadline);
        while outcome.is_none() {
            match deadline {
                Some(d) => {
                    if self.ended.wait_until(&mut outcome, d).timed_out() {
                        break;
                    }
                }
                None => self.ended.wait(&mut outcome),
            }
        }
        let reason = outcome.clone()?;
        drop(outcome);
        // The supervisor publishes as its last act: its thread is done or about to be.
        if let Some(thread) = self.thread.lock().take() {
            let _ = thread.join();
        }
        Some(reason)
    }
}

/// Stops the group when the last [`Group`] handle goes.
struct Handle {
    shared: Arc<GroupShared>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        let _ = self.shared.tx.send(Event::Stop);
    }
}

/// A running group of supervised stages: its children are restarted by their
/// [`RestartPolicy`](super::RestartPolicy), the [`Strategy`] and the [`Intensity`], until it
/// is finished, stopped, or fails (too many restarts). Cheap to clone.
///
/// Dropping the last handle stops the group (as dropping a [`Topology`] stops its stages). It
/// is a [`Member`] of a topology: [`Topology::drain`] and [`Topology::stop`] work on it.
#[derive(Clone)]
pub struct Group {
    handle: Arc<Handle>,
}

impl fmt::Debug for Group {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Group")
            .field("name", &self.shared().name)
            .field("restarts", &self.restarts())
            .field("outcome", &self.outcome())
            .finish()
    }
}

impl Group {
    fn shared(&self) -> &GroupShared {
        &self.handle.shared
    }

    /// The group's name.
    pub fn name(&self) -> &str {
        &self.shared().name
    }

    /// Restarts so far, all children together (a strategy's restart of several children
    /// counts once, as the intensity does).
    pub fn restarts(&self) -> u64 {
        self.shared().restarts.load(Ordering::Relaxed)
    }

    /// Each child's name and how many times it was started again, in the order added.
    pub fn restart_counts(&self) -> Vec<(String, u64)> {
        self.shared()
            .entries
            .iter()
            .map(|e| (e.name().to_owned(), e.restarts()))
            .collect()
    }

    /// The stages running now, in the order their children were added.
    pub fn stages(&self) -> Vec<StageRef> {
        self.shared()
            .entries
            .iter()
            .filter_map(|e| e.stage_ref())
            .collect()
    }

    /// Asks the group to finish: nothing is restarted any more, and every child is asked to
    /// [finish](crate::Stage::finish), so a pipeline drains from its sources to its sinks.
    /// Does not wait; see [`Group::join`], or [`Group::drain`].
    pub fn finish(&self) {
        let _ = self.shared().tx.send(Event::Finish);
    }

    /// Asks the group to stop: nothing is restarted any more, and every child is stopped.
    /// The group then ends with [`Reason::Shutdown`]. Does not wait.
    pub fn stop(&self) {
        let _ = self.shared().tx.send(Event::Stop);
    }

    /// Drains the group as [`Topology::drain`] drains a pipeline: finishes it, waits up to
    /// `timeout`, then stops what is left and reports it.
    pub fn drain(&self, timeout: Duration) -> DrainReport {
        Topology::new().with_member(self.clone()).drain(timeout)
    }

    /// Waits until every child has ended for good and the supervisor is done; returns how
    /// the group ended: [`Reason::Normal`] when its children ended and none was to be
    /// restarted (or it was finished), [`Reason::Shutdown`] when it was stopped, and
    /// [`Reason::Error`] naming the child and its last failure when the restart intensity
    /// was reached.
    pub fn join(&self) -> Reason {
        self.shared()
            .wait(None)
            .expect("waiting without a deadline")
    }

    /// Like [`Group::join`], but gives up after `timeout` and returns `None`.
    pub fn join_timeout(&self, timeout: Duration) -> Option<Reason> {
        self.shared().wait(Some(timeout))
    }

    /// How the group ended, or `None` while it runs.
    pub fn outcome(&self) -> Option<Reason> {
        self.shared().outcome.lock().clone()
    }
}

impl Member for Group {
    fn name(&self) -> &str {
        Group::name(self)
    }

    fn stages(&self) -> Vec<StageRef> {
        Group::stages(self)
    }

    fn finish(&self) {
        Group::finish(self);
    }

    fn stop(&self) {
        Group::stop(self);
    }

    fn join_timeout(&self, timeout: Option<Duration>) -> Option<Reason> {
        self.shared().wait(timeout)
    }

    fn discarded(&self) -> u64 {
        self.shared()
            .entries
            .iter()
            .map(|e| e.counters().discarded)
            .sum()
    }
}
