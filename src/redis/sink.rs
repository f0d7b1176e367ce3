//! [`StreamSink`]: a consumer that appends what it receives to a stream with `XADD`
//! (optionally `MAXLEN ~`), one pipelined round trip per batch its demand lets in, retried
//! through connection faults until its write timeout, or until the stage is stopped.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use log::{error, warn};
use redis::{Client, Connection};

use super::conn::{self, Backoff};
use super::entry::{encode_json, Fields};
use super::error::StreamError;
use crate::{Consumer, ConsumerContext, Events};

/// How often a backoff wait between retries looks whether the stage was asked to stop: the
/// context offers a flag to read, not a channel to wait on, so the wait is cut into slices
/// this long. A stop is seen within it; the slices cost nothing beside a reconnect.
const STOP_POLL: Duration = Duration::from_millis(10);

type Encoder<T> = Arc<dyn Fn(&T) -> Result<Fields, String> + Send + Sync>;

/// Starts the builder of a sink appending [`Fields`] (or, with
/// [`json`](SinkBuilder::json) or [`encode`](SinkBuilder::encode), your own type) to
/// `stream` on the server at `url`. Nothing connects until the sink gets events.
///
/// # Examples
///
/// ```
/// use stageflow::redis::StreamError;
///
/// #[derive(serde::Serialize)]
/// struct Job {
///     n: u64,
/// }
///
/// let sink = stageflow::redis::sink("redis://127.0.0.1:6379/", "jobs")
///     .maxlen(100_000)
///     .json::<Job>("json")
///     .build()?;
/// assert_eq!(sink.stats().snapshot().added, 0);
/// # Ok::<(), StreamError>(())
/// ```
pub fn sink(url: impl Into<String>, stream: impl Into<String>) -> SinkBuilder<Fields> {
    SinkBuilder {
        url: url.into(),
        stream: stream.into(),
        maxlen: None,
        timeout: Duration::from_secs(5),
        write_timeout: Duration::from_secs(30),
        backoff: (Duration::from_millis(50), Duration::from_secs(2)),
        encode: Arc::new(|f: &Fields| Ok(f.clone())),
    }
}

/// The options of a [`StreamSink`]; see [`sink`].
pub struct SinkBuilder<T> {
    url: String,
    stream: String,
    maxlen: Option<usize>,
    timeout: Duration,
    write_timeout: Duration,
    backoff: (Duration, Duration),
    encode: Encoder<T>,
}

impl<T> fmt::Debug for SinkBuilder<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SinkBuilder")
            .field("url", &self.url)
            .field("stream", &self.stream)
            .field("maxlen", &self.maxlen)
            .finish_non_exhaustive()
    }
}

