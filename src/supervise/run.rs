//! The supervisor: the one thread of a group that learns when its children end, decides by
//! their policies, the strategy and the intensity, and starts them again. Each incarnation's
//! end reaches it as an event the child's own thread sends as its last act: no thread per
//! child waiting in `join` (a pipeline of 50 processors was 100 threads, and ending it took
//! 5.5 ms instead of 2.4).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use log::{error, info, warn};

use super::child::Entry;
use super::group::GroupShared;
use super::policy::{Backoff, Intensity, RestartPolicy, Strategy, Window};
use crate::{CancelMode, Reason, StageRef};

/// What the supervisor hears.
pub(crate) enum Event {
    /// An incarnation of a child ended.
    Ended {
        child: usize,
        incarnation: u64,
        reason: Reason,
    },
    /// Finish every child and restart none (a drain).
    Finish,
    /// Stop every child and restart none.
    Stop,
}

/// Where a child stands.
enum State {
    Running {
        incarnation: u64,
        stage: StageRef,
    },
    /// The group asked it to end (a drain, a stop, a strategy, its producers gone): its end is
    /// not a failure.
    Ending {
        incarnation: u64,
        stage: StageRef,
        then: Then,
    },
    /// To be started again at `due`.
    Waiting {
        due: Instant,
    },
    /// Ended for good.
    Gone,
}

/// What follows an end the group asked for.
#[derive(Clone, Copy)]
enum Then {
    Restart(Instant),
    Gone,
}

/// Why the group is ending, weakest first.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Closing {
    Drain,
    Stop,
    Failed(String),
}

/// The supervisor's state; `run` is its thread.
pub(crate) struct Supervisor {
    shared: Arc<GroupShared>,
    rx: Receiver<Event>,
    tx: Sender<Event>,
    ids: HashMap<u64, usize>,
    states: Vec<State>,
    strategy: Strategy,
    intensity: Intensity,
    window: Window,
    backoff: Backoff,
    next_incarnation: u64,
    closing: Option<Closing>,
}

impl Supervisor {
    pub(crate) fn new(
        shared: Arc<GroupShared>,
        rx: Receiver<Event>,
        strategy: Strategy,
        intensity: Intensity,
        backoff: Backoff,
    ) -> Supervisor {
        let ids = shared
            .entries
            .iter()
            .enumerate()
            .map(|(i, e)| (e.id(), i))
            .collect();
        let states = shared.entries.iter().map(|_| State::Gone).collect();
        Supervisor {
            tx: shared.tx.clone(),
            shared,
            rx,
            ids,
            states,
            strategy,
            intensity,
            window: Window::new(intensity),
            backoff,
            next_incarnation: 0,
            closing: None,
        }
    }

    fn entry(&self, i: usize) -> &Arc<dyn Entry> {
        &self.shared.entries[i]
    }

    /// Starts every child in order, on the caller's thread. On a failure, stops what started
    /// and returns which child failed, and why.
    pub(crate) fn start_all(&mut self) -> Result<(), (String, String)> {
        for i in 0..self.states.len() {
            match self.entry(i).start() {
                Ok(stage) => self.running(i, stage),
                Err(why) => {
                    let name = self.entry(i).name().to_owned();
                    self.abandon();
                    return Err((name, why));
                }
            }
        }
        Ok(())
    }

    /// Stops whatever started and waits for it (a group that failed to start).
    pub(crate) fn abandon(&mut self) {
        self.close(Closing::Stop);
        while self.states.iter().any(|s| !matches!(s, State::Gone)) {
            match self.rx.recv() {
                Ok(Event::Ended {
                    child,
                    incarnation,
                    reason,
                }) => self.ended(child, incarnation, reason),
                Ok(_) => {}
                Err(_) => break,
            }
        }
    }

