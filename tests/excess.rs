//! Events sent beyond demand (a misbehaving custom dispatcher): the consumer still handles them
//! all, and they trigger no extra ask (GenStage §1.5, probe p11).

mod common;

use common::{next, quiet, Numbers, Recorder, Report};
use stageflow::dispatcher::{Dispatcher, Outbox};
use stageflow::{SubscribeError, SubscribeOptions, SubscriptionId};

/// Sends everything to its first consumer, whatever that consumer asked for.
#[derive(Default)]
struct Greedy {
    first: Option<SubscriptionId>,
}

impl Dispatcher<u64> for Greedy {
    fn subscribe(
        &mut self,
        sub: SubscriptionId,
        _: &SubscribeOptions,
    ) -> Result<(), SubscribeError> {
        self.first.get_or_insert(sub);
        Ok(())
    }
    fn cancel(&mut self, _: SubscriptionId, _: &mut Outbox<'_, u64>) -> usize {
        0
    }
    fn ask(&mut self, _: SubscriptionId, n: usize, _: &mut Outbox<'_, u64>) -> usize {
        n
    }
    fn dispatch(&mut self, events: &mut Vec<u64>, out: &mut Outbox<'_, u64>) {
        if let Some(sub) = self.first {
            out.send(sub, std::mem::take(events));
        }
    }
}

#[test]
fn smoke() {
    let (numbers, demands) = Numbers::new(None);
    let p = stageflow::producer(numbers)
        .dispatcher(Greedy::default())
        .spawn()
        .unwrap();
    let (rec, rx) = Recorder::new();
    let c = stageflow::consumer(rec)
        .subscribe_to(&p, SubscribeOptions::new().max_demand(5).min_demand(0))
        .unwrap()
        .spawn()
        .unwrap();
    assert_eq!(next(&demands), Report::Demand(5));
    assert_eq!(next(&rx), Report::Subscribed);
    assert_eq!(next(&rx), Report::Batch(vec![0, 1, 2, 3, 4]));
    p.stop();
    common::joined(&p);
    common::joined(&c);
}

#[test]
fn excess_is_handled_and_not_asked_for() {
    // The consumer asks 5; the producer emits 8 and the greedy dispatcher sends all of them:
    // [0..5] is handled and asked for again, the 3 extra are handled as excess (logged at
    // error level) with no ask of their own.
    struct Eight(crossbeam_channel::Sender<Report<u64>>, u64);
    impl stageflow::Producer for Eight {
        type Out = u64;
        type Message = ();
        fn handle_demand(&mut self, demand: usize, ctx: &mut stageflow::Context<'_, u64>) {
            let _ = self.0.send(Report::Demand(demand));
            if self.1 == 0 {
                ctx.emit_all(0..8);
                self.1 = 8;
            }
        }
    }
    let logs = common::capture_logs();
    let (tx, demands) = crossbeam_channel::unbounded();
    let p = stageflow::producer(Eight(tx, 0))
        .dispatcher(Greedy::default())
        .spawn()
        .unwrap();
    let (rec, rx) = Recorder::new();
    let c = stageflow::consumer(rec)
        .name("greedy-consumer")
        .subscribe_to(&p, SubscribeOptions::new().max_demand(5).min_demand(0))
        .unwrap()
        .spawn()
        .unwrap();
    assert_eq!(next(&rx), Report::Subscribed);
    assert_eq!(next(&rx), Report::Batch(vec![0, 1, 2, 3, 4]));
    assert_eq!(next(&rx), Report::Batch(vec![5, 6, 7]));
    let excess = common::logged(&logs, "stage greedy-consumer: received 3 events in excess");
    assert_eq!(excess.len(), 1, "{excess:?}");
    assert_eq!(excess[0].0, log::Level::Error);
    assert_eq!(next(&demands), Report::Demand(5));
    assert_eq!(
        next(&demands),
        Report::Demand(5),
        "one ask after the first batch"
    );
    quiet(&demands);
    assert_eq!(c.counters().events_in, 8);
    p.stop();
    common::joined(&p);
    common::joined(&c);
}
