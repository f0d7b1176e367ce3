//! [`ChildSpec`]: how to start a child of a group, again and again: a factory of its
//! [`StageBuilder`], its [`RestartPolicy`], and what it subscribes to.

use std::fmt;
use std::sync::Arc;

use super::policy::RestartPolicy;
use super::source::{ChildUpstream, CurrentSource};
use crate::role::{ConsumerRole, Consumes, ProducerConsumerRole, ProducerRole, Role};
use crate::{
    BuildError, CancelMode, Consumer, Producer, ProducerConsumer, Stage, StageBuilder,
    SubscribeError, SubscribeOptions, SubscriptionId, Upstream,
};

/// The roles a child can play (all three): how to start a stage of that role from its
/// builder. Sealed by [`Role`].
pub trait Spawn<S>: Role<S> + Sized {
    /// Starts the stage ([`StageBuilder::spawn`] of that role).
    ///
    /// # Errors
    ///
    /// As the role's `spawn`.
    fn spawn(builder: StageBuilder<S, Self>) -> Result<Stage<S, Self>, BuildError>;
}

impl<S: Producer> Spawn<S> for ProducerRole {
    fn spawn(builder: StageBuilder<S, Self>) -> Result<Stage<S, Self>, BuildError> {
        builder.spawn()
    }
}

impl<S: ProducerConsumer> Spawn<S> for ProducerConsumerRole {
    fn spawn(builder: StageBuilder<S, Self>) -> Result<Stage<S, Self>, BuildError> {
        builder.spawn()
    }
}

impl<S: Consumer> Spawn<S> for ConsumerRole {
    fn spawn(builder: StageBuilder<S, Self>) -> Result<Stage<S, Self>, BuildError> {
        builder.spawn()
    }
}

/// Makes a child's builder, for each incarnation.
pub(crate) type Factory<S, R> = Box<dyn FnMut() -> StageBuilder<S, R> + Send>;

/// One subscription of a child, made again by each incarnation.
pub(crate) struct Link<S: 'static, R: Role<S>> {
    /// The in-group producer's child id; `None` for a producer outside the group.
    pub(crate) producer: Option<u64>,
    /// The cancel mode the user gave (in the group, the subscription itself is temporary).
    pub(crate) mode: CancelMode,
    /// Subscribes a builder to the producer's current incarnation, if it runs.
    pub(crate) at_build: LinkBuild<S, R>,
    /// Subscribes a running incarnation to the producer's current incarnation.
    pub(crate) running: LinkRun<S, R>,
}

pub(crate) type LinkBuild<S, R> =
    Box<dyn Fn(StageBuilder<S, R>) -> Result<StageBuilder<S, R>, SubscribeError> + Send + Sync>;
pub(crate) type LinkRun<S, R> =
    Box<dyn Fn(&Stage<S, R>) -> Option<Result<SubscriptionId, SubscribeError>> + Send + Sync>;

/// How to start a child of a [`Group`](super::Group), and start it again: a factory that makes
/// its [`StageBuilder`] (with its fresh state and options), its [`RestartPolicy`], and its
/// subscriptions.
///
/// The group names the stage (every incarnation has the child's name) and makes the
/// subscriptions given here; the factory should not call `subscribe_to` itself.
///
/// # Examples
///
/// ```
/// use stageflow::fns::ForEach;
/// use stageflow::supervise::{self, ChildSpec, RestartPolicy};
/// use stageflow::SubscribeOptions;
///
/// let mut group = supervise::group("numbers");
/// let source = group.add(
///     ChildSpec::new("source", || stageflow::from_iter(0..100u64)).restart(RestartPolicy::Transient),
/// );
/// let sink = group.add(
///     ChildSpec::new("sink", || stageflow::consumer(ForEach::new(|_: u64| {})))
///         .subscribe_to(&source, SubscribeOptions::new())?,
/// );
/// let group = group.start()?;
/// // The source finishes (transient: not restarted); the group then finishes the sink.
/// assert_eq!(group.join(), stageflow::Reason::Normal);
/// assert_eq!(sink.counters().events_in, 100);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct ChildSpec<S: 'static, R: Role<S>> {
    pub(crate) name: String,
    pub(crate) factory: Factory<S, R>,
    pub(crate) policy: RestartPolicy,
    pub(crate) links: Vec<Link<S, R>>,
}

