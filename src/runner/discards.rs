//! The discard warnings: every discarded event is counted at once, but a stage that keeps
//! discarding logs at most one line per reason per second, with the count since its last line.

use std::sync::Arc;
use std::time::{Duration, Instant};

use log::warn;

use crate::shared::{bump, Shared};

/// How often a stage may log a discard warning for each reason.
const EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
struct DiscardLog {
    /// When the last lines were logged.
    last: Option<Instant>,
    /// Discards not yet logged, by separator and reason (a handful at most).
    pending: Vec<(&'static str, String, u64)>,
}

impl DiscardLog {
    /// Notes `n` discarded events; logs now if no line was logged in the last second.
    /// `sep` and `why` complete "discarded N events", e.g. `" "` and `"from buffer"`, or
    /// `": "` and `"no such subscription"`. Allocates only for a reason not yet pending.
    pub(super) fn note(&mut self, stage: &str, n: usize, sep: &'static str, why: &str) {
        match self
            .pending
            .iter_mut()
            .find(|(s, w, _)| *s == sep && w == why)
        {
            Some((_, _, count)) => *count += n as u64,
            None => self.pending.push((sep, why.to_owned(), n as u64)),
        }
        self.tick(stage);
    }

    /// Logs what is pending if a second has passed since the last lines.
    pub(super) fn tick(&mut self, stage: &str) {
        if self.pending.is_empty() {
            return;
        }
        let now = Instant::now();
        if self.last.is_none_or(|t| now.duration_since(t) >= EVERY) {
            self.flush(stage);
            self.last = Some(now);
        }
    }

    /// Whether discards wait to be logged.
    pub(super) fn is_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Logs everything pending (the stage ends).
    pub(super) fn flush(&mut self, stage: &str) {
        for (sep, why, n) in self.pending.drain(..) {
            warn!("stage {stage}: discarded {n} events{sep}{why}");
        }
    }
}

/// Where every part of a stage counts what it discards: the stage's `discarded` counter and
/// its warnings.
pub(super) struct Discards {
    shared: Arc<Shared>,
    log: DiscardLog,
}

impl Discards {
    pub(super) fn new(shared: Arc<Shared>) -> Discards {
        Discards {
            shared,
            log: DiscardLog::default(),
        }
    }

    /// Counts `n` discarded events and logs them: "discarded N events: {why}".
    pub(super) fn count(&mut self, n: usize, why: &str) {
        if n > 0 {
            bump(&self.shared.cells.discarded, n as u64);
            self.log.note(&self.shared.name, n, ": ", why);
        }
    }

    /// Counts `n` events the full buffer discarded; logs them only if `log` (the stage's
    /// `format_discarded` may log them its own way, or not at all).
    pub(super) fn count_from_buffer(&mut self, n: usize, log: bool) {
        bump(&self.shared.cells.discarded, n as u64);
        if log {
            self.log.note(&self.shared.name, n, " ", "from buffer");
        }
    }

    /// Logs what waits to be logged, at most one line per reason per second.
    #[inline]
    pub(super) fn tick(&mut self) {
        if self.log.is_pending() {
            self.log.tick(&self.shared.name);
        }
    }

    /// The last word: every discard not yet logged.
    pub(super) fn flush(&mut self) {
        self.log.flush(&self.shared.name);
    }
}
