//! Running a flow: the build that spawns its stages in order and releases its sources last,
//! the mapper lane stage, and the handles a run returns ([`FlowStream`], [`RunningFlow`]).

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::error::FlowError;
use crate::role::Role;
use crate::{
    Context, Events, ProducerConsumer, Reason, ScopedSource, ScopedStage, ScopedStream, StageRef,
    SubscribeError, SubscribeOptions, Topology,
};
use crate::{InScope, Place, Started, Unscoped};

/// Where a flow's stages will start, as the flow's type says before it runs: [`Unscoped`]
/// (a [`Flow`](super::Flow)) or [`Scoped`] (a [`ScopedFlow`](super::ScopedFlow) over borrowed
/// items, run in a scope given to its terminal method). Implemented by those two only.
pub trait Mode<'env>: mode::Sealed + Copy + Send + Sync + 'env {
    /// Where the stages start, once the flow runs (in a scope that lives for `'s`).
    type Place<'s>: Place<'env>
    where
        'env: 's;
}

mod mode {
    pub trait Sealed {}
    impl Sealed for crate::Unscoped {}
    impl Sealed for super::Scoped<'_> {}
}

/// The [`Mode`] of a flow whose items may borrow for `'env`: it runs in a scope.
#[derive(Debug, Clone, Copy)]
pub struct Scoped<'env>(std::marker::PhantomData<fn(&'env ()) -> &'env ()>);

impl Mode<'static> for Unscoped {
    type Place<'s> = Unscoped;
}

impl<'env> Mode<'env> for Scoped<'env> {
    type Place<'s>
        = InScope<'s, 'env>
    where
        'env: 's;
}

/// A flow's stages as they are spawned (in `M`'s place, in a scope that lives for `'s`), and
/// what to do once they all are.
pub(crate) struct Build<'s, 'env: 's, M: Mode<'env>> {
    pub(crate) started: Started<'env>,
    place: M::Place<'s>,
    prefix: String,
    counts: HashMap<&'static str, usize>,
    /// Run once every stage has subscribed: switch our sources to forwarding demand.
    releases: Vec<Box<dyn FnOnce() + Send + 'env>>,
}

impl<'s, 'env: 's, M: Mode<'env>> Build<'s, 'env, M> {
    pub(crate) fn new(prefix: &str, place: M::Place<'s>) -> Build<'s, 'env, M> {
        Build {
            started: Started::new(),
            place,
            prefix: prefix.to_string(),
            counts: HashMap::new(),
            releases: Vec::new(),
        }
    }

    /// Where the flow's stages start.
    pub(crate) fn place(&self) -> M::Place<'s> {
        self.place
    }

    /// The next stage name for `role`: `flow-map-0`, `flow-map-1`, ...
    pub(crate) fn name(&mut self, role: &'static str) -> String {
        let n = self.counts.entry(role).or_insert(0);
        let name = format!("{}-{role}-{n}", self.prefix);
        *n += 1;
        name
    }

    pub(crate) fn add<S: Send + 'env, R: Role<S>>(&mut self, stage: &ScopedStage<'env, S, R>) {
        self.started.add(stage, self.place);
    }

    pub(crate) fn on_release(&mut self, f: impl FnOnce() + Send + 'env) {
        self.releases.push(Box::new(f));
    }

    /// Every stage is subscribed: let the sources go.
    pub(crate) fn release(&mut self) {
        for f in self.releases.drain(..) {
            f();
        }
    }
}

/// What spawns a flow's sources (and everything upstream of them) and returns their outputs.
/// (For any scope the flow runs in: a flow is built before it runs.)
pub(crate) type Sources<'env, S, M> = Box<
    dyn for<'s> FnOnce(&mut Build<'s, 'env, M>) -> Result<Vec<ScopedSource<'env, S>>, FlowError>
        + Send
        + 'env,
>;

/// The fused mapper operations of a lane: a batch in, every item they make handed to `out`,
/// in order. Items pass from one operation to the next one at a time, with no `Vec` between
/// two operations (a `flat_map` before a combiner makes no vector of words).
pub(crate) type Chain<'env, S, T> = Arc<dyn Fn(Vec<S>, &mut dyn FnMut(T)) + Send + Sync + 'env>;

/// What the last operation of a lane may hold from batch to batch (a combiner's counts),
/// handed to `out` when the lane's turn ends.
pub(crate) type Flush<'env, T> = Arc<dyn Fn(&mut dyn FnMut(T)) + Send + Sync + 'env>;

/// What a lane does with a batch: its operations, or none (the items go on as they are; `S`
/// is `T`, and the function says so to the compiler). Operations may hold events back from
/// batch to batch until [`Ops::flush`].
pub(crate) enum Ops<'env, S, T> {
    Same(fn(Vec<S>) -> Vec<T>),
    Chain(Chain<'env, S, T>, Option<Flush<'env, T>>),
}

