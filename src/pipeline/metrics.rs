//! [`PipelineMetrics`]: a pipeline's counters as a source of metrics for
//! `stageflow::observe`, and the pipeline as something to observe (its stages and its
//! counters), so that `Dashboard::serve(addr, &pipeline)` shows both.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::builder::ReadCounters;
use super::counters::{Cells, LayerCounters, PipelineCounters, ProducerCounters};
use super::handle::Pipeline;
use crate::observe::{MetricSet, Metrics, MetricsSource, Observe};
use crate::supervise::Group;
use crate::StageRef;

/// A pipeline's counters, readable while it runs and after, from
/// [`Pipeline::metrics`]: its [`counters`](PipelineMetrics::counters), and as
/// [`Metrics`] (layer `pipeline`): `acknowledged_total` (labelled `status`), `pushed_total`,
/// `producer_emitted_total`, `producer_discarded_total`, `producer_buffered`,
/// `unacknowledged`, and per layer (labelled `layer="processors"`, or `layer="batcher"` and
/// `batcher`) `messages_in_total`, `successful_total`, `failed_total`, `batches_total`,
/// `in_flight`, and for batchers the histograms `batch_size_messages` and `batch_seconds`
/// (from `handle_batch` to the acknowledgements).
#[derive(Clone)]
pub struct PipelineMetrics {
    /// The producers' counters, every incarnation summed.
    pub(crate) producers: Vec<ReadCounters>,
    /// The group that restarts them.
    pub(crate) group: Group,
    pub(crate) processors: Arc<Cells>,
    pub(crate) batchers: Vec<(String, Arc<Cells>)>,
    pub(crate) totals: Arc<Cells>,
    pub(crate) pushed: Arc<AtomicU64>,
}

impl fmt::Debug for PipelineMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.counters().fmt(f)
    }
}

impl PipelineMetrics {
    /// The counters now (as [`Pipeline::counters`]).
    pub fn counters(&self) -> PipelineCounters {
        let mut producers = ProducerCounters::default();
        for p in &self.producers {
            let c = p();
            producers.emitted += c.events_out;
            producers.buffered += c.buffered;
            producers.discarded += c.discarded;
        }
        producers.restarts = self.group.restarts();
        let totals = self.totals.snapshot();
        PipelineCounters {
            producers,
            pushed: self.pushed.load(Ordering::Relaxed),
            processors: self.processors.snapshot(),
            batchers: self
                .batchers
                .iter()
                .map(|(n, c)| (n.clone(), c.snapshot()))
                .collect(),
            successful: totals.successful,
            failed: totals.failed,
        }
    }
}

fn layer(out: &mut MetricSet, c: &LayerCounters, cells: Option<&Cells>) {
    out.counter(
        "messages_in_total",
        "Messages a pipeline layer received.",
        c.messages_in,
    )
    .counter(
        "successful_total",
        "Messages a pipeline layer finished successfully.",
        c.successful,
    )
    .counter(
        "failed_total",
        "Messages that failed in a pipeline layer.",
        c.failed,
    )
    .counter(
        "batches_total",
        "Batches a pipeline layer handled (processors: batches of events; batchers: handle_batch calls).",
        c.batches,
    )
    .gauge(
        "in_flight",
        "Messages a pipeline layer received and has not finished.",
        c.in_flight as f64,
    );
    if let Some(cells) = cells {
        out.histogram(
            "batch_size_messages",
            "Messages per batch a batcher's batch processors handled.",
            cells.batch_sizes.snapshot(),
            1.0,
        )
        .histogram(
            "batch_seconds",
            "Time per batch in a batch processor, from handle_batch to the acknowledgements.",
            cells.batch_times.snapshot(),
            1e-9,
        );
    }
}

impl Metrics for PipelineMetrics {
    fn layer(&self) -> &str {
        "pipeline"
    }

    fn collect(&self, out: &mut MetricSet) {
        let c = self.counters();
        let help = "Messages acknowledged, by status.";
        out.labelled("status", "successful", |out| {
            out.counter("acknowledged_total", help, c.successful);
        })
        .labelled("status", "failed", |out| {
            out.counter("acknowledged_total", help, c.failed);
        })
        .counter(
            "pushed_total",
            "Messages pushed into the processors with push_messages.",
            c.pushed,
        )
        .counter(
            "producer_emitted_total",
            "Messages the producers sent to processors.",
            c.producers.emitted,
        )
        .counter(
            "producer_discarded_total",
            "Messages the producers discarded.",
            c.producers.discarded,
        )
        .gauge(
            "producer_buffered",
            "Messages held in the producers' buffers.",
            c.producers.buffered as f64,
        )
        .gauge(
            "unacknowledged",
            "Messages that entered the pipeline and are not acknowledged yet.",
            c.unacknowledged() as f64,
        );
        out.labelled("layer", "processors", |out| {
            layer(out, &c.processors, None);
        });
        for ((name, counters), (_, cells)) in c.batchers.iter().zip(&self.batchers) {
            out.labelled("layer", "batcher", |out| {
                out.labelled("batcher", name, |out| layer(out, counters, Some(cells)));
            });
        }
    }
}

/// The pipeline's stages, and its counters as a metrics source named after the pipeline.
impl<I: Send + 'static> Observe for Pipeline<I> {
    fn observed(&self) -> Vec<StageRef> {
        // The running incarnations of the supervised producers and processors too.
        self.topology.current_stages()
    }

    fn metrics_sources(&self) -> Vec<MetricsSource> {
        vec![MetricsSource::new(self.name(), self.metrics())]
    }
}