    /// The supervisor's thread: until every child has ended for good.
    pub(crate) fn run(mut self) {
        while self.states.iter().any(|s| !matches!(s, State::Gone)) {
            let event = match self.next_due() {
                Some(due) => match self.rx.recv_deadline(due) {
                    Ok(e) => Some(e),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => break,
                },
                None => match self.rx.recv() {
                    Ok(e) => Some(e),
                    Err(_) => break,
                },
            };
            match event {
                Some(Event::Ended {
                    child,
                    incarnation,
                    reason,
                }) => self.ended(child, incarnation, reason),
                Some(Event::Finish) => self.close(Closing::Drain),
                Some(Event::Stop) => self.close(Closing::Stop),
                None => {}
            }
            self.start_due();
        }
        let outcome = match self.closing.take() {
            Some(Closing::Failed(why)) => Reason::Error(why),
            Some(Closing::Stop) => Reason::Shutdown,
            Some(Closing::Drain) | None => Reason::Normal,
        };
        info!("group {}: ended ({outcome})", self.shared.name);
        self.shared.publish(outcome);
    }

    fn next_due(&self) -> Option<Instant> {
        self.states
            .iter()
            .filter_map(|s| match s {
                State::Waiting { due } => Some(*due),
                _ => None,
            })
            .min()
    }

    /// Records a running incarnation of child `i` and watches for its end.
    fn running(&mut self, i: usize, stage: StageRef) {
        self.next_incarnation += 1;
        let incarnation = self.next_incarnation;
        let tx = self.tx.clone();
        stage.on_end(move |reason: &Reason| {
            let _ = tx.send(Event::Ended {
                child: i,
                incarnation,
                reason: reason.clone(),
            });
        });
        self.states[i] = State::Running { incarnation, stage };
    }

    /// An incarnation of child `i` ended with `reason`.
    fn ended(&mut self, i: usize, incarnation: u64, reason: Reason) {
        let current = match &self.states[i] {
            State::Running { incarnation: n, .. } | State::Ending { incarnation: n, .. } => {
                *n == incarnation
            }
            _ => false,
        };
        if !current {
            return;
        }
        self.entry(i).ended();
        match std::mem::replace(&mut self.states[i], State::Gone) {
            State::Ending {
                then: Then::Restart(due),
                ..
            } if self.closing.is_none() => self.states[i] = State::Waiting { due },
            State::Ending { .. } => self.gone(i),
            _ => self.failed(i, reason),
        }
    }

    /// Child `i` ended by itself with `reason`: restart it (and the strategy's others), or
    /// not, or end the group if that is one restart too many.
    fn failed(&mut self, i: usize, reason: Reason) {
        let group = self.shared.name.clone();
        let name = self.entry(i).name().to_owned();
        let policy = self.entry(i).policy();
        if self.closing.is_some() || !policy.restarts_after(&reason) {
            if reason.is_normal() || self.closing.is_some() {
                info!("group {group}: child {name} ended ({reason}); not restarted ({policy:?})");
            } else {
                // A temporary child's failure ends it for good: say so where failures are seen.
                warn!("group {group}: child {name} failed ({reason}); not restarted ({policy:?})");
            }
            self.gone(i);
            return;
        }
        let now = Instant::now();
        let Intensity {
            max_restarts,
            period,
        } = self.intensity;
        if !self.window.admit(now) {
            let why = format!(
                "restart intensity reached ({max_restarts} restarts within {period:?}): \
                 child {name} ended again ({reason})"
            );
            error!("group {group}: {why}; stopping every child");
            self.close(Closing::Failed(why));
            self.gone(i);
            return;
        }
        let nth = self.window.recent();
        let delay = self.backoff.delay(nth);
        warn!(
            "group {group}: child {name} ended ({reason}); restarting it in {delay:?} \
             (restart {nth} of at most {max_restarts} within {period:?}, {:?})",
            self.strategy
        );
        self.shared.count_restart();
        let due = now + delay;
        for j in self.strategy.affected(i, self.states.len()) {
            if j == i {
                self.states[j] = State::Waiting { due };
                continue;
            }
            let then = if self.entry(j).policy() == RestartPolicy::Temporary {
                Then::Gone
            } else {
                Then::Restart(due)
            };
            match std::mem::replace(&mut self.states[j], State::Gone) {
                State::Running { incarnation, stage }
                | State::Ending {
                    incarnation, stage, ..
                } => {
                    stage.stop();
                    self.states[j] = State::Ending {
                        incarnation,
                        stage,
                        then,
                    };
                }
                State::Waiting { .. } => self.states[j] = State::Waiting { due },
                State::Gone => {}
            }
        }
    }

