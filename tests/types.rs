//! The public types can cross threads: handles, endpoints, options, errors and outcomes are
//! `Send + Sync`; replies and batches are `Send` where their contents are.

mod common;

use stageflow::dispatcher::{BroadcastDispatcher, DemandDispatcher, PartitionDispatcher};
use stageflow::{
    BuildError, CallError, CastError, ConsumerHandle, ControlError, Counters, JoinError, Mailbox,
    ProducerConsumerHandle, ProducerHandle, Reason, Reply, Source, StageRef, SubscribeError,
    SubscribeOptions, SubscriptionId, Supervisor, Topology,
};

fn send_sync<T: Send + Sync>() {}
fn send<T: Send>() {}

#[test]
fn smoke() {
    send_sync::<Reason>();
}

#[test]
fn handles_and_values_are_send_and_sync() {
    type P = stageflow::IterProducer<std::vec::IntoIter<u64>>;
    send_sync::<ProducerHandle<P>>();
    send_sync::<ProducerConsumerHandle<common::Pass>>();
    send_sync::<ConsumerHandle<Supervisor<u64>>>();
    send_sync::<StageRef>();
    send_sync::<Source<u64>>();
    send_sync::<Mailbox<String>>();
    send_sync::<Topology>();
    send_sync::<SubscribeOptions>();
    send_sync::<SubscriptionId>();
    send_sync::<Counters>();
    send_sync::<SubscribeError>();
    send_sync::<BuildError>();
    send_sync::<CallError>();
    send_sync::<CastError<String>>();
    send_sync::<ControlError>();
    send_sync::<JoinError>();
    send::<Reply<String>>();
    send::<DemandDispatcher>();
    send::<BroadcastDispatcher<u64>>();
    send::<PartitionDispatcher<u64>>();
}

#[test]
fn producers_of_different_types_are_chosen_at_run_time() {
    use stageflow::fns::Collect;
    use stageflow::{Topology, Upstream};
    // Two stage types (`IterProducer<Range<u64>>`, `IterProducer<vec::IntoIter<u64>>`).
    let range = stageflow::from_iter(0..3u64).spawn().unwrap();
    let generated = stageflow::from_iter(vec![11u64, 12]).spawn().unwrap();
    let choices: Vec<&dyn Upstream<'static, u64>> = vec![&range, &generated];
    for (i, chosen) in choices.into_iter().enumerate() {
        let sink = stageflow::consumer(Collect::new())
            .keep_state()
            .subscribe_to(chosen, stageflow::SubscribeOptions::new())
            .unwrap()
            .spawn()
            .unwrap();
        // The erased producer joins a topology by its `Source`.
        let outcomes = Topology::new()
            .with(&chosen.source())
            .with(&sink)
            .join_timeout(common::LIMIT);
        assert!(outcomes.iter().all(|(_, r)| r.is_some()), "{outcomes:?}");
        let got = sink.join_state().1.unwrap().into_vec();
        assert_eq!(got, [vec![0, 1, 2], vec![11, 12]][i]);
    }
}
