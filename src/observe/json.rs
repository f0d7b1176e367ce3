//! JSON for snapshots (feature `observe-json`): `serde::Serialize` for [`Snapshot`] and its
//! parts, and [`Snapshot::to_json`].

use serde::ser::{Serialize, SerializeMap, SerializeStruct, Serializer};

use super::history::History;
use super::metrics::{scaled, Metric, MetricValue, SourceSnapshot};
use super::process::ProcessSnapshot;
use super::snapshot::{EdgeSnapshot, Snapshot, StageSnapshot};
use crate::HistogramSnapshot;

/// `{"interval_secs", "bottleneck", "stages": […], "edges": […], "sources": […],
/// "process"}`: `interval_secs` is the time the rates cover (`null` for a first snapshot),
/// `bottleneck` a stage's name or `null`, `process` `null` where it cannot be read.
impl Serialize for Snapshot {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let mut s = ser.serialize_struct("Snapshot", 6)?;
        s.serialize_field("interval_secs", &self.interval.map(|d| d.as_secs_f64()))?;
        s.serialize_field(
            "bottleneck",
            &self.bottleneck_stage().map(|b| b.name.as_str()),
        )?;
        s.serialize_field("stages", &self.stages)?;
        s.serialize_field("edges", &self.edges)?;
        s.serialize_field("sources", &self.sources)?;
        s.serialize_field("process", &self.process)?;
        s.end()
    }
}

/// A histogram of nanoseconds, in seconds: `{"count", "sum_secs", "p50_secs", "p99_secs",
/// "max_secs"}`.
struct Seconds<'a>(&'a HistogramSnapshot);

impl Serialize for Seconds<'_> {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        Quantiles(self.0, 1e-9, "secs").serialize(ser)
    }
}

/// A histogram's count, sum, p50, p99 and max, times a scale, the last four suffixed.
struct Quantiles<'a>(&'a HistogramSnapshot, f64, &'static str);

impl Serialize for Quantiles<'_> {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let (h, scale) = (self.0, self.1);
        let mut s = ser.serialize_map(Some(5))?;
        s.serialize_entry("count", &h.count)?;
        let suffix = self.2;
        s.serialize_entry(&format!("sum_{suffix}"), &scaled(h.sum, scale))?;
        s.serialize_entry(&format!("p50_{suffix}"), &scaled(h.quantile(0.5), scale))?;
        s.serialize_entry(&format!("p99_{suffix}"), &scaled(h.quantile(0.99), scale))?;
        s.serialize_entry(&format!("max_{suffix}"), &scaled(h.max, scale))?;
        s.end()
    }
}

/// `{"name", "layer", "metrics": […]}`.
impl Serialize for SourceSnapshot {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let mut s = ser.serialize_struct("SourceSnapshot", 3)?;
        s.serialize_field("name", &self.name)?;
        s.serialize_field("layer", &self.layer)?;
        s.serialize_field("metrics", &self.metrics)?;
        s.end()
    }
}

/// `{"name", "help", "kind", "labels": {…}, "value"}`: `value` a number for a counter or a
/// gauge (`null` for a gauge that is not a finite number), and for a histogram `{"count",
/// "sum", "p50", "p99", "max"}` in the exported unit.
impl Serialize for Metric {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let mut s = ser.serialize_struct("Metric", 5)?;
        s.serialize_field("name", &self.name)?;
        s.serialize_field("help", &self.help)?;
        s.serialize_field("kind", self.value.kind())?;
        let labels: std::collections::BTreeMap<&str, &str> = self
            .labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        s.serialize_field("labels", &labels)?;
        match &self.value {
            MetricValue::Counter(n) => s.serialize_field("value", n)?,
            MetricValue::Gauge(v) => s.serialize_field("value", &v.is_finite().then_some(*v))?,
            MetricValue::Histogram { snapshot, scale } => {
                s.serialize_field("value", &Quantiles(snapshot, *scale, "value"))?
            }
        }
        s.end()
    }
}

/// `{"cpu_user_secs", "cpu_system_secs", "cpu_cores", "resident_bytes", "virtual_bytes",
/// "threads"}`.
impl Serialize for ProcessSnapshot {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let mut s = ser.serialize_struct("ProcessSnapshot", 6)?;
        s.serialize_field("cpu_user_secs", &self.cpu_user.as_secs_f64())?;
        s.serialize_field("cpu_system_secs", &self.cpu_system.as_secs_f64())?;
        s.serialize_field("cpu_cores", &self.cpu_cores)?;
        s.serialize_field("resident_bytes", &self.resident_bytes)?;
        s.serialize_field("virtual_bytes", &self.virtual_bytes)?;
        s.serialize_field("threads", &self.threads)?;
        s.end()
    }
}

