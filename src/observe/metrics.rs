//! Metrics beyond the stages' counters: the [`Metrics`] a layer implements to export what it
//! counts (a pipeline's acknowledgements, an HTTP producer's bytes and reconnects, a Redis
//! source's claims), the [`MetricsSource`] that names one for an observer, and the values a
//! snapshot holds ([`SourceSnapshot`], [`Metric`]).
//!
//! The observe module never names a layer: a layer implements [`Metrics`] on a handle to its
//! counters, and whoever observes registers it ([`Observed::source`](super::Observed::source),
//! or the layer's handle implements [`Observe::metrics_sources`](super::Observe::metrics_sources)
//! itself, as a [`Pipeline`](crate::pipeline::Pipeline) does). Each registered source is read
//! with every snapshot, rendered in `/metrics` as `stageflow_<layer>_<name>` labelled
//! `source="<its name>"`, and drawn on the dashboard's page.

use std::fmt;
use std::sync::Arc;

use crate::HistogramSnapshot;

/// Something that counts and can say what it counted: a layer's counters, exported to
/// observers. Implement it on a cheap handle to shared counters (atomics); `collect` runs on
/// the observer's thread with every snapshot and must not wait on anything.
///
/// # For implementors
///
/// Add each value to `out` with [`MetricSet::counter`] (totals that only grow),
/// [`MetricSet::gauge`] (values that go up and down) or [`MetricSet::histogram`]. Name them
/// in Prometheus style, without the layer's prefix: `bytes_read_total`, `paused`. The same
/// name must keep the same kind.
///
/// # Examples
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use std::sync::Arc;
/// use stageflow::observe::{MetricSet, Metrics, MetricsSource};
///
/// #[derive(Default)]
/// struct Cache {
///     hits: AtomicU64,
/// }
///
/// impl Metrics for Cache {
///     fn layer(&self) -> &str {
///         "cache"
///     }
///     fn collect(&self, out: &mut MetricSet) {
///         out.counter("hits_total", "Lookups served from the cache.", self.hits.load(Ordering::Relaxed));
///     }
/// }
///
/// let cache = Arc::new(Cache::default());
/// cache.hits.fetch_add(3, Ordering::Relaxed);
/// let source = MetricsSource::new("users", cache.clone());
/// let s = source.collect();
/// assert_eq!((s.layer.as_str(), s.metrics[0].name.as_str()), ("cache", "hits_total"));
/// ```
pub trait Metrics: Send + Sync {
    /// The layer these metrics belong to (`"pipeline"`, `"http"`, …): the prefix of their
    /// names after `stageflow_`, and the section of the page they are drawn in.
    fn layer(&self) -> &str;

    /// Adds the current values to `out`.
    fn collect(&self, out: &mut MetricSet);
}

impl<M: Metrics + ?Sized> Metrics for Arc<M> {
    fn layer(&self) -> &str {
        (**self).layer()
    }
    fn collect(&self, out: &mut MetricSet) {
        (**self).collect(out)
    }
}

/// A named source of [`Metrics`], registered with an observer. Cheap to clone.
#[derive(Clone)]
pub struct MetricsSource {
    name: Arc<str>,
    metrics: Arc<dyn Metrics>,
}

impl fmt::Debug for MetricsSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetricsSource")
            .field("name", &self.name)
            .field("layer", &self.metrics.layer())
            .finish()
    }
}

impl MetricsSource {
    /// `metrics`, named `name` (the `source` label of its metrics: a pipeline's name, an
    /// HTTP producer's stage name).
    pub fn new(name: impl Into<String>, metrics: impl Metrics + 'static) -> MetricsSource {
        MetricsSource {
            name: Arc::from(name.into()),
            metrics: Arc::new(metrics),
        }
    }

    /// The source's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its layer.
    pub fn layer(&self) -> &str {
        self.metrics.layer()
    }

    /// Reads its values now.
    pub fn collect(&self) -> SourceSnapshot {
        let mut set = MetricSet::default();
        self.metrics.collect(&mut set);
        SourceSnapshot {
            name: self.name.to_string(),
            layer: self.metrics.layer().to_owned(),
            metrics: set.metrics,
        }
    }
}

