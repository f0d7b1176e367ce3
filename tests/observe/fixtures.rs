//! Stages whose every step the tests decide, and a bounded wait on a condition read from
//! snapshots.

use crossbeam_channel::{Receiver, Sender};
use stageflow::observe::{Observe, Snapshot};
use stageflow::{Consumer, ConsumerContext, Context, Events, Producer, Reason};

use crate::common::LIMIT;

/// What a [`Pushed`] producer is told.
pub(crate) enum Push {
    /// Emit these events (beyond demand they wait in the buffer).
    Emit(Vec<u64>),
    /// End with this reason.
    End(Reason),
}

/// Emits what it is sent, nothing on demand.
pub(crate) struct Pushed;

impl Producer for Pushed {
    type Out = u64;
    type Message = Push;
    fn handle_demand(&mut self, _: usize, _: &mut Context<'_, u64, Push>) {}
    fn handle_message(&mut self, msg: Push, ctx: &mut Context<'_, u64, Push>) {
        match msg {
            Push::Emit(events) => ctx.emit_all(events),
            Push::End(reason) => ctx.stop(reason),
        }
    }
}

/// Reports each batch's size; with a gate, waits for a token before each batch.
pub(crate) struct Sink {
    pub(crate) seen: Sender<usize>,
    pub(crate) gate: Option<Receiver<()>>,
}

impl Consumer for Sink {
    type In = u64;
    type Message = ();
    fn handle_events(&mut self, events: Events<'_, u64>, _: &mut ConsumerContext<'_>) {
        if let Some(gate) = &self.gate {
            gate.recv_timeout(LIMIT)
                .expect("the test never opened the gate");
        }
        let _ = self.seen.send(events.count());
    }
}

/// Takes snapshots of `stages` until `ok` holds, failing with the last one after `LIMIT`.
pub(crate) fn until(
    stages: &(impl Observe + ?Sized),
    what: &str,
    ok: impl Fn(&Snapshot) -> bool,
) -> Snapshot {
    let deadline = std::time::Instant::now() + LIMIT;
    loop {
        let s = stages.snapshot();
        if ok(&s) {
            return s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never saw {what}:\n{s}"
        );
        std::thread::yield_now();
    }
}
