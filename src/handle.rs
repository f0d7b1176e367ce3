//! Handles on running stages: [`Stage`], typed by the user's stage and its role, and
//! [`StageRef`], untyped, for joining and stopping. What a consumer subscribes to, and the
//! subscribe request, are in `upstream`.

use std::convert::Infallible;
use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{bounded, RecvTimeoutError, SendTimeoutError, TrySendError};

use crate::context::Reply;
use crate::envelope::{Control, Counted, Down, Envelope, Port, Wrap};
use crate::error::{CallError, CastError, ControlError, JoinError, SubscribeError};
use crate::reason::Reason;
use crate::shared::{Counters, Shared, StageKind};
use crate::stage::{Consumer, Producer, ProducerConsumer};
use crate::stage_result::StageResult;
use crate::subscription::{ProducerDemand, SubscribeOptions, SubscriptionId};
use crate::timing::StageTiming;
use crate::upstream::{Request, Upstream};

mod sealed {
    pub trait Sealed {}
}

/// The role a stage plays, which fixes the types its handle works with. Implemented by
/// [`ProducerRole`], [`ProducerConsumerRole`] and [`ConsumerRole`] only.
pub trait Role<S>: sealed::Sealed + Send + Sync + 'static {
    /// The events the stage consumes (none for a producer).
    type In: Send;
    /// The events the stage emits (none for a consumer).
    type Out: Send;
    /// The stage's own messages.
    type Message: Send;
}

/// Roles whose stages emit events: producers and producer-consumers.
pub trait Emits<S>: Role<S> {}

/// Roles whose stages consume events: producer-consumers and consumers.
pub trait Consumes<S>: Role<S> {}

/// The role of a [`Producer`].
#[derive(Debug)]
pub struct ProducerRole;
/// The role of a [`ProducerConsumer`].
#[derive(Debug)]
pub struct ProducerConsumerRole;
/// The role of a [`Consumer`].
#[derive(Debug)]
pub struct ConsumerRole;

impl sealed::Sealed for ProducerRole {}
impl sealed::Sealed for ProducerConsumerRole {}
impl sealed::Sealed for ConsumerRole {}

impl<S: Producer> Role<S> for ProducerRole {
    type In = Infallible;
    type Out = S::Out;
    type Message = S::Message;
}
impl<S: ProducerConsumer> Role<S> for ProducerConsumerRole {
    type In = S::In;
    type Out = S::Out;
    type Message = S::Message;
}
impl<S: Consumer> Role<S> for ConsumerRole {
    type In = S::In;
    type Out = Infallible;
    type Message = S::Message;
}
impl<S: Producer> Emits<S> for ProducerRole {}
impl<S: ProducerConsumer> Emits<S> for ProducerConsumerRole {}
impl<S: ProducerConsumer> Consumes<S> for ProducerConsumerRole {}
impl<S: Consumer> Consumes<S> for ConsumerRole {}

/// A running producer.
pub type ProducerHandle<S> = Stage<S, ProducerRole>;
/// A running producer-consumer.
pub type ProducerConsumerHandle<S> = Stage<S, ProducerConsumerRole>;
/// A running consumer.
pub type ConsumerHandle<S> = Stage<S, ConsumerRole>;

type Inbox<'e, S, R> =
    Counted<Envelope<'e, <R as Role<S>>::In, <R as Role<S>>::Out, <R as Role<S>>::Message>>;

/// Where a stage built with [`keep_state`](crate::StageBuilder::keep_state) leaves its value
/// as it ends, for [`Stage::join_state`] to take.
pub(crate) type Kept<S> = Arc<parking_lot::Mutex<Option<S>>>;

/// A handle on a running stage, in role `R`, whose callbacks are those of `S`: a stage
/// started with [`spawn`](crate::StageBuilder::spawn), whose events and messages live for
/// `'static`. Its methods are [`ScopedStage`]'s.
pub type Stage<S, R> = ScopedStage<'static, S, R>;

