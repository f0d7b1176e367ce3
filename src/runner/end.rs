//! The end of a stage: tell every peer, wait for producers to confirm, count what is lost.

use std::time::Instant;

use log::warn;

use super::wait::Wait;
use super::{Callbacks, Env, Runner};
use crate::envelope::{Down, Envelope, Up};
use crate::error::SubscribeError;
use crate::reason::Reason;
use crate::shared::bump;

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
        lost += self.emitter.end(reason);
        lost += self.inlet.end(reason);
        let deadline = crate::timer::deadline(self.confirm_timeout);
        loop {
            self.flush_backlogs();
            lost += self.emitter.take_gone_backlogs();
            self.emitter.drop_closed_links();
            let backlog = self.any_backlog();
            if !backlog && self.inlet.producers() == 0 {
                break;
            }
            if Instant::now() >= deadline {
                if self.inlet.producers() > 0 {
                    warn!(
                        "stage {}: {} producers did not confirm the end within {:?} (see \
                         StageBuilder::confirm_timeout); events they send now are counted by them",
                        self.shared.name,
                        self.inlet.producers(),
                        self.confirm_timeout
                    );
                }
                lost += self.emitter.backlog_events();
                break;
            }
            while let Ok(env) = self.control.try_recv() {
                lost += self.drop_late(env, reason);
            }
            self.publish_buffered();
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
        self.discards
            .count(lost, &format!("the stage ended ({reason})"));
        // The last word: every discard not yet logged.
        self.discards.flush();
        self.inlet.forget_all();
        self.emitter.clear_links();
        self.publish_buffered();
    }

    /// Something that reached an ending stage; returns the events it held (counted as
    /// received, and then as discarded).
    fn drop_late(&mut self, env: Env<S>, reason: &Reason) -> usize {
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
