//! The messages stages exchange, and [`Port`]: one stage's typed view of another's inbox.
//!
//! Every stage has one bounded inbox of [`Envelope`]s. A producer knows its consumers' inboxes
//! only as `Port<Down<T>>` (it can send them events and cancels, whatever else they accept) and
//! a consumer knows its producers' as `Port<Up<T>>`, so stages of different types link up while
//! the events stay typed end to end.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crossbeam_channel::{Select, SelectedOperation, Sender, TrySendError};

use crate::error::SubscribeError;
use crate::reason::Reason;
use crate::shared::Shared;
use crate::subscription::{SubscribeOptions, Subscription, SubscriptionId};

/// Everything a stage's inbox can hold. `In`: events it consumes; `Out`: events it emits; `M`:
/// its own messages.
pub(crate) enum Envelope<'e, In, Out, M> {
    /// From one of its producers.
    Down(Down<'e, In>),
    /// From one of its consumers (or someone subscribing one).
    Up(Up<'e, Out>),
    /// A cast or a call.
    Message(M),
    /// An info: handled after the events buffered before it.
    Info(M),
    /// From a handle.
    Control(Control),
}

/// Producer to consumer.
pub(crate) enum Down<'e, T> {
    /// The producer accepted a subscription; the consumer now asks on it.
    Subscribed(Box<Subscribed<'e, T>>),
    /// Events, never more than the subscription asked for.
    Events { sub: SubscriptionId, events: Vec<T> },
    /// The subscription ended (the producer finished, stopped, failed, or confirms a cancel),
    /// or, on the consumer's control path, the producer refused or dropped a request that the
    /// consumer passed on (see [`SubscribeRequest::pending`]).
    Cancel { sub: SubscriptionId, reason: Reason },
    /// From a handle, on the consumer's control path: subscribe to the producer of this
    /// request. The consumer holds the subscription as pending from here on (a cancel or an
    /// ask on it made after the subscribe waits for it) and passes the request on to the
    /// producer's control path, behind any cancel it sent there before: a cancel and a
    /// subscribe from one caller take effect in the order they were made.
    Subscribe(Box<SubscribeRequest<'e, T>>),
}

pub(crate) struct Subscribed<'e, T> {
    pub(crate) producer: PortBox<'e, Up<'e, T>>,
    /// As the consumer sees it: direction upstream, peer the producer.
    pub(crate) info: Subscription,
    /// Told (and dropped) once the consumer holds the subscription, so that whoever
    /// subscribed it can return a subscription id that works at once.
    pub(crate) registered: Option<Sender<()>>,
}

/// Consumer to producer.
pub(crate) enum Up<'e, T> {
    Subscribe(Box<SubscribeRequest<'e, T>>),
    Ask { sub: SubscriptionId, n: usize },
    Cancel { sub: SubscriptionId, reason: Reason },
}

pub(crate) struct SubscribeRequest<'e, T> {
    pub(crate) sub: SubscriptionId,
    pub(crate) consumer: PortBox<'e, Down<'e, T>>,
    pub(crate) consumer_name: std::sync::Arc<str>,
    pub(crate) producer: PortBox<'e, Up<'e, T>>,
    pub(crate) producer_name: std::sync::Arc<str>,
    pub(crate) options: SubscribeOptions,
    pub(crate) ack: Sender<Result<(), SubscribeError>>,
    /// Passed on to the consumer in [`Subscribed`].
    pub(crate) registered: Option<Sender<()>>,
    /// Identifies the consuming stage (or stream), for dispatchers that take one
    /// subscription per consumer.
    pub(crate) consumer_id: usize,
    /// The consumer passed the request on and holds it as pending: if the producer refuses it
    /// or drops it, it says so to the consumer too (on its control path), so that the consumer
    /// forgets it.
    pub(crate) pending: bool,
    /// Tells a pending consumer if the request is dropped without an answer.
    pub(crate) unanswered: Unanswered<'e, T>,
}

/// Tells a consumer that holds a subscribe request as pending that the request was dropped
/// unanswered: it sat in the control channel of a producer that ended after its last look
/// there, and went with the channel. The consumer then forgets it, instead of holding it (and,
/// if its subscriber gave up, a withdrawn entry) for ever. Every producer-side path that
/// answers a request disarms it first ([`Unanswered::answered`]).
pub(crate) struct Unanswered<'e, T> {
    tell: Option<(ConsumerPort<'e, T>, SubscriptionId)>,
}

