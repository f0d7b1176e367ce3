//! The batcher stage (one per batcher name: it groups messages into batches by size or
//! timeout, per partition, and flushes the remainder when its processors have all ended) and
//! the batch processor stages behind it (`handle_batch`, then `handle_failed`, then one
//! acknowledgement call per acknowledger per batch).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Duration;

use super::batch::{Accumulator, Batch, BatchInfo, BatchSize, OnTimer, Trigger};
use super::counters::Cells;
use super::message::{ack_all, ack_unless_failed, panic_message, Message, PipelineAck};
use super::processor::FailedHook;
use crate::recycle::Recycler;
use crate::{
    Consumer, ConsumerContext, Context, DemandMode, Direction, Events, ProducerConsumer, Reason,
    Subscription,
};

/// A key function (`partition_by`).
pub(crate) type KeyFn<T> = Arc<dyn Fn(&Message<T>) -> u64 + Send + Sync>;
/// A batch handler, its error turned into a string.
pub(crate) type BatchHandler<T> = Box<dyn FnMut(&mut Batch<T>) -> Result<(), String> + Send>;

/// A batcher's timer: the batch in the making in `partition` may be due (one timer per
/// partition at a time, see [`Accumulator`]).
#[derive(Debug)]
pub(crate) struct Due {
    partition: usize,
}

pub(crate) struct Batcher<T> {
    pub(crate) name: Arc<str>,
    pub(crate) size: BatchSize<T>,
    pub(crate) timeout: Duration,
    pub(crate) partition_by: Option<KeyFn<T>>,
    pub(crate) parts: Vec<Accumulator<T>>,
    pub(crate) upstreams: usize,
    pub(crate) cells: Arc<Cells>,
    /// Where the buffers of messages it empties go back to (see `recycle`).
    pub(crate) recycler: Recycler<Message<T>>,
}

impl<T> Batcher<T> {
    pub(crate) fn new(
        name: Arc<str>,
        size: BatchSize<T>,
        timeout: Duration,
        partition_by: Option<KeyFn<T>>,
        partitions: usize,
        cells: Arc<Cells>,
        recycler: Recycler<Message<T>>,
    ) -> Batcher<T> {
        Batcher {
            name,
            size,
            timeout,
            partition_by,
            parts: (0..partitions).map(|_| Accumulator::new()).collect(),
            upstreams: 0,
            cells,
            recycler,
        }
    }

    fn batch(&self, messages: Vec<Message<T>>, partition: usize, trigger: Trigger) -> Batch<T> {
        Batch {
            messages,
            info: BatchInfo {
                batcher: self.name.clone(),
                partition,
                trigger,
            },
        }
    }
}

impl<T> Batcher<T> {
    /// Takes a batch of events; returns the batches that are full.
    fn on_events<Out>(
        &mut self,
        events: Events<'_, Message<T>>,
        ctx: &mut Context<'_, Out, Due>,
    ) -> Vec<Batch<T>> {
        Cells::add(&self.cells.messages_in, events.len() as u64);
        let mut out = Vec::new();
        if let (None, BatchSize::Count(size)) = (&self.partition_by, &self.size) {
            // One partition, batches by count: move runs of messages, not one at a time.
            let (size, mut events) = (*size, events);
            while events.len() > 0 {
                let (full, set_timer) = self.parts[0].fill_from(&mut events, size, &self.recycler);
                if let Some(messages) = full {
                    out.push(self.batch(messages, 0, Trigger::Size));
                }
                if set_timer {
                    ctx.send_after(Due { partition: 0 }, self.timeout);
                }
            }
            return out;
        }
        let n = self.parts.len() as u64;
        for m in events {
            let p = match &self.partition_by {
                Some(key) => (key(&m) % n) as usize,
                None => 0,
            };
            let (full, set_timer) = self.parts[p].push(m, &self.size);
            if let Some(messages) = full {
                out.push(self.batch(messages, p, Trigger::Size));
            }
            if set_timer {
                ctx.send_after(Due { partition: p }, self.timeout);
            }
        }
        out
    }

    /// A partition's timer: its batch in the making if that batch is due, else the timer is
    /// set again for when it will be.
    fn on_due<Out>(&mut self, due: Due, ctx: &mut Context<'_, Out, Due>) -> Option<Batch<T>> {
        let p = due.partition;
        match self.parts[p].on_timer(crate::clock::now(), self.timeout) {
            OnTimer::Due(messages) => Some(self.batch(messages, p, Trigger::Timeout)),
            OnTimer::Again(left) => {
                ctx.send_after(due, left);
                None
            }
            OnTimer::Idle => None,
        }
    }

    fn on_subscribe(&mut self, subscription: &Subscription) {
        if subscription.direction() == Direction::Upstream {
            self.upstreams += 1;
        }
    }

    /// A subscription ended; once every processor has, what is left goes out (never empty).
    fn on_cancel(&mut self, subscription: &Subscription) -> Vec<Batch<T>> {
        if subscription.direction() != Direction::Upstream {
            return Vec::new();
        }
        self.upstreams = self.upstreams.saturating_sub(1);
        if self.upstreams > 0 {
            return Vec::new();
        }
        let mut out = Vec::new();
        for p in 0..self.parts.len() {
            if let Some(messages) = self.parts[p].take() {
                out.push(self.batch(messages, p, Trigger::Flush));
            }
        }
        out
    }
}

