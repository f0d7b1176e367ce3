//! [`Child`]: the handle users hold on a child of a group, which resolves its current
//! incarnation; and the slot behind it, which starts incarnations and keeps the counters of
//! those that ended.

use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use super::policy::RestartPolicy;
use super::spec::{ChildSpec, Factory, Link, Spawn};
use crate::role::Role;
use crate::{panic_message, CancelMode, Counters, Stage, StageRef};

/// A handle on a child of a [`Group`](super::Group), valid across its restarts: it resolves
/// the incarnation running now. Cheap to clone.
///
/// A [`Stage`] handle taken from it ([`Child::current`]) reaches that incarnation only; after
/// a restart, take the new one.
pub struct Child<S: 'static, R: Role<S>> {
    pub(crate) slot: Arc<Slot<S, R>>,
}

impl<S, R: Role<S>> Clone for Child<S, R> {
    fn clone(&self) -> Self {
        Child {
            slot: self.slot.clone(),
        }
    }
}

impl<S, R: Role<S>> fmt::Debug for Child<S, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.slot.state.lock();
        f.debug_struct("Child")
            .field("name", &self.slot.name)
            .field("running", &state.current.is_some())
            .field("restarts", &state.starts.saturating_sub(1))
            .finish()
    }
}

impl<S: 'static, R: Role<S>> Child<S, R> {
    /// The child's name, which each of its incarnations has as its stage's name.
    pub fn name(&self) -> &str {
        &self.slot.name
    }

    /// The child's restart policy.
    pub fn policy(&self) -> RestartPolicy {
        self.slot.policy
    }

    /// The incarnation running now; `None` before the group starts, between an end and a
    /// restart (a backoff), and once the child has ended for good.
    pub fn current(&self) -> Option<Stage<S, R>> {
        self.slot.current()
    }

    /// An untyped handle on the incarnation running now; see [`Child::current`].
    pub fn stage_ref(&self) -> Option<StageRef> {
        self.slot.current().map(|s| s.stage_ref())
    }

    /// How many times the child was started again after its first start.
    pub fn restarts(&self) -> u64 {
        self.slot.state.lock().starts.saturating_sub(1)
    }

    /// The counters of every incarnation together: those that ended, summed as they were at
    /// their end (`buffered` and `subscriptions` only from the one running now). Events that
    /// were inside an incarnation when it crashed are counted by its equations as the
    /// [`Counters`] docs say: received and not yet handled ones as `discarded`.
    pub fn counters(&self) -> Counters {
        self.slot.counters()
    }

    /// Waits up to `timeout` until the child has been restarted at least `restarts` times and
    /// an incarnation runs; returns it. `None` if that did not happen in time.
    pub fn wait_restarts(&self, restarts: u64, timeout: Duration) -> Option<Stage<S, R>> {
        let deadline = super::deadline(timeout);
        let mut state = self.slot.state.lock();
        loop {
            if state.starts > restarts {
                if let Some(s) = &state.current {
                    return Some(s.clone());
                }
            }
            if self
                .slot
                .changed
                .wait_until(&mut state, deadline)
                .timed_out()
            {
                return None;
            }
        }
    }
}

/// What a slot holds now.
struct SlotState<S: 'static, R: Role<S>> {
    current: Option<Stage<S, R>>,
    /// Incarnations started so far.
    starts: u64,
    /// The ended incarnations' counters, summed.
    past: Counters,
}

/// A child's description and state, shared by its handles and the group.
pub(crate) struct Slot<S: 'static, R: Role<S>> {
    pub(crate) id: u64,
    name: Arc<str>,
    policy: RestartPolicy,
    factory: Mutex<Factory<S, R>>,
    links: Vec<Link<S, R>>,
    state: Mutex<SlotState<S, R>>,
    changed: Condvar,
}

