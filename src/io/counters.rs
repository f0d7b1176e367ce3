//! [`IoStats`]: the live counters of one source, shared by its stage and whoever holds a
//! clone, readable while it runs; [`IoCounters`] is a snapshot of them.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A snapshot of a source's counters; see [`IoStats::snapshot`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct IoCounters {
    /// Bytes taken from the input and cut into records (the reader may have buffered a
    /// little more: a `BufReader`'s capacity at most).
    pub bytes_read: u64,
    /// Records emitted (repaired ones included).
    pub records: u64,
    /// Text records that were not valid UTF-8 (skipped, repaired or failed, by the option).
    pub invalid_utf8: u64,
    /// Records longer than the limit (skipped, cut or failed, by the option).
    pub oversize: u64,
    /// The offset, in the current file (or reader), of the byte after the last complete
    /// record handled: where a source built with `start_at(offset)` resumes without losing or
    /// repeating a record. Bytes of an unfinished last record are not included.
    pub offset: u64,
    /// Times a followed file was found shorter than the offset (truncated, or replaced in
    /// place) and read again from its start.
    pub truncations: u64,
    /// Times a followed file's path was found to name another file (rotated) and the new one
    /// was opened.
    pub rotations: u64,
    /// Times a followed file had nothing new and was looked at again after the poll interval.
    pub polls: u64,
}

#[derive(Default)]
pub(crate) struct Cells {
    pub(crate) bytes_read: AtomicU64,
    pub(crate) records: AtomicU64,
    pub(crate) invalid_utf8: AtomicU64,
    pub(crate) oversize: AtomicU64,
    pub(crate) offset: AtomicU64,
    pub(crate) truncations: AtomicU64,
    pub(crate) rotations: AtomicU64,
    pub(crate) polls: AtomicU64,
}

/// The live counters of one source. Take it from the source before spawning it
/// (`stats()`); clones share the counters, which keep counting while the source runs and stay
/// readable after it ends.
#[derive(Clone, Default)]
pub struct IoStats {
    pub(crate) cells: Arc<Cells>,
}

impl fmt::Debug for IoStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.snapshot().fmt(f)
    }
}

impl IoStats {
    /// The counters now.
    pub fn snapshot(&self) -> IoCounters {
        let c = &self.cells;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        IoCounters {
            bytes_read: get(&c.bytes_read),
            records: get(&c.records),
            invalid_utf8: get(&c.invalid_utf8),
            oversize: get(&c.oversize),
            offset: get(&c.offset),
            truncations: get(&c.truncations),
            rotations: get(&c.rotations),
            polls: get(&c.polls),
        }
    }

    /// The resume offset now (see [`IoCounters::offset`]).
    pub fn offset(&self) -> u64 {
        self.cells.offset.load(Ordering::Relaxed)
    }

    pub(crate) fn add(&self, cell: impl Fn(&Cells) -> &AtomicU64, n: u64) {
        cell(&self.cells).fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn set_offset(&self, offset: u64) {
        self.cells.offset.store(offset, Ordering::Relaxed);
    }
}
