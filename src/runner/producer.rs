//! The producer side of a stage: subscriptions from consumers, their asks, the buffer, the
//! dispatcher, and a producer-consumer's gate on its inbound queue.

use std::sync::atomic::Ordering;

use log::error;

use super::links::{DownLink, Inbound, Outlet};
use super::{Callbacks, Runner};
use crate::dispatcher::{Dispatch, Dispatcher, Outbox};
use crate::envelope::{Down, Port, SubscribeRequest, Subscribed};
use crate::error::SubscribeError;
use crate::reason::Reason;
use crate::shared::{bump, Shared, StageKind};
use crate::subscription::{Direction, Subscription, SubscriptionId};

impl<S: Callbacks> Runner<S> {
    pub(super) fn on_subscribe(&mut self, req: SubscribeRequest<S::Out>) {
        let SubscribeRequest {
            sub,
            consumer,
            consumer_name,
            producer,
            producer_name,
            options,
            ack,
            registered,
            consumer_id,
            pending,
        } = req;
        // A consumer that holds the request as pending hears of a refusal on its control
        // path, and forgets it.
        let refused = |consumer: &dyn Port<Down<S::Out>>, why: &str| {
            if pending {
                let _ = consumer.send_urgent(Down::Cancel {
                    sub,
                    reason: Reason::error(format!("subscription refused: {why}")),
                });
            }
        };
        if self.dispatcher.one_subscription_per_consumer()
            && self
                .downs
                .iter()
                .any(|l| !l.closed && l.consumer_id == consumer_id)
        {
            error!(
                "stage {}: {consumer_name} is already subscribed; the new subscription is refused",
                self.shared.name
            );
            let message = format!("{consumer_name} is already subscribed");
            refused(&*consumer, &message);
            let _ = ack.send(Err(SubscribeError::Rejected {
                producer: self.shared.name.to_string(),
                message,
            }));
            return;
        }
        if let Err(e) = self.dispatcher.subscribe(sub, &options) {
            refused(&*consumer, &e.to_string());
            let _ = ack.send(Err(e));
            return;
        }
        // Acknowledge first: a subscriber that gave up waiting has dropped its end, and then
        // the request is dropped without the consumer ever hearing of it.
        if ack.try_send(Ok(())).is_err() {
            refused(&*consumer, "the subscriber gave up waiting");
            let demand = self.route(|d, out| d.cancel(sub, out));
            self.pending_demand = self.pending_demand.saturating_add(demand);
            return;
        }
        let info = Subscription {
            id: sub,
            direction: Direction::Downstream,
            peer: consumer_name.clone(),
            options: options.clone(),
        };
        let mut out = Outlet::new(consumer, Some(self.shared.clone()));
        let subscribed = Down::Subscribed(Box::new(Subscribed {
            producer,
            info: Subscription {
                id: sub,
                direction: Direction::Upstream,
                peer: producer_name,
                options,
            },
            registered,
        }));
        if out.send(subscribed).is_err() {
            // The consumer ended meanwhile; its subscription ends with it.
            let demand = self.route(|d, out| d.cancel(sub, out));
            self.pending_demand = self.pending_demand.saturating_add(demand);
            return;
        }
        let (cell, events) =
            self.shared
                .add_sub(sub, Direction::Downstream, consumer_name, &info.options);
        self.had_consumers = true;
        self.downs.push(DownLink {
            info: info.clone(),
            out,
            consumer_id,
            owed: 0,
            closed: false,
            cell,
            events,
        });
        self.invoke(|s, ctx| {
            s.subscribed(&info, ctx);
        });
    }

    pub(super) fn on_ask(&mut self, sub: SubscriptionId, n: usize) {
        let Some(link) = self
            .downs
            .iter_mut()
            .find(|l| l.info.id == sub && !l.closed)
        else {
            // Asks racing with a cancel: the subscription is already gone.
            return;
        };
        link.owed = link.owed.saturating_add(n);
        link.cell.store(link.owed as u64, Ordering::Relaxed);
        let demand = match self.dispatcher.ask_direct(sub, n) {
            Some(demand) => demand,
            None => self.route(|d, out| d.ask(sub, n, out)),
        };
        self.demand_arrived(demand);
    }

