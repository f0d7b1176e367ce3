//! The discard warnings: every discarded event is counted at once, but a stage that keeps
//! discarding logs at most one line per reason per second, with the count since its last line.

use std::time::{Duration, Instant};

use log::warn;

/// How often a stage may log a discard warning for each reason.
const EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
pub(super) struct DiscardLog {
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
