//! The input side of a stage: its links to its producers, the subscriptions it waits to hear
//! confirmed, what a producer-consumer queued while downstream had no demand, and the demand
//! accounting that decides how each message is cut into batches and when to ask for more.
//!
//! The inlet calls no user callback: it hands the runner what to give `handle_events` (a
//! [`Receipt`]) and sends the asks the runner tells it to after each batch.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use log::warn;

use super::discards::Discards;
use super::links::{Backlogged, Inbound, Outlet, PendingSub, UpLink};
use crate::demand::{Adaptive, Batch, Batches, Demand, Fill};
use crate::envelope::{PortBox, SubscribeRequest, Up};
use crate::reason::Reason;
use crate::shared::{bump, Shared};
use crate::subscription::{DemandMode, Direction, Subscription, SubscriptionId};

/// The input side of a consumer or producer-consumer (see the module doc).
pub(super) struct Inlet<'e, T, M> {
    shared: Arc<Shared>,
    /// How many producer links hold a backlog.
    backlogged: Backlogged,
    pub(super) ups: Vec<UpLink<'e, T>>,
    /// Subscriptions a handle asked for, passed on and not yet confirmed.
    pending: Vec<PendingSub>,
    /// Producer-consumer: what it received and could not handle yet (no downstream demand).
    queue: VecDeque<Inbound<T, M>>,
    /// Events in `queue`.
    queued_events: usize,
    /// Events of the message being handled that were not yet handed to `handle_events` (if
    /// a callback panics, the end counts them as discarded).
    in_hand: usize,
}

/// How the events of one message go to `handle_events`.
pub(super) enum Receipt {
    /// A manual subscription: all at once, asking nothing.
    Manual,
    /// One batch (the common case: the message is no longer than the demand's batch size).
    One(usize, Batch),
    /// Several batches, each followed by its ask.
    Many(usize, Batches),
}

/// What [`Inlet::confirmed`] made of a subscription's confirmation.
pub(super) enum Confirmed {
    /// Its subscribe had failed on the caller's side: cancelled quietly at once.
    Withdrawn,
    /// Linked; what was asked of it while it was pending comes with it.
    Linked(Option<PendingSub>),
}

