//! The output side of a stage: its consumers' links, the dispatcher, the buffer, what an
//! accumulating producer holds back, and the demand that came from downstream.
//!
//! The emitter calls no user callback. It takes events and asks, sends what its consumers have
//! asked for, keeps the rest, and hands back what the runner must act on: demand to serve with
//! `handle_demand`, an info whose turn in the buffer has come, a subscription whose consumer is
//! gone, a replay step. Every event that leaves it is counted: sent (`events_out`, once in the
//! consumer's inbox), buffered, or discarded (through [`Discards`]).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use log::error;

use super::discards::Discards;
use super::held::{Held, Replay};
use super::links::{Backlogged, DownLink, Outlet};
use crate::buffer::Buffer;
use crate::dispatcher::{Dispatch, Dispatcher, Outbox};
use crate::envelope::{Down, Port, SubscribeRequest, Subscribed};
use crate::error::SubscribeError;
use crate::reason::Reason;
use crate::shared::{bump, Shared};
use crate::subscription::{BufferKeep, Direction, ProducerDemand, Subscription, SubscriptionId};

/// The output side of a producer or producer-consumer (see the module doc).
pub(super) struct Emitter<'e, T, M> {
    shared: Arc<Shared>,
    /// How many consumer links hold a backlog.
    backlogged: Backlogged,
    pub(super) downs: Vec<DownLink<'e, T>>,
    dispatcher: Dispatch<'e, T>,
    buffer: Buffer<T, M>,
    /// Producer in accumulate mode: what it holds back (see `held`).
    accumulating: bool,
    held: Held<T>,
    /// Demand that a dispatcher created, served on the next turn (never in a loop inside one).
    pending_demand: usize,
    /// Consumers whose inbox was found gone, to be removed at the end of the turn (removing
    /// them in the middle of a dispatch would hand out demand before its leftovers are stored).
    gone: Vec<SubscriptionId>,
    /// Consumer links marked closed and not yet removed (they wait for their backlog).
    closed_links: usize,
    /// Whether a consumer ever subscribed (a finishing stage whose consumers have all left has
    /// nobody to deliver to).
    had_consumers: bool,
    /// Producer-consumer: downstream demand not yet met (GenStage's counter). A producer's
    /// stays at zero.
    counter: usize,
}

/// One step of a flush of the buffer (see [`Emitter::flush_step`]).
pub(super) enum Flushed {
    /// `n` events left; the buffer may have more for the demand there is.
    More(usize),
    /// `n` events left; no more can now.
    Done(usize),
}

/// One step of the replay when an accumulating producer starts to forward.
pub(super) enum Replayed<T> {
    /// The covered events went out (or back to the buffer's front).
    Covered,
    /// A batch emitted while accumulating, to go out behind the buffer.
    Emitted(Vec<T>),
    /// A demand to hand to `handle_demand`.
    Demand(usize),
}