impl<S, R: Role<S>> fmt::Debug for ChildSpec<S, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChildSpec")
            .field("name", &self.name)
            .field("policy", &self.policy)
            .field("subscriptions", &self.links.len())
            .finish_non_exhaustive()
    }
}

impl<S, R: Role<S>> ChildSpec<S, R> {
    /// A child named `name` (its stages' name), whose every incarnation is started from the
    /// builder `factory` makes: a fresh state each time.
    pub fn new(
        name: impl Into<String>,
        factory: impl FnMut() -> StageBuilder<S, R> + Send + 'static,
    ) -> ChildSpec<S, R> {
        ChildSpec {
            name: name.into(),
            factory: Box::new(factory),
            policy: RestartPolicy::Permanent,
            links: Vec::new(),
        }
    }

    /// When the child is started again after it ends by itself. Defaults to
    /// [`RestartPolicy::Permanent`].
    pub fn restart(mut self, policy: RestartPolicy) -> ChildSpec<S, R> {
        self.policy = policy;
        self
    }
}

impl<S, R: Consumes<S>> ChildSpec<S, R> {
    /// Subscribes every incarnation of this child to the current incarnation of `producer`,
    /// a child of the same group added before this one (its [`Child`](super::Child) handle,
    /// or its [`ChildSource`](super::ChildSource)). When `producer` restarts, this
    /// child's running incarnation subscribes to the new one.
    ///
    /// In the group the subscription is made *temporary*, so that a producer's crash does not
    /// end this child; the group applies `options`' cancel mode itself, for good ends only:
    /// once every producer this child subscribes to with a permanent or transient mode has
    /// ended and will not be restarted, the group finishes this child
    /// ([`Stage::finish`]), so a finite pipeline still ends from its sources to its sinks.
    ///
    /// A running incarnation subscribes to a restarted producer through
    /// [`Stage::subscribe_to`], which waits up to `options`' [timeout](SubscribeOptions::timeout)
    /// for the subscription to be made: one that is stuck in a callback for longer stays
    /// without that subscription (the group logs it at warn level) until it or the producer
    /// is restarted again.
    ///
    /// # Errors
    ///
    /// [`SubscribeError::InvalidOption`] naming a bad option.
    pub fn subscribe_to(
        mut self,
        producer: &(impl ChildUpstream<R::In> + ?Sized),
        options: SubscribeOptions,
    ) -> Result<ChildSpec<S, R>, SubscribeError> {
        options.validate()?;
        let mode = options.get_cancel();
        let options = options.cancel(CancelMode::Temporary);
        let producer = producer.child_source();
        self.links
            .push(link(Some(producer.id), mode, producer.current, options));
        Ok(self)
    }

    /// Subscribes every incarnation of this child to `producer`, a stage outside the group,
    /// with `options` as given (the cancel mode applies as usual: a permanent subscription to
    /// a producer that ends ends this child, which the group then restarts by its policy).
    ///
    /// # Errors
    ///
    /// [`SubscribeError::InvalidOption`] naming a bad option.
    pub fn subscribe_to_stage(
        mut self,
        producer: &(impl Upstream<'static, R::In> + ?Sized),
        options: SubscribeOptions,
    ) -> Result<ChildSpec<S, R>, SubscribeError> {
        options.validate()?;
        let source = producer.source();
        let current: CurrentSource<R::In> = Arc::new(move || Some(source.clone()));
        let mode = options.get_cancel();
        self.links.push(link(None, mode, current, options));
        Ok(self)
    }
}

fn link<S, R: Consumes<S>>(
    producer: Option<u64>,
    mode: CancelMode,
    current: CurrentSource<R::In>,
    options: SubscribeOptions,
) -> Link<S, R> {
    let (c, o) = (current.clone(), options.clone());
    Link {
        producer,
        mode,
        at_build: Box::new(move |builder| match c() {
            Some(source) => builder.subscribe_to(&source, o.clone()),
            None => Ok(builder),
        }),
        running: Box::new(move |stage| {
            current().map(|source| stage.subscribe_to(&source, options.clone()))
        }),
    }
}
