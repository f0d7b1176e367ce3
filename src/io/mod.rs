//! Sources at the process's edges (feature `io`): the records of any `BufRead`, a file
//! followed as it grows (`tail -F`), a channel; and a pipeline's end on SIGINT/SIGTERM.
//!
//! The sources are ordinary [`Producer`](crate::Producer)s, built like any other with
//! [`stageflow::producer`](crate::producer). Each reads **only while its consumers have
//! demand**, at most a batch per turn of its stage, keeping unmet demand for the next turns
//! (the rule of the guide's "Blocking sources"): a stalled pipeline stops the reading, so
//! what is read ahead stays bounded by a read buffer, and stops, calls and drains are seen
//! between turns. This module uses nothing but the crate's public API.
//!
//! * [`reader`]: lines, delimited records or fixed-size chunks of a `BufRead`, ending with it.
//! * [`tail`]: a file followed as `tail -F` follows it: polled after its end (a timer, never
//!   a sleep), its unfinished last line kept until it is complete, reopened when rotated,
//!   read again from its start when truncated, with the offset a restart resumes from
//!   ([`IoStats::offset`], [`TailBuilder::start_at`]).
//! * [`from_channel`]: what a `crossbeam_channel::Receiver` yields, taken only with demand,
//!   ending when the channel is disconnected.
//! * [`shutdown_on_signals`] (unix): the first SIGINT or SIGTERM drains a
//!   [`Topology`](crate::Topology), a second stops it, and the [`ShutdownReport`] says what
//!   was drained.
//!
//! # Bad input
//!
//! Nothing an input holds panics a source, and nothing disappears silently. A text record
//! that is not UTF-8 and a record longer than [`max_record`](TailBuilder::max_record) (1 MiB
//! by default, never held whole in memory) are counted in [`IoCounters`] and handled by their
//! option, a [`BadRecord`]: skipped, repaired (lossy UTF-8, or cut to the limit), or the end
//! of the source with a [`Reason::Error`](crate::Reason::Error) naming the record's offset.
//! Bad options are [`IoError::InvalidOption`]s naming the option.
//!
//! ```
//! use std::time::Duration;
//! use stageflow::fns::Fold;
//! use stageflow::io::{self, Framing};
//! use stageflow::SubscribeOptions;
//!
//! // NUL-delimited records of a reader, as raw bytes.
//! let input = std::io::Cursor::new(b"a\0bb\0ccc\0".to_vec());
//! let records = io::reader(input).framing(Framing::Delimited(0)).bytes().build()?;
//! let source = stageflow::producer(records).spawn()?;
//! let total = stageflow::consumer(Fold::new(0usize, |n, r: Vec<u8>| n + r.len()))
//!     .keep_state()
//!     .subscribe_to(&source, SubscribeOptions::new())?
//!     .spawn()?;
//! assert_eq!(total.join_result()?, 6);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod channel;
mod counters;
mod engine;
mod error;
mod framing;
mod msg;
mod options;
mod reader;
mod record;
#[cfg(unix)]
mod signal;
mod tail;

pub use channel::{from_channel, ChannelBuilder, ChannelSource};
pub use counters::{IoCounters, IoStats};
pub use error::IoError;
pub use framing::Framing;
pub use msg::IoMsg;
pub use options::{DEFAULT_BATCH, DEFAULT_MAX_RECORD};
pub use reader::{reader, ReaderBuilder, ReaderSource};
pub use record::{BadRecord, Record};
#[cfg(unix)]
pub use signal::{
    shutdown_on_signals, ShutdownBuilder, ShutdownReport, SignalAction, SignalShutdown,
};
pub use tail::{tail, TailBuilder, TailSource};