impl<'e, T: Send, M> Emitter<'e, T, M> {
    pub(super) fn new(
        shared: Arc<Shared>,
        mut dispatcher: Dispatch<'e, T>,
        buffer_size: Option<usize>,
        buffer_keep: BufferKeep,
        accumulate: bool,
    ) -> Emitter<'e, T, M> {
        dispatcher.attach(&shared.name);
        Emitter {
            shared,
            backlogged: Backlogged::default(),
            downs: Vec::new(),
            dispatcher,
            buffer: Buffer::new(buffer_size, buffer_keep),
            accumulating: accumulate,
            held: Held::new(),
            pending_demand: 0,
            gone: Vec::new(),
            closed_links: 0,
            had_consumers: false,
            counter: 0,
        }
    }

    // -- Consumers ---------------------------------------------------------------------------

    /// A consumer asks to subscribe: refused (the consumer and the caller are told why), or
    /// added; returns the subscription for `handle_subscribe` if added.
    pub(super) fn subscribe(
        &mut self,
        req: SubscribeRequest<'e, T>,
        discards: &mut Discards,
    ) -> Option<Subscription> {
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
            mut unanswered,
        } = req;
        // Every path below answers it (and tells a pending consumer of a refusal).
        unanswered.answered();
        // A consumer that holds the request as pending hears of a refusal on its control
        // path, and forgets it.
        let refused = |consumer: &dyn Port<Down<'e, T>>, why: &str| {
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
            return None;
        }
        if let Err(e) = self.dispatcher.subscribe(sub, &options) {
            refused(&*consumer, &e.to_string());
            let _ = ack.send(Err(e));
            return None;
        }
        // Acknowledge first: a subscriber that gave up waiting has dropped its end, and then
        // the request is dropped without the consumer ever hearing of it.
        if ack.try_send(Ok(())).is_err() {
            refused(&*consumer, "the subscriber gave up waiting");
            self.forget_in_dispatcher(sub, discards);
            return None;
        }
        let info = Subscription {
            id: sub,
            direction: Direction::Downstream,
            peer: consumer_name.clone(),
            options: options.clone(),
        };
        let mut out = Outlet::new(consumer, Some(self.shared.clone()), &self.backlogged);
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
            self.forget_in_dispatcher(sub, discards);
            return None;
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
        Some(info)
    }

    /// A consumer asks for `n` more: returns the demand this creates upstream of the
    /// dispatcher (for the buffer and then the stage to serve), or `None` if the subscription
    /// is gone.
    #[inline]
    pub(super) fn ask(
        &mut self,
        sub: SubscriptionId,
        n: usize,
        discards: &mut Discards,
    ) -> Option<usize> {
        let Some(link) = self
            .downs
            .iter_mut()
            .find(|l| l.info.id == sub && !l.closed)
        else {
            // Asks racing with a cancel: the subscription is already gone.
            return None;
        };
        link.owed = link.owed.saturating_add(n);
        link.cell.store(link.owed as u64, Ordering::Relaxed);
        Some(match self.dispatcher.ask_direct(sub, n) {
            Some(demand) => demand,
            None => self.route(discards, |d, out| d.ask(sub, n, out)),
        })
    }

    /// A consumer leaves: its link is closed (kept until its backlog, ending with the cancel
    /// if `notify`, is delivered). Returns its subscription, for `handle_cancel`, if it was
    /// open. The dispatcher still holds it: [`Emitter::forget_in_dispatcher`] comes after
    /// the callback.
    pub(super) fn close(
        &mut self,
        sub: SubscriptionId,
        reason: &Reason,
        notify: bool,
    ) -> Option<Subscription> {
        let link = self
            .downs
            .iter_mut()
            .find(|l| l.info.id == sub && !l.closed)?;
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
        Some(info)
    }

    /// The dispatcher lets go of a subscription; the demand this frees is served next turn.
    pub(super) fn forget_in_dispatcher(&mut self, sub: SubscriptionId, discards: &mut Discards) {
        let demand = self.route(discards, |d, out| d.cancel(sub, out));
        self.pending_demand = self.pending_demand.saturating_add(demand);
    }

    /// The next consumer found gone whose link is still open (for the runner to remove, as
    /// GenStage does when a consumer goes down); what waited for it is counted as lost, and
    /// closed links found gone are dropped.
    pub(super) fn next_gone(&mut self, discards: &mut Discards) -> Option<SubscriptionId> {
        while let Some(sub) = self.gone.pop() {
            let Some(link) = self.downs.iter_mut().find(|l| l.info.id == sub) else {
                continue;
            };
            let lost = link.out.backlog_events();
            link.out.clear_backlog();
            let closed = link.closed;
            discards.count(lost, "its consumer ended");
            if closed {
                self.drop_closed_links();
            } else {
                return Some(sub);
            }
        }
        None
    }

    /// Consumers found gone wait to be removed.
    #[inline]
    pub(super) fn any_gone(&self) -> bool {
        !self.gone.is_empty()
    }

    /// Notes a consumer found gone (while waiting with a backlog).
    pub(super) fn gone(&mut self, at: usize) {
        self.gone.push(self.downs[at].info.id);
    }

    /// Closed links wait for their backlog.
    #[inline]
    pub(super) fn any_closed(&self) -> bool {
        self.closed_links > 0
    }

    /// Removes closed consumer links whose backlog (ending with the cancel) is delivered.
    pub(super) fn drop_closed_links(&mut self) {
        if self.closed_links > 0 {
            self.downs.retain(|l| !l.closed || l.out.has_backlog());
            self.closed_links = self.downs.iter().filter(|l| l.closed).count();
        }
    }

    /// Some consumer's backlog waits for room in its inbox.
    #[inline]
    pub(super) fn any_backlog(&self) -> bool {
        debug_assert_eq!(
            self.backlogged.any(),
            self.downs.iter().any(|l| l.out.has_backlog()),
            "the count of consumer links with a backlog"
        );
        self.backlogged.any()
    }

    /// Messages waiting in the backlogs, and links (closed or not) still held.
    pub(super) fn backlog_len(&self) -> usize {
        self.downs.len()
            + self
                .downs
                .iter()
                .map(|l| l.out.backlog_len())
                .sum::<usize>()
    }

    /// Sends what fits of every backlog; drops closed links whose backlog is delivered.
    pub(super) fn flush_backlogs(&mut self) {
        for l in &mut self.downs {
            if l.out.has_backlog() && l.out.flush().is_err() {
                self.gone.push(l.info.id);
            }
        }
        self.drop_closed_links();
    }

    /// Every consumer it had has left (a finishing stage has nobody to deliver to).
    pub(super) fn deserted(&self) -> bool {
        self.had_consumers && !self.downs.iter().any(|l| !l.closed)
    }

    // -- Demand ------------------------------------------------------------------------------

    /// Demand a dispatcher created, taken to be served now.
    #[inline]
    pub(super) fn take_pending_demand(&mut self) -> usize {
        std::mem::take(&mut self.pending_demand)
    }

    #[inline]
    pub(super) fn has_pending_demand(&self) -> bool {
        self.pending_demand > 0
    }

    /// Producer-consumer: downstream demand arrived.
    #[inline]
    pub(super) fn add_downstream_demand(&mut self, n: usize) {
        self.counter = self.counter.saturating_add(n);
    }

    /// The demand the dispatcher can serve now.
    #[inline]
    pub(super) fn ready(&self) -> usize {
        self.dispatcher.ready()
    }

    /// Producer-consumer: the downstream demand it may still serve (GenStage's counter, and
    /// never more than its dispatcher can take now: a broadcast's demand falls to the slowest
    /// consumer's when one subscribes).
    #[inline]
    pub(super) fn downstream_ready(&self) -> usize {
        self.counter.min(self.dispatcher.ready())
    }

    // -- Accumulate and forward --------------------------------------------------------------

    #[inline]
    pub(super) fn is_accumulating(&self) -> bool {
        self.accumulating
    }

    pub(super) fn demand_mode(&self) -> ProducerDemand {
        if self.accumulating {
            ProducerDemand::Accumulate
        } else {
            ProducerDemand::Forward
        }
    }

    /// An accumulating producer records demand; what the buffer covers is taken out and held.
    pub(super) fn hold_demand(&mut self, demand: usize) {
        let covered = self.buffer.take(demand);
        let rest = demand - covered.len();
        self.held.demand(covered, rest);
    }

    /// Switches between accumulating and forwarding; returns how many replay steps are held
    /// now (a replay that takes this many takes only what was held before it started).
    pub(super) fn set_accumulating(&mut self, accumulate: bool) -> usize {
        self.accumulating = accumulate;
        self.held.steps()
    }

    /// The next step of the replay, in emission order (see `held`): the events the buffer
    /// covered go straight to the dispatcher (what it cannot take goes back to the buffer's
    /// front, ahead of the rest); the runner sends emitted batches and serves demands.
    pub(super) fn replay(&mut self, discards: &mut Discards) -> Option<Replayed<T>> {
        match self.held.next()? {
            Replay::Covered(mut events) => {
                // Older than anything in the buffer.
                self.dispatch(&mut events, discards);
                if !events.is_empty() {
                    self.buffer.unget(events);
                }
                Some(Replayed::Covered)
            }
            Replay::Emitted(events) => Some(Replayed::Emitted(events)),
            Replay::Demand(n) => Some(Replayed::Demand(n)),
        }
    }

    // -- Events ------------------------------------------------------------------------------

    /// Emitted events, held back while accumulating.
    pub(super) fn hold_emitted(&mut self, events: Vec<T>) {
        self.held.emitted(events);
    }

    /// Sends `events` whole to one consumer if nothing is buffered and the dispatcher says
    /// they go that way (the common case of a
    /// [`DemandDispatcher`](crate::dispatcher::DemandDispatcher) whose top consumer's demand
    /// covers them): no outbox, the same accounting as [`Emitter::dispatch`]. Hands them back
    /// otherwise.
    #[inline]
    pub(super) fn send_whole(
        &mut self,
        events: Vec<T>,
        discards: &mut Discards,
    ) -> Result<(), Vec<T>> {
        if self.buffer.event_count() != 0 {
            return Err(events);
        }
        let Some(sub) = self.dispatcher.take_whole(events.len()) else {
            return Err(events);
        };
        self.counter = self.counter.saturating_sub(events.len());
        let lost = deliver(&mut self.downs, &self.shared, &mut self.gone, sub, events);
        if lost > 0 {
            discards.count(lost, "no such subscription");
        }
        Ok(())
    }

    /// Newly emitted events that [`Emitter::send_whole`] did not send, after the buffer was
    /// flushed: to the dispatcher if the buffer is empty (or the dispatcher has no demand and
    /// takes them as leftovers only), then what is left into the buffer. Returns how many
    /// the full buffer discarded.
    ///
    /// With events still buffered, a dispatcher that knows its demand has none: it takes these
    /// as leftovers only, and its accounting (what is pending, what was requested) sees them.
    /// One that does not know could send them ahead of the buffer: it does not see them until
    /// they leave the buffer.
    #[inline]
    pub(super) fn place(&mut self, mut events: Vec<T>, discards: &mut Discards) -> usize {
        if self.buffer.event_count() == 0 || self.dispatcher.ready() == 0 {
            self.dispatch(&mut events, discards);
        }
        if events.is_empty() {
            0
        } else {
            self.buffer.store(events)
        }
    }

    /// Events wait in the buffer.
    #[inline]
    pub(super) fn has_buffered_events(&self) -> bool {
        self.buffer.event_count() > 0
    }

    /// Events or infos wait in the buffer.
    #[inline]
    pub(super) fn buffer_is_empty(&self) -> bool {
        self.buffer.is_empty()
    }

    /// An info whose events have all left the buffer: its turn has come.
    #[inline]
    pub(super) fn pop_due_info(&mut self) -> Option<M> {
        self.buffer.pop_due_info()
    }

    /// An info behind the events buffered now; handed back if there are none.
    pub(super) fn push_info(&mut self, msg: M) -> Result<(), M> {
        self.buffer.push_info(msg)
    }

    /// One step of a flush: buffered events to the demand the dispatcher has. The runner
    /// delivers the infos that fall due between steps.
    pub(super) fn flush_step(&mut self, discards: &mut Discards) -> Flushed {
        if self.accumulating || self.buffer.event_count() == 0 {
            return Flushed::Done(0);
        }
        let ready = self.dispatcher.ready();
        if ready == 0 {
            return Flushed::Done(0);
        }
        let mut batch = self.buffer.take(ready);
        if batch.is_empty() {
            // An info marker is next: it is due now.
            return Flushed::More(0);
        }
        let n = batch.len();
        self.dispatch(&mut batch, discards);
        let taken = n - batch.len();
        if batch.is_empty() {
            Flushed::More(taken)
        } else {
            self.buffer.unget(batch);
            Flushed::Done(taken)
        }
    }

    /// Hands `events` to the dispatcher and sends each consumer its message; what no consumer
    /// has demand for stays in `events`. The dispatcher sees every event, with consumers or
    /// without, so that its accounting of what is pending agrees with the buffer.
    #[inline]
    pub(super) fn dispatch(&mut self, events: &mut Vec<T>, discards: &mut Discards) {
        let before = events.len();
        self.route(discards, |d, out| d.dispatch(events, out));
        // Downstream demand is used up by the events the dispatcher took, whatever it did
        // with them (a broadcast sends each to every consumer).
        self.counter = self.counter.saturating_sub(before - events.len());
    }

    /// Runs `f` on the dispatcher with an outbox that sends to the consumers, then accounts for
    /// what the dispatcher did: discards, and demand it created (served at the end of the
    /// turn). Consumers found gone are removed at the end of the turn too.
    fn route<R>(
        &mut self,
        discards: &mut Discards,
        f: impl FnOnce(&mut Dispatch<'e, T>, &mut Outbox<'_, T>) -> R,
    ) -> R {
        let downs = &mut self.downs;
        let shared = &self.shared;
        let gone = &mut self.gone;
        let mut lost = 0usize;
        let (r, discarded, demand) = {
            let mut send = |sub: SubscriptionId, batch: Vec<T>| {
                lost += deliver(downs, shared, gone, sub, batch);
            };
            let mut out = Outbox::new(&mut send);
            let r = f(&mut self.dispatcher, &mut out);
            (r, out.discarded(), out.upstream_demand())
        };
        discards.count(lost, "no such subscription");
        discards.count(discarded, "dropped by the dispatcher");
        self.pending_demand = self.pending_demand.saturating_add(demand);
        r
    }

    // -- Counting and ending -----------------------------------------------------------------

    /// Events held: buffered, held back, in backlogs, or queued in the dispatcher.
    #[inline]
    pub(super) fn event_count(&self) -> usize {
        let mut n = self.buffer.event_count() + self.held.event_count();
        for l in &self.downs {
            if l.out.has_backlog() {
                n += l.out.backlog_events();
            }
        }
        n + self.dispatcher.held()
    }

    /// Nothing is left to deliver: buffer, held-back events, dispatcher queues.
    pub(super) fn is_delivered(&self) -> bool {
        self.buffer.is_empty() && self.held.is_empty() && self.dispatcher.held() == 0
    }

    /// The stage ends: drops what is held (returns how many events), and tells every consumer
    /// still subscribed.
    pub(super) fn end(&mut self, reason: &Reason) -> usize {
        let (buffered, _) = self.buffer.clear();
        let mut lost = buffered + self.dispatcher.held();
        // What the dispatcher held is counted above: drop it with the dispatcher.
        self.dispatcher = Dispatch::demand();
        lost += self.held.clear();
        for link in &mut self.downs {
            if !link.closed {
                link.closed = true;
                self.closed_links += 1;
                let sub = link.info.id;
                self.shared.remove_sub(sub, Direction::Downstream);
                let _ = link.out.send(Down::Cancel {
                    sub,
                    reason: reason.clone(),
                });
            }
        }
        lost
    }

    /// An ending stage: the events of consumers found gone, which can no longer be delivered.
    pub(super) fn take_gone_backlogs(&mut self) -> usize {
        let mut lost = 0;
        for sub in std::mem::take(&mut self.gone) {
            if let Some(l) = self.downs.iter_mut().find(|l| l.info.id == sub) {
                lost += l.out.backlog_events();
                l.out.clear_backlog();
            }
        }
        lost
    }

    /// An ending stage that gives up: the events still in backlogs.
    pub(super) fn backlog_events(&self) -> usize {
        self.downs.iter().map(|l| l.out.backlog_events()).sum()
    }

    /// An ending stage is done: it forgets its consumers.
    pub(super) fn clear_links(&mut self) {
        self.downs.clear();
    }
}