/// A handle on a running stage whose callbacks are those of `S`, in role `R`.
///
/// Cloning a handle is cheap; every clone reaches the same stage. Dropping handles does not
/// stop the stage: a stage runs until it finishes, fails, is stopped, or can no longer be
/// reached (no handle and no subscription left), and then its thread ends by itself.
/// [`Topology`](crate::Topology) stops its stages when dropped.
///
/// `'env` is how long the stage's events and messages may live: `'static` (the [`Stage`]
/// alias) for a stage started with [`spawn`](crate::StageBuilder::spawn), the scope's for
/// one started with [`spawn_scoped`](crate::ScopedBuilder::spawn_scoped).
pub struct ScopedStage<'env, S: 'env, R: Role<S>> {
    core: StageCore<Inbox<'env, S, R>>,
    kept: Kept<S>,
    _stage: PhantomData<fn() -> S>,
}

impl<S, R: Role<S>> Clone for ScopedStage<'_, S, R> {
    fn clone(&self) -> Self {
        ScopedStage {
            core: self.core.clone(),
            kept: self.kept.clone(),
            _stage: PhantomData,
        }
    }
}

impl<S, R: Role<S>> fmt::Debug for ScopedStage<'_, S, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stage")
            .field("name", &self.shared().name)
            .field("outcome", &self.shared().outcome())
            .finish()
    }
}

