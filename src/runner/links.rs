//! A stage's links to its peers: the outlet that never blocks on a send, and what each
//! subscription keeps on either side.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use crate::demand::{Adaptive, Demand};
use crate::envelope::{Coalesce, Down, PortBox, PortError, Up};
use crate::reason::Reason;
use crate::shared::{bump, Shared};
use crate::subscription::{DemandMode, Subscription, SubscriptionId};

/// How many of one side's outlets (a stage's producer links, or its consumer links) hold a
/// backlog. Each outlet keeps the count as its backlog fills and empties, and when it is
/// dropped, so a stage asks whether any link waits for room once a turn without looking at
/// every link (a batcher behind 50 processors has 50). Only the stage's thread touches it;
/// it is atomic because the stage is built on another thread.
#[derive(Clone, Debug, Default)]
pub(super) struct Backlogged(Arc<AtomicUsize>);

impl Backlogged {
    /// Whether some outlet of the side holds a backlog.
    #[inline]
    pub(super) fn any(&self) -> bool {
        self.0.load(Ordering::Relaxed) > 0
    }
}

/// Sends to one peer, keeping what does not fit in a backlog (protocol rules 4 and 5).
pub(super) struct Outlet<'e, M: 'e> {
    pub(super) port: PortBox<'e, M>,
    backlog: VecDeque<M>,
    /// Where events count as sent (`events_out`) once they are in the peer's inbox: a
    /// producer's consumer links only.
    pub(super) counts: Option<Arc<Shared>>,
    /// Its side's count of outlets with a backlog.
    backlogged: Backlogged,
}

