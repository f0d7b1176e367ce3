//! Where a stage is in its life: running, draining (asked to finish), finishing (delivering
//! what it holds), exiting with a reason. One value instead of four flags; every transition
//! moves forward, never back.
//!
//! ```text
//!   Running ──finish()──▶ Draining ──(every producer ended)──▶ Finishing(r) ──(delivered)──▶ Exiting(r)
//!      │                     │                                     ▲
//!      └──────────── finish_with(r): a producer, or Context::finish┘
//!   any ──stop / exit_with──▶ Exiting(r)
//! ```
//!
//! Fan-in is here too: a permanent subscription that ends normally while others remain ends
//! the stage once the last one has ended (`after_last_producer`).

use crate::reason::Reason;

/// The phases, in the only order a stage goes through them (it may skip some).
#[derive(Debug)]
enum Phase {
    /// Handling what comes.
    Running,
    /// Asked to finish (`Stage::finish`): keeps asking and handling until its last producer
    /// has ended, then finishes.
    Draining,
    /// Asks for nothing more and calls no `handle_demand`; delivers what it holds, then exits.
    Finishing(Reason),
    /// Ends at the top of the next turn.
    Exiting(Reason),
}

/// A stage's phase, and the end a fan-in waits for.
#[derive(Debug)]
pub(super) struct Lifecycle {
    phase: Phase,
    /// A permanent subscription ended normally while others remained: end with this reason
    /// once the last one has ended too.
    after_last_producer: Option<Reason>,
}

/// What the end of one subscription to a producer means for the stage (see
/// [`Lifecycle::producer_ended`]).
#[derive(Debug, PartialEq, Eq)]
pub(super) enum UpstreamEnd {
    /// Nothing changes.
    Continue,
    /// An abnormal end under a cancel mode that exits: the stage exits now.
    Exit,
    /// A normal end under a cancel mode that exits, with other subscriptions left: the stage
    /// ends once they have ended too.
    AfterOthers,
    /// The last subscription ended after one that asked the stage to end: it ends (a stage
    /// that delivers finishes first).
    Last(Reason),
}

impl Lifecycle {
    pub(super) fn new() -> Lifecycle {
        Lifecycle {
            phase: Phase::Running,
            after_last_producer: None,
        }
    }

    /// Ends at the top of the next turn: the reason given replaces any earlier one (the
    /// callback's own `Context::stop`).
    pub(super) fn stop(&mut self, reason: Reason) {
        self.phase = Phase::Exiting(reason);
    }

    /// Ends at the top of the next turn, unless it already does (with its own reason).
    pub(super) fn exit(&mut self, reason: Reason) {
        if !self.is_exiting() {
            self.phase = Phase::Exiting(reason);
        }
    }

    /// Asked to finish by a handle: drain.
    pub(super) fn drain(&mut self) {
        if let Phase::Running = self.phase {
            self.phase = Phase::Draining;
        }
    }

    /// Finishes: no more demand served, deliver what is held, then exit with `reason` (unless
    /// it already finishes or exits, with its own).
    pub(super) fn finish(&mut self, reason: Reason) {
        if let Phase::Running | Phase::Draining = self.phase {
            self.phase = Phase::Finishing(reason);
        }
    }

    /// A finishing stage delivered everything (or has nobody left to deliver to): it exits.
    pub(super) fn finished(&mut self) {
        self.phase = match std::mem::replace(&mut self.phase, Phase::Running) {
            Phase::Finishing(reason) => Phase::Exiting(reason),
            other => other,
        };
    }

    #[inline]
    pub(super) fn is_exiting(&self) -> bool {
        matches!(self.phase, Phase::Exiting(_))
    }

    /// Finishing, not yet exiting.
    #[inline]
    pub(super) fn is_finishing(&self) -> bool {
        matches!(self.phase, Phase::Finishing(_))
    }

    /// Asked to finish and still waiting for its producers to end.
    #[inline]
    pub(super) fn is_draining(&self) -> bool {
        matches!(self.phase, Phase::Draining)
    }

    /// Still serves demand and asks for events (neither finishing nor exiting).
    #[inline]
    pub(super) fn goes_on(&self) -> bool {
        matches!(self.phase, Phase::Running | Phase::Draining)
    }

    /// What `Context::is_finishing` says: asked to finish, finishing, or exiting after that.
    #[inline]
    pub(super) fn winds_down(&self) -> bool {
        !matches!(self.phase, Phase::Running)
    }

