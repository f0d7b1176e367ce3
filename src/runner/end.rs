//! The end of a stage: tell every peer, wait for producers to confirm, count what is lost.

use std::time::Instant;

use log::warn;

use super::wait::Wait;
use super::{Callbacks, Env, Runner};
use crate::envelope::{Down, Envelope, Up};
use crate::error::SubscribeError;
use crate::reason::Reason;
use crate::shared::bump;

/// An ending stage's account: events lost so far, and until when it waits for its
/// producers to confirm.
pub(crate) struct Ending {
    lost: usize,
    deadline: Instant,
}

/// What one round of the end's wait came to.
pub(crate) enum EndTurn {
    /// Something arrived or left: go on.
    More,
    /// Nothing to do before a message comes or this time (the confirm deadline) is reached
    /// (only without blocking).
    Idle(Instant),
    /// The end is complete.
    Done,
}

impl<'e, S: Callbacks> Runner<'e, S> {
    /// Tells every peer the stage ended; waits until its consumers have been told and its
    /// producers have confirmed (receiving all the while, so that no peer can wait on this
    /// stage, and counting every event that still arrives), then drops what is left.
    pub(crate) fn terminate(&mut self, reason: &Reason) {
        let mut ending = self.end_begin(reason);
        while let EndTurn::More = self.end_turn::<true>(&mut ending, reason) {}
        self.end_finish(ending, reason);
    }

    /// The end's first part: what a callback emitted before it panicked, and the parts' own
    /// ends (every consumer told, every producer asked to confirm).
    pub(crate) fn end_begin(&mut self, reason: &Reason) -> Ending {
        // Emitted by a callback that then panicked: emitted, and lost.
        let mut lost = self.fx.emitted.len();
        if lost > 0 {
            bump(&self.shared.cells.emitted, lost as u64);
        }
        self.fx.emitted.clear();
        lost += self.emitter.end(reason);
        lost += self.inlet.end(reason);
        Ending {
            lost,
            deadline: crate::timer::deadline(self.confirm_timeout),
        }
    }

    /// One round of the end's wait: backlogs delivered, producers' confirmations and late
    /// messages received. `BLOCK` as in `Runner::turn`: without it the round only looks.
    pub(crate) fn end_turn<const BLOCK: bool>(
        &mut self,
        ending: &mut Ending,
        reason: &Reason,
    ) -> EndTurn {
        let before = if BLOCK { 0 } else { self.backlog_len() };
        self.flush_backlogs();
        ending.lost += self.emitter.take_gone_backlogs();
        self.emitter.drop_closed_links();
        let backlog = self.any_backlog();
        if !backlog && self.inlet.producers() == 0 {
            return EndTurn::Done;
        }
        if crate::clock::now() >= ending.deadline {
            if self.inlet.producers() > 0 {
                warn!(
                    "stage {}: {} producers did not confirm the end within {:?} (see \
                     StageBuilder::confirm_timeout); events they send now are counted by them",
                    self.shared.name,
                    self.inlet.producers(),
                    self.confirm_timeout
                );
            }
            ending.lost += self.emitter.backlog_events();
            return EndTurn::Done;
        }
        let mut worked = false;
        while let Ok(env) = self.control.try_recv() {
            ending.lost += self.drop_late(env, reason);
            worked = true;
        }
        self.publish_buffered();
        let got = if BLOCK {
            self.wait(Some(ending.deadline), backlog)
        } else {
            self.poll(backlog)
        };
        match got {
            Wait::Msg(env) => {
                ending.lost += self.drop_late(env, reason);
                EndTurn::More
            }
            Wait::Timeout if BLOCK || worked || self.backlog_len() != before => EndTurn::More,
            Wait::Timeout => EndTurn::Idle(ending.deadline),
            Wait::Disconnected => EndTurn::Done,
        }
    }

    /// The end's last part: what is still in the inbox and on the control path is dropped
    /// (and counted), every discard logged, the links forgotten.
    pub(crate) fn end_finish(&mut self, ending: Ending, reason: &Reason) {
        let mut lost = ending.lost;
        while let Ok(env) = self.inbox.try_recv() {
            lost += self.drop_late(env, reason);
        }
        while let Ok(env) = self.control.try_recv() {
            lost += self.drop_late(env, reason);
        }
        self.inlet.forget_all();
        self.emitter.clear_links();
        // Forgetting a pending subscription drops the stage's own port in it: the last
        // reference, whose drop wakes the stage. Nothing is left behind in the inbox.
        while let Ok(env) = self.inbox.try_recv() {
            lost += self.drop_late(env, reason);
        }
        self.discards
            .count(lost, &format!("the stage ended ({reason})"));
        // The last word: every discard not yet logged.
        self.discards.flush();
        self.publish_buffered();
    }

    /// Something that reached an ending stage; returns the events it held (counted as
    /// received, and then as discarded).
    fn drop_late(&mut self, env: Env<'e, S>, reason: &Reason) -> usize {
        match env {
            Envelope::Down(Down::Events { events, .. }) => {
                bump(&self.shared.cells.events_in, events.len() as u64);
                events.len()
            }
            Envelope::Down(Down::Subscribed(s)) => {
                // A subscription confirmed too late: cancel it at once, and wait for the
                // producer's confirmation like the others.
                self.inlet.confirmed_too_late(s.producer, s.info, reason);
                0
            }
            Envelope::Down(Down::Cancel { sub, .. }) => {
                self.inlet.confirmed_end(sub);
                0
            }
            Envelope::Up(Up::Subscribe(mut req)) => {
                req.unanswered.answered();
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
            Envelope::Down(Down::Subscribe(mut req)) => {
                // This stage is the consumer, and is ending: nobody to tell.
                req.unanswered.answered();
                let _ = req.ack.send(Err(SubscribeError::ConsumerGone {
                    consumer: self.shared.name.to_string(),
                }));
                0
            }
            _ => 0,
        }
    }
}
