//! [`Started`]: the stages a layer (a chain, a flow) has started, as one thing to stop or join,
//! whether they run on threads of their own or in a scope.

use std::time::{Duration, Instant};

use crate::builder::Place;
use crate::handle::{Role, ScopedStage};
use crate::reason::Reason;
use crate::topology::Topology;

/// What a layer has started: a topology of untyped handles (unscoped), or the stages' own
/// handles (in a scope, where there are no untyped ones). Dropping it stops them, unless it
/// was handed over.
pub(crate) struct Started<'env> {
    topology: Topology,
    scoped: Vec<Box<dyn Halt + 'env>>,
}

/// A started stage in a scope, as a layer keeps it.
trait Halt: Send + Sync {
    fn name(&self) -> &str;
    fn stop(&self);
    fn join_timeout(&self, timeout: Option<Duration>) -> Option<Reason>;
}

impl<S: Send, R: Role<S>> Halt for ScopedStage<'_, S, R> {
    fn name(&self) -> &str {
        ScopedStage::name(self)
    }
    fn stop(&self) {
        ScopedStage::stop(self);
    }
    fn join_timeout(&self, timeout: Option<Duration>) -> Option<Reason> {
        match timeout {
            Some(t) => ScopedStage::join_timeout(self, t),
            None => Some(ScopedStage::join(self)),
        }
    }
}

impl<'env> Started<'env> {
    pub(crate) fn new() -> Started<'env> {
        Started {
            topology: Topology::new(),
            scoped: Vec::new(),
        }
    }

    /// Keeps `stage`, started in `place`.
    pub(crate) fn add<S: Send + 'env, R: Role<S>>(
        &mut self,
        stage: &ScopedStage<'env, S, R>,
        place: impl Place<'env>,
    ) {
        match place.stage_ref(stage) {
            Some(stage) => {
                self.topology.add(&stage);
            }
            None => self.scoped.push(Box::new(stage.clone())),
        }
    }

    /// The unscoped stages.
    pub(crate) fn topology(&self) -> &Topology {
        &self.topology
    }

    pub(crate) fn len(&self) -> usize {
        self.topology.stages().len() + self.scoped.len()
    }

    /// Asks every stage to stop.
    pub(crate) fn stop(&self) {
        self.topology.stop();
        for stage in &self.scoped {
            stage.stop();
        }
    }

    /// Waits until every stage has ended; each one's name and outcome, in the order added.
    pub(crate) fn join(&self) -> Vec<(String, Reason)> {
        let mut outcomes = self.topology.join();
        for stage in &self.scoped {
            let reason = stage
                .join_timeout(None)
                .expect("waiting without a deadline");
            outcomes.push((stage.name().to_owned(), reason));
        }
        outcomes
    }

    /// Like [`join`](Started::join), giving up on each stage once `timeout` has passed.
    pub(crate) fn join_timeout(&self, timeout: Duration) -> Vec<(String, Option<Reason>)> {
        let deadline = crate::timer::deadline(timeout);
        let mut outcomes = self.topology.join_timeout(timeout);
        for stage in &self.scoped {
            let left = deadline.saturating_duration_since(Instant::now());
            outcomes.push((stage.name().to_owned(), stage.join_timeout(Some(left))));
        }
        outcomes
    }

    /// The stages keep running when this is dropped: the topology goes to the caller; the
    /// scope joins the scoped stages.
    pub(crate) fn hand_over(mut self) -> Topology {
        self.scoped.clear();
        std::mem::take(&mut self.topology)
    }
}

impl std::fmt::Debug for Started<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Started")
            .field("stages", &self.topology.stages())
            .field(
                "scoped",
                &self.scoped.iter().map(|s| s.name()).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Drop for Started<'_> {
    fn drop(&mut self) {
        for stage in &self.scoped {
            stage.stop();
        }
    }
}