impl<'env, S, R: Role<S>> ScopedStage<'env, S, R> {
    pub(crate) fn new(
        shared: Arc<Shared>,
        tx: Inbox<'env, S, R>,
        kept: Kept<S>,
    ) -> ScopedStage<'env, S, R> {
        ScopedStage {
            core: StageCore { shared, port: tx },
            kept,
            _stage: PhantomData,
        }
    }

    /// The state the stage shares with its handles.
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.core.shared
    }

    /// The stage's inbox, whose control path never waits behind events.
    pub(crate) fn tx(&self) -> &Inbox<'env, S, R> {
        &self.core.port
    }

    /// Sends `c` on the stage's control path.
    fn control(&self, c: Control) -> Result<(), ControlError> {
        self.tx()
            .urgent(Envelope::Control(c))
            .map_err(|_| ControlError::Stopped {
                stage: self.name().to_owned(),
            })
    }

    /// The stage's name (also its thread's name).
    pub fn name(&self) -> &str {
        self.core.name()
    }

    /// A snapshot of the stage's counters.
    pub fn counters(&self) -> Counters {
        self.core.counters()
    }

    /// Time the stage spent in its callbacks (histograms per callback and per event) and
    /// waiting for input or for demand, since it started; see [`StageTiming`]. Reads atomics
    /// the stage writes: never waits, never touches the stage.
    pub fn timing(&self) -> StageTiming {
        self.core.timing()
    }

    /// Whether the stage is a producer, a producer-consumer or a consumer.
    pub fn kind(&self) -> StageKind {
        self.core.kind()
    }

    /// How many messages wait in the stage's inbox now (a batch of events is one message, as
    /// are casts and calls; control has a path of its own and is not counted). Reads the
    /// channel's length: never waits, never touches the stage. Observers compare it with
    /// [`inbox_capacity`](Self::inbox_capacity): a full inbox is a stage that cannot keep up.
    pub fn inbox_len(&self) -> usize {
        self.tx().sender().len()
    }

    /// The capacity of the stage's inbox, in messages (see
    /// [`StageBuilder::inbox_capacity`](crate::StageBuilder::inbox_capacity)).
    pub fn inbox_capacity(&self) -> usize {
        self.tx().sender().capacity().unwrap_or(usize::MAX)
    }

    /// Asks the stage to stop. It stops after the callback it is running, if any, returns
    /// (a blocking callback can watch [`Context::is_stop_requested`](crate::Context::is_stop_requested)),
    /// ends with [`Reason::Shutdown`], and its consumers react by their cancel mode. Events it
    /// still buffered are discarded (counted and logged). Does not wait; see
    /// [`Stage::join`].
    pub fn stop(&self) {
        self.core.stop();
    }

    /// Asks the stage to finish gracefully, as if its input had run out: nothing it holds is
    /// lost. Does not wait; see [`Stage::join`], or [`Topology::drain`](crate::Topology::drain)
    /// for a whole pipeline.
    ///
    /// - A **producer** is not asked for events again (`handle_demand` is no longer called,
    ///   as after [`Context::finish`](crate::Context::finish)); it delivers what it buffered
    ///   to the demand its consumers give, then ends with [`Reason::Normal`].
    /// - A **consumer** or **producer-consumer** keeps handling (and asking for) events until
    ///   every producer it subscribes to has ended, whatever the subscriptions' cancel modes;
    ///   then it ends normally (a producer-consumer first delivers what it holds). With no
    ///   producer, it ends as soon as its inbox is empty: messages cast to it before are
    ///   handled first.
    ///
    /// Finishing every stage of a pipeline at once therefore drains it from its sources to its
    /// sinks. Handled on the control path, like [`Stage::stop`]: it never waits behind events.
    ///
    /// A producer that drives itself with zero-delay timers (one read per turn) must stop
    /// scheduling them once [`Context::is_finishing`](crate::Context::is_finishing) is true:
    /// a timer that is always due keeps the stage from ending.
    pub fn finish(&self) {
        self.core.finish();
    }

    /// Waits until the stage has ended and its thread has exited; returns how it ended.
    ///
    /// Calling it from the stage's own callbacks deadlocks.
    pub fn join(&self) -> Reason {
        self.core.join()
    }

    /// Like [`Stage::join`], but gives up after `timeout` and returns `None`.
    pub fn join_timeout(&self, timeout: Duration) -> Option<Reason> {
        self.core.join_timeout(timeout)
    }

    /// Waits until the stage has ended, like [`Stage::join`], and hands back the stage's value
    /// as it was at the end (after its `terminate`), if it was built with
    /// [`keep_state`](crate::StageBuilder::keep_state). `None` without it, or when another
    /// handle took the value already: there is one value, so only the first call gets it.
    pub fn join_state(&self) -> (Reason, Option<S>) {
        let reason = self.join();
        let state = self.kept.lock().take();
        (reason, state)
    }

    /// Waits until the stage has ended and hands back its result: the one call that gets a
    /// sink's sum, collection or model out, where [`join_state`](Stage::join_state) gives the
    /// stage's value and how it ended, to look into. The stage must be built with
    /// [`keep_state`](crate::StageBuilder::keep_state) and its type implement
    /// [`StageResult`](crate::StageResult), as [`Fold`](crate::fns::Fold) (its accumulator)
    /// and [`Collect`](crate::fns::Collect) (its `Vec`) do.
    ///
    /// A result is handed back only from a stage that finished normally ([`Reason::Normal`]:
    /// its input ran out, or it was [finished](Stage::finish) or drained); one that was
    /// stopped, failed or panicked may hold a partial result, and that is an error, never a
    /// partial result taken for a whole one, nor a panic. On an error the value, if kept, is
    /// left with the stage for [`join_state`](Stage::join_state). There is one value, so only
    /// the first call gets it.
    ///
    /// Calling it from the stage's own callbacks deadlocks, as [`join`](Stage::join) does.
    ///
    /// # Errors
    ///
    /// [`JoinError::Panicked`](crate::JoinError::Panicked) with the panic message;
    /// [`JoinError::Ended`](crate::JoinError::Ended) with the reason, for a stage stopped or
    /// ended by an error; [`JoinError::NoResult`](crate::JoinError::NoResult) for a stage
    /// built without `keep_state`, whose value another call took, or that holds no result.
    ///
    /// # Examples
    ///
    /// ```
    /// use stageflow::fns::Fold;
    /// use stageflow::SubscribeOptions;
    ///
    /// let numbers = stageflow::from_iter(1..=100u64).spawn()?;
    /// let sum = stageflow::consumer(Fold::new(0u64, |sum, x: u64| sum + x))
    ///     .keep_state()
    ///     .subscribe_to(&numbers, SubscribeOptions::new())?
    ///     .spawn()?;
    /// assert_eq!(sum.join_result()?, 5050);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn join_result(&self) -> Result<S::Output, JoinError>
    where
        S: StageResult,
    {
        let stage = || self.name().to_owned();
        match self.join() {
            Reason::Normal => {}
            Reason::Panicked(message) => {
                return Err(JoinError::Panicked {
                    stage: stage(),
                    message,
                })
            }
            reason => {
                return Err(JoinError::Ended {
                    stage: stage(),
                    reason,
                })
            }
        }
        let state = self.kept.lock().take();
        state
            .and_then(StageResult::into_output)
            .ok_or_else(|| JoinError::NoResult { stage: stage() })
    }

    /// How the stage ended, or `None` while it runs.
    pub fn outcome(&self) -> Option<Reason> {
        self.core.outcome()
    }

    /// Whether the stage has ended.
    pub fn is_finished(&self) -> bool {
        self.core.is_finished()
    }

    /// Sends `msg` to the stage's `handle_message`, waiting while its inbox is full.
    ///
    /// The inbox is shared with the stage's producers and consumers, so while events keep it
    /// full this can wait as long as the traffic lasts: use [`Stage::try_cast`] or
    /// [`Stage::cast_timeout`] where that matters. (Control — [`Stage::stop`],
    /// [`Stage::cancel`], [`Stage::ask`], subscribing — takes a separate path and never waits
    /// behind events.)
    ///
    /// # Errors
    ///
    /// [`CastError::Stopped`] with the message if the stage has ended.
    pub fn cast(&self, msg: R::Message) -> Result<(), CastError<R::Message>> {
        send_waiting(
            self.tx().sender(),
            self.shared(),
            Envelope::Message(msg),
            None,
        )
        .map_err(|e| match e {
            SendTimeoutError::Timeout(Envelope::Message(m)) => CastError::Full(m),
            SendTimeoutError::Disconnected(Envelope::Message(m)) => CastError::Stopped(m),
            _ => unreachable!(),
        })
    }

    /// Like [`Stage::cast`], without waiting: fails with [`CastError::Full`] if the inbox is
    /// full. Prefer it when casting from another stage's callback.
    ///
    /// # Errors
    ///
    /// [`CastError::Full`] or [`CastError::Stopped`], with the message.
    pub fn try_cast(&self, msg: R::Message) -> Result<(), CastError<R::Message>> {
        self.tx()
            .sender()
            .try_send(Envelope::Message(msg))
            .map_err(|e| match e {
                TrySendError::Full(Envelope::Message(m)) => CastError::Full(m),
                TrySendError::Disconnected(Envelope::Message(m)) => CastError::Stopped(m),
                _ => unreachable!(),
            })
    }

    /// Like [`Stage::cast`], but waits at most `timeout` for room in the inbox.
    ///
    /// # Errors
    ///
    /// [`CastError::Full`] if the time ran out, [`CastError::Stopped`] if the stage has ended;
    /// both hand the message back.
    pub fn cast_timeout(
        &self,
        msg: R::Message,
        timeout: Duration,
    ) -> Result<(), CastError<R::Message>> {
        let deadline = Some(crate::timer::deadline(timeout));
        send_waiting(
            self.tx().sender(),
            self.shared(),
            Envelope::Message(msg),
            deadline,
        )
        .map_err(|e| match e {
            SendTimeoutError::Timeout(Envelope::Message(m)) => CastError::Full(m),
            SendTimeoutError::Disconnected(Envelope::Message(m)) => CastError::Stopped(m),
            _ => unreachable!(),
        })
    }

    /// Sends the message that `make` builds around a [`Reply`] and waits up to `timeout` for
    /// the reply. Events the stage emits while handling it reach its consumers before the reply
    /// if it replies with [`Context::reply`](crate::Context::reply).
    ///
    /// # Errors
    ///
    /// [`CallError::Stopped`] if the stage has ended or ends before replying,
    /// [`CallError::Timeout`] if `timeout` passes, [`CallError::NoReply`] if the stage dropped
    /// the reply.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use stageflow::{Context, Producer, Reply};
    ///
    /// struct Numbers;
    /// enum Msg {
    ///     Emit(Vec<u32>, Reply<usize>),
    /// }
    ///
    /// impl Producer for Numbers {
    ///     type Out = u32;
    ///     type Message = Msg;
    ///     fn handle_demand(&mut self, _: usize, _: &mut Context<'_, u32, Msg>) {}
    ///     fn handle_message(&mut self, msg: Msg, ctx: &mut Context<'_, u32, Msg>) {
    ///         let Msg::Emit(events, reply) = msg;
    ///         let n = events.len();
    ///         ctx.emit_all(events);
    ///         ctx.reply(reply, n);
    ///     }
    /// }
    ///
    /// let producer = stageflow::producer(Numbers).spawn().unwrap();
    /// let n = producer
    ///     .call(|reply| Msg::Emit(vec![1, 2, 3], reply), Duration::from_secs(5))
    ///     .unwrap();
    /// assert_eq!(n, 3);
    /// assert_eq!(producer.counters().buffered, 3); // no consumer yet
    /// producer.stop();
    /// producer.join();
    /// ```
    pub fn call<T>(
        &self,
        make: impl FnOnce(Reply<T>) -> R::Message,
        timeout: Duration,
    ) -> Result<T, CallError> {
        let deadline = crate::timer::deadline(timeout);
        let (tx, rx) = bounded(1);
        let msg = make(Reply::new(tx));
        match send_waiting(
            self.tx().sender(),
            self.shared(),
            Envelope::Message(msg),
            Some(deadline),
        ) {
            Ok(()) => {}
            Err(SendTimeoutError::Timeout(_)) => return Err(CallError::Timeout),
            Err(SendTimeoutError::Disconnected(_)) => return Err(CallError::Stopped),
        }
        // Wait for the reply or for the stage to end, whichever comes first: a message that
        // reached the stage after its last look at the inbox is never answered.
        match self.shared().recv_unless_ended(&rx, deadline) {
            Err(()) => Err(CallError::Timeout),
            Ok(Some(result)) => result,
            Ok(None) => {
                if self.shared().outcome().is_some()
                    || self.shared().stop_requested.load(Ordering::Relaxed)
                {
                    Err(CallError::Stopped)
                } else {
                    Err(CallError::NoReply)
                }
            }
        }
    }

    /// Sends `msg` to `handle_message` once every event the stage has buffered so far has
    /// left the buffer, dispatched or discarded (GenStage's `async_info`); at once if nothing
    /// is buffered. Like [`Stage::cast`], it waits while the inbox is full (which lasts as long
    /// as traffic keeps it full).
    ///
    /// # Errors
    ///
    /// [`CastError::Stopped`] with the message if the stage has ended.
    pub fn info(&self, msg: R::Message) -> Result<(), CastError<R::Message>> {
        send_waiting(self.tx().sender(), self.shared(), Envelope::Info(msg), None).map_err(|e| {
            match e {
                SendTimeoutError::Timeout(Envelope::Info(m)) => CastError::Full(m),
                SendTimeoutError::Disconnected(Envelope::Info(m)) => CastError::Stopped(m),
                _ => unreachable!(),
            }
        })
    }
}