/// Sends `batch` to the consumer of `sub`, accounting for its demand. Returns the events lost
/// (none, unless `sub` is no consumer of this stage's: a dispatcher's fault). A consumer found
/// gone is noted in `gone`; its events stay in the backlog, counted when the link is reaped.
#[inline]
fn deliver<'e, T>(
    downs: &mut [DownLink<'e, T>],
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

#[cfg(test)]
mod tests {
    use super::*;

    fn emitter(accumulate: bool) -> (Emitter<'static, u32, &'static str>, Discards) {
        let shared = Arc::new(Shared::new("emitter".into()));
        let discards = Discards::new(shared.clone());
        let e = Emitter::new(
            shared,
            Dispatch::demand(),
            None,
            BufferKeep::Last,
            accumulate,
        );
        (e, discards)
    }

    #[test]
    fn smoke_events_no_consumer_asked_for_wait_in_the_buffer() {
        let (mut e, mut d) = emitter(false);
        let events = e.send_whole(vec![1, 2, 3], &mut d).unwrap_err();
        assert_eq!(e.place(events, &mut d), 0);
        assert_eq!(e.event_count(), 3);
        assert!(!e.is_delivered());
        // New events queue behind buffered ones: never sent whole past them.
        assert!(e.send_whole(vec![4], &mut d).is_err());
        assert!(matches!(e.flush_step(&mut d), Flushed::Done(0)));
    }

    #[test]
    fn an_info_waits_for_the_events_buffered_before_it() {
        let (mut e, mut d) = emitter(false);
        assert_eq!(
            e.push_info("alone"),
            Err("alone"),
            "nothing buffered: at once"
        );
        let events = e.send_whole(vec![1, 2], &mut d).unwrap_err();
        e.place(events, &mut d);
        assert_eq!(e.push_info("after 2"), Ok(()));
        assert_eq!(e.pop_due_info(), None);
    }

    #[test]
    fn forwarding_replays_what_accumulated_in_emission_order() {
        let (mut e, mut d) = emitter(false);
        let events = e.send_whole(vec![1, 2, 3], &mut d).unwrap_err();
        e.place(events, &mut d);
        assert_eq!(e.set_accumulating(true), 0);
        // An ask the buffer covers in part, a batch emitted, an ask it does not cover.
        e.hold_demand(2);
        e.hold_emitted(vec![4, 5]);
        e.hold_demand(4);
        assert_eq!(e.event_count(), 5);
        assert_eq!(e.demand_mode(), ProducerDemand::Accumulate);
        let steps = e.set_accumulating(false);
        assert_eq!(steps, 3);
        let mut seen = Vec::new();
        for _ in 0..steps {
            match e.replay(&mut d) {
                Some(Replayed::Covered) => seen.push("covered".to_owned()),
                Some(Replayed::Emitted(ev)) => seen.push(format!("emitted {ev:?}")),
                Some(Replayed::Demand(n)) => seen.push(format!("demand {n}")),
                None => seen.push("none".to_owned()),
            }
        }
        assert_eq!(seen, ["covered", "emitted [4, 5]", "demand 3"]);
        // No consumer took the covered events: they are back at the buffer's front, oldest
        // first, ahead of anything newer.
        assert_eq!(e.event_count(), 3);
        assert!(e.replay(&mut d).is_none());
    }

    #[test]
    fn the_end_counts_everything_held_as_lost() {
        let (mut e, mut d) = emitter(false);
        let events = e.send_whole(vec![1, 2, 3], &mut d).unwrap_err();
        e.place(events, &mut d);
        e.set_accumulating(true);
        e.hold_emitted(vec![4, 5]);
        assert_eq!(e.end(&Reason::Shutdown), 5);
        assert_eq!(e.event_count(), 0);
        assert!(e.is_delivered());
    }
}