/// The consumer's end of a subscription, as a producer holds it.
type ConsumerPort<'e, T> = PortBox<'e, Down<'e, T>>;

impl<'e, T: 'e> Unanswered<'e, T> {
    /// Armed if `pending`: the consumer holds the request as pending.
    pub(crate) fn new(
        consumer: &(dyn Port<Down<'e, T>> + 'e),
        sub: SubscriptionId,
        pending: bool,
    ) -> Self {
        Unanswered {
            tell: pending.then(|| (consumer.clone_box(), sub)),
        }
    }

    /// The request was answered (or the consumer told otherwise): nothing to say when dropped.
    pub(crate) fn answered(&mut self) {
        self.tell = None;
    }
}

impl<T> Drop for Unanswered<'_, T> {
    fn drop(&mut self) {
        if let Some((consumer, sub)) = self.tell.take() {
            let _ = consumer.send_urgent(Down::Cancel {
                sub,
                reason: Reason::error(
                    "noproc: the producer ended before it read the subscribe request",
                ),
            });
        }
    }
}

/// From a handle to its stage.
pub(crate) enum Control {
    Stop,
    /// Finish gracefully: a producer stops producing and delivers what it holds; a stage with
    /// producers ends once they have all ended (see `Stage::finish`).
    Finish,
    /// The last reference to the stage is gone: check whether it can still be reached.
    Wake,
    /// Producers: accumulate demand, or forward it (replaying what accumulated).
    SetDemand(crate::subscription::ProducerDemand),
    /// Producers: report the demand mode.
    GetDemand(Sender<crate::subscription::ProducerDemand>),
    Cancel {
        sub: SubscriptionId,
        reason: Reason,
    },
    Ask {
        sub: SubscriptionId,
        n: usize,
    },
    /// Consumers: a subscribe failed on the caller's side (refused, timed out): forget the
    /// pending subscription, and cancel it quietly (no cancel mode applies) if it is held
    /// already or arrives later.
    Withdraw(SubscriptionId),
}

/// Why a send through a port did not happen; the message comes back.
pub(crate) enum PortError<M> {
    Full(M),
    Gone(M),
}