impl<'env, S, R: Consumes<S>> ScopedStage<'env, S, R> {
    /// Subscribes this running stage to `producer` and waits for the producer to confirm.
    /// Returns the new subscription's id.
    ///
    /// # Errors
    ///
    /// [`SubscribeError::InvalidOption`] for bad options (nothing is sent), and the other
    /// variants when the producer or this stage has ended, refuses, or does not answer within
    /// [`SubscribeOptions::timeout`]. A subscribe that fails leaves nothing behind: if the
    /// producer accepted it just as the time ran out, this stage cancels it when it arrives,
    /// quietly (its cancel mode does not apply).
    ///
    /// The request goes through this stage (as GenStage's `sync_subscribe` is a call to the
    /// consumer), which passes it on between two callbacks: the timeout covers that too, so a
    /// stage busy in a callback for longer than the timeout fails the subscribe. From then on
    /// the stage holds the subscription, first as pending: a [`Stage::cancel`] or
    /// [`Stage::ask`] with the returned id takes effect even if the producer's confirmation has
    /// not reached the stage yet, and a cancel made before this subscribe (say, of an earlier
    /// subscription to the same broadcasting producer) reaches the producer before it.
    /// Normally it returns once both sides hold the subscription (this stage has run its
    /// `handle_subscribe`). Called from this stage's own callback it cannot see its request
    /// passed on, and fails after the subscribe timeout.
    pub fn subscribe_to(
        &self,
        producer: &(impl Upstream<'env, R::In> + ?Sized),
        options: SubscribeOptions,
    ) -> Result<SubscriptionId, SubscribeError> {
        let gone = || SubscribeError::ConsumerGone {
            consumer: self.shared().name.to_string(),
        };
        let (sub, waiting) = self.subscribe_nowait(producer, options)?;
        match waiting.answer() {
            Ok(pending) => pending.registered(),
            Err(e) => {
                // Leave nothing behind: the producer may have accepted it just as the time
                // ran out, so the stage cancels it if it arrives.
                let _ = self.tx().urgent(Envelope::Control(Control::Withdraw(sub)));
                match e {
                    SubscribeError::ProducerGone { .. } if self.is_finished() => Err(gone()),
                    e => Err(e),
                }
            }
        }
    }

    /// [`Stage::subscribe_to`] without the wait: the request is on its way through this
    /// stage, which holds it as pending; the caller waits on (or, in a simulation, which
    /// cannot wait, keeps: `sim::subscribe`) what the answer comes back on.
    pub(crate) fn subscribe_nowait(
        &self,
        producer: &(impl Upstream<'env, R::In> + ?Sized),
        options: SubscribeOptions,
    ) -> Result<(SubscriptionId, crate::upstream::Waiting), SubscribeError> {
        let gone = || SubscribeError::ConsumerGone {
            consumer: self.shared().name.to_string(),
        };
        if self.is_finished() {
            return Err(gone());
        }
        let request = Request::new(
            &producer.source(),
            Box::new(self.tx().clone()),
            self.shared(),
            options,
            true,
        )?;
        let (req, waiting) = request.split();
        let sub = req.sub;
        // Through this stage, so that it holds the subscription as pending before the
        // producer hears of it, and a cancel made before reaches the producer first.
        self.tx()
            .urgent(Envelope::Down(Down::Subscribe(req)))
            .map_err(|_| gone())?;
        Ok((sub, waiting))
    }

    /// Cancels subscription `old` with `reason` and subscribes to `producer` anew, in that
    /// order, as one request (GenStage's `sync_resubscribe`). The cancel takes effect as with
    /// [`Stage::cancel`], so if `old` is permanent this stage ends by its cancel mode; use a
    /// transient or temporary subscription for the one you replace.
    ///
    /// # Errors
    ///
    /// As [`Stage::subscribe_to`]; the cancel is sent in any case.
    pub fn resubscribe(
        &self,
        old: SubscriptionId,
        reason: Reason,
        producer: &(impl Upstream<'env, R::In> + ?Sized),
        options: SubscribeOptions,
    ) -> Result<SubscriptionId, SubscribeError> {
        options.validate()?;
        self.cancel(old, reason)
            .map_err(|_| SubscribeError::ConsumerGone {
                consumer: self.shared().name.to_string(),
            })?;
        self.subscribe_to(producer, options)
    }

    /// Cancels one of this stage's subscriptions with `reason`. The stage's `handle_cancel`
    /// runs once the producer confirms, and the stage then ends or not by the subscription's
    /// cancel mode (so a permanent subscription cancelled this way ends the stage, as in
    /// GenStage, once its other subscriptions have ended too if the reason is normal: use
    /// transient or temporary when you cancel on purpose). Never waits behind events.
    ///
    /// # Errors
    ///
    /// [`ControlError::Stopped`] if the stage has ended.
    pub fn cancel(&self, subscription: SubscriptionId, reason: Reason) -> Result<(), ControlError> {
        self.control(Control::Cancel {
            sub: subscription,
            reason,
        })
    }

    /// Asks for `n` more events on a subscription whose demand is manual (see
    /// [`DemandMode::Manual`](crate::DemandMode::Manual)). The events go to this stage.
    ///
    /// # Errors
    ///
    /// [`ControlError::Stopped`] if the stage has ended.
    pub fn ask(&self, subscription: SubscriptionId, n: usize) -> Result<(), ControlError> {
        if n == 0 {
            return Ok(());
        }
        self.control(Control::Ask {
            sub: subscription,
            n,
        })
    }
}

impl<S: Producer> ScopedStage<'_, S, ProducerRole> {
    /// Switches the producer between accumulating demand and forwarding it (GenStage's
    /// `demand/2`). Switching to [`ProducerDemand::Forward`] sends the events held back in the
    /// order they were emitted (those the buffer covered for the asks that came in, then the
    /// rest of the buffer, then those emitted while accumulating), and only then replays the
    /// accumulated demands one by one, never summed: the events `handle_demand` emits for them
    /// are newer than everything held. (GenStage replays demands and events as one list, so
    /// there a demand recorded before a cast lets newer events overtake the cast's.) Only
    /// producers have a demand mode, so this exists only on producer handles.
    ///
    /// # Errors
    ///
    /// [`ControlError::Stopped`] if the stage has ended.
    pub fn set_demand(&self, mode: ProducerDemand) -> Result<(), ControlError> {
        self.control(Control::SetDemand(mode))
    }

    /// The producer's demand mode.
    ///
    /// # Errors
    ///
    /// [`CallError::Stopped`] if the stage has ended, [`CallError::Timeout`] if it did not
    /// answer within `timeout`.
    pub fn demand(&self, timeout: Duration) -> Result<ProducerDemand, CallError> {
        let deadline = crate::timer::deadline(timeout);
        let (tx, rx) = bounded(1);
        if self
            .tx()
            .urgent(Envelope::Control(Control::GetDemand(tx)))
            .is_err()
        {
            return Err(CallError::Stopped);
        }
        rx.recv_deadline(deadline).map_err(|e| match e {
            RecvTimeoutError::Timeout => CallError::Timeout,
            RecvTimeoutError::Disconnected => CallError::Stopped,
        })
    }
}

/// Sends `env` into a stage's inbox, waiting for room until `deadline` (for ever with
/// `None`). A stage in a simulation has no thread of its own to make room: the schedule runs
/// until there is room; when it cannot (nothing can move, or this is a stage's own turn), the
/// send fails as at its deadline.
fn send_waiting<E>(
    sender: &crossbeam_channel::Sender<E>,
    shared: &Shared,
    env: E,
    deadline: Option<std::time::Instant>,
) -> Result<(), SendTimeoutError<E>> {
    if shared.simulated.load(Ordering::Relaxed) {
        return match crate::sim::send_when_room(sender, env) {
            crate::sim::Sent::Done => Ok(()),
            crate::sim::Sent::Gone(e) => Err(SendTimeoutError::Disconnected(e)),
            crate::sim::Sent::NoRoom { env, .. } => Err(SendTimeoutError::Timeout(env)),
        };
    }
    match deadline {
        Some(d) => sender.send_deadline(env, d),
        None => sender
            .send(env)
            .map_err(|e| SendTimeoutError::Disconnected(e.into_inner())),
    }
}

impl<S, R: Role<S>> Stage<S, R> {
    /// An untyped handle on this stage, for a [`Topology`](crate::Topology) or a list of
    /// stages of different types. (A stage in a scope has none: an untyped handle could
    /// outlive the scope.)
    pub fn stage_ref(&self) -> StageRef {
        StageRef {
            core: StageCore {
                shared: self.shared().clone(),
                port: Box::new(self.tx().clone()),
            },
        }
    }
}

/// An untyped handle on a stage: its name, counters, outcome; stop and join. Made by
/// [`Stage::stage_ref`] or [`Source::stage_ref`](crate::Source::stage_ref); a stage in a
/// scope has none.
pub struct StageRef {
    core: StageCore<Box<dyn Port<Control>>>,
}

impl StageRef {
    /// A handle on the stage of `shared`, controlled through `port`.
    pub(crate) fn from_parts(shared: Arc<Shared>, port: Box<dyn Port<Control>>) -> StageRef {
        StageRef {
            core: StageCore { shared, port },
        }
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.core.shared
    }
}

impl Clone for StageRef {
    fn clone(&self) -> Self {
        StageRef {
            core: StageCore {
                shared: self.core.shared.clone(),
                port: self.core.port.clone_box(),
            },
        }
    }
}

impl fmt::Debug for StageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StageRef")
            .field("name", &self.core.shared.name)
            .finish()
    }
}

