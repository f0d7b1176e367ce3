//! [`Observed`]: stages and metrics sources gathered from several places (a topology, a
//! pipeline, an HTTP producer's stats) into one thing to observe.

use super::metrics::{Metrics, MetricsSource};
use super::snapshot::Observe;
use crate::StageRef;

/// Stages and [`MetricsSource`]s to observe together: hand it to an
/// [`Observer`](super::Observer), a [`Reporter`](super::Reporter) or the dashboard.
///
/// # Examples
///
/// ```
/// use stageflow::observe::{Observe, Observed};
/// use stageflow::{SubscribeOptions, Topology};
///
/// let numbers = stageflow::from_iter(0..10u64).name("numbers").spawn()?;
/// let topology = Topology::new().with(&numbers);
/// let late = stageflow::flow::Window::<u64>::global().counts();
/// let observed = Observed::new(&topology).source("words", late);
/// let snapshot = observed.snapshot();
/// assert_eq!(snapshot.source("words").unwrap().layer, "flow");
/// let metrics = snapshot.to_prometheus();
/// assert!(metrics.contains("stageflow_flow_late_events_total{source=\"words\"} 0"));
/// # numbers.stop();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct Observed {
    stages: Vec<StageRef>,
    sources: Vec<MetricsSource>,
}

impl Observed {
    /// The stages and sources of `what` (a [`Topology`](crate::Topology), a pipeline, a
    /// handle).
    pub fn new(what: &(impl Observe + ?Sized)) -> Observed {
        Observed {
            stages: what.observed(),
            sources: what.metrics_sources(),
        }
    }

    /// Adds the stages and sources of `what`.
    pub fn with(mut self, what: &(impl Observe + ?Sized)) -> Observed {
        self.stages.extend(what.observed());
        self.sources.extend(what.metrics_sources());
        self
    }

    /// Adds `metrics`, named `name`.
    pub fn source(mut self, name: impl Into<String>, metrics: impl Metrics + 'static) -> Observed {
        self.sources.push(MetricsSource::new(name, metrics));
        self
    }
}

impl Observe for Observed {
    fn observed(&self) -> Vec<StageRef> {
        self.stages.clone()
    }

    fn metrics_sources(&self) -> Vec<MetricsSource> {
        self.sources.clone()
    }
}