/// One stage's handle on another's inbox, for messages of type `M`.
pub(crate) trait Port<M>: Send + Sync {
    fn try_send(&self, msg: M) -> Result<(), PortError<M>>;
    /// Blocks while the inbox is full; gives the message back if the stage is gone.
    fn send(&self, msg: M) -> Result<(), M>;
    /// Sends on the stage's control path, which data cannot crowd out: never blocks, and the
    /// stage handles it at the start of its next turn. Gives the message back if the stage is
    /// gone.
    fn send_urgent(&self, msg: M) -> Result<(), M>;
    /// Adds a send operation on this port to `sel`; returns its index.
    fn register<'a>(&'a self, sel: &mut Select<'a>) -> usize;
    /// Completes a send operation that `sel` selected; gives the message back if the peer is
    /// gone.
    fn send_selected(&self, op: SelectedOperation<'_>, msg: M) -> Result<(), M>;
    fn clone_box<'s>(&self) -> PortBox<'s, M>
    where
        Self: 's;
}

/// A port as its holder keeps it: the peer's types (and so the port) live for `'e`.
pub(crate) type PortBox<'e, M> = Box<dyn Port<M> + 'e>;

/// Puts a message in an envelope and takes it out again.
pub(crate) trait Wrap<M>: Sized {
    fn wrap(msg: M) -> Self;
    fn unwrap(self) -> M;
}

macro_rules! wrap {
    ($msg:ty, $variant:ident) => {
        impl<'e, In, Out, M> Wrap<$msg> for Envelope<'e, In, Out, M> {
            fn wrap(msg: $msg) -> Self {
                Envelope::$variant(msg)
            }
            fn unwrap(self) -> $msg {
                match self {
                    Envelope::$variant(msg) => msg,
                    _ => unreachable!("a port only ever wraps its own variant"),
                }
            }
        }
    };
}

wrap!(Down<'e, In>, Down);
wrap!(Up<'e, Out>, Up);
wrap!(Control, Control);

/// A stage's own message, as a mailbox sends it.
pub(crate) struct Msg<M>(pub(crate) M);

impl<In, Out, M> Wrap<Msg<M>> for Envelope<'_, In, Out, M> {
    fn wrap(msg: Msg<M>) -> Self {
        Envelope::Message(msg.0)
    }
    fn unwrap(self) -> Msg<M> {
        match self {
            Envelope::Message(m) => Msg(m),
            _ => unreachable!("a port only ever wraps its own variant"),
        }
    }
}

/// A sender into a stage's inbox that counts as a reference to the stage. Handles, mailboxes
/// and the ports peers hold are all `Counted`; the stage's own thread keeps a plain sender. When
/// the count falls to zero the stage is woken to check whether anything can still reach it
/// (see `Runner::unreachable`).
///
/// Beside the bounded inbox, a stage has an unbounded *control* channel for what handles send
/// (stop, cancel, ask, subscribe, demand mode): the runtime's own `try_send`s of events can
/// keep an inbox full for as long as traffic flows, and control must not wait behind them.
/// Control is bounded by what users do, not by event traffic.
pub(crate) struct Counted<E: Wrap<Control> + Send> {
    tx: Sender<E>,
    ctl: Option<Sender<E>>,
    shared: Arc<Shared>,
}

impl<E: Wrap<Control> + Send> Counted<E> {
    /// A reference to a stage with inbox `tx` and control channel `ctl` (`None`: control goes
    /// through the inbox, for a [`Stream`](crate::Stream), which no handle controls).
    pub(crate) fn new(tx: Sender<E>, ctl: Option<Sender<E>>, shared: Arc<Shared>) -> Counted<E> {
        shared.refs.fetch_add(1, Ordering::AcqRel);
        Counted { tx, ctl, shared }
    }

    pub(crate) fn sender(&self) -> &Sender<E> {
        &self.tx
    }

    /// Sends `env` on the control path and wakes the stage if it is idle (a full inbox means it
    /// is busy, and it reads the control channel at the start of every turn).
    pub(crate) fn urgent(&self, env: E) -> Result<(), E> {
        match &self.ctl {
            Some(ctl) => {
                ctl.send(env).map_err(|e| e.into_inner())?;
                self.shared.control_pending.store(true, Ordering::Release);
                let _ = self.tx.try_send(E::wrap(Control::Wake));
                Ok(())
            }
            None => self.tx.send(env).map_err(|e| e.into_inner()),
        }
    }
}

impl<E: Wrap<Control> + Send> Counted<E> {
    /// A blocking send to a stage in a simulation: the schedule runs until there is room.
    /// Inside a stage's turn it cannot, and the send would block the simulation's only
    /// thread for ever: that is a panic naming the stage, not a hang.
    fn send_simulated<M>(&self, msg: M) -> Result<(), M>
    where
        E: Wrap<M>,
    {
        match crate::sim::send_when_room(&self.tx, E::wrap(msg)) {
            crate::sim::Sent::Done => Ok(()),
            crate::sim::Sent::Gone(e) => Err(e.unwrap()),
            crate::sim::Sent::NoRoom { not_run: true, .. } => panic!(
                "a blocking send to stage {} (Mailbox::cast) inside a simulated stage's turn: \
                 its inbox is full, and only the simulation's own thread could make room; \
                 use Mailbox::try_cast in simulated stages",
                self.shared.name
            ),
            crate::sim::Sent::NoRoom { env, .. } => Err(env.unwrap()),
        }
    }
}

impl<E: Wrap<Control> + Send> Clone for Counted<E> {
    fn clone(&self) -> Self {
        Counted::new(self.tx.clone(), self.ctl.clone(), self.shared.clone())
    }
}

impl<E: Wrap<Control> + Send> Drop for Counted<E> {
    fn drop(&mut self) {
        if self.shared.refs.fetch_sub(1, Ordering::AcqRel) == 1 {
            let _ = self.tx.try_send(E::wrap(Control::Wake));
        }
    }
}

impl<M, E> Port<M> for Counted<E>
where
    E: Wrap<M> + Wrap<Control> + Send,
{
    fn try_send(&self, msg: M) -> Result<(), PortError<M>> {
        Port::try_send(&self.tx, msg)
    }
    fn send(&self, msg: M) -> Result<(), M> {
        if self.shared.simulated.load(Ordering::Relaxed) {
            return self.send_simulated(msg);
        }
        Port::send(&self.tx, msg)
    }
    fn send_urgent(&self, msg: M) -> Result<(), M> {
        self.urgent(E::wrap(msg)).map_err(Wrap::unwrap)
    }
    fn register<'a>(&'a self, sel: &mut Select<'a>) -> usize {
        sel.send(&self.tx)
    }
    fn send_selected(&self, op: SelectedOperation<'_>, msg: M) -> Result<(), M> {
        Port::send_selected(&self.tx, op, msg)
    }
    fn clone_box<'s>(&self) -> PortBox<'s, M>
    where
        Self: 's,
    {
        Box::new(self.clone())
    }
}

impl<M, E> Port<M> for Sender<E>
where
    E: Wrap<M> + Send,
{
    fn try_send(&self, msg: M) -> Result<(), PortError<M>> {
        Sender::try_send(self, E::wrap(msg)).map_err(|e| match e {
            TrySendError::Full(e) => PortError::Full(e.unwrap()),
            TrySendError::Disconnected(e) => PortError::Gone(e.unwrap()),
        })
    }

    fn send(&self, msg: M) -> Result<(), M> {
        Sender::send(self, E::wrap(msg)).map_err(|e| e.into_inner().unwrap())
    }

    fn send_urgent(&self, msg: M) -> Result<(), M> {
        Port::send(self, msg)
    }

    fn register<'a>(&'a self, sel: &mut Select<'a>) -> usize {
        sel.send(self)
    }

