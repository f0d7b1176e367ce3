//! The public types can cross threads: handles, endpoints, options, errors and outcomes are
//! `Send + Sync`; replies and batches are `Send` where their contents are.

mod common;

use stageflow::dispatcher::{BroadcastDispatcher, DemandDispatcher, PartitionDispatcher};
use stageflow::{
    BuildError, CallError, CastError, ConsumerHandle, Counters, Mailbox, ProducerConsumerHandle,
    ProducerHandle, Reason, Reply, Source, StageRef, SubscribeError, SubscribeOptions,
    SubscriptionId, Supervisor, Topology,
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
    send::<Reply<String>>();
    send::<DemandDispatcher>();
    send::<BroadcastDispatcher<u64>>();
    send::<PartitionDispatcher<u64>>();
}
