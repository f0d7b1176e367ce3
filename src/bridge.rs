//! Iterator bridges: a producer from any [`Iterator`] ([`from_iter`], GenStage's
//! `from_enumerable`), and a blocking iterator over the events of producers ([`stream`],
//! GenStage's `stream`), so a synchronous program can use a pipeline like an iterator chain.

use std::convert::Infallible;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::thread::Scope;
use std::time::Duration;

use crossbeam_channel::{bounded, Receiver, Sender};

use crate::builder::{producer, ScopedBuilder};
use crate::context::Context;
use crate::demand::{Batches, Demand};
use crate::envelope::{Counted, Down, Envelope, PortBox, Up};
use crate::error::SubscribeError;
use crate::handle::ProducerRole;
use crate::reason::Reason;
use crate::shared::Shared;
use crate::stage::Producer;
use crate::subscription::{SubscribeOptions, SubscriptionId};
use crate::upstream::{subscribe, Upstream};

/// A producer that pulls exactly as many items from an iterator as its consumers ask for, and
/// finishes when the iterator ends. Made by [`from_iter`].
///
/// If the iterator holds an exact multiple of the demand, the end is only seen on the next
/// pull, one ask later (as in GenStage).
pub struct IterProducer<I> {
    iter: I,
    stop_on_cancel: bool,
    consumers: usize,
}

impl<I> IterProducer<I>
where
    I: Iterator + Send,
    I::Item: Send,
{
    /// A producer of the items of `iter` (what [`from_iter`] builds, to configure further).
    pub fn new(iter: impl IntoIterator<IntoIter = I>) -> IterProducer<I> {
        IterProducer {
            iter: iter.into_iter(),
            stop_on_cancel: false,
            consumers: 0,
        }
    }

    /// Ends the producer ([`Reason::Normal`]) once every consumer that subscribed has left,
    /// instead of waiting for another (GenStage's `on_cancel: :stop`). Defaults to off.
    pub fn stop_on_cancel(mut self) -> IterProducer<I> {
        self.stop_on_cancel = true;
        self
    }
}

impl<I> fmt::Debug for IterProducer<I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("IterProducer { .. }")
    }
}

impl<I> Producer for IterProducer<I>
where
    I: Iterator + Send,
    I::Item: Send,
{
    type Out = I::Item;
    type Message = ();

    fn handle_demand(&mut self, demand: usize, ctx: &mut Context<'_, I::Item>) {
        // One `extend`: an iterator that knows its length (a range mapped, a `Vec`'s) is
        // written into the output in one tight loop, room reserved once.
        let mut taken = 0;
        // `map`, not `inspect`: a mapped iterator keeps the standard library's knowledge of
        // its exact length, an inspected one loses it.
        #[allow(clippy::manual_inspect)]
        ctx.emit_all(self.iter.by_ref().take(demand).map(|item| {
            taken += 1;
            item
        }));
        if taken < demand {
            ctx.finish();
        }
    }

    fn handle_subscribe(&mut self, _: &crate::Subscription, _: &mut Context<'_, I::Item>) {
        self.consumers += 1;
    }

    fn handle_cancel(
        &mut self,
        _: &crate::Subscription,
        _: &Reason,
        ctx: &mut Context<'_, I::Item>,
    ) {
        self.consumers -= 1;
        if self.stop_on_cancel && self.consumers == 0 {
            ctx.stop(Reason::Normal);
        }
    }
}

/// Builds a producer that emits the items of `iter` as they are asked for, then finishes.
///
/// # Examples
///
/// ```
/// use stageflow::SubscribeOptions;
///
/// let numbers = stageflow::from_iter(1..=100u32).spawn()?;
/// let total: u32 = stageflow::stream(&numbers, SubscribeOptions::new().max_demand(10))?.sum();
/// assert_eq!(total, 5050);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn from_iter<'env, I>(iter: I) -> ScopedBuilder<'env, IterProducer<I::IntoIter>, ProducerRole>
where
    I: IntoIterator,
    I::IntoIter: Send + 'env,
    I::Item: Send,
{
    producer(IterProducer::new(iter))
}