impl<T: Send + 'static> ProducerConsumer for Batcher<T> {
    type In = Message<T>;
    type Out = Batch<T>;
    type Message = Due;

    fn handle_events(
        &mut self,
        events: Events<'_, Message<T>>,
        ctx: &mut Context<'_, Batch<T>, Due>,
    ) {
        let out = self.on_events(events, ctx);
        ctx.emit_all(out);
    }

    fn handle_message(&mut self, due: Due, ctx: &mut Context<'_, Batch<T>, Due>) {
        if let Some(batch) = self.on_due(due, ctx) {
            ctx.emit(batch);
        }
    }

    fn handle_subscribe(
        &mut self,
        subscription: &Subscription,
        _ctx: &mut Context<'_, Batch<T>, Due>,
    ) -> DemandMode {
        self.on_subscribe(subscription);
        DemandMode::Automatic
    }

    fn handle_cancel(
        &mut self,
        subscription: &Subscription,
        _reason: &Reason,
        ctx: &mut Context<'_, Batch<T>, Due>,
    ) {
        let out = self.on_cancel(subscription);
        ctx.emit_all(out);
    }
}

/// A batcher with one batch processor and no partitions, on one thread: `handle_batch` runs
/// on the batcher's own thread. Behind a separate batch processor with demand 1 / 0 the
/// batcher would wait for each batch to be handled anyway (a producer-consumer takes events
/// only while its consumers have demand); this saves a thread and a hand-off per batch.
pub(crate) struct Fused<T> {
    pub(crate) batcher: Batcher<T>,
    pub(crate) processor: BatchProcessor<T>,
}

impl<T: Send + 'static> Consumer for Fused<T> {
    type In = Message<T>;
    type Message = Due;

    fn handle_events(
        &mut self,
        events: Events<'_, Message<T>>,
        ctx: &mut ConsumerContext<'_, Due>,
    ) {
        for batch in self.batcher.on_events(events, ctx) {
            self.processor.handle(batch);
        }
    }

    fn handle_message(&mut self, due: Due, ctx: &mut ConsumerContext<'_, Due>) {
        if let Some(batch) = self.batcher.on_due(due, ctx) {
            self.processor.handle(batch);
        }
    }

    fn handle_subscribe(
        &mut self,
        subscription: &Subscription,
        _ctx: &mut ConsumerContext<'_, Due>,
    ) -> DemandMode {
        self.batcher.on_subscribe(subscription);
        DemandMode::Automatic
    }

    fn handle_cancel(
        &mut self,
        subscription: &Subscription,
        _reason: &Reason,
        _ctx: &mut ConsumerContext<'_, Due>,
    ) {
        for batch in self.batcher.on_cancel(subscription) {
            self.processor.handle(batch);
        }
    }
}

impl<T> Drop for Batcher<T> {
    fn drop(&mut self) {
        let left: usize = self.parts.iter().map(Accumulator::len).sum();
        if left > 0 {
            log::warn!(
                "pipeline batcher {}: ended with {left} messages not batched (never acknowledged)",
                self.name
            );
        }
    }
}

pub(crate) struct BatchProcessor<T> {
    pub(crate) handler: BatchHandler<T>,
    pub(crate) on_failed: Option<FailedHook<T>>,
    pub(crate) cells: Arc<Cells>,
    pub(crate) totals: Arc<Cells>,
    /// The pipeline's own acknowledger.
    pub(crate) ack: PipelineAck,
}

impl<T: Send + 'static> Consumer for BatchProcessor<T> {
    type In = Batch<T>;
    type Message = ();

    fn handle_events(&mut self, events: Events<'_, Batch<T>>, _ctx: &mut ConsumerContext<'_>) {
        for batch in events {
            self.handle(batch);
        }
    }
}

impl<T> BatchProcessor<T> {
    /// `handle_batch`, `handle_failed`, then the acknowledgements.
    fn handle(&mut self, mut batch: Batch<T>) {
        let _timer = self.cells.time_batch(batch.messages.len());
        // Made known to this thread before the handler runs (`ack_immediately`).
        self.ack.enter();
        {
            let outcome = catch_unwind(AssertUnwindSafe(|| (self.handler)(&mut batch)));
            let all_failed = match outcome {
                Ok(Ok(())) => None,
                Ok(Err(reason)) => Some(reason),
                Err(payload) => Some(panic_message(payload.as_ref())),
            };
            if all_failed.is_none() {
                // The common case: every message succeeded.
                let n = batch.messages.len() as u64;
                match ack_unless_failed(std::mem::take(&mut batch.messages), self.ack.get()) {
                    Ok((s, f)) => {
                        Cells::add(&self.cells.batches, 1);
                        Cells::add(&self.cells.successful, n);
                        Cells::add(&self.totals.successful, s);
                        Cells::add(&self.totals.failed, f);
                        return;
                    }
                    Err(messages) => batch.messages = messages,
                }
            }
            let (mut ok, mut failed): (Vec<_>, Vec<_>) = batch
                .messages
                .into_iter()
                .map(|mut m| {
                    if let (Some(reason), false) = (&all_failed, m.is_failed()) {
                        m.fail(reason.clone());
                    }
                    m
                })
                .partition(|m| !m.is_failed());
            if !failed.is_empty() {
                if let Some(hook) = &self.on_failed {
                    if catch_unwind(AssertUnwindSafe(|| hook(&mut failed))).is_err() {
                        log::error!("pipeline: handle_failed panicked; the messages stay failed");
                    }
                    for m in &mut failed {
                        if !m.is_failed() {
                            m.fail("failed in a batch");
                        }
                    }
                }
            }
            Cells::add(&self.cells.batches, 1);
            Cells::add(&self.cells.successful, ok.len() as u64);
            Cells::add(&self.cells.failed, failed.len() as u64);
            ok.append(&mut failed);
            let (s, f) = ack_all(ok, self.ack.get());
            Cells::add(&self.totals.successful, s);
            Cells::add(&self.totals.failed, f);
        }
    }
}
