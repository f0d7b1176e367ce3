//! [`HttpError`], what building an HTTP producer can fail with, and [`Cause`], why one
//! connection or request ended (logged, counted, and in the final [`Reason`](crate::Reason)
//! when the producer gives up).

use std::error::Error;
use std::fmt;
use std::time::Duration;

use super::backoff::Class;
use super::framing::FrameError;

/// Why an HTTP producer could not be built.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HttpError {
    /// An option has a value it cannot take. `option` names it (`"url"`, `"header"`,
    /// `"max_frame"`, ...); the message names the value.
    InvalidOption {
        /// The option's name.
        option: &'static str,
        /// What was expected and what was given.
        message: String,
    },
}

impl HttpError {
    pub(crate) fn invalid(option: &'static str, message: String) -> HttpError {
        HttpError::InvalidOption { option, message }
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::InvalidOption { option, message } => {
                write!(f, "invalid http option {option}: {message}")
            }
        }
    }
}

impl Error for HttpError {}

/// Why a connection (or a polling request) ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Cause {
    /// The request failed before a response: refused, unreachable, a timeout, TLS...
    Connect(String),
    /// A status other than 2xx, with the start of its body and the wait the server asked for.
    Status {
        code: u16,
        excerpt: String,
        hint: Option<Duration>,
    },
    /// No byte for longer than the stall timeout.
    Stalled(Duration),
    /// Reading the body failed (reset, cut inside a chunk, ...).
    Read(String),
    /// The body ended; `partial` bytes of an unfinished frame were dropped.
    End { partial: usize },
    /// The body broke its framing (oversize or malformed): the connection was dropped.
    Framing(FrameError),
    /// A polling response body was longer than the limit.
    TooLong(usize),
    /// A polling response was not JSON.
    NotJson(String),
}

impl Cause {
    pub(crate) fn class(&self) -> Class {
        match self {
            Cause::Status {
                code: 429 | 420,
                hint,
                ..
            } => Class::RateLimited(*hint),
            Cause::Status { .. } => Class::Http,
            _ => Class::Network,
        }
    }

    /// Turns a ureq error into a cause: a per-read timeout is a stall.
    pub(crate) fn from_ureq(e: ureq::Error, stall: Duration, connecting: bool) -> Cause {
        match e {
            ureq::Error::Timeout(ureq::Timeout::PerRead) if !connecting => Cause::Stalled(stall),
            ureq::Error::Io(io) if !connecting => Cause::Read(io.to_string()),
            e if connecting => Cause::Connect(e.to_string()),
            e => Cause::Read(e.to_string()),
        }
    }

    /// Turns an error from a body reader into a cause.
    pub(crate) fn from_read(e: std::io::Error, stall: Duration) -> Cause {
        Cause::from_ureq(ureq::Error::from(e), stall, false)
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cause::Connect(e) => write!(f, "request failed: {e}"),
            Cause::Status { code, excerpt, .. } if excerpt.is_empty() => {
                write!(f, "status {code}")
            }
            Cause::Status { code, excerpt, .. } => write!(f, "status {code}: {excerpt}"),
            Cause::Stalled(d) => write!(f, "stalled: no byte for {d:?}"),
            Cause::Read(e) => write!(f, "read failed: {e}"),
            Cause::End { partial: 0 } => f.write_str("the body ended"),
            Cause::End { partial } => {
                write!(f, "the body ended inside a frame ({partial} bytes dropped)")
            }
            Cause::Framing(e) => write!(f, "connection dropped: {e}"),
            Cause::TooLong(limit) => write!(f, "response body longer than {limit} bytes"),
            Cause::NotJson(e) => write!(f, "response is not json: {e}"),
        }
    }
}