impl<T: Send + 'static> SinkBuilder<T> {
    /// Trims the stream to about `n` entries as it appends (`MAXLEN ~ n`: Redis trims whole
    /// nodes, so a few more may stay). Defaults to no trimming.
    pub fn maxlen(mut self, n: usize) -> Self {
        self.maxlen = Some(n);
        self
    }

    /// The timeout for connecting and for each reply. Defaults to `5 s`.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How long a batch is retried through connection faults before it is given up
    /// (counted in [`SinkCounters::dropped`], logged). A stop
    /// ([`Stage::stop`](crate::Stage::stop)) ends the retries sooner: it is seen between
    /// tries and within 10 ms during a backoff wait (a connect or a reply in progress is
    /// bounded by [`timeout`](SinkBuilder::timeout)), and the batch is given up the same
    /// way. A finish or a drain does not: the batch is still retried. Defaults to `30 s`.
    pub fn write_timeout(mut self, timeout: Duration) -> Self {
        self.write_timeout = timeout;
        self
    }

    /// The delays between reconnection attempts: `first`, doubling up to `max`. Defaults to
    /// `50 ms` and `2 s`.
    pub fn backoff(mut self, first: Duration, max: Duration) -> Self {
        self.backoff = (first, max);
        self
    }

    /// Appends `U`s as JSON in one field named `field` (what a source's
    /// [`json`](super::StreamBuilder::json) reads).
    pub fn json<U: serde::Serialize + Send + 'static>(
        self,
        field: impl Into<String>,
    ) -> SinkBuilder<U> {
        let field = field.into();
        self.encode(move |u: &U| encode_json(u, &field))
    }

    /// Appends `U`s as the fields `encode` makes of each; an `Err` skips that event (counted
    /// in [`SinkCounters::malformed`], logged).
    pub fn encode<U: Send + 'static>(
        self,
        encode: impl Fn(&U) -> Result<Fields, String> + Send + Sync + 'static,
    ) -> SinkBuilder<U> {
        SinkBuilder {
            url: self.url,
            stream: self.stream,
            maxlen: self.maxlen,
            timeout: self.timeout,
            write_timeout: self.write_timeout,
            backoff: self.backoff,
            encode: Arc::new(encode),
        }
    }

    /// Validates the options.
    ///
    /// # Errors
    ///
    /// [`StreamError::InvalidOption`] naming the first bad option: an unparsable `url`, an
    /// empty `stream`, a zero `maxlen`, `timeout` or backoff delay.
    pub fn build(self) -> Result<StreamSink<T>, StreamError> {
        let client = Client::open(self.url.as_str())
            .map_err(|e| StreamError::invalid("url", format!("{:?}: {e}", self.url)))?;
        if self.stream.is_empty() {
            return Err(StreamError::invalid("stream", "expected a name, got \"\""));
        }
        if self.maxlen == Some(0) {
            return Err(StreamError::invalid("maxlen", "expected at least 1, got 0"));
        }
        if self.timeout.is_zero() {
            return Err(StreamError::invalid(
                "timeout",
                "expected a positive duration",
            ));
        }
        if self.backoff.0.is_zero() || self.backoff.1.is_zero() {
            return Err(StreamError::invalid(
                "backoff",
                "expected a positive duration",
            ));
        }
        Ok(StreamSink {
            client,
            stream: self.stream,
            maxlen: self.maxlen,
            timeout: self.timeout,
            write_timeout: self.write_timeout,
            backoff: Backoff::new(self.backoff.0, self.backoff.1),
            encode: self.encode,
            con: None,
            connected_before: false,
            stats: SinkStats::default(),
        })
    }
}

/// A snapshot of a sink's counters; see [`SinkStats::snapshot`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SinkCounters {
    /// Entries appended (ids the server returned).
    pub added: u64,
    /// Pipelined round trips that appended a batch.
    pub batches: u64,
    /// Events whose encoding failed (skipped, logged).
    pub malformed: u64,
    /// Events of batches given up after the write timeout (logged).
    pub dropped: u64,
    /// Connections made again after one failed.
    pub reconnects: u64,
    /// Command errors (connection faults included), each logged.
    pub errors: u64,
}

/// The live counters of a [`StreamSink`], readable from any thread while it runs.
#[derive(Clone, Debug, Default)]
pub struct SinkStats(Arc<Cells>);

/// One cell per field of [`SinkCounters`].
#[derive(Debug, Default)]
struct Cells {
    added: AtomicU64,
    batches: AtomicU64,
    malformed: AtomicU64,
    dropped: AtomicU64,
    reconnects: AtomicU64,
    errors: AtomicU64,
}

impl SinkStats {
    fn add(&self, cell: impl Fn(&Cells) -> &AtomicU64, n: u64) {
        cell(&self.0).fetch_add(n, Ordering::Relaxed);
    }

    /// The counters now.
    pub fn snapshot(&self) -> SinkCounters {
        let c = &*self.0;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        SinkCounters {
            added: g(&c.added),
            batches: g(&c.batches),
            malformed: g(&c.malformed),
            dropped: g(&c.dropped),
            reconnects: g(&c.reconnects),
            errors: g(&c.errors),
        }
    }
}

/// A [`Consumer`] appending each event to a stream; made by [`sink`]. Each batch it
/// handles (cut by its subscription's demand) is one pipelined round trip of `XADD`s. A
/// dropped connection is made again with backoff and the batch retried, so an entry whose
/// reply was lost may be appended twice (at least once, never silently lost: a batch given up
/// after the write timeout or on a stop is counted in [`SinkCounters::dropped`] and logged).
pub struct StreamSink<T> {
    client: Client,
    stream: String,
    maxlen: Option<usize>,
    timeout: Duration,
    write_timeout: Duration,
    backoff: Backoff,
    encode: Encoder<T>,
    con: Option<Connection>,
    connected_before: bool,
    stats: SinkStats,
}

