//! [`HttpStats`]: the counters of one HTTP producer, shared by its stage and reader threads and
//! readable from anywhere while it runs; [`HttpCounters`] is a snapshot of them.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

/// A snapshot of an HTTP producer's counters; see [`HttpStats::snapshot`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct HttpCounters {
    /// Body bytes read (after transfer decoding).
    pub bytes_read: u64,
    /// Frames decoded into events (a polling producer: events its pages gave).
    pub frames: u64,
    /// Keep-alive heartbeats seen.
    pub heartbeats: u64,
    /// Frames that did not decode (bad JSON, or not the user's type), logged and skipped;
    /// framing errors; polling pages the page function refused.
    pub malformed: u64,
    /// Frames (or polling bodies) over the size limit; each dropped its connection.
    pub oversize: u64,
    /// Stalls: no byte, not even a heartbeat, for longer than the stall timeout.
    pub stalls: u64,
    /// Requests sent (connections tried, or pages fetched).
    pub requests: u64,
    /// Requests sent after a failure or the end of a body (every request but the first).
    pub reconnects: u64,
    /// The status of the last response, if any came.
    pub last_status: Option<u16>,
    /// Why the last connection or request ended, if one did.
    pub last_error: Option<String>,
    /// Events the producer's buffer discarded by its keep policy (with
    /// [`ReadPolicy::KeepReading`](super::ReadPolicy::KeepReading)).
    pub discarded: u64,
    /// Times the reader stopped reading because it had no demand left.
    pub pauses: u64,
    /// Whether the reader is paused for demand now.
    pub paused: bool,
    /// The wait the [`Backoff`](super::Backoff) chose after the last failure (jitter
    /// included), before the reconnect or retried request that followed it; `None` before
    /// the first failure.
    pub last_backoff: Option<Duration>,
}

#[derive(Default)]
pub(crate) struct Cells {
    pub(crate) bytes_read: AtomicU64,
    pub(crate) frames: AtomicU64,
    pub(crate) heartbeats: AtomicU64,
    pub(crate) malformed: AtomicU64,
    pub(crate) oversize: AtomicU64,
    pub(crate) stalls: AtomicU64,
    pub(crate) requests: AtomicU64,
    pub(crate) reconnects: AtomicU64,
    /// 0 when no response came yet.
    pub(crate) last_status: AtomicU32,
    pub(crate) last_error: Mutex<Option<String>>,
    pub(crate) discarded: AtomicU64,
    pub(crate) pauses: AtomicU64,
    pub(crate) paused: AtomicBool,
    /// Nanoseconds plus one; 0 when no failure was backed off yet.
    pub(crate) last_backoff: AtomicU64,
}

/// The live counters of one HTTP producer. Take it from the producer before spawning it
/// (`stats()`); clones share the counters, which keep counting while the producer runs and
/// stay readable after it ends.
#[derive(Clone, Default)]
pub struct HttpStats {
    pub(crate) cells: Arc<Cells>,
}

impl fmt::Debug for HttpStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.snapshot().fmt(f)
    }
}

impl HttpStats {
    /// The counters now.
    pub fn snapshot(&self) -> HttpCounters {
        let c = &self.cells;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        HttpCounters {
            bytes_read: get(&c.bytes_read),
            frames: get(&c.frames),
            heartbeats: get(&c.heartbeats),
            malformed: get(&c.malformed),
            oversize: get(&c.oversize),
            stalls: get(&c.stalls),
            requests: get(&c.requests),
            reconnects: get(&c.reconnects),
            last_status: match c.last_status.load(Ordering::Relaxed) {
                0 => None,
                s => Some(s as u16),
            },
            last_error: c.last_error.lock().clone(),
            discarded: get(&c.discarded),
            pauses: get(&c.pauses),
            paused: c.paused.load(Ordering::Relaxed),
            last_backoff: match c.last_backoff.load(Ordering::Relaxed) {
                0 => None,
                n => Some(Duration::from_nanos(n - 1)),
            },
        }
    }

    pub(crate) fn add(&self, cell: impl Fn(&Cells) -> &AtomicU64, n: u64) {
        cell(&self.cells).fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn status(&self, code: u16) {
        self.cells
            .last_status
            .store(u32::from(code), Ordering::Relaxed);
    }

    pub(crate) fn error(&self, e: String) {
        *self.cells.last_error.lock() = Some(e);
    }

    pub(crate) fn backoff(&self, wait: Duration) {
        let nanos = u64::try_from(wait.as_nanos()).unwrap_or(u64::MAX - 1);
        self.cells
            .last_backoff
            .store(nanos.saturating_add(1), Ordering::Relaxed);
    }

    pub(crate) fn paused(&self, paused: bool) {
        if paused {
            self.add(|c| &c.pauses, 1);
        }
        self.cells.paused.store(paused, Ordering::Relaxed);
    }
}

/// The producer's counters as metrics (layer `http`): `bytes_read_total`, `frames_total`,
/// `heartbeats_total`, `malformed_total`, `oversize_total`, `stalls_total`,
/// `requests_total`, `reconnects_total`, `discarded_total`, `pauses_total`, and the gauges
/// `paused` (1 while the reader waits for demand) and `last_status`.
impl crate::observe::Metrics for HttpStats {
    fn layer(&self) -> &str {
        "http"
    }

    fn collect(&self, out: &mut crate::observe::MetricSet) {
        let c = self.snapshot();
        out.counter("bytes_read_total", "Body bytes read.", c.bytes_read)
            .counter("frames_total", "Frames decoded into events.", c.frames)
            .counter(
                "heartbeats_total",
                "Keep-alive heartbeats seen.",
                c.heartbeats,
            )
            .counter(
                "malformed_total",
                "Frames that did not decode, logged and skipped.",
                c.malformed,
            )
            .counter(
                "oversize_total",
                "Frames over the size limit (each dropped its connection).",
                c.oversize,
            )
            .counter("stalls_total", "Connections that stalled.", c.stalls)
            .counter("requests_total", "Requests sent.", c.requests)
            .counter(
                "reconnects_total",
                "Requests sent after a failure or the end of a body.",
                c.reconnects,
            )
            .counter(
                "discarded_total",
                "Events the producer's buffer discarded.",
                c.discarded,
            )
            .counter(
                "pauses_total",
                "Times the reader stopped reading for want of demand.",
                c.pauses,
            )
            .gauge(
                "paused",
                "1 while the reader is paused for demand.",
                f64::from(u8::from(c.paused)),
            )
            .gauge(
                "last_status",
                "The status of the last response (0 before any).",
                f64::from(c.last_status.unwrap_or(0)),
            );
    }
}