impl StageRef {
    /// The stage's name.
    pub fn name(&self) -> &str {
        self.core.name()
    }

    /// A snapshot of the stage's counters.
    pub fn counters(&self) -> Counters {
        self.core.counters()
    }

    /// Time in callbacks and waiting, since the stage started; see [`Stage::timing`].
    pub fn timing(&self) -> StageTiming {
        self.core.timing()
    }

    /// Whether the stage is a producer, a producer-consumer or a consumer.
    pub fn kind(&self) -> StageKind {
        self.core.kind()
    }

    /// How many messages wait in the stage's inbox now; see [`Stage::inbox_len`].
    pub fn inbox_len(&self) -> usize {
        self.core.inbox_len()
    }

    /// The capacity of the stage's inbox, in messages; see [`Stage::inbox_capacity`].
    pub fn inbox_capacity(&self) -> usize {
        self.core.inbox_capacity()
    }

    /// Asks the stage to stop; see [`Stage::stop`].
    pub fn stop(&self) {
        self.core.stop();
    }

    /// Asks the stage to finish gracefully; see [`Stage::finish`].
    pub fn finish(&self) {
        self.core.finish();
    }

    /// Waits until the stage has ended; see [`Stage::join`].
    pub fn join(&self) -> Reason {
        self.core.join()
    }

