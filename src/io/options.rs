//! The options every record source shares (framing, limit, bad-record policies, batch), their
//! setters, and their validation.

use super::error::IoError;
use super::framing::Framing;
use super::record::BadRecord;

/// The default longest record: 1 MiB.
pub const DEFAULT_MAX_RECORD: usize = 1 << 20;

/// The default most records read in one turn of a source's stage.
pub const DEFAULT_BATCH: usize = 500;

/// How a source cuts and checks its records.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RecordOptions {
    pub(crate) framing: Framing,
    pub(crate) max_record: usize,
    pub(crate) invalid_utf8: BadRecord,
    pub(crate) oversize: BadRecord,
    pub(crate) batch: usize,
}

impl Default for RecordOptions {
    fn default() -> RecordOptions {
        RecordOptions {
            framing: Framing::Lines,
            max_record: DEFAULT_MAX_RECORD,
            invalid_utf8: BadRecord::Repair,
            oversize: BadRecord::Skip,
            batch: DEFAULT_BATCH,
        }
    }
}

impl RecordOptions {
    pub(crate) fn validate(&self) -> Result<(), IoError> {
        if self.framing == Framing::Chunks(0) {
            return Err(IoError::invalid(
                "framing",
                "expected a chunk size of at least 1, got Chunks(0)".to_owned(),
            ));
        }
        for (option, v) in [("max_record", self.max_record), ("batch", self.batch)] {
            if v == 0 {
                return Err(IoError::invalid(
                    option,
                    format!("expected {option} to be at least 1, got 0"),
                ));
            }
        }
        Ok(())
    }
}

/// The setters of [`RecordOptions`], for builders that keep them in `self.opts`.
macro_rules! record_setters {
    () => {
        /// How the input is cut into records. Defaults to [`Framing::Lines`](crate::io::Framing::Lines).
        pub fn framing(mut self, framing: $crate::io::Framing) -> Self {
            self.opts.framing = framing;
            self
        }

        /// The longest record of a delimited framing, in bytes (without its delimiter): a
        /// longer one is counted (`oversize`), never held whole in memory, and handled by
        /// [`on_oversize`](Self::on_oversize). At least 1. Defaults to `1048576` (1 MiB).
        pub fn max_record(mut self, bytes: usize) -> Self {
            self.opts.max_record = bytes;
            self
        }

        /// What to do with a text record that is not valid UTF-8 (counted in
        /// `invalid_utf8`). Raw byte records are never checked. Defaults to
        /// [`BadRecord::Repair`](crate::io::BadRecord::Repair): invalid sequences become U+FFFD.
        pub fn on_invalid_utf8(mut self, policy: $crate::io::BadRecord) -> Self {
            self.opts.invalid_utf8 = policy;
            self
        }

        /// What to do with a record longer than [`max_record`](Self::max_record) (counted in
        /// `oversize`). Defaults to [`BadRecord::Skip`](crate::io::BadRecord::Skip).
        pub fn on_oversize(mut self, policy: $crate::io::BadRecord) -> Self {
            self.opts.oversize = policy;
            self
        }

        /// The most records read in one turn of the stage's loop: between turns the stage
        /// answers calls and stops, and handles new demand. At least 1. Defaults to `500`.
        pub fn batch(mut self, records: usize) -> Self {
            self.opts.batch = records;
            self
        }
    };
}
pub(crate) use record_setters;