type StreamEnvelope<'env, T> = Envelope<'env, T, Infallible, ()>;

struct StreamSub<'env, T: 'env> {
    id: SubscriptionId,
    port: PortBox<'env, Up<'env, T>>,
    demand: Demand,
}

/// A blocking iterator over the events of one or more producers, consumed on the calling
/// thread. Made by [`stream`].
///
/// The calling thread is the consumer: it asks `max_demand` when a subscription starts, cuts
/// each incoming message into batches by the subscription's demand, and asks again for a batch
/// only when the item after that batch is requested. The iterator ends when every subscription
/// has ended (each producer finished or stopped); [`ScopedStream::reason`] says how the last one
/// ended. Dropping the stream cancels its subscriptions ([`Reason::Normal`]): the producers'
/// `handle_cancel` runs and they keep running. The drop waits (at most
/// [`ScopedStream::cancel_timeout`], five seconds by default) until every producer has confirmed,
/// so none of them mistakes the stream for a consumer that vanished.
///
/// `Stream<T>` is a [`ScopedStream`] of producers that live for `'static`. Over stages
/// started in a [`std::thread::scope`] (`spawn_scoped`), whose events may borrow from the
/// caller, [`stream_scoped`] makes the same iterator, held to the scope.
pub type Stream<T> = ScopedStream<'static, 'static, T>;

/// A [`Stream`] read inside a [`std::thread::scope`], whose events, and the producers they come
/// from, may borrow what lives for `'env`. Made by [`stream_scoped`].
///
/// It cannot leave the scope (it borrows the scope, as a scoped thread's handle does): a
/// scope waits for its stages' threads, and a producer waiting for a stream outside would
/// never end.
///
/// # Examples
///
/// ```
/// use stageflow::SubscribeOptions;
///
/// let text = String::from("to be or not to be");
/// let words: Vec<&str> = std::thread::scope(|scope| {
///     let words = stageflow::from_iter(text.split(' ')).spawn_scoped(scope)?;
///     let opts = SubscribeOptions::new().max_demand(4);
///     let stream = stageflow::stream_scoped(scope, &words, opts)?;
///     Ok::<_, Box<dyn std::error::Error>>(stream.collect())
/// })?;
/// assert_eq!(words, ["to", "be", "or", "not", "to", "be"]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// The borrow checker keeps it in its scope:
///
/// ```compile_fail
/// use stageflow::SubscribeOptions;
///
/// let text = String::from("to be or not to be");
/// let stream = std::thread::scope(|scope| {
///     let words = stageflow::from_iter(text.split(' ')).spawn_scoped(scope).unwrap();
///     // Returned out of the scope, it would leave `words` waiting for it, and the scope
///     // waiting for `words`: this does not compile.
///     stageflow::stream_scoped(scope, &words, SubscribeOptions::new()).unwrap()
/// });
/// let _words: Vec<&str> = stream.collect();
/// ```
pub struct ScopedStream<'scope, 'env, T: Send> {
    /// Borrows the scope, so that the stream cannot leave it.
    scope: PhantomData<&'scope mut &'env ()>,
    name: Arc<str>,
    shared: Arc<Shared>,
    tx: Sender<StreamEnvelope<'env, T>>,
    rx: Receiver<StreamEnvelope<'env, T>>,
    subs: Vec<StreamSub<'env, T>>,
    /// Subscriptions confirmed but whose `Subscribed` has not been read yet.
    expecting: usize,
    current: Option<Current<T>>,
    /// An ask owed for a finished batch, sent when the next item is requested.
    owed: Option<(SubscriptionId, usize)>,
    reason: Option<Reason>,
    /// How long dropping the stream waits for its producers to confirm its cancels.
    cancel_timeout: Duration,
}

struct Current<T> {
    sub: SubscriptionId,
    items: std::vec::IntoIter<T>,
    batches: Batches,
    /// Items left in the batch being yielded, and the ask due after it.
    left: usize,
    ask: usize,
}

