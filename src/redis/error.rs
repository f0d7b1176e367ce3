//! [`StreamError`]: bad options of a Redis source or sink, found when it is built.

use std::fmt;

/// A Redis stream source or sink could not be built: an option is invalid. Connection
/// faults are never errors of the builder: the stages connect when they start, and reconnect
/// with backoff (see the [module docs](super)).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StreamError {
    /// An option is invalid: `option` names it, `reason` says why.
    InvalidOption {
        /// The option, as its setter is named (`url`, `group`, `max_deliveries`, ...).
        option: &'static str,
        /// What is wrong with the value.
        reason: String,
    },
}

impl StreamError {
    pub(crate) fn invalid(option: &'static str, reason: impl Into<String>) -> StreamError {
        StreamError::InvalidOption {
            option,
            reason: reason.into(),
        }
    }
}

impl fmt::Display for StreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StreamError::InvalidOption { option, reason } => {
                write!(f, "redis: invalid option `{option}`: {reason}")
            }
        }
    }
}

impl std::error::Error for StreamError {}
