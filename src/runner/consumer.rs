//! The consumer side of a stage: subscriptions to producers, cutting messages into batches
//! and asking after each (the credit protocol of [`crate::demand`]), and what ends a consumer.

use std::sync::atomic::Ordering;

use log::{error, info, warn};

use super::links::{Inbound, Outlet, PendingSub, UpLink};
use super::{Callbacks, Runner};
use crate::demand::{Batch, Demand};
use crate::envelope::{SubscribeRequest, Subscribed, Up};
use crate::events::Events;
use crate::reason::Reason;
use crate::shared::{bump, StageKind};
use crate::subscription::{DemandMode, Direction, SubscriptionId};

impl<S: Callbacks> Runner<S> {
    pub(super) fn on_subscribed(&mut self, s: Subscribed<S::In>) {
        let Subscribed {
            producer,
            info,
            registered,
        } = s;
        let sub = info.id;
        let pending = self.take_pending(sub);
        if pending.as_ref().is_some_and(|p| p.withdrawn) {
            // Its subscribe failed on the caller's side: the stage never held it. The
            // producer's confirmation of this cancel finds no link and is dropped.
            let _ = producer.send_urgent(Up::Cancel {
                sub,
                reason: withdrawn(),
            });
            return;
        }
        let opts = &info.options;
        let demand = Demand::new(opts.get_max_demand(), opts.get_min_demand());
        let (cell, events) = self
            .shared
            .add_sub(sub, Direction::Upstream, info.peer.clone(), opts);
        let link_info = info.clone();
        self.ups.push(UpLink {
            info: link_info,
            out: Outlet::new(producer, None),
            demand,
            mode: DemandMode::Automatic,
            manual_outstanding: 0,
            cancelling: false,
            quiet: false,
            cell,
            events,
        });
        // The mode is set before the callback's effects apply, so that a manual consumer
        // can ask from `handle_subscribe`.
        let mode = self.call(|s, ctx| s.subscribed(&info, ctx));
        if let Some(link) = self.ups.iter_mut().find(|l| l.info.id == sub) {
            link.mode = mode;
        }
        // What was asked of it while it was pending: a cancel first (then it asks nothing).
        if let Some(p) = pending {
            if let Some(reason) = p.cancel {
                self.cancel(sub, reason);
            } else if p.asks > 0 {
                self.manual_ask(sub, p.asks);
            }
        }
        if let Some(link) = self.ups.iter_mut().find(|l| l.info.id == sub) {
            if mode == DemandMode::Automatic && !link.cancelling {
                let n = link.demand.max();
                link.cell.store(n as u64, Ordering::Relaxed);
                let _ = link.out.send(Up::Ask { sub, n });
            }
        }
        self.apply_effects();
        if let Some(registered) = registered {
            let _ = registered.try_send(());
        }
    }

    /// A handle asks this stage to subscribe: hold the subscription as pending and pass the
    /// request on to the producer's control path (behind any cancel this stage sent there).
    pub(super) fn forward_subscribe(&mut self, req: Box<SubscribeRequest<S::In>>) {
        let sub = req.sub;
        let port = req.producer.clone_box();
        self.pending_subs.push(PendingSub {
            sub,
            cancel: None,
            asks: 0,
            withdrawn: false,
        });
        if port.send_urgent(Up::Subscribe(req)).is_err() {
            // The producer has ended: dropping the request tells the caller so.
            self.take_pending(sub);
        }
    }

    /// A subscribe failed on the caller's side: forget it, or cancel it quietly if it is held.
    pub(super) fn withdraw(&mut self, sub: SubscriptionId) {
        if let Some(p) = self.pending_subs.iter_mut().find(|p| p.sub == sub) {
            p.withdrawn = true;
        } else if let Some(link) = self.ups.iter_mut().find(|l| l.info.id == sub) {
            link.quiet = true;
            self.cancel(sub, withdrawn());
        }
    }

