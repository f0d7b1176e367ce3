//! [`stream`]: the builder of a [`StreamSource`], a consumer group's reader whose producers
//! emit [`Message`]s acknowledged through the group; its options and their validation.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use redis::Client;

use super::ack::Acker;
use super::counters::Cells;
use super::entry::{decode_json, Entry};
use super::error::StreamError;
use super::producer::StreamProducer;
use super::shared::{Decoder, InFlight, Options, Settings, Shared, StreamSource, ID_KEY};
use crate::pipeline::{Acknowledger, Message};

/// Starts the builder of a source reading `stream` on the server at `url`
/// (`redis://host:port/db`) through a consumer group. Nothing connects until a producer runs.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use stageflow::redis::StreamError;
///
/// let source = stageflow::redis::stream("redis://127.0.0.1:6379/", "jobs")
///     .group("workers")
///     .consumer("worker-1")
///     .claim_idle(Duration::from_secs(60))
///     .dead_letter("jobs:dead", 3)
///     .build()?;
/// assert_eq!(source.counters().acked, 0);
///
/// let bad = stageflow::redis::stream("redis://127.0.0.1:6379/", "jobs").max_count(0).build();
/// assert!(matches!(bad, Err(StreamError::InvalidOption { option: "max_count", .. })));
/// # Ok::<(), StreamError>(())
/// ```
pub fn stream(url: impl Into<String>, stream: impl Into<String>) -> StreamBuilder<Entry> {
    StreamBuilder {
        url: url.into(),
        opts: Options {
            stream: stream.into(),
            group: "stageflow".into(),
            consumer: format!("consumer-{}", std::process::id()),
            start_id: "0".into(),
            block: Duration::from_millis(100),
            max_count: 1000,
            claim_idle: Duration::from_secs(30),
            claim_interval: Duration::from_secs(5),
            dead_letter: None,
            timeout: Duration::from_secs(5),
            ack_timeout: Duration::from_secs(30),
            backoff: (Duration::from_millis(50), Duration::from_secs(2)),
        },
        decode: Arc::new(|e: Entry| Ok(e)),
        _t: PhantomData,
    }
}

/// The options of a [`StreamSource`]; see [`stream`]. Every setter's doc gives its default.
pub struct StreamBuilder<T> {
    url: String,
    opts: Options,
    decode: Decoder<T>,
    _t: PhantomData<fn() -> T>,
}

impl<T> fmt::Debug for StreamBuilder<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamBuilder")
            .field("url", &self.url)
            .field("stream", &self.opts.stream)
            .field("group", &self.opts.group)
            .field("consumer", &self.opts.consumer)
            .finish_non_exhaustive()
    }
}