impl<'e, T, M> Inlet<'e, T, M> {
    pub(super) fn new(shared: Arc<Shared>) -> Inlet<'e, T, M> {
        Inlet {
            shared,
            backlogged: Backlogged::default(),
            ups: Vec::new(),
            pending: Vec::new(),
            queue: VecDeque::new(),
            queued_events: 0,
            in_hand: 0,
        }
    }

    /// How many producers it is subscribed to.
    #[inline]
    pub(super) fn producers(&self) -> usize {
        self.ups.len()
    }

    // -- Subscribing -------------------------------------------------------------------------

    /// A handle asks this stage to subscribe: hold the subscription as pending and pass the
    /// request on to the producer's control path (behind any cancel this stage sent there).
    pub(super) fn forward_subscribe(&mut self, req: Box<SubscribeRequest<'e, T>>) {
        let sub = req.sub;
        let port = req.producer.clone_box();
        self.pending.push(PendingSub {
            sub,
            cancel: None,
            asks: 0,
            withdrawn: false,
        });
        if let Err(back) = port.send_urgent(Up::Subscribe(req)) {
            // The producer has ended: dropping the request tells the caller so (and this
            // stage forgets it here, not by a cancel to itself).
            if let Up::Subscribe(mut req) = back {
                req.unanswered.answered();
            }
            self.take_pending(sub);
        }
    }

    /// A producer confirmed a subscription: link it (in automatic mode until
    /// `handle_subscribe` says otherwise), unless its subscribe was withdrawn.
    pub(super) fn confirmed(
        &mut self,
        producer: PortBox<'e, Up<'e, T>>,
        info: Subscription,
    ) -> Confirmed {
        let sub = info.id;
        let pending = self.take_pending(sub);
        if pending.as_ref().is_some_and(|p| p.withdrawn) {
            // The stage never held it. The producer's confirmation of this cancel finds no
            // link and is dropped.
            let _ = producer.send_urgent(Up::Cancel {
                sub,
                reason: withdrawn(),
            });
            return Confirmed::Withdrawn;
        }
        let opts = &info.options;
        let (max, min) = (opts.get_max_demand(), opts.get_min_demand());
        let adaptive = opts
            .get_adaptive_demand()
            .filter(|&limit| limit > max)
            .map(|limit| Adaptive::new(max, min, limit));
        // An adaptive subscription's bounds move: it refills in whole chunks, so that its
        // asks fall back in step with the batches (see `Demand::in_chunks`).
        let demand = match adaptive {
            Some(_) => Demand::new(max, min).in_chunks(),
            None => Demand::new(max, min),
        };
        let (cell, events) = self
            .shared
            .add_sub(sub, Direction::Upstream, info.peer.clone(), opts);
        self.ups.push(UpLink {
            info,
            out: Outlet::new(producer, None, &self.backlogged),
            demand,
            adaptive,
            mode: DemandMode::Automatic,
            manual_outstanding: 0,
            cancelling: false,
            quiet: false,
            cell,
            events,
        });
        Confirmed::Linked(pending)
    }

    /// Sets the mode `handle_subscribe` chose.
    pub(super) fn set_mode(&mut self, sub: SubscriptionId, mode: DemandMode) {
        if let Some(link) = self.ups.iter_mut().find(|l| l.info.id == sub) {
            link.mode = mode;
        }
    }

    /// An automatic subscription asks its `max_demand`, unless it was cancelled meanwhile.
    pub(super) fn start(&mut self, sub: SubscriptionId) {
        if let Some(link) = self.ups.iter_mut().find(|l| l.info.id == sub) {
            if link.mode == DemandMode::Automatic && !link.cancelling {
                let n = link.demand.max();
                link.cell.store(n as u64, Ordering::Relaxed);
                let _ = link.out.send(Up::Ask { sub, n });
            }
        }
    }

    /// A subscribe failed on the caller's side: forget it, or cancel it quietly if it is held.
    pub(super) fn withdraw(&mut self, sub: SubscriptionId) {
        if let Some(p) = self.pending.iter_mut().find(|p| p.sub == sub) {
            p.withdrawn = true;
        } else if let Some(link) = self.ups.iter_mut().find(|l| l.info.id == sub) {
            link.quiet = true;
            let _ = self.cancel(sub, withdrawn());
        }
    }

    fn take_pending(&mut self, sub: SubscriptionId) -> Option<PendingSub> {
        let i = self.pending.iter().position(|p| p.sub == sub)?;
        Some(self.pending.swap_remove(i))
    }

    // -- Cancelling and asking ---------------------------------------------------------------

    /// Cancels a subscription to a producer. The cancel takes the producer's control path: it
    /// overtakes the asks queued before it (the producer ignores asks on a cancelled
    /// subscription) and stays ahead of a subscribe this stage passes on after it. A
    /// subscription still pending is cancelled when it arrives. Hands the reason back if
    /// `sub` is no subscription of this side.
    pub(super) fn cancel(&mut self, sub: SubscriptionId, reason: Reason) -> Result<(), Reason> {
        if let Some(link) = self.ups.iter_mut().find(|l| l.info.id == sub) {
            if !link.cancelling {
                link.cancelling = true;
                // A producer that is gone has sent its own cancel already.
                let _ = link.out.port.send_urgent(Up::Cancel { sub, reason });
            }
            Ok(())
        } else if let Some(p) = self.pending.iter_mut().find(|p| p.sub == sub) {
            p.cancel.get_or_insert(reason);
            Ok(())
        } else {
            Err(reason)
        }
    }

    /// A manual ask (from a handle or a callback).
    pub(super) fn manual_ask(&mut self, sub: SubscriptionId, n: usize) {
        let name = &self.shared.name;
        let Some(link) = self.ups.iter_mut().find(|l| l.info.id == sub) else {
            if let Some(p) = self.pending.iter_mut().find(|p| p.sub == sub) {
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

    /// After a batch: ask the link at `at` (or wherever `sub`'s link moved, if a callback
    /// cancelled another) for `n` more, unless it is being cancelled.
    ///
    /// `fill` says how full the stage's inbox is; only a subscription with adaptive demand
    /// asks it, and moves its bounds by the answer (growth is asked for at once).
    // Always inlined: it runs after every batch, and is a few instructions once in place.
    #[inline(always)]
    pub(super) fn ask_after_batch(
        &mut self,
        at: usize,
        sub: SubscriptionId,
        mut n: usize,
        fill: impl FnOnce() -> Fill,
    ) {
        let link = match self.ups.get_mut(at) {
            Some(link) if link.info.id == sub => Some(link),
            _ => self.ups.iter_mut().find(|l| l.info.id == sub),
        };
        if let Some(link) = link {
            if link.cancelling {
                return;
            }
            if link.adaptive.is_some() {
                n += adapt(link, fill());
            }
            let _ = link.out.send(Up::Ask { sub, n });
        }
    }

    /// A producer ended the subscription (or confirmed its cancel): the link, if it was held;
    /// a pending subscription it refused is forgotten.
    pub(super) fn remove(&mut self, sub: SubscriptionId) -> Option<UpLink<'e, T>> {
        let Some(i) = self.ups.iter().position(|l| l.info.id == sub) else {
            self.take_pending(sub);
            return None;
        };
        let link = self.ups.remove(i);
        self.shared.remove_sub(sub, Direction::Upstream);
        Some(link)
    }

    // -- Receiving ---------------------------------------------------------------------------

    /// A message of `len` events from `sub`: how to hand them to `handle_events`, by the
    /// subscription's demand. `None` if `sub` is unknown (the events are counted as
    /// discarded).
    #[inline]
    pub(super) fn receive(
        &mut self,
        sub: SubscriptionId,
        len: usize,
        discards: &mut Discards,
    ) -> Option<Receipt> {
        let Some(at) = self.ups.iter().position(|l| l.info.id == sub) else {
            discards.count(len, "they came from an unknown subscription");
            return None;
        };
        let link = &mut self.ups[at];
        bump(&link.events, len as u64);
        if link.mode == DemandMode::Manual {
            link.manual_outstanding = link.manual_outstanding.saturating_sub(len);
            link.cell
                .store(link.manual_outstanding as u64, Ordering::Relaxed);
            self.in_hand = 0;
            return Some(Receipt::Manual);
        }
        self.in_hand = len;
        if let Some(batch) = link.demand.receive_one(len) {
            link.cell
                .store(link.demand.outstanding() as u64, Ordering::Relaxed);
            return Some(Receipt::One(at, batch));
        }
        let batches = link.demand.receive(len);
        link.cell
            .store(link.demand.outstanding() as u64, Ordering::Relaxed);
        Some(Receipt::Many(at, batches))
    }

    /// Events of the message in hand not yet given to `handle_events`.
    #[inline]
    pub(super) fn set_in_hand(&mut self, n: usize) {
        self.in_hand = n;
    }

    // -- A producer-consumer's queue ---------------------------------------------------------

    /// Nothing waits in the queue.
    #[inline]
    pub(super) fn queue_is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Queues what cannot be handled yet, behind what already waits.
    pub(super) fn queue(&mut self, entry: Inbound<T, M>) {
        if let Inbound::Events(_, events) = &entry {
            self.queued_events += events.len();
        }
        self.queue.push_back(entry);
    }

    /// The next entry of the queue, if it can be handled now: events only while downstream
    /// has `ready` demand.
    pub(super) fn next_queued(&mut self, ready: usize) -> Option<Inbound<T, M>> {
        match self.queue.front()? {
            Inbound::Events(..) if ready == 0 => None,
            _ => {
                let entry = self.queue.pop_front()?;
                if let Inbound::Events(_, events) = &entry {
                    self.queued_events -= events.len();
                }
                Some(entry)
            }
        }
    }

    /// Events received and not yet handled (queued).
    #[inline]
    pub(super) fn event_count(&self) -> usize {
        self.queued_events
    }

    // -- Backlogs and ending -----------------------------------------------------------------

    /// Some producer's backlog (asks, a cancel) waits for room in its inbox.
    #[inline]
    pub(super) fn any_backlog(&self) -> bool {
        debug_assert_eq!(
            self.backlogged.any(),
            self.ups.iter().any(|l| l.out.has_backlog()),
            "the count of producer links with a backlog"
        );
        self.backlogged.any()
    }

    /// Messages waiting in the backlogs.
    pub(super) fn backlog_len(&self) -> usize {
        self.ups.iter().map(|l| l.out.backlog_len()).sum()
    }

    /// Sends what fits of every backlog.
    pub(super) fn flush_backlogs(&mut self) {
        for l in &mut self.ups {
            if l.out.has_backlog() && l.out.flush().is_err() {
                // The producer ended; its cancel is already in the inbox.
                l.out.clear_backlog();
            }
        }
    }

    /// The stage ends: drops what is queued and in hand (returns how many events), forgets
    /// the producers whose end was queued (they have confirmed already), and cancels every
    /// other subscription.
    pub(super) fn end(&mut self, reason: &Reason) -> usize {
        let lost = self.queued_events + std::mem::take(&mut self.in_hand);
        for entry in self.queue.drain(..) {
            if let Inbound::Cancel(sub, _) = entry {
                self.ups.retain(|l| l.info.id != sub);
                self.shared.remove_sub(sub, Direction::Upstream);
            }
        }
        self.queued_events = 0;
        for link in &mut self.ups {
            if !link.cancelling {
                link.cancelling = true;
                let sub = link.info.id;
                let _ = link.out.send(Up::Cancel {
                    sub,
                    reason: reason.clone(),
                });
            }
        }
        lost
    }

    /// An ending stage hears a subscription confirmed: it cancels it at once, and waits for
    /// the producer's confirmation like the others'.
    pub(super) fn confirmed_too_late(
        &mut self,
        producer: PortBox<'e, Up<'e, T>>,
        info: Subscription,
        reason: &Reason,
    ) {
        let sub = info.id;
        let mut out = Outlet::new(producer, None, &self.backlogged);
        let _ = out.send(Up::Cancel {
            sub,
            reason: reason.clone(),
        });
        self.ups.push(UpLink {
            info,
            out,
            demand: Demand::new(1, 0),
            adaptive: None,
            mode: DemandMode::Manual,
            manual_outstanding: 0,
            cancelling: true,
            quiet: true,
            cell: Arc::new(AtomicU64::new(0)),
            events: Arc::new(AtomicU64::new(0)),
        });
    }

    /// An ending stage heard a producer's confirmation.
    pub(super) fn confirmed_end(&mut self, sub: SubscriptionId) {
        if let Some(i) = self.ups.iter().position(|l| l.info.id == sub) {
            let link = self.ups.remove(i);
            self.shared.remove_sub(link.info.id, Direction::Upstream);
        }
    }

    /// An ending stage gives up waiting: it forgets its producers.
    pub(super) fn forget_all(&mut self) {
        for link in &self.ups {
            self.shared.remove_sub(link.info.id, Direction::Upstream);
        }
    }
}

/// Why a subscription whose subscribe failed on the caller's side is cancelled.
fn withdrawn() -> Reason {
    Reason::error("subscribe withdrawn: it failed on the caller's side")
}

/// Adaptive demand after an ask made with the inbox `fill`: moves the link's bounds if the
/// rule says so; returns what to add to the ask. Out of line: only adaptive links come here.
#[cold]
#[inline(never)]
fn adapt<T>(link: &mut UpLink<'_, T>, fill: Fill) -> usize {
    let Some(adaptive) = link.adaptive else {
        return 0;
    };
    let Some((max, min)) = adaptive.next(link.demand.max(), fill) else {
        return 0;
    };
    let grow = link.demand.resize(max, min);
    link.cell
        .store(link.demand.outstanding() as u64, Ordering::Relaxed);
    grow
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::Envelope;
    use crate::subscription::SubscribeOptions;
    use crossbeam_channel::{unbounded, Receiver};
    use std::convert::Infallible;

    type Env = Envelope<'static, Infallible, u32, ()>;

    fn inlet() -> Inlet<'static, u32, ()> {
        Inlet::new(Arc::new(Shared::new("inlet".into())))
    }

    fn producer() -> (PortBox<'static, Up<'static, u32>>, Receiver<Env>) {
        let (tx, rx) = unbounded::<Env>();
        (Box::new(tx), rx)
    }

    fn info(sub: SubscriptionId, max: usize, min: usize) -> Subscription {
        Subscription {
            id: sub,
            direction: Direction::Upstream,
            peer: "p".into(),
            options: SubscribeOptions::new().max_demand(max).min_demand(min),
        }
    }

    fn pending(inlet: &mut Inlet<'static, u32, ()>, sub: SubscriptionId) {
        inlet.pending.push(PendingSub {
            sub,
            cancel: None,
            asks: 0,
            withdrawn: false,
        });
    }

    fn sent(rx: &Receiver<Env>) -> Vec<String> {
        rx.try_iter()
            .map(|e| match e {
                Envelope::Up(Up::Ask { n, .. }) => format!("ask {n}"),
                Envelope::Up(Up::Cancel { .. }) => "cancel".to_owned(),
                _ => "other".to_owned(),
            })
            .collect()
    }

    #[test]
    fn smoke_a_confirmed_subscription_asks_its_max_demand() {
        let mut inlet = inlet();
        let sub = SubscriptionId::unique();
        let (port, rx) = producer();
        assert!(matches!(
            inlet.confirmed(port, info(sub, 10, 5)),
            Confirmed::Linked(None)
        ));
        inlet.start(sub);
        assert_eq!(sent(&rx), ["ask 10"]);
        assert_eq!(inlet.producers(), 1);
    }

    #[test]
    fn adaptive_demand_grows_when_the_inbox_is_empty_and_shrinks_when_it_is_full() {
        let mut inlet = inlet();
        let mut discards = Discards::new(inlet.shared.clone());
        let sub = SubscriptionId::unique();
        let (port, rx) = producer();
        let mut info = info(sub, 10, 5);
        info.options = info.options.adaptive_demand(40);
        assert!(matches!(
            inlet.confirmed(port, info),
            Confirmed::Linked(None)
        ));
        inlet.start(sub);
        assert_eq!(sent(&rx), ["ask 10"]);
        // Five events, the refill asks 5: an empty inbox doubles 10/5 to 20/10, the ask adds 10.
        let Some(Receipt::One(at, batch)) = inlet.receive(sub, 5, &mut discards) else {
            panic!("one batch");
        };
        assert_eq!(batch.ask, 5);
        inlet.ask_after_batch(at, sub, batch.ask, || Fill::Empty);
        assert_eq!(sent(&rx), ["ask 15"]);
        assert_eq!(inlet.ups[0].demand.outstanding(), 20);
        // Ten events reach min 10, the refill asks 10: a full inbox halves back to 10/5.
        let Some(Receipt::One(at, batch)) = inlet.receive(sub, 10, &mut discards) else {
            panic!("one batch");
        };
        assert_eq!(batch.ask, 10);
        inlet.ask_after_batch(at, sub, batch.ask, || Fill::Full);
        assert_eq!(sent(&rx), ["ask 10"]);
        assert_eq!(inlet.ups[0].demand.max(), 10);
        // Neither empty nor full: the bounds stay; a fixed subscription never asks the inbox.
        let Some(Receipt::One(at, batch)) = inlet.receive(sub, 5, &mut discards) else {
            panic!("one batch");
        };
        inlet.ask_after_batch(at, sub, batch.ask, || Fill::Some);
        assert_eq!(inlet.ups[0].demand.max(), 10);
        inlet.ups[0].adaptive = None;
        inlet.ask_after_batch(at, sub, 5, || {
            panic!("a fixed subscription looked at the inbox")
        });
    }

    #[test]
    fn a_withdrawn_subscription_is_cancelled_on_arrival_and_never_linked() {
        let mut inlet = inlet();
        let sub = SubscriptionId::unique();
        pending(&mut inlet, sub);
        inlet.withdraw(sub);
        let (port, rx) = producer();
        assert!(matches!(
            inlet.confirmed(port, info(sub, 10, 5)),
            Confirmed::Withdrawn
        ));
        assert_eq!(sent(&rx), ["cancel"]);
        assert_eq!(inlet.producers(), 0);
        assert!(inlet.pending.is_empty(), "no pending entry is left behind");
    }

    #[test]
    fn a_cancel_or_ask_before_the_confirmation_waits_for_it() {
        let mut inlet = inlet();
        let (a, b) = (SubscriptionId::unique(), SubscriptionId::unique());
        pending(&mut inlet, a);
        pending(&mut inlet, b);
        assert!(inlet.cancel(a, Reason::Normal).is_ok());
        inlet.manual_ask(b, 3);
        inlet.manual_ask(b, 4);
        let (port, rx) = producer();
        match inlet.confirmed(port, info(a, 10, 5)) {
            Confirmed::Linked(Some(p)) => assert_eq!(p.cancel, Some(Reason::Normal)),
            _ => panic!("the cancel was not kept"),
        }
        let (port, _rx) = producer();
        match inlet.confirmed(port, info(b, 10, 5)) {
            Confirmed::Linked(Some(p)) => assert_eq!(p.asks, 7),
            _ => panic!("the asks were not kept"),
        }
        // Nothing reached the producer before the runner applied what was kept.
        assert!(sent(&rx).is_empty());
        // A cancel of no subscription of this side is handed back (the runner tries the
        // output side).
        let other = SubscriptionId::unique();
        assert_eq!(inlet.cancel(other, Reason::Shutdown), Err(Reason::Shutdown));
    }

    #[test]
    fn a_message_is_cut_into_batches_by_demand_with_an_ask_after_each() {
        let mut inlet = inlet();
        let mut discards = Discards::new(inlet.shared.clone());
        let sub = SubscriptionId::unique();
        let (port, _rx) = producer();
        let _ = inlet.confirmed(port, info(sub, 10, 5));
        inlet.start(sub);
        match inlet.receive(sub, 5, &mut discards) {
            Some(Receipt::One(0, batch)) => {
                assert_eq!((batch.len, batch.ask), (5, 5));
            }
            _ => panic!("five events of ten asked are one batch"),
        }
        // The next ten: two batches of five (max - min), each followed by its ask.
        match inlet.receive(sub, 10, &mut discards) {
            Some(Receipt::Many(0, batches)) => {
                let cut: Vec<(usize, usize)> = batches.map(|b| (b.len, b.ask)).collect();
                assert_eq!(cut, [(5, 5), (5, 5)]);
            }
            _ => panic!("ten events are two batches"),
        }
        // Events from nowhere are counted as discarded, not handed on.
        let unknown = SubscriptionId::unique();
        assert!(inlet.receive(unknown, 3, &mut discards).is_none());
        assert_eq!(inlet.shared.cells.discarded.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn the_queue_gives_events_only_to_demand_and_keeps_its_order() {
        let mut inlet = inlet();
        let sub = SubscriptionId::unique();
        inlet.queue(Inbound::Events(sub, vec![1, 2, 3]));
        inlet.queue(Inbound::Cancel(sub, Reason::Normal));
        assert_eq!(inlet.event_count(), 3);
        assert!(inlet.next_queued(0).is_none(), "no demand, no events");
        assert!(matches!(inlet.next_queued(1), Some(Inbound::Events(_, e)) if e == [1, 2, 3]));
        assert_eq!(inlet.event_count(), 0);
        // A cancel needs no demand.
        assert!(matches!(inlet.next_queued(0), Some(Inbound::Cancel(..))));
        assert!(inlet.queue_is_empty());
    }
}