    fn take_pending(&mut self, sub: SubscriptionId) -> Option<PendingSub> {
        let i = self.pending_subs.iter().position(|p| p.sub == sub)?;
        Some(self.pending_subs.swap_remove(i))
    }

    pub(super) fn on_events(&mut self, sub: SubscriptionId, events: Vec<S::In>) {
        bump(&self.shared.cells.events_in, events.len() as u64);
        if S::KIND == StageKind::ProducerConsumer
            && (self.downstream_ready() == 0
                || !self.inbound.is_empty()
                || self.buffer.event_count() > 0)
        {
            // Gate: handle input only while downstream has demand (it produces no asks
            // until then, so upstream stops too).
            self.inbound_events += events.len();
            self.inbound.push_back(Inbound::Events(sub, events));
            return;
        }
        self.handle_events(sub, events);
    }

    /// Cuts a message into batches by the subscription's demand and hands each to
    /// `handle_events`, asking after each batch as the protocol says.
    pub(super) fn handle_events(&mut self, sub: SubscriptionId, events: Vec<S::In>) {
        let len = events.len();
        let Some(at) = self.ups.iter().position(|l| l.info.id == sub) else {
            self.discard(len, "they came from an unknown subscription");
            return;
        };
        let link = &mut self.ups[at];
        bump(&link.events, len as u64);
        if link.mode == DemandMode::Manual {
            link.manual_outstanding = link.manual_outstanding.saturating_sub(len);
            link.cell
                .store(link.manual_outstanding as u64, Ordering::Relaxed);
            self.in_hand = 0;
            let mut iter = events.into_iter();
            self.shared.timing.events(len);
            self.invoke(|s, ctx| s.events(Events::new(&mut iter, len, sub), ctx));
            return;
        }
        let mut iter = events.into_iter();
        if let Some(batch) = link.demand.receive_one(len) {
            link.cell
                .store(link.demand.outstanding() as u64, Ordering::Relaxed);
            self.in_hand = len;
            self.handle_batch(at, sub, &mut iter, batch);
            return;
        }
        let batches = link.demand.receive(len);
        link.cell
            .store(link.demand.outstanding() as u64, Ordering::Relaxed);
        self.in_hand = len;
        for batch in batches {
            if !self.handle_batch(at, sub, &mut iter, batch) {
                return;
            }
        }
    }

    /// Hands one batch to `handle_events`, then asks for what it used up. Returns whether
    /// the stage goes on (it stopped: the rest is counted as discarded).
    #[inline(always)]
    fn handle_batch(
        &mut self,
        at: usize,
        sub: SubscriptionId,
        iter: &mut std::vec::IntoIter<S::In>,
        batch: Batch,
    ) -> bool {
        if batch.excess > 0 {
            error!(
                "stage {}: received {} events in excess from subscription {sub}",
                self.shared.name, batch.excess
            );
        }
        if S::KIND == StageKind::ProducerConsumer {
            self.fx.emitted.reserve(batch.len);
        }
        let rest = iter.len() - batch.len;
        self.in_hand = rest;
        self.shared.timing.events(batch.len);
        self.invoke(|s, ctx| s.events(Events::new(iter, batch.len, sub), ctx));
        // A batch mapped and left half-consumed leaves events behind: drop them.
        while iter.len() > rest {
            iter.next();
        }
        if self.exit.is_some() || self.stop_requested() {
            // The stage stopped (or was told to: a stop takes effect between two batches of
            // one message, so a message cut into many small batches cannot hold it): the rest
            // is not handled and not asked for.
            let rest = iter.len();
            self.in_hand = 0;
            self.discard(rest, "the stage stopped while handling them");
            return false;
        }
        if batch.ask > 0 && self.finishing.is_none() {
            // The callback may have cancelled a subscription: the link may have moved.
            let link = match self.ups.get_mut(at) {
                Some(link) if link.info.id == sub => Some(link),
                _ => self.ups.iter_mut().find(|l| l.info.id == sub),
            };
            if let Some(link) = link {
                if !link.cancelling {
                    let _ = link.out.send(Up::Ask { sub, n: batch.ask });
                }
            }
        }
        true
    }

