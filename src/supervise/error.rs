//! [`GroupError`]: why a supervised group could not start.

use std::error::Error;
use std::fmt;
use std::io;

/// Why [`GroupBuilder::start`](super::GroupBuilder::start) failed. Nothing it started is left
/// running.
#[derive(Debug)]
#[non_exhaustive]
pub enum GroupError {
    /// An option of the group or of a child is invalid.
    InvalidOption {
        /// The option, e.g. `"intensity.period"` or `"child.name"`.
        option: &'static str,
        /// What was expected and what was given.
        message: String,
    },
    /// A child's first incarnation could not start: its stage did not build or spawn, a
    /// subscription failed, or its factory panicked.
    Start {
        /// The child's name.
        child: String,
        /// Why.
        message: String,
    },
    /// The group's supervisor thread could not start.
    Spawn(io::Error),
}

impl GroupError {
    pub(crate) fn invalid(option: &'static str, message: impl Into<String>) -> GroupError {
        GroupError::InvalidOption {
            option,
            message: message.into(),
        }
    }
}

impl fmt::Display for GroupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GroupError::InvalidOption { option, message } => {
                write!(f, "invalid group option {option}: {message}")
            }
            GroupError::Start { child, message } => {
                write!(f, "group: child {child} did not start: {message}")
            }
            GroupError::Spawn(e) => write!(f, "group: no thread for its supervisor: {e}"),
        }
    }
}

impl Error for GroupError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            GroupError::Spawn(e) => Some(e),
            GroupError::Start { .. } | GroupError::InvalidOption { .. } => None,
        }
    }
}
