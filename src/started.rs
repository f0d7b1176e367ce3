//! [`Started`]: the stages a layer (a chain, a flow, your own) has started, as one thing to
//! stop or join, whether they run on threads of their own or in a scope.

use std::time::{Duration, Instant};

use crate::builder::Place;
use crate::handle::{Role, ScopedStage};
use crate::reason::Reason;
use crate::topology::Topology;

/// The stages a layer has started, wherever it started them ([`Place`]): a
/// [`Topology`] of untyped handles for stages on threads of their own, the stages' own handles
/// for stages in a scope (which have no untyped ones). Dropping it stops the stages in a scope
/// (a topology stops its own when dropped), unless [`hand_over`](Started::hand_over) let them
/// run on. The crate's chains and flows keep their stages in one; a layer of your own that
/// starts stages with [`spawn_in`](crate::ScopedBuilder::spawn_in) can too.
///
/// ```
/// use stageflow::fns::ForEach;
/// use stageflow::{InScope, Started, SubscribeOptions};
///
/// let words = vec![String::from("a"), String::from("b")];
/// std::thread::scope(|scope| -> Result<(), Box<dyn std::error::Error>> {
///     let place = InScope::new(scope);
///     let mut started = Started::new();
///     let source = stageflow::from_iter(words.iter()).spawn_in(place)?;
///     started.add(&source, place);
///     let sink = stageflow::consumer(ForEach::new(|_: &String| {}))
///         .subscribe_to(&source, SubscribeOptions::new())?
///         .spawn_in(place)?;
///     started.add(&sink, place);
///     assert_eq!(started.len(), 2);
///     for (stage, reason) in started.join() {
///         assert!(reason.is_normal(), "{stage}: {reason}");
///     }
///     Ok(())
/// })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Started<'env> {
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
    /// Nothing started yet.
    pub fn new() -> Started<'env> {
        Started {
            topology: Topology::new(),
            scoped: Vec::new(),
        }
    }

    /// Keeps `stage`, which was started in `place`.
    pub fn add<S: Send + 'env, R: Role<S>>(
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

    /// The stages on threads of their own (those in a scope are not in it).
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// How many stages it holds.
    pub fn len(&self) -> usize {
        self.topology.stages().len() + self.scoped.len()
    }

    /// Whether it holds no stage.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Asks every stage to stop.
    pub fn stop(&self) {
        self.topology.stop();
        for stage in &self.scoped {
            stage.stop();
        }
    }

    /// Waits until every stage has ended; each one's name and outcome, in the order added.
    pub fn join(&self) -> Vec<(String, Reason)> {
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
    pub fn join_timeout(&self, timeout: Duration) -> Vec<(String, Option<Reason>)> {
        let deadline = crate::timer::deadline(timeout);
        let mut outcomes = self.topology.join_timeout(timeout);
        for stage in &self.scoped {
            let left = deadline.saturating_duration_since(Instant::now());
            outcomes.push((stage.name().to_owned(), stage.join_timeout(Some(left))));
        }
        outcomes
    }

    /// Lets the stages run on: the topology of the stages on threads of their own goes to the
    /// caller (dropping it stops them); the stages in a scope are no longer stopped when this
    /// is dropped, and the scope waits for them.
    pub fn hand_over(mut self) -> Topology {
        self.scoped.clear();
        std::mem::take(&mut self.topology)
    }
}

impl Default for Started<'_> {
    fn default() -> Self {
        Started::new()
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
