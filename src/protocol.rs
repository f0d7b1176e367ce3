//! The credit protocol that every subscription follows, as rules a reimplementation could be
//! checked against. The code that applies them is the stage loop; `docs/design.md` in the
//! repository draws the picture and lists the invariants the loop holds.
//!
//! # The rules
//!
//! A subscription links one consumer to one producer. Events flow down in batches, credits
//! (demand) flow up, each as messages on bounded `crossbeam-channel` channels. The rules,
//! GenStage's, in the words of the Reactive Streams specification:
//!
//! 1. A producer MUST NOT send a subscription more events than its consumer has asked for on
//!    it. Every dispatcher that ships with the crate holds to this; the consumer still handles
//!    any excess it is sent and logs it at error level.
//! 2. A consumer with automatic demand MUST ask `max_demand` when the subscription is
//!    confirmed, and after that MUST ask only *after* a batch has been handled: each incoming
//!    message is cut into chunks of `max_demand - min_demand` events; after each chunk's
//!    `handle_events` returns, if the outstanding demand `D'` is at most `min_demand` it asks
//!    `max_demand - D'`. It MUST NOT ask early: asking before the batch is handled would let
//!    `2 * max_demand` events be in flight and break `max_demand` as a memory bound.
//! 3. An ask MUST carry at least one credit; an ask of 0 is never sent.
//! 4. A stage MUST NOT block on a send to another stage. Every send to a peer is a
//!    `try_send`; a message that does not fit waits in that subscription's *backlog* (events
//!    for the same subscription are appended to the last waiting batch), and while any backlog
//!    is non-empty the stage waits on its own inbox *and* on room in the peers' inboxes at
//!    once. Two stages that each wait for room in the other's inbox therefore still receive,
//!    so neither can deadlock.
//! 5. Messages on one subscription MUST keep their order: a message is sent directly only when
//!    that subscription's backlog is empty. Hence a consumer handles every batch a producer
//!    sent before that producer's cancel, and only then the cancel.
//! 6. A stage MUST tell every peer when it ends (a cancel to each producer and each consumer),
//!    whatever the reason, panics included, so that nobody waits on a dead stage.
//!
//! # What is bounded, and what is not
//!
//! By rule 1 the events in flight on a subscription are at most its `max_demand`, and by rule
//! 2 the asks in flight are at most `max_demand / (max_demand - min_demand) + 1`. The inbox of
//! a stage is sized in *messages* (see
//! [`StageBuilder::inbox_capacity`](crate::StageBuilder::inbox_capacity)), never in events,
//! because `crossbeam_channel::bounded` allocates all its slots up front; rule 4 keeps an
//! undersized inbox correct, only slower. A producer's buffer holds 10 000 events by default
//! ([`StageBuilder::buffer_size`](crate::StageBuilder::buffer_size)).
//!
//! Unbounded by default, as GenStage defines them, and bounded by an option:
//!
//! - a **producer-consumer's output buffer**, which holds what one inbound batch produced
//!   beyond downstream demand: at most a batch's worth for a one-for-one stage, more for a
//!   stage that emits many events per input (bound it with `buffer_size`; then
//!   [`BufferKeep`](crate::BufferKeep) says what is dropped, and every drop is counted);
//! - a **partition dispatcher's queues**, which hold events hashed to a partition whose
//!   consumer has no demand yet (bound them with
//!   [`PartitionDispatcher::max_queue`](crate::dispatcher::PartitionDispatcher::max_queue)).
//!
//! Unbounded by design, and small: a **backlog** holds at most what the credit bound lets a
//! peer be sent; the **control channel** holds what handles sent (stop, cancel, ask,
//! subscribe), never events.
//!
//! # The picture
//!
//! ```text
//!   producer thread                 consumer thread
//!  +-----------------+   Events    +-----------------+
//!  | handle_demand   | ==========> | inbox (bounded) |
//!  | buffer          |             | handle_events   |
//!  | dispatcher      |    Ask n    |                 |
//!  | inbox (bounded) | <========== | Demand (max/min)|
//!  +-----------------+             +-----------------+
//! ```
//!
//! Each stage has one bounded inbox that receives what its peers send (events from its
//! producers, asks and cancels from its consumers) and its own messages (cast, call, info), in
//! order; and a control channel for what handles send (stop, finish, cancel, ask, subscribe,
//! demand mode), which events cannot crowd out and which the stage reads first. One inbox on
//! the hot path means one blocking `recv` per message.