impl<T: Send> fmt::Debug for ScopedStream<'_, '_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stream")
            .field("name", &self.name)
            .field("subscriptions", &self.subs.len())
            .finish()
    }
}

/// Subscribes the calling thread to `producer` and returns the events as a blocking
/// iterator. Add more producers with [`ScopedStream::subscribe_to`]. For stages in a
/// [`std::thread::scope`], see [`stream_scoped`].
///
/// # Errors
///
/// As [`Stage::subscribe_to`](crate::Stage::subscribe_to): invalid options, a producer that has
/// ended or refuses, or no answer within the subscribe timeout.
///
/// # Examples
///
/// ```
/// use stageflow::SubscribeOptions;
///
/// let squares = stageflow::from_iter((0..1000u64).map(|x| x * x)).spawn()?;
/// let first: Vec<u64> = stageflow::stream(&squares, SubscribeOptions::new().max_demand(10))?
///     .take(10)
///     .collect();
/// assert_eq!(first, vec![0, 1, 4, 9, 16, 25, 36, 49, 64, 81]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn stream<T: Send + 'static>(
    producer: &(impl Upstream<'static, T> + ?Sized),
    options: SubscribeOptions,
) -> Result<Stream<T>, SubscribeError> {
    let mut stream = ScopedStream::new();
    stream.subscribe_to(producer, options)?;
    Ok(stream)
}

/// [`stream`] inside a [`std::thread::scope`]: the calling thread reads the events of
/// `producer`, a stage of the scope whose events may borrow from the caller, as a blocking
/// iterator that stays in the scope (see [`ScopedStream`] for an example).
///
/// # Errors
///
/// As [`stream`].
pub fn stream_scoped<'scope, 'env, T: Send + 'env>(
    _scope: &'scope Scope<'scope, 'env>,
    producer: &(impl Upstream<'env, T> + ?Sized),
    options: SubscribeOptions,
) -> Result<ScopedStream<'scope, 'env, T>, SubscribeError> {
    let mut stream = ScopedStream::new();
    stream.subscribe_to(producer, options)?;
    Ok(stream)
}

impl<'scope, 'env, T: Send + 'env> ScopedStream<'scope, 'env, T> {
    fn new() -> ScopedStream<'scope, 'env, T> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name: Arc<str> = format!("stream-{n}").into();
        let (tx, rx) = bounded(1024);
        ScopedStream {
            scope: PhantomData,
            shared: Arc::new(Shared::new(name.clone())),
            name,
            tx,
            rx,
            subs: Vec::new(),
            expecting: 0,
            current: None,
            owed: None,
            reason: None,
            cancel_timeout: Duration::from_secs(5),
        }
    }

    /// How long dropping the stream waits for each producer to confirm that it saw the
    /// stream's cancel (a producer busy in a long callback confirms late; past this wait the
    /// drop returns anyway, and the producer sees the cancel when its callback returns).
    /// Defaults to `5 s`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use stageflow::SubscribeOptions;
    ///
    /// let numbers = stageflow::from_iter(0..100u64).spawn()?;
    /// let first: Vec<u64> = stageflow::stream(&numbers, SubscribeOptions::new())?
    ///     .cancel_timeout(Duration::from_millis(500))
    ///     .take(3)
    ///     .collect();
    /// assert_eq!(first, [0, 1, 2]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn cancel_timeout(mut self, timeout: Duration) -> ScopedStream<'scope, 'env, T> {
        self.cancel_timeout = timeout;
        self
    }

    /// Subscribes this stream to another producer as well.
    ///
    /// # Errors
    ///
    /// As [`stream`].
    pub fn subscribe_to(
        &mut self,
        producer: &(impl Upstream<'env, T> + ?Sized),
        options: SubscribeOptions,
    ) -> Result<SubscriptionId, SubscribeError> {
        let port = Counted::new(self.tx.clone(), None, self.shared.clone());
        // The stream registers the subscription when it next reads its channel, on this very
        // thread: no waiting for that here.
        let pending = subscribe(&producer.source(), Box::new(port), &self.shared, options)?;
        self.expecting += 1;
        Ok(pending.sub)
    }

    /// How the last subscription ended, once the stream has ended.
    pub fn reason(&self) -> Option<&Reason> {
        self.reason.as_ref()
    }

    fn ask(&mut self, sub: SubscriptionId, n: usize) {
        if let Some(s) = self.subs.iter().find(|s| s.id == sub) {
            // The producer may be gone; its cancel is on its way.
            let _ = s.port.send(Up::Ask { sub, n });
        }
    }

    fn receive(&mut self, env: StreamEnvelope<'env, T>) {
        match env {
            Envelope::Down(Down::Subscribed(s)) => {
                self.expecting = self.expecting.saturating_sub(1);
                let opts = &s.info.options;
                let demand = Demand::new(opts.get_max_demand(), opts.get_min_demand());
                let id = s.info.id;
                let max = demand.max();
                self.subs.push(StreamSub {
                    id,
                    port: s.producer,
                    demand,
                });
                self.ask(id, max);
            }
            Envelope::Down(Down::Events { sub, events }) => {
                let Some(s) = self.subs.iter_mut().find(|s| s.id == sub) else {
                    return;
                };
                let batches = s.demand.receive(events.len());
                self.current = Some(Current {
                    sub,
                    items: events.into_iter(),
                    batches,
                    left: 0,
                    ask: 0,
                });
            }
            Envelope::Down(Down::Cancel { sub, reason }) => {
                self.subs.retain(|s| s.id != sub);
                self.reason = Some(reason);
            }
            _ => {}
        }
    }
}