impl<S: Send + 'static, R: Spawn<S>> Slot<S, R> {
    pub(crate) fn new(spec: ChildSpec<S, R>) -> Slot<S, R> {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Slot {
            id: NEXT.fetch_add(1, Ordering::Relaxed),
            name: spec.name.into(),
            policy: spec.policy,
            factory: Mutex::new(spec.factory),
            links: spec.links,
            state: Mutex::new(SlotState {
                current: None,
                starts: 0,
                past: Counters::default(),
            }),
            changed: Condvar::new(),
        }
    }
}

impl<S: 'static, R: Role<S>> Slot<S, R> {
    pub(crate) fn current(&self) -> Option<Stage<S, R>> {
        self.state.lock().current.clone()
    }

    fn counters(&self) -> Counters {
        let state = self.state.lock();
        let mut total = state.past.clone();
        if let Some(now) = &state.current {
            let c = now.counters();
            total.events_in += c.events_in;
            total.events_out += c.events_out;
            total.emitted += c.emitted;
            total.discarded += c.discarded;
            total.buffered = c.buffered;
            total.subscriptions = c.subscriptions;
        }
        total
    }
}

/// A child as the group's supervisor sees it, whatever its stage type.
pub(crate) trait Entry: Send + Sync {
    fn id(&self) -> u64;
    fn name(&self) -> &str;
    fn policy(&self) -> RestartPolicy;
    /// The in-group producers it subscribes to (child ids), with the cancel modes given.
    fn producers(&self) -> Vec<(u64, CancelMode)>;
    /// Starts an incarnation subscribed to the producers running now.
    fn start(&self) -> Result<StageRef, String>;
    /// Subscribes the running incarnation to `producer`'s new incarnation.
    fn resubscribe(&self, producer: u64) -> Result<(), String>;
    /// The running incarnation ended: keep its counters, forget it.
    fn ended(&self);
    fn stage_ref(&self) -> Option<StageRef>;
    fn counters(&self) -> Counters;
    fn restarts(&self) -> u64;
}

impl<S: Send + 'static, R: Spawn<S>> Entry for Slot<S, R> {
    fn id(&self) -> u64 {
        self.id
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn policy(&self) -> RestartPolicy {
        self.policy
    }

    fn producers(&self) -> Vec<(u64, CancelMode)> {
        self.links
            .iter()
            .filter_map(|l| l.producer.map(|p| (p, l.mode)))
            .collect()
    }

    fn start(&self) -> Result<StageRef, String> {
        let built = catch_unwind(AssertUnwindSafe(|| (self.factory.lock())())).map_err(|p| {
            format!(
                "its factory panicked: {}",
                panic_message(&*p).unwrap_or("a non-string payload")
            )
        })?;
        let mut builder = built.name(&*self.name);
        for link in &self.links {
            builder = (link.at_build)(builder).map_err(|e| e.to_string())?;
        }
        let stage = R::spawn(builder).map_err(|e| e.to_string())?;
        let stage_ref = stage.stage_ref();
        let mut state = self.state.lock();
        state.current = Some(stage);
        state.starts += 1;
        self.changed.notify_all();
        Ok(stage_ref)
    }

    fn resubscribe(&self, producer: u64) -> Result<(), String> {
        let Some(stage) = self.current() else {
            return Ok(());
        };
        for link in self.links.iter().filter(|l| l.producer == Some(producer)) {
            if let Some(Err(e)) = (link.running)(&stage) {
                return Err(e.to_string());
            }
        }
        Ok(())
    }

    fn ended(&self) {
        let mut state = self.state.lock();
        if let Some(stage) = state.current.take() {
            let c = stage.counters();
            let past = &mut state.past;
            past.events_in += c.events_in;
            past.events_out += c.events_out;
            past.emitted += c.emitted;
            past.discarded += c.discarded;
        }
        self.changed.notify_all();
    }

    fn stage_ref(&self) -> Option<StageRef> {
        self.current().map(|s| s.stage_ref())
    }

    fn counters(&self) -> Counters {
        Slot::counters(self)
    }

    fn restarts(&self) -> u64 {
        self.state.lock().starts.saturating_sub(1)
    }
}