/// `{"span_secs", "ages_secs": […], "stages": [{"name", "out_per_sec": […],
/// "share_busy": […]}]}`: per point, oldest first, how long before the newest it was taken;
/// per stage its series, `null` where the stage was not in a snapshot.
impl Serialize for History {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        struct Series<'a>(&'a super::history::StageHistory);
        impl Serialize for Series<'_> {
            fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
                let mut s = ser.serialize_struct("StageHistory", 3)?;
                s.serialize_field("name", self.0.name())?;
                let round = |v: Option<f64>| v.map(|v| (v * 1000.0).round() / 1000.0);
                let out: Vec<_> = self.0.out_per_sec().map(round).collect();
                let busy: Vec<_> = self.0.share_busy().map(round).collect();
                s.serialize_field("out_per_sec", &out)?;
                s.serialize_field("share_busy", &busy)?;
                s.end()
            }
        }
        let mut s = ser.serialize_struct("History", 3)?;
        s.serialize_field("span_secs", &self.span().as_secs_f64())?;
        let ages: Vec<f64> = self
            .ages()
            .map(|d| (d.as_secs_f64() * 1000.0).round() / 1000.0)
            .collect();
        s.serialize_field("ages_secs", &ages)?;
        let stages: Vec<Series<'_>> = self.stages().iter().map(Series).collect();
        s.serialize_field("stages", &stages)?;
        s.end()
    }
}

/// Every field of the struct, `kind` as `"producer"`, `"producer_consumer"` or `"consumer"`,
/// `outcome` as `null` while running or the reason's text (`"normal"`, `"error: …"`), plus
/// `state` (`"running"` or the outcome); `timing` as `callback` and `per_event`, each
/// `{"count", "sum_secs", "p50_secs", "p99_secs", "max_secs"}`.
impl Serialize for StageSnapshot {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let mut s = ser.serialize_struct("StageSnapshot", 22)?;
        s.serialize_field("name", &self.name)?;
        s.serialize_field("thread", &self.thread)?;
        s.serialize_field("kind", self.kind.as_str())?;
        s.serialize_field("state", &self.state())?;
        s.serialize_field("outcome", &self.outcome.as_ref().map(|r| r.to_string()))?;
        s.serialize_field("events_in", &self.events_in)?;
        s.serialize_field("events_out", &self.events_out)?;
        s.serialize_field("emitted", &self.emitted)?;
        s.serialize_field("discarded", &self.discarded)?;
        s.serialize_field("buffered", &self.buffered)?;
        s.serialize_field("inbox_len", &self.inbox_len)?;
        s.serialize_field("inbox_capacity", &self.inbox_capacity)?;
        s.serialize_field("owed", &self.owed)?;
        s.serialize_field("in_per_sec", &self.in_per_sec)?;
        s.serialize_field("out_per_sec", &self.out_per_sec)?;
        s.serialize_field("busy", &self.busy)?;
        s.serialize_field("share_busy", &self.share_busy)?;
        s.serialize_field("share_waiting_input", &self.share_waiting_input)?;
        s.serialize_field("share_waiting_demand", &self.share_waiting_demand)?;
        s.serialize_field("callback", &Seconds(&self.timing.callbacks))?;
        s.serialize_field("per_event", &Seconds(&self.timing.per_event))?;
        s.end()
    }
}

/// Every field of the struct, `subscription` as its number.
impl Serialize for EdgeSnapshot {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let mut s = ser.serialize_struct("EdgeSnapshot", 9)?;
        s.serialize_field("subscription", &self.subscription.as_u64())?;
        s.serialize_field("producer", &self.producer)?;
        s.serialize_field("consumer", &self.consumer)?;
        s.serialize_field("demand", &self.demand)?;
        s.serialize_field("owed", &self.owed)?;
        s.serialize_field("max_demand", &self.max_demand)?;
        s.serialize_field("min_demand", &self.min_demand)?;
        s.serialize_field("events", &self.events)?;
        s.serialize_field("per_sec", &self.per_sec)?;
        s.end()
    }
}

impl Snapshot {
    /// The snapshot as a JSON document (see its `Serialize` implementation for the shape).
    pub fn to_json(&self) -> String {
        // Serializing plain strings and numbers into a String cannot fail; NaN rates cannot
        // occur (an interval of zero gives rates of 0).
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}