    /// New demand reached the producer side: serve it from the buffer, then from the stage.
    pub(super) fn demand_arrived(&mut self, demand: usize) {
        match S::KIND {
            StageKind::Producer if self.accumulating => {
                // Record the demand; what the buffer covers is taken out and held back.
                let covered = self.buffer.take(demand);
                let rest = demand - covered.len();
                self.held.demand(covered, rest);
            }
            StageKind::Producer => {
                let taken = if self.buffer.is_empty() {
                    0
                } else {
                    self.flush_buffer()
                };
                let rest = demand.saturating_sub(taken);
                if rest > 0 && self.finishing.is_none() && self.exit.is_none() {
                    self.handle_demand(rest);
                }
            }
            StageKind::ProducerConsumer => {
                self.counter = self.counter.saturating_add(demand);
                self.pump();
            }
            StageKind::Consumer => {}
        }
    }

    /// Calls `handle_demand(n)`, with room for `n` events reserved (up to a cap: a huge demand
    /// must not allocate a huge batch up front).
    pub(super) fn handle_demand(&mut self, n: usize) {
        const RESERVE_CAP: usize = 65_536;
        let room = n.min(RESERVE_CAP);
        if self.fx.emitted.capacity() == 0 {
            // The last batch left with its message: a fresh one, allocated once.
            self.fx.emitted = Vec::with_capacity(room);
        } else {
            self.fx.emitted.reserve(room);
        }
        self.invoke(|s, ctx| s.demand(n, ctx));
    }

    /// Producer-consumer: deliver the buffer, then handle queued input while there is demand.
    /// Bounded: every step takes one entry off the inbound queue.
    pub(super) fn pump(&mut self) {
        loop {
            if self.exit.is_some() || self.stop_requested() {
                return;
            }
            self.flush_buffer();
            if self.buffer.event_count() > 0 {
                return;
            }
            match self.inbound.front() {
                None => return,
                Some(Inbound::Events(..)) if self.downstream_ready() == 0 => return,
                Some(_) => {}
            }
            match self.inbound.pop_front() {
                Some(Inbound::Events(sub, events)) => {
                    self.inbound_events -= events.len();
                    self.handle_events(sub, events);
                }
                Some(Inbound::Cancel(sub, reason)) => self.producer_gone(sub, reason),
                // Its place in the queue is reached: behind what is buffered, or handled now
                // (as GenStage does), never back in the queue.
                Some(Inbound::Info(msg)) => match self.buffer.push_info(msg) {
                    Ok(()) => {}
                    Err(msg) => self.invoke(|s, ctx| s.message(msg, ctx)),
                },
                None => return,
            }
        }
    }

    /// Delivers buffered events to the demand the dispatcher has, in order, delivering each
    /// info when the events before it have left. Returns how many events left the buffer.
    pub(super) fn flush_buffer(&mut self) -> usize {
        let mut taken = 0;
        loop {
            while let Some(info) = self.buffer.pop_due_info() {
                self.invoke(|s, ctx| s.message(info, ctx));
            }
            if self.exit.is_some() || self.accumulating || self.buffer.event_count() == 0 {
                break;
            }
            let ready = self.dispatcher.ready();
            if ready == 0 {
                break;
            }
            let mut batch = self.buffer.take(ready);
            if batch.is_empty() {
                // An info marker is next: it is due now.
                continue;
            }
            let n = batch.len();
            self.dispatch(&mut batch);
            taken += n - batch.len();
            if !batch.is_empty() {
                self.buffer.unget(batch);
                break;
            }
        }
        taken
    }

    /// Sends `events` whole to one consumer if the dispatcher says they go that way (the
    /// common case of a [`DemandDispatcher`](crate::dispatcher::DemandDispatcher) whose top
    /// consumer's demand covers them): no outbox, the same accounting as [`Runner::dispatch`].
    /// Hands them back otherwise.
    #[inline]
    pub(super) fn dispatch_whole(&mut self, events: Vec<S::Out>) -> Result<(), Vec<S::Out>> {
        let Some(sub) = self.dispatcher.take_whole(events.len()) else {
            return Err(events);
        };
        if S::KIND == StageKind::ProducerConsumer {
            self.counter = self.counter.saturating_sub(events.len());
        }
        let lost = deliver(&mut self.downs, &self.shared, &mut self.gone, sub, events);
        self.discard(lost, "no such subscription");
        Ok(())
    }

