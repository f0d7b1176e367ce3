//! What a stream's reader and its producer share, fixed once the stream is built: the
//! options ([`Config`], [`ReadPolicy`]) and the decoder. A leaf: the reader and the stream
//! both import it, and it imports neither.

use std::sync::Arc;
use std::time::Duration;

use super::framing::{Frame, Framing};

/// Turns a frame into an event; an `Err` is a malformed frame (counted, logged, skipped).
pub(crate) type DecodeFn<T> = Arc<dyn Fn(Frame<'_>) -> Result<T, String> + Send + Sync>;

/// What the reader does when its consumers have no demand left.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReadPolicy {
    /// Stop reading the body until there is demand again. The socket's receive buffer
    /// fills, TCP's window closes, and the server stops sending: back-pressure reaches the
    /// server and nothing is lost. Right for sources that wait for slow readers, and for
    /// short pauses. Sources that disconnect slow readers (sampled firehoses) will drop the
    /// connection during a long pause; then use [`ReadPolicy::KeepReading`].
    #[default]
    PauseWhenNoDemand,
    /// Keep reading whatever the demand: events beyond it go to the producer's buffer, which
    /// drops by its [`buffer_keep`](crate::StageBuilder::buffer_keep) policy when full (each
    /// discard counted in [`Counters::discarded`](crate::Counters) and
    /// [`HttpCounters::discarded`](super::HttpCounters), and logged). The connection is never
    /// slowed; events are lost instead. Right for sampled streams, where fresh events matter
    /// more than all of them.
    KeepReading,
}

/// The options of a stream, fixed once built.
#[derive(Debug)]
pub(crate) struct Config {
    pub(crate) url: String,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) framing: Framing,
    pub(crate) max_frame: usize,
    pub(crate) policy: ReadPolicy,
    pub(crate) stall_timeout: Duration,
    pub(crate) read_size: usize,
    pub(crate) finish_at_end: bool,
}