impl<T: Send + 'static> StreamBuilder<T> {
    /// The consumer group (created at [`start_id`](Self::start_id), with the stream if
    /// missing, when a producer first connects). Defaults to `"stageflow"`.
    pub fn group(mut self, name: impl Into<String>) -> Self {
        self.opts.group = name.into();
        self
    }

    /// This consumer's name in the group: give each process its own, and the same one again
    /// when it restarts (it then resumes its own pending entries first). Defaults to
    /// `"consumer-<pid>"`.
    pub fn consumer(mut self, name: impl Into<String>) -> Self {
        self.opts.consumer = name.into();
        self
    }

    /// Where a group created by this source starts reading: `"0"` for the whole stream, `"$"`
    /// for entries added from now on. Defaults to `"0"` (a job queue's entries added before
    /// the first worker started are work too).
    pub fn start_id(mut self, id: impl Into<String>) -> Self {
        self.opts.start_id = id.into();
        self
    }

    /// The longest one `XREADGROUP` waits for new entries (`BLOCK`) before the producer's loop
    /// turns again (to see stops, calls and the claim interval). Defaults to `100 ms`. After a
    /// read that found entries the next waits 1 ms, and each that finds none doubles it up to
    /// this: a drain or a stop right after a backlog has been read is seen once that short
    /// read times out, which Redis does on its timer tick (`hz`, 10 a second by default: at
    /// most 100 ms), not after a whole `block`.
    pub fn block(mut self, block: Duration) -> Self {
        self.opts.block = block;
        self
    }

    /// The most entries one read asks for (`COUNT` is the unmet demand, at most this).
    /// Defaults to `1000`.
    pub fn max_count(mut self, n: usize) -> Self {
        self.opts.max_count = n;
        self
    }

    /// How long an entry must have been pending, unacknowledged, before this consumer claims
    /// it (`XAUTOCLAIM`'s min-idle-time): entries of a dead consumer, and failed entries
    /// due for a retry. Make it longer than an entry can take to go through the pipeline, or
    /// a slow entry is claimed (and handled) twice. Defaults to `30 s`.
    pub fn claim_idle(mut self, idle: Duration) -> Self {
        self.opts.claim_idle = idle;
        self
    }

    /// How often the producer claims idle entries before reading new ones (it also does on
    /// start and after a reconnect). Defaults to `5 s`.
    pub fn claim_interval(mut self, every: Duration) -> Self {
        self.opts.claim_interval = every;
        self
    }

    /// Moves a failed entry delivered `after_deliveries` times or more to the stream `dead`
    /// (its fields, plus `stageflow.id`, `stageflow.reason` and `stageflow.deliveries`) and
    /// acknowledges it. Defaults to none: failed entries stay pending and are retried after
    /// [`claim_idle`](Self::claim_idle), forever.
    pub fn dead_letter(mut self, dead: impl Into<String>, after_deliveries: u64) -> Self {
        self.opts.dead_letter = Some((dead.into(), after_deliveries));
        self
    }

    /// The timeout for connecting and for each reply (beyond the `BLOCK` time). Defaults to
    /// `5 s`.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.opts.timeout = timeout;
        self
    }

    /// How long an acknowledgement is retried through connection faults before it is given
    /// up (counted in [`StreamCounters::ack_failures`](super::StreamCounters::ack_failures);
    /// the entries stay pending and are claimed again). Defaults to `30 s`.
    pub fn ack_timeout(mut self, timeout: Duration) -> Self {
        self.opts.ack_timeout = timeout;
        self
    }

    /// The delays between reconnection attempts: `first`, doubling up to `max`. Defaults to
    /// `50 ms` and `2 s`.
    pub fn backoff(mut self, first: Duration, max: Duration) -> Self {
        self.opts.backoff = (first, max);
        self
    }

    /// Emits `U`s decoded from the JSON in the field `field` of each entry (what
    /// [`StreamSink`](super::StreamSink)'s `json` writes). An entry that does not decode is
    /// failed at once (counted as malformed) and handled as any failed entry.
    pub fn json<U: serde::de::DeserializeOwned + Send + 'static>(
        self,
        field: impl Into<String>,
    ) -> StreamBuilder<U> {
        let field = field.into();
        self.decode(move |e: &Entry| decode_json(e, &field))
    }

    /// Emits `U`s made by `decode` from each entry; an `Err` fails the entry at once (counted
    /// as malformed) and it is handled as any failed entry.
    pub fn decode<U: Send + 'static>(
        self,
        decode: impl Fn(&Entry) -> Result<U, String> + Send + Sync + 'static,
    ) -> StreamBuilder<U> {
        StreamBuilder {
            url: self.url,
            opts: self.opts,
            decode: Arc::new(move |e: Entry| decode(&e).map_err(|why| (e.id, why))),
            _t: PhantomData,
        }
    }

    /// Validates the options.
    ///
    /// # Errors
    ///
    /// [`StreamError::InvalidOption`] naming the first bad option: an unparsable `url`, an
    /// empty `stream`, `group`, `consumer` or `start_id`, a zero `block`, `max_count`,
    /// `claim_idle`, `claim_interval`, `timeout` or backoff delay, a `block` not shorter than
    /// `timeout`, a dead-letter stream that is the stream itself or empty, or
    /// `after_deliveries` 0.
    pub fn build(self) -> Result<StreamSource<T>, StreamError> {
        let client = Client::open(self.url.as_str())
            .map_err(|e| StreamError::invalid("url", format!("{:?}: {e}", self.url)))?;
        for (option, value) in [
            ("stream", &self.opts.stream),
            ("group", &self.opts.group),
            ("consumer", &self.opts.consumer),
            ("start_id", &self.opts.start_id),
        ] {
            if value.is_empty() {
                return Err(StreamError::invalid(option, "expected a name, got \"\""));
            }
        }
        for (option, value) in [
            ("block", self.opts.block),
            ("claim_idle", self.opts.claim_idle),
            ("claim_interval", self.opts.claim_interval),
            ("timeout", self.opts.timeout),
            ("backoff", self.opts.backoff.0.min(self.opts.backoff.1)),
        ] {
            if value.is_zero() {
                return Err(StreamError::invalid(option, "expected a positive duration"));
            }
        }
        if self.opts.block >= self.opts.timeout {
            return Err(StreamError::invalid(
                "block",
                format!(
                    "expected less than the timeout ({:?}), got {:?}",
                    self.opts.timeout, self.opts.block
                ),
            ));
        }
        if self.opts.max_count == 0 {
            return Err(StreamError::invalid(
                "max_count",
                "expected at least 1, got 0",
            ));
        }
        if let Some((dead, after)) = &self.opts.dead_letter {
            if dead.is_empty() || *dead == self.opts.stream {
                return Err(StreamError::invalid(
                    "dead_letter",
                    format!(
                        "expected another stream than {:?}, got {dead:?}",
                        self.opts.stream
                    ),
                ));
            }
            if *after == 0 {
                return Err(StreamError::invalid(
                    "dead_letter",
                    "expected after_deliveries to be at least 1, got 0",
                ));
            }
        }
        let settings = Settings {
            client,
            opts: self.opts,
        };
        let shared = Arc::new(Shared {
            settings,
            cells: Cells::default(),
            in_flight: Mutex::new(InFlight::default()),
            ack_con: Mutex::new((None, false)),
        });
        let ack: Arc<dyn Acknowledger> = Arc::new(Acker(shared.clone()));
        Ok(StreamSource {
            shared,
            ack,
            decode: self.decode,
        })
    }
}

impl<T: Send + 'static> StreamSource<T> {
    /// A producer of [`Message<T>`](Message)s reading the group as this source's consumer,
    /// for [`stageflow::producer`](crate::producer) or a pipeline's
    /// [`producers`](crate::pipeline::Builder::producers). Several producers of one source
    /// share its consumer name, acknowledger and counters, each with its own connection.
    pub fn producer(&self) -> StreamProducer<T> {
        StreamProducer::new(self.clone())
    }
}

/// A message's entry id (its [`ID_KEY`] metadata), if it came from a stream source.
pub fn entry_id<T>(message: &Message<T>) -> Option<&str> {
    message.metadata.get(ID_KEY).map(String::as_str)
}
