//! [`DummyProducer`]: a producer that never emits, for pipelines fed by
//! [`Pipeline::test_messages`](super::Pipeline::test_messages) (Broadway's `DummyProducer`).

use std::fmt;
use std::marker::PhantomData;

use super::message::Message;
use crate::{Context, Producer};

/// A producer of `Message<T>` that never emits: the pipeline runs until it is shut down, and
/// test messages are pushed into it.
pub struct DummyProducer<T>(PhantomData<fn() -> T>);

impl<T> DummyProducer<T> {
    /// A producer that never emits.
    pub fn new() -> DummyProducer<T> {
        DummyProducer(PhantomData)
    }
}

impl<T> Default for DummyProducer<T> {
    fn default() -> Self {
        DummyProducer::new()
    }
}

impl<T> fmt::Debug for DummyProducer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DummyProducer")
    }
}

impl<T: Send + 'static> Producer for DummyProducer<T> {
    type Out = Message<T>;
    type Message = ();

    fn handle_demand(&mut self, _demand: usize, _ctx: &mut Context<'_, Message<T>>) {}
}
