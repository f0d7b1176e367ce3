//! One turn of reading records: takes bytes from a `BufRead` through the splitter, applies
//! the bad-record policies, emits at most a budget of records, counts everything, and says
//! why it stopped. Shared by the reader and file sources; it never waits on anything but the
//! reader's own `fill_buf`.

use std::io::{self, BufRead};
use std::marker::PhantomData;

use log::warn;

use super::counters::IoStats;
use super::framing::{Piece, Splitter};
use super::options::RecordOptions;
use super::record::{BadRecord, Decoded, Record};

/// The most `fill_buf` calls in one turn, so that skipping bad records (which costs no
/// demand) is bounded work per turn too.
const MAX_FILLS: usize = 64;

/// Why a turn stopped.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Ending {
    /// The budget was emitted.
    Budget,
    /// The turn did its share of reads; more may come at once.
    Yield,
    /// The reader has nothing more now (the end of a reader, the current end of a file).
    Eof,
    /// A bad record ends the source, with this message.
    Failed(String),
}

pub(crate) struct Engine<T> {
    pub(crate) splitter: Splitter,
    pub(crate) opts: RecordOptions,
    pub(crate) stats: IoStats,
    out: PhantomData<fn() -> T>,
}

impl<T: Record> Engine<T> {
    pub(crate) fn new(opts: RecordOptions, offset: u64) -> Engine<T> {
        let stats = IoStats::default();
        stats.set_offset(offset);
        Engine {
            splitter: Splitter::new(opts.framing, opts.max_record, offset),
            opts,
            stats,
            out: PhantomData,
        }
    }

    /// Reads until `budget` records are emitted or the input has nothing more for now.
    /// Returns the records emitted and why it stopped.
    ///
    /// # Errors
    ///
    /// A read error other than `Interrupted`; what was read before it was emitted.
    pub(crate) fn turn<R: BufRead + ?Sized>(
        &mut self,
        input: &mut R,
        budget: usize,
        name: &str,
        emit: &mut dyn FnMut(T),
    ) -> io::Result<(usize, Ending)> {
        let mut emitted = 0;
        let mut fills = 0;
        let ending = loop {
            if emitted >= budget {
                break Ending::Budget;
            }
            if fills == MAX_FILLS {
                break Ending::Yield;
            }
            fills += 1;
            let buf = match input.fill_buf() {
                Ok(buf) => buf,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.publish(emitted, false);
                    return Err(e);
                }
            };
            if buf.is_empty() {
                break Ending::Eof;
            }
            let mut used = 0;
            let mut failed = None;
            while used < buf.len() && emitted < budget {
                let before = self.splitter.committed();
                let (n, piece) = self.splitter.split(&buf[used..]);
                used += n;
                let Some(piece) = piece else { continue };
                match self.piece(piece, before, name, emit) {
                    Ok(true) => emitted += 1,
                    Ok(false) => {}
                    Err(m) => {
                        failed = Some(m);
                        break;
                    }
                }
            }
            input.consume(used);
            self.stats.add(|c| &c.bytes_read, used as u64);
            if let Some(m) = failed {
                break Ending::Failed(m);
            }
        };
        self.publish(emitted, matches!(ending, Ending::Failed(_)));
        Ok((emitted, ending))
    }

    /// The input is over: emits its unfinished last record, if any, by the rules. Returns
    /// whether one was emitted, or the failure a bad one ends the source with.
    pub(crate) fn end(&mut self, name: &str, emit: &mut dyn FnMut(T)) -> Result<bool, String> {
        let before = self.splitter.committed();
        let result = match self.splitter.finish() {
            Some(piece) => self.piece(piece, before, name, emit),
            None => Ok(false),
        };
        self.publish(usize::from(result == Ok(true)), result.is_err());
        result
    }

    /// Publishes the counters after a turn: records emitted, and the resume offset (after a
    /// failure, the failed record's offset, set where it failed).
    fn publish(&self, emitted: usize, failed: bool) {
        self.stats.add(|c| &c.records, emitted as u64);
        if !failed {
            self.stats.set_offset(self.splitter.committed());
        }
    }

    /// Handles one piece that began at offset `at`: `Ok(true)` if it was emitted.
    fn piece(
        &mut self,
        piece: Piece,
        at: u64,
        name: &str,
        emit: &mut dyn FnMut(T),
    ) -> Result<bool, String> {
        let (bytes, cut) = match piece {
            Piece::Record(bytes) => (bytes, false),
            Piece::Oversize { head, len } => {
                self.stats.add(|c| &c.oversize, 1);
                let limit = self.opts.max_record;
                match self.opts.oversize {
                    BadRecord::Skip => {
                        warn!("stage {name}: skipped a record at offset {at} longer than max_record ({len} bytes or more, limit {limit})");
                        return Ok(false);
                    }
                    BadRecord::Fail => {
                        self.stats.set_offset(at);
                        return Err(format!(
                            "record at offset {at} longer than max_record ({len} bytes or more, limit {limit})"
                        ));
                    }
                    _ => {
                        warn!("stage {name}: cut a record at offset {at} to max_record ({len} bytes or more, limit {limit})");
                        (head, true)
                    }
                }
            }
        };
        match T::decode(bytes, self.opts.invalid_utf8, cut) {
            Decoded::Good(record) => {
                emit(record);
                Ok(true)
            }
            Decoded::Repaired(record) => {
                self.stats.add(|c| &c.invalid_utf8, 1);
                warn!("stage {name}: replaced invalid utf-8 in the record at offset {at}");
                emit(record);
                Ok(true)
            }
            Decoded::Skipped => {
                self.stats.add(|c| &c.invalid_utf8, 1);
                warn!("stage {name}: skipped a record at offset {at} that is not utf-8");
                Ok(false)
            }
            Decoded::Failed(why) => {
                self.stats.add(|c| &c.invalid_utf8, 1);
                self.stats.set_offset(at);
                Err(format!("record at offset {at}: {why}"))
            }
        }
    }
}
