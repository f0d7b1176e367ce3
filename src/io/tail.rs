//! [`TailSource`]: a producer of the records of a file followed as it grows, as `tail -F`
//! does (waiting for it to appear, polling after its end, reopening it when it is rotated,
//! reading it again from its start when it is truncated), with the resume offset in its
//! counters; and [`TailBuilder`], its options.

use std::fmt;
use std::fs::{self, File, Metadata};
use std::io::{BufReader, Seek, SeekFrom};
use std::marker::PhantomData;
use std::path::PathBuf;
use std::time::Duration;

use log::{info, warn};

use crate::{Context, Producer, Reason};

use super::counters::IoStats;
use super::engine::{Ending, Engine};
use super::error::IoError;
use super::msg::{IoMsg, Msg};
use super::options::{record_setters, RecordOptions};
use super::record::Record;

/// Starts building a producer that follows the file at `path`; see [`TailBuilder`].
/// Records are `String` lines until the options say otherwise.
///
/// # Examples
///
/// ```
/// use std::io::Write;
/// use stageflow::SubscribeOptions;
///
/// let path = std::env::temp_dir().join(format!("stageflow-tail-doc-{}.log", std::process::id()));
/// std::fs::write(&path, "one\ntwo\nthr")?; // the last line is still being written
/// let tail = stageflow::io::tail(&path).build()?;
/// let stats = tail.stats();
/// let source = stageflow::producer(tail).spawn()?;
/// let mut lines = stageflow::stream(&source, SubscribeOptions::new().max_demand(10))?;
/// assert_eq!(lines.next().as_deref(), Some("one"));
/// assert_eq!(lines.next().as_deref(), Some("two"));
/// std::fs::OpenOptions::new().append(true).open(&path)?.write_all(b"ee\n")?;
/// assert_eq!(lines.next().as_deref(), Some("three")); // seen at the next poll
/// source.stop(); // a followed file never ends by itself
/// assert_eq!(stats.offset(), 14); // a restart would use `.start_at(14)`
/// std::fs::remove_file(&path)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn tail(path: impl Into<PathBuf>) -> TailBuilder<String> {
    TailBuilder {
        path: path.into(),
        opts: RecordOptions::default(),
        start_at: 0,
        poll_interval: Duration::from_millis(250),
        read_buffer: 64 * 1024,
        out: PhantomData,
    }
}

/// The options of a [`TailSource`] emitting records of type `T` (`String` or `Vec<u8>`).
/// Made by [`tail`].
pub struct TailBuilder<T> {
    path: PathBuf,
    opts: RecordOptions,
    start_at: u64,
    poll_interval: Duration,
    read_buffer: usize,
    out: PhantomData<fn() -> T>,
}

impl<T> fmt::Debug for TailBuilder<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TailBuilder")
            .field("path", &self.path)
            .field("opts", &self.opts)
            .field("start_at", &self.start_at)
            .field("poll_interval", &self.poll_interval)
            .finish_non_exhaustive()
    }
}

impl<T: Record> TailBuilder<T> {
    record_setters!();

    /// The offset to start reading the file at: the [`offset`](super::IoCounters::offset) a
    /// previous run reported, to resume where it stopped. If the file is shorter than that
    /// when it is opened, it was truncated or replaced: it is read from its start (counted in
    /// `truncations`). Defaults to `0`.
    pub fn start_at(mut self, offset: u64) -> Self {
        self.start_at = offset;
        self
    }

    /// How long to wait before looking at the file again when it has nothing new (or does
    /// not exist yet). Checked only while there is demand. More than zero. Defaults to
    /// `250 ms`.
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// The file's read buffer, the most bytes read ahead of the records emitted. At least 1.
    /// Defaults to `65536`.
    pub fn read_buffer(mut self, bytes: usize) -> Self {
        self.read_buffer = bytes;
        self
    }

    /// Emits each record's raw bytes (`Vec<u8>`), never checked for UTF-8.
    pub fn bytes(self) -> TailBuilder<Vec<u8>> {
        self.into_type()
    }

    /// Emits each record as a `String` (the default), checked by
    /// [`on_invalid_utf8`](Self::on_invalid_utf8).
    pub fn text(self) -> TailBuilder<String> {
        self.into_type()
    }

    fn into_type<U>(self) -> TailBuilder<U> {
        TailBuilder {
            path: self.path,
            opts: self.opts,
            start_at: self.start_at,
            poll_interval: self.poll_interval,
            read_buffer: self.read_buffer,
            out: PhantomData,
        }
    }

