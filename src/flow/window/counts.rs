//! [`WindowCounts`]: what a window did, every partition together: windows emitted and late
//! events dropped; also a source of metrics for `stageflow::observe`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::observe::{MetricSet, Metrics};

/// The cells a window's clones share (one set per [`Window`](super::Window) made).
#[derive(Debug, Default)]
pub(crate) struct Cells {
    pub(crate) late: AtomicU64,
    pub(crate) fired: AtomicU64,
}

/// A window's counts, every partition together, from
/// [`Window::counts`](super::Window::counts): readable while and after the flow runs, and
/// as [`Metrics`] (layer `flow`: `windows_emitted_total`, `late_events_total`).
///
/// # Examples
///
/// ```
/// use stageflow::flow::{Flow, Partitions, Window};
///
/// let window = Window::count(4);
/// let counts = window.counts();
/// let sums = Flow::from_iter(1..=10u64)
///     .partition(Partitions::by_event().stages(1).window(window))
///     .reduce(|| 0u64, |acc, x| *acc += x)
///     .emit_state()
///     .collect()?;
/// assert_eq!(sums.iter().map(|w| w.value).sum::<u64>(), 55);
/// assert_eq!((counts.emitted(), counts.late()), (3, 0)); // 4 + 4 + 2 events
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct WindowCounts(pub(crate) Arc<Cells>);

impl WindowCounts {
    /// Window results emitted (each firing of a trigger counts, per partition).
    pub fn emitted(&self) -> u64 {
        self.0.fired.load(Ordering::Relaxed)
    }

    /// Late events dropped (see [`LateEvents`](super::LateEvents)).
    pub fn late(&self) -> u64 {
        self.0.late.load(Ordering::Relaxed)
    }
}

impl Metrics for WindowCounts {
    fn layer(&self) -> &str {
        "flow"
    }

    fn collect(&self, out: &mut MetricSet) {
        out.counter(
            "windows_emitted_total",
            "Window results a flow's reducers emitted (every trigger firing, per partition).",
            self.emitted(),
        )
        .counter(
            "late_events_total",
            "Events dropped because their window had closed.",
            self.late(),
        );
    }
}