    /// Child `i` ended for good: its consumers whose producers have all ended for good are
    /// finished, as their cancel modes would end them.
    fn gone(&mut self, i: usize) {
        self.states[i] = State::Gone;
        self.finish_orphans();
    }

    /// Finishes each running child whose producers in the group (by a permanent or transient
    /// subscription) have all ended for good.
    fn finish_orphans(&mut self) {
        for c in 0..self.states.len() {
            if !matches!(self.states[c], State::Running { .. }) {
                continue;
            }
            let producers: Vec<u64> = self
                .entry(c)
                .producers()
                .into_iter()
                .filter(|&(_, mode)| mode != CancelMode::Temporary)
                .map(|(p, _)| p)
                .collect();
            let orphan = !producers.is_empty()
                && producers
                    .iter()
                    .all(|p| matches!(self.states[self.ids[p]], State::Gone));
            if orphan {
                if let State::Running { incarnation, stage } =
                    std::mem::replace(&mut self.states[c], State::Gone)
                {
                    info!(
                        "group {}: the producers of child {} have ended for good; finishing it",
                        self.shared.name,
                        stage.name()
                    );
                    stage.finish();
                    self.states[c] = State::Ending {
                        incarnation,
                        stage,
                        then: Then::Gone,
                    };
                }
            }
        }
    }

    /// Starts, in order, the children whose restart is due; a child still ending for a
    /// strategy holds back those after it, so they start in order.
    fn start_due(&mut self) {
        let now = Instant::now();
        for i in 0..self.states.len() {
            match self.states[i] {
                State::Ending {
                    then: Then::Restart(_),
                    ..
                } => break,
                State::Waiting { due } if due <= now => self.restart(i),
                _ => {}
            }
        }
    }

    fn restart(&mut self, i: usize) {
        match self.entry(i).start() {
            Ok(stage) => {
                info!(
                    "group {}: child {} restarted (restart {})",
                    self.shared.name,
                    stage.name(),
                    self.entry(i).restarts()
                );
                self.running(i, stage);
                let id = self.entry(i).id();
                for c in 0..self.states.len() {
                    if c == i || !matches!(self.states[c], State::Running { .. }) {
                        continue;
                    }
                    if !self.entry(c).producers().iter().any(|&(p, _)| p == id) {
                        continue;
                    }
                    if let Err(e) = self.entry(c).resubscribe(id) {
                        warn!(
                            "group {}: child {} could not subscribe again to {}: {e}",
                            self.shared.name,
                            self.entry(c).name(),
                            self.entry(i).name()
                        );
                    }
                }
                self.finish_orphans();
            }
            Err(why) => {
                error!(
                    "group {}: child {} did not restart: {why}",
                    self.shared.name,
                    self.entry(i).name()
                );
                self.states[i] = State::Gone;
                self.failed(i, Reason::error(format!("restart failed: {why}")));
            }
        }
    }

    /// Ends every child and restarts none: finishing them for a drain, stopping them
    /// otherwise. A stronger reason (a stop during a drain) takes over.
    fn close(&mut self, how: Closing) {
        if self.closing.as_ref().is_some_and(|c| *c >= how) {
            return;
        }
        let stop = how != Closing::Drain;
        self.closing = Some(how);
        for i in 0..self.states.len() {
            match std::mem::replace(&mut self.states[i], State::Gone) {
                State::Running { incarnation, stage }
                | State::Ending {
                    incarnation, stage, ..
                } => {
                    if stop {
                        stage.stop();
                    } else {
                        stage.finish();
                    }
                    self.states[i] = State::Ending {
                        incarnation,
                        stage,
                        then: Then::Gone,
                    };
                }
                State::Waiting { .. } | State::Gone => {}
            }
        }
    }
}
