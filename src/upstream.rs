//! What a consumer subscribes to: [`Upstream`] and [`Source`], a producer's subscription
//! endpoint; and the subscribe request a handle or a builder sends, with what its caller waits
//! on (the producer's answer, then the consumer's registration).

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError};

use crate::envelope::{Control, Down, PortBox, SubscribeRequest, Unanswered, Up};
use crate::error::SubscribeError;
use crate::handle::{Emits, Role, ScopedStage, StageRef};
use crate::shared::Shared;
use crate::subscription::{SubscribeOptions, SubscriptionId};

/// Something a consumer can subscribe to: a running producer or producer-consumer of `T`.
///
/// `'env` is how long the producer's events (and so its subscriptions) may live: `'static`
/// for a stage started with [`spawn`](crate::StageBuilder::spawn), the scope's `'env` for one
/// started with [`spawn_scoped`](crate::ScopedBuilder::spawn_scoped). A consumer subscribes
/// only to producers of its own `'env`.
pub trait Upstream<'env, T> {
    /// The producer's subscription endpoint.
    fn source(&self) -> ScopedSource<'env, T>;
}

impl<'env, S, R: Emits<S>> Upstream<'env, <R as Role<S>>::Out> for ScopedStage<'env, S, R> {
    fn source(&self) -> ScopedSource<'env, <R as Role<S>>::Out> {
        ScopedSource {
            port: Box::new(self.tx().clone()),
            control: Box::new(self.tx().clone()),
            name: self.shared().name.clone(),
            shared: self.shared().clone(),
        }
    }
}

impl<'env, T: 'env> Upstream<'env, T> for ScopedSource<'env, T> {
    fn source(&self) -> ScopedSource<'env, T> {
        self.clone()
    }
}

/// A producer's subscription endpoint, for events of type `T`. Obtained from a producer or
/// producer-consumer handle through [`Upstream::source`]; it keeps the producer reachable.
///
/// It is the type-erased handle on a producer: producers of different stage types but the
/// same events have the same `Source<T>`, so one can be chosen at run time (a `&dyn
/// Upstream<T>` works too). It can join a [`Topology`](crate::Topology).
///
/// ```
/// use stageflow::fns::ForEach;
/// use stageflow::{Source, SubscribeOptions, Topology, Upstream};
///
/// let from_a_range = stageflow::from_iter(0..3u64).spawn()?;
/// let from_a_vec = stageflow::from_iter(vec![7u64, 8]).spawn()?;
/// let chosen: Source<u64> = if std::env::args().count() > 99 {
///     from_a_vec.source()
/// } else {
///     from_a_range.source()
/// };
/// let sink = stageflow::consumer(ForEach::new(|_: u64| {}))
///     .subscribe_to(&chosen, SubscribeOptions::new())?
///     .spawn()?;
/// let pipeline = Topology::new().with(&chosen).with(&sink);
/// # from_a_vec.stop();
/// pipeline.join();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub type Source<T> = ScopedSource<'static, T>;

/// A producer's subscription endpoint, for events of type `T` that live for `'env`: a
/// [`Source`] of a producer started in a scope (see
/// [`spawn_scoped`](crate::ScopedBuilder::spawn_scoped)). Everything said of [`Source`] holds.
pub struct ScopedSource<'env, T> {
    port: PortBox<'env, Up<'env, T>>,
    control: PortBox<'env, Control>,
    name: Arc<str>,
    shared: Arc<Shared>,
}

impl<'env, T: 'env> Clone for ScopedSource<'env, T> {
    fn clone(&self) -> Self {
        ScopedSource {
            port: self.port.clone_box(),
            control: self.control.clone_box(),
            name: self.name.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<T> fmt::Debug for ScopedSource<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Source")
            .field("producer", &self.name)
            .finish()
    }
}

impl<'env, T> ScopedSource<'env, T> {
    /// The producer's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// On the producer's control path, which never blocks and never drops the message: used
    /// to withdraw subscriptions.
    pub(crate) fn send_up(&self, msg: Up<'env, T>) {
        let _ = self.port.send_urgent(msg);
    }
}