/// The values of one [`MetricsSource`] in a [`Snapshot`](super::Snapshot).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct SourceSnapshot {
    /// The source's name.
    pub name: String,
    /// Its layer.
    pub layer: String,
    /// Its values, in the order it gave them.
    pub metrics: Vec<Metric>,
}

impl SourceSnapshot {
    /// The value of the counter or gauge `name` without labels (or with exactly `labels`),
    /// if the source has one.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.metrics
            .iter()
            .find(|m| {
                m.name == name
                    && m.labels.len() == labels.len()
                    && m.labels
                        .iter()
                        .zip(labels)
                        .all(|((k, v), (k2, v2))| k == k2 && v == v2)
            })
            .and_then(|m| match &m.value {
                MetricValue::Counter(n) => Some(*n as f64),
                MetricValue::Gauge(v) => Some(*v),
                MetricValue::Histogram { .. } => None,
            })
    }
}

/// One value a source gave.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Metric {
    /// Its name, without the `stageflow_<layer>_` prefix.
    pub name: String,
    /// What it measures, one sentence.
    pub help: String,
    /// Its labels beyond `source`, as (name, value) pairs.
    pub labels: Vec<(String, String)>,
    /// The value.
    pub value: MetricValue,
}

/// A [`Metric`]'s value.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum MetricValue {
    /// A total that only grows.
    Counter(u64),
    /// A value that goes up and down.
    Gauge(f64),
    /// A distribution.
    Histogram {
        /// The histogram.
        snapshot: HistogramSnapshot,
        /// What one unit of its values is worth in the exported unit (`1e-9` for
        /// nanoseconds exported as seconds, `1.0` for sizes).
        scale: f64,
    },
}

/// `value` in the exported unit: times `scale`, or, for a scale that is the inverse of a
/// whole number (`1e-9`), divided by that number, so that a nanosecond count in seconds is
/// the nearest float (`321 * 1e-9` is `3.210000000000001e-7`, `321 / 1e9` is `3.21e-7`).
pub(crate) fn scaled(value: u64, scale: f64) -> f64 {
    let inverse = (1.0 / scale).round();
    if scale > 0.0 && scale < 1.0 && (inverse * scale - 1.0).abs() < 1e-12 {
        value as f64 / inverse
    } else {
        value as f64 * scale
    }
}

impl MetricValue {
    /// `"counter"`, `"gauge"` or `"histogram"`.
    pub fn kind(&self) -> &'static str {
        match self {
            MetricValue::Counter(_) => "counter",
            MetricValue::Gauge(_) => "gauge",
            MetricValue::Histogram { .. } => "histogram",
        }
    }
}

/// Where a [`Metrics`] source puts its values.
#[derive(Debug, Default)]
pub struct MetricSet {
    metrics: Vec<Metric>,
    labels: Vec<(String, String)>,
}

impl MetricSet {
    fn push(&mut self, name: &str, help: &str, value: MetricValue) -> &mut MetricSet {
        self.metrics.push(Metric {
            name: name.to_owned(),
            help: help.to_owned(),
            labels: self.labels.clone(),
            value,
        });
        self
    }

    /// Adds a counter: a total that only grows (name it `…_total`).
    pub fn counter(&mut self, name: &str, help: &str, value: u64) -> &mut MetricSet {
        self.push(name, help, MetricValue::Counter(value))
    }

    /// Adds a gauge: a value that goes up and down.
    pub fn gauge(&mut self, name: &str, help: &str, value: f64) -> &mut MetricSet {
        self.push(name, help, MetricValue::Gauge(value))
    }

    /// Adds a histogram whose values are worth `scale` each in the exported unit (`1e-9`
    /// for a [`Histogram::durations`](crate::Histogram::durations) exported in seconds, as
    /// Prometheus prefers: name it `…_seconds`).
    pub fn histogram(
        &mut self,
        name: &str,
        help: &str,
        snapshot: HistogramSnapshot,
        scale: f64,
    ) -> &mut MetricSet {
        self.push(name, help, MetricValue::Histogram { snapshot, scale })
    }

    /// Runs `f` with the label `key="value"` added to every value it adds (a batcher's
    /// name, say).
    pub fn labelled(
        &mut self,
        key: &str,
        value: &str,
        f: impl FnOnce(&mut MetricSet),
    ) -> &mut MetricSet {
        self.labels.push((key.to_owned(), value.to_owned()));
        f(self);
        self.labels.pop();
        self
    }
}
