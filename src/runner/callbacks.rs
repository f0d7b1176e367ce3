//! The three user traits (`Producer`, `ProducerConsumer`, `Consumer`) seen through one
//! interface, and which sides of the loop each has: a producer has an emitter and no inlet,
//! a consumer an inlet and no emitter, a producer-consumer both.

use std::convert::Infallible;

use crate::context::Context;
use crate::events::Events;
use crate::reason::Reason;
use crate::shared::StageKind;
use crate::stage::{Consumer, Producer, ProducerConsumer};
use crate::subscription::{DemandMode, Subscription};

/// The three user traits seen through one interface.
pub(crate) trait Callbacks: Send {
    type In: Send;
    type Out: Send;
    type Msg: Send;
    /// The user's stage value.
    type State: Send;
    const KIND: StageKind;
    /// The stage has an input side ([`Inlet`](super::inlet::Inlet)): consumers and
    /// producer-consumers. A constant: the loop's code for the other side compiles away.
    const RECEIVES: bool = !matches!(Self::KIND, StageKind::Producer);
    /// The stage has an output side ([`Emitter`](super::emitter::Emitter)): producers and
    /// producer-consumers.
    const EMITS: bool = !matches!(Self::KIND, StageKind::Consumer);

    fn demand(&mut self, n: usize, ctx: &mut Context<'_, Self::Out, Self::Msg>);
    fn events(&mut self, events: Events<'_, Self::In>, ctx: &mut Context<'_, Self::Out, Self::Msg>);
    fn message(&mut self, msg: Self::Msg, ctx: &mut Context<'_, Self::Out, Self::Msg>);
    fn subscribed(
        &mut self,
        sub: &Subscription,
        ctx: &mut Context<'_, Self::Out, Self::Msg>,
    ) -> DemandMode;
    fn cancelled(
        &mut self,
        sub: &Subscription,
        reason: &Reason,
        ctx: &mut Context<'_, Self::Out, Self::Msg>,
    );
    fn format_discarded(&mut self, count: usize) -> bool {
        let _ = count;
        true
    }
    fn terminate(&mut self, reason: &Reason);
    /// The user's stage value, for `Stage::join_state`.
    fn into_state(self) -> Self::State;
}

pub(crate) struct AsProducer<S>(pub(crate) S);
pub(crate) struct AsProducerConsumer<S>(pub(crate) S);
pub(crate) struct AsConsumer<S>(pub(crate) S);

impl<S: Producer> Callbacks for AsProducer<S> {
    type In = Infallible;
    type Out = S::Out;
    type Msg = S::Message;
    type State = S;
    const KIND: StageKind = StageKind::Producer;

    fn format_discarded(&mut self, count: usize) -> bool {
        self.0.format_discarded(count)
    }

    fn terminate(&mut self, reason: &Reason) {
        self.0.terminate(reason)
    }

    fn into_state(self) -> S {
        self.0
    }

    fn demand(&mut self, n: usize, ctx: &mut Context<'_, S::Out, S::Message>) {
        self.0.handle_demand(n, ctx)
    }
    fn events(&mut self, _: Events<'_, Infallible>, _: &mut Context<'_, S::Out, S::Message>) {}
    fn message(&mut self, msg: S::Message, ctx: &mut Context<'_, S::Out, S::Message>) {
        self.0.handle_message(msg, ctx)
    }
    fn subscribed(
        &mut self,
        sub: &Subscription,
        ctx: &mut Context<'_, S::Out, S::Message>,
    ) -> DemandMode {
        self.0.handle_subscribe(sub, ctx);
        DemandMode::Automatic
    }
    fn cancelled(
        &mut self,
        sub: &Subscription,
        reason: &Reason,
        ctx: &mut Context<'_, S::Out, S::Message>,
    ) {
        self.0.handle_cancel(sub, reason, ctx)
    }
}

impl<S: ProducerConsumer> Callbacks for AsProducerConsumer<S> {
    type In = S::In;
    type Out = S::Out;
    type Msg = S::Message;
    type State = S;
    const KIND: StageKind = StageKind::ProducerConsumer;

    fn format_discarded(&mut self, count: usize) -> bool {
        self.0.format_discarded(count)
    }

    fn terminate(&mut self, reason: &Reason) {
        self.0.terminate(reason)
    }

    fn into_state(self) -> S {
        self.0
    }

    fn demand(&mut self, _: usize, _: &mut Context<'_, S::Out, S::Message>) {}
    fn events(&mut self, events: Events<'_, S::In>, ctx: &mut Context<'_, S::Out, S::Message>) {
        self.0.handle_events(events, ctx)
    }
    fn message(&mut self, msg: S::Message, ctx: &mut Context<'_, S::Out, S::Message>) {
        self.0.handle_message(msg, ctx)
    }
    fn subscribed(
        &mut self,
        sub: &Subscription,
        ctx: &mut Context<'_, S::Out, S::Message>,
    ) -> DemandMode {
        self.0.handle_subscribe(sub, ctx)
    }
    fn cancelled(
        &mut self,
        sub: &Subscription,
        reason: &Reason,
        ctx: &mut Context<'_, S::Out, S::Message>,
    ) {
        self.0.handle_cancel(sub, reason, ctx)
    }
}

impl<S: Consumer> Callbacks for AsConsumer<S> {
    type In = S::In;
    type Out = Infallible;
    type Msg = S::Message;
    type State = S;
    const KIND: StageKind = StageKind::Consumer;

    fn terminate(&mut self, reason: &Reason) {
        self.0.terminate(reason)
    }

    fn into_state(self) -> S {
        self.0
    }

    fn demand(&mut self, _: usize, _: &mut Context<'_, Infallible, S::Message>) {}
    fn events(&mut self, events: Events<'_, S::In>, ctx: &mut Context<'_, Infallible, S::Message>) {
        self.0.handle_events(events, ctx)
    }
    fn message(&mut self, msg: S::Message, ctx: &mut Context<'_, Infallible, S::Message>) {
        self.0.handle_message(msg, ctx)
    }
    fn subscribed(
        &mut self,
        sub: &Subscription,
        ctx: &mut Context<'_, Infallible, S::Message>,
    ) -> DemandMode {
        self.0.handle_subscribe(sub, ctx)
    }
    fn cancelled(
        &mut self,
        sub: &Subscription,
        reason: &Reason,
        ctx: &mut Context<'_, Infallible, S::Message>,
    ) {
        self.0.handle_cancel(sub, reason, ctx)
    }
}