    /// A subscription to a producer ended: tell the stage, then end or not by cancel mode.
    ///
    /// Fan-in: a permanent subscription that ends normally ends the stage only once every
    /// subscription it holds has ended (the other producers' events are not cut off); an
    /// abnormal end ends it at once.
    pub(super) fn producer_gone(&mut self, sub: SubscriptionId, reason: Reason) {
        let Some(i) = self.ups.iter().position(|l| l.info.id == sub) else {
            // A subscription still pending that the producer refused or dropped.
            self.take_pending(sub);
            return;
        };
        let link = self.ups.remove(i);
        self.shared.remove_sub(sub, Direction::Upstream);
        let info = link.info;
        self.invoke(|s, ctx| s.cancelled(&info, &reason, ctx));
        if self.exit.is_some() {
            return;
        }
        let name = &self.shared.name;
        if !link.quiet && info.options.get_cancel().exits_on(&reason) {
            if !reason.is_normal() {
                info!(
                    "stage {name}: stopping after subscription {sub} to {} ended: {reason}",
                    info.peer
                );
                self.exit = Some(reason);
                return;
            }
            if !self.ups.is_empty() {
                info!(
                    "stage {name}: subscription {sub} to {} ended: {reason}; stopping once \
                     its {} other subscriptions have ended",
                    info.peer,
                    self.ups.len()
                );
            }
            self.finish_with_last_producer.get_or_insert(reason);
        }
        if self.ups.is_empty() {
            if let Some(reason) = self.finish_with_last_producer.take() {
                info!(
                    "stage {name}: stopping after subscription {sub} to {} ended: {reason}",
                    info.peer
                );
                if S::KIND == StageKind::ProducerConsumer {
                    // Nothing is lost on a normal finish: drain, then end.
                    self.finishing.get_or_insert(reason);
                } else {
                    self.exit = Some(reason);
                }
            }
        }
    }

    /// Cancels a subscription of this stage, either side.
    ///
    /// Upstream, the cancel takes the producer's control path: it overtakes the asks queued
    /// before it (the producer ignores asks on a cancelled subscription) and stays ahead of a
    /// subscribe this stage passes on after it. A subscription still pending is cancelled
    /// when it arrives.
    pub(super) fn cancel(&mut self, sub: SubscriptionId, reason: Reason) {
        if let Some(link) = self.ups.iter_mut().find(|l| l.info.id == sub) {
            if !link.cancelling {
                link.cancelling = true;
                // A producer that is gone has sent its own cancel already.
                let _ = link.out.port.send_urgent(Up::Cancel { sub, reason });
            }
        } else if let Some(p) = self.pending_subs.iter_mut().find(|p| p.sub == sub) {
            p.cancel.get_or_insert(reason);
        } else {
            self.remove_consumer(sub, reason, true);
        }
    }

    pub(super) fn manual_ask(&mut self, sub: SubscriptionId, n: usize) {
        let name = &self.shared.name;
        let Some(link) = self.ups.iter_mut().find(|l| l.info.id == sub) else {
            if let Some(p) = self.pending_subs.iter_mut().find(|p| p.sub == sub) {
                // Asked for once it arrives (if its mode is manual).
                p.asks = p.asks.saturating_add(n);
                return;
            }
            warn!("stage {name}: ask on unknown subscription {sub} ignored");
            return;
        };
        if link.mode != DemandMode::Manual {
            warn!("stage {name}: ask on automatic subscription {sub} ignored");
            return;
        }
        if n == 0 || link.cancelling {
            return;
        }
        link.manual_outstanding = link.manual_outstanding.saturating_add(n);
        link.cell
            .store(link.manual_outstanding as u64, Ordering::Relaxed);
        let _ = link.out.send(Up::Ask { sub, n });
    }
}

/// Why a subscription whose subscribe failed on the caller's side is cancelled.
fn withdrawn() -> Reason {
    Reason::error("subscribe withdrawn: it failed on the caller's side")
}