impl<T> Source<T> {
    /// An untyped handle on the producer, to stop, finish or join it. (A producer in a scope
    /// has none: an untyped handle could outlive the scope.)
    pub fn stage_ref(&self) -> StageRef {
        StageRef::from_parts(self.shared.clone(), self.control.clone_box())
    }
}

/// Subscribes the consumer whose inbox is `consumer` to `source`: validate, send the request
/// (on the producer's control path), wait for the producer's answer. The producer tells the
/// consumer itself (`Subscribed`), so the consumer learns of the subscription before any event
/// or cancel on it; [`Pending::registered`] waits until it has.
///
/// For a consumer that is not running yet (a stage being built) or that runs on the caller's
/// thread (a [`Stream`](crate::Stream)); a running stage subscribes through its own control
/// path (`Stage::subscribe_to`).
pub(crate) fn subscribe<'e, T: Send + 'e>(
    source: &ScopedSource<'e, T>,
    consumer: PortBox<'e, Down<'e, T>>,
    consumer_shared: &Arc<Shared>,
    options: SubscribeOptions,
) -> Result<Pending, SubscribeError> {
    ask_to_subscribe(source, consumer, consumer_shared, options)?.answer()
}

/// The first half of [`subscribe`]: validates and sends the request, without waiting for the
/// answer. A stage being built with many producers sends every request before it waits for
/// any answer, so the producers answer side by side rather than one after the other.
pub(crate) fn ask_to_subscribe<'e, T: Send + 'e>(
    source: &ScopedSource<'e, T>,
    consumer: PortBox<'e, Down<'e, T>>,
    consumer_shared: &Arc<Shared>,
    options: SubscribeOptions,
) -> Result<Waiting, SubscribeError> {
    let request = Request::new(source, consumer, consumer_shared, options, false)?;
    let (req, waiting) = request.split();
    if source.port.send_urgent(Up::Subscribe(req)).is_err() {
        return Err(SubscribeError::ProducerGone {
            producer: source.name.to_string(),
        });
    }
    Ok(waiting)
}

/// A subscribe request and what its caller waits on.
pub(crate) struct Request<'e, T> {
    req: Box<SubscribeRequest<'e, T>>,
    waiting: Waiting,
}

/// The caller's side of a request: the producer's answer, then the consumer's registration.
pub(crate) struct Waiting {
    sub: SubscriptionId,
    answer: Receiver<Result<(), SubscribeError>>,
    registered: Receiver<()>,
    consumer: Arc<Shared>,
    producer: Arc<str>,
    producer_shared: Arc<Shared>,
    deadline: Instant,
}

impl<'e, T: Send + 'e> Request<'e, T> {
    /// Validates the options and builds the request; `pending`: the consumer passes it on
    /// (see [`SubscribeRequest::pending`]).
    pub(crate) fn new(
        source: &ScopedSource<'e, T>,
        consumer: PortBox<'e, Down<'e, T>>,
        consumer_shared: &Arc<Shared>,
        options: SubscribeOptions,
        pending: bool,
    ) -> Result<Request<'e, T>, SubscribeError> {
        options.validate()?;
        if Arc::ptr_eq(&source.shared, consumer_shared) {
            return Err(SubscribeError::SelfSubscription {
                stage: source.name.to_string(),
            });
        }
        let sub = SubscriptionId::next();
        let deadline = crate::timer::deadline(options.timeout);
        let (ack, answer) = bounded(1);
        let (registered_tx, registered) = bounded(1);
        let unanswered = Unanswered::new(&*consumer, sub, pending);
        let req = Box::new(SubscribeRequest {
            sub,
            consumer,
            consumer_name: consumer_shared.name.clone(),
            producer: source.port.clone_box(),
            producer_name: source.name.clone(),
            options,
            ack,
            registered: Some(registered_tx),
            consumer_id: Arc::as_ptr(consumer_shared) as usize,
            pending,
            unanswered,
        });
        Ok(Request {
            req,
            waiting: Waiting {
                sub,
                answer,
                registered,
                consumer: consumer_shared.clone(),
                producer: source.name.clone(),
                producer_shared: source.shared.clone(),
                deadline,
            },
        })
    }

    pub(crate) fn split(self) -> (Box<SubscribeRequest<'e, T>>, Waiting) {
        (self.req, self.waiting)
    }
}

