//! HTTP producers on `ureq`: a streaming body read only while there is demand, and polling.

mod backoff;
mod counters;
mod error;
mod framing;
mod length;
mod lines;
mod link;
mod poll;
mod reader;
mod sse;
mod stream;

pub use backoff::Backoff;
pub use counters::{HttpCounters, HttpStats};
pub use error::HttpError;
pub use framing::{Frame, FrameDecoder, FrameError, Framing, Piece};
pub use link::HttpMsg;
pub use poll::{poll, HttpPoll, Page, PollBuilder, DEFAULT_MAX_BODY};
pub use stream::{stream, HttpStream, ReadPolicy, StreamBuilder, DEFAULT_MAX_FRAME};
