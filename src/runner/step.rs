//! One turn of the loop that never blocks: how a [simulation](crate::sim) runs a stage.
//!
//! [`Runner::step`] is [`Runner::run`]'s body taken once, with every wait replaced by a look:
//! where the thread would block, the step says the stage is idle (and until when), and the
//! simulation's scheduler picks another stage. The same parts, callbacks and effects run in
//! the same order as on a thread.

use crossbeam_channel::TryRecvError;

use super::{Callbacks, Runner, Turned};

impl<'e, S: Callbacks> Runner<'e, S> {
    /// Takes one turn without blocking: [`Turned::Worked`] if it handled or changed
    /// anything, [`Turned::Idle`] if nothing can happen before a message comes (or the time
    /// it gives), [`Turned::End`] when the stage ends (then `end_begin` follows).
    pub(crate) fn step(&mut self) -> Turned {
        if let Some(reason) = self.life.take_exit() {
            return Turned::End(reason);
        }
        if self.stop_requested() {
            return Turned::End(crate::reason::Reason::Shutdown);
        }
        if !std::mem::take(&mut self.control_turn) && self.handle_control() {
            self.control_turn = true;
            self.settle();
            return Turned::Worked;
        }
        if self.only_the_inbox() {
            match self.inbox.try_recv() {
                Ok(env) => self.handle(env),
                Err(TryRecvError::Empty) => {
                    self.publish_buffered();
                    return Turned::Idle(None);
                }
                Err(TryRecvError::Disconnected) => {
                    return Turned::End(self.life.unreachable_reason())
                }
            }
            self.settle();
            return Turned::Worked;
        }
        let turned = self.turn::<false>();
        if let Turned::End(_) = turned {
            return turned;
        }
        self.settle();
        turned
    }

    /// The stage has failed subscriptions made when it was built to report (see
    /// `Runner::run`): a simulation's first step does what the thread does first.
    pub(crate) fn start(&mut self) {
        self.report_failed();
    }
}