impl Waiting {
    /// Waits for the producer's answer, until the subscribe deadline.
    pub(crate) fn answer(self) -> Result<Pending, SubscribeError> {
        let result = if crate::sim::active() {
            self.answer_simulated()
        } else {
            self.answer_on_threads()
        };
        result.map(|()| Pending {
            sub: self.sub,
            registered: self.registered,
            consumer: self.consumer,
            deadline: self.deadline,
        })
    }

    /// In a simulation: the schedule runs until the producer has answered (a producer that
    /// cannot, because this is a stage's own turn or nothing can move, has timed out).
    fn answer_simulated(&self) -> Result<(), SubscribeError> {
        let mut got = None;
        crate::sim::wait_until(|| {
            if got.is_none() {
                got = match self.answer.try_recv() {
                    Ok(result) => Some(result),
                    Err(crossbeam_channel::TryRecvError::Disconnected) => {
                        Some(Err(SubscribeError::ProducerGone {
                            producer: self.producer.to_string(),
                        }))
                    }
                    Err(crossbeam_channel::TryRecvError::Empty) => None,
                };
            }
            got.is_some()
        });
        got.unwrap_or_else(|| {
            Err(SubscribeError::Timeout {
                producer: self.producer.to_string(),
            })
        })
    }

    fn answer_on_threads(&self) -> Result<(), SubscribeError> {
        let producer = &self.producer;
        match self.answer.recv_deadline(self.deadline) {
            Ok(result) => result,
            Err(RecvTimeoutError::Disconnected) => Err(self.closed()),
            Err(RecvTimeoutError::Timeout) => match self.answer.try_recv() {
                // The answer came just as the time ran out.
                Ok(result) => result,
                // Withdrawn: dropping `answer` tells the producer, which then drops the request
                // without telling the consumer (it acknowledges before anything else).
                Err(_) => Err(SubscribeError::Timeout {
                    producer: producer.to_string(),
                }),
            },
        }
    }
}

/// How long a subscriber whose request was dropped unanswered waits, at least, to learn
/// whether the producer or the consumer ended (see `Waiting::closed`).
const CLOSED_GRACE: Duration = Duration::from_secs(1);

impl Waiting {
    /// The answer's channel closed unanswered: the producer ended, or the consumer did
    /// before it passed the request on (a running stage's request goes through it). Either
    /// publishes its end as its thread's last act, soon after dropping what it held: which
    /// one did is known once it has (waiting until the subscribe deadline, and at least
    /// [`CLOSED_GRACE`], which a subscribe with no time to wait also gets; then, as before,
    /// the producer).
    fn closed(&self) -> SubscribeError {
        let mut sel = crossbeam_channel::Select::new();
        let consumer = sel.recv(self.consumer.ended());
        sel.recv(self.producer_shared.ended());
        let until = self.deadline.max(Instant::now() + CLOSED_GRACE);
        match sel.select_deadline(until) {
            Ok(op) if op.index() == consumer => {
                let _ = op.recv(self.consumer.ended());
                SubscribeError::ConsumerGone {
                    consumer: self.consumer.name.to_string(),
                }
            }
            Ok(op) => {
                let _ = op.recv(self.producer_shared.ended());
                SubscribeError::ProducerGone {
                    producer: self.producer.to_string(),
                }
            }
            Err(_) => SubscribeError::ProducerGone {
                producer: self.producer.to_string(),
            },
        }
    }
}

/// A subscription the producer accepted, which the consumer may not hold yet.
pub(crate) struct Pending {
    pub(crate) sub: SubscriptionId,
    registered: Receiver<()>,
    consumer: Arc<Shared>,
    deadline: Instant,
}