impl<'e, M: 'e> Drop for Outlet<'e, M> {
    fn drop(&mut self) {
        if !self.backlog.is_empty() {
            self.backlogged.0.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl<'e, M: Coalesce> Outlet<'e, M> {
    pub(super) fn new(
        port: PortBox<'e, M>,
        counts: Option<Arc<Shared>>,
        backlogged: &Backlogged,
    ) -> Outlet<'e, M> {
        Outlet {
            port,
            backlog: VecDeque::new(),
            counts,
            backlogged: backlogged.clone(),
        }
    }

    /// Keeps the side's count after the backlog changed from `was_empty`.
    #[inline]
    fn changed(&self, was_empty: bool) {
        match (was_empty, self.backlog.is_empty()) {
            (true, false) => {
                self.backlogged.0.fetch_add(1, Ordering::Relaxed);
            }
            (false, true) => {
                self.backlogged.0.fetch_sub(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }

    /// Whether messages wait in the backlog.
    #[inline]
    pub(super) fn has_backlog(&self) -> bool {
        !self.backlog.is_empty()
    }

    /// Messages waiting in the backlog.
    pub(super) fn backlog_len(&self) -> usize {
        self.backlog.len()
    }

    /// Takes the first message of the backlog (to send it some other way; what is not sent
    /// goes back with [`put_back`](Outlet::put_back)).
    pub(super) fn take_front(&mut self) -> Option<M> {
        let was_empty = self.backlog.is_empty();
        let msg = self.backlog.pop_front();
        self.changed(was_empty);
        msg
    }

    /// Puts a message that could not be sent back at the front of the backlog.
    pub(super) fn put_back(&mut self, msg: M) {
        let was_empty = self.backlog.is_empty();
        self.backlog.push_front(msg);
        self.changed(was_empty);
    }

    /// Drops the backlog (its peer is gone).
    pub(super) fn clear_backlog(&mut self) {
        let was_empty = self.backlog.is_empty();
        self.backlog.clear();
        self.changed(was_empty);
    }

    pub(super) fn sent(&self, events: usize) {
        if events > 0 {
            if let Some(shared) = &self.counts {
                bump(&shared.cells.events_out, events as u64);
            }
        }
    }

    /// Sends `msg`, or keeps it in the backlog if the peer's inbox is full. `Err` if the peer
    /// is gone: the message is then at the back of the backlog, for the caller to account for.
    pub(super) fn send(&mut self, msg: M) -> Result<(), ()> {
        if let Some(last) = self.backlog.back_mut() {
            if let Some(msg) = last.coalesce(msg) {
                self.backlog.push_back(msg);
            }
            return Ok(());
        }
        let events = msg.event_count();
        match self.port.try_send(msg) {
            Ok(()) => {
                self.sent(events);
                Ok(())
            }
            Err(PortError::Full(m)) => {
                self.backlog.push_back(m);
                self.changed(true);
                Ok(())
            }
            Err(PortError::Gone(m)) => {
                self.backlog.push_back(m);
                self.changed(true);
                Err(())
            }
        }
    }

    /// Sends what fits of the backlog. `Err` if the peer is gone (the rest stays in the
    /// backlog).
    pub(super) fn flush(&mut self) -> Result<(), ()> {
        let was_empty = self.backlog.is_empty();
        let mut flushed = Ok(());
        while let Some(msg) = self.backlog.pop_front() {
            let events = msg.event_count();
            match self.port.try_send(msg) {
                Ok(()) => self.sent(events),
                Err(PortError::Full(m)) => {
                    self.backlog.push_front(m);
                    break;
                }
                Err(PortError::Gone(m)) => {
                    self.backlog.push_front(m);
                    flushed = Err(());
                    break;
                }
            }
        }
        self.changed(was_empty);
        flushed
    }

    /// Events waiting in the backlog.
    pub(super) fn backlog_events(&self) -> usize {
        self.backlog.iter().map(Coalesce::event_count).sum()
    }
}

/// This stage as a consumer of one producer.
pub(super) struct UpLink<'e, T> {
    pub(super) info: Subscription,
    pub(super) out: Outlet<'e, Up<'e, T>>,
    pub(super) demand: Demand,
    /// Set for a subscription with adaptive demand.
    pub(super) adaptive: Option<Adaptive>,
    pub(super) mode: DemandMode,
    /// Manual mode: asked and not yet received.
    pub(super) manual_outstanding: usize,
    /// This stage sent a cancel and waits for the producer's confirmation.
    pub(super) cancelling: bool,
    /// Cancelled because its subscribe failed on the caller's side: its end does not apply
    /// the cancel mode.
    pub(super) quiet: bool,
    pub(super) cell: Arc<AtomicU64>,
    /// Events handled from this subscription (observers read it).
    pub(super) events: Arc<AtomicU64>,
}

/// This stage as the producer of one consumer.
pub(super) struct DownLink<'e, T> {
    pub(super) info: Subscription,
    pub(super) out: Outlet<'e, Down<'e, T>>,
    /// Identifies the consuming stage.
    pub(super) consumer_id: usize,
    /// Asked for and not yet sent.
    pub(super) owed: usize,
    /// Cancelled: kept only until its backlog (ending with the cancel) is delivered.
    pub(super) closed: bool,
    pub(super) cell: Arc<AtomicU64>,
    /// Events dispatched to this consumer (observers read it).
    pub(super) events: Arc<AtomicU64>,
}

/// What a producer-consumer received and could not handle yet (no downstream demand).
pub(super) enum Inbound<T, M> {
    Events(SubscriptionId, Vec<T>),
    Cancel(SubscriptionId, Reason),
    Info(M),
}

/// A subscription a handle asked this stage to make, passed on to the producer and not yet
/// confirmed: what was asked of it meanwhile waits here.
pub(super) struct PendingSub {
    pub(super) sub: SubscriptionId,
    /// Cancelled before it arrived: cancelled as soon as it does.
    pub(super) cancel: Option<Reason>,
    /// Manual asks made before it arrived.
    pub(super) asks: usize,
    /// The subscribe failed on the caller's side: cancelled quietly if it arrives.
    pub(super) withdrawn: bool,
}