    /// Waits up to `timeout`; `None` if the stage is still running.
    pub fn join_timeout(&self, timeout: Duration) -> Option<Reason> {
        self.core.join_timeout(timeout)
    }

    /// How the stage ended, or `None` while it runs.
    pub fn outcome(&self) -> Option<Reason> {
        self.core.outcome()
    }

    /// Calls `watcher` with the stage's outcome once it has ended (Erlang's monitor, as a
    /// callback): on the stage's own thread, as its last act, after its `terminate` and its
    /// drop; or at once, on this thread, if it has ended already. Each watcher is called
    /// exactly once. It runs where the stage's thread ends, so it must be quick and must not
    /// block: send the outcome on a channel and act on it elsewhere. A watcher that panics on
    /// the stage's thread is logged, and the others are still called. This is how a
    /// supervisor watches many stages without a thread per stage blocked in
    /// [`join`](StageRef::join).
    ///
    /// # Examples
    ///
    /// ```
    /// use stageflow::Reason;
    ///
    /// let stage = stageflow::from_iter(0..3u32).spawn()?;
    /// let (ended_tx, ended) = crossbeam_channel::unbounded();
    /// stage.stage_ref().on_end(move |reason: &Reason| {
    ///     let _ = ended_tx.send(reason.clone());
    /// });
    /// stage.stop();
    /// assert_eq!(ended.recv()?, Reason::Shutdown);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn on_end(&self, watcher: impl FnOnce(&Reason) + Send + 'static) {
        self.core.shared.on_end(Box::new(watcher));
    }
}