impl<'env, T: Send + 'env> Iterator for ScopedStream<'_, 'env, T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        if let Some((sub, n)) = self.owed.take() {
            self.ask(sub, n);
        }
        loop {
            if let Some(cur) = &mut self.current {
                if cur.left == 0 {
                    match cur.batches.next() {
                        Some(batch) => {
                            cur.left = batch.len;
                            cur.ask = batch.ask;
                        }
                        None => {
                            self.current = None;
                            continue;
                        }
                    }
                }
                let item = cur.items.next();
                cur.left -= 1;
                if cur.left == 0 && cur.ask > 0 {
                    self.owed = Some((cur.sub, cur.ask));
                }
                if item.is_some() {
                    return item;
                }
                continue;
            }
            if self.subs.is_empty() && self.expecting == 0 {
                return None;
            }
            match self.rx.recv() {
                Ok(env) => self.receive(env),
                Err(_) => return None,
            }
        }
    }
}

impl<T: Send> Drop for ScopedStream<'_, '_, T> {
    /// Cancels every subscription with [`Reason::Normal`] and waits (at most the stream's
    /// [`cancel_timeout`](ScopedStream::cancel_timeout)) for each producer to confirm, as
    /// GenStage's stream does, so that every producer sees the cancel (and not a consumer
    /// that vanished) and nothing is still on its way here.
    fn drop(&mut self) {
        for s in &self.subs {
            let _ = s.port.send_urgent(Up::Cancel {
                sub: s.id,
                reason: Reason::Normal,
            });
        }
        let deadline = crate::timer::deadline(self.cancel_timeout);
        while !self.subs.is_empty() || self.expecting > 0 {
            match self.rx.recv_deadline(deadline) {
                // Subscriptions confirmed but not read yet are cancelled too.
                Ok(Envelope::Down(Down::Subscribed(s))) => {
                    self.expecting = self.expecting.saturating_sub(1);
                    let sub = s.info.id;
                    let _ = s.producer.send_urgent(Up::Cancel {
                        sub,
                        reason: Reason::Normal,
                    });
                    self.subs.push(StreamSub {
                        id: sub,
                        port: s.producer,
                        demand: Demand::new(1, 0),
                    });
                }
                Ok(Envelope::Down(Down::Cancel { sub, .. })) => {
                    self.subs.retain(|s| s.id != sub);
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    }
}
