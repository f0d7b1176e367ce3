//! [`ReaderSource`]: a producer of the records of any `BufRead` (a file, stdin, a pipe, a
//! decompressor), read only while its consumers have demand, a batch per turn; and
//! [`ReaderBuilder`], its options.

use std::fmt;
use std::io::BufRead;
use std::marker::PhantomData;
use std::time::Duration;

use crate::{Context, Producer, Reason};

use super::counters::IoStats;
use super::engine::{Ending, Engine};
use super::error::IoError;
use super::msg::{IoMsg, Msg};
use super::options::{record_setters, RecordOptions};
use super::record::Record;

/// Starts building a producer of the lines (or other records) of `reader`; see
/// [`ReaderBuilder`]. Records are `String`s until [`bytes`](ReaderBuilder::bytes) says
/// otherwise.
///
/// # Examples
///
/// ```
/// use stageflow::io::{self, BadRecord};
/// use stageflow::SubscribeOptions;
///
/// let input = std::io::Cursor::new(b"one\r\ntwo\n\xff\nthree".to_vec());
/// let lines = io::reader(input).on_invalid_utf8(BadRecord::Skip).build()?;
/// let stats = lines.stats();
/// let source = stageflow::producer(lines).spawn()?;
/// let got: Vec<String> = stageflow::stream(&source, SubscribeOptions::new().max_demand(2))?.collect();
/// assert_eq!(got, ["one", "two", "three"]);
/// let counters = stats.snapshot();
/// assert_eq!((counters.records, counters.invalid_utf8, counters.offset), (3, 1, 16));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn reader<R: BufRead + Send + 'static>(reader: R) -> ReaderBuilder<R, String> {
    ReaderBuilder {
        reader,
        opts: RecordOptions::default(),
        offset: 0,
        out: PhantomData,
    }
}

/// The options of a [`ReaderSource`] emitting records of type `T` (`String` or `Vec<u8>`).
/// Made by [`reader`].
pub struct ReaderBuilder<R, T> {
    reader: R,
    opts: RecordOptions,
    offset: u64,
    out: PhantomData<fn() -> T>,
}

impl<R, T> fmt::Debug for ReaderBuilder<R, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReaderBuilder")
            .field("opts", &self.opts)
            .field("offset", &self.offset)
            .finish_non_exhaustive()
    }
}

impl<R: BufRead + Send + 'static, T: Record> ReaderBuilder<R, T> {
    record_setters!();

    /// The offset of the reader's first byte in its whole input (when it was positioned at
    /// a resume offset before it was handed over), so that the counters' `offset` counts from
    /// the input's start. Defaults to `0`.
    pub fn offset(mut self, offset: u64) -> Self {
        self.offset = offset;
        self
    }

    /// Emits each record's raw bytes (`Vec<u8>`), never checked for UTF-8.
    pub fn bytes(self) -> ReaderBuilder<R, Vec<u8>> {
        ReaderBuilder {
            reader: self.reader,
            opts: self.opts,
            offset: self.offset,
            out: PhantomData,
        }
    }

    /// Emits each record as a `String` (the default), checked by
    /// [`on_invalid_utf8`](Self::on_invalid_utf8).
    pub fn text(self) -> ReaderBuilder<R, String> {
        ReaderBuilder {
            reader: self.reader,
            opts: self.opts,
            offset: self.offset,
            out: PhantomData,
        }
    }

    /// Checks the options and makes the producer; hand it to
    /// [`stageflow::producer`](crate::producer). Nothing is read until a consumer asks.
    ///
    /// # Errors
    ///
    /// [`IoError::InvalidOption`] naming the option: a zero `max_record` or `batch`, a
    /// `Framing::Chunks(0)`.
    pub fn build(self) -> Result<ReaderSource<R, T>, IoError> {
        self.opts.validate()?;
        Ok(ReaderSource {
            reader: self.reader,
            engine: Engine::new(self.opts, self.offset),
            demand: 0,
            scheduled: false,
        })
    }
}

/// A producer of the records of a `BufRead` (made by [`reader`]).
///
/// It reads only while its consumers have demand: at most `min(demand, batch)` records per
/// turn of its stage, the unmet demand kept for the next turns (a zero-delay timer between
/// them, so the stage handles asks, calls and stops in between). With no demand it does not
/// touch the reader, so a stalled pipeline holds the reader back: what is read ahead is the
/// `BufRead`'s own buffer at most. At the end of the reader the last record (even without its
/// delimiter) is emitted and the stage finishes; a drain
/// ([`Topology::drain`](crate::Topology::drain)) stops the reading at the next turn.
///
/// The reads happen on the stage's thread: a reader that blocks (a pipe, a socket, stdin)
/// blocks the stage until bytes come, and a stop or a drain takes effect only then. A read
/// error (other than `Interrupted`; a non-blocking reader's `WouldBlock` is an error too) ends
/// the stage with a [`Reason::Error`] naming the offset.
pub struct ReaderSource<R, T> {
    reader: R,
    engine: Engine<T>,
    demand: usize,
    scheduled: bool,
}

impl<R, T> fmt::Debug for ReaderSource<R, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReaderSource")
            .field("demand", &self.demand)
            .field("stats", &self.engine.stats)
            .finish_non_exhaustive()
    }
}

impl<R, T> ReaderSource<R, T> {
    /// The source's live counters (take them before spawning it).
    pub fn stats(&self) -> IoStats {
        self.engine.stats.clone()
    }
}

impl<R: BufRead + Send + 'static, T: Record> ReaderSource<R, T> {
    fn schedule(&mut self, ctx: &mut Context<'_, T, IoMsg>) {
        if !self.scheduled && self.demand > 0 {
            self.scheduled = true;
            ctx.send_after(IoMsg(Msg::Read), Duration::ZERO);
        }
    }
}

impl<R: BufRead + Send + 'static, T: Record> Producer for ReaderSource<R, T> {
    type Out = T;
    type Message = IoMsg;

    fn handle_demand(&mut self, demand: usize, ctx: &mut Context<'_, T, IoMsg>) {
        self.demand += demand;
        self.schedule(ctx);
    }

    fn handle_message(&mut self, msg: IoMsg, ctx: &mut Context<'_, T, IoMsg>) {
        let IoMsg(Msg::Read) = msg;
        self.scheduled = false;
        if ctx.is_finishing() || ctx.is_stop_requested() {
            return; // a drain or a stop: read no more, so that the stage can end
        }
        let name = ctx.name().to_owned();
        let budget = self.demand.min(self.engine.opts.batch);
        let turn = self
            .engine
            .turn(&mut self.reader, budget, &name, &mut |r| ctx.emit(r));
        let ending = match turn {
            Ok((emitted, ending)) => {
                self.demand -= emitted;
                ending
            }
            Err(e) => {
                let at = self.engine.splitter.offset();
                return ctx.stop(Reason::Error(format!(
                    "io reader: read failed after offset {at}: {e}"
                )));
            }
        };
        match ending {
            Ending::Budget | Ending::Yield => self.schedule(ctx),
            Ending::Failed(m) => ctx.stop(Reason::Error(format!("io reader: {m}"))),
            Ending::Eof => match self.engine.end(&name, &mut |r| ctx.emit(r)) {
                Ok(_) => ctx.finish(),
                Err(m) => ctx.stop(Reason::Error(format!("io reader: {m}"))),
            },
        }
    }
}
