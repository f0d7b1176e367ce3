//! [`StreamCounters`]: what a Redis stream source and its acknowledger did, shared by the
//! producers' threads and the processors that acknowledge, readable while the pipeline runs.

use std::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of a [`StreamSource`](super::StreamSource)'s counters, all its producers and its
/// acknowledger together; see [`StreamSource::counters`](super::StreamSource::counters).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StreamCounters {
    /// Read commands sent (`XREADGROUP` and `XAUTOCLAIM`), whatever they returned.
    pub reads: u64,
    /// Entries read as new (`XREADGROUP ... >`).
    pub read: u64,
    /// Entries of this consumer's own pending list read again on start or after a reconnect
    /// (`XREADGROUP ... 0`).
    pub resumed: u64,
    /// Entries claimed from the group's pending list (`XAUTOCLAIM` past the idle time): left
    /// by a dead consumer, or failed earlier and due for a retry.
    pub claimed: u64,
    /// Entries read or claimed but not emitted because they were still in flight in this
    /// process (never handled twice at once).
    pub skipped_in_flight: u64,
    /// Entries acknowledged (`XACK`'s own count: an entry is counted once, however often the
    /// acknowledgement is retried).
    pub acked: u64,
    /// Failed messages reported by the pipeline (including entries that did not decode).
    pub failed: u64,
    /// Failed entries left pending, to be claimed again after the idle time.
    pub left_pending: u64,
    /// Failed entries moved to the dead-letter stream and acknowledged.
    pub dead_lettered: u64,
    /// Entries whose fields did not decode into the source's type (failed at once).
    pub malformed: u64,
    /// Connections made again after one failed (reading, acknowledging or dead-lettering).
    pub reconnects: u64,
    /// Command errors (connection faults included), each logged.
    pub errors: u64,
    /// Acknowledgements given up after the acknowledgement timeout (the entries stay pending
    /// and are claimed again: delivered at least once, never lost).
    pub ack_failures: u64,
}

#[derive(Default, Debug)]
pub(crate) struct Cells {
    pub(crate) reads: AtomicU64,
    pub(crate) read: AtomicU64,
    pub(crate) resumed: AtomicU64,
    pub(crate) claimed: AtomicU64,
    pub(crate) skipped_in_flight: AtomicU64,
    pub(crate) acked: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) left_pending: AtomicU64,
    pub(crate) dead_lettered: AtomicU64,
    pub(crate) malformed: AtomicU64,
    pub(crate) reconnects: AtomicU64,
    pub(crate) errors: AtomicU64,
    pub(crate) ack_failures: AtomicU64,
}

impl Cells {
    pub(crate) fn add(cell: &AtomicU64, n: u64) {
        cell.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> StreamCounters {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StreamCounters {
            reads: g(&self.reads),
            read: g(&self.read),
            resumed: g(&self.resumed),
            claimed: g(&self.claimed),
            skipped_in_flight: g(&self.skipped_in_flight),
            acked: g(&self.acked),
            failed: g(&self.failed),
            left_pending: g(&self.left_pending),
            dead_lettered: g(&self.dead_lettered),
            malformed: g(&self.malformed),
            reconnects: g(&self.reconnects),
            errors: g(&self.errors),
            ack_failures: g(&self.ack_failures),
        }
    }
}

/// A source's counters as metrics (layer `redis`): `reads_total`, `read_total`,
/// `resumed_total`, `claimed_total`, `skipped_in_flight_total`, `acked_total`,
/// `failed_total`, `left_pending_total`, `dead_lettered_total`, `malformed_total`,
/// `reconnects_total`, `errors_total`, `ack_failures_total`.
impl<T> crate::observe::Metrics for super::StreamSource<T>
where
    super::StreamSource<T>: Send + Sync,
{
    fn layer(&self) -> &str {
        "redis"
    }

    fn collect(&self, out: &mut crate::observe::MetricSet) {
        let c = self.counters();
        out.counter(
            "reads_total",
            "Read commands sent (XREADGROUP, XAUTOCLAIM).",
            c.reads,
        )
        .counter("read_total", "Entries read as new.", c.read)
        .counter(
            "resumed_total",
            "Entries of this consumer's pending list read again.",
            c.resumed,
        )
        .counter(
            "claimed_total",
            "Entries claimed from the group's pending list.",
            c.claimed,
        )
        .counter(
            "skipped_in_flight_total",
            "Entries read or claimed but still in flight here, not emitted.",
            c.skipped_in_flight,
        )
        .counter("acked_total", "Entries acknowledged (XACK).", c.acked)
        .counter(
            "failed_total",
            "Failed messages reported by the pipeline.",
            c.failed,
        )
        .counter(
            "left_pending_total",
            "Failed entries left pending for a retry.",
            c.left_pending,
        )
        .counter(
            "dead_lettered_total",
            "Failed entries moved to the dead-letter stream.",
            c.dead_lettered,
        )
        .counter(
            "malformed_total",
            "Entries whose fields did not decode.",
            c.malformed,
        )
        .counter(
            "reconnects_total",
            "Connections made again after one failed.",
            c.reconnects,
        )
        .counter("errors_total", "Command errors.", c.errors)
        .counter(
            "ack_failures_total",
            "Acknowledgements given up after the acknowledgement timeout.",
            c.ack_failures,
        );
    }
}