impl<S, T> Clone for Ops<'_, S, T> {
    fn clone(&self) -> Self {
        match self {
            Ops::Same(f) => Ops::Same(*f),
            Ops::Chain(c, flush) => Ops::Chain(c.clone(), flush.clone()),
        }
    }
}

impl<S, T> Ops<'_, S, T> {
    /// Runs the operations on `batch` and emits what they make; returns how many events.
    /// `last` is how many the lane's previous batch made: the room reserved for this one.
    pub(crate) fn emit<M>(
        &self,
        batch: Vec<S>,
        last: &mut usize,
        ctx: &mut Context<'_, T, M>,
    ) -> usize {
        match self {
            Ops::Same(same) => {
                let out = same(batch);
                let n = out.len();
                ctx.emit_all(out);
                n
            }
            Ops::Chain(chain, _) => {
                ctx.reserve(*last);
                let mut n = 0;
                chain(batch, &mut |t| {
                    n += 1;
                    ctx.emit(t);
                });
                *last = n;
                n
            }
        }
    }
}

impl<S, T> Ops<'_, S, T> {
    /// Emits what the operations held back; returns how many events. A lane calls it at the
    /// end of every turn (every callback), so nothing is held while it waits.
    pub(crate) fn flush<M>(&self, ctx: &mut Context<'_, T, M>) -> usize {
        let Ops::Chain(_, Some(flush)) = self else {
            return 0;
        };
        let mut n = 0;
        flush(&mut |t| {
            n += 1;
            ctx.emit(t);
        });
        n
    }
}

/// A mapper stage: every operation between two partitions, fused.
pub(crate) struct Lane<'env, S, T> {
    pub(crate) ops: Ops<'env, S, T>,
    /// Events the last batch made.
    pub(crate) last: usize,
}

impl<S: Send, T: Send> ProducerConsumer for Lane<'_, S, T> {
    type In = S;
    type Out = T;
    type Message = ();

    fn handle_events(&mut self, events: Events<'_, S>, ctx: &mut Context<'_, T>) {
        let batch: Vec<S> = events.collect();
        self.ops.emit(batch, &mut self.last, ctx);
        self.ops.flush(ctx);
    }
}

/// Subscribe options checked up front: a bad demand is an invalid flow option.
pub(crate) fn checked(options: SubscribeOptions) -> Result<SubscribeOptions, FlowError> {
    options.validate().map_err(|e| match e {
        SubscribeError::InvalidOption { option, message } => {
            FlowError::InvalidOption { option, message }
        }
        e => FlowError::Subscribe(e),
    })?;
    Ok(options)
}

/// The default of [`Flow::end_wait`](super::Flow::end_wait).
pub(crate) const END_WAIT: Duration = Duration::from_secs(10);

/// Joins the stages after the output ended: every stage should end by itself within
/// `wait`; a stage that did not is stopped, and the first abnormal end is the error.
pub(crate) fn settle(started: &Started<'_>, wait: Duration) -> Result<(), FlowError> {
    let outcomes = started.join_timeout(wait);
    let hung = outcomes.iter().any(|(_, r)| r.is_none());
    if hung {
        started.stop();
    }
    let outcomes = started.join();
    let first = outcomes
        .iter()
        .find(|(_, r)| !matches!(r, Reason::Normal | Reason::Shutdown))
        .or_else(|| outcomes.iter().find(|(_, r)| *r != Reason::Normal));
    match first {
        Some((stage, reason)) => Err(FlowError::Failed {
            stage: stage.clone(),
            reason: reason.clone(),
        }),
        None => Ok(()),
    }
}

/// One stream of every output stage in `outs`, the first subscribed by `first` (which makes
/// the stream), the others added to it; none if there are none.
pub(crate) fn stream_of<'s, 'env, T: Send + 'env>(
    outs: &[ScopedSource<'env, T>],
    options: &SubscribeOptions,
    first: impl FnOnce(&ScopedSource<'env, T>) -> Result<ScopedStream<'s, 'env, T>, SubscribeError>,
) -> Result<Option<ScopedStream<'s, 'env, T>>, SubscribeError> {
    let Some((head, rest)) = outs.split_first() else {
        return Ok(None);
    };
    let mut stream = first(head)?;
    for o in rest {
        stream.subscribe_to(o, options.clone())?;
    }
    Ok(Some(stream))
}

/// A running flow's output, consumed on the calling thread as a blocking iterator. Made by
/// [`Flow::stream`](super::Flow::stream).
///
/// It ends when every output stage has ended. Dropping it stops the flow's stages.
pub type FlowStream<T> = ScopedFlowStream<'static, 'static, T>;

/// A [`FlowStream`] of a flow running in a [`std::thread::scope`], read on the scope's own
/// thread; its items may borrow what lives for `'env`. Made by
/// [`ScopedFlow::stream_in`](super::ScopedFlow::stream_in). Like a
/// [`ScopedStream`](crate::ScopedStream), it cannot leave its scope.
///
/// It ends when every output stage has ended. Dropping it stops the flow's stages.
pub struct ScopedFlowStream<'scope, 'env, T: Send> {
    pub(crate) stream: Option<ScopedStream<'scope, 'env, T>>,
    pub(crate) started: Started<'env>,
    /// How long [`finish`](ScopedFlowStream::finish) waits for the stages to end.
    pub(crate) end_wait: Duration,
}

impl<T: Send + 'static> FlowStream<T> {
    /// The flow's stages (sources it started, mappers, reducers, departition), to read their
    /// [`Counters`](crate::Counters) or stop them.
    pub fn stages(&self) -> &[StageRef] {
        self.started.topology().stages()
    }
}