    /// Hands `events` to the dispatcher and sends each consumer its message; what no consumer
    /// has demand for stays in `events`. The dispatcher sees every event, with consumers or
    /// without, so that its accounting of what is pending agrees with the buffer.
    #[inline]
    pub(super) fn dispatch(&mut self, events: &mut Vec<S::Out>) {
        let before = events.len();
        self.route(|d, out| d.dispatch(events, out));
        if S::KIND == StageKind::ProducerConsumer {
            // Downstream demand is used up by the events the dispatcher took, whatever it did
            // with them (a broadcast sends each to every consumer).
            self.counter = self.counter.saturating_sub(before - events.len());
        }
    }

    /// Runs `f` on the dispatcher with an outbox that sends to the consumers, then accounts for
    /// what the dispatcher did: discards, and demand it created (served at the end of the
    /// turn). Consumers found gone are removed at the end of the turn too.
    pub(super) fn route<R>(
        &mut self,
        f: impl FnOnce(&mut Dispatch<S::Out>, &mut Outbox<'_, S::Out>) -> R,
    ) -> R {
        let downs = &mut self.downs;
        let shared = &self.shared;
        let gone = &mut self.gone;
        let mut lost = 0usize;
        let (r, discarded, demand) = {
            let mut send = |sub: SubscriptionId, batch: Vec<S::Out>| {
                lost += deliver(downs, shared, gone, sub, batch);
            };
            let mut out = Outbox::new(&mut send);
            let r = f(&mut self.dispatcher, &mut out);
            (r, out.discarded(), out.upstream_demand())
        };
        self.discard(lost, "no such subscription");
        self.discard(discarded, "dropped by the dispatcher");
        self.pending_demand = self.pending_demand.saturating_add(demand);
        r
    }

    /// Buffers events no consumer had demand for, counting and logging discards.
    pub(super) fn store(&mut self, events: Vec<S::Out>) {
        let discarded = self.buffer.store(events);
        if discarded > 0 {
            bump(&self.shared.cells.discarded, discarded as u64);
            // The stage may log it its own way, or not at all (GenStage's format_discarded).
            if self.stage.format_discarded(discarded) {
                self.discard_log
                    .note(&self.shared.name, discarded, " ", "from buffer");
            }
        }
    }

    /// A consumer leaves (it cancelled, or ended, or `notify` is false and it is unreachable).
    pub(super) fn remove_consumer(&mut self, sub: SubscriptionId, reason: Reason, notify: bool) {
        let Some(link) = self
            .downs
            .iter_mut()
            .find(|l| l.info.id == sub && !l.closed)
        else {
            return;
        };
        link.closed = true;
        self.closed_links += 1;
        if notify {
            // Confirm to the consumer; it may be gone already, which the backlog shows.
            if link
                .out
                .send(Down::Cancel {
                    sub,
                    reason: reason.clone(),
                })
                .is_err()
            {
                self.gone.push(sub);
            }
        }
        let info = link.info.clone();
        self.shared.remove_sub(sub, Direction::Downstream);
        self.drop_closed_links();
        self.invoke(|s, ctx| s.cancelled(&info, &reason, ctx));
        let demand = self.route(|d, out| d.cancel(sub, out));
        self.pending_demand = self.pending_demand.saturating_add(demand);
    }
}

/// Sends `batch` to the consumer of `sub`, accounting for its demand. Returns the events lost
/// (none, unless `sub` is no consumer of this stage's: a dispatcher's fault). A consumer found
/// gone is noted in `gone`; its events stay in the backlog, counted when the link is reaped.
#[inline]
fn deliver<T>(
    downs: &mut [DownLink<T>],
    shared: &Shared,
    gone: &mut Vec<SubscriptionId>,
    sub: SubscriptionId,
    batch: Vec<T>,
) -> usize {
    let n = batch.len();
    let Some(link) = downs.iter_mut().find(|l| l.info.id == sub && !l.closed) else {
        error!(
            "stage {}: dispatcher sent {n} events to unknown subscription {sub}; discarded",
            shared.name
        );
        return n;
    };
    if n == 0 {
        return 0;
    }
    if n > link.owed {
        error!(
            "stage {}: dispatcher sent {} events to {} which asked for {}",
            shared.name, n, link.info.peer, link.owed
        );
    }
    link.owed = link.owed.saturating_sub(n);
    link.cell.store(link.owed as u64, Ordering::Relaxed);
    bump(&link.events, n as u64);
    if link.out.send(Down::Events { sub, events: batch }).is_err() {
        gone.push(sub);
    }
    0
}