impl Pending {
    /// Waits until the consumer holds the subscription (or has ended, or the subscribe
    /// timeout has passed: then the subscription is still made, and held as pending by a
    /// running consumer, or registered when a stage being built starts).
    pub(crate) fn registered(self) -> Result<SubscriptionId, SubscribeError> {
        match self
            .consumer
            .recv_unless_ended(&self.registered, self.deadline)
        {
            Ok(Some(())) => Ok(self.sub),
            Ok(None) => Err(SubscribeError::ConsumerGone {
                consumer: self.consumer.name.to_string(),
            }),
            Err(()) => {
                // The consumer holds it as pending (a cancel or an ask on it waits for it).
                log::debug!(
                    "stage {}: subscription {} accepted, its confirmation not yet handled when \
                     the subscribe timeout passed",
                    self.consumer.name,
                    self.sub
                );
                Ok(self.sub)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::{Request, Upstream};
    use crate::envelope::Envelope;
    use crate::shared::Shared;
    use crate::{Consumer, ConsumerContext, Events, SubscribeError, SubscribeOptions};

    /// A consumer whose message callback says it has begun, then waits to be let go.
    struct Held {
        entered: crossbeam_channel::Sender<()>,
        go: crossbeam_channel::Receiver<()>,
    }

    impl Consumer for Held {
        type In = u64;
        type Message = ();

        fn handle_events(&mut self, _: Events<'_, u64>, _: &mut ConsumerContext<'_>) {}

        fn handle_message(&mut self, (): (), _: &mut ConsumerContext<'_>) {
            let _ = self.entered.send(());
            let _ = self.go.recv_timeout(Duration::from_secs(30));
        }
    }

    #[test]
    fn a_request_still_queued_in_a_stopped_consumer_is_answered_consumer_gone() {
        // The request waits in the consumer, which is stopped before it passes it on: its end
        // answers what it still holds while the producer runs on.
        let producer = crate::from_iter(0u64..).spawn().unwrap();
        let (entered_tx, entered) = crossbeam_channel::bounded(1);
        let (go_tx, go) = crossbeam_channel::bounded(1);
        let consumer = crate::consumer(Held {
            entered: entered_tx,
            go,
        })
        .spawn()
        .unwrap();
        consumer.cast(()).unwrap();
        entered
            .recv_timeout(Duration::from_secs(30))
            .expect("the consumer is in its callback");
        consumer.stop();
        let (_, waiting) = consumer
            .subscribe_nowait(&producer, SubscribeOptions::new())
            .unwrap();
        go_tx.send(()).unwrap();
        match waiting.answer() {
            Err(SubscribeError::ConsumerGone { .. }) => {}
            Err(e) => panic!("expected the consumer named as gone, got {e}"),
            Ok(_) => panic!("expected the consumer named as gone, got a subscription"),
        }
        assert!(producer.outcome().is_none(), "the producer runs on");
        producer.stop();
        producer.join();
    }

    #[test]
    fn a_request_dropped_unanswered_names_the_side_that_ended() {
        // A request that reaches a consumer after its end's last look at its channels is
        // dropped with them, unanswered: the consumer has ended, the producer runs on.
        let producer = crate::from_iter(0u64..).spawn().unwrap();
        let consumer = Arc::new(Shared::new("c".into()));
        let (port, _inbox) = crossbeam_channel::unbounded::<Envelope<'static, u64, u64, ()>>();
        let request = Request::new(
            &producer.source(),
            Box::new(port),
            &consumer,
            SubscribeOptions::new(),
            true,
        )
        .unwrap();
        let (req, waiting) = request.split();
        drop(req);
        consumer.set_outcome(crate::Reason::Shutdown);
        match waiting.answer() {
            Err(SubscribeError::ConsumerGone { consumer }) => assert_eq!(consumer, "c"),
            Err(e) => panic!("expected the consumer named as gone, got {e}"),
            Ok(_) => panic!("expected the consumer named as gone, got a subscription"),
        }
        producer.stop();
        producer.join();
    }
}