/// What both handles on a stage hold: the state the stage shares with its handles, and a port
/// on its control path (`C`: a [`Stage`]'s typed inbox, or a [`StageRef`]'s boxed port). The
/// methods the two handles have in common are written here once; their docs are on [`Stage`].
#[derive(Clone)]
struct StageCore<C> {
    shared: Arc<Shared>,
    port: C,
}

/// A stage's control path, typed or boxed.
trait ControlPath {
    /// Sends `c` on the stage's control path: never waits behind events, wakes an idle stage.
    /// Gives `c` back if the stage is gone.
    fn control(&self, c: Control) -> Result<(), Control>;
}

impl<E: Wrap<Control> + Send> ControlPath for Counted<E> {
    fn control(&self, c: Control) -> Result<(), Control> {
        self.urgent(E::wrap(c)).map_err(Wrap::unwrap)
    }
}

impl ControlPath for Box<dyn Port<Control>> {
    fn control(&self, c: Control) -> Result<(), Control> {
        self.send_urgent(c)
    }
}

impl<C> StageCore<C> {
    fn name(&self) -> &str {
        &self.shared.name
    }

    fn counters(&self) -> Counters {
        self.shared.counters()
    }

    fn kind(&self) -> StageKind {
        self.shared.kind()
    }

    fn timing(&self) -> StageTiming {
        self.shared.timing()
    }

    fn inbox_len(&self) -> usize {
        self.shared.inbox().0
    }

    fn inbox_capacity(&self) -> usize {
        self.shared.inbox().1
    }

    fn join(&self) -> Reason {
        self.shared.wait(None).expect("waiting without a deadline")
    }

    fn join_timeout(&self, timeout: Duration) -> Option<Reason> {
        self.shared.wait(Some(crate::timer::deadline(timeout)))
    }

    fn outcome(&self) -> Option<Reason> {
        self.shared.outcome()
    }

    fn is_finished(&self) -> bool {
        self.shared.outcome().is_some()
    }
}

impl<C: ControlPath> StageCore<C> {
    /// Sets the stop flag (which a running callback can watch), then sends the stop.
    fn stop(&self) {
        self.shared.stop_requested.store(true, Ordering::Relaxed);
        // On the control path: it never waits behind events, and wakes an idle stage.
        let _ = self.port.control(Control::Stop);
    }

    fn finish(&self) {
        let _ = self.port.control(Control::Finish);
    }
}