    fn send_selected(&self, op: SelectedOperation<'_>, msg: M) -> Result<(), M> {
        op.send(self, E::wrap(msg))
            .map_err(|e| e.into_inner().unwrap())
    }

    fn clone_box<'s>(&self) -> PortBox<'s, M>
    where
        Self: 's,
    {
        Box::new(self.clone())
    }
}

/// Messages that can be merged while they wait in a backlog: events for one subscription are
/// appended to the batch waiting before them, asks on one subscription are added up.
pub(crate) trait Coalesce: Sized {
    /// Merges `next` into `self` if it can; otherwise hands it back.
    fn coalesce(&mut self, next: Self) -> Option<Self>;

    /// How many events the message carries.
    fn event_count(&self) -> usize {
        0
    }
}

impl<T> Coalesce for Down<'_, T> {
    fn coalesce(&mut self, next: Self) -> Option<Self> {
        match (self, next) {
            (
                Down::Events { sub, events },
                Down::Events {
                    sub: s2,
                    events: more,
                },
            ) if *sub == s2 => {
                events.extend(more);
                None
            }
            (_, next) => Some(next),
        }
    }

    fn event_count(&self) -> usize {
        match self {
            Down::Events { events, .. } => events.len(),
            _ => 0,
        }
    }
}

impl<T> Coalesce for Up<'_, T> {
    fn coalesce(&mut self, next: Self) -> Option<Self> {
        match (self, next) {
            (Up::Ask { sub, n }, Up::Ask { sub: s2, n: more }) if *sub == s2 => {
                *n = n.saturating_add(more);
                None
            }
            (_, next) => Some(next),
        }
    }
}

#[cfg(test)]
mod unanswered_tests {
    use super::{Down, Envelope, Unanswered};
    use crate::subscription::SubscriptionId;

    type Env = Envelope<'static, u64, u64, ()>;

    #[test]
    fn a_pending_request_dropped_unanswered_cancels_at_the_consumer_once() {
        let (tx, rx) = crossbeam_channel::unbounded::<Env>();
        let sub = SubscriptionId::unique();
        drop(Unanswered::<u64>::new(&tx, sub, true));
        match rx.try_recv() {
            Ok(Envelope::Down(Down::Cancel { sub: got, reason })) => {
                assert_eq!(got, sub);
                assert!(reason.to_string().contains("noproc"), "{reason}");
            }
            _ => panic!("expected a cancel"),
        }
        assert!(rx.try_recv().is_err(), "once");
        // Answered, or not pending: nothing.
        let mut answered = Unanswered::<u64>::new(&tx, sub, true);
        answered.answered();
        drop(answered);
        drop(Unanswered::<u64>::new(&tx, sub, false));
        assert!(rx.try_recv().is_err());
    }
}
