//! A stage's links to its peers: the outlet that never blocks on a send, and what each
//! subscription keeps on either side.

use std::collections::VecDeque;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use crate::demand::{Adaptive, Demand};
use crate::envelope::{Coalesce, Down, PortBox, PortError, Up};
use crate::reason::Reason;
use crate::shared::{bump, Shared};
use crate::subscription::{DemandMode, Subscription, SubscriptionId};

/// Sends to one peer, keeping what does not fit in a backlog (protocol rules 4 and 5).
pub(super) struct Outlet<'e, M: 'e> {
    pub(super) port: PortBox<'e, M>,
    pub(super) backlog: VecDeque<M>,
    /// Where events count as sent (`events_out`) once they are in the peer's inbox: a
    /// producer's consumer links only.
    pub(super) counts: Option<Arc<Shared>>,
}

impl<'e, M: Coalesce> Outlet<'e, M> {
    pub(super) fn new(port: PortBox<'e, M>, counts: Option<Arc<Shared>>) -> Outlet<'e, M> {
        Outlet {
            port,
            backlog: VecDeque::new(),
            counts,
        }
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
                Ok(())
            }
            Err(PortError::Gone(m)) => {
                self.backlog.push_back(m);
                Err(())
            }
        }
    }

    /// Sends what fits of the backlog. `Err` if the peer is gone (the rest stays in the
    /// backlog).
    pub(super) fn flush(&mut self) -> Result<(), ()> {
        while let Some(msg) = self.backlog.pop_front() {
            let events = msg.event_count();
            match self.port.try_send(msg) {
                Ok(()) => self.sent(events),
                Err(PortError::Full(m)) => {
                    self.backlog.push_front(m);
                    return Ok(());
                }
                Err(PortError::Gone(m)) => {
                    self.backlog.push_front(m);
                    return Err(());
                }
            }
        }
        Ok(())
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