    /// The reason to end with, if the stage exits now.
    #[inline]
    pub(super) fn take_exit(&mut self) -> Option<Reason> {
        if !self.is_exiting() {
            return None;
        }
        match std::mem::replace(&mut self.phase, Phase::Running) {
            Phase::Exiting(reason) => Some(reason),
            other => {
                self.phase = other;
                None
            }
        }
    }

    /// The stage can never be reached again: it ends, normally unless it was finishing with
    /// another reason.
    pub(super) fn unreachable_reason(&mut self) -> Reason {
        match std::mem::replace(&mut self.phase, Phase::Running) {
            Phase::Finishing(reason) => reason,
            _ => Reason::Normal,
        }
    }

    /// A subscription to a producer ended with `reason`. `exits` says whether its cancel mode
    /// ends the stage on that reason; `left` how many subscriptions to producers remain;
    /// `delivers` whether the stage has events to deliver before it ends (a
    /// producer-consumer finishes, a consumer exits).
    pub(super) fn producer_ended(
        &mut self,
        reason: &Reason,
        exits: bool,
        left: usize,
        delivers: bool,
    ) -> UpstreamEnd {
        let mut verdict = UpstreamEnd::Continue;
        if exits {
            if !reason.is_normal() {
                self.exit(reason.clone());
                return UpstreamEnd::Exit;
            }
            if left > 0 {
                verdict = UpstreamEnd::AfterOthers;
            }
            self.after_last_producer
                .get_or_insert_with(|| reason.clone());
        }
        if left == 0 {
            if let Some(reason) = self.after_last_producer.take() {
                if delivers {
                    // Nothing is lost on a normal finish: deliver, then end.
                    self.finish(reason.clone());
                } else {
                    self.exit(reason.clone());
                }
                return UpstreamEnd::Last(reason);
            }
        }
        verdict
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_only_move_forward() {
        let mut life = Lifecycle::new();
        assert!(life.goes_on() && !life.winds_down());
        life.drain();
        assert!(life.is_draining() && life.goes_on() && life.winds_down());
        life.finish(Reason::Normal);
        assert!(life.is_finishing() && !life.goes_on());
        // Neither a drain nor a second finish moves it back or changes its reason.
        life.drain();
        life.finish(Reason::error("later"));
        assert!(life.is_finishing());
        life.finished();
        assert!(life.is_exiting());
        life.exit(Reason::Shutdown);
        assert_eq!(life.take_exit(), Some(Reason::Normal));
    }

    #[test]
    fn a_stop_replaces_the_exit_reason_and_an_exit_does_not() {
        let mut life = Lifecycle::new();
        life.exit(Reason::Shutdown);
        life.exit(Reason::Normal);
        life.stop(Reason::error("own"));
        assert_eq!(life.take_exit(), Some(Reason::error("own")));
        assert_eq!(life.take_exit(), None);
    }

    #[test]
    fn an_unreachable_stage_ends_with_its_finishing_reason_or_normally() {
        let mut life = Lifecycle::new();
        assert_eq!(life.unreachable_reason(), Reason::Normal);
        let mut life = Lifecycle::new();
        life.finish(Reason::error("upstream"));
        assert_eq!(life.unreachable_reason(), Reason::error("upstream"));
    }

    #[test]
    fn fan_in_ends_with_its_last_producer() {
        let mut life = Lifecycle::new();
        assert_eq!(
            life.producer_ended(&Reason::Normal, true, 2, false),
            UpstreamEnd::AfterOthers
        );
        // A producer whose cancel mode does not exit changes nothing, even the last...
        assert_eq!(
            life.producer_ended(&Reason::Normal, false, 1, false),
            UpstreamEnd::Continue
        );
        assert!(life.goes_on());
        // ...except that the last one ends it with the reason the first left.
        assert_eq!(
            life.producer_ended(&Reason::Shutdown, false, 0, false),
            UpstreamEnd::Last(Reason::Normal)
        );
        assert_eq!(life.take_exit(), Some(Reason::Normal));
    }

    #[test]
    fn an_abnormal_end_exits_at_once_and_a_delivering_stage_finishes() {
        let mut life = Lifecycle::new();
        let failed = Reason::error("boom");
        assert_eq!(
            life.producer_ended(&failed, true, 3, true),
            UpstreamEnd::Exit
        );
        assert_eq!(life.take_exit(), Some(failed));

        let mut life = Lifecycle::new();
        assert_eq!(
            life.producer_ended(&Reason::Normal, true, 0, true),
            UpstreamEnd::Last(Reason::Normal)
        );
        assert!(life.is_finishing());
    }
}