    /// Checks the options and makes the producer; hand it to
    /// [`stageflow::producer`](crate::producer). The file is opened when a consumer first
    /// asks; it need not exist yet.
    ///
    /// # Errors
    ///
    /// [`IoError::InvalidOption`] naming the option: a zero `max_record`, `batch`,
    /// `read_buffer` or `poll_interval`, a `Framing::Chunks(0)`, an empty path.
    pub fn build(self) -> Result<TailSource<T>, IoError> {
        self.opts.validate()?;
        if self.path.as_os_str().is_empty() {
            return Err(IoError::invalid(
                "path",
                "expected a file's path, got an empty one".to_owned(),
            ));
        }
        if self.poll_interval.is_zero() {
            return Err(IoError::invalid(
                "poll_interval",
                "expected poll_interval to be more than zero, got 0ns".to_owned(),
            ));
        }
        if self.read_buffer == 0 {
            return Err(IoError::invalid(
                "read_buffer",
                "expected read_buffer to be at least 1, got 0".to_owned(),
            ));
        }
        Ok(TailSource {
            engine: Engine::new(self.opts, self.start_at),
            path: self.path,
            poll_interval: self.poll_interval,
            read_buffer: self.read_buffer,
            file: None,
            start_at: Some(self.start_at),
            demand: 0,
            scheduled: false,
            last_error: None,
        })
    }
}

/// What identifies a file whatever its name: its device and inode on unix.
#[cfg(unix)]
type FileId = (u64, u64);
#[cfg(not(unix))]
type FileId = ();

#[cfg(unix)]
fn file_id(meta: &Metadata) -> Option<FileId> {
    use std::os::unix::fs::MetadataExt;
    Some((meta.dev(), meta.ino()))
}

#[cfg(not(unix))]
fn file_id(_: &Metadata) -> Option<FileId> {
    None
}

struct Open {
    reader: BufReader<File>,
    id: Option<FileId>,
}

/// A producer of the records of a file followed as it grows (made by [`tail`]), as
/// `tail -F` does.
///
/// * It reads only while its consumers have demand, at most `min(demand, batch)` records a
///   turn; without demand it neither reads nor polls, so a stalled pipeline holds the file
///   where it is (the read buffer at most is read ahead).
/// * At the end of the file it keeps the unfinished last record (a line still being written)
///   and looks again after [`poll_interval`](TailBuilder::poll_interval), on a timer: the
///   stage answers stops, calls and drains in between.
/// * A missing file is waited for. When the path names another file (a rotation: on unix,
///   another device or inode), the old file is read to its end first (its unfinished last
///   record emitted as a record), then the new one is read from its start (`rotations`).
///   When the file is shorter than what was read (truncated in place, `copytruncate`), it is
///   read again from its start (`truncations`), and an unfinished record is dropped.
/// * [`IoStats::offset`] is the offset of the byte after the last record handled: start a
///   new source with [`start_at`](TailBuilder::start_at) it to resume without losing or
///   repeating a record. After a drain it covers every record emitted, all of them delivered.
///
/// A followed file has no end: the stage ends when it is stopped or drained. On systems other
/// than unix a file's identity is not known, so a rotation is seen only when the new file is
/// shorter than the offset (then read from its start like a truncated one), and records
/// appended to the old file after its end was reached may be missed. An error opening the
/// file is logged and retried at the poll interval; a read error ends the stage with a
/// [`Reason::Error`] naming the file and the offset.
pub struct TailSource<T> {
    path: PathBuf,
    engine: Engine<T>,
    poll_interval: Duration,
    read_buffer: usize,
    file: Option<Open>,
    /// Where to start the next file opened: the resume offset at first, then 0.
    start_at: Option<u64>,
    demand: usize,
    scheduled: bool,
    /// The last error opening the file, logged once.
    last_error: Option<String>,
}

impl<T> fmt::Debug for TailSource<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TailSource")
            .field("path", &self.path)
            .field("demand", &self.demand)
            .field("stats", &self.engine.stats)
            .finish_non_exhaustive()
    }
}

impl<T> TailSource<T> {
    /// The source's live counters (take them before spawning it).
    pub fn stats(&self) -> IoStats {
        self.engine.stats.clone()
    }
}

impl<T: Record> TailSource<T> {
    fn schedule(&mut self, ctx: &mut Context<'_, T, IoMsg>, delay: Duration) {
        if !self.scheduled && self.demand > 0 {
            self.scheduled = true;
            ctx.send_after(IoMsg(Msg::Read), delay);
        }
    }