impl<'env, T: Send + 'env> ScopedFlowStream<'_, 'env, T> {
    /// Reads what is left, then waits for every stage to end: at most the flow's
    /// [`end_wait`](super::Flow::end_wait), after which the stages still running are stopped.
    ///
    /// # Errors
    ///
    /// [`FlowError::Failed`] naming the first stage that ended abnormally (a callback that
    /// panicked, say, or a stage stopped after the wait); the others are stopped.
    pub fn finish(mut self) -> Result<(), FlowError> {
        if let Some(stream) = &mut self.stream {
            stream.for_each(drop);
        }
        drop(self.stream.take());
        settle(&self.started, self.end_wait)
    }
}

impl<'env, T: Send + 'env> Iterator for ScopedFlowStream<'_, 'env, T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        self.stream.as_mut()?.next()
    }
}

impl<T: Send> fmt::Debug for ScopedFlowStream<'_, '_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FlowStream")
            .field("stages", &self.started.len())
            .finish()
    }
}

/// A flow running on its own, into consumer stages: a [`Topology`] you stop or join. Made by
/// [`Flow::start`](super::Flow::start) and [`Flow::into_consumer`](super::Flow::into_consumer).
/// Dropping it stops the flow.
#[derive(Debug)]
pub struct RunningFlow {
    pub(crate) started: Started<'static>,
}

impl RunningFlow {
    /// The flow's stages, its consumer last.
    pub fn stages(&self) -> &[StageRef] {
        self.started.topology().stages()
    }

    /// The flow's stages as a topology.
    pub fn topology(&self) -> &Topology {
        self.started.topology()
    }

    /// Asks every stage to stop, without waiting. What the stages hold is discarded (and
    /// counted); windows still open are not emitted.
    pub fn stop(&self) {
        self.started.stop();
    }

    /// Ends the flow gracefully ([`Topology::drain`]): the sources stop producing as if their
    /// input had run out, every event in flight reaches the end, and the reducers emit their
    /// open windows ([`Fired::Done`](super::Fired::Done)) before the consumers end. Stages
    /// still running after `timeout` are stopped; the report names them.
    pub fn drain(&self, timeout: Duration) -> crate::DrainReport {
        self.started.topology().drain(timeout)
    }

    /// Waits until every stage has ended: the input ended, or the flow was
    /// [stopped](RunningFlow::stop) (both are normal ends).
    ///
    /// # Errors
    ///
    /// [`FlowError::Failed`] naming the first stage that failed (a callback panicked, say).
    pub fn join(self) -> Result<(), FlowError> {
        let outcomes = self.started.join();
        match outcomes.into_iter().find(|(_, r)| !r.is_normal()) {
            Some((stage, reason)) => Err(FlowError::Failed { stage, reason }),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::fns::Generate;

    #[test]
    fn settling_stops_a_stage_that_does_not_end_within_the_wait() {
        // A producer that never emits nor finishes, with no consumer: it runs until stopped.
        let idle = crate::producer(Generate::new(|_: usize, _: &mut Context<'_, u64>| {}))
            .name("idle")
            .spawn()
            .unwrap();
        let mut b: Build<'_, 'static, Unscoped> = Build::new("flow", Unscoped);
        b.add(&idle);
        let started = Instant::now();
        match settle(&b.started, Duration::from_millis(20)) {
            Err(FlowError::Failed { stage, reason }) => {
                assert_eq!((stage.as_str(), reason), ("idle", Reason::Shutdown));
            }
            other => panic!("expected the idle stage stopped, got {other:?}"),
        }
        // Stopped after the wait asked for, not the default's 10 s (5 s of slack for a loaded
        // machine).
        assert!(started.elapsed() < END_WAIT / 2, "{:?}", started.elapsed());
    }
}
