//! Counters per layer: shared atomic cells the stages add to (once per batch of messages, not
//! per message), and the plain snapshots read from the pipeline's handle.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crate::Histogram;

/// The cells of one layer.
#[derive(Debug)]
pub(crate) struct Cells {
    pub(crate) messages_in: AtomicU64,
    pub(crate) successful: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) batches: AtomicU64,
    /// Batch processors: messages per batch handled.
    pub(crate) batch_sizes: Histogram,
    /// Batch processors: nanoseconds per batch, `handle_batch` to acknowledgements.
    pub(crate) batch_times: Histogram,
}

impl Default for Cells {
    fn default() -> Self {
        Cells {
            messages_in: AtomicU64::new(0),
            successful: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            batch_sizes: Histogram::sizes(),
            batch_times: Histogram::durations(),
        }
    }
}

/// Times one batch from its creation to its drop, and records its size (see
/// [`Cells::time_batch`]).
pub(crate) struct BatchTimer<'a> {
    cells: &'a Cells,
    started: Instant,
}

impl Drop for BatchTimer<'_> {
    fn drop(&mut self) {
        self.cells
            .batch_times
            .record_duration(self.started.elapsed());
    }
}

impl Cells {
    /// A batch of `size` messages is handled from now until the returned guard drops.
    pub(crate) fn time_batch(&self, size: usize) -> BatchTimer<'_> {
        self.batch_sizes.record(size as u64);
        BatchTimer {
            cells: self,
            started: Instant::now(),
        }
    }

    pub(crate) fn add(cell: &AtomicU64, n: u64) {
        if n > 0 {
            cell.fetch_add(n, Ordering::Relaxed);
        }
    }

    pub(crate) fn snapshot(&self) -> LayerCounters {
        // Outputs first, then inputs: `in_flight` is never negative.
        let successful = self.successful.load(Ordering::Relaxed);
        let failed = self.failed.load(Ordering::Relaxed);
        let batches = self.batches.load(Ordering::Relaxed);
        let messages_in = self.messages_in.load(Ordering::Relaxed);
        LayerCounters {
            messages_in,
            successful,
            failed,
            batches,
            in_flight: messages_in.saturating_sub(successful + failed),
        }
    }
}

/// One layer's counters (all its stages together).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LayerCounters {
    /// Messages received.
    pub messages_in: u64,
    /// Messages the layer finished successfully: processors, handled and emitted towards a
    /// batcher (they may still wait in the processor's output buffer until the batcher asks),
    /// or acknowledged, without batchers; batchers, acknowledged after `handle_batch`.
    pub successful: u64,
    /// Messages that failed in this layer (and were acknowledged as failed).
    pub failed: u64,
    /// Processors: batches of events handled; batchers: batches handled by `handle_batch`.
    pub batches: u64,
    /// Received and not yet finished: `messages_in - successful - failed`.
    pub in_flight: u64,
}

/// The producers' counters, from their stages' [`Counters`](crate::Counters), every
/// incarnation of a restarted producer summed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProducerCounters {
    /// Messages sent to processors.
    pub emitted: u64,
    /// Messages held in the producers' buffers.
    pub buffered: u64,
    /// Messages the producers discarded (buffer policy, a stop, or a crash that left them
    /// in a buffer).
    pub discarded: u64,
    /// Producers started again after a crash (see [Restarts](super#restarts)).
    pub restarts: u64,
}

/// A snapshot of a pipeline's counters, from [`Pipeline::counters`](super::Pipeline::counters).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PipelineCounters {
    /// The producers.
    pub producers: ProducerCounters,
    /// Messages pushed with [`Pipeline::push_messages`](super::Pipeline::push_messages).
    pub pushed: u64,
    /// The processors.
    pub processors: LayerCounters,
    /// Each batcher (with its batch processors), by name, in the order they were declared.
    pub batchers: Vec<(String, LayerCounters)>,
    /// Messages acknowledged successful, the whole pipeline.
    pub successful: u64,
    /// Messages acknowledged failed, the whole pipeline.
    pub failed: u64,
}

impl PipelineCounters {
    /// Messages that entered the pipeline (emitted by a producer, pushed, or left in a
    /// producer's buffer when it was stopped) and were never acknowledged. Zero after a drain
    /// that completed.
    pub fn unacknowledged(&self) -> u64 {
        (self.producers.emitted + self.producers.discarded + self.pushed)
            .saturating_sub(self.successful + self.failed)
    }
}
