//! JSON for snapshots (feature `observe-json`): `serde::Serialize` for [`Snapshot`] and its
//! parts, and [`Snapshot::to_json`].

use serde::ser::{Serialize, SerializeStruct, Serializer};

use super::snapshot::{EdgeSnapshot, Snapshot, StageSnapshot};

/// `{"interval_secs", "bottleneck", "stages": […], "edges": […]}`: `interval_secs` is the time
/// the rates cover (`null` for a first snapshot), `bottleneck` a stage's name or `null`.
impl Serialize for Snapshot {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let mut s = ser.serialize_struct("Snapshot", 4)?;
        s.serialize_field("interval_secs", &self.interval.map(|d| d.as_secs_f64()))?;
        s.serialize_field(
            "bottleneck",
            &self.bottleneck_stage().map(|b| b.name.as_str()),
        )?;
        s.serialize_field("stages", &self.stages)?;
        s.serialize_field("edges", &self.edges)?;
        s.end()
    }
}

/// Every field of the struct, `kind` as `"producer"`, `"producer_consumer"` or `"consumer"`,
/// `outcome` as `null` while running or the reason's text (`"normal"`, `"error: …"`), plus
/// `state` (`"running"` or the outcome).
impl Serialize for StageSnapshot {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let mut s = ser.serialize_struct("StageSnapshot", 17)?;
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