    /// Opens the file at the path; `false` (logged once) if it cannot be opened now.
    fn open(&mut self, name: &str) -> Result<bool, String> {
        let file = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) => {
                let message = e.to_string();
                if self.last_error.as_ref() != Some(&message) {
                    let path = self.path.display();
                    let every = self.poll_interval;
                    if e.kind() == std::io::ErrorKind::NotFound {
                        info!("stage {name}: waiting for {path} to exist (every {every:?})");
                    } else {
                        warn!("stage {name}: cannot open {path}: {e}; trying every {every:?}");
                    }
                    self.last_error = Some(message);
                }
                return Ok(false);
            }
        };
        self.last_error = None;
        let meta = file
            .metadata()
            .map_err(|e| format!("cannot read the metadata of {}: {e}", self.path.display()))?;
        let mut start = self.start_at.take().unwrap_or(0);
        if start > meta.len() {
            warn!(
                "stage {name}: {} is {} bytes, shorter than the offset {start}: truncated or replaced; reading it from its start",
                self.path.display(),
                meta.len()
            );
            self.engine.stats.add(|c| &c.truncations, 1);
            start = 0;
        }
        let mut reader = BufReader::with_capacity(self.read_buffer, file);
        if start > 0 {
            reader
                .seek(SeekFrom::Start(start))
                .map_err(|e| format!("cannot seek {} to {start}: {e}", self.path.display()))?;
        }
        self.engine.splitter.reset(start);
        self.engine.stats.set_offset(start);
        self.file = Some(Open {
            reader,
            id: file_id(&meta),
        });
        Ok(true)
    }

    /// The file has nothing more now: was it rotated, truncated, or is there just nothing
    /// new yet?
    fn at_end(&mut self, name: &str, ctx: &mut Context<'_, T, IoMsg>) {
        let Some(open) = &self.file else { return };
        let offset = self.engine.splitter.offset();
        let now = fs::metadata(&self.path).ok();
        let rotated = match (&now, open.id) {
            (Some(meta), Some(id)) => file_id(meta).is_some_and(|now| now != id),
            _ => false,
        };
        if rotated {
            // The old file is done: its unfinished last record is a record.
            match self.engine.end(name, &mut |r| ctx.emit(r)) {
                Ok(emitted) => self.demand = self.demand.saturating_sub(usize::from(emitted)),
                Err(m) => return self.fail(ctx, &m),
            }
            info!(
                "stage {name}: {} was rotated; reading the new file from its start",
                self.path.display()
            );
            self.engine.stats.add(|c| &c.rotations, 1);
            self.reopen(ctx);
            return;
        }
        if now.is_some_and(|meta| meta.len() < offset) {
            warn!(
                "stage {name}: {} was truncated below the offset {offset}; reading it from its start",
                self.path.display()
            );
            self.engine.stats.add(|c| &c.truncations, 1);
            self.reopen(ctx);
            return;
        }
        self.engine.stats.add(|c| &c.polls, 1);
        self.schedule(ctx, self.poll_interval);
    }

    /// Closes the file; the next turn opens the path again, from its start.
    fn reopen(&mut self, ctx: &mut Context<'_, T, IoMsg>) {
        self.file = None;
        self.start_at = Some(0);
        self.engine.splitter.reset(0);
        self.engine.stats.set_offset(0);
        self.schedule(ctx, Duration::ZERO);
    }

    fn fail(&mut self, ctx: &mut Context<'_, T, IoMsg>, message: &str) {
        ctx.stop(Reason::Error(format!(
            "io tail {}: {message}",
            self.path.display()
        )));
    }
}

impl<T: Record> Producer for TailSource<T> {
    type Out = T;
    type Message = IoMsg;

    fn handle_demand(&mut self, demand: usize, ctx: &mut Context<'_, T, IoMsg>) {
        self.demand += demand;
        self.schedule(ctx, Duration::ZERO);
    }

    fn handle_message(&mut self, msg: IoMsg, ctx: &mut Context<'_, T, IoMsg>) {
        let IoMsg(Msg::Read) = msg;
        self.scheduled = false;
        if ctx.is_finishing() || ctx.is_stop_requested() {
            return; // a drain or a stop: read no more, so that the stage can end
        }
        let name = ctx.name().to_owned();
        if self.file.is_none() {
            match self.open(&name) {
                Ok(true) => {}
                Ok(false) => {
                    self.engine.stats.add(|c| &c.polls, 1);
                    return self.schedule(ctx, self.poll_interval);
                }
                Err(m) => return self.fail(ctx, &m),
            }
        }
        let Some(open) = &mut self.file else { return };
        let budget = self.demand.min(self.engine.opts.batch);
        let turn = self
            .engine
            .turn(&mut open.reader, budget, &name, &mut |r| ctx.emit(r));
        match turn {
            Ok((emitted, ending)) => {
                self.demand -= emitted;
                match ending {
                    Ending::Budget | Ending::Yield => self.schedule(ctx, Duration::ZERO),
                    Ending::Failed(m) => self.fail(ctx, &m),
                    Ending::Eof => self.at_end(&name, ctx),
                }
            }
            Err(e) => {
                let at = self.engine.splitter.offset();
                self.fail(ctx, &format!("read failed after offset {at}: {e}"));
            }
        }
    }
}
