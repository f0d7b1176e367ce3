//! The end of a stage: tell every peer, wait for producers to confirm, count what is lost.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;

use log::warn;

use super::links::{Inbound, Outlet, UpLink};
use super::{Callbacks, Env, Runner, Wait};
use crate::demand::Demand;
use crate::dispatcher::Dispatcher;
use crate::envelope::{Down, Envelope, Up};
use crate::error::SubscribeError;
use crate::reason::Reason;
use crate::shared::bump;
use crate::subscription::{DemandMode, Direction};

impl<S: Callbacks> Runner<S> {
    /// Tells every peer the stage ended; waits until its consumers have been told and its
    /// producers have confirmed (receiving all the while, so that no peer can wait on this
    /// stage, and counting every event that still arrives), then drops what is left.
    pub(crate) fn terminate(&mut self, reason: &Reason) {
        // Emitted by a callback that then panicked: emitted, and lost.
        let mut lost = self.fx.emitted.len();
        if lost > 0 {
            bump(&self.shared.cells.emitted, lost as u64);
        }
        self.fx.emitted.clear();
        let (buffered, _) = self.buffer.clear();
        lost += buffered + self.inbound_events + self.dispatcher.held() + self.in_hand;
        self.in_hand = 0;
        // What the dispatcher held is counted above: drop it with the dispatcher.
        self.dispatcher = crate::dispatcher::Dispatch::demand();
        lost += self.held.clear();
        // Producers whose end is queued behind inbound events have confirmed already.
        for entry in self.inbound.drain(..) {
            if let Inbound::Cancel(sub, _) = entry {
                self.ups.retain(|l| l.info.id != sub);
                self.shared.remove_sub(sub, Direction::Upstream);
            }
        }
        self.inbound_events = 0;
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
        let deadline = crate::timer::deadline(self.confirm_timeout);
        loop {
            self.flush_backlogs();
            for sub in std::mem::take(&mut self.gone) {
                if let Some(l) = self.downs.iter_mut().find(|l| l.info.id == sub) {
                    lost += l.out.backlog_events();
                    l.out.backlog.clear();
                }
            }
            self.drop_closed_links();
            let backlog = self.any_backlog();
            if !backlog && self.ups.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                if !self.ups.is_empty() {
                    warn!(
                        "stage {}: {} producers did not confirm the end within {:?} (see \
                         StageBuilder::confirm_timeout); events they send now are counted by them",
                        self.shared.name,
                        self.ups.len(),
                        self.confirm_timeout
                    );
                }
                for l in &self.downs {
                    lost += l.out.backlog_events();
                }
                break;
            }
            while let Ok(env) = self.control.try_recv() {
                lost += self.drop_late(env, reason);
            }
            match self.wait(Some(deadline), backlog) {
                Wait::Msg(env) => lost += self.drop_late(env, reason),
                Wait::Timeout => {}
                Wait::Disconnected => break,
            }
        }
        while let Ok(env) = self.inbox.try_recv() {
            lost += self.drop_late(env, reason);
        }
        while let Ok(env) = self.control.try_recv() {
            lost += self.drop_late(env, reason);
        }
        self.discard(lost, &format!("the stage ended ({reason})"));
        // The last word: every discard not yet logged.
        self.discard_log.flush(&self.shared.name);
        for link in &self.ups {
            self.shared.remove_sub(link.info.id, Direction::Upstream);
        }
        self.downs.clear();
        self.publish_buffered();
    }

    /// Something that reached an ending stage; returns the events it held (counted as
    /// received, and then as discarded).
    pub(super) fn drop_late(&mut self, env: Env<S>, reason: &Reason) -> usize {
        match env {
            Envelope::Down(Down::Events { events, .. }) => {
                bump(&self.shared.cells.events_in, events.len() as u64);
                events.len()
            }
            Envelope::Down(Down::Subscribed(s)) => {
                // A subscription confirmed too late: cancel it at once, and wait for the
                // producer's confirmation like the others.
                let sub = s.info.id;
                let mut out = Outlet::new(s.producer, None);
                let _ = out.send(Up::Cancel {
                    sub,
                    reason: reason.clone(),
                });
                self.ups.push(UpLink {
                    info: s.info,
                    out,
                    demand: Demand::new(1, 0),
                    mode: DemandMode::Manual,
                    manual_outstanding: 0,
                    cancelling: true,
                    quiet: true,
                    cell: Arc::new(AtomicU64::new(0)),
                    events: Arc::new(AtomicU64::new(0)),
                });
                0
            }
            Envelope::Down(Down::Cancel { sub, .. }) => {
                if let Some(i) = self.ups.iter().position(|l| l.info.id == sub) {
                    let link = self.ups.remove(i);
                    self.shared.remove_sub(link.info.id, Direction::Upstream);
                }
                0
            }
            Envelope::Up(Up::Subscribe(req)) => {
                let _ = req.ack.send(Err(SubscribeError::ProducerGone {
                    producer: self.shared.name.to_string(),
                }));
                if req.pending {
                    // The consumer holds it as pending: it forgets it on hearing this.
                    let _ = req.consumer.send_urgent(Down::Cancel {
                        sub: req.sub,
                        reason: reason.clone(),
                    });
                }
                0
            }
            Envelope::Down(Down::Subscribe(req)) => {
                let _ = req.ack.send(Err(SubscribeError::ConsumerGone {
                    consumer: self.shared.name.to_string(),
                }));
                0
            }
            _ => 0,
        }
    }
}