impl<T> fmt::Debug for StreamSink<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamSink")
            .field("stream", &self.stream)
            .field("maxlen", &self.maxlen)
            .field("counters", &self.stats.snapshot())
            .finish_non_exhaustive()
    }
}

impl<T> StreamSink<T> {
    /// Its counters, live: keep a clone before spawning the sink.
    pub fn stats(&self) -> SinkStats {
        self.stats.clone()
    }

    /// Appends `batch`, retrying through connection faults until the write timeout, or
    /// until the stage is asked to stop.
    fn write(&mut self, batch: &[Fields], ctx: &ConsumerContext<'_>) {
        let mut pipe = redis::pipe();
        for fields in batch {
            let cmd = pipe.cmd("XADD").arg(&self.stream);
            if let Some(n) = self.maxlen {
                cmd.arg("MAXLEN").arg("~").arg(n);
            }
            cmd.arg("*");
            for (k, v) in fields {
                cmd.arg(k).arg(v);
            }
        }
        let deadline = Instant::now() + self.write_timeout;
        loop {
            if self.con.is_none() {
                match conn::open(&self.client, self.timeout) {
                    Ok(c) => {
                        if self.connected_before {
                            self.stats.add(|c| &c.reconnects, 1);
                        }
                        self.connected_before = true;
                        self.con = Some(c);
                    }
                    Err(e) => {
                        self.stats.add(|c| &c.errors, 1);
                        warn!("redis sink {}: cannot connect: {e}", self.stream);
                    }
                }
            }
            if let Some(con) = self.con.as_mut() {
                match pipe.query::<Vec<String>>(con) {
                    Ok(ids) => {
                        self.backoff.reset();
                        self.stats.add(|c| &c.added, ids.len() as u64);
                        self.stats.add(|c| &c.batches, 1);
                        return;
                    }
                    Err(e) => {
                        self.stats.add(|c| &c.errors, 1);
                        if conn::is_fault(&e) {
                            warn!("redis sink {}: connection lost: {e}", self.stream);
                            self.con = None;
                        } else {
                            error!("redis sink {}: XADD refused: {e}", self.stream);
                            self.stats.add(|c| &c.dropped, batch.len() as u64);
                            return;
                        }
                    }
                }
            }
            let delay = self.backoff.next_delay();
            if Instant::now() + delay > deadline {
                error!(
                    "redis sink {}: gave up a batch of {} after {:?}",
                    self.stream,
                    batch.len(),
                    self.write_timeout
                );
                self.stats.add(|c| &c.dropped, batch.len() as u64);
                return;
            }
            if !wait_unless_stopped(delay, ctx) {
                error!(
                    "redis sink {}: stopped while retrying; gave up a batch of {}",
                    self.stream,
                    batch.len()
                );
                self.stats.add(|c| &c.dropped, batch.len() as u64);
                return;
            }
        }
    }
}

/// Waits `delay`, looking every [`STOP_POLL`] whether the stage was asked to stop; `false`
/// if it was (at once if it already was).
fn wait_unless_stopped(delay: Duration, ctx: &ConsumerContext<'_>) -> bool {
    let until = Instant::now() + delay;
    loop {
        if ctx.is_stop_requested() {
            return false;
        }
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return true;
        }
        thread::sleep(left.min(STOP_POLL));
    }
}

impl<T: Send + 'static> Consumer for StreamSink<T> {
    type In = T;
    type Message = ();

    fn handle_events(&mut self, events: Events<'_, T>, ctx: &mut ConsumerContext<'_>) {
        let mut batch = Vec::new();
        for e in events {
            match (self.encode)(&e) {
                Ok(fields) if !fields.is_empty() => batch.push(fields),
                Ok(_) => {
                    self.stats.add(|c| &c.malformed, 1);
                    warn!(
                        "redis sink {}: an event with no fields, skipped",
                        self.stream
                    );
                }
                Err(why) => {
                    self.stats.add(|c| &c.malformed, 1);
                    warn!("redis sink {}: {why}; skipped", self.stream);
                }
            }
        }
        if !batch.is_empty() {
            self.write(&batch, ctx);
        }
    }
}
